#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ferry-replicator as a daemon on a local cache applies each segment as it
# arrives (inotify), not at its next --interval: with --interval 60, every
# agent cycle's marker is applied long before the 60 s fallback could have
# done it (polled for with a 20 s cap: a functional check of the wake-up,
# not a timing measurement). The first cycle also creates segments/ and the
# VM's directory under the watches. `ferry status --json` then carries the
# tracker, the lag, what waits in the cache and at the source and the
# agent's last cycle, read from the status the agent put into the cache; a
# status that is stale, damaged or missing shows as silent, an error or
# unknown. SIGTERM stops the waiting daemon at once. Where
# qemu-storage-daemon is installed, a VM on the qemu tracker is applied as
# promptly, though enabled while the replicator waits, and reports what its
# dirty bitmaps hold (nothing, after a cycle nobody wrote during).
. "$(dirname "$0")/lib.sh"
cd "$T"

seeded_bytes 4194304 61 > disk.img
truncate -s 16M disk.img
"$FERRY" init --vault vault >/dev/null
# An empty cache directory: segments/ and segments/vm/ appear under the
# replicator's watches with the first put.
"$FERRY" enable-replication --vault vault --vm vm --disk d0=disk.img --crash-interval 0 \
	--interval 5 >/dev/null
[ ! -e vault/cache/segments ] || fail "the cache already has segments/ before any agent ran"

"$REPLICATOR" --vault vault --interval 60 2>replicator.log &
rpid=$!
PIDS+=("$rpid")
sleep 0.5
kill -0 $rpid 2>/dev/null || fail "the replicator did not start: $(cat replicator.log)"

for i in 1 2 3; do
	[ "$i" -gt 1 ] && scatter_writes disk.img 50 $((61 + i))
	"$AGENT" --config vault/agents/vm.conf --once 2>>agent.log || fail "agent cycle $i failed"
	took=$(await_points vault vm "$i" "$rpid" replicator.log "the replicator waits --interval 60 instead of waking up")
	note "cycle $i applied $took s after the agent finished"
done

# The cache is emptied by the acker after the commit; give it a moment.
for _ in $(seq 50); do
	[ -z "$(ls vault/cache/segments/vm)" ] && break
	sleep 0.1
done

"$FERRY" status --vault vault --json > status.json || fail "ferry status --json failed"
python3 - status.json <<'PY' || fail "ferry status --json: $(cat status.json)"
import json, sys
vm = json.load(open(sys.argv[1]))["vms"][0]
def check(cond, what):
    if not cond:
        sys.exit(f"status: {what}: {json.dumps(vm, indent=1)}")
check(vm["tracker"] == "scan", "tracker")
check(isinstance(vm["lag_seconds"], (int, float)) and 0 <= vm["lag_seconds"] < 3600, "lag_seconds")
check(vm["pending_segments"] == 0 and vm["pending_bytes"] == 0, "nothing waits in the cache")
check(vm["source_pending_bytes"] is None, "the scan tracker cannot know what waits at the source")
check(isinstance(vm["last_cycle_seconds"], (int, float)) and 0 <= vm["last_cycle_seconds"] < 600,
      "last_cycle_seconds")
check(vm["last_cycle_segments"] >= 1 and vm["last_cycle_bytes"] >= 0, "last cycle's size")
a = vm["agent"]
check(a is not None and a["tracker"] == "scan" and a["cycle"] == 3, "agent status, cycle 3")
check(a["interval_seconds"] == 5 and a["silent"] is False and a["error"] is None, "agent health")
check(0 < a["last_cycle_read_bytes"] <= 16 << 20, "the scan read the disk's data, holes skipped")
check(a["last_marker"] and a["last_cycle_start"] and a["updated"], "agent times")
PY
"$FERRY" status --vault vault > status.txt || fail "ferry status failed"
grep -q "^  tracker        scan$" status.txt || fail "status: no tracker line: $(cat status.txt)"
grep -q "^  last cycle     #3 at " status.txt || fail "status: no last cycle: $(cat status.txt)"
grep -q "^  at the source  unknown" status.txt || fail "status: source bytes: $(cat status.txt)"
grep -q "^  lag (RPO)      [0-9.]* s since" status.txt || fail "status: no lag: $(cat status.txt)"

