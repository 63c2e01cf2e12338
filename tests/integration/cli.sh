#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The command line: every program and verb has --help; bad input (unknown
# VM, hostile names, a non-empty vault directory, a second enable, malformed
# agent configuration, a missing disk) gets a clear error and a non-zero
# exit, and changes nothing.
. "$(dirname "$0")/lib.sh"
cd "$T"

for prog in "$FERRY" "$AGENT" "$REPLICATOR" "$FERRYFS"; do
	"$prog" --help > help.txt || fail "$prog --help failed"
	grep -qi usage help.txt || fail "$prog --help prints no usage"
	"$prog" --version > /dev/null || fail "$prog --version failed"
done
for verb in init enable-replication status recovery-points show check gc attach test-failover \
	test-failover-cleanup failover change-recovery-point commit jobs reprotect-prepare reprotect \
	failback resume-replication; do
	"$FERRY" "$verb" --help > help.txt || fail "ferry $verb --help failed"
	grep -q "Usage: ferry $verb" help.txt || fail "ferry $verb --help prints no usage"
done
must_fail "$FERRY" frobnicate

"$FERRY" init --vault vault > /dev/null
mkdir notempty && touch notempty/x
must_fail "$FERRY" init --vault notempty
grep -q "not empty" "$T/must_fail.out" || fail "init into a non-empty directory: unclear error"
must_fail "$FERRY" init --vault v2 --chunk-size 1000
must_fail "$FERRY" status --vault nowhere
grep -q "not a vault" "$T/must_fail.out" || fail "status of a missing vault: unclear error"

truncate -s 8M d.img
for bad in "--vm ../evil --disk a=d.img" "--vm 'a b' --disk a=d.img" "--vm ok --disk ../x=d.img" \
	"--vm ok --disk a=d.img --disk a=d.img" "--vm ok --disk noequals" "--vm ok" \
	"--vm ok --disk a=d.img --crash-interval -5" "--vm ok --disk a=d.img --retention 0" \
	"--vm ok --disk a=d.img --target-group bad/group"; do
	eval "must_fail \"\$FERRY\" enable-replication --vault vault $bad"
done
[ -z "$(ls vault/agents)" ] || fail "a refused enable left an agent configuration"
"$FERRY" status --vault vault --json | python3 -c 'import json,sys; assert json.load(sys.stdin)["vms"] == []' ||
	fail "a refused enable registered a VM"

"$FERRY" enable-replication --vault vault --vm ok --disk a=d.img --source-group prod \
	--target-network tnet > out.txt || fail "enable-replication failed"
grep -q "target resource group  prod-ferry" out.txt || fail "target group does not default from the source"
grep -q "mapping default->tnet" out.txt || fail "network mapping not shown"
must_fail "$FERRY" enable-replication --vault vault --vm ok --disk a=d.img
grep -q "already protected" "$T/must_fail.out" || fail "second enable: unclear error"

# Failover verbs refuse what cannot be, and change nothing.
jobs_before=$("$FERRY" jobs --vault vault | wc -l)
must_fail "$FERRY" test-failover --vault vault ok
grep -q "not protected yet" "$T/must_fail.out" || fail "test failover before protection: unclear error"
must_fail "$FERRY" failover --vault vault ok
must_fail "$FERRY" test-failover --vault vault nosuchvm
must_fail "$FERRY" test-failover-cleanup --vault vault ok --name nothing
grep -q "no test failover named 'nothing'" "$T/must_fail.out" || fail "cleanup of nothing: unclear error"
must_fail "$FERRY" commit --vault vault ok
grep -q "not failed over" "$T/must_fail.out" || fail "commit without failover: unclear error"
must_fail "$FERRY" test-failover --vault vault ok --name ../x
[ "$("$FERRY" jobs --vault vault | wc -l)" = "$jobs_before" ] || fail "a refused failover verb left a job"

must_fail "$FERRY" recovery-points --vault vault nosuchvm
grep -q "no VM 'nosuchvm'" "$T/must_fail.out" || fail "unknown VM: unclear error"
must_fail "$FERRY" show --vault vault nosuchvm
"$FERRY" show --vault vault ok | grep -q "target-group *prod-ferry" || fail "show lacks resources"
"$FERRY" status --vault vault | grep -q "initial replication, 0.0%" || fail "status before the first cycle"

# Malformed agent configurations: each refused with the file named.
conf=vault/agents/ok.conf
grep -q "^chunk-size = 65536$" "$conf" || fail "the agent configuration lacks the vault's chunk size"
for edit in 's/^chunk-size = .*/chunk-size = 12288/' 's/^chunk-size = .*/chunk-size = 8388608/' \
	's/^vm = ok/vm = ..\/x/' 's/^interval = .*/interval = soon/' '/^\[disk\]/d' \
	's/^cache = .*//' 's/^version = 1/version = 9/' '$a bogus = 1'; do
	sed "$edit" "$conf" > bad.conf
	must_fail "$AGENT" --config bad.conf --once
	grep -q "bad.conf" "$T/must_fail.out" || fail "agent error for '$edit' does not name the file: $(cat "$T/must_fail.out")"
done
must_fail "$AGENT" --config /nonexistent/agent.conf --once

# A missing source disk: a clear error naming the disk, nothing shipped.
sed "s|^path = .*|path = $T/missing.img|" "$conf" > missing.conf
must_fail "$AGENT" --config missing.conf --once
grep -q "missing.img" "$T/must_fail.out" || fail "missing disk not named"
[ -z "$(ls vault/cache/segments/ok 2>/dev/null)" ] || fail "a failed agent left segments"

# A second replicator on the same vault refuses to run; gc waits for no one.
exec 9>vault/replicator.lock
flock -n 9 || fail "cannot take the replicator lock in the test"
must_fail "$REPLICATOR" --vault vault --once
grep -q "another replicator holds vault" "$T/must_fail.out" || fail "second replicator: unclear error"
exec 9>&-
exec 9>vault/writer.lock
flock -n 9 || fail "cannot take the writer lock in the test"
must_fail "$FERRY" gc --vault vault
grep -q "in use" "$T/must_fail.out" || fail "gc on a busy vault: unclear error"
exec 9>&-

# Man pages build and say something about each program.
if command -v scdoc >/dev/null; then
	for page in ferry.1 ferry-agent.8 ferry-replicator.8 ferryfs.8; do
		scdoc < "$SOURCE/docs/man/$page.scd" > "$page" || fail "man page $page does not build"
		[ "$(wc -l < "$page")" -gt 40 ] || fail "man page $page is too short"
	done
fi

# Once protected: an unknown point and a name in use are refused too.
"$AGENT" --config vault/agents/ok.conf --once 2>/dev/null || fail "agent cycle failed"
"$REPLICATOR" --vault vault --once 2>/dev/null || fail "replicator pass failed"
must_fail "$FERRY" test-failover --vault vault ok --recovery-point 19700101T000000Z
grep -q "no recovery point '19700101T000000Z'" "$T/must_fail.out" || fail "unknown point: unclear error"
"$FERRY" test-failover --vault vault ok --name drill >/dev/null 2>&1 || fail "test failover failed"
must_fail "$FERRY" test-failover --vault vault ok --name drill
grep -q "already has a failover named 'drill'" "$T/must_fail.out" || fail "name in use: unclear error"
"$FERRY" status --vault vault | grep -q "test failover  drill" || fail "status does not show the test failover"
"$FERRY" test-failover-cleanup --vault vault ok --name drill 2>/dev/null || fail "cleanup failed"
"$FERRY" jobs --vault vault | grep -q "test-failover-cleanup" || fail "jobs lacks the cleanup"
