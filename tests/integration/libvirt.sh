#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# A libvirt-managed VM replicated with the libvirt tracker, failed over and
# booted by libvirt (issue 15).
#
# A real libvirtd (Debian's libvirt-daemon-system; started here when none
# runs, and stopped again at the end) runs a TCG domain (<domain
# type='qemu'>) that boots the test guest (tests/fixtures/mkguest.sh) from
# qcow2 disks and writes a verifiable, fsynced file sequence. Then:
#  - a domain with a raw disk is refused, by enable-replication and by the
#    agent, with an error that names the disk and says why;
#  - `ferry enable-replication --libvirt-domain` takes the disks (named by
#    their targets), CPUs, memory and NIC from the domain;
#  - the agent and the replicator run as daemons while the guest writes;
#    every point holds a prefix of the sequence, and the domain never holds
#    more than two Ferry checkpoints (one between cycles): `virsh
#    checkpoint-list` and the qcow2's own bitmaps (qemu-img info) agree;
#  - an agent SIGKILLed mid-run leaves checkpoints and a backup job that the
#    next agent reconciles (one checkpoint left, no job);
#  - the latest point is test-failed-over; ferryfs is mounted so that
#    libvirt's qemu (user libvirt-qemu) may use the clones and nobody else
#    (-o allow_other,gid=<libvirt-qemu>,umask=007); the failover's
#    domain.xml, with the guest's kernel and its verify mode added, is
#    `virsh define`d and `virsh start`ed (cache='none': O_DIRECT on
#    ferryfs), the guest boots and finds the sequence the host found in
#    the point (FERRY-GUEST-OK), and libvirt did not chown the clones;
#  - test-failover-cleanup undefines the failover's domain (and tolerates a
#    failover that was never defined);
#  - a domain with a guest agent channel, whose guest runs qemu-ga with a
#    database's fsfreeze hook (ferry.mode=app), gets an app-consistent
#    point: libvirt froze the guest around the backup's start (the hook
#    says FREEZE and THAW), and the point's file system holds the hook's
#    freeze-1 and no thaw-1, and needs no journal replay.
. "$(dirname "$0")/lib.sh"
need_fuse
[ "$(id -u)" = 0 ] || skip "needs root: it starts libvirtd and uses qemu:///system"
for tool in virsh libvirtd virtlogd qemu-system-x86_64 qemu-img; do
	command -v $tool >/dev/null ||
		skip "$tool missing (contrib/install-deps.sh --test: libvirt-daemon-system, libvirt-clients, qemu)"
done
for tool in mkfs.ext4 e2fsck debugfs dumpe2fs python3; do
	command -v $tool >/dev/null || skip "$tool missing (e2fsprogs, python3)"
done
getent passwd libvirt-qemu >/dev/null || skip "no user libvirt-qemu (Debian's libvirt-daemon-system)"
FIX=$SOURCE/tests/fixtures
SECONDS_WRITING=${FERRY_GUEST_SECONDS:-20}
BOOT_TIMEOUT=${FERRY_BOOT_TIMEOUT:-120}
URI=qemu:///system
V() { virsh -q -c "$URI" "$@"; }
DOM=ferry-it-$$      # the source domain
RAW=ferry-it-raw-$$  # a domain with a raw disk
APP=ferry-it-app-$$  # a domain whose guest runs qemu-ga
NET=default-ferry-test # the test failover's network
FO=g1-t1             # the failover's domain (vmdef.h: VM-NAME)

