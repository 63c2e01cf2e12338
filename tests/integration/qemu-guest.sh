#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A real guest, replicated with the qemu tracker while it writes, fails over
# crash-consistent (issue 13, 1a).
#
# A qemu-system-x86_64 VM (TCG) boots Debian's kernel from a small root disk
# (tests/fixtures/mkguest.sh) and writes numbered files for ever to an ext4
# file system on its second disk, each fsync'ed before the next is created
# (tests/fixtures/guest-init.sh). Ferry replicates both disks through the
# VM's second QMP monitor with the agent and the replicator running as
# daemons. Then:
#  - every recovery point's data disk, after its journal is replayed, passes
#    e2fsck -fn and holds exactly files 1..K of the sequence with the right
#    contents (only file K may be cut short), K > 0, and K never goes back
#    from one point to the next;
#  - a point from the middle, cut while the guest kept on writing (the disk
#    at the end holds more files), is failed over; its clone boots under
#    qemu from the ferryfs mount, with the generated qemu.args and a kernel
#    command line that makes the guest check the sequence itself; it must
#    find the same K as the host did and print FERRY-GUEST-OK;
#  - the boot, which writes to the clone (journal replay), leaves the point
#    unchanged.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 missing (contrib/install-deps.sh --test)"
for tool in mkfs.ext4 e2fsck debugfs dumpe2fs; do
	command -v $tool >/dev/null || skip "$tool missing (Debian package e2fsprogs)"
done
FIX=$SOURCE/tests/fixtures
SECONDS_WRITING=${FERRY_GUEST_SECONDS:-30}
BOOT_TIMEOUT=${FERRY_BOOT_TIMEOUT:-120}

cd "$T"
rc=0
"$FIX/mkguest.sh" guest 2>mkguest.err || rc=$?
[ "$rc" = 77 ] && skip "cannot build the guest: $(tail -n 1 mkguest.err)"
[ "$rc" = 0 ] || { cat mkguest.err >&2; fail "mkguest.sh failed"; }
cp guest/os.img os.img
truncate -s 64M data.img
mkfs.ext4 -q -F -L ferrydata data.img

# Logs worth seeing when the test fails.
show() {
	local f
	for f in "$@"; do
		[ -s "$f" ] && { echo "--- $f" >&2; tr -d '\r' <"$f" | tail -n 15 >&2; }
	done
	return 0
}

# ---- the source VM: writes while Ferry replicates it ----
qemu-system-x86_64 -M pc -accel tcg -cpu max -smp 1 -m 256 -nodefaults -no-user-config \
	-display none -monitor none -serial file:"$T/source.log" -no-reboot \
	-qmp unix:"$T/ferry.qmp",server=on,wait=off \
	-kernel guest/vmlinux -initrd guest/initrd.img -append "$(cat guest/append) ferry.mode=write" \
	-blockdev driver=file,node-name=fos,filename="$T/os.img" \
	-blockdev driver=raw,node-name=os0,file=fos -device virtio-blk-pci,drive=os0,id=vda \
	-blockdev driver=file,node-name=fdata,filename="$T/data.img" \
	-blockdev driver=raw,node-name=data0,file=fdata -device virtio-blk-pci,drive=data0,id=vdb \
	2>qemu.err &
qpid=$!
PIDS+=("$qpid")
for i in $(seq $((BOOT_TIMEOUT * 10))); do
	grep -q "FERRY-GUEST: WRITING" source.log 2>/dev/null && break
	kill -0 $qpid 2>/dev/null || { show qemu.err source.log; fail "the source VM ended"; }
	sleep 0.1
done
grep -q "FERRY-GUEST: WRITING" source.log || { show source.log; fail "the guest did not start writing"; }
grep -q "FERRY-GUEST: FAIL" source.log && { show source.log; fail "the guest failed"; }
note "the guest writes (boot $((i / 10)) s)"

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm g1 --tracker qemu --qmp "$T/ferry.qmp" \
	--disk os=os0 --disk data=data0 --crash-interval 0 --cpus 1 --memory 256 >enable.out 2>&1 ||
	fail "enable-replication --tracker qemu: $(cat enable.out)"
"$AGENT" --config vault/agents/g1.conf --interval 2 2>agent.log &
apid=$!
PIDS+=("$apid")
"$REPLICATOR" --vault vault --interval 1 2>replicator.log &
rpid=$!
PIDS+=("$rpid")
sleep "$SECONDS_WRITING"
kill -0 $apid 2>/dev/null || { show agent.log; fail "the agent died"; }
kill -0 $rpid 2>/dev/null || { show replicator.log; fail "the replicator died"; }
kill -0 $qpid 2>/dev/null || { show qemu.err source.log; fail "the source VM died"; }
kill $apid
wait $apid 2>/dev/null || true
kill $rpid
wait $rpid 2>/dev/null || true
# What the agent shipped before it stopped.
"$REPLICATOR" --vault vault --once 2>>replicator.log || { show replicator.log; fail "replicator pass failed"; }
grep -q "FERRY-GUEST: FAIL" source.log && { show source.log; fail "the guest failed"; }
wrote=$(tr -d '\r' <source.log | sed -n 's/^FERRY-GUEST: WROTE //p' | tail -n 1)
kill $qpid
wait $qpid 2>/dev/null || true
note "the guest wrote ${wrote:-under 50} files in ${SECONDS_WRITING} s of replication"

