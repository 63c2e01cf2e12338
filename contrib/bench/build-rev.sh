#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Makes a release build of one revision of Ferry, for contrib/bench/compare.sh:
# the tree of REV is exported with `git archive` into DIR/src (the checkout,
# the index and the worktree list are left alone) and built with
# `meson setup --buildtype=release` in DIR/build. Prints the build dir on
# stdout; progress and errors go to stderr, logs to DIR/{meson,ninja}.log.
# Run again with the same REV and DIR it reuses both (ninja only); with
# another REV it exports and configures afresh.
#
# Usage: contrib/bench/build-rev.sh REV DIR
#   REV  anything git rev-parse takes: 454be86, HEAD, HEAD~2, a tag
#   DIR  created if missing; DIR/src and DIR/build must be absent, empty,
#        or made by this script
# Example: contrib/bench/build-rev.sh 454be86 /tmp/bench-before
#          -> /tmp/bench-before/build
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
SRCROOT=$(cd "$HERE/../.." && pwd)

say() { echo "build-rev: $*" >&2; }
die() { say "$*"; exit 1; }

case "${1:-}" in
-h | --help)
	sed -n '4,17s/^# \{0,1\}//p' "$0"
	exit 0
	;;
esac
[ $# = 2 ] || { sed -n '12,12s/^# \{0,1\}//p' "$0" >&2; exit 2; }
REV=$1
DIR=$2

for t in git meson ninja tar; do
	command -v "$t" >/dev/null || die "$t not found (contrib/install-deps.sh installs the build tools)"
done
git -C "$SRCROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$SRCROOT is not a git checkout"
SHA=$(git -C "$SRCROOT" rev-parse --verify --quiet "$REV^{commit}") ||
	die "unknown revision: $REV (in $SRCROOT)"
SHORT=$(git -C "$SRCROOT" rev-parse --short "$SHA")

mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd) || die "cannot create $DIR"
SRC=$DIR/src
BUILD=$DIR/build
MARK=.ferry-build-rev # in SRC: the full commit id the tree was exported from

# ours DIR : DIR is absent, empty, or was made by this script (safe to replace).
ours() {
	[ ! -e "$1" ] && return 0
	[ -d "$1" ] || return 1
	[ -z "$(ls -A "$1")" ] && return 0
	[ -f "$1/$MARK" ] || [ -f "$1/build.ninja" ] && [ -f "$DIR/src/$MARK" ]
}

if [ -f "$SRC/$MARK" ] && [ "$(cat "$SRC/$MARK")" = "$SHA" ]; then
	say "$SHORT: reusing the tree in $SRC"
else
	ours "$SRC" || die "$SRC exists and was not made by build-rev.sh; remove it or pick another DIR"
	ours "$BUILD" || die "$BUILD exists and was not made by build-rev.sh; remove it or pick another DIR"
	rm -rf "$SRC" "$BUILD"
	mkdir -p "$SRC" || die "cannot create $SRC"
	say "$SHORT: exporting the tree into $SRC (git archive)"
	git -C "$SRCROOT" archive --format=tar "$SHA" | tar -x -C "$SRC" ||
		die "git archive $SHORT | tar -x failed"
	echo "$SHA" >"$SRC/$MARK"
fi

if [ ! -f "$BUILD/build.ninja" ]; then
	say "$SHORT: meson setup --buildtype=release $BUILD"
	meson setup --buildtype=release "$BUILD" "$SRC" >"$DIR/meson.log" 2>&1 ||
		{ tail -30 "$DIR/meson.log" >&2; die "meson setup failed, see $DIR/meson.log"; }
fi
say "$SHORT: ninja -C $BUILD"
ninja -C "$BUILD" >"$DIR/ninja.log" 2>&1 ||
	{ tail -30 "$DIR/ninja.log" >&2; die "ninja failed, see $DIR/ninja.log"; }
for p in replicator/ferry replicator/ferry-agent replicator/ferry-replicator fs/ferryfs; do
	[ -x "$BUILD/$p" ] || die "built, but $BUILD/$p is missing"
done
# What compare.sh labels the build with.
printf '%s %s\n' "$SHORT" "$(git -C "$SRCROOT" log -1 --format=%s "$SHA")" >"$BUILD/ferry-rev.txt"
echo "$BUILD"
