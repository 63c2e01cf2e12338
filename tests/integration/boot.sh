#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A real boot of a failed-over image. A small self-booting disk (Debian's
# kernel, busybox, /marker.txt) is replicated with marker "point-one", then
# with "point-two"; a test failover of the FIRST point must boot under qemu
# (TCG) from its clone in a ferryfs mount, using nothing but the qemu.args
# ferryfs generated, and print "point-one", not "point-two". domain.xml must
# pass libvirt's virt-xml-validate, and the boot, which writes to the clone,
# must leave the recovery point unchanged.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 missing (contrib/install-deps.sh --test)"
"$FERRY" test-failover --help >/dev/null 2>&1 || skip "ferry test-failover is not built yet"
FIX=$SOURCE/tests/fixtures
BOOT_TIMEOUT=${FERRY_BOOT_TIMEOUT:-300}

cd "$T"
rc=0
"$FIX/mkboot.sh" fixture point-one 2>mkboot.err || rc=$?
[ "$rc" = 77 ] && skip "cannot build the boot disk: $(tail -n 1 mkboot.err)"
[ "$rc" = 0 ] || { cat mkboot.err >&2; fail "mkboot.sh failed"; }
cp --sparse=always fixture/disk.img os.img

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --disk os=os.img --crash-interval 0 \
	--cpus 1 --memory 256 --nic mac=52:54:00:12:34:56,ip=10.0.0.5/24 >/dev/null ||
	fail "enable-replication failed"
cycle vault vm1 2>/dev/null
cp --sparse=always os.img os.p1
"$FIX/set-marker.sh" os.img point-two || fail "set-marker.sh failed"
cycle vault vm1 2>/dev/null
mapfile -t points < <(points_of vault vm1)
[ "${#points[@]}" -eq 2 ] || fail "expected 2 recovery points, got ${#points[@]}"
p1=${points[0]}

name=$("$FERRY" test-failover --vault vault vm1 --recovery-point "$p1" --name drill \
	--accel tcg 2>tf.err) || { cat tf.err >&2; fail "test-failover failed"; }
[ "$name" = drill ] || fail "test-failover printed '$name'"

mount_vault vault mnt
C=mnt/vm1/failovers/drill
abs=$(realpath mnt)/vm1/failovers/drill
[ -f "$C/os.img" ] && [ -s "$C/qemu.args" ] && [ -s "$C/domain.xml" ] ||
	fail "clone files missing: $(ls "$C" 2>&1)"
cmp "$C/os.img" os.p1 || fail "the clone does not start as point $p1"

# The definitions: one command line naming the clone by its absolute path,
# TCG as asked; a domain libvirt's schema accepts, with the failover recorded.
[ "$(wc -l <"$C/qemu.args")" -eq 1 ] || fail "qemu.args is not one line: $(cat "$C/qemu.args")"
grep -q "file=$abs/os.img," "$C/qemu.args" || fail "qemu.args does not name $abs/os.img"
grep -q -- "-accel tcg" "$C/qemu.args" || fail "qemu.args does not use -accel tcg"
grep -q -- "-accel kvm" "$C/qemu.args" && fail "qemu.args asks for kvm after --accel tcg"
grep -q "<source file='$abs/os.img'>" "$C/domain.xml" || fail "domain.xml does not name the clone"
grep -q "<seclabel model='dac' relabel='no'/>" "$C/domain.xml" ||
	fail "domain.xml lets libvirt chown the clone images"
grep -q "xmlns:ferry='urn:ferry:vm:1'" "$C/domain.xml" || fail "domain.xml has no ferry metadata"
grep -q "<ferry:recovery-point>$p1</ferry:recovery-point>" "$C/domain.xml" ||
	fail "domain.xml does not record point $p1"
grep -q "<mac address='52:54:00:12:34:56'/>" "$C/domain.xml" || fail "domain.xml lost the MAC"
grep -q "<memory unit='MiB'>256</memory>" "$C/domain.xml" || fail "domain.xml memory"
if command -v virt-xml-validate >/dev/null; then
	virt-xml-validate "$C/domain.xml" domain >validate.out 2>&1 ||
		{ cat validate.out >&2; fail "virt-xml-validate rejects domain.xml"; }
	note "domain.xml passes virt-xml-validate"
else
	note "virt-xml-validate missing (libvirt-clients): domain.xml not validated"
fi
note "qemu.args: $(cat "$C/qemu.args")"

# The boot: exactly the generated command line (boot-check.sh appends only
# -no-reboot), with cache=none on the FUSE-served clone.
cp "$C/qemu.args" drill.args
"$FIX/boot-check.sh" drill.args point-one "$BOOT_TIMEOUT" "$T/serial.log" ||
	fail "the clone of $p1 did not boot to its marker"
grep -q "point-two" serial.log && fail "the clone of the old point shows the newer marker"
note "$(grep -m1 'FERRY-BOOT: MARKER' serial.log | tr -d '\r')"

# The guest mounted its root read-write and wrote to the clone; the point
# stays as it was.
cmp -s "$C/os.img" os.p1 && note "(the guest left the clone byte-identical)"
cmp mnt/vm1/recovery-points/"$p1"/os.img os.p1 || fail "booting the clone changed point $p1"
"$FERRY" test-failover-cleanup --vault vault vm1 --name drill >/dev/null 2>&1 ||
	fail "test-failover-cleanup failed"
exit 0
