#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Time to a ready test failover: from `ferry test-failover` issued to the
# clone's image readable in a running ferryfs mount, for a 64 MiB and a
# 64 GiB sparse disk (each with 64 MiB of data), next to the time a plain
# copy of the same image takes. A failover is a copy-on-write clone, so the
# first figure must not grow with the disk.
#
#   contrib/bench/failover-bench.sh [OUTDIR]        (root: FUSE)
#
# Needs a build (meson setup build/bench -Dbuildtype=release) or BUILD=DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-$SRC/build/bench}
OUT=${1:-$(mktemp -d /tmp/ferry-failover-bench.XXXXXX)}
FERRY=$BUILD/replicator/ferry
if [ ! -x "$FERRY" ]; then
	meson setup "$BUILD" "$SRC" -Dbuildtype=release >/dev/null
	ninja -C "$BUILD" >/dev/null
fi
mkdir -p "$OUT"
MNT=$OUT/mnt
cleanup() { fusermount3 -u "$MNT" 2>/dev/null || true; }
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

printf '| disk | data | test failover ready | cp --sparse=always | cp (full read) |\n'
printf '|---|---|---|---|---|\n'
for size in 64M 64G; do
	d=$OUT/$size
	rm -rf "$d" && mkdir -p "$d"
	truncate -s "$size" "$d/os.img"
	head -c 67108864 /dev/urandom | dd of="$d/os.img" conv=notrunc status=none
	"$FERRY" init --vault "$d/vault" >/dev/null
	"$FERRY" enable-replication --vault "$d/vault" --vm vm --disk os="$d/os.img" \
		--crash-interval 0 >/dev/null
	"$BUILD/replicator/ferry-agent" --config "$d/vault/agents/vm.conf" --once 2>/dev/null
	"$BUILD/replicator/ferry-replicator" --vault "$d/vault" --once 2>/dev/null
	mkdir -p "$MNT"
	"$BUILD/fs/ferryfs" --vault "$d/vault" "$MNT"
	ls "$MNT/vm/failovers" >/dev/null

	t0=$(now)
	"$FERRY" test-failover --vault "$d/vault" vm >/dev/null 2>&1
	until dd if="$MNT/vm/failovers/test/os.img" of=/dev/null bs=4096 count=1 status=none 2>/dev/null; do
		sleep 0.01
	done
	t1=$(now)
	ready=$(elapsed "$t0" "$t1")

	sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
	t0=$(now)
	cp --sparse=always "$MNT/vm/recovery-points/latest/os.img" "$d/copy.img"
	t1=$(now)
	sparse=$(elapsed "$t0" "$t1")
	rm -f "$d/copy.img"
	full=n/a
	if [ "$size" = 64M ]; then
		sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
		t0=$(now)
		cp --sparse=never "$MNT/vm/recovery-points/latest/os.img" "$d/copy.img"
		t1=$(now)
		full="$(elapsed "$t0" "$t1") s"
		rm -f "$d/copy.img"
	else
		full="not run (would read 64 GiB)"
	fi
	fusermount3 -u "$MNT"
	printf '| %s | 64 MiB | %s s | %s s | %s |\n' "$size" "$ready" "$sparse" "$full"
	rm -rf "$d"
done
