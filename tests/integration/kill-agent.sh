#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# An agent killed with SIGKILL during initial replication, again and again,
# then restarted, ends with exactly the images of one that was never
# interrupted, and resumes instead of starting over: what it ships in all
# stays well under one full copy per kill.
. "$(dirname "$0")/lib.sh"
need_fuse
cd "$T"

size=$((160 * 1048576))
seeded_bytes $size 61 > disk.img
for v in ref killed; do
	"$FERRY" init --vault $v >/dev/null
	"$FERRY" enable-replication --vault $v --vm vm --disk a=disk.img \
		--crash-interval 0 --agent-config $v.conf >/dev/null
done

"$AGENT" --config ref.conf --once 2>/dev/null || fail "reference agent failed"
cached_bytes() { du -sb "$1/cache/segments" | cut -f1; }

segments() { find killed/cache -name '*.seg' 2>/dev/null | wc -l || true; }

# Kill it mid-cycle whatever its speed: once it has put one more segment,
# after a varying delay (so that kills land anywhere: scanning,
# compressing, putting, recording progress).
kills=0 finished=0
for delay in 0.03 0 0.05 0.01 0.02 0.04 0.005 0.015; do
	before=$(segments)
	"$AGENT" --config killed.conf --once 2>/dev/null &
	pid=$!
	while kill -0 $pid 2>/dev/null && [ "$(segments)" -le "$before" ]; do sleep 0.005; done
	sleep "$delay"
	kill -9 $pid 2>/dev/null || true
	if wait $pid 2>/dev/null; then finished=1; break; fi
	kills=$((kills + 1))
done
[ "$finished" = 1 ] || "$AGENT" --config killed.conf --once 2>/dev/null ||
	fail "agent failed after the kills"
note "agent killed $kills times during initial replication"
[ "$kills" -ge 3 ] || fail "the agent finished too fast to be killed"

shipped=$(cached_bytes killed)
note "shipped $shipped bytes for a $size-byte disk (reference: $(cached_bytes ref))"
# Starting over after each kill would ship about (kills + 1) x the disk.
[ "$shipped" -lt $((size * 2)) ] || fail "agent did not resume: shipped $shipped bytes"

"$REPLICATOR" --vault ref --once 2>/dev/null || fail "replicating the reference failed"
"$REPLICATOR" --vault killed --once 2>/dev/null || fail "replicating the killed agent's segments failed"
[ "$("$FERRY" recovery-points --vault killed vm | wc -l)" -eq 1 ] || fail "expected one point"

mount_vault ref mref
mount_vault killed mkilled
cmp mkilled/vm/recovery-points/latest/a.img disk.img || fail "point differs from the source"
cmp mkilled/vm/recovery-points/latest/a.img mref/vm/recovery-points/latest/a.img ||
	fail "killed and reference points differ"
unmount_vault mref
unmount_vault mkilled

# A second cycle after the kills ships only the change.
scatter_writes disk.img 100 62
before=$(cached_bytes killed)
"$AGENT" --config killed.conf --once 2>/dev/null || fail "second cycle failed"
delta=$(( $(cached_bytes killed) - before ))
[ "$delta" -lt $((2 * 1048576)) ] || fail "second cycle shipped $delta bytes for 100 blocks"
"$REPLICATOR" --vault killed --once 2>/dev/null || fail "second cycle not applied"
mount_vault killed mkilled
cmp mkilled/vm/disks/a.img disk.img || fail "live image differs after the second cycle"
unmount_vault mkilled
