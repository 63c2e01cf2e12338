#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A failover's name can mean another clone from one command to the next:
# a test failover cleaned up and made again from another point, and
# change-recovery-point after a failover, each make a new failover under
# the same name. In a mount that already showed the old one, the new
# clone's images must be there at once, with the new point's bytes: no
# stale entry, no "No such file" while the kernel's entry times out.
. "$(dirname "$0")/lib.sh"
need_fuse

cd "$T"
seeded_bytes 2097152 101 > data.img
truncate -s 8M data.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --disk data=data.img --crash-interval 0 >/dev/null
cycle vault vm1 2>/dev/null
cp data.img p1.img
scatter_writes data.img 64 102
cycle vault vm1 2>/dev/null
cp data.img p2.img
mapfile -t points < <(points_of vault vm1)
[ "${#points[@]}" -eq 2 ] || fail "expected two points, got ${#points[@]}"
mount_vault vault mnt
F=mnt/vm1/failovers

# Each round reads the clone right away, then replaces it and reads again
# at once; a few rounds so that a one-second entry cache would be hit.
for round in 1 2 3; do
	"$FERRY" test-failover --vault vault vm1 --name t1 --recovery-point "${points[0]}" >tf.out 2>&1 ||
		fail "round $round: test-failover from the first point failed: $(cat tf.out)"
	cmp "$F/t1/data.img" p1.img || fail "round $round: the clone of the first point differs from it"
	"$FERRY" test-failover-cleanup --vault vault vm1 --name t1 >tf.out 2>&1 ||
		fail "round $round: cleanup failed: $(cat tf.out)"
	"$FERRY" test-failover --vault vault vm1 --name t1 --recovery-point "${points[1]}" >tf.out 2>&1 ||
		fail "round $round: test-failover from the second point failed: $(cat tf.out)"
	cmp "$F/t1/data.img" p2.img ||
		fail "round $round: right after a cleanup and re-create, t1 does not show the second point"
	"$FERRY" test-failover-cleanup --vault vault vm1 --name t1 >tf.out 2>&1 ||
		fail "round $round: second cleanup failed: $(cat tf.out)"
	[ ! -e "$F/t1" ] || fail "round $round: t1 is still there right after its cleanup"
done
note "a test failover re-created under its name shows the new point at once (3 rounds)"

"$FERRY" failover --vault vault vm1 --recovery-point "${points[1]}" >fo.out 2>&1 || fail "failover failed: $(cat fo.out)"
name=$(ls "$F")
[ -n "$name" ] || fail "no failover directory after the failover"
cmp "$F/$name/data.img" p2.img || fail "the failover's clone differs from its point"
"$FERRY" change-recovery-point --vault vault vm1 --recovery-point "${points[0]}" >crp.out 2>&1 ||
	fail "change-recovery-point failed: $(cat crp.out)"
cmp "$F/$name/data.img" p1.img || fail "right after change-recovery-point the clone is not the new point"
note "change-recovery-point: the clone shows the new point at once"
unmount_vault mnt
