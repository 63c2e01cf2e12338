#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Untrusted input stays bounded, through the programs. A disk path with
# '#', '=', inner blanks and UTF-8 goes through enable-replication's agent
# configuration unchanged, and the agent replicates that file and not the
# decoy a cut path would name; paths the configuration cannot carry (" ;",
# a trailing blank, in the disk's path or the vault's) and an empty disk
# are refused before anything is registered. A disk that changes size at
# the source shows in `ferry status` with the agent's own words. A 3 GiB
# junk segment in the cache is refused by a replicator that has 1 GiB of
# address space, and the refusal shows in `ferry status`. Control
# characters in a path never reach the terminal raw; `ferry show` pages
# its events.
. "$(dirname "$0")/lib.sh"
cd "$T"

"$FERRY" init --vault vault > /dev/null || fail "init failed"
vms() { "$FERRY" status --vault vault --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))'; }

# --- paths that round-trip: the right file is replicated, not the decoy ---
dir="$T/src dir#1=x é"
mkdir -p "$dir"
good="$dir/disk #2=b ü.img"
seeded_bytes $((1024 * 1024)) 7 > "$good"
# What a reader stopping at '#' or at the first blank would open instead.
seeded_bytes $((2 * 1024 * 1024)) 8 > "$T/src dir"
seeded_bytes $((3 * 1024 * 1024)) 9 > "$T/src"
"$FERRY" enable-replication --vault vault --vm odd --disk "vda=$good" > /dev/null ||
	fail "enable-replication refused a path with '#', '=', blanks and UTF-8"
grep -qxF "path = $good" vault/agents/odd.conf || fail "the path is not in the configuration as it is"
cycle vault odd
"$FERRY" show --vault vault odd > show.txt
grep -qF "1.0 MiB  $good" show.txt || fail "not the 1 MiB disk at the path given: $(grep -A2 disks show.txt)"
[ "$(points_of vault odd | grep -c .)" = 1 ] || fail "no recovery point from the odd path"

# --- paths that cannot round-trip: refused, with the reason, nothing made ---
n0=$(vms)
seeded_bytes 65536 10 > "$T/a"
seeded_bytes 65536 11 > "$T/a ;b.img"
must_fail "$FERRY" enable-replication --vault vault --vm semi --disk "vda=$T/a ;b.img"
grep -q "';' after a blank" "$T/must_fail.out" || fail "' ;' in a disk path: no clear reason"
grep -q "comment" "$T/must_fail.out" || fail "' ;' in a disk path: the reason does not say what the agent would do"
seeded_bytes 65536 12 > "$T/trail.img "
must_fail "$FERRY" enable-replication --vault vault --vm trail --disk "vda=$T/trail.img "
grep -q "ends with a blank" "$T/must_fail.out" || fail "a trailing blank: no clear reason"
mkdir "$T/v ;x"
"$FERRY" init --vault "$T/v ;x" > /dev/null || fail "init of a vault path with ' ;'"
must_fail "$FERRY" enable-replication --vault "$T/v ;x" --vm inner --disk "vda=$good"
grep -q "';' after a blank" "$T/must_fail.out" || fail "' ;' in the vault's path: no clear reason"
[ ! -e "$T/v ;x/agents/inner.conf" ] || fail "a refused enable left a configuration"
[ "$("$FERRY" status --vault "$T/v ;x" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))')" = 0 ] ||
	fail "a refused enable registered the VM"

# --- an empty disk is refused at enable-replication ---
: > "$T/empty.img"
must_fail "$FERRY" enable-replication --vault vault --vm empty --disk "vda=$T/empty.img"
grep -q "is empty" "$T/must_fail.out" || fail "an empty disk: no clear reason"
[ "$(vms)" = "$n0" ] || fail "a refused enable registered a VM"
[ ! -e vault/agents/empty.conf ] || fail "a refused enable left a configuration"

# --- a disk that changes size at the source shows in ferry status ---
seeded_bytes $((1024 * 1024)) 13 > grow.img
"$FERRY" enable-replication --vault vault --vm grow --disk "vda=$T/grow.img" > /dev/null
cycle vault grow
truncate -s 2M grow.img
must_fail "$AGENT" --config vault/agents/grow.conf --once
grep -q "changed size" "$T/must_fail.out" || fail "the agent does not say that the disk changed size"
"$FERRY" status --vault vault > status.txt
grep -A12 '^grow$' status.txt | grep "last cycle failed" | grep -q "changed size from 1048576 to 2097152" ||
	fail "ferry status does not show the agent's refusal: $(grep -A12 '^grow$' status.txt)"
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin)["vms"] if v["vm"] == "grow"][0]
assert "changed size" in vm["agent"]["error_message"], vm["agent"]
assert vm["agent"]["error"] == "Invalid argument", vm["agent"]' || fail "ferry status --json lacks the agent's message"

# --- a 3 GiB junk segment: refused without being read, shown in status
# (what happens to the chain afterwards is the resync's business) ---
seeded_bytes $((1024 * 1024)) 14 > junk.img
"$FERRY" enable-replication --vault vault --vm junk --disk "vda=$T/junk.img" > /dev/null
cycle vault junk
seg=vault/cache/segments/junk/0000000000000002.seg
truncate -s 3G "$seg"
( ulimit -v $((1024 * 1024)) && exec "$REPLICATOR" --vault vault --once ) > repl.log 2>&1 || true
grep -q "larger than any segment" repl.log || fail "the replicator does not say the segment is too large: $(tail -5 repl.log)"
"$FERRY" status --vault vault > status.txt
grep -A6 '^junk$' status.txt | grep -q "0000000000000002.seg refused: larger than any segment" ||
	fail "ferry status does not show the refused segment: $(grep -A6 '^junk$' status.txt)"
"$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = [v for v in json.load(sys.stdin)["vms"] if v["vm"] == "junk"][0]
assert vm["state"] != "protected" and vm["applied_seq"] == 1, vm
assert "larger than any segment" in json.dumps(vm), vm' || fail "the junk segment moved the VM"

# --- control characters stay out of the terminal; events are paged ---
esc=$'\e'
ctl="$T/esc${esc}[31mred.img"
seeded_bytes 65536 15 > "$ctl"
"$FERRY" enable-replication --vault vault --vm ctl --disk "vda=$ctl" > /dev/null ||
	fail "enable-replication refused a path with an escape character"
"$FERRY" show --vault vault ctl > show.txt
grep -q "$esc" show.txt && fail "ferry show printed a raw escape character"
grep -qF 'esc\x1b[31mred.img' show.txt || fail "ferry show does not show the escape as \\x1b: $(cat show.txt)"
cycle vault ctl
cycle vault ctl
"$FERRY" show --vault vault --events 1 ctl > show.txt
[ "$(sed -n '/recent events/,$p' show.txt | grep -c ' info ')" = 1 ] || fail "--events 1 did not show one event: $(cat show.txt)"
grep -q "older events not shown" show.txt || fail "--events 1 does not say there are older events"
"$FERRY" show --vault vault --events 0 ctl > show.txt
grep -q "replication enabled" show.txt || fail "--events 0 does not show the first event"
grep -q "older events not shown" show.txt && fail "--events 0 says events are missing"
must_fail "$FERRY" show --vault vault --events -1 ctl
grep -q "events wants a number" "$T/must_fail.out" || fail "--events -1: unclear error"
exit 0
