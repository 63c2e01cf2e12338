#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ferry check --read-data passes on a healthy vault and fails, naming the
# pack, on one with a flipped byte in a pack, a truncated pack, or a missing
# pack, and reports no false damage on a vault that is being written.
. "$(dirname "$0")/lib.sh"
cd "$T"

seeded_bytes 6291456 21 > disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm app --disk d=disk.img --crash-interval 0 >/dev/null
cycle vault app
scatter_writes disk.img 100 22
cycle vault app

"$FERRY" check --vault vault --read-data > out.txt || fail "check failed on a healthy vault: $(cat out.txt)"
grep -q ": ok$" out.txt || fail "check did not report ok"
note "healthy: $(tail -1 out.txt)"

pack=$(find vault/store -name '*.pack' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
cp "$pack" pack.orig
size=$(stat -c %s "$pack")

python3 - "$pack" "$((size / 3))" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 1]))
PY
if "$FERRY" check --vault vault --read-data > out.txt; then fail "check passed with a flipped byte"; fi
grep -q "DAMAGE: pack" out.txt || fail "check did not name the damaged pack: $(cat out.txt)"
note "flipped byte: $(grep DAMAGE out.txt | head -1)"

head -c $((size - 7)) pack.orig > "$pack"
if "$FERRY" check --vault vault > out.txt; then fail "check passed with a truncated pack"; fi
grep -q "DAMAGE" out.txt || fail "truncated pack not reported"

rm "$pack"
if "$FERRY" check --vault vault > out.txt; then fail "check passed with a missing pack"; fi
grep -q "DAMAGE" out.txt || fail "missing pack not reported"

cp pack.orig "$pack"
"$FERRY" check --vault vault --read-data >/dev/null || fail "restored pack still reported damaged"
note "truncated and missing packs reported; restored pack passes"

# ferry check beside a vault being written: cycles, thinning and GC run in
# a loop while check runs again and again. Packs committed, rewritten or
# dropped after a check took its snapshot are not damage.
churn() {
	local i=0
	while [ ! -e stop ]; do
		i=$((i + 1))
		echo "$i" > churn.n
		scatter_writes disk.img 50 $((300 + i))
		"$AGENT" --config vault/agents/app.conf --once 2>>churn.log &&
			"$REPLICATOR" --vault vault --once 2>>churn.log &&
			"$FERRY" gc --vault vault >/dev/null 2>>churn.log || { echo "cycle $i failed" > churn.err; return; }
	done
	echo "$i" > churn.count
}
churn &
PIDS+=($!)
checks=0
start=$SECONDS
until [ "$(cat churn.n 2>/dev/null || echo 0)" -gt 15 ] || [ $((SECONDS - start)) -gt 120 ]; do
	"$FERRY" check --vault vault > out.txt 2>&1 || { touch stop; fail "check beside writes reported damage: $(cat out.txt)"; }
	"$FERRY" check --vault vault --read-data > out.txt 2>&1 ||
		{ touch stop; fail "check --read-data beside writes reported damage: $(cat out.txt)"; }
	checks=$((checks + 2))
done
touch stop
wait "${PIDS[-1]}" || true
[ ! -s churn.err ] || fail "the churn beside check failed: $(cat churn.err): $(tail -3 churn.log)"
note "$checks checks beside $(cat churn.count) cycles with GC: no false damage"
