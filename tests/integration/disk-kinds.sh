#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Whatever the kind of disk, every point must equal its source as it was
# at that cycle: a file whose size is not a multiple of 4 KiB (its last
# block is partial), a file on tmpfs, and a loop block device (sized with
# BLKGETSIZE64) written through its own page cache between cycles.
. "$(dirname "$0")/lib.sh"
need_fuse
cd "$T"

seeded_bytes 3000001 71 > odd.img # the last block is partial
mkdir shm
mount -t tmpfs -o size=16m tmpfs shm 2>/dev/null ||
	skip "cannot mount a tmpfs (not root?): one of the disks lives on one"
LOOPS+=("$T/shm")
seeded_bytes 4194304 72 > shm/tmpfs.img
seeded_bytes 8388608 73 > blk.backing
dev=$(losetup -f --show blk.backing 2>/dev/null) ||
	skip "no loop device available (losetup -f failed)"
DEVS+=("$dev")

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm --crash-interval 0 \
	--disk odd=odd.img --disk tmpfs=shm/tmpfs.img --disk blk="$dev" >/dev/null

keep() { # CYCLE
	cp odd.img odd.$1 && cp shm/tmpfs.img tmpfs.$1 && cat "$dev" > blk.$1
}
cycle vault vm
keep 1
scatter_writes odd.img 40 1
printf 'tail' | dd of=odd.img bs=1 seek=2999997 conv=notrunc status=none
scatter_writes shm/tmpfs.img 40 2
scatter_writes "$dev" 40 3
cycle vault vm
keep 2
cmp -s blk.1 blk.2 && fail "the writes into the block device did not change it"

mount_vault vault mnt
i=0
for p in $(points_of vault vm); do
	i=$((i + 1))
	for d in odd tmpfs blk; do
		cmp "mnt/vm/recovery-points/$p/$d.img" "$d.$i" || fail "point $i: $d.img differs"
	done
done
[ "$i" -eq 2 ] || fail "expected 2 points, found $i"
[ "$(stat -c %s mnt/vm/disks/odd.img)" -eq 3000001 ] || fail "odd.img has the wrong size"
unmount_vault mnt
note "odd-sized file, tmpfs file and block device replicated byte for byte"
