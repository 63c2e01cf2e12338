#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The qemu tracker on the paths next to the happy one, against a real
# qemu-storage-daemon:
#
# - a qcow2 disk keeps its bitmap across a clean daemon restart (persistent
#   bitmap: the next cycle reads only what changed), and after a SIGKILL of
#   the daemon qemu loads that bitmap as inconsistent: the agent counts it
#   as lost and runs one full compare cycle, reading everything and
#   shipping only what differs from its fingerprints;
# - an agent killed with SIGKILL after it put a cycle's first segment into
#   the cache and before the segment with the marker: no point comes of the
#   half cycle, and the next cycle ships everything again;
# - a full cache (a small tmpfs over the VM's segment directory): cycles
#   fail with a clear error that `ferry status` shows, qemu keeps no view
#   and at most two bitmaps per disk, lag grows, and once the cache has
#   room the agent catches up and the point equals the disk.
#
# Every point is compared byte for byte with the disk as qemu shows it.

. "$(dirname "$0")/lib.sh"
need_fuse
command -v qemu-storage-daemon >/dev/null || skip "qemu-storage-daemon missing (Debian package qemu-system-x86)"
command -v qemu-io >/dev/null || skip "qemu-io missing (Debian package qemu-utils)"
command -v qemu-img >/dev/null || skip "qemu-img missing (Debian package qemu-utils)"
QMP="python3 $SOURCE/tests/integration/qmp.py"

cd "$T"

qsd_stop() { # SIGNAL
	kill "-$1" "$qsd_pid"
	wait "$qsd_pid" 2>/dev/null || true
}

agent() { "$AGENT" --config vault/agents/vm1.conf --once 2>>agent.log; }
replicate() {
	"$REPLICATOR" --vault vault --once 2>>replicator.log || fail "replicator pass failed: $(tail -5 replicator.log)"
}
qcycle() {
	agent || fail "agent cycle failed: $(tail -5 agent.log)"
	replicate
}
stat_of() { sed -n "s/^$1=//p" vault/agents/vm1.state/stats; }
npoints() { points_of vault vm1 | wc -l; }
# The disk as qemu shows it (through the export), against the newest point
# and the live image.
latest_equals() { # WHAT
	rm -f now.img
	qemu-img convert -f raw -O raw "$(qsd_url)" now.img || fail "cannot read the disk through NBD"
	cmp mnt/vm1/recovery-points/latest/d0.img now.img || fail "latest point differs from the disk: $1"
	cmp mnt/vm1/disks/d0.img now.img || fail "live image differs from the disk: $1"
}
# Dirty bitmaps and Ferry's views (node names fy...) qemu holds now.
qemu_bitmaps() {
	$QMP test.qmp query-named-block-nodes '{"flat": true}' | python3 -c '
import json, sys
print(sum(len(n.get("dirty-bitmaps", [])) for n in json.load(sys.stdin) if n["node-name"] == "disk0"))'
}
qemu_views() { $QMP test.qmp query-named-block-nodes '{"flat": true}' | grep -o '"node-name": "fy[^"]*"' || true; }

# ---- qcow2: persistent bitmaps ----
qemu-img create -q -f qcow2 disk.qcow2 64M
seeded_bytes 8388608 81 > seed.bin
qemu-io -f qcow2 disk.qcow2 -c "write -s seed.bin 0 8M" >/dev/null || fail "cannot seed the qcow2 disk"
qsd_start qcow2 disk.qcow2

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --tracker qemu --qmp "$T/ferry.qmp" \
	--nbd-socket "$T/nbd.sock" --disk d0=disk0 --crash-interval 0 >enable.out ||
	fail "enable-replication --tracker qemu: $(cat enable.out)"
qcycle
mount_vault vault mnt
latest_equals "qcow2, first (full) cycle"
qsd_write "write -P 0x31 20M 64k"
qcycle
latest_equals "qcow2, scattered writes"
note "qcow2 disk: first and incremental cycles equal the disk"

# A clean stop writes the bitmap into the qcow2; the next cycle goes on
# from it and reads only the new write.
qsd_write "write -P 0x32 30M 4k"
qsd_stop TERM
qsd_start qcow2 disk.qcow2
qsd_write "write -P 0x33 40M 4k"
: > agent.log
qcycle
! grep -q "lost its dirty bitmap" agent.log || fail "a clean restart lost the persistent bitmap: $(cat agent.log)"
scanned=$(stat_of scanned_bytes)
[ "$scanned" -le $((1 << 20)) ] || fail "after a clean restart the cycle read $scanned bytes, not just the 8 KiB written"
latest_equals "qcow2, after a clean qemu restart"
note "clean restart: the persistent bitmap carried on, the cycle read $scanned bytes"

