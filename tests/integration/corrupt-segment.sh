#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Damaged segments are refused whole: one flipped byte, a truncation and a
# gap in the sequence each stop the replicator with an error that names the
# segment; nothing of it is applied (same points, same applied sequence,
# same live map), and it stays in the cache for inspection. Once the good
# segment is back, replication carries on.
. "$(dirname "$0")/lib.sh"
cd "$T"

seeded_bytes 4194304 11 > disk.img
truncate -s 16M disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm db --disk d0=disk.img --crash-interval 0 >/dev/null
cycle vault db

state() { "$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = json.load(sys.stdin)["vms"][0]
print(vm["applied_seq"], vm["recovery_points"], vm["last_recovery_point"])'; }
before=$(state)
store_before=$(find vault/store -name '*.pack' | sort | xargs cat | sha256sum)

scatter_writes disk.img 64 12
"$AGENT" --config vault/agents/db.conf --once 2>/dev/null
seg=vault/cache/segments/db/0000000000000002.seg
[ -f "$seg" ] || fail "agent did not write segment 2"
cp "$seg" good.seg
size=$(stat -c %s "$seg")

# One flipped byte, in the middle of the segment.
python3 - "$seg" "$((size / 2))" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x10]))
PY

check_refused() { # WHAT
	if "$REPLICATOR" --vault vault --once 2>err.txt; then fail "$1: replicator accepted it"; fi
	grep -q "0000000000000002.seg" err.txt || fail "$1: error does not name the segment: $(cat err.txt)"
	[ "$(state)" = "$before" ] || fail "$1: catalog changed: $(state) vs $before"
	[ "$(find vault/store -name '*.pack' | sort | xargs cat | sha256sum)" = "$store_before" ] ||
		fail "$1: the store changed"
	[ -f "$seg" ] || fail "$1: the refused segment was removed from the cache"
	"$FERRY" status --vault vault | grep -q "state          error" || fail "$1: status shows no error"
	"$FERRY" status --vault vault | grep -q "0000000000000002.seg" || fail "$1: status does not name the segment"
	note "$1: refused, nothing applied: $(grep -o 'refused: .*' err.txt | head -1)"
}
check_refused "flipped byte"

head -c $((size - 100)) good.seg > "$seg"
check_refused "truncated"

# A segment whose name and content disagree.
rm "$seg"
cp good.seg vault/cache/segments/db/0000000000000003.seg
if "$REPLICATOR" --vault vault --once 2>err.txt; then fail "misnamed: replicator accepted it"; fi
grep -q "named as segment 3 but holds segment 2" err.txt || fail "misnamed: $(cat err.txt)"
[ "$(state)" = "$before" ] || fail "misnamed: catalog changed"
rm vault/cache/segments/db/0000000000000003.seg

# A gap: the agent's next segment (3) arrives while 2 is missing.
scatter_writes disk.img 8 13
"$AGENT" --config vault/agents/db.conf --once 2>/dev/null
[ -f vault/cache/segments/db/0000000000000003.seg ] || fail "agent did not write segment 3"
if "$REPLICATOR" --vault vault --once 2>err.txt; then fail "gap: replicator accepted segment 3"; fi
grep -q "0000000000000003.seg" err.txt || fail "gap: error does not name segment 3"
grep -q "out of sequence" err.txt || fail "gap: error does not say out of sequence"
[ "$(state)" = "$before" ] || fail "gap: catalog changed"
note "misnamed and out-of-sequence segments refused"

# The good segment applies, and the VM is healthy again.
cp good.seg "$seg"
"$REPLICATOR" --vault vault --once || fail "the good segment was refused"
[ ! -f "$seg" ] || fail "applied segment still in the cache"
[ "$("$FERRY" status --vault vault --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vms"][0]["applied_seq"])')" = 3 ] ||
	fail "segments 2 and 3 were not both applied"
"$FERRY" status --vault vault | grep -q "state          protected" || fail "VM did not recover"
"$FERRY" check --vault vault --read-data >/dev/null || fail "vault damaged"
