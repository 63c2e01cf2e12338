#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Two VMs in one consistency group, each with its own agent (issue 14, 2-3).
#
# Two qemu-system-x86_64 guests (TCG) serve writes on their serial consoles
# (tests/fixtures/guest-init.sh, ferry.mode=serve): the host asks A to write
# mark 1, waits until A answers that it is on its disk, asks B for mark 2,
# then A for 3, and so on: one global order, each write complete before the
# next begins. Ferry replicates both, A and B in group "app" with a round
# every few seconds, and ordinary crash cycles in between. Then:
#  - every group point: the marks on A's disk and on B's disk together are
#    exactly 1..m for some m (a prefix of the order), and each VM holds only
#    its own marks;
#  - without the group, pairs of the VMs' own points (each VM's newest point
#    at some instant) show why the group is needed: a pair that is not a
#    prefix, when the replication found one;
#  - a group test failover of one group point makes clones of both VMs at
#    it; both boot and read back exactly the marks of the point; the group
#    cleanup removes both;
#  - an agent killed while its VM is paused for a round: the watchdog
#    resumes the VM within the pause limit.
. "$(dirname "$0")/lib.sh"
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
need_fuse
command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 missing (contrib/install-deps.sh --test)"
FIX=$SOURCE/tests/fixtures
SECONDS_WRITING=${FERRY_GROUP_SECONDS:-25}
BOOT_TIMEOUT=${FERRY_BOOT_TIMEOUT:-120}
QMP=$SOURCE/tests/integration/qmp.py

cd "$T"
rc=0
"$FIX/mkguest.sh" guest 2>mkguest.err || rc=$?
[ "$rc" = 77 ] && skip "cannot build the guest: $(tail -n 1 mkguest.err)"
[ "$rc" = 0 ] || { cat mkguest.err >&2; fail "mkguest.sh failed"; }

show() {
	local f
	for f in "$@"; do
		[ -s "$f" ] && { echo "--- $f" >&2; tr -d '\r' <"$f" | tail -n 20 >&2; }
	done
	return 0
}

# boot_vm NAME MODE-ARGS: a guest with its root disk NAME-os.img and its raw
# data disk NAME-data.img, a QMP monitor for Ferry (NAME.qmp), one for the
# test (NAME.tqmp), and its serial console on the socket NAME.serial.
boot_vm() {
	local vm=$1 append=$2
	qemu-system-x86_64 -M pc -accel tcg -cpu max -smp 1 -m 192 -nodefaults -no-user-config \
		-display none -monitor none -no-reboot \
		-chardev socket,id=con,path="$T/$vm.serial",server=on,wait=off,logfile="$T/$vm.log" \
		-serial chardev:con \
		-qmp unix:"$T/$vm.qmp",server=on,wait=off -qmp unix:"$T/$vm.tqmp",server=on,wait=off \
		-kernel guest/vmlinux -initrd guest/initrd.img -append "$(cat guest/append) $append" \
		-blockdev driver=file,node-name=fos,filename="$T/$vm-os.img" \
		-blockdev driver=raw,node-name=os0,file=fos -device virtio-blk-pci,drive=os0 \
		-blockdev driver=file,node-name=fdata,filename="$T/$vm-data.img" \
		-blockdev driver=raw,node-name=data0,file=fdata -device virtio-blk-pci,drive=data0 \
		2>"$vm.qemu.err" &
	PIDS+=($!)
	eval "qpid_$vm=$!"
}

for vm in a b; do
	cp guest/os.img $vm-os.img
	truncate -s 16M $vm-data.img
	boot_vm $vm ferry.mode=serve
done

# The driver: marks 1, 2, 3... alternately on a and b, each answered before
# the next is asked for; "N VM" per answered write in order.log.
cat >driver.py <<'PY'
import socket, sys, time
seconds, boot = float(sys.argv[1]), float(sys.argv[2])
def connect(path):
    end = time.time() + 30
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.1)
vms = {v: connect(v + ".serial") for v in ("a", "b")}
bufs = {v: b"" for v in vms}
def wait_for(v, text, timeout):
    end = time.time() + timeout
    while text not in bufs[v]:
        vms[v].settimeout(max(end - time.time(), 0.01))
        try:
            chunk = vms[v].recv(4096)
        except socket.timeout:
            sys.exit("driver: %s did not say %r in %d s" % (v, text, timeout))
        if not chunk:
            sys.exit("driver: %s closed its console" % v)
        bufs[v] += chunk
    bufs[v] = bufs[v][bufs[v].index(text) + len(text):]
