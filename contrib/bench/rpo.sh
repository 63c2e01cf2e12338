#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# End-to-end replication lag (RPO): the time from a write completed at the
# source to the moment its bytes are visible in the target's live image
# (ferryfs: MNT/<vm>/disks/<disk>.img). A writer (rpo-load.c) writes random
# 4-64 KiB blocks at random 4 KiB-aligned offsets at a fixed rate, each block
# stamped; a checker rereads the live image with O_DIRECT every 50 ms and
# notes when each stamp appears. Agent (daemon, --interval 2) and replicator
# (daemon, its default options) run as deployed; a fresh vault per run.
# Phases:
#   rates  qemu tracker (qemu-storage-daemon, writes through its writable NBD
#          export) and scan tracker (plain file, pwrite+fsync) side by side at
#          each rate: lag p50/p95/p99/max, agent CPU and peak RSS, bytes the
#          agent read ("scanned") against bytes written;
#   cycle  the qemu tracker's cycle time (<state>/stats duration_ms) for the
#          same churn (same seed, writes within the first RPO_CYCLE_REGION) on
#          sparse disks of each size;
#   vms    N VMs (one qemu-storage-daemon and one agent each) into one vault,
#          one replicator, one ferryfs, RPO_VM_RATE each.
# Writes OUTDIR/results.md (tables), results.tsv, lags.tsv (every write:
# completed, visible, lag), cycles.tsv (every agent cycle seen), logs in log/.
#
# Usage: contrib/bench/rpo.sh            (as root: FUSE mounts, apt)
# Environment (defaults in brackets):
#   RPO_SECONDS    seconds of writes per run [120]
#   RPO_RATES      MB/s (10^6 B/s) for the rates phase ["1 5 20"]
#   RPO_TRACKERS   ["qemu scan"]
#   RPO_SIZE       disk size, rates phase [4G]; RPO_FILL initial data [size/4]
#   RPO_INTERVAL   agent --interval [2]; RPO_REPL_ARGS replicator options [none]
#   RPO_CYCLE_SIZES ["1G 64G"]; RPO_CYCLE_RATE MB/s [5]; RPO_CYCLE_REGION [1G];
#                  RPO_CYCLE_FILL [256M]; RPO_CYCLE_SECONDS [RPO_SECONDS]
#   RPO_VMS        VM counts ["1 10 50"]; RPO_VM_RATE MB/s per VM [0.1];
#                  RPO_VM_SIZE [1G]; RPO_VM_FILL [16M]; RPO_VM_SECONDS [RPO_SECONDS]
#   RPO_DRAIN      seconds to wait for the last writes after the writers stop [60]
#   RPO_SWEEP_MS   checker period [50]; with N VMs at least 5*N ms
#   PHASES         subset of "rates cycle vms" [all]
#   RPO_DATA       disks, vaults, mounts [/tmp/ferry-rpo]; sockets live here
#                  too, so keep it short; OUTDIR [$RPO_DATA/results-<UTC stamp>]
#   FERRY_BUILD    Ferry build dir, buildtype=release [<src>/build/bench]
#   SKIP_DEPS=1    no apt; KEEP=1 keep the disks and vaults of the last run
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
SRCROOT=$(cd "$HERE/../.." && pwd)
SECONDS_RUN=${RPO_SECONDS:-120}
RATES=${RPO_RATES:-"1 5 20"}
TRACKERS=${RPO_TRACKERS:-"qemu scan"}
SIZE=${RPO_SIZE:-4G}
INTERVAL=${RPO_INTERVAL:-2}
REPL_ARGS=${RPO_REPL_ARGS:-}
CYCLE_SIZES=${RPO_CYCLE_SIZES:-"1G 64G"}
CYCLE_RATE=${RPO_CYCLE_RATE:-5}
CYCLE_REGION=${RPO_CYCLE_REGION:-1G}
CYCLE_FILL=${RPO_CYCLE_FILL:-256M}
CYCLE_SECONDS=${RPO_CYCLE_SECONDS:-$SECONDS_RUN}
VMS=${RPO_VMS:-"1 10 50"}
VM_RATE=${RPO_VM_RATE:-0.1}
VM_SIZE=${RPO_VM_SIZE:-1G}
VM_FILL=${RPO_VM_FILL:-16M}
VM_SECONDS=${RPO_VM_SECONDS:-$SECONDS_RUN}
DRAIN=${RPO_DRAIN:-60}
SWEEP_MS=${RPO_SWEEP_MS:-50}
PHASES=${PHASES:-"rates cycle vms"}
DATA=${RPO_DATA:-/tmp/ferry-rpo}
OUTDIR=${OUTDIR:-$DATA/results-$(date -u +%Y%m%dT%H%M%SZ)}
BUILD=${FERRY_BUILD:-$SRCROOT/build/bench}
KEEP=${KEEP:-0}
READY_TIMEOUT=${RPO_READY_TIMEOUT:-1800}

