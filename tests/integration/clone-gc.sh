#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A failover clone's fsynced writes survive garbage collection running beside
# them. A writer puts 64 KiB blocks at random offsets into a test failover's
# clone, each with pwrite + fsync, for CLONE_GC_SECONDS (default 120), while
# a loop beside it changes the source disk, replicates a cycle and runs
# `ferry gc`, again and again: GC rewrites and drops packs, clone packs among
# them, the whole time. No write or fsync may fail; after a remount the clone
# equals a shadow copy that got the same writes, and `ferry check
# --read-data` passes. Then a pack that only the clone references is taken
# away, once as a file and once from the catalog too: `ferry check` must
# report both, since it walks the clone's root.
. "$(dirname "$0")/lib.sh"
need_fuse
seconds=${CLONE_GC_SECONDS:-120}

cd "$T"
seeded_bytes 16777216 61 > data.img
truncate -s 32M data.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --disk data=data.img --crash-interval 0 >/dev/null
cycle vault vm1 2>/dev/null
"$FERRY" test-failover --vault vault vm1 --name t1 >/dev/null 2>&1 || fail "test-failover failed"
mount_vault vault mnt
C=mnt/vm1/failovers/t1/data.img
cp "$C" shadow.img || fail "cannot read the new clone"

# The churn: source writes, a cycle, a GC pass, over and over, until told to
# stop. Thinning keeps every point (crash-interval 0, default retention), so
# points pile up; GC still finds dead objects in the clone's own packs, which
# the writer keeps overwriting.
churn() {
	local i=0
	while [ ! -e stop ]; do
		i=$((i + 1))
		scatter_writes data.img 64 $((100 + i))
		"$AGENT" --config vault/agents/vm1.conf --once 2>>churn.log || { echo "agent failed" >> churn.err; return; }
		"$REPLICATOR" --vault vault --once 2>>churn.log || { echo "replicator failed" >> churn.err; return; }
		"$FERRY" gc --vault vault >>gc.log 2>>churn.log || { echo "gc failed" >> churn.err; return; }
	done
	echo "$i" > churn.count
}
churn &
churn_pid=$!
PIDS+=("$churn_pid")

python3 - "$C" shadow.img "$seconds" <<'PY' || { touch stop; wait "$churn_pid" || true; fail "the clone writer failed"; }
import os, random, sys, time
clone, shadow, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = random.Random(7)
c = os.open(clone, os.O_RDWR)
s = os.open(shadow, os.O_RDWR)
size = os.fstat(c).st_size
blocks = size // 65536
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    off = rng.randrange(blocks) * 65536
    buf = rng.randbytes(65536)
    # Unaligned now and then: a read-modify-write of the blocks around it.
    if n % 5 == 4:
        off += rng.randrange(1, 4096)
        buf = buf[: min(len(buf), size - off)]
    try:
        if os.pwrite(c, buf, off) != len(buf):
            sys.exit("short write to the clone at %d" % off)
        os.fsync(c)
    except OSError as e:
        sys.exit("write %d at %d failed: %s" % (n, off, e))
    os.pwrite(s, buf, off)
    n += 1
os.close(c)
os.close(s)
print("# %d writes of up to 64 KiB, each fsynced, in %.0f s" % (n, seconds))
PY
touch stop
wait "$churn_pid" || true
[ ! -s churn.err ] || fail "the churn loop stopped: $(cat churn.err); $(tail -5 churn.log)"
[ -s churn.count ] || fail "the churn loop did not finish"
rewritten=$(awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "rewritten,") s += $i } END { print s + 0 }' gc.log)
dropped=$(awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "pack(s)") s += $i } END { print s + 0 }' gc.log)
note "$(cat churn.count) cycles and GC passes beside the writer: $dropped packs dropped, $rewritten rewritten"
[ "$((dropped + rewritten))" -gt 0 ] || fail "GC never dropped or rewrote a pack: the test proves nothing"

unmount_vault mnt
mount_vault vault mnt
cmp "$C" shadow.img || fail "after a remount the clone differs from its shadow copy"
note "the clone equals its shadow after a remount"
"$FERRY" check --vault vault --read-data >check.out || fail "check --read-data: $(cat check.out)"

# One more fsynced write makes a pack that only the clone references.
python3 - "$C" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"\xa5" * 65536, 3 * 65536)
os.fsync(fd)
os.close(fd)
PY
unmount_vault mnt
pack=$(python3 - vault/catalog.db <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
pid, = db.execute("SELECT id FROM packs ORDER BY created_ns DESC LIMIT 1").fetchone()
print("%016x" % (pid & (2**64 - 1)))
PY
)
mv "vault/store/packs/$pack.pack" lost.pack
must_fail "$FERRY" check --vault vault
grep -q "pack $pack" "$T/must_fail.out" || fail "check does not name the missing pack: $(cat "$T/must_fail.out")"
note "check reports the clone's missing pack file"

# The same pack gone from the catalog too, as a GC that ignored the clone
# would leave it: only the walk of the clone's root can tell.
python3 - vault/catalog.db "$pack" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
pid = int(sys.argv[2], 16)
pid = pid - 2**64 if pid >= 2**63 else pid
db.execute("DELETE FROM objects WHERE pack = ?", (pid,))
db.execute("DELETE FROM packs WHERE id = ?", (pid,))
db.commit()
PY
must_fail "$FERRY" check --vault vault
grep -q "failover t1 disk data (clone)" "$T/must_fail.out" ||
	fail "check does not walk the clone's root: $(cat "$T/must_fail.out")"
note "check reports the clone's missing data through its root"
