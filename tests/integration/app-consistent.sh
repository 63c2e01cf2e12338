#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# App-consistent recovery points through the guest agent (issue 14).
#
# A qemu-system-x86_64 VM (TCG) runs Debian's qemu-guest-agent on its
# org.qemu.guest_agent.0 port with an fsfreeze hook that flushes as a
# database would, while a writer adds records to an ext4 file system
# without pause and without fsync (tests/fixtures/guest-init.sh,
# ferry.mode=app; guest-fsfreeze-hook.sh). Ferry replicates it with the
# qemu tracker, an app-consistent cut every 3 s and a crash-consistent
# point at every other cycle. Then:
#  1. every app-consistent point (at least 2) has data and root file systems
#     that need no journal replay (dumpe2fs: no needs_recovery), pass
#     e2fsck -fn, and mount read-only without noload (a read-only loop
#     device); it holds the hook's freeze-N of its freeze and no thaw-N,
#     and every record the writer had finished before that freeze, whole;
#     the hook's N grows from point to point. How many crash-consistent
#     points needed a replay is reported. The agent's freeze windows
#     (freeze answered to thaw answered) are printed: min, median, max.
#  2. the agent is killed (FERRY_FAULTS=freeze:crash-after) right after a
#     freeze succeeded: the guest is thawed within the freeze limit
#     (guest-fsfreeze-status over the socket) and writes again. An agent
#     stopped (SIGSTOP) in its freeze never asks for the thaw: the limit
#     (3 s here) thaws the guest. A guest left frozen with no freezer
#     (frozen by hand) is thawed by the next agent at its start, whose
#     next app-consistent point is made.
#  3. a second VM entry on the same qemu, whose guest agent port has no
#     qemu-ga behind it, keeps getting crash-consistent points, and
#     `ferry status` says its app-consistent points fail and why.
. "$(dirname "$0")/lib.sh"
need_fuse
command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 missing (contrib/install-deps.sh --test)"
for tool in mkfs.ext4 e2fsck debugfs dumpe2fs python3; do
	command -v $tool >/dev/null || skip "$tool missing"
done
FIX=$SOURCE/tests/fixtures
QGA="python3 $SOURCE/tests/integration/qga.py"
SECONDS_WRITING=${FERRY_GUEST_SECONDS:-30}
BOOT_TIMEOUT=${FERRY_BOOT_TIMEOUT:-120}
APP_INTERVAL=3
FREEZE_LIMIT=10

cd "$T"
rc=0
"$FIX/mkguest.sh" guest 2>mkguest.err || rc=$?
[ "$rc" = 77 ] && skip "cannot build the guest: $(tail -n 1 mkguest.err)"
[ "$rc" = 0 ] || { cat mkguest.err >&2; fail "mkguest.sh failed"; }
[ -e guest/has-qga ] || skip "no qemu-ga on this host (Debian package qemu-guest-agent)"
cp guest/os.img os.img
truncate -s 64M data.img
mkfs.ext4 -q -F -L ferrydata data.img

show() {
	local f
	for f in "$@"; do
		[ -s "$f" ] && { echo "--- $f" >&2; tr -d '\r' <"$f" | tail -n 25 >&2; }
	done
	return 0
}

# ---- the VM: a guest agent on port .0; port .1 has nobody behind it ----
qemu-system-x86_64 -M pc -accel tcg -cpu max -smp 1 -m 256 -nodefaults -no-user-config \
	-display none -monitor none -serial file:"$T/guest.log" -no-reboot \
	-qmp unix:"$T/ferry.qmp",server=on,wait=off -qmp unix:"$T/ferry2.qmp",server=on,wait=off \
	-kernel guest/vmlinux -initrd guest/initrd.img -append "$(cat guest/append) ferry.mode=app" \
	-blockdev driver=file,node-name=fos,filename="$T/os.img" \
	-blockdev driver=raw,node-name=os0,file=fos -device virtio-blk-pci,drive=os0,id=vda \
	-blockdev driver=file,node-name=fdata,filename="$T/data.img" \
	-blockdev driver=raw,node-name=data0,file=fdata -device virtio-blk-pci,drive=data0,id=vdb \
	-device virtio-serial-pci \
	-chardev socket,id=qga0,path="$T/qga.sock",server=on,wait=off \
	-device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
	-chardev socket,id=qga1,path="$T/noagent.sock",server=on,wait=off \
	-device virtserialport,chardev=qga1,name=org.qemu.guest_agent.1 \
	2>qemu.err &