case "${1:-}" in
-h | --help)
	sed -n '4,44s/^# \{0,1\}//p' "$0"
	exit 0
	;;
"") ;;
*)
	echo "rpo: unknown argument: $1 (settings are environment variables, see --help)" >&2
	exit 2
	;;
esac

if [ "$(id -u)" != 0 ]; then
	echo "rpo: run as root: it mounts FUSE file systems and resets peak RSS in /proc" >&2
	exit 1
fi

SIZE_BYTES=$(numfmt --from=iec "$SIZE") || exit 2
FILL=${RPO_FILL:-$((SIZE_BYTES / 4))}
FILL_BYTES=$(numfmt --from=iec "$FILL") || exit 2
CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$DATA" "$OUTDIR" && DATA=$(cd "$DATA" && pwd) && OUTDIR=$(cd "$OUTDIR" && pwd) || exit 1
LOG=$OUTDIR/log
RES=$OUTDIR/results.tsv
LAGS=$OUTDIR/lags.tsv
CYCLES=$OUTDIR/cycles.tsv
mkdir -p "$LOG"
printf 'run\tmetric\tunit\tvalue\n' >"$RES"
printf 'run\tlabel\tseq\toffset\tlength\tcompleted_s\tvisible_s\tlag_s\tstatus\n' >"$LAGS"
printf 'run\tepoch\tcycle\tduration_ms\tscanned_bytes\tshipped_bytes\n' >"$CYCLES"

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
rec() {
	printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"
	say "  $1 $2 = $4 $3"
}
mb2b() { awk -v m="$1" 'BEGIN{printf "%.0f", m*1e6}'; }

