#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Ferry from nothing to a browsable recovery point in one command. Installs
# what is missing, builds, and then, in a temporary directory: makes a sample
# VM with two disks (an ext4 "os" disk and a raw "data" disk), creates a
# vault, enables replication, runs three replication cycles with changes in
# between, lists the recovery points, mounts the vault with ferryfs, copies a
# point's image out and proves it byte-identical to the source disk as it was
# at that cycle, and reads a file from inside the old point's ext4.
# Everything it creates is removed on exit, also on failure or Ctrl-C.
# A failure names its step, the command that failed and that command's own
# error (for a failed meson setup, the end of meson-log.txt).
#
# Usage: contrib/demo.sh [--keep]   (--keep: leave the temporary directory)
# Environment: FERRY_BUILD (build dir, default build/demo), TMPDIR.
set -euo pipefail

cd "$(dirname "$0")/.." || exit
src=$PWD
build=${FERRY_BUILD:-$src/build/demo}
keep=0
for arg in "$@"; do
	case "$arg" in
	--keep) keep=1 ;;
	-h | --help)
		sed -n '4,16s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "demo: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

if [ -t 1 ]; then
	bold=$'\e[1m' green=$'\e[32m' red=$'\e[31m' off=$'\e[0m'
else
	bold='' green='' red='' off=''
