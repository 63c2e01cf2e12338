#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The failover state machine (docs/failover.md): in every state a VM can
# reach, in the forward vault T and the back vault S, every failover verb
# that does not apply is refused with a message that says what to do, a
# non-zero exit, and nothing changed (catalogs as `ferry status --json`
# and `ferry jobs` show them, the reverse cache, the original disks); the
# verbs that apply move the VM on. Among them the three failbacks of issue
# 12 (a VM never failed over; the target vault by mistake; again after the
# source VM ran), failback refused beside a running ferry-replicator (and
# allowed once it was killed -9, while gc and test failover work beside
# it), a failover recording the point and sequence it used, and the
# segments the old source shipped after failover discarded at resume,
# never cut into points.
. "$(dirname "$0")/lib.sh"
need_fuse
cd "$T"

seeded_bytes 4194304 81 > os.img
seeded_bytes 2097152 82 > data.img
mkdir mt rcache
md5() { md5sum "$@" | cut -d' ' -f1 | tr '\n' ' '; }

# What a refused verb must leave as it was: per vault, every VM's state,
# applied sequence, points, failovers, resources and pending segments, and
# the job history; the reverse cache; the original disks.
snapshot() {
	local v
	for v in T S; do
		[ -e $v/catalog.db ] || continue
		# All of it but the ages, which move by themselves.
		"$FERRY" status --vault $v --json |
			grep -vE '"(rpo_seconds|lag_seconds|updated_seconds_ago|silent)"'
		"$FERRY" jobs --vault $v | wc -l
		"$FERRY" recovery-points --vault $v app 2>/dev/null | md5sum
	done
	find rcache -type f -printf '%P %s\n' | sort | md5sum
	md5 os.img data.img
}

args_of() { # VERB VAULT: the verb's command line, with what it needs to get to its check
	case $1 in
	test-failover | test-failover-cleanup | failover | commit | failback | resume-replication)
		echo "$1 --vault $2 app" ;;
	change-recovery-point) echo "$1 --vault $2 app --recovery-point latest" ;;
	reprotect-prepare) echo "$1 --vault $2 --vm app --disk os=os.img --disk data=data.img --cache rcache" ;;
	reprotect) echo "$1 --vault $2 app --mount mt --cache rcache" ;;
	esac
}

# refuse VAULT VERB MESSAGE: the verb fails, says MESSAGE, changes nothing.
refuse() {
	local before after
	before=$(snapshot)
	# shellcheck disable=SC2046
	if "$FERRY" $(args_of "$2" "$1") >out 2>err; then
		fail "$2 on $1 succeeded in state '$3' case: $(cat err)"
	fi
	grep -qF -- "$3" err || fail "$2 on $1: expected '$3' in: $(cat err)"
	after=$(snapshot)
	[ "$before" = "$after" ] || fail "refused $2 on $1 changed something: $before -> $after"
}

state_of() { # VAULT
	"$FERRY" status --vault "$1" --json |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["vms"][0]["state"])'
}
field_of() { # VAULT PYTHON-EXPRESSION-ON-vm
	"$FERRY" status --vault "$1" --json |
		python3 -c "import json,sys; vm=json.load(sys.stdin)['vms'][0]; print($2)"
}
expect_state() { # VAULT STATE
	local s
	s=$(state_of "$1")
	[ "$s" = "$2" ] || fail "vault $1: VM app is '$s', expected '$2'"
}

"$FERRY" init --vault T >/dev/null
"$FERRY" enable-replication --vault T --vm app --disk os=os.img --disk data=data.img \
	--crash-interval 0 >/dev/null

# ---- initial replication (forward) ----
expect_state T initial-replication
refuse T test-failover "not protected yet"
refuse T failover "not protected yet"
refuse T change-recovery-point "is not failed over"
refuse T commit "is not failed over"
refuse T reprotect "is not failed over"
refuse T failback "role forward"
refuse T resume-replication "its initial replication runs"
refuse T reprotect-prepare "reprotect-prepare seeds a vault of its own"
refuse T test-failover-cleanup "no test failover named 'test'"
note "initial replication: 9 verbs refused"