# ---------------------------------------------------------------- processes
# Everything started in the background is in one of these, and stopped by
# stop_all (after each run, and on exit): first the load, pollers, agents and
# replicators, then the ferryfs mounts, then the qemu-storage-daemons.
PROCS=() FSPIDS=() QSDS=() MOUNTS=()
stop_pids() {
	local p i alive
	for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
	for i in $(seq 1 100); do
		alive=0
		for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for p in "$@"; do kill -KILL "$p" 2>/dev/null; done
	for p in "$@"; do wait "$p" 2>/dev/null; done
}
stop_all() {
	local m i
	local -a rev=()
	for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do rev+=("${PROCS[i]}"); done
	[ ${#rev[@]} -gt 0 ] && stop_pids "${rev[@]}"
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" 2>/dev/null &&
			{ fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; }
	done
	[ ${#FSPIDS[@]} -gt 0 ] && stop_pids "${FSPIDS[@]}"
	[ ${#QSDS[@]} -gt 0 ] && stop_pids "${QSDS[@]}"
	PROCS=() FSPIDS=() QSDS=() MOUNTS=()
}
cleanup() {
	local rc=$?
	set +e
	trap - INT TERM
	stop_all
	[ "$KEEP" = 1 ] || rm -rf "$DATA/run"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# cpu_s PID: user+system CPU seconds of a live process.
cpu_s() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	# fields after the name: state is 1, utime 12, stime 13
	awk -v t="$CLK_TCK" '{printf "%.2f", ($12 + $13) / t}' <<<"$s"
}
hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null; }
fsize() { stat -c %s "$1" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- setup
deps() {
	[ "${SKIP_DEPS:-0}" = 1 ] && return 0
	# --bench brings qemu-system-x86 (qemu-storage-daemon); the build
	# packages bring libnbd-dev for rpo-load.
	"$SRCROOT/contrib/install-deps.sh" --bench || exit 1
}

build() {
	say "building Ferry (release) in $BUILD"
	if [ ! -f "$BUILD/build.ninja" ]; then
		meson setup "$BUILD" "$SRCROOT" --buildtype=release >"$LOG/meson.log" 2>&1 ||
			{ cat "$LOG/meson.log" >&2; exit 1; }
	fi
	ninja -C "$BUILD" >"$LOG/ninja.log" 2>&1 || { tail -30 "$LOG/ninja.log" >&2; exit 1; }
	FERRY=$BUILD/replicator/ferry
	AGENT=$BUILD/replicator/ferry-agent
	REPLICATOR=$BUILD/replicator/ferry-replicator
	FERRYFS=$BUILD/fs/ferryfs
	local p
	for p in "$FERRY" "$AGENT" "$REPLICATOR" "$FERRYFS"; do
		[ -x "$p" ] || { say "not built: $p"; exit 1; }
	done
	LOAD=$DATA/bin/rpo-load
	mkdir -p "$DATA/bin"
	# shellcheck disable=SC2046
	cc -O2 -Wall -pthread -o "$LOAD" "$HERE/rpo-load.c" $(pkg-config --cflags --libs libnbd) \
		>"$LOG/rpo-load.build.log" 2>&1 || { cat "$LOG/rpo-load.build.log" >&2; exit 1; }
	echo "$(git -C "$SRCROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
		git -C "$SRCROOT" status --porcelain 2>/dev/null | grep -q . && echo +dirty)" \
		>"$OUTDIR/ferry-commit.txt"
}

machine() {
	{
		echo "date_utc: $(date -u +%FT%TZ)"
		echo "kernel: $(uname -r)"
		echo "cpu: $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}')"
		echo "nproc: $(nproc)"
		echo "mem: $(free -m | awk '/Mem:/{print $2}') MiB"
		echo "data fs: $(findmnt -n -o FSTYPE,SOURCE -T "$DATA" | head -1)"
		echo "ferry: $(cat "$OUTDIR/ferry-commit.txt") ($("$FERRY" --version 2>&1 | head -1))"
		echo "qemu-storage-daemon: $(qemu-storage-daemon --version 2>&1 | head -1)"
		echo "libnbd: $(pkg-config --modversion libnbd)"
		echo "settings: RPO_SECONDS=$SECONDS_RUN RPO_RATES='$RATES' RPO_TRACKERS='$TRACKERS'" \
			"RPO_SIZE=$SIZE RPO_FILL=$FILL_BYTES RPO_INTERVAL=$INTERVAL" \
			"RPO_REPL_ARGS='$REPL_ARGS' RPO_CYCLE_SIZES='$CYCLE_SIZES'" \
			"RPO_CYCLE_RATE=$CYCLE_RATE RPO_CYCLE_REGION=$CYCLE_REGION" \
			"RPO_CYCLE_FILL=$CYCLE_FILL RPO_CYCLE_SECONDS=$CYCLE_SECONDS RPO_VMS='$VMS'" \
			"RPO_VM_RATE=$VM_RATE RPO_VM_SIZE=$VM_SIZE RPO_VM_FILL=$VM_FILL" \
			"RPO_VM_SECONDS=$VM_SECONDS RPO_DRAIN=$DRAIN RPO_SWEEP_MS=$SWEEP_MS PHASES='$PHASES'"
		echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; >0.5 means other work shares the CPUs)"
	} >"$OUTDIR/machine.txt"
	sed 's/^/  /' "$OUTDIR/machine.txt" >&2
}

# ---------------------------------------------------------------- pieces of a run
# qsd_start DIR : a qemu-storage-daemon serving DIR/disk.img as node disk0,
# Ferry's QMP monitor DIR/q.qmp, its NBD server DIR/nbd.sock with the
# writable export "rw" (the "VM" writes through it).
qsd_start() {
	local d=$1 i
	rm -f "$d/q.qmp" "$d/nbd.sock"
	qemu-storage-daemon \
		--chardev socket,id=m0,path="$d/q.qmp",server=on,wait=off --monitor chardev=m0 \
		--blockdev driver=file,node-name=file0,filename="$d/disk.img",discard=unmap \
		--blockdev driver=raw,node-name=disk0,file=file0,discard=unmap \
		--nbd-server addr.type=unix,addr.path="$d/nbd.sock" \
		--export type=nbd,id=rw0,node-name=disk0,name=rw,writable=on \
		>>"$d/qsd.log" 2>&1 &
	QSDS+=($!)
	for i in $(seq 1 200); do
		[ -S "$d/nbd.sock" ] && [ -S "$d/q.qmp" ] && return 0
		kill -0 "${QSDS[-1]}" 2>/dev/null || break
		sleep 0.05
	done
	say "qemu-storage-daemon did not start: $(tail -5 "$d/qsd.log")"
	exit 1
}

# enable VAULT VM TRACKER DIR : registers the VM (one disk d0).
enable() {
	local v=$1 vm=$2 tr=$3 d=$4
	if [ "$tr" = qemu ]; then
		"$FERRY" enable-replication --vault "$v" --vm "$vm" --tracker qemu --qmp "$d/q.qmp" \
			--nbd-socket "$d/nbd.sock" --disk d0=disk0 --interval "$INTERVAL"
	else
		"$FERRY" enable-replication --vault "$v" --vm "$vm" --disk "d0=$d/disk.img" \
			--interval "$INTERVAL"
	fi >>"$LOG/$RUN.setup.log" 2>&1 || { say "enable-replication failed, see $LOG/$RUN.setup.log"; exit 1; }
}

# start_target VAULT MNT : replicator (daemon, its defaults plus RPO_REPL_ARGS)
# and ferryfs; sets REPL_PID, FS_PID.
start_target() {
	local v=$1 mnt=$2 i
	# shellcheck disable=SC2086
	"$REPLICATOR" --vault "$v" $REPL_ARGS 2>>"$LOG/$RUN.replicator.log" &
	REPL_PID=$!
	PROCS+=("$REPL_PID")
	mkdir -p "$mnt"
	"$FERRYFS" -f --vault "$v" "$mnt" 2>>"$LOG/$RUN.ferryfs.log" &
	FS_PID=$!
	FSPIDS+=("$FS_PID")
	MOUNTS+=("$mnt")
	for i in $(seq 1 200); do
		mountpoint -q "$mnt" && return 0
		kill -0 "$FS_PID" 2>/dev/null || break
		sleep 0.05
	done
	say "ferryfs did not mount, see $LOG/$RUN.ferryfs.log"
	exit 1
}

# start_agent VAULT VM : a daemon, one cycle every INTERVAL s; sets AGENT_PID.
start_agent() {
	"$AGENT" --config "$1/agents/$2.conf" --interval "$INTERVAL" 2>>"$LOG/$RUN.agent.$2.log" &
	PROCS+=($!)
	AGENT_PID=$!
}

# wait_ready VAULT NVMS FILE... : every VM protected (initial replication
# applied), no segment waiting, every live image visible.
wait_ready() {
	local v=$1 n=$2 t0=$SECONDS st f ok p
	shift 2
	say "  waiting for the initial replication"
	while :; do
		ok=1
		st=$("$FERRY" status --vault "$v" --json 2>/dev/null) || ok=0
		[ "$ok" = 1 ] && [ "$(grep -c '"state":"protected"' <<<"$st")" = "$n" ] || ok=0
		[ "$ok" = 1 ] && [ "$(grep -c '"pending_segments":0,' <<<"$st")" = "$n" ] || ok=0
		if [ "$ok" = 1 ]; then
			for f in "$@"; do [ -e "$f" ] || { ok=0; break; }; done
		fi
		[ "$ok" = 1 ] && break
		for p in "${PROCS[@]}" "${QSDS[@]}" "${FSPIDS[@]}"; do
			kill -0 "$p" 2>/dev/null || { say "a process of the run died (pid $p), see $LOG/$RUN.*"; exit 1; }
		done
		[ $((SECONDS - t0)) -lt "$READY_TIMEOUT" ] ||
			{ say "initial replication not done after $READY_TIMEOUT s"; exit 1; }
		sleep 0.5
	done
	rec "$RUN" initial_sync_s s $((SECONDS - t0))
}

# poll_cycles STATEDIR : appends each new cycle of <state>/stats to cycles.tsv.
poll_cycles() {
	local st=$1/stats last='' k v c d s sh
	while :; do
		if [ -f "$st" ]; then
			c='' d='' s='' sh=''
			while IFS='=' read -r k v; do
				case $k in
				cycle) c=$v ;;
				duration_ms) d=$v ;;
				scanned_bytes) s=$v ;;
				cycle_shipped_bytes) sh=$v ;;
				esac
			done <"$st"
			if [ -n "$c" ] && [ -n "$d" ] && [ "$c" != "$last" ]; then
				printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$RUN" "$EPOCHREALTIME" "$c" "$d" "$s" "$sh" >>"$CYCLES"
				last=$c
			fi
		fi
		sleep 0.25
	done
}

