#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The qemu tracker, byte for byte, against a real qemu-storage-daemon and a
# real qemu-system-x86_64 (stopped vCPUs: the test writes through the block
# layer, which the dirty bitmaps see like guest writes).
#
# qemu-storage-daemon: the test writes exact bytes through a writable NBD
# export of the disk node (the daemon's own NBD server, which the agent then
# shares through nbd-socket). Each cycle's recovery point must equal the
# disk as it was at the cut: the first (full) cycle, scattered writes, a
# write of zeros, a cycle with no writes (still a point), a cycle whose
# agent is killed with SIGKILL while it reads (the next one loses nothing),
# and a restart of the daemon, which loses the in-memory bitmap (the next
# cycle reads the disk whole).
#
# qemu-system-x86_64: writes injected with HMP qemu-io on the test's own
# monitor; the agent runs qemu's NBD server itself; two disks cut together.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v qemu-storage-daemon >/dev/null || skip "qemu-storage-daemon missing (Debian package qemu-system-x86)"
command -v qemu-io >/dev/null || skip "qemu-io missing (Debian package qemu-utils)"
QMP="python3 $SOURCE/tests/integration/qmp.py"

cd "$T"

agent() { "$AGENT" --config vault/agents/vm1.conf --once 2>>agent.log; }
qcycle() {
	agent || fail "agent cycle failed: $(tail -5 agent.log)"
	"$REPLICATOR" --vault vault --once 2>>replicator.log || fail "replicator pass failed: $(tail -5 replicator.log)"
}
latest_equals() { # IMAGE WHAT
	cmp "mnt/vm1/recovery-points/latest/d0.img" "$1" || fail "latest point differs from the disk: $2"
	cmp "mnt/vm1/disks/d0.img" "$1" || fail "live image differs from the disk: $2"
}
npoints() { points_of vault vm1 | wc -l; }

# ---- qemu-storage-daemon ----
seeded_bytes 8388608 71 > disk.img
truncate -s 64M disk.img
qsd_start raw disk.img

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --tracker qemu --qmp "$T/ferry.qmp" \
	--nbd-socket "$T/nbd.sock" --disk d0=disk0 --crash-interval 0 >enable.out ||
	fail "enable-replication --tracker qemu: $(cat enable.out)"
qcycle
mount_vault vault mnt
latest_equals disk.img "first (full) cycle"
note "first cycle: the point equals the disk"

qsd_write "write -P 0xab 1M 64k"
qsd_write "write -P 0x11 12345k 4k"
qsd_write "write -P 0x22 40M 8k"
qcycle
latest_equals disk.img "scattered writes"
note "scattered writes: the point equals the disk"

qsd_write "write -z 1M 64k"
qcycle
latest_equals disk.img "zeros written"
note "a write of zeros"

before=$(npoints)
qcycle
[ "$(npoints)" -eq $((before + 1)) ] || fail "a cycle without writes made no point"
latest_equals disk.img "idle cycle"
note "a cycle without writes still ships its marker"

# Small writes stay small: 2,000 random 4 KiB blocks of random data grow
# the store by at most 1.5 times the bytes written.
store_bytes() { du -sb vault/store | cut -f1; }
mkdir small
python3 - "$T/small" > small.cmds <<'PY'
import os, random, sys
rng = random.Random(5)
for i in range(2000):
    src = os.path.join(sys.argv[1], str(i))
    with open(src, "wb") as f:
        f.write(rng.randbytes(4096))
    print("write -s %s %d 4k" % (src, rng.randrange(64 * 256) * 4096))
PY
before=$(store_bytes)
cmds=()
while read -r line; do cmds+=(-c "$line"); done < small.cmds
qemu-io -f raw "$(qsd_url)" "${cmds[@]}" >/dev/null || fail "qemu-io small writes"
qcycle
latest_equals disk.img "2,000 scattered 4 KiB writes"
growth=$(($(store_bytes) - before))
blocks=$(awk '{print $4}' small.cmds | sort -u | wc -l)
note "2,000 writes into $blocks distinct 4 KiB blocks grew the store by $growth bytes"
[ "$growth" -le $((blocks * 4096 * 3 / 2)) ] || fail "store grew by $growth bytes, over 1.5 x $((blocks * 4096))"

