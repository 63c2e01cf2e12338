#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Replication heals itself. Every way the agent's state and the vault can
# disagree ends in a resync, with no manual step: the vault publishes its
# image's fingerprints, the agent ships only what differs, and the live
# image equals the disk again. Each case checks the bytes (through ferryfs)
# and what the resync shipped:
#   a1. a whole cycle's segments vanish from the cache (the agent notices);
#   a2. the first segment of a two-segment cycle vanishes (the replicator
#       notices the gap);
#   b.  the agent's state directory is restored from an older copy, with a
#       block written back to what the copy remembers (shipping from the
#       copy would leave the vault wrong);
#   c.  ferry resync forces one; status shows resync-required, the reason
#       and an honest lag meanwhile;
#   d.  a second agent with another state directory is refused while the
#       first's lease is fresh; the first, killed with SIGKILL and started
#       again, takes its lease back at once; once the lease has run out the
#       second takes it, and its state (another chain) resyncs;
#   e.  a segment with one flipped byte;
#   f.  the whole vault restored from a copy two cycles old, the agent's
#       state ahead of it.
# With qemu-storage-daemon installed, also the qemu tracker: its state
# directory lost, then a resync adopted into its fingerprint files (one full
# compare cycle that ships only what differs).
. "$(dirname "$0")/lib.sh"
need_fuse
cd "$T"

seeded_bytes 33554432 21 > disk.img
truncate -s 256M disk.img
disk_bytes=$(stat -c %s disk.img)
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm db --disk d0=disk.img --crash-interval 0 >/dev/null
conf=vault/agents/db.conf
cycle vault db
mount_vault vault mnt