# ---- libvirtd, started by hand when none runs ----
STARTED=()
lv_cleanup() {
	local d p
	for d in "$FO" "$DOM" "$RAW" "$APP"; do
		V destroy "$d" >/dev/null 2>&1 || true
		V undefine --checkpoints-metadata "$d" >/dev/null 2>&1 || true
	done
	V net-destroy "$NET" >/dev/null 2>&1 || true
	# Only what this test started, by the pid it wrote.
	for p in "${STARTED[@]}"; do
		[ -s "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
	done
	return 0
}
trap 'lv_cleanup; cleanup' EXIT
# Runtime directories are libvirt's own (/run/libvirt, /var/lib/libvirt):
# qemu:///system has no option to move them. The pid files are the test's.
if ! V version >/dev/null 2>&1; then
	if ! pgrep -x virtlogd >/dev/null; then
		virtlogd -d --pid-file "$T/virtlogd.pid" || skip "virtlogd does not start"
		STARTED+=("$T/virtlogd.pid")
	fi
	if ! pgrep -x libvirtd >/dev/null; then
		libvirtd -d --pid-file "$T/libvirtd.pid" || skip "libvirtd does not start"
		STARTED+=("$T/libvirtd.pid")
	fi
	for i in $(seq 100); do
		V version >/dev/null 2>&1 && break
		sleep 0.1
	done
	V version >/dev/null 2>&1 || skip "libvirtd does not answer at $URI: $(V version 2>&1 | tail -n 1)"
	note "started libvirtd for the test"
fi

show() {
	local f
	for f in "$@"; do
		[ -s "$f" ] && { echo "--- $f" >&2; tr -d '\r' <"$f" | tail -n 20 >&2; }
	done
	return 0
}

# libvirt's qemu runs as libvirt-qemu: everything it opens must be reachable.
chmod 711 "$T"
cd "$T"
rc=0
"$FIX/mkguest.sh" guest 2>mkguest.err || rc=$?
[ "$rc" = 77 ] && skip "cannot build the guest: $(tail -n 1 mkguest.err)"
[ "$rc" = 0 ] || { cat mkguest.err >&2; fail "mkguest.sh failed"; }
mkdir -m 755 dom
cp -L guest/vmlinux guest/initrd.img dom/
qemu-img convert -O qcow2 guest/os.img dom/os.qcow2
truncate -s 64M data.img
mkfs.ext4 -q -F -L ferrydata data.img
qemu-img convert -O qcow2 data.img dom/data.qcow2
rm data.img
APPEND=$(cat guest/append)

# domain_xml NAME MODE FORMAT OS DATA LOG: a TCG domain booting the guest.
domain_xml() {
	cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$T/dom/vmlinux</kernel>
    <initrd>$T/dom/initrd.img</initrd>
    <cmdline>$APPEND ferry.mode=$2</cmdline>
  </os>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='$3'/>
      <source file='$4'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='$3'/>
      <source file='$5'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:fe:12:34'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$6'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
  </devices>
</domain>
EOF
}

"$FERRY" init --vault vault >/dev/null

# ---- a raw disk is refused, by name and with the reason ----
cp guest/os.img dom/raw-os.img
truncate -s 16M dom/raw-data.img
domain_xml "$RAW" write raw "$T/dom/raw-os.img" "$T/dom/raw-data.img" "$T/dom/raw.log" >raw.xml
V define raw.xml >/dev/null || fail "virsh define of the raw domain failed"
must_fail "$FERRY" enable-replication --vault vault --vm raw1 --libvirt-domain "$RAW" --connect "$URI"
grep -q "disk vda (target vda, $T/dom/raw-os.img) of domain $RAW is raw, not qcow2" must_fail.out ||
	fail "the raw disk's refusal does not name it and say why: $(cat must_fail.out)"
grep -q "qcow2 disks only" must_fail.out || fail "the refusal does not say why: $(cat must_fail.out)"
note "enable-replication refuses a raw disk: $(grep -o 'disk vda.*not qcow2' must_fail.out)"
must_fail "$FERRY" show --vault vault raw1
# An agent configured by hand meets the same refusal at its first cycle
# (the domain runs paused: no guest needed).
V start --paused "$RAW" >/dev/null || fail "virsh start of the raw domain failed"
mkdir -p rawcache
cat >raw.conf <<EOF
[agent]
version = 1
vm = raw1
cache = $T/rawcache
state = $T/raw.state
tracker = libvirt
domain = $RAW
run-dir = $T/rawrun

[disk]
name = os
target = vda
EOF
must_fail "$AGENT" --config raw.conf --once
grep -q "disk os (target vda, $T/dom/raw-os.img) of domain $RAW is raw, not qcow2" must_fail.out ||
	fail "the agent's refusal of a raw disk: $(cat must_fail.out)"
V checkpoint-list --name "$RAW" | grep -q . && fail "a checkpoint was made of the raw domain"
V destroy "$RAW" >/dev/null
note "the agent refuses it too, and makes no checkpoint"

# ---- the source domain: writes while Ferry replicates it ----
domain_xml "$DOM" write qcow2 "$T/dom/os.qcow2" "$T/dom/data.qcow2" "$T/dom/source.log" >dom.xml
V define dom.xml >/dev/null || fail "virsh define failed"
V start "$DOM" >/dev/null || fail "virsh start failed"
for i in $(seq $((BOOT_TIMEOUT * 10))); do
	grep -q "FERRY-GUEST: WRITING" dom/source.log 2>/dev/null && break
	[ "$(V domstate "$DOM")" = running ] || { show dom/source.log; fail "the source domain ended"; }
	sleep 0.1
done
grep -q "FERRY-GUEST: WRITING" dom/source.log || { show dom/source.log; fail "the guest did not start writing"; }
note "the guest writes (boot $((i / 10)) s)"

"$FERRY" enable-replication --vault vault --vm g1 --libvirt-domain "$DOM" --connect "$URI" \
	--run-dir "$T/run" --crash-interval 0 --interval 2 >enable.out 2>&1 ||
	fail "enable-replication --libvirt-domain: $(cat enable.out)"
conf=vault/agents/g1.conf
grep -qx "tracker = libvirt" $conf && grep -qx "domain = $DOM" $conf &&
	grep -qx "connect = $URI" $conf || fail "agent configuration: $(cat $conf)"
[ "$(grep -c '^target = ' $conf)" = 2 ] && [ "$(grep -c '^target = vd[ab]$' $conf)" = 2 ] ||
	fail "the disks are not vda and vdb (the cdrom left out): $(cat $conf)"
"$FERRY" show --vault vault g1 >show.out
for want in "vm-cpus *1$" "vm-memory-mib *256$" "nic.0 *mac=52:54:00:fe:12:34,model=virtio$" \
	"tracker *libvirt$" "libvirt-domain *$DOM$" "vda .* vda$" "vdb .* vdb$"; do
	grep -q "$want" show.out || fail "ferry show lacks '$want': $(cat show.out)"
done
note "enable-replication took disks vda, vdb (not the cdrom), 1 CPU, 256 MiB and the NIC from the domain"

# Ferry's checkpoints of the domain as libvirt lists them; the most dirty
# bitmaps of Ferry's that qemu holds on one disk (asked through libvirt's
# monitor passthrough, which marks the domain tainted: a test may); and,
# with qemu stopped, those stored in a qcow2 file (qemu stores a
# persistent bitmap in the file when it closes the image).
checkpoints() { V checkpoint-list --name "$DOM" | grep -c '^ferry-g1-' || true; }
qemu_bitmaps() {
	V qemu-monitor-command "$DOM" '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}' |
		python3 -c '
import json, sys
nodes = json.load(sys.stdin)["return"]
print(max([sum(1 for b in n.get("dirty-bitmaps", []) if b.get("name", "").startswith("ferry-g1-"))
           for n in nodes if n["drv"] == "qcow2"] or [0]))'
}
file_bitmaps() { # QCOW2
	qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin).get("format-specific", {}).get("data", {})
print(sum(1 for b in d.get("bitmaps", []) if b["name"].startswith("ferry-g1-")))'
}