# ---- protected (forward) ----
cycle T app 2>/dev/null
scatter_writes os.img 40 83
cycle T app 2>/dev/null
expect_state T protected
p1=$(points_of T app | head -1)
npoints=$(points_of T app | wc -l)
[ "$npoints" = 2 ] || fail "expected 2 points before failover, got $npoints"
refuse T change-recovery-point "is not failed over"
refuse T commit "is not failed over"
refuse T reprotect "re-protect follows 'ferry failover'"
# Failback on a VM that was never failed over.
refuse T failback "it was never re-protected into it"
refuse T resume-replication "its replication runs already"
refuse T reprotect-prepare "already in vault"
refuse T test-failover-cleanup "no test failover named 'test'"
"$FERRY" test-failover --vault T app --name t1 >/dev/null 2>&1 || fail "test failover refused"
expect_state T protected
"$FERRY" test-failover-cleanup --vault T app --name t1 2>/dev/null || fail "cleanup refused"
# A test failover that took the failover's name.
"$FERRY" test-failover --vault T app --name failover >/dev/null 2>&1 || fail "test failover refused"
refuse T failover "run 'ferry test-failover-cleanup --vault T app --name failover' first"
must_fail "$FERRY" test-failover --vault T app --name failover
grep -q "already has a failover named 'failover', a test failover" "$T/must_fail.out" ||
	fail "second test failover of one name: $(cat "$T/must_fail.out")"
"$FERRY" test-failover-cleanup --vault T app --name failover 2>/dev/null || fail "cleanup refused"
note "protected: refusals, test failover and cleanup"

# ---- failover: it records the point and sequence it used ----
"$FERRY" failover --vault T app >/dev/null 2>fo.err || fail "failover: $(cat fo.err)"
expect_state T failed-over
used=$(field_of T 'vm["failovers"][0]["recovery_point"]')
newest=$(points_of T app | tail -1)
[ "$used" = "$newest" ] || fail "failover recorded '$used', not the point it used ($newest)"
seq=$(field_of T 'vm["applied_seq"]')
"$FERRY" jobs --vault T | grep "failover" | grep -qF "from $newest (seq $seq)" ||
	fail "the failover job does not name point and seq: $("$FERRY" jobs --vault T)"
grep -qF "(seq $seq)" fo.err || fail "failover does not say the seq it used: $(cat fo.err)"

# Where no point was cut at the newest marker, the failover says which
# marker it is: a VM with an hour between crash points.
seeded_bytes 1048576 84 > b.img
"$FERRY" enable-replication --vault T --vm b --disk d=b.img --crash-interval 3600 >/dev/null
cycle T b 2>/dev/null
scatter_writes b.img 5 85
cycle T b 2>/dev/null
"$FERRY" failover --vault T b >/dev/null 2>&1 || fail "failover of b failed"
"$FERRY" status --vault T --json | python3 -c '
import json, re, sys
b = [v for v in json.load(sys.stdin)["vms"] if v["vm"] == "b"][0]
fo = b["failovers"][0]["recovery_point"]
assert re.fullmatch(r"seq %d at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" % b["applied_seq"], fo), fo
' || fail "failover of b does not record 'seq N at TIME'"
note "failover recorded $used (seq $seq); b's records its marker by seq"

# ---- failed over (forward) ----
refuse T test-failover "its failover clone is the VM now"
refuse T failover "is already failed over"
refuse T reprotect "failover is not committed"
refuse T failback "runs its failover here"
refuse T resume-replication "has not failed back yet"
refuse T reprotect-prepare "already in vault"
"$FERRY" change-recovery-point --vault T app --recovery-point "$p1" 2>/dev/null ||
	fail "change-recovery-point refused"
[ "$(field_of T 'vm["failovers"][0]["recovery_point"]')" = "$p1" ] || fail "point not changed"
"$FERRY" change-recovery-point --vault T app --recovery-point latest 2>/dev/null ||
	fail "change-recovery-point refused"
expect_state T failed-over

# The old source was not lost after all: its agent keeps shipping. The
# replicator leaves those segments waiting; no point holds them.
scatter_writes os.img 60 86
"$AGENT" --config T/agents/app.conf --once 2>/dev/null || fail "agent cycle failed"
scatter_writes data.img 30 87
"$AGENT" --config T/agents/app.conf --once 2>/dev/null || fail "agent cycle failed"
"$REPLICATOR" --vault T --once 2>/dev/null || fail "replicator pass failed"
[ "$(points_of T app | wc -l)" = "$npoints" ] || fail "segments applied to a failed-over VM"
[ "$(field_of T 'vm["applied_seq"]')" = "$seq" ] || fail "applied_seq moved while failed over"
abandoned=$(field_of T 'vm["pending_segments"]')
[ "$abandoned" -ge 2 ] || fail "the old source's segments are not waiting ($abandoned)"

