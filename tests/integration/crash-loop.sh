#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Crash and fault trials (docs/reliability.md). Each trial hurts one
# program at a random point and then checks that nothing acknowledged was
# lost and that everything resumes:
#
#   agent       SIGKILL after a random delay, or a FERRY_FAULTS rule: an
#               I/O error, a short write, a failed fsync or a crash at a
#               random operation (before or after it);
#   replicator  the same, with catalog commits among its sites;
#   ferryfs     SIGKILL while a writer puts fsynced 64 KiB blocks into a
#               failover clone.
#
# After an agent or replicator trial, clean passes must succeed and the
# newest point must equal the source disk, which did not change since the
# hurt cycle began: the cycle's writes are not lost, only late. After a
# ferryfs trial, the remounted clone must hold every write whose fsync
# returned; the one write in flight may be there or not, but nothing else
# may differ. Every tenth trial, and at the end, `ferry check --read-data`
# must pass.
#
# CRASH_TRIALS (default 40) and CRASH_SEED (default random, printed) set
# the run; `CRASH_TRIALS=200` is the figure in docs/reliability.md.
. "$(dirname "$0")/lib.sh"
need_fuse
FERRY_FAULTS="write:eio@999999" "$FERRY" --help >/dev/null 2>&1 ||
	skip "this build cannot inject faults (meson setup -Dfault_injection=true)"
trials=${CRASH_TRIALS:-40}
seed=${CRASH_SEED:-$((RANDOM * 32768 + RANDOM))}
note "CRASH_TRIALS=$trials CRASH_SEED=$seed"
RANDOM=$seed

cd "$T"
seeded_bytes 4194304 91 > data.img
truncate -s 16M data.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --disk data=data.img --crash-interval 0 >/dev/null
cycle vault vm1 2>/dev/null
"$FERRY" test-failover --vault vault vm1 --name t1 >/dev/null 2>&1 || fail "test-failover failed"
mount_vault vault mnt
fspid=${PIDS[-1]}
C=mnt/vm1/failovers/t1/data.img
cp "$C" shadow.img || fail "cannot read the new clone"

AGENT_RULES=(write:eio write:enospc write:short fsync:eio put:eio put:crash-after get:eio
	list:eio any:crash any:crash-after)
REPL_RULES=(write:eio write:short fsync:eio put:eio put:crash-after get:eio list:eio
	delete:eio commit:eio commit:crash commit:crash-after any:crash any:crash-after)

# run_hurt PROGRAM ARGS...: runs it as the trial says (kill after a delay,
# or a fault rule); its exit status does not matter, a hang does.
run_hurt() { # HOW ARG PROGRAM ARGS...
	local how=$1 arg=$2 pid
	shift 2
	if [ "$how" = kill ]; then
		"$@" 2>>hurt.log &
		pid=$!
		sleep "$arg"
		kill -9 "$pid" 2>/dev/null && kills=$((kills + 1))
		wait "$pid" 2>/dev/null || true
	else
		local rc=0
		FERRY_FAULTS=$arg timeout 120 "$@" 2>>hurt.log || rc=$?
		[ "$rc" -ne 124 ] || fail "'$*' hung with FERRY_FAULTS=$arg"
		[ "$rc" -eq 0 ] || faulted=$((faulted + 1))
		[ "$rc" -ne 137 ] || crashed=$((crashed + 1))
	fi
}

pick() { # ARRAY-NAME: a random rule from it, at a random call
	local -n rules=$1
	echo "${rules[RANDOM % ${#rules[@]}]}@$((RANDOM % 12 + 1))"
}

clean_cycle() { # WHY
	"$AGENT" --config vault/agents/vm1.conf --once 2>>clean.log ||
		fail "trial $t ($1): the clean agent pass failed: $(tail -5 clean.log)"
	"$REPLICATOR" --vault vault --once 2>>clean.log ||
		fail "trial $t ($1): the clean replicator pass failed: $(tail -5 clean.log)"
}

latest_is_source() { # WHY
	cmp mnt/vm1/recovery-points/latest/data.img data.img ||
		fail "trial $t ($1): the newest point differs from the source disk"
}

