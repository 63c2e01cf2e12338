#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Checks that contrib/install-deps.sh installs everything the build asks
# for: every dependency('NAME') in every meson.build of the tree (found
# anew each run, so a new meson.build is covered without editing this) must
# have a line in contrib/deps.tsv, and the Debian package named there must
# be in install-deps.sh's build list. A dependency() whose name is not a
# string literal cannot be checked, and fails too.
# With --explain BUILDDIR it checks nothing and tells instead why a `meson
# setup` of BUILDDIR failed: the end of its meson-log.txt and, for each
# dependency meson did not find, the package that provides it.
#
# Usage: contrib/check-deps.sh [--explain BUILDDIR]
set -euo pipefail

# Taken before the cd below, so that a relative BUILDDIR means the caller's.
explain_dir=''
if [ "${1:-}" = --explain ] && [ $# = 2 ]; then
	explain_dir=$(realpath -m -- "$2")
fi
cd "$(dirname "$0")/.."
src=$PWD
table=contrib/deps.tsv

die() {
	echo "check-deps: $*" >&2
	exit 1
}

# name -> package, from the table ("-": none needed).
declare -A pkg_of=()
load_table() {
	[ -f "$table" ] || die "$table is missing"
	local n=0 name pkg extra
	while IFS=$'\t' read -r name pkg extra || [ -n "$name" ]; do
		n=$((n + 1))
		case "$name" in '' | '#'*) continue ;; esac
		if [ -z "$pkg" ] || [ -n "$extra" ]; then
			die "$table:$n: want NAME<TAB>PACKAGE (or -), got: $name${pkg:+	$pkg}${extra:+	$extra}"
		fi
		[ -z "${pkg_of[$name]:-}" ] || die "$table:$n: '$name' listed twice"
		pkg_of[$name]=$pkg
	done <"$table"
}

if [ "${1:-}" = --explain ]; then
	[ -n "$explain_dir" ] || die "usage: check-deps.sh --explain BUILDDIR"
	log=$explain_dir/meson-logs/meson-log.txt
	if [ ! -f "$log" ]; then
		echo "check-deps: $log does not exist (meson stopped before writing it)"
		exit 0
	fi
	echo "---- the end of $log:"
	tail -n 20 "$log" | sed 's/^/    /'
	echo "----"
	load_table
	# meson: 'Dependency "json-c" not found, tried pkgconfig and cmake'
	{ grep -oE 'Dependency "[^"]+" not found' "$log" || true; } | cut -d'"' -f2 | sort -u |
		while read -r name; do
			# What pkg-config said about it (the tail above is mostly cmake's).
			awk -v want="--modversion $name\`" '
				index($0, want) { on = 1; n = 0 }
				on && (/^-----/ || ++n > 8) { on = 0 }
				on { print "    " $0 }' "$log"
			pkg=${pkg_of[$name]:-}
			if [ -z "$pkg" ]; then
				echo "check-deps: dependency '$name' is not in $table: add it, and its package to contrib/install-deps.sh"
			elif [ "$pkg" = - ]; then
				echo "check-deps: dependency '$name' needs no package, yet meson did not find it"
			else
				echo "check-deps: dependency '$name' comes from the Debian package $pkg: run contrib/install-deps.sh (or apt-get install $pkg)"
			fi
		done
	exit 0
fi
[ $# = 0 ] || die "unknown argument: $1 (usage: check-deps.sh [--explain BUILDDIR])"

load_table
mapfile -t build_pkgs < <(contrib/install-deps.sh --list)
[ ${#build_pkgs[@]} -gt 0 ] || die "contrib/install-deps.sh --list printed no packages"
declare -A installed=()
for p in "${build_pkgs[@]}"; do installed[$p]=1; done

# Every meson.build of the source tree; build directories (they hold
# meson-private/) and .git are skipped.
mapfile -t files < <(find . -type d \( -name .git -o -exec test -d '{}/meson-private' \; \) -prune \
	-o -type f -name meson.build -print | sed 's|^\./||' | LC_ALL=C sort)
[ ${#files[@]} -gt 0 ] || die "no meson.build found under $src"

# Prints LINE<TAB>NAME for each dependency( call, NAME empty when the first
# argument is not a string literal. Comments are dropped (outside quotes);
# a call may span lines. declare_dependency( and x.dependency( are not calls
# of dependency().
scan() { # file
	awk '
	{
		s = $0; out = ""; q = 0
		for (i = 1; i <= length(s); i++) {
			c = substr(s, i, 1)
			if (c == "\047")
				q = !q
			else if (c == "#" && !q)
				break
			out = out c
		}
		text = text out "\n"
	}
	END {
		line = 1
		while (match(text, /(^|[^A-Za-z0-9_.])dependency[ \t\n]*\(/)) {
			head = substr(text, 1, RSTART + RLENGTH - 1)
			line += gsub(/\n/, "", head)
			text = substr(text, RSTART + RLENGTH)
			name = ""
			if (match(text, /^[ \t\n]*\047[^\047\n]*\047/)) {
				name = substr(text, RSTART, RLENGTH)
				sub(/^[ \t\n]*\047/, "", name)
				sub(/\047$/, "", name)
			}
			printf "%d\t%s\n", line, name
		}
	}' "$1"
}

errors=0 calls=0
declare -A used=()
for f in "${files[@]}"; do
	while IFS=$'\t' read -r line name; do
		calls=$((calls + 1))
		if [ -z "$name" ]; then
			echo "check-deps: $f:$line: dependency() without a literal name: cannot map it to a package" >&2
			errors=$((errors + 1))
			continue
		fi
		used[$name]=1
		pkg=${pkg_of[$name]:-}
		if [ -z "$pkg" ]; then
			echo "check-deps: $f:$line: dependency('$name') is not in $table: add '$name<TAB>DEBIAN-PACKAGE' there and the package to build_pkgs in contrib/install-deps.sh" >&2
			errors=$((errors + 1))
		elif [ "$pkg" != - ] && [ -z "${installed[$pkg]:-}" ]; then
			echo "check-deps: $f:$line: dependency('$name') needs the Debian package $pkg ($table), which is not in build_pkgs of contrib/install-deps.sh" >&2
			errors=$((errors + 1))
		fi
	done < <(scan "$f")
done

for name in "${!pkg_of[@]}"; do
	[ -n "${used[$name]:-}" ] || echo "check-deps: note: $table lists '$name', which no meson.build uses"
done

if [ "$errors" -gt 0 ]; then
	echo "check-deps: $errors problem(s) in $calls dependency() calls of ${#files[@]} meson.build files" >&2
	exit 1
fi
echo "check-deps: ${#used[@]} dependencies (${calls} calls in ${#files[@]} meson.build files) all map to packages that contrib/install-deps.sh installs"