for v in vms:
    wait_for(v, b"FERRY-GUEST: SERVING", boot)
print("serving", flush=True)
end = time.time() + seconds
n = 0
with open("order.log", "w") as log:
    while time.time() < end and n < 4000:
        n += 1
        v = "a" if n % 2 else "b"
        vms[v].sendall(b"w %d\n" % n)
        wait_for(v, b"FERRY-OK %d\r" % n, 30)
        log.write("%d %s\n" % (n, v))
        log.flush()
print(n, flush=True)
PY

"$FERRY" init --vault vault >/dev/null
for vm in a b; do
	"$FERRY" enable-replication --vault vault --vm $vm --tracker qemu --qmp "$T/$vm.qmp" \
		--disk os=os0 --disk data=data0 --crash-interval 0 --cpus 1 --memory 192 \
		--group app --group-interval 3 >enable-$vm.out 2>&1 ||
		fail "enable-replication --group: $(cat enable-$vm.out)"
done
# Not a group for the scan tracker: it cannot pause a VM.
truncate -s 1M plain.img
must_fail "$FERRY" enable-replication --vault vault --vm c --disk d="$T/plain.img" --group app

python3 driver.py "$SECONDS_WRITING" "$BOOT_TIMEOUT" >driver.out 2>driver.err &
dpid=$!
PIDS+=($dpid)
for i in $(seq $((BOOT_TIMEOUT * 10))); do
	grep -q serving driver.out 2>/dev/null && break
	kill -0 $dpid 2>/dev/null || { show driver.err a.log b.log; fail "the driver ended before the guests served"; }
	sleep 0.1
done
grep -q serving driver.out || { show a.log b.log; fail "the guests did not start serving"; }
note "both guests serve writes"

for vm in a b; do
	"$AGENT" --config vault/agents/$vm.conf --interval 2 2>agent-$vm.log &
	PIDS+=($!)
	eval "apid_$vm=$!"
done
"$REPLICATOR" --vault vault --interval 1 2>replicator.log &
rpid=$!
PIDS+=($rpid)
wait $dpid || { show driver.err agent-a.log agent-b.log; fail "the driver failed"; }
writes=$(tail -n 1 driver.out)
note "$writes writes in ${SECONDS_WRITING} s, alternately on a and b"
for vm in a b; do
	eval "apid=\$apid_$vm"
	kill -0 $apid 2>/dev/null || { show agent-$vm.log; fail "the agent of $vm died"; }
	kill $apid
	wait $apid 2>/dev/null || true
done
kill $rpid
wait $rpid 2>/dev/null || true
"$REPLICATOR" --vault vault --once 2>>replicator.log || { show replicator.log; fail "replicator pass failed"; }

pauses=$(sed -n 's/.*cut with every member, paused \([0-9.]*\) ms/\1/p' agent-a.log agent-b.log | sort -n)
[ -n "$pauses" ] || { show agent-a.log agent-b.log; fail "no agent cut with its group"; }
note "pause per VM and round (ms): min $(head -n 1 <<<"$pauses"), median $(sed -n "$(( ($(wc -l <<<"$pauses") + 1) / 2 ))p" <<<"$pauses"), max $(tail -n 1 <<<"$pauses") over $(wc -l <<<"$pauses")"
{ grep -h "round .* skipped" agent-a.log agent-b.log || true; } | sed 's/^/#   /' | head -n 5

# ---- an agent killed while its VM is paused: the watchdog resumes it ----
FERRY_FAULTS='put~.paused:crash-after' "$AGENT" --config vault/agents/a.conf --interval 2 \
	2>agent-a-crash.log &