# agent_scanned LOG FROM_BYTE : bytes scanned and shipped by the cycles the
# agent logged after FROM_BYTE ("cycle N done: scanned X bytes, shipped Y").
agent_scanned() {
	tail -c +"$(($2 + 1))" "$1" 2>/dev/null | awk '
		/ done: scanned / { for (i = 1; i < NF; i++) {
			if ($i == "scanned") s += $(i+1); if ($i == "shipped" && $(i+2) == "bytes") h += $(i+1) }
			n++ }
		END { printf "%.0f %.0f %d\n", s, h, n }'
}

# load_run SECONDS RATE_BPS EXTRA_OPTS TRIPLES... : runs rpo-load in the
# background (so that a signal stops the script at once), appends its
# writes to lags.tsv and leaves its summary in $LOG/$RUN.load.out.
load_run() {
	local secs=$1 rate=$2 extra=$3 pid rc
	shift 3
	# shellcheck disable=SC2086
	"$LOAD" run --seconds "$secs" --rate "$rate" --drain "$DRAIN" --out "$LOG/$RUN.lags.tsv" \
		$extra "$@" >"$LOG/$RUN.load.out" 2>"$LOG/$RUN.load.err" &
	pid=$!
	PROCS+=("$pid")
	wait "$pid"
	rc=$?
	[ "$rc" = 0 ] || { say "rpo-load failed (rc $rc): $(tail -3 "$LOG/$RUN.load.err")"; exit 1; }
	awk -v r="$RUN" 'NR > 1 { print r "\t" $0 }' "$LOG/$RUN.lags.tsv" >>"$LAGS"
	rm -f "$LOG/$RUN.lags.tsv"
	sed 's/^/    /' "$LOG/$RUN.load.out" >&2
}

