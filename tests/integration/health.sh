#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Health, metrics and progress. One VM (the scan tracker on a plain file)
# is driven into each health state, and each time `ferry status --check`
# must exit with its Nagios code (0 healthy, 1 warning, 2 critical) and
# name the reason, ferry-replicator must record the change as an event in
# `ferry show`, and the metrics files of the replicator and the agent
# (--metrics-file) must parse as the Prometheus text format and say the
# same. The states:
#   healthy           a cycle just applied;
#   lag               --rpo-target below the lag: warning over it,
#                     critical over twice it;
#   agent silent      the agent stopped: its status in the cache is aged
#                     by ten minutes (rewritten by the Python below, as an
#                     agent that stopped then would have left it), rather
#                     than waiting three cycles;
#   failing freeze    the status rewritten the same way with a failed
#                     app-consistent attempt (app_error ETIMEDOUT and the
#                     guest agent's message), as an agent whose freeze
#                     timed out puts it: this test has no guest agent;
#   cache unreachable the cache directory moved away (the VM also goes to
#                     state error: critical);
#   refused segment   a segment with a flipped byte: refused, a resync is
#                     required (warning) with the refusal as the reason.
# Then back to healthy each time. Also: --check with --json, an unreadable
# vault (exit 3), the worst health of a consistency group, and the
# progress of a cycle that reads the whole disk, from the status the agent
# puts while it reads (the agent crashed by FERRY_FAULTS before its third
# segment, where the build can inject faults).
# promtool check metrics runs too where it is installed.
. "$(dirname "$0")/lib.sh"
cd "$T"
PROMCHECK="$SOURCE/tests/integration/promcheck.py"

seeded_bytes 4194304 31 > disk.img
truncate -s 16M disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm web --disk d0=disk.img --crash-interval 0 \
	--rpo-target 60 >/dev/null
"$FERRY" show --vault vault web | grep -q "rpo-target *60" || fail "--rpo-target not recorded"
must_fail "$FERRY" enable-replication --vault vault --vm web2 --disk d0=disk.img --rpo-target 5m
conf=vault/agents/web.conf

agent() { "$AGENT" --config "$conf" --once --metrics-file agent.prom "$@" 2>>agent.log; }
replicate() { "$REPLICATOR" --vault vault --once --metrics-file rep.prom 2>>rep.log; }

# check EXPECTED-EXIT REASON [STATUS OPTIONS...]: ferry status --check.
check() {
	local want=$1 reason=$2 rc=0
	shift 2
	"$FERRY" status --vault vault --check "$@" >check.out 2>check.err || rc=$?
	[ "$rc" = "$want" ] || fail "--check exited $rc, not $want: $(cat check.out check.err)"
	grep -q -- "$reason" check.out || fail "--check does not say '$reason': $(cat check.out)"
	local word
	word=$(case $want in 0) echo OK ;; 1) echo WARNING ;; 2) echo CRITICAL ;; *) echo UNKNOWN ;; esac)
	head -1 check.out | grep -q "^FERRY $word - " || fail "summary is not $word: $(cat check.out)"
	note "exit $rc: $(sed -n 2p check.out)"
}

# Parses a metrics file strictly (and with promtool where there is one);
# metric FILE SERIES prints the value of one series.
parse_metrics() {
	python3 "$PROMCHECK" "$1" > "$1.samples" || fail "$1 is not valid Prometheus text: $(cat "$1")"
	if command -v promtool >/dev/null; then
		promtool check metrics < "$1" || fail "promtool refuses $1"
	fi
	[ "$(stat -c %a "$1")" = 644 ] || fail "$1 is not mode 0644"
	! ls "$1".tmp.* 2>/dev/null | grep -q . || fail "a temporary file of $1 was left"
}
metric() { # parsed again only when the file changed
	[ "$1.samples" -nt "$1" ] || parse_metrics "$1"
	awk -v s="$2" '$1 == s { print $2; found = 1 } END { exit !found }' "$1.samples" ||
		fail "no series $2 in $1: $(cat "$1.samples")"
}
event() { "$FERRY" show --vault vault --events 0 web | sed -n '/^  events/,$p'; }

