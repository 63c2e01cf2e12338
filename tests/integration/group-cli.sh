#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Consistency groups at the target, without agents: enable-replication
# --group (refused with the scan tracker, another cache or a bad name;
# the agent configuration's group keys), segments of two VMs crafted here
# from docs/format/segment.md (format 3.0: group markers; rounds 100-102
# on both VMs, 103 on one only) and applied by the replicator, then
# recovery-points --group (text, --all, --json), the failover verbs'
# --group (test-failover and its cleanup at latest, latest-app-consistent
# and an id; refusals that change nothing when one VM is in the wrong
# state or a round is incomplete; change-recovery-point and commit of the
# whole group), and ferry attach, which brings the group points back.
# Then VMs that join a group after its rounds: shop's rounds 100-102 stay
# group points; group hist (rounds hours old, crafted the same way) is
# thinned round by round with its late member present, and its group
# verbs leave that member alone.
. "$(dirname "$0")/lib.sh"
cd "$T"

"$FERRY" init --vault vault > /dev/null
enable() { # VM [OPTIONS...]
	"$FERRY" enable-replication --vault vault --vm "$1" --tracker qemu --qmp "/run/$1.qmp" \
		--disk os=drive0 --crash-interval 300 "${@:2}" > /dev/null
}

# Refusals first: none may register anything.
must_fail "$FERRY" enable-replication --vault vault --vm s1 --disk os=/dev/null --group shop
grep -q "group needs --tracker qemu" "$T/must_fail.out" || fail "--group with scan: $(cat "$T/must_fail.out")"
must_fail enable bad --group "no/such"
must_fail enable bad --group-interval 30
grep -q "go with --group" "$T/must_fail.out" || fail "--group-interval alone: $(cat "$T/must_fail.out")"
must_fail enable bad --group shop --group-pause-limit 999999
[ -z "$(ls vault/agents)" ] || fail "a refused enable left an agent configuration"

enable db --group shop --group-interval 30 --group-pause-limit 1500
enable app --group shop --group-interval 30
mkdir other-cache
must_fail enable web --group shop --group-interval 30 --cache other-cache
grep -q "its member app uses cache .*/vault/cache" "$T/must_fail.out" ||
	fail "another cache: the error does not name the member: $(cat "$T/must_fail.out")"
must_fail enable web --group shop
grep -q "its member app has one every 30 s" "$T/must_fail.out" ||
	fail "another group interval: $(cat "$T/must_fail.out")"
[ ! -e vault/agents/web.conf ] || fail "the refused member got an agent configuration"
"$FERRY" show --vault vault web > /dev/null 2>&1 && fail "the refused member was registered"
grep -qx "group = shop" vault/agents/db.conf && grep -qx "group-interval = 30" vault/agents/db.conf &&
	grep -qx "group-pause-limit = 1500" vault/agents/db.conf || fail "db.conf: $(cat vault/agents/db.conf)"
grep -qx "group-pause-limit = 2000" vault/agents/app.conf || fail "app.conf lacks the default pause limit"
enable solo --group alone
grep -qx "group-interval = 60" vault/agents/solo.conf || fail "solo.conf lacks the default interval"
"$FERRY" show --vault vault db | grep -q "group  *shop" || fail "show does not list the group"

# Segments, as an agent of each VM would ship them. Round R's markers carry
# the same time T on both VMs. db: 100 crash, 101 app, 102 app, 103 crash;
# app: 100 crash, 101 app, 102 crash (no 103: it missed the round).
now=$(date +%s)
python3 - vault/cache "$now" <<'PY'
import hashlib, os, struct, sys
cache, now = sys.argv[1], int(sys.argv[2])
NULL = b"\0" * 32
def rec(t, disk, off, length, rest=b""): return struct.pack("<BHQQ", t, disk, off, length) + rest
def segment(vm, seq, prev, records, major=3):
    plain = b"".join(records); vmb = vm.encode(); hlen = (90 + len(vmb) + 7) // 8 * 8
    hdr = b"FERRYSEG" + struct.pack("<HHIQ", major, 0, hlen, seq) + prev
    hdr += struct.pack("<qIIQQBB", now * 10**9, len(records), 0, len(plain), len(plain), 0, len(vmb)) + vmb
    body = hdr + b"\0" * (hlen - len(hdr)) + plain
    return body + hashlib.sha256(body).digest() + b"FERRYEND"