"$FERRY" commit --vault T app 2>/dev/null || fail "commit refused"
note "failed over: refusals, change of point, commit; $abandoned segments wait"

# ---- failover committed (forward) ----
expect_state T failover-committed
refuse T test-failover "its failover clone is the VM now"
refuse T failover "already committed"
refuse T change-recovery-point "its recovery point can no longer change"
refuse T commit "already committed"
refuse T failback "runs its failover here"
refuse T resume-replication "has not failed back yet"
refuse T reprotect-prepare "already in vault"

# The VM runs from its clone at the target.
mount_vault_detached T mt
sleep 1.2
clone=mt/app/failovers/failover
[ -f $clone/os.img ] || fail "clone missing from the mount"
scatter_writes $clone/os.img 100 88
dd if=/dev/urandom of=$clone/data.img bs=4096 seek=10 count=20 conv=notrunc,fsync status=none
sync $clone/os.img

# ---- re-protect: S seeded from the original disks (back) ----
"$FERRY" init --vault S >/dev/null
refuse S failback "no VM 'app' in vault S"
"$FERRY" reprotect-prepare --vault S --vm app --disk os=os.img --disk data=data.img \
	--cache rcache >/dev/null 2>prep.err || fail "reprotect-prepare: $(cat prep.err)"
grep -qF -- "--cache $T/rcache" prep.err || fail "reprotect-prepare printed: $(cat prep.err)"
grep -qF "ferry-replicator --vault $T/S" prep.err || fail "reprotect-prepare printed: $(cat prep.err)"
[ "$(field_of S 'vm["resources"]["cache"]')" = "$T/rcache" ] || fail "S's cache is not absolute"
[ "$(field_of S 'vm["resources"]["role"]')" = back ] || fail "S's VM is not in role back"
expect_state S protected
refuse S failover "bring it back to its original disks with 'ferry failback --vault S app'"
refuse S change-recovery-point "ferry failback --vault S app"
refuse S commit "ferry failback --vault S app"
refuse S reprotect "runs at the target site"
refuse S resume-replication "runs at the target site"
refuse S reprotect-prepare "already seeded into vault $T/S"
refuse S test-failover-cleanup "no test failover named 'test'"
note "back vault: refusals"

"$FERRY" reprotect --vault T app --mount mt --cache rcache >conf 2>rp.err || fail "reprotect: $(cat rp.err)"
conf=$(cat conf)
[ "$(field_of T 'vm["resources"]["reverse-cache"]')" = "$T/rcache" ] ||
	fail "T does not record the reverse cache"
grep -qx "cache = $T/rcache" "$conf" || fail "agent configuration: $(cat "$conf")"

# ---- re-protecting (forward) ----
expect_state T re-protecting
refuse T test-failover "its failover clone is the VM now"
refuse T failover "re-protecting"
refuse T change-recovery-point "its recovery point can no longer change"
refuse T commit "already committed"
refuse T reprotect "already re-protecting"
refuse T reprotect-prepare "already in vault"
# Failback run against the target vault by mistake.
refuse T failback "runs its failover here"
# Resume before the source failed back.
refuse T resume-replication "has not failed back at the source site yet"
"$AGENT" --config "$conf" --once 2>/dev/null || fail "reverse agent cycle failed"
"$REPLICATOR" --vault S --once 2>/dev/null || fail "reverse replicator failed"
note "re-protecting: refusals; the reverse cycle applied at S"

# ---- a replicator daemon on S: failback refuses beside it, gc and test
# failover do not ----
"$REPLICATOR" --vault S --interval 60 2>repl.log &
rpid=$!
PIDS+=("$rpid")
for _ in $(seq 100); do [ "$(cat S/replicator.lock)" = "$rpid" ] && break; sleep 0.05; done
[ "$(cat S/replicator.lock)" = "$rpid" ] || fail "replicator.lock does not name pid $rpid: $(cat repl.log)"
refuse S failback "a ferry-replicator (pid $rpid) runs on vault S"
# Its first pass (with gc) over, it waits: ferry gc needs the writer lock.
for _ in $(seq 100); do flock -n S/writer.lock true && break; sleep 0.1; done
"$FERRY" gc --vault S >/dev/null 2>&1 || fail "gc beside the replicator failed"
"$FERRY" test-failover --vault S app --name drill >/dev/null 2>&1 ||
	fail "test failover beside the replicator failed"