# load_summary : records rpo-load's totals over all its labels.
load_summary() {
	awk -v r="$RUN" '
		/^label=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } ; n++ }
		/^sweeps=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); s[kv[1]] = kv[2] } }
		END {
			printf "%s\twrites\tn\t%d\n", r, v["writes"]
			printf "%s\twritten_bytes\tB\t%.0f\n", r, v["bytes"]
			printf "%s\tachieved_Bps\tB/s\t%.0f\n", r, v["achieved_Bps"]
			printf "%s\tseen\tn\t%d\n", r, v["seen"]
			printf "%s\tsuperseded\tn\t%d\n", r, v["superseded"]
			printf "%s\tunseen\tn\t%d\n", r, v["unseen"]
			printf "%s\twriter_late_resets\tn\t%d\n", r, v["late_resets"]
			printf "%s\tsweep_mean_ms\tms\t%s\n", r, s["sweep_mean_ms"]
			printf "%s\tsweep_max_ms\tms\t%s\n", r, s["sweep_max_ms"]
			printf "%s\tsweep_interval_ms\tms\t%s\n", r, s["sweep_interval_ms"]
		}' "$LOG/$RUN.load.out" >>"$RES"
}

# ---------------------------------------------------------------- runs
# single TRACKER SIZE FILL REGION SECONDS RATE_MB : one VM, one disk.
single() {
	local tr=$1 size=$2 fill=$3 region=$4 secs=$5 rate=$6
	local d=$DATA/run/$RUN v mnt wr c0 c1 r0 r1 f0 f1 off s h n poll h0
	say "== $RUN: $tr tracker, $(numfmt --to=iec "$size") disk, $(numfmt --to=iec "$fill") data, $rate MB/s for $secs s"
	rm -rf "$DATA/run" && mkdir -p "$d" || exit 1
	v=$d/vault mnt=$d/mnt
	rec "$RUN" loadavg_before 1min "$(cut -d' ' -f1 /proc/loadavg)"
	"$LOAD" fill "$d/disk.img" "$size" "$fill" 7 || exit 1
	if [ "$tr" = qemu ]; then
		qsd_start "$d"
		wr="nbd+unix:///rw?socket=$d/nbd.sock"
	else
		wr="file:$d/disk.img"
	fi
	"$FERRY" init --vault "$v" >>"$LOG/$RUN.setup.log" 2>&1 || { say "ferry init failed"; exit 1; }
	enable "$v" vm "$tr" "$d"
	start_target "$v" "$mnt"
	start_agent "$v" vm
	wait_ready "$v" 1 "$mnt/vm/disks/d0.img"
	h0=$(hwm_kib "$AGENT_PID")
	rec "$RUN" agent_peak_rss_initial KiB "$h0"
	# The measured window: from the first write to the last write seen.
	reset_hwm "$AGENT_PID"
	reset_hwm "$REPL_PID"
	c0=$(cpu_s "$AGENT_PID") r0=$(cpu_s "$REPL_PID") f0=$(cpu_s "$FS_PID")
	off=$(fsize "$LOG/$RUN.agent.vm.log")
	poll_cycles "$v/agents/vm.state" &
	poll=$!
	PROCS+=("$poll")
	load_run "$secs" "$(mb2b "$rate")" "--sweep-ms $SWEEP_MS --region $region" \
		vm "$wr" "$mnt/vm/disks/d0.img"
	c1=$(cpu_s "$AGENT_PID") r1=$(cpu_s "$REPL_PID") f1=$(cpu_s "$FS_PID")
	read -r s h n <<<"$(agent_scanned "$LOG/$RUN.agent.vm.log" "$off")"
	load_summary
	rec "$RUN" window_s s "$(awk -F= '/^start_epoch/{a=$2} /^end_epoch/{b=$2} END{printf "%.1f", b-a}' "$LOG/$RUN.load.out")"
	rec "$RUN" write_start_epoch s "$(awk -F= '/^start_epoch/{print $2}' "$LOG/$RUN.load.out")"
	rec "$RUN" write_seconds s "$secs"
	rec "$RUN" agent_interval s "$INTERVAL"
	rec "$RUN" disk_size B "$size"
	rec "$RUN" rate_target MB/s "$rate"
	rec "$RUN" agent_cpu_s s "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')"
	rec "$RUN" agent_peak_rss KiB "$(hwm_kib "$AGENT_PID")"
	rec "$RUN" replicator_cpu_s s "$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.2f", b-a}')"
	rec "$RUN" replicator_peak_rss KiB "$(hwm_kib "$REPL_PID")"
	rec "$RUN" ferryfs_cpu_s s "$(awk -v a="$f0" -v b="$f1" 'BEGIN{printf "%.2f", b-a}')"
	rec "$RUN" agent_scanned_bytes B "$s"
	rec "$RUN" agent_shipped_bytes B "$h"
	rec "$RUN" agent_cycles n "$n"
	rec "$RUN" loadavg_after 1min "$(cut -d' ' -f1 /proc/loadavg)"
	stop_all
	grep -q "lost its dirty bitmap\|cycle failed" "$LOG/$RUN.agent.vm.log" &&
		say "  WARNING: the agent logged failures, see $LOG/$RUN.agent.vm.log"
}