qpid=$!
PIDS+=("$qpid")
wrote() { tr -d '\r' 2>/dev/null <guest.log | sed -n 's/^FERRY-GUEST: WROTE //p' | tail -n 1; }
for i in $(seq $((BOOT_TIMEOUT * 10))); do
	[ -n "$(wrote)" ] && break
	grep -q "FERRY-GUEST: FAIL" guest.log 2>/dev/null && { show guest.log; fail "the guest failed"; }
	kill -0 $qpid 2>/dev/null || { show qemu.err guest.log; fail "the VM ended"; }
	sleep 0.1
done
[ -n "$(wrote)" ] || { show guest.log; fail "the guest did not start writing"; }
$QGA qga.sock guest-ping >/dev/null || { show guest.log; fail "the guest agent does not answer"; }
note "the guest runs qemu-ga and writes (boot $((i / 10)) s)"

"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm g1 --tracker qemu --qmp "$T/ferry.qmp" \
	--qga "$T/qga.sock" --app-interval $APP_INTERVAL --freeze-timeout $FREEZE_LIMIT \
	--disk os=os0 --disk data=data0 --crash-interval 0 --cpus 1 --memory 256 >enable.out 2>&1 ||
	fail "enable-replication --qga: $(cat enable.out)"
grep -q "^qga = $T/qga.sock" vault/agents/g1.conf &&
	grep -q "^app-interval = $APP_INTERVAL" vault/agents/g1.conf &&
	grep -q "^freeze-timeout = $FREEZE_LIMIT" vault/agents/g1.conf ||
	fail "the agent configuration lacks the guest agent keys: $(cat vault/agents/g1.conf)"
must_fail "$FERRY" enable-replication --vault vault --vm bad1 --tracker qemu --qmp "$T/ferry.qmp" \
	--app-interval 60 --disk os=os0
grep -q -- "--app-interval wants --qga" "$T/must_fail.out" ||
	fail "--app-interval without --qga: $(cat "$T/must_fail.out")"
must_fail "$FERRY" enable-replication --vault vault --vm bad2 --app-interval 60 --disk os=os.img
grep -q "scan tracker cannot freeze" "$T/must_fail.out" ||
	fail "--app-interval with the scan tracker: $(cat "$T/must_fail.out")"

# ---- 1. app-consistent points while the guest writes ----
"$AGENT" --config vault/agents/g1.conf --interval 2 2>agent.log &
apid=$!
PIDS+=("$apid")
"$REPLICATOR" --vault vault --interval 1 2>replicator.log &
rpid=$!
PIDS+=("$rpid")
sleep "$SECONDS_WRITING"
kill -0 $apid 2>/dev/null || { show agent.log; fail "the agent died"; }
kill -0 $rpid 2>/dev/null || { show replicator.log; fail "the replicator died"; }
kill $apid $rpid
wait $apid 2>/dev/null || true
wait $rpid 2>/dev/null || true
"$REPLICATOR" --vault vault --once 2>>replicator.log || { show replicator.log; fail "replicator pass failed"; }
grep -q "FERRY-GUEST: FAIL" guest.log && { show guest.log; fail "the guest failed"; }
[ "$($QGA qga.sock guest-fsfreeze-status)" = '"thawed"' ] || fail "the guest is left frozen"
note "the guest wrote $(wrote) records; it froze $(grep -c "FERRY-GUEST: FREEZE" guest.log) times"

# The freeze windows the agent measured, in ms.
windows() {
	sed -n 's/.*app-consistent cut: the guest was frozen for \([0-9.]*\) ms.*/\1/p' "$@" |
		sort -n | awk '{ v[NR] = $1 } END {
			if (NR) printf "%d cuts: min %.1f ms, median %.1f ms, max %.1f ms\n",
				NR, v[1], NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR] }'
}
freezes() {
	sed -n 's/.*its freeze took \([0-9.]*\) ms.*/\1/p' "$@" | sort -n | awk '{ v[NR] = $1 } END {
		if (NR) printf "min %.1f ms, median %.1f ms, max %.1f ms\n",
			v[1], NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR] }'
}

