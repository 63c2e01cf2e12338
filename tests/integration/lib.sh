# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared helpers for the integration tests: where the programs are, a
# scratch directory removed on exit (with any ferryfs mount in it), and
# small assertions. Source it; tests exit 0 (pass), 1 (fail) or 77 (skip,
# with the reason printed).
set -euo pipefail

BUILD=${FERRY_BUILD:?FERRY_BUILD must point at the meson build directory}
SOURCE=${FERRY_SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FERRY=$BUILD/replicator/ferry
AGENT=$BUILD/replicator/ferry-agent
REPLICATOR=$BUILD/replicator/ferry-replicator
FERRYFS=$BUILD/fs/ferryfs

T=$(mktemp -d /tmp/ferry-it.XXXXXX)
MOUNTS=()
LOOPS=()   # mount points of kernel mounts (loop, tmpfs)
DEVS=()    # loop devices
PIDS=()

cleanup() {
	local m l p
	for l in "${LOOPS[@]}"; do umount "$l" 2>/dev/null || true; done
	for l in "${DEVS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	for m in "${MOUNTS[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	local log
	for log in "${MOUNTS[@]/%/.log}"; do
		[ -s "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
	done
	exit 1
}
skip() { echo "SKIP: $*" >&2; exit 77; }
note() { echo "# $*"; }

# Runs "$@" and fails the test unless it exits non-zero.
must_fail() {
	if "$@" >"$T/must_fail.out" 2>&1; then
		cat "$T/must_fail.out" >&2
		fail "expected failure: $*"
	fi
}

need_fuse() {
	[ -e /dev/fuse ] || skip "no /dev/fuse on this machine"
	command -v fusermount3 >/dev/null || skip "fusermount3 missing (Debian package fuse3)"
}

# mount_vault VAULT MOUNTPOINT: ferryfs in the foreground, its log kept
# next to the mount point (shown when a test fails).
mount_vault() {
	mkdir -p "$2"
	"$FERRYFS" -f --vault "$1" "$2" 2>>"$2.log" &
	PIDS+=($!)
	MOUNTS+=("$2")
	local i
	for i in $(seq 100); do
		mountpoint -q "$2" && return 0
		kill -0 $! 2>/dev/null || break
		sleep 0.05
	done
	fail "ferryfs could not mount $1: $(cat "$2.log")"
}

# As mount_vault, but ferryfs detaches as a daemon the way users run it.
mount_vault_detached() { # VAULT MOUNTPOINT [FERRYFS OPTIONS...]
	mkdir -p "$2"
	"$FERRYFS" --vault "$1" "$2" "${@:3}" || fail "ferryfs could not mount $1"
	MOUNTS+=("$2")
}

unmount_vault() {
	fusermount3 -u "$1" || fail "cannot unmount $1"
}

# A cycle: one agent pass, then one replicator pass.
cycle() { # VAULT VM
	"$AGENT" --config "$1/agents/$2.conf" --once || fail "agent cycle failed"
	"$REPLICATOR" --vault "$1" --once || fail "replicator pass failed"
}

# Writes COUNT random 4 KiB blocks at seeded random offsets into FILE (a
# file or a block device).
scatter_writes() { # FILE COUNT SEED
	python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(path, "r+b") as f:
    size = f.seek(0, os.SEEK_END)
    for _ in range(count):
        f.seek(rng.randrange(size // 4096) * 4096)
        f.write(rng.randbytes(4096))
PY
}

# Random but reproducible bytes.
seeded_bytes() { # COUNT SEED
	head -c "$1" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' "$2")" -iv 0 2>/dev/null
}

points_of() { # VAULT VM
	"$FERRY" recovery-points --vault "$1" "$2" | awk '{print $1}'
}

# Waits up to 20 s for VM to have N recovery points while the replicator
# daemon PID runs; prints the seconds it took. WHY says what a timeout
# would mean.
await_points() { # VAULT VM N PID LOG WHY
	local start=$SECONDS
	until [ "$(points_of "$1" "$2" | grep -c . || true)" -ge "$3" ]; do
		[ $((SECONDS - start)) -lt 20 ] ||
			fail "cycle $3's marker was not applied within 20 s ($6): $(tail -20 "$5")"
		kill -0 "$4" 2>/dev/null || fail "the replicator died: $(tail -20 "$5")"
		sleep 0.1
	done
	echo $((SECONDS - start))
}

# qsd_start FORMAT FILE: a qemu-storage-daemon serving $T/FILE (raw or
# qcow2) as block node disk0, with two QMP monitors ($T/ferry.qmp for the
# agent, $T/test.qmp for the test), its NBD server on $T/nbd.sock and a
# writable NBD export "rw" of the disk, through which the test writes as a
# guest would (qsd_write). Sets qsd_pid.
qsd_start() {
	rm -f "$T/nbd.sock" "$T/ferry.qmp" "$T/test.qmp"
	qemu-storage-daemon \
		--chardev socket,id=m0,path="$T/ferry.qmp",server=on,wait=off --monitor chardev=m0 \
		--chardev socket,id=m1,path="$T/test.qmp",server=on,wait=off --monitor chardev=m1 \
		--blockdev driver=file,node-name=file0,filename="$T/$2",discard=unmap \
		--blockdev driver="$1",node-name=disk0,file=file0,discard=unmap \
		--nbd-server addr.type=unix,addr.path="$T/nbd.sock" \
		--export type=nbd,id=rw0,node-name=disk0,name=rw,writable=on 2>>"$T/qsd.log" &
	qsd_pid=$!
	PIDS+=("$qsd_pid")
	local i
	for i in $(seq 100); do
		[ -S "$T/nbd.sock" ] && [ -S "$T/ferry.qmp" ] && return 0
		sleep 0.05
	done
	fail "qemu-storage-daemon did not start: $(cat "$T/qsd.log")"
}

# The daemon's writable export, as a qemu URL; qsd_write QEMU-IO-COMMAND
# makes one write through it.
qsd_url() { echo "nbd+unix:///rw?socket=$T/nbd.sock"; }
qsd_write() {
	qemu-io -f raw "$(qsd_url)" -c "$1" >/dev/null || fail "qemu-io '$1' failed"
}
