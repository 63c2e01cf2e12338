#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Writable failover clones in ferryfs. A test failover's clone starts
# byte-identical to its point; writes of every shape (buffered, O_DIRECT,
# unaligned, scattered) read back from every open; they survive unmount and
# remount, and a kill -9 of ferryfs once fsync returned; the recovery point
# and the live image never change; replication goes on during the test
# failover; GC keeps the clone's data and check --read-data passes; cleanup
# removes the clone from the running mount and fails its open files.
. "$(dirname "$0")/lib.sh"
need_fuse
"$FERRY" test-failover --help >/dev/null 2>&1 || skip "ferry test-failover is not built yet"

cd "$T"
seeded_bytes 6291456 41 > data.img
truncate -s 16M data.img
seeded_bytes 1000000 42 > small.img
truncate -s 1000000 small.img # not a multiple of 4 KiB

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --disk data=data.img --disk small=small.img \
	--crash-interval 0 >/dev/null
cycle vault vm1 2>/dev/null
cp data.img data.p1 && cp small.img small.p1
p1=$(points_of vault vm1 | head -1)

name=$("$FERRY" test-failover --vault vault vm1 --recovery-point "$p1" --name t1 2>/dev/null) ||
	fail "test-failover failed"
[ "$name" = t1 ] || fail "test-failover printed '$name', not the clone's name"

mount_vault vault mnt
C=mnt/vm1/failovers/t1
P=mnt/vm1/recovery-points/$p1
[ -f "$C/data.img" ] && [ -f "$C/small.img" ] || fail "clone images missing: $(ls "$C")"
[ -s "$C/domain.xml" ] && [ -s "$C/qemu.args" ] || fail "VM definition files missing or empty"
for f in qemu.args domain.xml; do
	grep -q "$(realpath mnt)/vm1/failovers/t1/data.img" "$C/$f" ||
		fail "$f does not name the clone image by its absolute path: $(cat "$C/$f")"
done
python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$C/domain.xml" ||
	fail "domain.xml is not well-formed XML"
if command -v virt-xml-validate >/dev/null; then
	virt-xml-validate "$C/domain.xml" domain >/dev/null || fail "virt-xml-validate rejects domain.xml"
fi
[ "$(stat -c %s "$C/small.img")" -eq 1000000 ] || fail "clone size is not the disk's"
[ "$(stat -c %a "$C/data.img")" = 600 ] || fail "clone image mode is not 0600 (the mounting user's alone)"
cmp "$C/data.img" data.p1 || fail "clone data.img does not start as its point"
cmp "$C/small.img" small.p1 || fail "clone small.img does not start as its point"
note "clone starts byte-identical to point $p1"

# The same writes go into the clone and into model copies.
cp data.p1 data.model && cp small.p1 small.model
both() { # DISK dd-args...: the dd into the clone and into the model
	local disk=$1
	shift
	dd of="$C/$disk.img" conv=notrunc status=none "$@" || fail "dd into clone $disk: $*"
	local args=()
	for a in "$@"; do [[ $a == oflag=direct ]] || args+=("$a"); done
	dd of="$disk.model" conv=notrunc status=none "${args[@]}" || fail "dd into model: $*"
}
seeded_bytes 300000 43 > w1
seeded_bytes 1048576 44 > w2
B=(bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes) # byte offsets, big requests
both data if=w1 "${B[@]}" seek=12345           # unaligned, buffered
both data if=w2 bs=64K seek=40 oflag=direct    # aligned O_DIRECT
both data if=w2 bs=4K seek=1000 count=3 oflag=direct
both data if=/dev/zero bs=4K seek=41 count=2    # zeros over data
both data if=w1 bs=512 seek=7 count=9           # sub-block pieces
both small if=w1 "${B[@]}" seek=999000 count=1000 # up to the ragged end
for i in $(seq 1 40); do
	off=$(((i * 2654435761) % 16000000))
	both data if=w1 "${B[@]}" skip=$((i * 97)) seek=$off count=$((i * 311))