agent_once() { "$AGENT" --config "${1:-$conf}" --once "${@:2}" 2>>agent.log; }
replicate() {
	"$REPLICATOR" --vault vault --once 2>>replicator.log ||
		fail "replicator pass failed: $(tail -5 replicator.log)"
}
vm_field() { "$FERRY" status --vault vault --json | python3 -c "
import json, sys
vm = json.load(sys.stdin)['vms'][0]
v = vm
for k in '$1'.split('.'):
    v = v.get(k) if isinstance(v, dict) else None
print(v)"; }
live_equals() { cmp mnt/db/disks/d0.img disk.img || fail "$1: the live image differs from the disk"; }
shipped() { sed -n 's/^cycle_shipped_bytes=//p' "${1:-vault/agents/db.state}/stats"; }
# The agent must refuse to ship and ask for a resync; the replicator
# answers it; the agent's next cycle adopts and ships what differs.
expect_waiting() { # WHAT [CONF [AGENT OPTIONS...]]
	if agent_once "${2:-$conf}" "${@:3}"; then fail "$1: the agent shipped a cycle from a state behind the chain"; fi
	tail -3 agent.log | grep -q "waiting for a resync" || fail "$1: the agent did not ask for a resync: $(tail -3 agent.log)"
}
resync_cycle() { # WHAT [CONF [AGENT OPTIONS...]]
	[ "$(vm_field state)" = resync-required ] || fail "$1: state is $(vm_field state), not resync-required"
	agent_once "${2:-$conf}" "${@:3}" || fail "$1: the agent's resync cycle failed: $(tail -5 agent.log)"
	tail -5 agent.log | grep -q "adopted resync" || fail "$1: the agent did not adopt the resync"
	replicate
	[ "$(vm_field state)" = protected ] || fail "$1: state is $(vm_field state) after the resync"
	[ -z "$(find vault/cache/resync/db -type f 2>/dev/null)" ] || fail "$1: the resync's fingerprints stayed in the cache"
	live_equals "$1"
}

# ---- a1: a whole cycle's segments vanish before the replicator runs ----
scatter_writes disk.img 200 31
agent_once || fail "a1: agent cycle failed"
rm vault/cache/segments/db/*.seg
replicate
scatter_writes disk.img 50 32
expect_waiting "a1"
replicate
grep -q "resync 1 requested: the agent asked for one: segments the agent shipped" replicator.log ||
	fail "a1: the replicator did not start resync 1: $(tail -3 replicator.log)"
resync_cycle "a1"
s=$(shipped)
[ "$s" -gt 0 ] && [ "$s" -le $((250 * 4096)) ] || fail "a1: the resync shipped $s bytes for 250 changed blocks"
note "a1: a lost cycle: resync 1 shipped $s bytes of a $disk_bytes-byte disk; live image equal"

# ---- a2: the first segment of a two-segment cycle vanishes ----
dd if=/dev/urandom of=disk.img bs=1M seek=100 count=18 conv=notrunc status=none
agent_once || fail "a2: agent cycle failed"
segs=(vault/cache/segments/db/*.seg)
[ "${#segs[@]}" -ge 2 ] || fail "a2: 18 MiB made ${#segs[@]} segment(s)"
rm "${segs[0]}"
scatter_writes disk.img 20 33
agent_once || fail "a2: the agent's next cycle failed"
replicate
grep -q "out of sequence" replicator.log || fail "a2: the replicator did not see the gap"
grep -q "resync 2 requested: segment .* refused: out of sequence" replicator.log ||
	fail "a2: the gap did not start a resync: $(tail -3 replicator.log)"
[ -z "$(ls vault/cache/segments/db)" ] || fail "a2: the replaced chain's segments stayed in the cache"
resync_cycle "a2"
s=$(shipped)
[ "$s" -ge $((18 << 20)) ] && [ "$s" -le $((19 << 20)) ] ||
	fail "a2: the resync shipped $s bytes for 18 MiB + 20 blocks changed"
note "a2: a gap in the chain: resync 2 shipped $s bytes; live image equal"

# ---- b: the state directory restored from an older copy ----
printf 'AAAA%.0s' $(seq 1024) | dd of=disk.img bs=4096 seek=2000 conv=notrunc status=none
cycle vault db
cp -a vault/agents/db.state old.state
printf 'BBBB%.0s' $(seq 1024) | dd of=disk.img bs=4096 seek=2000 conv=notrunc status=none
scatter_writes disk.img 10 34
cycle vault db
# Back to what the old copy remembers: shipping from it would skip block 2000.
printf 'AAAA%.0s' $(seq 1024) | dd of=disk.img bs=4096 seek=2000 conv=notrunc status=none
rm -rf vault/agents/db.state
cp -a old.state vault/agents/db.state
expect_waiting "b"
grep -q "state is older than the chain" agent.log || fail "b: the wrong reason: $(tail -1 agent.log)"
replicate
resync_cycle "b"
s=$(shipped)
[ "$s" -le $((12 * 4096)) ] || fail "b: the resync shipped $s bytes for 11 changed blocks"
note "b: a restored state directory: resync shipped $s bytes; block 2000 is right"

# ---- c: ferry resync; status meanwhile ----
"$FERRY" resync --vault vault db 2>resync.err || fail "c: ferry resync failed: $(cat resync.err)"
marker_lag=$(vm_field lag_seconds)
[ "$(vm_field state)" = resync-required ] || fail "c: state is $(vm_field state)"
[ "$(vm_field resync.reason)" = "requested by ferry resync" ] || fail "c: reason $(vm_field resync.reason)"
"$FERRY" status --vault vault | grep -q "resync         #4 requested .*waiting for the agent: requested by ferry resync" ||
	fail "c: status does not show the resync: $("$FERRY" status --vault vault | head -4)"
sleep 2
lag=$(vm_field lag_seconds)
python3 -c "import sys; sys.exit(0 if float('$lag') >= float('$marker_lag') + 1.9 else 1)" ||
	fail "c: lag $lag during the resync did not grow from $marker_lag (RPO must stay honest)"
scatter_writes disk.img 5 35
resync_cycle "c"
s=$(shipped)
[ "$s" -le $((5 * 4096)) ] || fail "c: a forced resync shipped $s bytes for 5 changed blocks"
note "c: ferry resync: status showed it with a growing lag; it shipped $s bytes"

# ---- d: one agent per VM, whatever its state directory ----
sed "s|db\.state|second.state|" "$conf" > second.conf
out=$("$AGENT" --config second.conf --once 2>&1) && fail "d: a second agent ran beside the first's fresh lease"
echo "$out" | grep -q "another agent holds its lease (host $(hostname), pid [0-9]*" ||
	fail "d: the refusal does not name the holder: $out"
[ ! -e vault/agents/second.state/progress ] || fail "d: the refused agent scanned"
# The first agent as a daemon with a short lease, killed and restarted.
"$AGENT" --config "$conf" --interval 1 --lease 4 2>>agent.log &
apid=$!
PIDS+=("$apid")
for i in $(seq 100); do [ "$(vm_field agent_lease.pid)" = "$apid" ] && break; sleep 0.1; done
[ "$(vm_field agent_lease.pid)" = "$apid" ] || fail "d: the daemon did not take the lease"
"$FERRY" status --vault vault | grep -q "agent lease    host $(hostname), pid $apid" || fail "d: status does not show the holder"
kill -9 "$apid"
wait "$apid" 2>/dev/null || true
agent_once "$conf" --lease 4 || fail "d: the first agent, restarted after SIGKILL, did not retake its lease: $(tail -3 agent.log)"
replicate
out=$("$AGENT" --config second.conf --once 2>&1) && fail "d: the second agent ran before the lease ran out"
sleep 5
# Its state is new: it takes the lease over and asks for a resync.
expect_waiting "d: the second agent after expiry" second.conf --lease 2
grep -q "the agent has no state but the vault holds" agent.log || fail "d: the wrong reason: $(tail -1 agent.log)"
[ "$(vm_field agent_lease.pid)" != "$apid" ] || fail "d: the second agent did not take the lease"
replicate
scatter_writes disk.img 5 36
resync_cycle "d: the second agent" second.conf --lease 2
s=$(shipped vault/agents/second.state)
[ "$s" -le $((5 * 4096)) ] || fail "d: the second agent's resync shipped $s bytes for 5 changed blocks"
out=$("$AGENT" --config "$conf" --once 2>&1) && fail "d: the first agent ran beside the second's lease"
# Back to the first, once the second's lease ran out: the second shipped
# the chain since, so the first's state is behind it.
sleep 3
scatter_writes disk.img 5 37
expect_waiting "d: the first agent again" "$conf"
grep -q "another agent state shipped" agent.log || fail "d: the wrong reason: $(tail -1 agent.log)"
replicate
resync_cycle "d: the first agent again" "$conf"
note "d: a second agent refused, a SIGKILLed one back at once, take-overs after expiry resynced"

# ---- e: a damaged segment ----
scatter_writes disk.img 40 38
agent_once || fail "e: agent cycle failed"
seg=$(ls vault/cache/segments/db/*.seg | head -1)
python3 - "$seg" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    off = os.path.getsize(sys.argv[1]) // 2
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x10]))
PY
replicate
grep -q "$(basename "$seg") refused: segment is damaged" replicator.log || fail "e: the damage was not named"
[ "$(vm_field resync.reason)" != "requested by ferry resync" ] || fail "e: no new resync"
vm_field resync.reason | grep -q "$(basename "$seg")" || fail "e: the reason does not name the segment"
resync_cycle "e"
s=$(shipped)
[ "$s" -le $((40 * 4096)) ] || fail "e: the resync shipped $s bytes for 40 changed blocks"
note "e: a damaged segment: resync shipped $s bytes"
"$FERRY" check --vault vault --read-data >/dev/null || fail "the vault does not check"

# ---- f: the vault restored from a lagging copy ----
# A copy of the whole vault (catalog, store and the cache inside it) taken
# two cycles ago comes back, as from a backup or a lagging replica of the
# store; the agent's state, kept apart from it, is ahead of it.
unmount_vault mnt
cp -a vault lagging
for i in 1 2; do
	scatter_writes disk.img 20 $((40 + i))
	cycle vault db 2>>agent.log
done
mv vault/agents/db.state db.state.now
rm -rf vault
mv lagging vault
rm -rf vault/agents/db.state
mv db.state.now vault/agents/db.state
mount_vault vault mnt
scatter_writes disk.img 10 43
expect_waiting "f"
replicate
resync_cycle "f"
s=$(shipped)
[ "$s" -le $((50 * 4096)) ] || fail "f: the resync shipped $s bytes for 50 changed blocks"
note "f: a vault restored from a two-cycle-old copy: resync shipped $s bytes; live image equal"

# ---- the qemu tracker ----
unmount_vault mnt
command -v qemu-storage-daemon >/dev/null || { note "qemu-storage-daemon missing: the qemu case skipped"; exit 0; }
command -v qemu-io >/dev/null || { note "qemu-io missing: the qemu case skipped"; exit 0; }
rm -rf vault mnt
seeded_bytes 8388608 41 > q.img
truncate -s 64M q.img
qemu-storage-daemon \
	--chardev socket,id=m0,path="$T/ferry.qmp",server=on,wait=off --monitor chardev=m0 \
	--blockdev driver=file,node-name=file0,filename="$T/q.img" \
	--blockdev driver=raw,node-name=disk0,file=file0 \
	--nbd-server addr.type=unix,addr.path="$T/nbd.sock" \
	--export type=nbd,id=rw0,node-name=disk0,name=rw,writable=on 2>>qsd.log &
PIDS+=($!)
for i in $(seq 100); do [ -S "$T/nbd.sock" ] && [ -S "$T/ferry.qmp" ] && break; sleep 0.05; done
wr() { qemu-io -f raw "nbd+unix:///rw?socket=$T/nbd.sock" -c "$1" >/dev/null || fail "qemu-io '$1'"; }
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm db --tracker qemu --qmp "$T/ferry.qmp" \
	--nbd-socket "$T/nbd.sock" --disk d0=disk0 --crash-interval 0 >/dev/null
qcycle() { agent_once "$conf" --lease 2 || fail "qemu: agent cycle failed: $(tail -5 agent.log)"; replicate; }
qcycle
mount_vault vault mnt
wr "write -P 0x31 3M 64k"
qcycle
# The state directory lost (its identity with it: the lease must run
# out first): the agent asks, and adopts the vault's fingerprints instead
# of shipping the disk whole.
rm -rf vault/agents/db.state
wr "write -P 0x32 20M 8k"
sleep 3
expect_waiting "qemu" "$conf" --lease 2
grep -q "the agent has no state but the vault holds" agent.log || fail "qemu: the wrong reason: $(tail -1 agent.log)"
replicate
agent_once "$conf" --lease 2 || fail "qemu: the resync cycle failed: $(tail -5 agent.log)"
grep -q "resync: this cycle reads it whole" agent.log || fail "qemu: no full compare cycle"
replicate
[ "$(vm_field state)" = protected ] || fail "qemu: state is $(vm_field state)"
cmp mnt/db/disks/d0.img q.img || fail "qemu: the live image differs from the disk"
s=$(shipped)
[ "$s" -le $((8 << 10)) ] || fail "qemu: the resync shipped $s bytes for 8 KiB written"
wr "write -P 0x33 30M 4k"
qcycle
cmp mnt/db/disks/d0.img q.img || fail "qemu: the cycle after the resync is wrong"
[ "$(shipped)" -le 4096 ] || fail "qemu: the cycle after the resync shipped $(shipped) bytes: bitmap not used"
note "qemu tracker: a lost state directory resynced shipping $s bytes; the next cycle is incremental"