T = lambda k: (now - 600 + 60 * k) * 10**9 + 123456789
rounds = {"db": [(100, 1), (101, 2), (102, 2), (103, 1)], "app": [(100, 1), (101, 2), (102, 1)]}
for vm, rs in rounds.items():
    d = os.path.join(cache, "segments", vm); os.makedirs(d, exist_ok=True)
    prev, seq = NULL, 1
    cuts = [(0, 1, 0)] + [(r, c, r - 99) for r, c in rs]
    for r, c, k in cuts:
        data = (vm.encode() + b"-%d " % k) * 1024
        recs = [rec(1, 0, 0, 1 << 20, bytes([2]) + b"os"), rec(2, 0, 4096 * k, 4096, data[:4096]),
                rec(5, 0, r, 0, struct.pack("<Bq", c, T(k)))]
        s = segment(vm, seq, prev, recs, major=3 if r else 1)
        open(os.path.join(d, "%016x.seg" % seq), "wb").write(s)
        prev, seq = hashlib.sha256(s[:-40]).digest(), seq + 1
PY
"$REPLICATOR" --vault vault --once 2> repl.err || fail "the replicator failed: $(cat repl.err)"
[ -z "$(find vault/cache/segments -name "*.seg")" ] || fail "segments left unapplied: $(cat repl.err)"
"$FERRY" recovery-points --vault vault db > db.points
[ "$(wc -l < db.points)" = 5 ] || fail "db has not 5 points (its first marker and 4 rounds): $(cat db.points)"
grep -q "group round 103" db.points || fail "db's points do not show their rounds: $(cat db.points)"

# The group points: the rounds both VMs have.
"$FERRY" recovery-points --vault vault --group shop > gp.txt || fail "recovery-points --group failed"
[ "$(wc -l < gp.txt)" = 3 ] || fail "not 3 group points: $(cat gp.txt)"
awk '{print $2, $4, $7}' gp.txt | tr '\n' ';' > gp.short
[ "$(cat gp.short)" = "crash 2/2 100;app 2/2 101;crash 2/2 102;" ] ||
	fail "group points: $(cat gp.short) ($(cat gp.txt))"
"$FERRY" recovery-points --vault vault --group shop --all > gp-all.txt
[ "$(wc -l < gp-all.txt)" = 4 ] && grep -q "round 103 .*incomplete, none on app" gp-all.txt ||
	fail "--all does not show round 103 as incomplete: $(cat gp-all.txt)"
"$FERRY" recovery-points --vault vault --group shop --json > gp.json
python3 - gp.json "$now" <<'PY' > ids || fail "recovery-points --group --json"
import json, sys, time
j, now = json.load(open(sys.argv[1])), int(sys.argv[2])
assert j["group"] == "shop" and j["members"] == ["app", "db"], j
gp = j["group_points"]
assert [p["round"] for p in gp] == [100, 101, 102], gp
for p in gp:
    t = now - 600 + 60 * (p["round"] - 99)
    assert p["id"] == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t)), p
    assert p["complete"] and p["vms"] == 2 and p["points"]["db"].startswith(p["id"]), p
assert [p["consistency"] for p in gp] == ["crash", "app", "crash"], gp
print(" ".join(p["id"] for p in gp))
PY
read -r id100 id101 id102 < ids
id103=$(awk '/round 103/{print $1}' gp-all.txt)
must_fail "$FERRY" recovery-points --vault vault --group nobody
grep -q "no VM in group nobody" "$T/must_fail.out" || fail "unknown group: $(cat "$T/must_fail.out")"

state() { "$FERRY" show --vault vault "$1" | awk '$1 == "state" {print $2}'; }
jobs() { "$FERRY" jobs --vault vault | wc -l; }