done
cmp "$C/data.img" data.model || fail "clone data.img does not read back the writes"
cmp "$C/small.img" small.model || fail "clone small.img does not read back the writes"
note "buffered, O_DIRECT, unaligned and scattered writes read back"

# Another open sees writes not yet flushed, while the writer keeps its file open.
python3 - "$C/data.img" <<'PY' || fail "a second open does not see unflushed writes"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"unflushed-bytes" * 100, 5 * 1048576 + 17)
fd2 = os.open(sys.argv[1], os.O_RDONLY)
assert os.pread(fd2, 1500, 5 * 1048576 + 17) == b"unflushed-bytes" * 100
os.close(fd2)
os.close(fd)
PY
printf 'unflushed-bytes%.0s' $(seq 100) | dd of=data.model bs=1 seek=$((5 * 1048576 + 17)) \
	conv=notrunc status=none

# A clone is a disk: its size is fixed.
must_fail truncate -s 1M "$C/data.img"
must_fail dd if=w1 of="$C/data.img" bs=4K seek=4096 count=1 conv=notrunc status=none
grep -qi "too large\|no space" "$T/must_fail.out" || fail "write past the end: $(cat "$T/must_fail.out")"
if out=$(sh -c "echo x > '$P/data.img'" 2>&1); then fail "write into a point succeeded"; fi
case $out in *"Read-only file system"*) ;; *) fail "write into a point: '$out', not EROFS" ;; esac
if out=$(sh -c "echo x > mnt/vm1/disks/data.img" 2>&1); then fail "write into the live image"; fi
if out=$(touch "$C/new" 2>&1); then fail "creating a file in a failover succeeded"; fi
cmp "$P/data.img" data.p1 || fail "the point changed under the clone"
cmp mnt/vm1/disks/data.img data.img || fail "the live image changed under the clone"
note "size fixed; point and live image untouched"

unmount_vault mnt
mount_vault vault mnt
cmp "$C/data.img" data.model || fail "clone data.img lost writes across unmount and remount"
cmp "$C/small.img" small.model || fail "clone small.img lost writes across remount"
note "writes survive unmount and remount"

# Replication goes on while the clone is mounted and written.
unmount_vault mnt
"$FERRYFS" --vault vault mnt -f 2>"$T/ferryfs.log" &
fspid=$!
PIDS+=("$fspid")
for _ in $(seq 50); do mountpoint -q mnt && break; sleep 0.1; done
mountpoint -q mnt || fail "ferryfs -f did not mount"
scatter_writes data.img 200 45
both data if=w2 bs=4K seek=2000 count=50
cycle vault vm1 2>/dev/null
both data if=w2 bs=4K seek=3000 count=50 oflag=direct
seeded_bytes 65536 46 | dd of=small.img bs=4K seek=3 conv=notrunc status=none
cycle vault vm1 2>/dev/null
sleep 1.5
[ "$(points_of vault vm1 | wc -l)" -eq 3 ] || fail "replication did not cut new points"
cmp mnt/vm1/disks/data.img data.img || fail "the live image does not follow replication"
cmp "$C/data.img" data.model || fail "replication changed the clone"
cmp "$P/data.img" data.p1 || fail "the point changed"
note "replication continued: 2 new points, clone unaffected"

# kill -9 after fsync: what fsync covered is there after a remount.
# The writer leaves without closing its file once ferryfs is dead, so no
# close() flushes the unsynced block.
python3 - "$C/data.img" "$T/ready" "$T/killed" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"\xa5" * 70000, 3 * 1048576 + 100)  # fsynced below
os.fsync(fd)
os.pwrite(fd, b"\x5a" * 8192, 9 * 1048576)          # never synced
open(sys.argv[2], "w").close()
for _ in range(600):
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.1)
os._exit(0)
PY
pypid=$!
PIDS+=("$pypid")
for _ in $(seq 100); do [ -e "$T/ready" ] && break; sleep 0.1; done
[ -e "$T/ready" ] || fail "the fsync writer did not finish"
kill -9 "$fspid"
wait "$fspid" 2>/dev/null || true
touch "$T/killed"
wait "$pypid" || true
fusermount3 -u -z mnt
head -c 70000 /dev/zero | tr '\0' '\245' |
	dd of=data.model bs=1 seek=$((3 * 1048576 + 100)) conv=notrunc status=none
