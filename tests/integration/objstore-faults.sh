#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Ferry against Azurite under faults and misuse:
#  1. Agent, replicator and ferryfs talk to Azurite through faultproxy.py
#     (seeded: connections dropped before or after the request, responses
#     cut short, 503s, stalls), at least 10 % of requests failed or dropped;
#     the vault must end with exactly the points and bytes of a run without
#     faults, the cache drained and ferry check clean.
#  2. One replicator per store: a second one, from another vault directory
#     on the same store, refuses while the first holds the store's lease,
#     and takes over once the first stops (release) or dies (lease expiry,
#     up to 60 s).
#  3. A wrong key, an expired SAS and a missing container each give a clear
#     error naming the URL and not the secret, a non-zero exit, and nothing
#     half-written (no vault directory, nothing in the container).
. "$(dirname "$0")/objstore-lib.sh"
need_fuse
cd "$T"

azurite_start
GOOD_CS=$AZURE_STORAGE_CONNECTION_STRING
SEED=${FERRY_FAULT_SEED:-42}

# --- the source: one disk through three cycles, states kept ---
seeded_bytes 12582912 7 > disk.img
truncate -s 24M disk.img
cp disk.img src.1
scatter_writes disk.img 400 8
cp disk.img src.2
seeded_bytes 2097152 9 | dd of=disk.img bs=64K seek=200 conv=notrunc status=none
scatter_writes disk.img 100 10
cp disk.img src.3

# run_cycles NAME: three cycles of vault NAME, the disk at each state in turn.
# A failed agent or replicator pass is run again (counted): what must
# hold is that the end state is exact, whatever was retried on the way.
RERUNS=0
run_cycles() {
	local name=$1 i try
	"$FERRY" init --vault "$name" --store "azblob://$name-store/v" >/dev/null ||
		fail "$name: ferry init"
	"$FERRY" enable-replication --vault "$name" --vm vm1 --disk d=disk.img \
		--cache "azblob://$name-cache/c" --crash-interval 0 >/dev/null ||
		fail "$name: enable-replication"
	for i in 1 2 3; do
		cp "src.$i" disk.img
		for try in 1 2 3 4; do
			"$AGENT" --config "$name/agents/vm1.conf" --once 2>>"$name.log" && break
			[ "$try" -lt 4 ] || fail "$name: agent cycle $i failed 4 times: $(tail -3 "$name.log")"
			RERUNS=$((RERUNS + 1))
		done
		for try in 1 2 3 4; do
			"$REPLICATOR" --vault "$name" --once 2>>"$name.log" && break
			[ "$try" -lt 4 ] || fail "$name: replicator pass $i failed 4 times: $(tail -3 "$name.log")"
			RERUNS=$((RERUNS + 1))
		done
	done
}

# check_vault NAME: the points, their bytes, the drained cache.
check_vault() {
	local name=$1 i
	mapfile -t pts < <(points_of "$name" vm1)
	[ "${#pts[@]}" -eq 3 ] || fail "$name: expected 3 recovery points, got ${#pts[@]}"
	mount_vault "$name" "mnt-$name"
	for i in 1 2 3; do
		cmp "mnt-$name/vm1/recovery-points/${pts[$((i - 1))]}/d.img" "src.$i" ||
			fail "$name: point $i differs from the source"
		grep "^seq = " "mnt-$name/vm1/recovery-points/${pts[$((i - 1))]}/info" >>"$name.seqs"
	done
	cmp "mnt-$name/vm1/disks/d.img" src.3 || fail "$name: live image is not the newest state"
	unmount_vault "mnt-$name"
	"$FERRY" check --vault "$name" --read-data >/dev/null || fail "$name: ferry check"
	[ "$(azurite_list "$name-cache" | grep -c '/segments/' || true)" -eq 0 ] ||
		fail "$name: segments left in the cache"
}

# 1a. Without faults: the reference.
run_cycles ref
check_vault ref

# 1b. Through the fault proxy.
python3 "$SOURCE/tests/integration/faultproxy.py" --upstream "127.0.0.1:$AZ_PORT" \
	--port-file proxy.port --seed "$SEED" --stats proxy.json 2>proxy.log &