# Test failover of the group at the newest group point, and its cleanup.
"$FERRY" test-failover --vault vault --group shop > tf.out 2> tf.err || fail "test-failover --group: $(cat tf.err)"
[ "$(cat tf.out)" = "$(printf 'app test\ndb test')" ] || fail "test-failover --group printed: $(cat tf.out)"
grep -q "group point $id102 (round 102" tf.err || fail "not at the newest group point: $(cat tf.err)"
[ "$("$FERRY" jobs --vault vault | grep -c "test-failover .*test from $id102.*group shop point $id102")" = 2 ] ||
	fail "the jobs do not name each VM's point of $id102: $("$FERRY" jobs --vault vault)"
[ "$(state db) $(state app)" = "protected protected" ] || fail "a test failover moved a VM"
n=$(jobs)
must_fail "$FERRY" test-failover --vault vault --group shop
grep -q "refused for 2 of its 2 VMs" "$T/must_fail.out" || fail "a second test failover: $(cat "$T/must_fail.out")"
[ "$(jobs)" = "$n" ] || fail "a refused group verb recorded a job"
"$FERRY" test-failover --vault vault --group shop --name appcons --recovery-point latest-app-consistent \
	> /dev/null 2> tf.err || fail "latest-app-consistent: $(cat tf.err)"
grep -q "group point $id101 (round 101" tf.err || fail "latest-app-consistent is not round 101: $(cat tf.err)"
"$FERRY" test-failover --vault vault --group shop --name old --recovery-point "$id100" > /dev/null 2> tf.err ||
	fail "test failover at $id100: $(cat tf.err)"
"$FERRY" test-failover --vault vault --group shop --name long --recovery-point "$id100-r100" > /dev/null 2>&1 ||
	fail "the long form of an id is refused"
n=$(jobs)
must_fail "$FERRY" test-failover --vault vault --group shop --name inc --recovery-point "$id103"
grep -q "is no group point: app has no point of it" "$T/must_fail.out" ||
	fail "an incomplete round: $(cat "$T/must_fail.out")"
must_fail "$FERRY" test-failover --vault vault --group shop --name lp --recovery-point latest-processed
grep -q "no instant the VMs of group shop share" "$T/must_fail.out" || fail "latest-processed: $(cat "$T/must_fail.out")"
must_fail "$FERRY" test-failover --vault vault --group shop db
[ "$(jobs)" = "$n" ] || fail "refused group verbs recorded jobs"
for name in test appcons old long; do
	"$FERRY" test-failover-cleanup --vault vault --group shop --name "$name" 2> tc.err ||
		fail "test-failover-cleanup --group --name $name: $(cat tc.err)"
	[ "$(grep -c "Test failover '$name' of VM .* removed" tc.err)" = 2 ] || fail "cleanup $name: $(cat tc.err)"
done
must_fail "$FERRY" test-failover-cleanup --vault vault --group shop
grep -q "VM app has no test failover named 'test'" "$T/must_fail.out" || fail "cleanup twice: $(cat "$T/must_fail.out")"

# One VM in another state: db alone has a test failover named t, then db
# fails over alone. Every group verb that one of them cannot do is refused
# and changes nothing on the other.
"$FERRY" test-failover --vault vault db --name t > /dev/null 2>&1 || fail "db's own test failover"
n=$(jobs)
must_fail "$FERRY" test-failover --vault vault --group shop --name t
grep -q "VM db already has a failover named 't'" "$T/must_fail.out" || fail "a name taken on db: $(cat "$T/must_fail.out")"
must_fail "$FERRY" test-failover-cleanup --vault vault --group shop --name t
grep -q "VM app has no test failover named 't'" "$T/must_fail.out" || fail "cleanup of db's alone: $(cat "$T/must_fail.out")"
"$FERRY" test-failover-cleanup --vault vault db --name t 2> /dev/null || fail "db's own cleanup"
db101=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["group_points"][1]["points"]["db"])' gp.json)
app101=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["group_points"][1]["points"]["app"])' gp.json)
"$FERRY" failover --vault vault db --recovery-point "$db101" > /dev/null 2>&1 || fail "db's own failover"
n=$(jobs)
for verb in test-failover failover; do
	must_fail "$FERRY" $verb --vault vault --group shop
	grep -q "VM db .*failed over" "$T/must_fail.out" && grep -q "nothing was changed on any" "$T/must_fail.out" ||
		fail "$verb --group with db failed over: $(cat "$T/must_fail.out")"
