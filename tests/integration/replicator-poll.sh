#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ferry-replicator as a daemon with its VM's cache on object storage
# (Azurite; no Azurite means exit 77 with the reason) lists the cache every
# --poll-interval (default 1 s) and applies each cycle's segments when a
# listing shows them, not at its next --interval: with --interval 60 every
# marker is applied long before the fallback (a 20 s cap: a functional
# check of the polling, not a timing measurement). The container does not
# exist when the replicator starts: the agent's first put creates it. The
# agent's status travels through the container to `ferry status`, and
# SIGTERM stops the polling daemon at once.
. "$(dirname "$0")/objstore-lib.sh"
cd "$T"

azurite_start
seeded_bytes 2097152 71 > disk.img
truncate -s 8M disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm --disk d0=disk.img --crash-interval 0 \
	--cache azblob://ferry-poll/site-a --interval 5 >/dev/null || fail "enable-replication"

"$REPLICATOR" --vault vault --interval 60 -v 2>replicator.log &
rpid=$!
PIDS+=("$rpid")
sleep 0.5
kill -0 $rpid 2>/dev/null || fail "the replicator did not start: $(cat replicator.log)"

for i in 1 2 3; do
	[ "$i" -gt 1 ] && scatter_writes disk.img 20 $((71 + i))
	"$AGENT" --config vault/agents/vm.conf --once 2>>agent.log || fail "agent cycle $i failed: $(cat agent.log)"
	took=$(await_points vault vm "$i" "$rpid" replicator.log "the replicator does not poll the cache")
	note "cycle $i applied $took s after the agent finished"
done
grep -q "waits in cache azblob://ferry-poll/site-a" replicator.log ||
	fail "no pass was started by a poll: $(tail -20 replicator.log)"

"$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = json.load(sys.stdin)["vms"][0]
a = vm["agent"]
ok = (a is not None and a["cycle"] == 3 and a["silent"] is False and a["error"] is None
      and vm["last_cycle_segments"] >= 1 and vm["lag_seconds"] >= 0)
sys.exit(0 if ok else "status: " + json.dumps(vm))' || fail "the agent status did not come through the container"
azurite_list ferry-poll | grep -qx "site-a/status/vm.status" || fail "no status blob in the container"

sleep 0.5
kill -TERM $rpid
start=$(date +%s)
while kill -0 $rpid 2>/dev/null; do
	[ $(($(date +%s) - start)) -lt 10 ] || fail "the replicator ignored SIGTERM while polling"
	sleep 0.05
done
wait $rpid || fail "the replicator exited non-zero after SIGTERM: $(tail -20 replicator.log)"
note "the replicator stopped $(($(date +%s) - start)) s after SIGTERM"
