#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ferry check --read-data passes on a healthy vault and fails, naming the
# pack, on one with a flipped byte in a pack, a truncated pack, or a missing
# pack.
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