# The clone writer: 64 KiB blocks at random offsets, pwrite + fsync. Before
# each write it notes the block in flight, after the fsync the write is
# acknowledged and goes into the shadow. It ends when ferryfs dies.
clone_writer() {
	python3 - "$C" shadow.img "$1" <<'PY'
import os, random, sys
clone, shadow, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
c = os.open(clone, os.O_RDWR)
s = os.open(shadow, os.O_RDWR)
blocks = os.fstat(c).st_size // 65536
while True:
    off = rng.randrange(blocks) * 65536
    buf = rng.randbytes(65536)
    with open("inflight.new", "w") as f:
        f.write("%d\n" % off)
    os.replace("inflight.new", "inflight")
    with open("inflight.bin", "wb") as f:
        f.write(buf)
    try:
        os.pwrite(c, buf, off)
        os.fsync(c)
    except OSError:
        break
    os.pwrite(s, buf, off)
    os.remove("inflight")
PY
}

# The remounted clone against the shadow: equal, except that the block in
# flight may hold the new bytes, which then join the shadow.
clone_check() {
	python3 - "$C" shadow.img <<'PY' || fail "trial $t (ferryfs): $(cat clone-check.out)"
import os, sys
clone, shadow = sys.argv[1], sys.argv[2]
a = open(clone, "rb").read()
b = bytearray(open(shadow, "rb").read())
if os.path.exists("inflight"):
    off = int(open("inflight").read())
    new = open("inflight.bin", "rb").read()
    if a[off:off + len(new)] == new:
        b[off:off + len(new)] = new
        open(shadow, "r+b").write(b)
        print("in-flight write landed", file=open("clone-check.out", "w"))
    os.remove("inflight")
if a != bytes(b):
    first = next(i for i in range(len(a)) if a[i] != b[i])
    open("clone-check.out", "w").write("the clone differs from its acknowledged writes at byte %d" % first)
    sys.exit(1)
PY
}

kills=0 faulted=0 crashed=0 fs_kills=0 agent_trials=0 repl_trials=0 fs_trials=0
for t in $(seq "$trials"); do
	case $((RANDOM % 5)) in
	0 | 1)
		agent_trials=$((agent_trials + 1))
		scatter_writes data.img 32 $((seed + t))
		if [ $((RANDOM % 2)) = 0 ]; then
			run_hurt kill "$(printf 0.%03d $((RANDOM % 60)))" "$AGENT" --config vault/agents/vm1.conf --once
		else
			run_hurt fault "$(pick AGENT_RULES)" "$AGENT" --config vault/agents/vm1.conf --once
		fi
		"$REPLICATOR" --vault vault --once 2>>clean.log ||
			fail "trial $t (agent): a replicator pass after the hurt agent failed: $(tail -5 clean.log)"
		clean_cycle agent
		latest_is_source agent
		;;
	2 | 3)
		repl_trials=$((repl_trials + 1))
		scatter_writes data.img 32 $((seed + t))
		"$AGENT" --config vault/agents/vm1.conf --once 2>>clean.log || fail "trial $t: agent failed"
		if [ $((RANDOM % 2)) = 0 ]; then
			run_hurt kill "$(printf 0.%03d $((RANDOM % 60)))" "$REPLICATOR" --vault vault --once
		else
			run_hurt fault "$(pick REPL_RULES)" "$REPLICATOR" --vault vault --once
		fi
		clean_cycle replicator
		latest_is_source replicator
		;;
	4)
		fs_trials=$((fs_trials + 1))
		clone_writer $((seed + t)) &
		wpid=$!
		sleep "0.$((RANDOM % 8 + 2))"
		kill -9 "$fspid" || fail "trial $t: no ferryfs to kill"
		fs_kills=$((fs_kills + 1))
		wait "$wpid" 2>/dev/null || true
		fusermount3 -u mnt 2>/dev/null || umount -l mnt 2>/dev/null || true
		mount_vault vault mnt
		fspid=${PIDS[-1]}
		clone_check
		;;
	esac
	if [ $((t % 10)) = 0 ]; then
		"$FERRY" check --vault vault --read-data >check.out 2>&1 ||
			fail "trial $t: ferry check failed: $(tail -5 check.out)"
	fi
done
"$FERRY" gc --vault vault >/dev/null 2>>clean.log || fail "gc after the trials failed"
"$FERRY" check --vault vault --read-data >check.out 2>&1 || fail "final ferry check failed: $(tail -5 check.out)"
clone_check
note "$trials trials: $agent_trials agent, $repl_trials replicator, $fs_trials ferryfs;" \
	"$kills SIGKILLs of agent or replicator, $faulted runs ended by an injected fault" \
	"($crashed of them crashes), $fs_kills SIGKILLs of ferryfs during clone writes"
note "every trial resumed; every point equals the source; the clone holds every fsynced write"