fi
step=0 step_title=''
section() {
	step=$((step + 1))
	step_title=$*
	printf '\n%s== %d. %s ==%s\n' "$bold" "$step" "$*" "$off"
}
# The command that failed (set -e stops right after it; errtrace lets the
# trap see it inside functions too) and the line of this script that ran it.
failed_cmd='' failed_line=''
on_err() { # command
	local n=${#BASH_LINENO[@]}
	[ -n "$failed_line" ] || { failed_cmd=$1 failed_line=${BASH_LINENO[n - 2]}; }
}
set -o errtrace
trap 'on_err "$BASH_COMMAND"' ERR
# Shows a command the way a user would type it ($T for the temporary dir).
show() {
	local shown='' arg
	for arg in "$@"; do
		case "$arg" in
		*' '*) shown+=" '$arg'" ;;
		*) shown+=" $arg" ;;
		esac
	done
	shown=${shown# }
	[ -n "${T:-}" ] && shown=${shown//$T/\$T}
	printf '%s$ %s%s\n' "$bold" "$shown" "$off"
}
run() {
	show "$@"
	"$@"
}
pass() { printf '%s  ok%s  %s\n' "$green" "$off" "$*"; }

T='' ferryfs_pid='' loopdev=''
cleanup() {
	local rc=$?
	set +e
	if [ -n "$T" ]; then
		if mountpoint -q "$T/ext4" 2>/dev/null; then umount "$T/ext4"; fi
		if [ -n "$loopdev" ]; then losetup -d "$loopdev"; fi
		if mountpoint -q "$T/mnt" 2>/dev/null; then
			fusermount3 -u "$T/mnt" 2>/dev/null || fusermount3 -uz "$T/mnt"
		fi
	fi
	if [ -n "$ferryfs_pid" ]; then
		# ferryfs exits by itself once unmounted; do not wait forever.
		for _ in $(seq 50); do kill -0 "$ferryfs_pid" 2>/dev/null || break; sleep 0.1; done
		kill "$ferryfs_pid" 2>/dev/null
		wait "$ferryfs_pid" 2>/dev/null
	fi
	if [ -n "$T" ]; then
		if [ "$keep" = 1 ]; then
			echo "demo: kept $T"
		else
			rm -rf "$T"
		fi
	fi
	if [ "$rc" != 0 ]; then
		printf '\n%sdemo FAILED (exit status %d) in step %d (%s)%s\n' "$red" "$rc" "$step" \
			"$step_title" "$off" >&2
		if [ -n "$failed_line" ]; then
			local line
			line=$(sed -n "${failed_line}s/^[[:space:]]*//p" "$0")
			printf 'at contrib/demo.sh line %s: %s\n' "$failed_line" "$line" >&2
			# run's "$@" is the command shown with $ above.
			[ "$failed_cmd" = '"$@"' ] || printf 'failed command: %s\n' "$failed_cmd" >&2
			echo "(its own error, if it printed one, is just above)" >&2
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section "Install what is missing"
contrib/install-deps.sh --demo

section "Build (meson + ninja) in ${build#"$src"/}"
if [ ! -f "$build/build.ninja" ]; then
	# Quiet when it works; when it fails, meson's own words and its log.
	mkdir -p "$(dirname "$build")"
	if ! meson setup "$build" "$src" --buildtype=debugoptimized >"$build.setup.log" 2>&1; then
		tail -n 20 "$build.setup.log" >&2
		contrib/check-deps.sh --explain "$build" >&2 || true
		echo "demo: meson setup failed (its output: $build.setup.log)" >&2
		exit 1
	fi
fi
ninja -C "$build"
export PATH="$build/replicator:$build/fs:$PATH"
for prog in ferry ferry-agent ferry-replicator ferryfs; do
	command -v "$prog" >/dev/null || { echo "demo: $prog was not built" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
mkdir -p "$T/staging" "$T/sources" "$T/mnt" "$T/restore" "$T/ext4"
echo "working in T=$T"

section "A sample VM with two disks: os (64 MiB ext4) and data (32 MiB raw)"
mkdir -p "$T/staging/etc" "$T/staging/home/demo" "$T/staging/var/log"
echo demo >"$T/staging/etc/hostname"
printf 'PRETTY_NAME="Ferry demo VM"\nID=ferry-demo\n' >"$T/staging/etc/os-release"
echo "cycle 1: the original notes" >"$T/staging/home/demo/notes.txt"
seq 1 2000 | sed 's/^/boot message /' >"$T/staging/var/log/boot.log"
head -c 3M /dev/urandom >"$T/staging/home/demo/photo.raw"
truncate -s 64M "$T/os.img"
run mkfs.ext4 -q -F -b 4096 -L demo-os -d "$T/staging" "$T/os.img"
# The data disk: random data in places, holes elsewhere (which the agent
# skips without reading zeros).
truncate -s 32M "$T/data.img"
run dd if=/dev/urandom of="$T/data.img" bs=1M count=4 conv=notrunc status=none
run dd if=/dev/urandom of="$T/data.img" bs=1M count=2 seek=16 conv=notrunc status=none
for img in os data; do
	echo "$img.img: $(du --apparent-size -h "$T/$img.img" | cut -f1), allocated $(du -h "$T/$img.img" | cut -f1)"
done

section "Create a vault and enable replication of VM 'demo'"
run ferry init --vault "$T/vault"
run ferry enable-replication --vault "$T/vault" --vm demo \
	--disk os="$T/os.img" --disk data="$T/data.img" --crash-interval 0

# One replication cycle: the agent ships what changed to the cache, the
# replicator applies it and cuts a recovery point (crash interval 0: every
# cycle's marker becomes a point). The source disks are saved as they were
# at the cycle so that every point can be compared with them afterwards.
cycle() {
	local n=$1
	run ferry-agent --config "$T/vault/agents/demo.conf" --once
	run ferry-replicator --vault "$T/vault" --once
	cp --sparse=always "$T/os.img" "$T/sources/os.$n.img"
	cp --sparse=always "$T/data.img" "$T/sources/data.$n.img"
}
# Writes a file into the ext4 image in place (debugfs works on the image
# itself: no mount, no root). debugfs exits 0 even when a request fails:
# success is the file being there afterwards, and otherwise its words.
ext4_write() { # image local-file path
	local out
	out=$(debugfs -w -R "write $2 $3" "$1" 2>&1) || true
	if [[ "$(debugfs -R "stat $3" "$1" 2>/dev/null)" != *Inode:* ]]; then
		echo "demo: debugfs could not write $3 into ${1//$T/\$T}:" >&2
		printf '%s\n' "${out//$T/\$T}" | sed 's/^/    /' >&2
		return 1
	fi
}
ext4_put() { # image path content
	printf '%s\n' "$3" >"$T/put.tmp"
	debugfs -w -R "rm $2" "$1" >/dev/null 2>&1 || true
	ext4_write "$1" "$T/put.tmp" "$2"
}
ext4_cat() { debugfs -R "cat $2" "$1" 2>/dev/null; }

section "Cycle 1: initial replication"
cycle 1

section "Change both disks, cycle 2"
ext4_put "$T/os.img" /home/demo/notes.txt "cycle 2: notes rewritten"
ext4_put "$T/os.img" /home/demo/todo.txt "cycle 2: a new file"
echo "wrote /home/demo/notes.txt and /home/demo/todo.txt into the os disk"
# Scattered 4 KiB writes, the way VMs write.
for blk in $(shuf -i 0-8191 -n 64); do
	dd if=/dev/urandom of="$T/data.img" bs=4K count=1 seek="$blk" conv=notrunc status=none
done
echo "wrote 64 random 4 KiB blocks at random places of the data disk"
cycle 2

section "Change both disks again, cycle 3"
head -c 1M /dev/urandom >"$T/big.tmp"
ext4_write "$T/os.img" "$T/big.tmp" /home/demo/download.bin
ext4_put "$T/os.img" /home/demo/notes.txt "cycle 3: notes rewritten again"
echo "wrote /home/demo/download.bin (1 MiB) and rewrote notes.txt in the os disk"
run dd if=/dev/urandom of="$T/data.img" bs=1M count=1 seek=8 conv=notrunc status=none
run fallocate --punch-hole --offset 1M --length 1M "$T/data.img"
cycle 3

section "Status and recovery points"
run ferry status --vault "$T/vault"
run ferry recovery-points --vault "$T/vault" demo

section "Mount the vault with ferryfs"
ferryfs --vault "$T/vault" "$T/mnt" -f &
ferryfs_pid=$!
show ferryfs --vault "$T/vault" "$T/mnt"
for _ in $(seq 100); do
	mountpoint -q "$T/mnt" && break
	kill -0 "$ferryfs_pid" 2>/dev/null || { echo "demo: ferryfs exited" >&2; exit 1; }
	sleep 0.1
done
mountpoint -q "$T/mnt" || { echo "demo: ferryfs did not mount within 10 s" >&2; exit 1; }
show cd "$T/mnt" "&&" find . -maxdepth 4
# Sorted by path component, so that a point's files follow the point.
(cd "$T/mnt" && find . -maxdepth 4 | LC_ALL=C sort -t/ -k2,2 -k3,3 -k4,4 -k5,5)
echo
run cat "$T/mnt/demo/vm.conf"

section "Every recovery point equals the source disks as they were at its cycle"
rp=$T/mnt/demo/recovery-points
# ferry recovery-points lists oldest first, one point a line, its id
# (UTC time, ISO 8601 basic form) first.
mapfile -t points < <(ferry recovery-points --vault "$T/vault" demo | grep -oE '^[0-9]{8}T[0-9]{6}Z[^[:space:]]*')
if [ "${#points[@]}" != 3 ]; then
	echo "demo: expected 3 recovery points, found ${#points[@]}: ${points[*]}" >&2
	exit 1
fi
for i in 0 1 2; do
	n=$((i + 1))
	run cat "$rp/${points[$i]}/info"
	for disk in os data; do
		cmp "$rp/${points[$i]}/$disk.img" "$T/sources/$disk.$n.img"
		pass "point ${points[$i]} $disk.img == source $disk disk at cycle $n"
	done
done
for disk in os data; do
	cmp "$T/mnt/demo/disks/$disk.img" "$T/$disk.img"
	pass "live image disks/$disk.img == source $disk disk now"
done
run readlink "$rp/latest"
# Recovery points are immutable, and the mount says so.
show dd if=/dev/zero of="$rp/latest/os.img" bs=4K count=1 conv=notrunc
if err=$(dd if=/dev/zero of="$rp/latest/os.img" bs=4K count=1 conv=notrunc 2>&1); then
	echo "demo: a write into a recovery point succeeded" >&2
	exit 1
fi
echo "${err//$T/\$T}" | head -n 1
pass "writes are refused"

section "Copy the oldest point's os disk out and look inside its ext4"
old=${points[0]}
run cp --sparse=always "$rp/$old/os.img" "$T/restore/os.img"
cmp "$T/restore/os.img" "$T/sources/os.1.img"
pass "copy is byte-identical to the os disk at cycle 1"
echo "size $(du --apparent-size -h "$T/restore/os.img" | cut -f1), allocated $(du -h "$T/restore/os.img" | cut -f1) (holes stay holes)"
run debugfs -R "ls -l /home/demo" "$T/restore/os.img" 2>/dev/null
show debugfs -R "cat /home/demo/notes.txt" "$T/restore/os.img"
notes_old=$(ext4_cat "$T/restore/os.img" /home/demo/notes.txt)
echo "$notes_old"
echo "  (and in the source disk now: $(ext4_cat "$T/os.img" /home/demo/notes.txt))"
if [ "$notes_old" != "cycle 1: the original notes" ]; then
	echo "demo: notes.txt in point $old reads '$notes_old'" >&2
	exit 1
fi
pass "the old point holds the old file"

# Loop devices need root; the point is mounted straight from ferryfs, no copy.
if [ "$(id -u)" = 0 ] && loopdev=$(losetup -r -f --show "$rp/$old/os.img" 2>/dev/null); then
	show losetup -r -f --show "$rp/$old/os.img"
	echo "$loopdev"
	run mount -o ro,noload "$loopdev" "$T/ext4"
	run ls -l "$T/ext4/home/demo"
	cmp "$T/ext4/home/demo/notes.txt" "$T/staging/home/demo/notes.txt"
	cmp "$T/ext4/home/demo/photo.raw" "$T/staging/home/demo/photo.raw"
	pass "ext4 of point $old loop-mounted read-only from ferryfs; its files match"
	umount "$T/ext4"
	losetup -d "$loopdev"
	loopdev=''
else
	echo "(not root or no loop device: skipped loop-mounting the point; debugfs above needs neither)"
fi

section "Verify the vault"
run ferry check --vault "$T/vault" --read-data

section "Unmount"
run fusermount3 -u "$T/mnt"
wait "$ferryfs_pid" || true
ferryfs_pid=''

section "Summary"
src_bytes=$(($(du -B1 "$T/os.img" | cut -f1) + $(du -B1 "$T/data.img" | cut -f1)))
cat <<EOF
VM 'demo' with two disks (os: 64 MiB ext4, data: 32 MiB raw) was replicated
through 3 cycles into a vault: 3 recovery points, each byte-identical to the
source disks at its cycle, browsable through ferryfs, copied out sparse, and
read from inside (ext4 files of cycle 1).
  source disks allocated:  $(numfmt --to=iec "$src_bytes")
  vault on disk:           $(du -sh "$T/vault" | cut -f1)
EOF
if [ "$keep" = 1 ]; then
	echo "All of it is in $T (kept: remove it by hand)."
else
	echo "All of it lived in $T, which is removed now."
fi
printf '%sdemo passed%s\n' "$green" "$off"