"$AGENT" --config $conf 2>agent.log &
apid=$!
PIDS+=("$apid")
"$REPLICATOR" --vault vault --interval 1 2>replicator.log &
rpid=$!
PIDS+=("$rpid")
maxc=0 maxb=0
end=$((SECONDS + SECONDS_WRITING))
while [ $SECONDS -lt $end ]; do
	sleep 1
	kill -0 $apid 2>/dev/null || { show agent.log; fail "the agent died"; }
	c=$(checkpoints) b=$(qemu_bitmaps)
	[ "$c" -gt "$maxc" ] && maxc=$c
	[ "$b" -gt "$maxb" ] && maxb=$b
done
kill -0 $rpid 2>/dev/null || { show replicator.log; fail "the replicator died"; }
"$FERRY" status --vault vault >status.out 2>&1
grep -q "libvirt tracker" status.out || fail "ferry status does not name the libvirt tracker: $(cat status.out)"
cycles=$(grep -c "cycle .* done" agent.log || true)
[ "$cycles" -ge 5 ] || { show agent.log; fail "only $cycles cycles in ${SECONDS_WRITING} s"; }
[ "$maxc" -le 2 ] || fail "up to $maxc checkpoints of Ferry at once (at most 2: the base and the next)"
[ "$maxb" -le 2 ] || fail "up to $maxb Ferry bitmaps on a disk in qemu at once (at most 2)"
kill $apid
wait $apid 2>/dev/null || true
[ "$(checkpoints)" = 1 ] || fail "$(checkpoints) checkpoints after the agent stopped, not 1: $(V checkpoint-list "$DOM")"
[ "$(qemu_bitmaps)" = 1 ] || fail "qemu holds $(qemu_bitmaps) Ferry bitmaps on a disk, not 1"
ls run | grep -q . && fail "the run directory keeps files: $(ls run)"
[ "$(stat -c %U run)" = libvirt-qemu ] && [ "$(stat -c %a run)" = 700 ] ||
	fail "the run directory is $(stat -c '%U %a' run), not libvirt-qemu's alone"