done
for verb in commit "change-recovery-point --recovery-point latest"; do
	must_fail "$FERRY" $verb --vault vault --group shop
	grep -q "VM app .*not failed over" "$T/must_fail.out" && grep -q "refused for 1 of its 2 VMs" "$T/must_fail.out" ||
		fail "$verb --group with app protected: $(cat "$T/must_fail.out")"
done
[ "$(jobs)" = "$n" ] || fail "refused group verbs recorded jobs"
[ "$(state db) $(state app)" = "failed-over protected" ] || fail "refusals moved a VM: $(state db) $(state app)"

# Both failed over: the group moves to one group point and commits.
"$FERRY" failover --vault vault app --recovery-point "$app101" > /dev/null 2>&1 || fail "app's own failover"
"$FERRY" change-recovery-point --vault vault --group shop --recovery-point latest 2> crp.err ||
	fail "change-recovery-point --group: $(cat crp.err)"
[ "$(grep -c "now runs from $id102" crp.err)" = 2 ] || fail "not both at $id102: $(cat crp.err)"
"$FERRY" commit --vault vault --group shop 2> commit.err || fail "commit --group: $(cat commit.err)"
[ "$(state db) $(state app)" = "failover-committed failover-committed" ] || fail "commit --group: $(state db) $(state app)"
must_fail "$FERRY" commit --vault vault --group shop

# ferry attach rebuilds the catalog from the store: the group (a resource
# in the VM records) and each point's round (its POINT record) come back.
"$FERRY" attach --vault attached --store "$T/vault/store" > /dev/null 2> attach.err || fail "attach: $(cat attach.err)"
"$FERRY" recovery-points --vault attached --group shop > gp-attached.txt || fail "recovery-points --group after attach"
diff <(awk '{print $1, $2, $4, $7}' gp.txt) <(awk '{print $1, $2, $4, $7}' gp-attached.txt) ||
	fail "attach lost group points: $(cat gp-attached.txt)"
note "group points $id100 $id101 $id102; every group verb acted on both VMs or neither"

# web joins shop after its rounds: they were rounds of db and app alone,
# and stay group points (2 of the 2 VMs in the group then), before and
# after a thinning pass.
enable web --group shop --group-interval 30
for pass in before after; do
	"$FERRY" recovery-points --vault vault --group shop > gp-web.txt || fail "recovery-points --group with web"
	[ "$(awk '{print $2, $4, $7}' gp-web.txt | tr '\n' ';')" = "crash 2/2 100;app 2/2 101;crash 2/2 102;" ] ||
		fail "web's joining changed the group points ($pass thinning): $(cat gp-web.txt)"
	"$FERRY" recovery-points --vault vault --group shop --all > gp-web-all.txt
	grep -q "round 103 .*incomplete, none on app$" gp-web-all.txt ||
		fail "round 103 lacks app only, not web: $(cat gp-web-all.txt)"
	[ "$pass" = after ] || "$REPLICATOR" --vault vault --once 2> repl.err || fail "the replicator failed: $(cat repl.err)"
done
"$FERRY" recovery-points --vault vault --group shop --json > gp-web.json
python3 - gp-web.json <<'PY' || fail "recovery-points --group --json with web: $(cat gp-web.json)"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["members"] == ["app", "db", "web"], j
gp = j["group_points"]
assert [p["round"] for p in gp] == [100, 101, 102], gp
assert all(p["complete"] and p["vms"] == 2 and p["vms_needed"] == 2 and p["points"]["web"] is None for p in gp), gp
PY