# clean IMAGE: a copy of IMAGE in chk.img that needs no journal replay,
# passes e2fsck -fn and mounts read-only from a read-only loop device
# without noload (where loop devices work; NOLOOP says why not).
NOLOOP=
clean() {
	local img=$1 dev
	rm -f chk.img
	cp --sparse=always "$img" chk.img
	dumpe2fs -h chk.img 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery' &&
		fail "$img: an app-consistent point needs a journal replay"
	e2fsck -fn chk.img >chk.fsck 2>&1 || { cat chk.fsck >&2; fail "$img: e2fsck -fn found errors"; }
	[ -n "$NOLOOP" ] && return 0
	if ! dev=$(losetup -r -f --show chk.img 2>/dev/null); then
		NOLOOP="no loop device (losetup -r -f failed)"
		return 0
	fi
	mkdir -p lmnt
	if ! mount -t ext4 -o ro "$dev" lmnt 2>chk.mount; then
		losetup -d "$dev"
		fail "$img: does not mount read-only without noload: $(cat chk.mount)"
	fi
	umount lmnt
	losetup -d "$dev"
}

# needs_replay IMAGE: whether IMAGE's file system has a journal to replay.
needs_replay() {
	dumpe2fs -h "$1" 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery'
}

# app_content IMAGE: in the data file system of an app-consistent point,
# the hook's files: sets HOOK to the N of the last freeze-N, which must
# have no thaw-N, and checks every record up to the number in freeze-N.
app_content() {
	rm -rf dump
	mkdir dump
	debugfs -R "rdump /hook /db $T/dump" "$1" >dump.log 2>&1
	[ -d dump/hook ] && [ -d dump/db ] || { cat dump.log >&2; fail "$1: no /hook or /db"; }
	HOOK=$(ls dump/hook | sed -n 's/^freeze-//p' | sort -n | tail -n 1)
	[ -n "$HOOK" ] || fail "$1: no freeze-N from the hook: the point was not cut in a freeze"
	[ -e "dump/hook/thaw-$HOOK" ] && fail "$1: holds thaw-$HOOK: cut after the thaw of freeze $HOOK"
	RECORDS=$(cat "dump/hook/freeze-$HOOK")
	python3 - dump/db "$RECORDS" <<'PY' || fail "$1: records the guest wrote before freeze $HOOK are missing"
import os, sys
d, last = sys.argv[1], int(sys.argv[2])
for n in range(1, last + 1):
    want = b"%08d\n" % n * 100
    try:
        got = open(os.path.join(d, str(n)), "rb").read()
    except FileNotFoundError:
        sys.exit("record %d of %d is missing" % (n, last))
    if got != want:
        sys.exit("record %d of %d: %d bytes, not its content" % (n, last, len(got)))
PY
}

mapfile -t lines < <("$FERRY" recovery-points --vault vault g1)
app=() crash=()
for l in "${lines[@]}"; do
	read -r id kind _ <<<"$l"
	case "$kind" in
	app) app+=("$id") ;;
	crash) crash+=("$id") ;;
	*) fail "recovery-points printed '$l'" ;;
	esac
done
note "${#lines[@]} recovery points: ${#app[@]} app-consistent, ${#crash[@]} crash-consistent"
[ "${#app[@]}" -ge 2 ] || { show agent.log replicator.log; fail "expected at least 2 app-consistent points"; }
mount_vault vault mnt
prev=0
hooks=()
for p in "${app[@]}"; do
	clean "mnt/g1/recovery-points/$p/data.img"
	app_content chk.img
	[ "$HOOK" -gt "$prev" ] || fail "point $p holds freeze $HOOK, an earlier app point freeze $prev"
	prev=$HOOK
	hooks+=("$HOOK:$RECORDS")
	clean "mnt/g1/recovery-points/$p/os.img"
	grep -q "^consistency = app" "mnt/g1/recovery-points/$p/info" 2>/dev/null ||
		fail "point $p: its info does not say app: $(cat "mnt/g1/recovery-points/$p/info")"
done
note "every app-consistent point is clean (no replay, e2fsck -fn, ro mount${NOLOOP:+ skipped: $NOLOOP}) and holds its freeze and the records before it (freeze:records ${hooks[*]})"
replays=0
for p in "${crash[@]}"; do
	needs_replay "mnt/g1/recovery-points/$p/data.img" && replays=$((replays + 1))
