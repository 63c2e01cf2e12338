#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A replicator killed with SIGKILL while applying, again and again, then
# restarted, ends with exactly the recovery points and bytes of one that was
# never interrupted: same point names and sequences, byte-identical images,
# and a vault that passes check --read-data.
. "$(dirname "$0")/lib.sh"
need_fuse
cd "$T"

seeded_bytes 100663296 41 > disk.img
seeded_bytes 4194304 42 > small.img
truncate -s 64M small.img
for v in ref killed; do
	"$FERRY" init --vault $v >/dev/null
	"$FERRY" enable-replication --vault $v --vm vm --disk a=disk.img --disk b=small.img \
		--crash-interval 0 --agent-config $v.conf >/dev/null
done

# Three cycles into the reference cache; the killed vault gets copies of
# the same segments, so both replicators see identical input.
for i in 1 2 3; do
	"$AGENT" --config ref.conf --once 2>/dev/null
	scatter_writes disk.img 500 $((42 + i))
	scatter_writes small.img 100 $((52 + i))
done
cp -a ref/cache/segments killed/cache/
nseg=$(ls ref/cache/segments/vm | wc -l)
note "$nseg segments to apply"

"$REPLICATOR" --vault ref --once 2>/dev/null || fail "reference replicator failed"

kills=0
for delay in 0.05 0.15 0.3 0.1 0.45 0.2 0.6 0.25 0.8 0.35 1.0 0.5; do
	[ -n "$(ls killed/cache/segments/vm)" ] || break
	"$REPLICATOR" --vault killed --once 2>/dev/null &
	pid=$!
	sleep "$delay"
	if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
	wait $pid 2>/dev/null || true
done
"$REPLICATOR" --vault killed --once 2>/dev/null || fail "replicator failed after the kills"
note "replicator killed $kills times while applying"
[ "$kills" -ge 3 ] || fail "the replicator finished too fast to be killed while applying"
[ -z "$(ls killed/cache/segments/vm)" ] || fail "segments left in the cache"

# Point names come from the agent's consistency markers, so even they match.
"$FERRY" recovery-points --vault ref vm > ref.points
"$FERRY" recovery-points --vault killed vm > killed.points
cmp ref.points killed.points || fail "points differ: $(diff ref.points killed.points)"
[ "$(wc -l < ref.points)" -eq 3 ] || fail "expected 3 points"
"$FERRY" check --vault killed --read-data >/dev/null || fail "the killed vault is damaged"

mount_vault ref mref
mount_vault killed mkilled
mapfile -t rp < <(ls mref/vm/recovery-points | grep -v latest)
mapfile -t kp < <(ls mkilled/vm/recovery-points | grep -v latest)
for i in 0 1 2; do
	for d in a b; do
		cmp "mref/vm/recovery-points/${rp[$i]}/$d.img" "mkilled/vm/recovery-points/${kp[$i]}/$d.img" ||
			fail "point $i disk $d differs after the kills"
	done
done
cmp mref/vm/disks/a.img mkilled/vm/disks/a.img || fail "live image differs"
cmp mref/vm/disks/a.img "mref/vm/recovery-points/${rp[2]}/a.img" || fail "live image is not cycle 3"
unmount_vault mref
unmount_vault mkilled

# GC removes what the kills left behind (packs written, never committed).
"$FERRY" gc --vault killed > gc.out || fail "gc failed"
note "$(cat gc.out)"
"$FERRY" check --vault killed --read-data >/dev/null || fail "vault damaged after gc"