# An agent whose last report is an hour old is silent. The status is
# written here the way docs/format/cache.md says, by the test's own python.
cp vault/cache/status/vm.status fresh.status
python3 - vault/cache/status/vm.status <<'PY'
import hashlib, struct, sys, time
path = sys.argv[1]
b = bytearray(open(path, "rb").read())
struct.pack_into("<q", b, 16, (int(time.time()) - 3600) * 10**9)
b[-32:] = hashlib.sha256(bytes(b[:-32])).digest()
open(path, "wb").write(b)
PY
"$FERRY" status --vault vault > status.txt
grep -q "^  agent          silent since " status.txt || fail "stale status not silent: $(cat status.txt)"
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
a = json.load(sys.stdin)["vms"][0]["agent"]
sys.exit(0 if a["silent"] is True and a["updated_seconds_ago"] >= 3600 else 1)' ||
	fail "stale status: silent is not true in --json"

# Damaged, then missing: the figures are unknown, status still works.
printf 'FERRYSTA but not really' > vault/cache/status/vm.status
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = json.load(sys.stdin)["vms"][0]
sys.exit(0 if vm["agent"] is None and vm["agent_status_error"] and vm["last_cycle_seconds"] is None else 1)' ||
	fail "a damaged status is not reported as such"
"$FERRY" status --vault vault | grep -q "unreadable" || fail "text status hides the damaged status"
rm vault/cache/status/vm.status
"$FERRY" status --vault vault > status.txt
grep -q "^  last cycle     unknown (no status from the agent yet)" status.txt ||
	fail "missing status: $(cat status.txt)"
cp fresh.status vault/cache/status/vm.status

# While it waits (nothing arrives; --interval 60 is far away), SIGTERM
# ends it at once, cleanly.
sleep 0.5
kill -TERM $rpid
start=$(date +%s)
while kill -0 $rpid 2>/dev/null; do
	[ $(($(date +%s) - start)) -lt 10 ] || fail "the replicator ignored SIGTERM while waiting"
	sleep 0.05
done
wait $rpid || fail "the replicator exited non-zero after SIGTERM: $(cat replicator.log)"
note "the replicator stopped $(($(date +%s) - start)) s after SIGTERM"

# ---- the qemu tracker, where qemu-storage-daemon is installed ----
if ! command -v qemu-storage-daemon >/dev/null; then
	note "qemu-storage-daemon missing (Debian package qemu-system-x86): qemu tracker part skipped"
	exit 0
fi
seeded_bytes 2097152 81 > q.img
truncate -s 16M q.img
qemu-storage-daemon \
	--chardev socket,id=m0,path="$T/ferry.qmp",server=on,wait=off --monitor chardev=m0 \
	--blockdev driver=file,node-name=file0,filename="$T/q.img" \
	--blockdev driver=raw,node-name=disk0,file=file0 2>>qsd.log &
PIDS+=($!)
for _ in $(seq 100); do
	[ -S "$T/ferry.qmp" ] && break
	sleep 0.05
done
[ -S "$T/ferry.qmp" ] || fail "qemu-storage-daemon did not start: $(cat qsd.log)"
# Enabled while the replicator waits, with a cache of its own that no
# watch covers yet: the replicator notices the new VM in the catalog and
# takes its segments without waiting out --interval.
"$REPLICATOR" --vault vault --interval 60 2>>replicator.log &
rpid=$!
PIDS+=("$rpid")
sleep 0.5
"$FERRY" enable-replication --vault vault --vm q --tracker qemu --qmp "$T/ferry.qmp" \
	--disk d0=disk0 --crash-interval 0 --cache "$T/qcache" >/dev/null ||
	fail "enable-replication --tracker qemu"
sleep 1.5
for i in 1 2; do
	"$AGENT" --config vault/agents/q.conf --once 2>>agent.log || fail "qemu agent cycle $i failed: $(tail -5 agent.log)"
	start=$(date +%s)
	until [ "$(points_of vault q | grep -c . || true)" -ge "$i" ]; do
		[ $(($(date +%s) - start)) -lt 20 ] || fail "qemu cycle $i not applied within 20 s"
		sleep 0.1
	done
done
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin)["vms"] if v["vm"] == "q"][0]
a = vm["agent"]
ok = (vm["tracker"] == "qemu" and a and a["tracker"] == "qemu" and a["cycle"] >= 1
      and vm["source_pending_bytes"] == 0 and vm["last_cycle_segments"] >= 1
      and vm["lag_seconds"] >= 0 and a["interval_seconds"] >= 1)
sys.exit(0 if ok else "qemu status: " + json.dumps(vm))' || fail "status of the qemu-tracked VM"
"$FERRY" status --vault vault | grep -q "^  at the source  0 B written and not shipped yet" ||
	fail "text status: no bytes waiting at the source for the qemu tracker"
kill -TERM $rpid
wait $rpid || fail "the replicator exited non-zero after SIGTERM"
note "qemu tracker: both cycles applied, status reports 0 bytes waiting at the source"