grep -q "scanned 0 bytes" agent.log && [ "$(grep -c 'scanned [1-9]' agent.log)" -lt 2 ] &&
	fail "the cycles read nothing while the guest wrote"
note "$cycles cycles; at most $maxc checkpoints and $maxb bitmaps per disk at once, 1 after"

# ---- an agent killed mid-run: the next one reconciles ----
"$AGENT" --config $conf 2>agent2.log &
kpid=$!
# Killed while its backup job runs, if the cycles let us see one.
for i in $(seq 200); do
	V domjobinfo "$DOM" 2>/dev/null | grep -q "Operation: *Backup" && break
	sleep 0.05
done
kill -9 $kpid
wait $kpid 2>/dev/null || true
note "SIGKILLed an agent with $(checkpoints) checkpoint(s) and job '$(V domjobinfo "$DOM" | awk -F': *' '/Operation/ {print $2}')'"
"$AGENT" --config $conf --once 2>agent3.log || { show agent3.log; fail "the agent after a SIGKILL failed"; }
[ "$(checkpoints)" = 1 ] || fail "$(checkpoints) checkpoints after the reconciling cycle: $(V checkpoint-list "$DOM")"
V domjobinfo "$DOM" | grep -q "Job type: *None" || fail "a job is left: $(V domjobinfo "$DOM")"
kill $rpid
wait $rpid 2>/dev/null || true
"$REPLICATOR" --vault vault --once 2>>replicator.log || { show replicator.log; fail "replicator pass failed"; }
grep -q "FERRY-GUEST: FAIL" dom/source.log && { show dom/source.log; fail "the guest failed"; }
note "the next agent reconciled: one checkpoint, no job"