# multi N : N VMs, each its own qemu-storage-daemon, disk and agent; one
# vault, one replicator, one ferryfs, one rpo-load writing to all.
multi() {
	local n=$1 i d v mnt args=() files=() c0=0 c1=0 r0 r1 f0 f1 p s h a b k hw=0 x sweep
	local -a apids=() offs=()
	say "== $RUN: $n VMs, $(numfmt --to=iec "$(numfmt --from=iec "$VM_SIZE")") disks, $VM_RATE MB/s each for $VM_SECONDS s"
	rm -rf "$DATA/run" && mkdir -p "$DATA/run/$RUN" || exit 1
	v=$DATA/run/$RUN/vault mnt=$DATA/run/$RUN/mnt
	rec "$RUN" loadavg_before 1min "$(cut -d' ' -f1 /proc/loadavg)"
	"$FERRY" init --vault "$v" >>"$LOG/$RUN.setup.log" 2>&1 || { say "ferry init failed"; exit 1; }
	for i in $(seq 1 "$n"); do
		d=$DATA/run/$RUN/$i
		mkdir -p "$d"
		"$LOAD" fill "$d/disk.img" "$(numfmt --from=iec "$VM_SIZE")" "$(numfmt --from=iec "$VM_FILL")" "$i" || exit 1
		qsd_start "$d"
		enable "$v" "vm$i" qemu "$d"
		args+=("vm$i" "nbd+unix:///rw?socket=$d/nbd.sock" "$mnt/vm$i/disks/d0.img")
		files+=("$mnt/vm$i/disks/d0.img")
	done
	start_target "$v" "$mnt"
	for i in $(seq 1 "$n"); do
		start_agent "$v" "vm$i"
		apids+=("$AGENT_PID")
	done
	wait_ready "$v" "$n" "${files[@]}"
	for p in "${apids[@]}"; do reset_hwm "$p"; c0=$(awk -v a="$c0" -v b="$(cpu_s "$p")" 'BEGIN{print a+b}'); done
	for i in $(seq 1 "$n"); do offs+=("$(fsize "$LOG/$RUN.agent.vm$i.log")"); done
	reset_hwm "$REPL_PID"
	r0=$(cpu_s "$REPL_PID") f0=$(cpu_s "$FS_PID")
	sweep=$((5 * n > SWEEP_MS ? 5 * n : SWEEP_MS))
	load_run "$VM_SECONDS" "$(mb2b "$VM_RATE")" "--sweep-ms $sweep" "${args[@]}"
	for p in "${apids[@]}"; do
		c1=$(awk -v a="$c1" -v b="$(cpu_s "$p")" 'BEGIN{print a+b}')
		x=$(hwm_kib "$p")
		[ "$x" -gt "$hw" ] && hw=$x
	done
	r1=$(cpu_s "$REPL_PID") f1=$(cpu_s "$FS_PID")
	s=0 h=0
	for i in $(seq 1 "$n"); do
		read -r a b k <<<"$(agent_scanned "$LOG/$RUN.agent.vm$i.log" "${offs[i - 1]}")"
		s=$((s + a)) h=$((h + b))
	done
	load_summary
	rec "$RUN" vms n "$n"
	rec "$RUN" rate_target MB/s "$VM_RATE"
	rec "$RUN" write_seconds s "$VM_SECONDS"
	rec "$RUN" agents_cpu_s s "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b-a}')"
	rec "$RUN" agent_peak_rss KiB "$hw"
	rec "$RUN" replicator_cpu_s s "$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.2f", b-a}')"
	rec "$RUN" replicator_peak_rss KiB "$(hwm_kib "$REPL_PID")"
	rec "$RUN" ferryfs_cpu_s s "$(awk -v a="$f0" -v b="$f1" 'BEGIN{printf "%.2f", b-a}')"
	rec "$RUN" agent_scanned_bytes B "$s"
	rec "$RUN" agent_shipped_bytes B "$h"
	rec "$RUN" loadavg_after 1min "$(cut -d' ' -f1 /proc/loadavg)"
	stop_all
}