# The agent's status blob, rewritten as docs/format/cache.md (1.2) lays it
# out: written AGE seconds ago, and optionally a failed app attempt.
rewrite_status() { # AGE [APP-ERRNO APP-MESSAGE]
	python3 - vault/cache/status/web.status "$@" <<'PY'
import hashlib, os, struct, sys, time
path, age = sys.argv[1], int(sys.argv[2])
b = bytearray(open(path, "rb").read())
assert b[:8] == b"FERRYSTA" and struct.unpack_from("<HH", b, 8) == (1, 2), "not a 1.2 status"
now = time.time_ns()
struct.pack_into("<q", b, 16, now - age * 10**9)
vm_len = b[105]
msg_len = struct.unpack_from("<H", b, 106 + vm_len)[0]
e = 108 + vm_len + msg_len
body = bytes(b[:e])
app_err, att, ok, done, total, rate, am = struct.unpack_from("<IqqQQQH", b, e)
if len(sys.argv) > 3:
    app_err, att, amsg = int(sys.argv[3]), now, sys.argv[4].encode()
else:
    amsg = bytes(b[e + 46:e + 46 + am])
body += struct.pack("<IqqQQQH", app_err, att, ok, done, total, rate, len(amsg)) + amsg
body = body[:12] + struct.pack("<I", len(body) + 32) + body[16:]
open(path + ".new", "wb").write(body + hashlib.sha256(body).digest())
os.rename(path + ".new", path)
PY
}

# --- healthy ---
agent || fail "first cycle failed: $(cat agent.log)"
replicate || fail "first pass failed: $(cat rep.log)"
check 0 "web OK - healthy"
"$FERRY" status --vault vault | grep -q "health *healthy (RPO target 60s)" ||
	fail "status lacks the health line: $("$FERRY" status --vault vault)"
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
top = json.load(sys.stdin)
vm = top["vms"][0]
assert top["health"] == "healthy" and vm["health"] == "healthy", vm
assert vm["health_reasons"] == [] and vm["rpo_target_seconds"] == 60, vm
assert vm["rpo_target_source"] == "vm" and vm["source_progress"] is None, vm' ||
	fail "status --json health fields"
[ "$(metric rep.prom 'ferry_health{vm="web"}')" = 0 ] || fail "replicator metrics: not healthy"
[ "$(metric rep.prom 'ferry_rpo_target_seconds{vm="web"}')" = 60 ] || fail "rpo target metric"
[ "$(metric rep.prom 'ferry_vm_state{state="protected",vm="web"}')" = 1 ] || fail "state metric"
[ "$(metric rep.prom 'ferry_cache_up{vm="web"}')" = 1 ] || fail "cache_up metric"
[ "$(metric rep.prom 'ferry_applied_segments_total{vm="web"}')" -ge 1 ] || fail "applied metric"
[ "$(metric rep.prom 'ferry_applied_bytes_total{vm="web"}')" -gt 4000000 ] || fail "applied bytes"
metric rep.prom 'ferry_lag_seconds{vm="web"}' >/dev/null
metric rep.prom 'ferry_last_point_timestamp_seconds{consistency="crash",vm="web"}' >/dev/null
metric rep.prom 'ferry_store_bytes' >/dev/null
metric rep.prom 'ferry_store_dedup_ratio' >/dev/null
[ "$(metric agent.prom 'ferry_agent_cycles_total{vm="web"}')" = 1 ] || fail "agent cycles metric"
[ "$(metric agent.prom 'ferry_agent_errors_total{kind="cycle",vm="web"}')" = 0 ] ||
	fail "agent errors metric"
[ "$(metric agent.prom 'ferry_agent_segments_total{vm="web"}')" -ge 1 ] || fail "agent segments"
metric agent.prom 'ferry_agent_cycle_duration_seconds{vm="web"}' >/dev/null
metric agent.prom 'ferry_agent_last_marker_timestamp_seconds{vm="web"}' >/dev/null
event | grep -q "health" && fail "a VM healthy from the start has a health event: $(event)"