kpid=$!
PIDS+=($kpid)
"$AGENT" --config vault/agents/b.conf --interval 2 2>agent-b2.log &
bpid=$!
PIDS+=($bpid)
for i in $(seq 300); do
	kill -0 $kpid 2>/dev/null || break
	sleep 0.05
done
t0=$(date +%s%N)
kill -0 $kpid 2>/dev/null && { show agent-a-crash.log; fail "the agent of a did not die at its pause"; }
rc=0
wait $kpid || rc=$?
[ "$rc" = 137 ] || { show agent-a-crash.log; fail "the agent of a ended with $rc, not killed (137) by the fault"; }
[ -n "$(find vault -name a.paused)" ] || fail "the agent of a died before it paused its VM"
state=
for i in $(seq 100); do
	state=$(python3 "$QMP" a.tqmp query-status | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
	[ "$state" = running ] && break
	sleep 0.05
done
[ "$state" = running ] || { show agent-a-crash.log; fail "VM a stayed $state after its agent died paused"; }
note "agent killed with VM a paused: a runs again $((($(date +%s%N) - t0) / 1000000)) ms after (limit 2000 ms)"
kill $bpid
wait $bpid 2>/dev/null || true
"$REPLICATOR" --vault vault --once 2>>replicator.log || { show replicator.log; fail "replicator pass failed"; }

# The round a cut without a: the group's status says which member it lacks,
# once two rounds (6 s) passed without a group point.
for i in $(seq 40); do
	rc=0
	"$FERRY" status --vault vault --check >check.out 2>&1 || rc=$?
	[ "$rc" = 1 ] && grep -q "has no point of a" check.out && break
	sleep 0.5
done
[ "$rc" = 1 ] || { cat check.out >&2; fail "status --check gave $rc, not 1 (warning), for a group without recent points"; }
grep "^group app" check.out | grep -q "has no point of a" ||
	{ cat check.out >&2; fail "status --check does not name the member the group's last round lacks"; }
note "status --check: $(grep '^group app' check.out | sed 's/.*; //')"

# marks IMAGE: the marks on a data disk, one number a line.
cat >marks.py <<'PY'
import sys
with open(sys.argv[1], "rb") as f:
    data = f.read()
for n in range(1, len(data) // 4096):
    if data[n * 4096:n * 4096 + 16] == b"FERRY-W %08d" % n:
        print(n)
PY
# prefix A-MARKS B-MARKS: prints m when the two together are 1..m and each
# VM holds only its own (odd: a, even: b); fails otherwise.
prefix() {
	python3 - "$1" "$2" <<'PY'
import sys
a = [int(x) for x in open(sys.argv[1]).read().split()]
b = [int(x) for x in open(sys.argv[2]).read().split()]
if any(n % 2 == 0 for n in a) or any(n % 2 for n in b):
    sys.exit("a mark on the wrong VM")
s = sorted(a + b)
if s != list(range(1, len(s) + 1)):
    gap = next(n for n in range(1, len(s) + 2) if n not in s)
    sys.exit("not a prefix: %d marks, %d missing" % (len(s), gap))
print(len(s))
PY
}

# ---- every group point: a prefix of the order ----
"$FERRY" recovery-points --vault vault --group app >gpoints.out 2>gpoints.err ||
	{ cat gpoints.err >&2; fail "recovery-points --group failed"; }
mapfile -t gpoints < <(awk '{ print $1 }' gpoints.out)
# member_point GROUP-POINT VM: the VM's own point of a group point (the
# listing names them as VM:POINT).
member_point() {
	awk -v g="$1" -v vm="$2" '$1 == g { for (i = 2; i <= NF; i++) if (index($i, vm ":") == 1) print substr($i, length(vm) + 2) }' gpoints.out
}
ng=${#gpoints[@]}
[ "$ng" -ge 3 ] || { cat gpoints.out; show agent-a.log agent-b.log; fail "expected at least 3 group points, got $ng"; }
mount_vault vault mnt
ms=()
prev=0
for g in "${gpoints[@]}"; do
	for vm in a b; do
		p=$(member_point "$g" $vm)
		[ -n "$p" ] || fail "group point $g: no point of $vm"
		python3 marks.py "mnt/$vm/recovery-points/$p/data.img" >$vm.marks
	done
	m=$(prefix a.marks b.marks) || fail "group point $g: the two VMs' marks are no prefix of the order"
	[ "$m" -ge "$prev" ] || fail "group point $g holds $m marks, an earlier one $prev"
	prev=$m
	ms+=("$m")
done
[ "$prev" -gt 0 ] || fail "no group point holds any mark"
note "$ng group points, marks 1..m on both VMs together: m = ${ms[*]}"

# ---- without the group: each VM's newest own point at each instant ----
# Only the points each VM cut alone (no "group round"): a's, each paired
# with b's newest point from an earlier second.
"$FERRY" recovery-points --vault vault a | grep -v "group round" >a.points
"$FERRY" recovery-points --vault vault b | grep -v "group round" >b.points
pairs=0 broken=0 example=
while read -r pa _ ta _; do
	pb=$(awk -v t="$ta" '$3 < t { p = $1 } END { print p }' b.points)
	[ -n "$pb" ] || continue
	pairs=$((pairs + 1))
	python3 marks.py "mnt/a/recovery-points/$pa/data.img" >a.marks
	python3 marks.py "mnt/b/recovery-points/$pb/data.img" >b.marks
	if ! prefix a.marks b.marks >/dev/null 2>&1; then
		broken=$((broken + 1))
		[ -n "$example" ] || example="a $pa with b $pb: $(prefix a.marks b.marks 2>&1 || true)"
	fi
done <a.points
[ "$pairs" -gt 0 ] || fail "no pair of points the VMs cut alone"
[ "$broken" -gt 0 ] ||
	fail "all $pairs pairs of the VMs' own points were prefixes: the test shows nothing"
note "without the group: $broken of $pairs pairs of own points are no prefix (e.g. $example)"
unmount_vault mnt

# ---- a group test failover at one group point; both clones boot ----
mid=${gpoints[$((ng / 2))]}
"$FERRY" test-failover --vault vault --group app --recovery-point "$mid" --name t1 --accel tcg \
	>tf.out 2>tf.err || { cat tf.err >&2; fail "test-failover --group failed"; }
mount_vault vault mnt
for vm in a b; do
	kill "$(eval echo \$qpid_$vm)" 2>/dev/null
	p=$(member_point "$mid" $vm)
	python3 marks.py "mnt/$vm/recovery-points/$p/data.img" >$vm.want
	cmp "mnt/$vm/failovers/t1/data.img" "mnt/$vm/recovery-points/$p/data.img" ||
		fail "the clone of $vm does not start as its point of group point $mid"
done
m=$(prefix a.want b.want) || fail "group point $mid is no prefix"
for vm in a b; do
	abs=$(realpath mnt)/$vm/failovers/t1
	args=$(cat "mnt/$vm/failovers/t1/qemu.args")
	args=${args//cache=none/cache=writeback}
	guestdir=$(realpath guest)
	args+=" -kernel $guestdir/vmlinux -initrd $guestdir/initrd.img"
	args+=" -append '$(cat guest/append) ferry.mode=marks ferry.marks=$((writes + 1))' -no-reboot"
	timeout -k 5 "$BOOT_TIMEOUT" sh -c "$args" </dev/null >$vm-boot.log 2>&1 ||
		{ show $vm-boot.log; fail "the clone of $vm did not boot and power off"; }
	got=$(tr -d '\r' <$vm-boot.log | sed -n 's/^FERRY-GUEST-OK marks//p' | tr ' ' '\n' | sed '/^$/d')
	[ "$got" = "$(cat $vm.want)" ] ||
		{ show $vm-boot.log; fail "the clone of $vm read other marks than its point holds"; }
done
note "group point $mid (marks 1..$m): clones of a and b boot and read back their marks"
unmount_vault mnt
"$FERRY" test-failover-cleanup --vault vault --group app --name t1 >tfc.out 2>&1 ||
	fail "test-failover-cleanup --group: $(cat tfc.out)"
mount_vault vault mnt
for vm in a b; do
	[ ! -e "mnt/$vm/failovers/t1" ] || fail "the clone of $vm survived the group cleanup"
done
unmount_vault mnt
note "test-failover-cleanup --group removed both clones"