# ---------------------------------------------------------------- main
deps
build
machine
T0=$SECONDS
for ph in $PHASES; do
	case $ph in
	rates)
		for rate in $RATES; do
			for tr in $TRACKERS; do
				RUN=rate-$tr-$rate
				single "$tr" "$SIZE_BYTES" "$FILL_BYTES" "$SIZE_BYTES" "$SECONDS_RUN" "$rate"
			done
		done
		;;
	cycle)
		for sz in $CYCLE_SIZES; do
			RUN=cycle-$sz
			single qemu "$(numfmt --from=iec "$sz")" "$(numfmt --from=iec "$CYCLE_FILL")" \
				"$(numfmt --from=iec "$CYCLE_REGION")" "$CYCLE_SECONDS" "$CYCLE_RATE"
		done
		;;
	vms)
		for n in $VMS; do
			RUN=vms-$n
			multi "$n"
		done
		;;
	*) say "unknown phase $ph" ;;
	esac
done
echo "total: $((SECONDS - T0)) s; load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUTDIR/machine.txt"

/usr/bin/python3 "$HERE/rpo-report.py" "$OUTDIR" >"$OUTDIR/results.md" ||
	{ say "rpo-report.py failed; raw results in $RES"; exit 1; }
cat "$OUTDIR/results.md"
say "results: $OUTDIR/results.md (raw: $RES, $LAGS, $CYCLES; logs: $LOG)"