# --- lag over the RPO target ---
# Targets picked from the lag now, with seconds to spare either way: a
# warning at lag - 1 (up to twice that), critical at half of it.
lag_now() { "$FERRY" status --vault vault --json | python3 -c '
import json, sys
print(int(json.load(sys.stdin)["vms"][0]["lag_seconds"]))'; }
while [ "$(lag_now)" -lt 6 ]; do sleep 1; done
lag=$(lag_now)
check 1 "lag [0-9]*s is over the RPO target $((lag - 1))s" --rpo-target $((lag - 1))
check 2 "lag [0-9]*s is over twice the RPO target $(((lag - 1) / 2))s" --rpo-target $(((lag - 1) / 2))
check 0 "web OK" --rpo-target 3600
"$FERRY" status --vault vault --json --rpo-target 2 | python3 -c '
import json, sys
vm = json.load(sys.stdin)["vms"][0]
assert vm["health"] == "critical" and vm["rpo_target_source"] == "option", vm
assert "twice the RPO target" in vm["health_reasons"][0], vm' || fail "--json --rpo-target"
rc=0
"$FERRY" status --vault vault --json --check --rpo-target 2 >/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--json --check exited $rc"
must_fail "$FERRY" status --vault vault --rpo-target 0
rc=0
"$FERRY" status --vault vault --check --rpo-target nope >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "a usage error with --check exited $rc, not 3 (unknown)"

# --- agent silent ---
rewrite_status 600
check 1 "agent silent since"
replicate || fail "pass failed: $(cat rep.log)"
event | grep -q "warning health warning (was healthy): agent silent" ||
	fail "no event for the silent agent: $(event)"
[ "$(metric rep.prom 'ferry_agent_silent{vm="web"}')" = 1 ] || fail "silent metric"
[ "$(metric rep.prom 'ferry_health{vm="web"}')" = 1 ] || fail "health metric not 1"
agent && replicate || fail "cycle after the silence failed"
check 0 "web OK"
event | grep -q "info *health healthy (was warning)" || fail "no event back to healthy: $(event)"

# --- failing freeze ---
rewrite_status 0 110 "guest agent: guest-fsfreeze-freeze timed out after 10 s"
check 1 "app-consistent point failed [0-9]*s ago: guest agent: guest-fsfreeze-freeze timed out"
"$FERRY" status --vault vault | grep -q "app-consistent last attempt failed .*timed out after 10 s" ||
	fail "status does not show the failed attempt"
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
a = json.load(sys.stdin)["vms"][0]["agent"]
assert a["app_error"] and "timed out" in a["app_error_message"] and a["app_attempt"], a' ||
	fail "status --json lacks the failed attempt"
replicate || fail "pass failed: $(cat rep.log)"
[ "$(metric rep.prom 'ferry_agent_app_failing{vm="web"}')" = 1 ] || fail "app_failing metric"
event | grep -q "health warning (was healthy): app-consistent point failed" ||
	fail "no event for the failing freeze: $(event)"
agent && replicate || fail "cycle after the freeze failed"
check 0 "web OK"

# --- cache unreachable ---
mv vault/cache vault/cache.away
check 2 "cache .*cache unreachable"
replicate && fail "a pass without the cache succeeded"
check 2 "VM in error: cannot open cache"
event | grep -q "error *health critical (was healthy):.*cache" ||
	fail "no event for the unreachable cache: $(event)"
[ "$(metric rep.prom 'ferry_cache_up{vm="web"}')" = 0 ] || fail "cache_up not 0"
[ "$(metric rep.prom 'ferry_health{vm="web"}')" = 2 ] || fail "health not critical"
[ "$(metric rep.prom 'ferry_replicate_errors_total{kind="cache",vm="web"}')" = 1 ] ||
	fail "cache errors not counted"
mv vault/cache.away vault/cache
scatter_writes disk.img 4 32
agent && replicate || fail "cycle after the cache came back failed: $(tail rep.log)"
check 0 "web OK"

# --- refused segment ---
scatter_writes disk.img 16 33
agent || fail "cycle failed"
seg=$(ls vault/cache/segments/web/ | head -1)
python3 - "vault/cache/segments/web/$seg" <<'PY'
import os, sys
path = sys.argv[1]
off = os.path.getsize(path) // 2
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x10]))
PY
replicate || fail "the pass that refused a segment failed: $(tail rep.log)"
check 1 "resync required: segment .*$seg refused"
event | grep -q "warning health warning (was healthy): resync required" ||
	fail "no event for the refused segment: $(event)"