# SIGKILL: qemu writes a persistent bitmap into the qcow2 when it closes
# the image and marks it in use when it loads it; killed in between, the
# next qemu loads it as inconsistent. (A bitmap that a cycle made since the
# load is in memory only and simply missing after a kill: the raw disk's
# case, in qemu-tracker.sh.) Writes made before the kill must arrive.
qsd_write "write -P 0x34 50M 4k"
qsd_stop TERM
qsd_start qcow2 disk.qcow2
qsd_write "write -P 0x35 52M 4k"
qsd_stop KILL
qsd_start qcow2 disk.qcow2
inconsistent=$($QMP test.qmp query-named-block-nodes '{"flat": true}' | python3 -c '
import json, sys
print(sum(1 for n in json.load(sys.stdin) for b in n.get("dirty-bitmaps", []) if b.get("inconsistent")))')
[ "$inconsistent" -ge 1 ] || fail "qemu did not load the bitmap as inconsistent after a SIGKILL; the test proves nothing"
: > agent.log
qcycle
grep -q "lost its dirty bitmap" agent.log || fail "the agent did not count the inconsistent bitmap as lost: $(cat agent.log)"
scanned=$(stat_of scanned_bytes)
shipped=$(stat_of shipped_bytes)
[ "$scanned" -ge $((8 << 20)) ] || fail "the full compare read only $scanned bytes"
[ "$shipped" -le $((1 << 20)) ] || fail "the full compare shipped $shipped bytes for one 4 KiB write: fingerprints not used"
latest_equals "qcow2, after qemu was killed (inconsistent bitmap)"
[ "$(qemu_bitmaps)" -eq 1 ] || fail "qemu holds $(qemu_bitmaps) bitmaps after the recovery, not one"
note "SIGKILL of qemu: inconsistent bitmap counted as lost; full compare read $scanned bytes, shipped $shipped"
unmount_vault mnt
qsd_stop TERM

# ---- raw disk: an agent killed between two puts of one cycle ----
rm -rf vault mnt
seeded_bytes 4194304 82 > disk.img
truncate -s 128M disk.img
qsd_start raw disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --tracker qemu --qmp "$T/ferry.qmp" \
	--nbd-socket "$T/nbd.sock" --disk d0=disk0 --crash-interval 0 >enable.out ||
	fail "enable-replication: $(cat enable.out)"
qcycle
mount_vault vault mnt
latest_equals "raw, first cycle"
segdir=$(find vault -type d -path '*segments/vm1' | head -1)
[ -n "$segdir" ] || fail "no segment directory for vm1 in the vault's cache"

# 96 MiB of incompressible data: a cycle of several 16 MiB segments, the
# marker in the last one. A watcher kills the agent once the first is in.
seeded_bytes $((96 << 20)) 83 > big.bin
qsd_write "write -s big.bin 16M 96M"
before_points=$(npoints)
before_segs=$(ls "$segdir" | wc -l)
# The agent itself, not a subshell running it, is what gets killed.
"$AGENT" --config vault/agents/vm1.conf --once 2>>agent.log &
apid=$!
python3 - "$segdir" "$before_segs" "$apid" <<'PY' || fail "the watcher did not see a segment before the agent ended"
import os, signal, sys, time
d, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 120
while time.time() < deadline:
    if len([f for f in os.listdir(d) if f.endswith(".seg")]) > n:
        os.kill(pid, signal.SIGKILL)
        sys.exit(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    time.sleep(0.002)
sys.exit(1)
PY
wait "$apid" 2>/dev/null && fail "the agent finished its cycle before the kill"
after_segs=$(ls "$segdir" | wc -l)
[ "$after_segs" -gt "$before_segs" ] || fail "no segment of the half cycle reached the cache"
replicate
[ "$(npoints)" -eq "$before_points" ] || fail "a point was cut from a cycle whose marker never shipped"
note "agent killed after $((after_segs - before_segs)) segment(s) of a cycle and before its marker: no point"
qsd_write "write -P 0x44 120M 4k"
qcycle
[ "$(npoints)" -eq $((before_points + 1)) ] || fail "the cycle after the kill made no point"
latest_equals "after an agent killed between put and marker"
note "the next cycle shipped everything again: the point equals the disk"

# ---- a full cache ----
mount -t tmpfs -o size=2m ferry-full "$segdir" || skip "cannot mount a tmpfs (not root?)"
LOOPS+=("$T/$segdir")
seeded_bytes $((8 << 20)) 84 > fill.bin
qsd_write "write -s fill.bin 0 8M"
agent && fail "an agent cycle into a full cache succeeded"
grep -q "No space left on device" agent.log || fail "the agent's error does not say the cache is full: $(tail -3 agent.log)"
[ -z "$(qemu_views)" ] || fail "a failed cycle left views in qemu: $(qemu_views)"
sleep 2
qsd_write "write -P 0x45 100M 4k"
agent && fail "the second agent cycle into a full cache succeeded"
[ -z "$(qemu_views)" ] || fail "a failed cycle left views in qemu: $(qemu_views)"
nb=$(qemu_bitmaps)
[ "$nb" -le 2 ] || fail "qemu holds $nb bitmaps after two failed cycles"
"$FERRY" status --vault vault >status.out || fail "ferry status failed"
grep -q "last cycle failed.*No space left on device" status.out ||
	fail "ferry status does not show the full cache: $(cat status.out)"
lag=$("$FERRY" status --vault vault --json | python3 -c '
import json, sys
print(int(json.load(sys.stdin)["vms"][0]["lag_seconds"]))')
[ "$lag" -ge 2 ] || fail "lag is ${lag}s while the cache is full"
note "full cache: cycles fail, status says why, lag ${lag}s, qemu holds $nb bitmap(s) and no view"
ls "$segdir" >/dev/null
umount "$segdir" || fail "cannot unmount the tmpfs"
qcycle
latest_equals "after the cache had room again"
"$FERRY" status --vault vault >status.out
! grep -q "last cycle failed" status.out || fail "status still shows the old failure: $(cat status.out)"
note "the cache has room again: one cycle caught up, the point equals the disk"
unmount_vault mnt
qsd_stop TERM