# Group hist: h1 and h2 cut rounds 100-102 in one hour 5 h ago, between an
# ordinary point of theirs before them and one after them in that hour,
# then a point a minute ago. h3 joins before the replicator sees any of
# it. Thinning keeps the newest round of that hour on both (rounds 100 and
# 101 go from both); had h3 made the rounds incomplete, each VM's own
# series would have kept its later ordinary point instead, and no round.
enable h1 --group hist --group-interval 30
enable h2 --group hist --group-interval 30
python3 - vault/cache "$now" <<'PY'
import hashlib, os, struct, sys
cache, now = sys.argv[1], int(sys.argv[2])
NULL = b"\0" * 32
def rec(t, disk, off, length, rest=b""): return struct.pack("<BHQQ", t, disk, off, length) + rest
def segment(vm, seq, prev, records, major):
    plain = b"".join(records); vmb = vm.encode(); hlen = (90 + len(vmb) + 7) // 8 * 8
    hdr = b"FERRYSEG" + struct.pack("<HHIQ", major, 0, hlen, seq) + prev
    hdr += struct.pack("<qIIQQBB", now * 10**9, len(records), 0, len(plain), len(plain), 0, len(vmb)) + vmb
    body = hdr + b"\0" * (hlen - len(hdr)) + plain
    return body + hashlib.sha256(body).digest() + b"FERRYEND"
B = (now // 3600 - 5) * 3600
cuts = [(0, B + 60), (100, B + 600), (101, B + 1200), (102, B + 1800), (0, B + 2400), (0, now - 60)]
for vm in ("h1", "h2"):
    d = os.path.join(cache, "segments", vm); os.makedirs(d, exist_ok=True)
    prev = NULL
    for seq, (r, t) in enumerate(cuts, 1):
        data = (vm.encode() + b"-%d " % seq) * 1024
        recs = [rec(1, 0, 0, 1 << 20, bytes([2]) + b"os"), rec(2, 0, 4096 * seq, 4096, data[:4096]),
                rec(5, 0, r, 0, struct.pack("<Bq", 1, t * 10**9 + 5))]
        s = segment(vm, seq, prev, recs, 3 if r else 1)
        open(os.path.join(d, "%016x.seg" % seq), "wb").write(s)
        prev = hashlib.sha256(s[:-40]).digest()
PY
enable h3 --group hist --group-interval 30
"$REPLICATOR" --vault vault --once 2> repl.err || fail "the replicator failed: $(cat repl.err)"
[ -z "$(find vault/cache/segments -name "*.seg")" ] || fail "segments left unapplied: $(cat repl.err)"
for vm in h1 h2; do
	"$FERRY" recovery-points --vault vault $vm > $vm.points
	[ "$(wc -l < $vm.points)" = 3 ] && [ "$(grep -c "group round" $vm.points)" = 1 ] &&
		grep -q "group round 102" $vm.points || fail "$vm after thinning: $(cat $vm.points)"
done
"$FERRY" recovery-points --vault vault --group hist --all > gh.txt
[ "$(awk '{print $2, $4, $7}' gh.txt | tr '\n' ';')" = "crash 2/2 102;" ] ||
	fail "hist: round 102 is not its one group point: $(cat gh.txt)"
idh=$(awk '{print $1}' gh.txt)

# A group verb at that group point leaves h3 out, and so does the cleanup.
"$FERRY" test-failover --vault vault --group hist > tf.out 2> tf.err || fail "test-failover --group hist: $(cat tf.err)"
[ "$(cat tf.out)" = "$(printf 'h1 test\nh2 test')" ] || fail "test-failover --group hist printed: $(cat tf.out)"
grep -q "of its 2 VMs at group point $idh" tf.err && grep -q "VM h3 joined group hist after that group point" tf.err ||
	fail "test-failover --group hist: $(cat tf.err)"
"$FERRY" test-failover-cleanup --vault vault --group hist 2> tc.err || fail "cleanup --group hist: $(cat tc.err)"
[ "$(grep -c "Test failover 'test' of VM h[12] removed" tc.err)" = 2 ] || fail "cleanup --group hist: $(cat tc.err)"
must_fail "$FERRY" test-failover-cleanup --vault vault --group hist
grep -q "VM h1 has no test failover named 'test'" "$T/must_fail.out" || fail "hist cleanup twice: $(cat "$T/must_fail.out")"
note "a VM joining later leaves the group points before it whole: listed, thinned as rounds, failed over without it"