[ "$(metric rep.prom 'ferry_vm_state{state="resync-required",vm="web"}')" = 1 ] ||
	fail "state metric not resync-required"
[ "$(metric rep.prom 'ferry_replicate_errors_total{kind="refused",vm="web"}')" = 1 ] ||
	fail "refusal not counted"
agent && replicate || fail "the resync cycle failed"
check 0 "web OK"

# --- a group and a second VM; an unreadable vault ---
seeded_bytes 1048576 34 > disk2.img
"$FERRY" enable-replication --vault vault --vm db --disk d0=disk2.img --crash-interval 0 >/dev/null
python3 - vault/catalog.db <<'PY'
# What enable-replication --group records (written here: this test does
# not depend on that option).
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for vm in ("web", "db"):
    db.execute("INSERT OR REPLACE INTO resources (vm_id, kind, value) "
               "SELECT id, 'group', 'tier' FROM vms WHERE name = ?", (vm,))
db.commit()
PY
check 1 "group tier WARNING - worst of 2 VMs: db warning, web healthy"
"$FERRY" status --vault vault | grep -A1 "^group tier" | grep -q "health *warning, the worst of db warning, web healthy" ||
	fail "status lacks the group: $("$FERRY" status --vault vault | tail -3)"
"$AGENT" --config vault/agents/db.conf --once 2>>agent.log && replicate || fail "db's cycle failed"
check 0 "group tier OK"
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
g = json.load(sys.stdin)["groups"]
assert g == [{"group": "tier", "health": "healthy", "vms": "db healthy, web healthy",
              "last_group_point": "none yet", "group_points_failing": None}], g' ||
	fail "status --json groups"
rc=0
"$FERRY" status --vault nosuchvault --check >check.out 2>/dev/null || rc=$?
[ "$rc" = 3 ] && grep -q "^FERRY UNKNOWN" check.out || fail "an unreadable vault: exit $rc, $(cat check.out)"

# --- progress of an initial replication reading the whole disk ---
if FERRY_FAULTS="write:eio@999999" "$FERRY" --help >/dev/null 2>&1; then
	seeded_bytes 50331648 35 > big.img
	"$FERRY" enable-replication --vault vault --vm big --disk d0=big.img >/dev/null
	rc=0
	FERRY_FAULTS="put~segments/:crash@3" "$AGENT" --config vault/agents/big.conf --once \
		2>>agent.log || rc=$?
	[ "$rc" = 137 ] || fail "the agent was not crashed before its third segment (exit $rc)"
	"$FERRY" status --vault vault | grep -q "source read *[0-9.]*% of 48.0 MiB, .*(reported" ||
		fail "status lacks the source's progress: $("$FERRY" status --vault vault)"
	progress() { "$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin)["vms"] if v["vm"] == "big"][0]
print(json.dumps(vm["source_progress"]))'; }
	progress | python3 -c '
import json, sys
p = json.load(sys.stdin)
assert p and p["total_bytes"] == 48 << 20 and 0 <= p["done_bytes"] <= p["total_bytes"], p' ||
		fail "status --json source_progress: $(progress)"
	"$AGENT" --config vault/agents/big.conf --once 2>>agent.log || fail "the resumed cycle failed"
	[ "$(progress)" = null ] || fail "progress left in the status after the cycle: $(progress)"
	note "progress shown while the agent read, cleared after"
else
	note "this build cannot inject faults: the progress part is skipped"
fi
