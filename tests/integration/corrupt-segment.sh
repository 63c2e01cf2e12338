#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Damaged segments are refused whole: one flipped byte, a truncation, a
# segment whose name and content disagree and a gap in the sequence are
# each refused with an error that names the segment, and nothing of it is
# applied (same points, same applied sequence, same store). Each then ends
# in a resync, with no manual step: the VM shows resync-required with the
# refusal as its reason, the refused chain leaves the cache, the agent's
# next cycle ships only what differs and the VM is protected again.
# (Before resyncs, a refused segment stopped the VM in state error until
# an operator put a good segment back; tests/integration/resync.sh checks
# the bytes after each kind of resync.)
. "$(dirname "$0")/lib.sh"
cd "$T"

seeded_bytes 4194304 11 > disk.img
truncate -s 32M disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm db --disk d0=disk.img --crash-interval 0 >/dev/null
cycle vault db

state() { "$FERRY" status --vault vault --json | python3 -c '
import json, sys
vm = json.load(sys.stdin)["vms"][0]
print(vm["applied_seq"], vm["recovery_points"], vm["last_recovery_point"])'; }
field() { "$FERRY" status --vault vault --json | python3 -c "
import json, sys
vm = json.load(sys.stdin)['vms'][0]
print(vm['$1'] if '${2:-}' == '' else (vm['$1'] or {}).get('${2:-}'))"; }
store() { find vault/store -name '*.pack' | sort | xargs cat | sha256sum; }
segs() { ls vault/cache/segments/db/; }

# The replicator refuses the segment named NAME, applies nothing of it and
# asks for a resync; the agent's next cycle heals the VM.
check_refused() { # WHAT NAME MESSAGE MAX-SHIPPED
	local before store_before
	before=$(state)
	store_before=$(store)
	"$REPLICATOR" --vault vault --once 2>err.txt || fail "$1: the replicator failed: $(cat err.txt)"
	grep -q "$2 refused: $3" err.txt || fail "$1: error does not name the segment: $(cat err.txt)"
	grep -q "resync [0-9]* requested" err.txt || fail "$1: no resync: $(cat err.txt)"
	[ "$(state)" = "$before" ] || fail "$1: catalog changed: $(state) vs $before"
	[ "$(store)" = "$store_before" ] || fail "$1: the store changed"
	[ -z "$(segs)" ] || fail "$1: the refused chain stayed in the cache: $(segs)"
	[ "$(field state)" = resync-required ] || fail "$1: state is $(field state)"
	field resync reason | grep -q "$2" || fail "$1: the resync's reason does not name the segment"
	"$FERRY" status --vault vault | grep -q "resync .*$2" || fail "$1: status does not name the segment"
	note "$1: refused, nothing applied: $(grep -o 'refused: .*' err.txt | head -1)"
	scatter_writes disk.img 4 99
	"$AGENT" --config vault/agents/db.conf --once 2>agent.err || fail "$1: the agent's resync cycle failed: $(cat agent.err)"
	grep -q "adopted resync" agent.err || fail "$1: the agent did not adopt the resync"
	"$REPLICATOR" --vault vault --once 2>/dev/null || fail "$1: the resync was refused"
	[ "$(field state)" = protected ] || fail "$1: the VM did not recover: $(field state)"
	shipped=$(sed -n 's/^cycle_shipped_bytes=//p' vault/agents/db.state/stats)
	[ "$shipped" -le "$4" ] || fail "$1: the resync shipped $shipped bytes, over $4"
}

# One flipped byte, in the middle of the segment.
scatter_writes disk.img 64 12
"$AGENT" --config vault/agents/db.conf --once 2>/dev/null
seg=$(segs)
[ -n "$seg" ] || fail "agent did not write a segment"
python3 - "vault/cache/segments/db/$seg" <<'PY'
import os, sys
path = sys.argv[1]
off = os.path.getsize(path) // 2
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0x10]))
PY
check_refused "flipped byte" "$seg" "segment is damaged" $((68 * 4096))

# A truncation.
scatter_writes disk.img 64 13
"$AGENT" --config vault/agents/db.conf --once 2>/dev/null
seg=$(segs)
size=$(stat -c %s "vault/cache/segments/db/$seg")
truncate -s $((size - 100)) "vault/cache/segments/db/$seg"
check_refused "truncated" "$seg" "segment is damaged" $((68 * 4096))

# A segment whose name and content disagree.
scatter_writes disk.img 8 14
"$AGENT" --config vault/agents/db.conf --once 2>/dev/null
seg=$(segs)
seq=$((16#${seg%.seg}))
misnamed=$(printf '%016x.seg' $((seq + 1)))
mv "vault/cache/segments/db/$seg" "vault/cache/segments/db/$misnamed"
check_refused "misnamed" "$misnamed" "named as segment $((seq + 1)) but holds segment $seq" \
	$((12 * 4096))

# A gap: the agent's next segment arrives while the one before is missing.
dd if=/dev/urandom of=disk.img bs=1M seek=8 count=17 conv=notrunc status=none
"$AGENT" --config vault/agents/db.conf --once 2>/dev/null
first=$(segs | head -1)
[ "$(segs | wc -l)" -ge 2 ] || fail "gap: 17 MiB made one segment"
rm "vault/cache/segments/db/$first"
next=$(segs | head -1)
check_refused "gap" "$next" "out of sequence" $(((17 << 20) + 4 * 4096))

"$FERRY" check --vault vault --read-data >/dev/null || fail "vault damaged"