done
note "$replays of ${#crash[@]} crash-consistent points need a journal replay"
[ -e "mnt/g1/recovery-points/latest-app-consistent" ] ||
	fail "no latest-app-consistent in the mount"
unmount_vault mnt
w=$(windows agent.log)
[ -n "$w" ] || fail "the agent logged no freeze window"
note "freeze windows (TCG): $w"
note "freeze commands (hook and sync, TCG): $(freezes agent.log)"

# ---- 2. the agent killed between freeze and thaw ----
wrote0=$(wrote)
FERRY_FAULTS=freeze:crash-after "$AGENT" --config vault/agents/g1.conf --interval 2 2>agent-kill.log &
kpid=$!
PIDS+=("$kpid")
rc=0
wait $kpid || rc=$?
t_dead=$(date +%s.%N)
[ "$rc" = 137 ] || { show agent-kill.log; fail "the agent was not killed in its freeze (exit $rc)"; }
grep -q "FERRY-GUEST: FREEZE" guest.log || fail "no freeze happened"
# The freezer holds the guest agent's socket until it has thawed.
status=$($QGA --timeout $FREEZE_LIMIT qga.sock guest-fsfreeze-status) ||
	fail "no answer from the guest agent within the freeze limit"
t_thawed=$(date +%s.%N)
[ "$status" = '"thawed"' ] || fail "the guest is $status after the agent died"
took=$(echo "$t_thawed - $t_dead" | bc 2>/dev/null || python3 -c "print(round($t_thawed - $t_dead, 3))")
note "agent killed with the guest frozen: thawed $took s after its death (limit $FREEZE_LIMIT s)"
for i in $(seq 300); do
	[ "$(wrote)" != "$wrote0" ] && break
	sleep 0.1
done
[ "$(wrote)" != "$wrote0" ] || { show guest.log; fail "the guest does not write after the thaw"; }
note "the guest writes again (record $(wrote))"

# The agent stopped (SIGSTOP: hung) during a freeze: nobody asks for the
# thaw, and the freezer's limit thaws the guest. A shorter limit for this.
LIMIT2=3
sed -i "s/^freeze-timeout = .*/freeze-timeout = $LIMIT2/" vault/agents/g1.conf
nfreeze=$(grep -c "FERRY-GUEST: FREEZE" guest.log)
"$AGENT" --config vault/agents/g1.conf --interval 2 2>agent-stop.log &
spid=$!
PIDS+=("$spid")
# The hook says FREEZE as the freeze command starts: the agent then waits
# for the freeze, or cuts; stopped there, it never asks for the thaw.
for i in $(seq 600); do
	[ "$(grep -c "FERRY-GUEST: FREEZE" guest.log)" -gt "$nfreeze" ] && break
	sleep 0.02
done
kill -STOP $spid
t_stop=$SECONDS
n=$((nfreeze + 1))
grep -q "FERRY-GUEST: FREEZE $n " guest.log || fail "no freeze $n from the stopped agent"
for i in $(seq $(((LIMIT2 + 5) * 10))); do
	grep -q "FERRY-GUEST: THAW $n" guest.log && break
	sleep 0.1
done
grep -q "FERRY-GUEST: THAW $n" guest.log ||
	{ kill -CONT $spid; fail "the guest was not thawed within $((LIMIT2 + 5)) s of a stopped agent"; }
took=$((SECONDS - t_stop))
kill -CONT $spid
for i in $(seq 300); do
	grep -q "cycle [0-9]* done" agent-stop.log && break
	sleep 0.1
done
kill $spid
wait $spid 2>/dev/null || true
if grep -q "the freeze limit thawed the guest" agent-stop.log; then
	note "agent stopped in its freeze: the $LIMIT2 s limit thawed the guest (within ${took} s of the stop); its point is crash-consistent"
elif grep -q "app-consistent cut: the guest was frozen" agent-stop.log; then
	note "agent stopped in its freeze, but only after it had asked for the thaw: thawed at once"
else
	show agent-stop.log
	fail "the stopped agent's cycle says neither how its freeze ended nor why"
fi
sed -i "s/^freeze-timeout = .*/freeze-timeout = $FREEZE_LIMIT/" vault/agents/g1.conf