# check_seq IMAGE (guest-seq.sh): sets K (files present) and C (complete).
. "$(dirname "$0")/guest-seq.sh"

# ---- every point: crash-consistent, a prefix of the sequence ----
mapfile -t points < <(points_of vault g1)
n=${#points[@]}
note "$n recovery points"
[ "$n" -ge 4 ] || { show agent.log replicator.log; fail "expected at least 4 recovery points in ${SECONDS_WRITING} s, got $n"; }
mount_vault vault mnt
replays=0
prev=0
ks=()
for p in "${points[@]}"; do
	check_seq "mnt/g1/recovery-points/$p/data.img"
	[ "$C" -ge "$prev" ] || fail "point $p holds $C complete files, an earlier point $prev"
	prev=$C
	ks+=("$K/$C")
done
note "files (present/complete) per point: ${ks[*]}"
note "$replays of $n points needed a journal replay (crash-consistent, not clean)"
check_seq data.img
cend=$C
note "the source disk at the end: $K files"

# ---- the failover of a point from the middle ----
mid=$((n / 2))
p=${points[$mid]}
check_seq "mnt/g1/recovery-points/$p/data.img"
kp=$K cpt=$C
[ "$cpt" -lt "$cend" ] || fail "point $p ($cpt files) was not cut while the guest was writing ($cend at the end)"
cp --sparse=always "mnt/g1/recovery-points/$p/data.img" point-data.img
cp --sparse=always "mnt/g1/recovery-points/$p/os.img" point-os.img
unmount_vault mnt

name=$("$FERRY" test-failover --vault vault g1 --recovery-point "$p" --name t1 --accel tcg 2>tf.err) ||
	{ cat tf.err >&2; fail "test-failover failed"; }
[ "$name" = t1 ] || fail "test-failover printed '$name'"
mount_vault vault mnt
CL=mnt/g1/failovers/t1
abs=$(realpath mnt)/g1/failovers/t1
cmp "$CL/data.img" point-data.img || fail "the clone's data disk does not start as point $p"
cmp "$CL/os.img" point-os.img || fail "the clone's root disk does not start as point $p"
check_seq "$CL/data.img"
[ "$K $C" = "$kp $cpt" ] || fail "the clone holds $K/$C files, its point $kp/$cpt"
note "point $p (of $n; $kp files, $cpt complete): crash-consistent, the sequence's prefix"

# The generated command line names the clones, root disk first (the guest's
# /dev/vda); the boot adds the guest's kernel and the mode that verifies.
args=$(cat "$CL/qemu.args")
case "$args" in
*"file=$abs/os.img,"*"file=$abs/data.img,"*) ;;
*) fail "qemu.args does not name the clones $abs/os.img then $abs/data.img: $args" ;;
esac
grep -q -- "-accel tcg" "$CL/qemu.args" || fail "qemu.args does not use -accel tcg"
note "qemu.args: $args"
# cache=none (O_DIRECT) fails on FUSE file systems that refuse O_DIRECT:
# the clones are booted with cache=writeback.
args=${args//cache=none/cache=writeback}
guestdir=$(realpath guest)
args+=" -kernel $guestdir/vmlinux -initrd $guestdir/initrd.img"
args+=" -append '$(cat guest/append) ferry.mode=verify' -no-reboot"
t0=$SECONDS
rc=0
timeout -k 5 "$BOOT_TIMEOUT" sh -c "$args" </dev/null >failover.log 2>&1 || rc=$?
[ "$rc" = 0 ] || { show failover.log; fail "the failover VM did not power off (exit $rc)"; }
grep -q "FERRY-GUEST: FAIL" failover.log && { show failover.log; fail "the guest found the failover's files wrong"; }
got=$(tr -d '\r' <failover.log | sed -n 's/^FERRY-GUEST-OK //p')
[ -n "$got" ] || { show failover.log; fail "the failover guest printed no FERRY-GUEST-OK"; }
[ "$got" = "$kp complete $cpt" ] || fail "the guest found '$got', the host '$kp complete $cpt'"
note "the failover booted in $((SECONDS - t0)) s and its guest found its files: FERRY-GUEST-OK $got"

cmp "mnt/g1/recovery-points/$p/data.img" point-data.img || fail "booting the clone changed point $p"
cmp -s "$CL/data.img" point-data.img && fail "the guest's journal replay did not reach the clone"
unmount_vault mnt
"$FERRY" test-failover-cleanup --vault vault g1 --name t1 >/dev/null 2>&1 ||
	fail "test-failover-cleanup failed"
exit 0