# ---- every point: a prefix of the sequence ----
. "$(dirname "$0")/guest-seq.sh"
mapfile -t points < <(points_of vault g1)
n=${#points[@]}
[ "$n" -ge 4 ] || { show agent.log replicator.log; fail "expected at least 4 recovery points, got $n"; }
mount_vault vault mnt
prev=0 ks=()
for p in "${points[@]}"; do
	check_seq "mnt/g1/recovery-points/$p/vdb.img"
	[ "$C" -ge "$prev" ] || fail "point $p holds $C complete files, an earlier point $prev"
	prev=$C
	ks+=("$K")
done
p=${points[$((n - 1))]}
check_seq "mnt/g1/recovery-points/$p/vdb.img"
kp=$K cpt=$C
[ "$cpt" -ge 1 ] || fail "the latest point holds no complete file"
unmount_vault mnt
note "$n points, files per point: ${ks[*]}; the latest ($p) holds $kp"

# ---- test failover of the latest point, defined and started by libvirt ----
name=$("$FERRY" test-failover --vault vault g1 --recovery-point latest --name t1 --accel tcg 2>tf.err) ||
	{ cat tf.err >&2; fail "test-failover failed"; }
[ "$name" = t1 ] || fail "test-failover printed '$name'"
# libvirt's qemu (group libvirt-qemu) may use the clones, others not.
qgid=$(getent group libvirt-qemu | cut -d: -f3)
mount_vault_detached vault "$T/fomnt" -o "allow_other,gid=$qgid,umask=007"
CL=$T/fomnt/g1/failovers/t1
[ "$(stat -c '%g %a' "$CL/vdb.img")" = "$qgid 660" ] ||
	fail "the clone is $(stat -c '%U:%G %a' "$CL/vdb.img"), not rw for group libvirt-qemu only"
su -s /bin/sh nobody -c "cat '$CL/vdb.img' >/dev/null" 2>/dev/null &&
	fail "nobody may read the clone"
grep -q "cache='none'" "$CL/domain.xml" || fail "domain.xml does not use cache='none'"
grep -q "<seclabel model='dac' relabel='no'/>" "$CL/domain.xml" || fail "domain.xml lets libvirt chown"
grep -q "<source network='$NET'/>" "$CL/domain.xml" || fail "the NIC is not on $NET: $(cat "$CL/domain.xml")"
# The guest's kernel in its verify mode, and the console into a file: the
# rest of domain.xml is as ferryfs made it.
python3 - "$CL/domain.xml" fo.xml "$T/dom" "$APPEND ferry.mode=verify" "$T/dom/failover.log" <<'PY'
import sys
src, dst, d, cmdline, log = sys.argv[1:]
x = open(src).read()
os_end = "hvm</type>\n  </os>"
assert os_end in x, "no <os> to add the kernel to"
x = x.replace(os_end, "hvm</type>\n    <kernel>%s/vmlinux</kernel>\n    <initrd>%s/initrd.img</initrd>\n"
              "    <cmdline>%s</cmdline>\n  </os>" % (d, d, cmdline))
a, b = x.index("    <serial type='pty'>"), x.index("    </console>\n") + len("    </console>\n")
x = x[:a] + "    <serial type='file'>\n      <source path='%s'/>\n      <target port='0'/>\n    </serial>\n" % log + x[b:]
x = x.replace("<on_reboot>restart</on_reboot>", "<on_reboot>destroy</on_reboot>")
open(dst, "w").write(x)
PY
# The test failover's isolated network, as the target site would have it.
cat >net.xml <<EOF
<network><name>$NET</name><bridge name='virbrfy$((RANDOM % 1000))' stp='off'/></network>
EOF
V net-create net.xml >/dev/null || fail "cannot create network $NET"
V define fo.xml >/dev/null 2>define.err || fail "virsh define of the failover: $(cat define.err)"
t0=$SECONDS
V start "$FO" >/dev/null 2>start.err || fail "virsh start of the failover: $(cat start.err)"
while [ "$(V domstate "$FO" 2>/dev/null)" = running ] && [ $((SECONDS - t0)) -lt "$BOOT_TIMEOUT" ]; do
	sleep 0.5
done
[ "$(V domstate "$FO")" = "shut off" ] || { show dom/failover.log; fail "the failover did not power off"; }
grep -q "FERRY-GUEST: FAIL" dom/failover.log && { show dom/failover.log; fail "the guest found the failover's files wrong"; }
got=$(tr -d '\r' <dom/failover.log | sed -n 's/^FERRY-GUEST-OK //p')
[ -n "$got" ] || { show dom/failover.log; fail "the failover guest printed no FERRY-GUEST-OK"; }
[ "$got" = "$kp complete $cpt" ] || fail "the guest found '$got', the host '$kp complete $cpt'"
[ "$(stat -c %g "$CL/vdb.img")" = "$qgid" ] || fail "libvirt changed the clone's owner"
note "libvirt defined and started the failover (cache=none on ferryfs) in $((SECONDS - t0)) s: FERRY-GUEST-OK $got"

# ---- cleanup undefines the failover's domain ----
"$FERRY" test-failover-cleanup --vault vault g1 --name t1 2>cleanup.err ||
	fail "test-failover-cleanup failed: $(cat cleanup.err)"
grep -q "domain $FO .* undefined" cleanup.err || fail "cleanup did not say it undefined $FO: $(cat cleanup.err)"
V dominfo "$FO" >/dev/null 2>&1 && fail "domain $FO is still defined after cleanup"
# A test failover nobody defined: cleanup has nothing to undefine.
"$FERRY" test-failover --vault vault g1 --name t2 --accel tcg >/dev/null 2>&1 || fail "second test-failover"
"$FERRY" test-failover-cleanup --vault vault g1 --name t2 2>cleanup2.err ||
	fail "cleanup of an undefined test failover: $(cat cleanup2.err)"
V checkpoint-list --name "$DOM" | grep -q "^ferry-g1-" || fail "the source lost its checkpoint"
# qemu stores its persistent bitmaps in the files when it closes them.
V destroy --graceful "$DOM" >/dev/null || fail "cannot stop the source domain"
[ "$(file_bitmaps dom/data.qcow2)" = 1 ] && [ "$(file_bitmaps dom/os.qcow2)" = 1 ] ||
	fail "the qcow2 files hold $(file_bitmaps dom/os.qcow2) and $(file_bitmaps dom/data.qcow2) Ferry bitmaps, not 1"
note "test-failover-cleanup undefined $FO; a failover never defined cleans up too"
note "the stopped source's qcow2 files hold one Ferry bitmap each"

# ---- app-consistent: libvirt freezes the guest around the backup's start ----
[ -e guest/has-qga ] || { note "SKIP app-consistent part: no qemu-ga in the guest (Debian's qemu-guest-agent)"; exit 0; }
qemu-img convert -O qcow2 guest/os.img dom/app-os.qcow2
truncate -s 64M app-data.img
mkfs.ext4 -q -F -L ferrydata app-data.img
qemu-img convert -O qcow2 app-data.img dom/app-data.qcow2
domain_xml "$APP" app qcow2 "$T/dom/app-os.qcow2" "$T/dom/app-data.qcow2" "$T/dom/app.log" >app.xml
V define app.xml >/dev/null && V start "$APP" >/dev/null || fail "cannot start domain $APP"
for i in $(seq $((BOOT_TIMEOUT * 5))); do
	V qemu-agent-command "$APP" '{"execute": "guest-ping"}' >/dev/null 2>&1 && break
	grep -q "FERRY-GUEST: FAIL" dom/app.log 2>/dev/null && { show dom/app.log; fail "the app guest failed"; }
	sleep 0.2
done
V qemu-agent-command "$APP" '{"execute": "guest-ping"}' >/dev/null 2>&1 ||
	{ show dom/app.log; fail "the guest agent of $APP does not answer"; }
"$FERRY" enable-replication --vault vault --vm a1 --libvirt-domain "$APP" --run-dir "$T/run-a1" \
	--crash-interval 0 --app-interval 60 >enable-a1.out 2>&1 || fail "enable-replication a1: $(cat enable-a1.out)"
grep -qx "app-interval = 60" vault/agents/a1.conf || fail "no app-interval: $(cat vault/agents/a1.conf)"
# The first cycle of an agent is due an app-consistent cut.
"$AGENT" --config vault/agents/a1.conf --once 2>agent-a1.log || { show agent-a1.log; fail "agent a1 failed"; }
"$REPLICATOR" --vault vault --once 2>>replicator.log || { show replicator.log; fail "replicator pass failed"; }
grep -q "app-consistent cut" agent-a1.log || { show agent-a1.log; fail "the agent made no app-consistent cut"; }
p=$(points_of vault a1 | tail -n 1)
"$FERRY" recovery-points --vault vault a1 | grep -q "^$p *app " ||
	fail "point $p is not app-consistent: $("$FERRY" recovery-points --vault vault a1)"
grep -q "FERRY-GUEST: FREEZE 1 " dom/app.log && grep -q "FERRY-GUEST: THAW 1" dom/app.log ||
	{ show dom/app.log; fail "the guest's hook saw no freeze and thaw"; }
mount_vault vault mnt
cp --sparse=always "mnt/a1/recovery-points/$p/vdb.img" app-point.img
unmount_vault mnt
dumpe2fs -h app-point.img 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery' &&
	fail "the app-consistent point's file system needs a journal replay"
e2fsck -fn app-point.img >app.fsck 2>&1 || { cat app.fsck >&2; fail "the app-consistent point fails e2fsck -fn"; }
hook=$(debugfs -R "ls -l /hook" app-point.img 2>/dev/null)
grep -q " freeze-1$" <<<"$hook" && ! grep -q " thaw-1$" <<<"$hook" ||
	fail "the point should hold freeze-1 and not thaw-1: $hook"
note "app-consistent point $p: frozen through libvirt, clean file system, the hook's freeze-1 and no thaw-1"
exit 0