# A guest frozen with nobody to thaw it: the next agent thaws it at start.
$QGA qga.sock guest-fsfreeze-freeze >/dev/null || fail "cannot freeze the guest by hand"
[ "$($QGA qga.sock guest-fsfreeze-status)" = '"frozen"' ] || fail "the guest did not freeze"
napp=${#app[@]}
"$AGENT" --config vault/agents/g1.conf --interval 2 2>agent-restart.log &
apid=$!
PIDS+=("$apid")
# Until the cycle of the app-consistent cut is done (its marker shipped).
for i in $(seq 600); do
	sed -n '/app-consistent cut: the guest was frozen/,$p' agent-restart.log |
		grep -q "cycle [0-9]* done" && break
	kill -0 $apid 2>/dev/null || { show agent-restart.log; fail "the restarted agent died"; }
	sleep 0.1
done
kill $apid
wait $apid 2>/dev/null || true
grep -q "its guest was frozen.*thawed it" agent-restart.log ||
	{ show agent-restart.log; fail "the restarted agent did not thaw the guest left frozen"; }
grep -q "app-consistent cut: the guest was frozen" agent-restart.log ||
	{ show agent-restart.log; fail "no app-consistent cut after the restart"; }
"$REPLICATOR" --vault vault --once 2>>replicator.log || fail "replicator pass failed"
n=$("$FERRY" recovery-points --vault vault g1 | awk '$2 == "app"' | wc -l)
[ "$n" -gt "$napp" ] || fail "no new app-consistent point after the restart ($n)"
[ "$($QGA qga.sock guest-fsfreeze-status)" = '"thawed"' ] || fail "the guest is left frozen"
note "the restarted agent thawed the guest left frozen and made app-consistent point $n"

# ---- 3. a guest agent port with nobody behind it ----
"$FERRY" enable-replication --vault vault --vm g2 --tracker qemu --qmp "$T/ferry2.qmp" \
	--qga "$T/noagent.sock" --app-interval $APP_INTERVAL --disk os=os0 --disk data=data0 \
	--crash-interval 0 >enable2.out 2>&1 || fail "enable-replication g2: $(cat enable2.out)"
"$AGENT" --config vault/agents/g2.conf --interval 2 2>agent2.log &
a2pid=$!
PIDS+=("$a2pid")
for i in $(seq 600); do
	[ "$(grep -c "no app-consistent cut this cycle" agent2.log)" -ge 2 ] && break
	kill -0 $a2pid 2>/dev/null || { show agent2.log; fail "the agent of g2 died"; }
	sleep 0.1
done
sleep 4
kill $a2pid
wait $a2pid 2>/dev/null || true
"$REPLICATOR" --vault vault --once 2>>replicator.log || fail "replicator pass failed"
grep -q "no app-consistent cut this cycle.*no guest agent answers" agent2.log ||
	{ show agent2.log; fail "the agent of g2 did not say why its app-consistent cuts fail"; }
pts=$("$FERRY" recovery-points --vault vault g2)
ncrash=$(echo "$pts" | awk '$2 == "crash"' | wc -l)
napp2=$(echo "$pts" | awk '$2 == "app"' | wc -l)
[ "$ncrash" -ge 2 ] && [ "$napp2" = 0 ] ||
	{ show agent2.log; fail "g2: $ncrash crash-consistent and $napp2 app-consistent points"; }
"$FERRY" status --vault vault >status.out 2>&1 || true
awk '/^g2|VM g2/ { on = 1 } on' status.out | grep -q "app-consistent last attempt failed.*no guest agent answers" ||
	{ cat status.out >&2; fail "ferry status does not say that g2's app-consistent points fail"; }
note "g2 (no guest agent): $ncrash crash-consistent points, no app-consistent one; ferry status says: $(grep -m1 'app-consistent last attempt failed' status.out | sed 's/^ *//')"
# The failing freeze is a health warning: status --check names it.
rc=0
"$FERRY" status --vault vault --check >check.out 2>&1 || rc=$?
[ "$rc" -ge 1 ] && [ "$rc" -le 2 ] || { cat check.out >&2; fail "status --check exits $rc with g2's freezes failing"; }
grep "^g2 " check.out | grep -q "^g2 WARNING - .*app-consistent" ||
	{ cat check.out >&2; fail "status --check does not warn that g2's app-consistent points fail"; }
note "status --check: $(grep '^g2 ' check.out)"
kill $qpid
wait $qpid 2>/dev/null || true
exit 0