mount_vault vault mnt
cmp -n $((9 * 1048576)) "$C/data.img" data.model || fail "fsynced data lost in kill -9"
cmp -i $((9 * 1048576 + 8192)) "$C/data.img" data.model || fail "clone damaged by kill -9"
# The unsynced block may or may not have made it; either way it is whole.
python3 - "$C/data.img" data.model <<'PY' || fail "unsynced block torn"
import sys
got = open(sys.argv[1], "rb").read()[9 * 1048576:9 * 1048576 + 8192]
old = open(sys.argv[2], "rb").read()[9 * 1048576:9 * 1048576 + 8192]
assert got in (old, b"\x5a" * 8192), "neither old nor new"
PY
dd if="$C/data.img" of=data.model bs=4K skip=2304 seek=2304 count=2 conv=notrunc status=none
cmp "$C/data.img" data.model || fail "clone differs from the model after kill -9"
note "fsynced writes survive kill -9 of ferryfs"

# -o ro: clones are read-only too.
unmount_vault mnt
mkdir -p mnt
"$FERRYFS" --vault vault mnt -o ro || fail "ferryfs -o ro did not mount"
if out=$(dd if=w1 of="$C/data.img" bs=4K count=1 conv=notrunc status=none 2>&1); then
	fail "write into a clone of a read-only mount succeeded"
fi
case $out in *"Read-only file system"*) ;; *) fail "clone write with -o ro: '$out'" ;; esac
cmp "$C/data.img" data.model || fail "clone reads wrong in a read-only mount"
unmount_vault mnt
mount_vault vault mnt
note "-o ro keeps clones read-only"

# GC keeps the clone's data; check reads every byte.
unmount_vault mnt
"$FERRY" gc --vault vault >/dev/null 2>&1 || fail "gc failed"
"$FERRY" check --vault vault --read-data >/dev/null || fail "check --read-data failed"
mount_vault vault mnt
cmp "$C/data.img" data.model || fail "gc took clone data"
cmp "$C/small.img" small.model || fail "gc took clone data (small)"
cmp "$P/data.img" data.p1 || fail "the point changed"
note "gc keeps clone data; check --read-data passes"

# Cleanup: the failover leaves the running mount; an open file fails.
python3 - "$C/data.img" "$T/opened" "$T/cleaned" <<'PY' &
import errno, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
open(sys.argv[2], "w").close()
for _ in range(100):
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.1)
time.sleep(2)
try:
    os.pwrite(fd, b"x" * 4096, 0)
    os.fsync(fd)
except OSError as e:
    sys.exit(0 if e.errno in (errno.ENOENT, errno.EIO) else 3)
sys.exit(4)
PY
pypid=$!
for _ in $(seq 100); do [ -e "$T/opened" ] && break; sleep 0.1; done
"$FERRY" test-failover-cleanup --vault vault vm1 --name t1 2>/dev/null || fail "cleanup failed"
touch "$T/cleaned"
wait "$pypid" || fail "writes to a removed clone did not fail with ENOENT or EIO (rc $?)"
sleep 1.5
[ ! -e "$C" ] || fail "the removed failover is still in the mount"
[ -z "$(ls mnt/vm1/failovers)" ] || fail "failovers/ is not empty: $(ls mnt/vm1/failovers)"
cmp "$P/data.img" data.p1 || fail "cleanup changed the point"
unmount_vault mnt
before=$(du -sb vault/store | cut -f1)
"$FERRY" gc --vault vault >/dev/null 2>&1 || fail "gc after cleanup failed"
after=$(du -sb vault/store | cut -f1)
[ "$after" -lt "$before" ] || fail "gc freed nothing of the removed clone ($before -> $after)"
"$FERRY" check --vault vault --read-data >/dev/null || fail "check after cleanup failed"
note "cleanup removes the clone; gc and check pass"