PIDS+=($!)
disown $!
for _ in $(seq 50); do [ -s proxy.port ] && break; sleep 0.1; done
[ -s proxy.port ] || fail "fault proxy did not start: $(cat proxy.log)"
export AZURE_STORAGE_CONNECTION_STRING
AZURE_STORAGE_CONNECTION_STRING=$(azurite_connection_string "http://127.0.0.1:$(cat proxy.port)/$AZURITE_ACCOUNT")
run_cycles faulty
check_vault faulty
AZURE_STORAGE_CONNECTION_STRING=$GOOD_CS
cmp ref.seqs faulty.seqs || fail "points of the faulty run have other sequences than the reference"

read -r total failed stalled < <(python3 -c '
import json, sys
s = json.load(open("proxy.json"))
print(s["requests"], s["drop_before"] + s["drop_after"] + s["truncate"] + s["error"], s["stall"])')
note "fault proxy: $total requests, $failed failed or dropped, $stalled stalled; $RERUNS pass(es) rerun"
[ "$total" -gt 50 ] || fail "too few requests went through the proxy ($total)"
[ $((failed * 100)) -ge $((total * 10)) ] || fail "only $failed of $total requests failed (< 10 %)"
[ "$stalled" -gt 0 ] || fail "no request was stalled"
note "faulty run: same 3 points, byte-identical, as the run without faults; cache drained"

# --- 2. one replicator per store ---
# A new vault cannot be made on a store that holds another's packs (its
# catalog would take them for garbage); a second vault directory on the same
# store is attached to it (its catalog rebuilt from the store), as on a
# standby host.
"$FERRY" init --vault other --store azblob://faulty-store/v >out.other 2>&1 &&
	fail "init on a store that holds packs succeeded"
grep -q "already holds" out.other || fail "init on a used store: $(cat out.other)"
[ ! -e other ] || fail "init on a used store left a directory"
"$FERRY" attach --vault other --store azblob://faulty-store/v >/dev/null 2>&1 ||
	fail "ferry attach of the faulty run's store"
"$REPLICATOR" --vault faulty --interval 1 --verbose 2>rep1.log &
REP1=$!
PIDS+=($REP1)
for _ in $(seq 100); do
	grep -q "holding the replicator lock" rep1.log && break
	kill -0 "$REP1" 2>/dev/null || fail "replicator died: $(cat rep1.log)"
	sleep 0.1
done
if "$REPLICATOR" --vault other --once 2>rep2.log; then
	fail "a second replicator ran while the first held the store"
fi
grep -q "another replicator holds store azblob://faulty-store/v" rep2.log ||
	fail "second replicator's message: $(cat rep2.log)"
must_fail "$REPLICATOR" --vault faulty --once
note "second replicator refused: $(head -1 rep2.log)"
kill -TERM "$REP1"
wait "$REP1" 2>/dev/null || true
"$REPLICATOR" --vault other --once 2>rep2.log || fail "no takeover after the first stopped: $(cat rep2.log)"
note "second replicator took over after the first stopped"

# Dead holder: its lease runs out within 60 s.
"$REPLICATOR" --vault other --interval 1 2>rep3.log &
REP3=$!
PIDS+=($REP3)
sleep 2
kill -0 "$REP3" 2>/dev/null || fail "replicator on the second vault died: $(cat rep3.log)"
kill -KILL "$REP3"
wait "$REP3" 2>/dev/null || true
start=$(date +%s)
must_fail "$REPLICATOR" --vault faulty --once
until "$REPLICATOR" --vault faulty --once 2>rep4.log; do
	[ $(($(date +%s) - start)) -lt 80 ] || fail "no takeover 80 s after the holder died: $(cat rep4.log)"
	sleep 3
done
note "takeover $(($(date +%s) - start)) s after the holder was killed"

# Losing the lease: a replicator whose store becomes unreachable (its proxy
# gone) cannot renew, stops and exits 1.
python3 "$SOURCE/tests/integration/faultproxy.py" --upstream "127.0.0.1:$AZ_PORT" \
	--port-file proxy2.port --drop-before 0 --drop-after 0 --truncate 0 --error 0 --stall 0 \
	2>proxy2.log &
PROXY2=$!
PIDS+=($PROXY2)
disown $PROXY2
for _ in $(seq 50); do [ -s proxy2.port ] && break; sleep 0.1; done
AZURE_STORAGE_CONNECTION_STRING=$(azurite_connection_string "http://127.0.0.1:$(cat proxy2.port)/$AZURITE_ACCOUNT") \
	"$REPLICATOR" --vault faulty --interval 2 --verbose 2>rep5.log &
REP5=$!
PIDS+=($REP5)
for _ in $(seq 100); do
	grep -q "holding the replicator lock" rep5.log && break
	kill -0 "$REP5" 2>/dev/null || fail "replicator died: $(cat rep5.log)"
	sleep 0.1
done
kill -KILL "$PROXY2"
for _ in $(seq 60); do kill -0 "$REP5" 2>/dev/null || break; sleep 1; done
kill -0 "$REP5" 2>/dev/null && fail "replicator still runs 60 s after its store became unreachable"
rc=0
wait "$REP5" || rc=$?
[ "$rc" -eq 1 ] || fail "replicator that lost its lease exited $rc, not 1"
grep -q "lost the replicator lock on store azblob://faulty-store/v" rep5.log ||
	fail "no message about the lost lease: $(tail -3 rep5.log)"
note "$(grep "lost the replicator lock" rep5.log | head -1)"

# --- 3. misuse: a clear error naming the URL, no secret, nothing made ---
# check_refusal WHAT OUTPUT-FILE URL SECRET...
check_refusal() {
	local what=$1 out=$2 url=$3 s
	shift 3
	grep -q -- "$url" "$out" || fail "$what: the message does not name $url: $(cat "$out")"
	for s in "$@"; do
		! grep -qF -- "$s" "$out" || fail "$what: the message shows a secret: $(cat "$out")"
	done
	note "$what: $(cat "$out")"
}

# Wrong key.
BAD_KEY=$(printf '%s' "$AZURITE_KEY" | tr 'A-Za-z' 'N-ZA-Mn-za-m')
AZURE_STORAGE_CONNECTION_STRING=$(azurite_connection_string "$AZ_ENDPOINT" "$BAD_KEY") \
	"$FERRY" init --vault wrongkey --store azblob://wrongkey-store/v >out.wrongkey 2>&1 &&
	fail "init with a wrong key succeeded"
check_refusal "wrong key" out.wrongkey azblob://wrongkey-store/v "$BAD_KEY" "$AZURITE_KEY"
[ ! -e wrongkey ] || fail "wrong key: a vault directory was left behind"
[ -z "$(azurite_list wrongkey-store)" ] || fail "wrong key: blobs were written"

# Expired SAS, on a container that exists (made with the good key).
"$FERRY" init --vault sasok --store azblob://sas-store/a >/dev/null || fail "init of sas-store"
SAS=$(azurite_sas sas-store racwdl 2020-06-01T00:00:00Z)
SIG=${SAS##*sig=}
mkdir sasdir
AZURE_STORAGE_CONNECTION_STRING="AccountName=$AZURITE_ACCOUNT;BlobEndpoint=$AZ_ENDPOINT;SharedAccessSignature=$SAS" \
	"$FERRY" init --vault sasdir --store azblob://sas-store/b >out.sas 2>&1 &&
	fail "init with an expired SAS succeeded"
check_refusal "expired SAS" out.sas azblob://sas-store/b "$SIG" "sig=" "$AZURITE_KEY"
[ -d sasdir ] && [ -z "$(ls -A sasdir)" ] || fail "expired SAS: the empty vault directory was not left as it was"
! azurite_list sas-store | grep -q '^b/' || fail "expired SAS: blobs were written under b/"

# A valid SAS for a container that does not exist.
SAS=$(azurite_sas no-such-container racwdl 2099-01-01T00:00:00Z)
SIG=${SAS##*sig=}
AZURE_STORAGE_CONNECTION_STRING="AccountName=$AZURITE_ACCOUNT;BlobEndpoint=$AZ_ENDPOINT;SharedAccessSignature=$SAS" \
	"$FERRY" init --vault missing --store azblob://no-such-container/v >out.missing 2>&1 &&
	fail "init on a missing container succeeded"
check_refusal "missing container" out.missing azblob://no-such-container/v "$SIG" "sig="
grep -q "does not exist" out.missing || fail "missing container: the message does not say so"
[ ! -e missing ] || fail "missing container: a vault directory was left behind"

# The replicator of a vault whose store container is gone.
azurite_container DELETE sas-store || fail "cannot delete container sas-store"
"$REPLICATOR" --vault sasok --once >out.gone 2>&1 && fail "replicator on a deleted store container succeeded"
check_refusal "store container gone" out.gone azblob://sas-store/a "$AZURITE_KEY"