# SIGKILL while the agent reads: 32 MiB of fresh data to read makes the window.
qsd_write "write -P 0x5a 16M 32M"
# The agent itself, not a subshell running it, is what gets killed.
"$AGENT" --config vault/agents/vm1.conf --once 2>>agent.log &
apid=$!
sleep 0.3
kill -9 "$apid" 2>/dev/null || true
wait "$apid" 2>/dev/null || true
qsd_write "write -P 0x6b 60M 4k"
qcycle
latest_equals disk.img "after an agent killed mid-cycle"
note "an agent killed mid-cycle: the next cycle loses nothing"

# A daemon restart loses the bitmap (raw image: in memory only).
kill "$qsd_pid"
wait "$qsd_pid" 2>/dev/null || true
qsd_start raw disk.img
qsd_write "write -P 0x7c 33M 4k"
qcycle
grep -q "lost its dirty bitmap" agent.log || fail "the agent did not notice the lost bitmap"
latest_equals disk.img "after a qemu restart"
shipped=$(sed -n 's/^shipped_bytes=//p' vault/agents/vm1.state/stats)
scanned=$(sed -n 's/^scanned_bytes=//p' vault/agents/vm1.state/stats)
note "after a qemu-storage-daemon restart: a full cycle read $scanned bytes and shipped $shipped"
[ "$scanned" -gt $((32 << 20)) ] || fail "the full cycle read only $scanned bytes"
[ "$shipped" -le $((1 << 20)) ] || fail "the full cycle shipped $shipped bytes for one 4 KiB write: fingerprints not used"
unmount_vault mnt
kill "$qsd_pid"

# ---- qemu-system-x86_64, two disks, writes through HMP qemu-io ----
command -v qemu-system-x86_64 >/dev/null || { note "qemu-system-x86_64 missing: second half skipped"; exit 0; }
rm -rf vault mnt
seeded_bytes 4194304 72 > a.img && truncate -s 16M a.img
seeded_bytes 4194304 73 > b.img && truncate -s 8M b.img
rm -f ferry.qmp test.qmp
qemu-system-x86_64 -M pc -accel tcg -nodefaults -display none -S \
	-qmp unix:"$T/ferry.qmp",server=on,wait=off -qmp unix:"$T/test.qmp",server=on,wait=off \
	-blockdev driver=file,node-name=fa,filename="$T/a.img" -blockdev driver=raw,node-name=da,file=fa \
	-device virtio-blk-pci,drive=da,id=vda \
	-blockdev driver=file,node-name=fb,filename="$T/b.img" -blockdev driver=raw,node-name=db,file=fb \
	-device virtio-blk-pci,drive=db,id=vdb 2>>vm.log &
PIDS+=($!)
for i in $(seq 100); do [ -S ferry.qmp ] && [ -S test.qmp ] && break; sleep 0.05; done
hmp_write() { # DEVICE QEMU-IO-COMMAND
	$QMP test.qmp --hmp "qemu-io -d /machine/peripheral/$1/virtio-backend \"$2\"" >/dev/null ||
		fail "HMP qemu-io on $1: $2"
}
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --tracker qemu --qmp "$T/ferry.qmp" \
	--disk a=da --disk b=db --crash-interval 0 >enable.out || fail "enable: $(cat enable.out)"
qcycle
mount_vault vault mnt
for round in 1 2 3; do
	hmp_write vda "write -P $((round + 0x30)) $((round * 3))M 4k"
	hmp_write vdb "write -P $((round + 0x40)) $((round * 2))M 12k"
	hmp_write vda "write -P $((round + 0x50)) 15M 1M"
	qcycle
	cmp mnt/vm1/recovery-points/latest/a.img a.img || fail "round $round: point of disk a differs"
	cmp mnt/vm1/recovery-points/latest/b.img b.img || fail "round $round: point of disk b differs"
done
note "qemu-system-x86_64: two disks, three rounds of HMP writes, every point equals the disks"
bitmaps=$($QMP test.qmp query-named-block-nodes '{"flat": true}' | python3 -c '
import json, sys
print(sum(len(n.get("dirty-bitmaps", [])) for n in json.load(sys.stdin)))')
[ "$bitmaps" -eq 2 ] || fail "qemu holds $bitmaps dirty bitmaps after the cycles, not one per disk"
nodes=$($QMP test.qmp query-named-block-nodes '{"flat": true}' | grep -o '"node-name": "fy[^"]*"' || true)
[ -z "$nodes" ] || fail "views left in qemu: $nodes"
note "after the cycles qemu holds one bitmap per disk and no view, job or export"