"$FERRY" test-failover-cleanup --vault S app --name drill 2>/dev/null || fail "cleanup failed"
kill -9 "$rpid"
wait "$rpid" 2>/dev/null || true
note "failback refused beside replicator $rpid; gc and test failover worked"

# Final delta, then failback.
dd if=/dev/urandom of=$clone/os.img bs=4096 seek=7 count=3 conv=notrunc,fsync status=none
"$AGENT" --config "$conf" --once 2>/dev/null || fail "final reverse agent cycle failed"
written=$("$FERRY" failback --vault S app 2>fb.err) || fail "failback after kill -9: $(cat fb.err)"
cmp os.img $clone/os.img || fail "os.img differs from the clone after failback"
cmp data.img $clone/data.img || fail "data.img differs from the clone after failback"
[ -s rcache/seeds/app/failed-back ] || fail "failback left no note in the reverse cache"
note "failback wrote $written bytes"

# ---- failed back (back) ----
expect_state S failed-back
# The source VM starts again, then failback is run again.
scatter_writes os.img 20 89
refuse S failback "already failed back"
refuse S test-failover "failed back from vault S"
refuse S failover "failed back from vault S"
refuse S reprotect-prepare "seed a new vault"
note "failed back: a second failback refused, the source's new writes kept"

# ---- resume: the clone is the VM's state, the old source's segments go ----
"$FERRY" resume-replication --vault T app 2>res.err || fail "resume: $(cat res.err)"
grep -q "Discarded $abandoned segment(s)" res.err || fail "resume did not report the discard: $(cat res.err)"
expect_state T protected
[ "$(field_of T 'vm["pending_segments"]')" = 0 ] || fail "discarded segments still wait"
[ "$(field_of T 'len(vm["failovers"])')" = 0 ] || fail "the failover is still there"
[ "$(points_of T app | wc -l)" = "$npoints" ] || fail "resume cut points"
"$FERRY" jobs --vault T | grep resume-replication | grep -q "discarded $abandoned segment" ||
	fail "the job history does not record the discard"
refuse T resume-replication "its replication runs already"
refuse T failback "it was never re-protected into it"

# Forward protection: the next point is the original disks, nothing of the
# abandoned state in between.
"$AGENT" --config T/agents/app.conf --once 2>/dev/null || fail "forward agent cycle failed"
"$REPLICATOR" --vault T --once 2>/dev/null || fail "forward replicator pass failed"
[ "$(points_of T app | wc -l)" = $((npoints + 1)) ] || fail "expected one new point after resume"
last=$(points_of T app | tail -1)
sleep 1.2
cmp mt/app/recovery-points/"$last"/os.img os.img || fail "the new point differs from os.img"
cmp mt/app/recovery-points/"$last"/data.img data.img || fail "the new point differs from data.img"
cmp mt/app/disks/os.img os.img || fail "the live image differs from os.img"
note "resumed: one new point, equal to the original disks"

# ---- a failed-back state an older ferry left on the forward vault ----
"$FERRY" failover --vault T app >/dev/null 2>&1 || fail "second failover failed"
"$FERRY" commit --vault T app 2>/dev/null || fail "second commit failed"
python3 - T/catalog.db <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE vms SET state = 7 WHERE name = 'app'")
db.commit()
PY
expect_state T failed-back
refuse T failover "ferry resume-replication --vault T app"
refuse T commit "ferry resume-replication --vault T app"
"$FERRY" resume-replication --vault T app 2>/dev/null || fail "repair refused"
expect_state T failover-committed
[ "$(field_of T 'vm["failovers"][0]["name"]')" = failover ] || fail "the stranded failover is gone"
note "a failed-back state on the forward vault goes back to its failover"

unmount_vault mt
"$FERRY" check --vault T --read-data >/dev/null || fail "vault T damaged"
"$FERRY" check --vault S --read-data >/dev/null || fail "vault S damaged"
