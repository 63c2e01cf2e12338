#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Ferry against restic and borg on the same synthetic VM disk image, in one
# run: initial ingest, store growth after 5 % scattered 4 KiB writes, reads of
# a recovery point through FUSE (ferryfs vs restic mount vs borg mount: cold
# sequential, random 4 KiB IOPS, mount to first byte) and the replicator's
# peak RSS at several disk sizes. Prints a results table with Ferry/peer ratios
# and the issue's targets, and writes it to OUTDIR/results.md.
#
# Usage: contrib/bench/bench.sh            (as root: drop_caches, FUSE, apt)
# Environment (defaults in brackets):
#   BENCH_SIZE   image size [2G]; BENCH_SIZE=256M is a quick smoke run
#   BENCH_DATA   images, repositories, mounts [/tmp/ferry-bench], ~5x size
#   OUTDIR       results [$BENCH_DATA/results-<UTC stamp>]
#   FERRY_BUILD  Ferry build dir, buildtype=release [<src>/build/bench]
#   PEERS        peers to run ["restic borg"]
#   REPS         repetitions of every ingest and read measurement [3];
#                the table shows medians (this host's CPUs may be shared)
#   FIO_RUNTIME  seconds per random-read run [20]; FIO_JOBS ["1 4"]
#   RSS_SIZES    extra disk sizes for Ferry's RSS ["256M 8G"; "64M 1G" if small]
#   PHASES       subset of "ferry pipelined peers reads rss disk" [all]
#   REBUILD=1    rebuild images even if present; SKIP_DEPS=1 no apt
#   CHECK=0      skip comparing each mounted image with the source
#   PROFILE=1    also record perf profiles of the agent and replicator
#   KEEP=1       keep repositories and vaults after the run
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
SRCROOT=$(cd "$HERE/../.." && pwd)
SIZE=${BENCH_SIZE:-2G}
DATA=${BENCH_DATA:-/tmp/ferry-bench}
OUTDIR=${OUTDIR:-$DATA/results-$(date -u +%Y%m%dT%H%M%SZ)}
BUILD=${FERRY_BUILD:-$SRCROOT/build/bench}
PEERS=${PEERS:-"restic borg"}
FIO_RUNTIME=${FIO_RUNTIME:-20}
REPS=${REPS:-3}
FIO_JOBS=${FIO_JOBS:-"1 4"}
CHECK=${CHECK:-1}
PROFILE=${PROFILE:-0}
KEEP=${KEEP:-0}

case "${1:-}" in
-h | --help)
	sed -n '4,26s/^# \{0,1\}//p' "$0"
	exit 0
	;;
"") ;;
*)
	echo "bench: unknown argument: $1 (settings are environment variables, see --help)" >&2
	exit 2
	;;
esac

if [ "$(id -u)" != 0 ]; then
	echo "bench: run as root: it drops the page cache and mounts FUSE file systems" >&2
	exit 1
fi

SIZE_BYTES=$(numfmt --from=iec "$SIZE") || exit 2
if [ -z "${RSS_SIZES+x}" ]; then
	if [ "$SIZE_BYTES" -ge $((1 << 30)) ]; then RSS_SIZES="256M 8G"; else RSS_SIZES="64M 1G"; fi
fi

mkdir -p "$DATA" "$OUTDIR" && DATA=$(cd "$DATA" && pwd) && OUTDIR=$(cd "$OUTDIR" && pwd) || exit 1
LOG=$OUTDIR/log
RES=$OUTDIR/results.tsv
mkdir -p "$LOG"
printf 'section\tmetric\tunit\trep\tvalue\n' >"$RES"
REP=1

export RESTIC_PASSWORD=ferry-bench
export RESTIC_CACHE_DIR=$DATA/cache.restic
export BORG_BASE_DIR=$DATA/borgbase
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
rec() {
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$REP" "$4" >>"$RES"
	say "  $1 $2 = $4 $3 (rep $REP)"
}
now() { echo "$EPOCHREALTIME"; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.1f", a/b; else print "nan"}'; }
dir_bytes() { du -sb "$@" 2>/dev/null | awk '{s+=$1} END{print s+0}'; }

DROP_OK=1
drop_caches() {
	sync
	if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
		[ "$DROP_OK" = 1 ] && say "WARNING: cannot drop caches; 'cold' figures are warm"
		DROP_OK=0
	fi
}

# timed NAME cmd... : runs cmd under GNU time; prints "WALL_S CPU_S MAXRSS_KB RC".
timed() {
	local name=$1 t0 t1 rc
	shift
	t0=$(now)
	/usr/bin/time -v -o "$LOG/$name.time" "$@" >>"$LOG/$name.log" 2>&1
	rc=$?
	t1=$(now)
	awk -v w="$(fsub "$t1" "$t0")" -v rc="$rc" -F': ' '
		/User time/ {u=$2} /System time/ {s=$2} /Maximum resident/ {m=$2}
		END {printf "%s %.2f %d %d\n", w, u+s, m, rc}' "$LOG/$name.time"
}

# ---------------------------------------------------------------- cleanup
MNT='' MPID=''
mount_stop() {
	local i
	if [ -n "$MNT" ] && mountpoint -q "$MNT" 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount -u "$MNT" 2>/dev/null ||
			umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
	fi
	if [ -n "$MPID" ]; then
		for i in $(seq 1 200); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.05; done
		kill "$MPID" 2>/dev/null
		wait "$MPID" 2>/dev/null
	fi
	MNT='' MPID=''
}
cleanup() {
	local rc=$?
	set +e
	mount_stop
	if [ "$KEEP" != 1 ]; then
		rm -rf "$DATA/vault" "$DATA/vault.rss" "$DATA/vault.pipe" "$DATA/vault.prof" "$DATA/ferry-src" "$DATA/src" \
			"$DATA/repo.restic" "$DATA/repo.borg" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR"
	fi
	rmdir "$DATA"/mnt.* 2>/dev/null
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- setup
deps() {
	[ "${SKIP_DEPS:-0}" = 1 ] && return 0
	"$SRCROOT/contrib/install-deps.sh" --bench || exit 1
	# What this script uses beyond install-deps.sh --bench: mkfs.ext4 -d and
	# debugfs for the image, GNU time for peak RSS, pyfuse3 for borg mount.
	local extra=(e2fsprogs time fuse3 python3-pyfuse3 util-linux coreutils) missing=() p
	for p in "${extra[@]}"; do
		[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get -q update &&
			DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \
				"${missing[@]}" || exit 1
	fi
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
	echo "$(git -C "$SRCROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
		git -C "$SRCROOT" status --porcelain 2>/dev/null | grep -q . && echo +dirty)" \
		>"$OUTDIR/ferry-commit.txt"
}

machine() {
	local dev
	dev=$(findmnt -n -o SOURCE -T "$DATA" | head -1)
	{
		echo "date_utc: $(date -u +%FT%TZ)"
		echo "kernel: $(uname -r)"
		echo "cpu: $(lscpu | awk -F: '/Model name/{gsub(/^ +/,"",$2); print $2; exit}')"
		echo "nproc: $(nproc)"
		echo "mem: $(free -m | awk '/Mem:/{print $2}') MiB"
		echo "data fs: $(findmnt -n -o FSTYPE,SOURCE -T "$DATA" | head -1)"
		echo "data disk: $(lsblk -dno NAME,MODEL,ROTA,SIZE "$dev" 2>/dev/null | head -1)" \
			"(rota=1: rotational)"
		echo "ferry: $(cat "$OUTDIR/ferry-commit.txt") ($("$FERRY" --version 2>&1 | head -1))"
		echo "restic: $(restic version 2>&1 | head -1)"
		echo "borg: $(borg --version 2>&1)"
		echo "fio: $(fio --version)"
		echo "fuse3: $(fusermount3 --version 2>&1)"
		echo "image: $SIZE ($SIZE_BYTES bytes); fio runtime ${FIO_RUNTIME}s, jobs $FIO_JOBS"
		echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; >0.5 means other work shares the CPUs)"
	} >"$OUTDIR/machine.txt"
	sed 's/^/  /' "$OUTDIR/machine.txt" >&2
}

# image SIZE -> builds (or reuses) $DATA/img-SIZE/{disk,disk.mod}.img
image() {
	local size=$1 dir=$DATA/img-$1 t0 t1
	if [ -f "$dir/disk.img" ] && [ -f "$dir/disk.mod.img" ] && [ "${REBUILD:-0}" != 1 ]; then
		say "image $size: reusing $dir (REBUILD=1 to rebuild)"
		return 0
	fi
	if [ "$(numfmt --from=iec "$size")" -gt "$SIZE_BYTES" ] && [ -f "$IMG0" ]; then
		tile_image "$size" "$dir"
		return 0
	fi
	say "image $size: building (mkimage.sh)"
	t0=$(now)
	IMG_SIZE=$size "$HERE/mkimage.sh" "$dir" 2>"$LOG/mkimage-$size.log" ||
		{ say "mkimage failed, see $LOG/mkimage-$size.log"; exit 1; }
	t1=$(now)
	say "image $size: built in $(fsub "$t1" "$t0") s"
}

# tile_image SIZE DIR : a disk larger than the main image, for the RSS runs
# only, made fast: the main image repeated, each copy after the first with
# its own 5 % of 4 KiB blocks rewritten (mkmod.py, seed = copy number), so
# the agent reads and ships SIZE worth of data but the store keeps about one
# copy plus the rewritten blocks. Generating SIZE of fresh content with
# mkimage.sh would take about 2.5 min per GiB here.
tile_image() {
	local size=$1 dir=$2 n i t0 t1
	n=$((($(numfmt --from=iec "$size") + SIZE_BYTES - 1) / SIZE_BYTES))
	say "image $size: $n copies of the $SIZE image, each with its own 5 % rewritten"
	t0=$(now)
	mkdir -p "$dir"
	rm -f "$dir/disk.img" "$dir/disk.mod.img"
	truncate -s "$size" "$dir/disk.img"
	for i in $(seq 0 $((n - 1))); do
		dd if="$IMG0" of="$dir/disk.img" bs=1M seek=$((i * SIZE_BYTES / 1048576)) \
			conv=notrunc,sparse status=none
		[ "$i" -gt 0 ] && /usr/bin/python3 "$HERE/mkmod.py" "$dir/disk.img" --seed $((100 + i)) \
			--at $((i * SIZE_BYTES)) --size "$SIZE_BYTES" >/dev/null
	done
	truncate -s "$size" "$dir/disk.img"
	touch "$dir/disk.mod.img" # unused: the RSS runs ingest once
	t1=$(now)
	say "image $size: built in $(fsub "$t1" "$t0") s"
}

# ---------------------------------------------------------------- Ferry
# ferry_cycle TAG VAULT : one agent cycle, then one replicator pass, both timed.
# Sets CYC_AGENT_S CYC_REPL_S CYC_AGENT_RSS CYC_REPL_RSS (KiB).
ferry_cycle() {
	local tag=$1 vault=$2 w cpu rss rc
	read -r w cpu rss rc <<<"$(timed "ferry.agent.$tag" "$AGENT" --config "$vault/agents/vm.conf" --once)"
	[ "$rc" = 0 ] || { say "ferry-agent $tag failed (rc $rc), see $LOG/ferry.agent.$tag.log"; exit 1; }
	CYC_AGENT_S=$w CYC_AGENT_CPU=$cpu CYC_AGENT_RSS=$rss
	CYC_CACHE_BYTES=$(dir_bytes "$vault/cache")
	read -r w cpu rss rc <<<"$(timed "ferry.replicator.$tag" "$REPLICATOR" --vault "$vault" --once)"
	[ "$rc" = 0 ] || { say "ferry-replicator $tag failed (rc $rc), see $LOG/ferry.replicator.$tag.log"; exit 1; }
	CYC_REPL_S=$w CYC_REPL_CPU=$cpu CYC_REPL_RSS=$rss
}

# ferry_setup VAULT SRCDISK
ferry_setup() {
	rm -rf "$1"
	"$FERRY" init --vault "$1" >>"$LOG/ferry.setup.log" 2>&1 &&
		"$FERRY" enable-replication --vault "$1" --vm vm --disk "disk=$2" --crash-interval 0 \
			>>"$LOG/ferry.setup.log" 2>&1 || { say "ferry init failed, see $LOG/ferry.setup.log"; exit 1; }
}

# What the target holds: store and catalog. Not the cache (transit, empty
# after a pass) nor agents/ (the agent's state lives at the source).
ferry_repo_bytes() { dir_bytes "$1/store" "$1"/catalog.db*; }

phase_ferry() {
	local v=$DATA/vault src=$DATA/ferry-src/disk.img s0 s1 total
	say "== ferry: initial ingest"
	mkdir -p "$DATA/ferry-src"
	cp --sparse=always "$IMG0" "$src"
	ferry_setup "$v" "$src"
	drop_caches
	ferry_cycle v0 "$v"
	total=$(fsub "$(awk -v a="$CYC_AGENT_S" -v b="$CYC_REPL_S" 'BEGIN{print a+b}')" 0)
	rec ferry ingest_agent_s s "$CYC_AGENT_S"
	rec ferry ingest_replicator_s s "$CYC_REPL_S"
	rec ferry ingest_s s "$total"
	rec ferry ingest_MBps MB/s "$(fdiv "$SIZE_BYTES" "$(awk -v t="$total" 'BEGIN{print t*1e6}')")"
	rec ferry ingest_cpu_s s "$(awk -v a="$CYC_AGENT_CPU" -v b="$CYC_REPL_CPU" 'BEGIN{print a+b}')"
	rec ferry ingest_agent_cpu_s s "$CYC_AGENT_CPU"
	rec ferry ingest_replicator_cpu_s s "$CYC_REPL_CPU"
	rec ferry segments_v0_bytes B "$CYC_CACHE_BYTES"
	rec ferry agent_rss_v0 KiB "$CYC_AGENT_RSS"
	rec ferry replicator_rss_v0 KiB "$CYC_REPL_RSS"
	rec ferry "replicator_rss_at_$SIZE" KiB "$CYC_REPL_RSS"
	rec ferry "agent_rss_at_$SIZE" KiB "$CYC_AGENT_RSS"
	sync
	s0=$(ferry_repo_bytes "$v")
	rec ferry repo_v0 B "$s0"
	[ "$PROFILE" = 1 ] && [ "$REP" = 1 ] && profile_v0

	say "== ferry: 5 % scattered 4 KiB writes, in place (mkmod.py, same seed as disk.mod.img)"
	/usr/bin/python3 "$HERE/mkmod.py" "$src" --seed 5 --fraction 0.05 >>"$LOG/ferry.setup.log" 2>&1
	cmp -s "$src" "$IMG1" || { say "ferry source after mkmod.py differs from disk.mod.img"; exit 1; }
	drop_caches
	ferry_cycle v1 "$v"
	rec ferry incr_agent_s s "$CYC_AGENT_S"
	rec ferry incr_replicator_s s "$CYC_REPL_S"
	rec ferry incr_s s "$(awk -v a="$CYC_AGENT_S" -v b="$CYC_REPL_S" 'BEGIN{printf "%.3f", a+b}')"
	rec ferry segments_v1_bytes B "$CYC_CACHE_BYTES"
	rec ferry agent_rss_v1 KiB "$CYC_AGENT_RSS"
	rec ferry replicator_rss_v1 KiB "$CYC_REPL_RSS"
	sync
	s1=$(ferry_repo_bytes "$v")
	rec ferry repo_v1 B "$s1"
	rec ferry growth B $((s1 - s0))
	rec ferry agent_state B "$(dir_bytes "$v/agents")"
	"$FERRY" recovery-points --vault "$v" vm >"$LOG/ferry.points.txt" 2>&1
	"$FERRY" status --vault "$v" >>"$LOG/ferry.points.txt" 2>&1
	rec ferry recovery_points n "$(grep -c '^[0-9]' "$LOG/ferry.points.txt")"
}

# The same initial ingest with both programs running at once, as they do in
# a deployment: the replicator polls the cache every second while the agent
# scans; once the agent is done the replicator is stopped and one last
# --once pass applies what is left. Informative; the target uses the sum.
phase_pipelined() {
	local v=$DATA/vault.pipe src=$DATA/ferry-src/pipe.img t0 t1 rpid rc
	say "== ferry: initial ingest with agent and replicator running at once"
	mkdir -p "$DATA/ferry-src"
	cp --sparse=always "$IMG0" "$src"
	ferry_setup "$v" "$src"
	drop_caches
	t0=$(now)
	"$REPLICATOR" --vault "$v" --interval 1 >>"$LOG/ferry.pipelined.log" 2>&1 &
	rpid=$!
	"$AGENT" --config "$v/agents/vm.conf" --once >>"$LOG/ferry.pipelined.log" 2>&1
	rc=$?
	kill -TERM "$rpid" 2>/dev/null
	wait "$rpid" 2>/dev/null
	"$REPLICATOR" --vault "$v" --once >>"$LOG/ferry.pipelined.log" 2>&1 || rc=1
	t1=$(now)
	if [ "$rc" = 0 ]; then
		rec ferry ingest_pipelined_s s "$(fsub "$t1" "$t0")"
		rec ferry ingest_pipelined_MBps MB/s "$(fdiv "$SIZE_BYTES" "$(awk -v t="$(fsub "$t1" "$t0")" 'BEGIN{print t*1e6}')")"
	else
		say "WARNING: pipelined ingest failed, see $LOG/ferry.pipelined.log"
	fi
	rm -rf "$v" "$src"
}

# perf profiles of a second, identical initial ingest (PROFILE=1): where the time goes.
profile_v0() {
	command -v perf >/dev/null || { say "PROFILE=1: perf not found (linux-perf)"; return; }
	local v=$DATA/vault.prof
	say "profiling a second initial ingest with perf (PROFILE=1)"
	ferry_setup "$v" "$DATA/ferry-src/disk.img"
	drop_caches
	perf record -g -o "$OUTDIR/perf.agent.data" -- "$AGENT" --config "$v/agents/vm.conf" --once \
		>>"$LOG/perf.log" 2>&1
	perf record -g -o "$OUTDIR/perf.replicator.data" -- "$REPLICATOR" --vault "$v" --once \
		>>"$LOG/perf.log" 2>&1
	local p
	for p in agent replicator; do
		perf report -i "$OUTDIR/perf.$p.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
			grep -v '^#' | grep -v '^$' | grep '%' | head -40 >"$OUTDIR/perf.$p.txt"
	done
	rm -rf "$v"
}

# RSS of the agent and the replicator for an initial ingest at another size.
phase_rss() {
	local size v=$DATA/vault.rss src
	for size in $RSS_SIZES; do
		[ "$(numfmt --from=iec "$size")" = "$SIZE_BYTES" ] && continue
		image "$size"
		say "== ferry: RSS at $size"
		src=$DATA/img-$size/disk.img
		ferry_setup "$v" "$src"
		drop_caches
		ferry_cycle "rss-$size" "$v"
		rec ferry "replicator_rss_at_$size" KiB "$CYC_REPL_RSS"
		rec ferry "agent_rss_at_$size" KiB "$CYC_AGENT_RSS"
		rec ferry "ingest_MBps_at_$size" MB/s "$(fdiv "$(numfmt --from=iec "$size")" \
			"$(awk -v a="$CYC_AGENT_S" -v b="$CYC_REPL_S" 'BEGIN{print (a+b)*1e6}')")"
		rm -rf "$v"
	done
}

# The disk's rate for durable writes of files the size of segments and packs
# (durable-writes.py): it bounds an ingest that makes its bytes durable
# twice, in the cache and in the vault, whatever the CPU does.
phase_disk() {
	local d=$DATA/durable-writes out mib buf dir
	say "== disk: durable writes"
	mkdir -p "$d"
	out=$(/usr/bin/python3 "$HERE/durable-writes.py" "$d" --sizes 8,16 --reps 1) ||
		{ say "durable-writes.py failed"; exit 1; }
	rmdir "$d"
	while IFS=$'\t' read -r mib buf dir; do
		[[ $mib =~ ^[0-9]+$ ]] || continue
		rec disk "durable_${mib}M_buffered_MBps" MB/s "$buf"
		rec disk "durable_${mib}M_direct_MBps" MB/s "$dir"
	done <<<"$out"
}

# ---------------------------------------------------------------- peers
use_version() { mkdir -p "$DATA/src" && ln -f "$1" "$DATA/src/disk.img"; }

peer_backup() { # peer tag
	case $1 in
	restic) (cd "$DATA/src" && timed "restic.backup.$2" restic -r "$DATA/repo.restic" backup --host vm --tag "$2" disk.img) ;;
	borg) (cd "$DATA/src" && timed "borg.backup.$2" borg create --compression zstd,3 "$DATA/repo.borg::$2" disk.img) ;;
	esac
}

phase_peer() {
	local p=$1 repo=$DATA/repo.$1 w cpu rss rc s0 s1
	say "== $p: initial ingest"
	rm -rf "$repo" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR"
	case $p in
	restic) restic -r "$repo" init >>"$LOG/restic.init.log" 2>&1 ;;
	borg) borg init -e none "$repo" >>"$LOG/borg.init.log" 2>&1 ;;
	esac || { say "$p init failed"; return 1; }
	use_version "$IMG0"
	drop_caches
	read -r w cpu rss rc <<<"$(peer_backup "$p" v0)"
	[ "$rc" = 0 ] || say "WARNING: $p backup v0 rc=$rc (see $LOG)"
	rec "$p" ingest_s s "$w"
	rec "$p" ingest_MBps MB/s "$(fdiv "$SIZE_BYTES" "$(awk -v t="$w" 'BEGIN{print t*1e6}')")"
	rec "$p" ingest_cpu_s s "$cpu"
	rec "$p" ingest_rss KiB "$rss"
	sync
	s0=$(dir_bytes "$repo")
	rec "$p" repo_v0 B "$s0"
	say "== $p: backup of the modified image"
	use_version "$IMG1"
	drop_caches
	read -r w cpu rss rc <<<"$(peer_backup "$p" v1)"
	[ "$rc" = 0 ] || say "WARNING: $p backup v1 rc=$rc (see $LOG)"
	rec "$p" incr_s s "$w"
	sync
	s1=$(dir_bytes "$repo")
	rec "$p" repo_v1 B "$s1"
	rec "$p" growth B $((s1 - s0))
}

# ---------------------------------------------------------------- reads through FUSE
# mount_start PEER : starts the mount in the background; sets MNT, MPID, MFILE,
# READY_S (mount command to image visible) or returns 1.
mount_start() {
	local p=$1 i t0 t1
	MNT=$DATA/mnt.$p
	mkdir -p "$MNT"
	case $p in
	ferry)
		set -- "$FERRYFS" --vault "$DATA/vault" -f "$MNT"
		MFILE=$MNT/vm/recovery-points/latest/disk.img
		;;
	restic)
		set -- restic -r "$DATA/repo.restic" mount "$MNT"
		MFILE=$MNT/snapshots/latest/disk.img
		;;
	borg)
		set -- borg mount -f "$DATA/repo.borg::v1" "$MNT"
		MFILE=$MNT/disk.img
		;;
	esac
	MT0=$(now)
	"$@" >>"$LOG/$p.mount.log" 2>&1 &
	MPID=$!
	for i in $(seq 1 6000); do
		[ -e "$MFILE" ] && break
		kill -0 "$MPID" 2>/dev/null || return 1
		sleep 0.01
	done
	[ -e "$MFILE" ] || return 1
	t1=$(now)
	READY_S=$(fsub "$t1" "$MT0")
}

# fio_rr FILE JOBS -> prints IOPS (sum over jobs) of 4 KiB random reads, psync, QD1 per job
fio_rr() {
	local out=$LOG/fio.$$.json
	fio --name=rr --filename="$1" --readonly --rw=randread --bs=4k --ioengine=psync --iodepth=1 \
		--direct=0 --numjobs="$2" --group_reporting --size="$SIZE_BYTES" --runtime="$FIO_RUNTIME" \
		--time_based --invalidate=1 --randseed=42 --output-format=json --output="$out" \
		>>"$LOG/fio.log" 2>&1
	/usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print("%.0f" % j["iops"])' "$out" 2>/dev/null || echo nan
	rm -f "$out"
}

phase_reads() {
	local p=$1 t0 t1 j
	say "== $p: reads of the latest point through FUSE"
	# cold mount: time to the first byte, then one sequential pass
	drop_caches
	mount_start "$p" || { say "WARNING: $p mount failed (see $LOG/$p.mount.log)"; mount_stop; return; }
	dd if="$MFILE" of=/dev/null bs=4k count=1 status=none
	t1=$(now)
	rec "$p" mount_ready_s s "$READY_S"
	rec "$p" ttfb_s s "$(fsub "$t1" "$MT0")"
	t0=$(now)
	dd if="$MFILE" of=/dev/null bs=1M status=none
	t1=$(now)
	rec "$p" seq_read_MBps MB/s "$(fdiv "$SIZE_BYTES" "$(awk -v t="$(fsub "$t1" "$t0")" 'BEGIN{print t*1e6}')")"
	if [ "$CHECK" = 1 ] && [ "$REP" = 1 ]; then
		if cmp -s "$MFILE" "$IMG1"; then rec "$p" content_matches_v1 bool 1; else
			rec "$p" content_matches_v1 bool 0
			say "WARNING: $p's image differs from disk.mod.img"
		fi
	fi
	mount_stop
	# random 4 KiB reads: fresh mount and cold page cache for every run
	for j in $FIO_JOBS; do
		drop_caches
		mount_start "$p" || { say "WARNING: $p mount failed"; mount_stop; return; }
		rec "$p" "rand4k_iops_j$j" IOPS "$(fio_rr "$MFILE" "$j")"
		mount_stop
	done
}

# ---------------------------------------------------------------- main
deps
build
machine
image "$SIZE"
IMG0=$DATA/img-$SIZE/disk.img
IMG1=$DATA/img-$SIZE/disk.mod.img
rec image size B "$SIZE_BYTES"
rec image allocated B "$(du -B1 "$IMG0" | cut -f1)"
# Reference: what this machine's disk gives one cold sequential reader.
drop_caches
t0=$(now)
dd if="$IMG0" of=/dev/null bs=1M status=none
t1=$(now)
rec raw seq_read_cold_MBps MB/s "$(fdiv "$SIZE_BYTES" "$(awk -v t="$(fsub "$t1" "$t0")" 'BEGIN{print t*1e6}')")"
say "counting the 4 KiB blocks that differ between disk.img and disk.mod.img"
rec image changed_4k_blocks blocks "$(/usr/bin/python3 "$HERE/changed_blocks.py" "$IMG0" "$IMG1")"

# Every repetition runs all tools one after the other, so that load from
# elsewhere on the host spreads over all of them rather than hitting one.
PHASES=${PHASES:-"ferry pipelined peers reads rss disk"}
for REP in $(seq 1 "$REPS"); do
	say "==== repetition $REP of $REPS"
	for ph in $PHASES; do
		case $ph in rss | disk) continue ;; esac
		rec load "loadavg_before_$ph" 1min "$(cut -d' ' -f1 /proc/loadavg)"
		case $ph in
		ferry) phase_ferry ;;
		pipelined) phase_pipelined ;;
		peers) for p in $PEERS; do phase_peer "$p"; done ;;
		reads) for p in ferry $PEERS; do phase_reads "$p"; done ;;
		*) say "unknown phase $ph" ;;
		esac
	done
done
REP=1
case " $PHASES " in *" rss "*)
	rec load loadavg_before_rss 1min "$(cut -d' ' -f1 /proc/loadavg)"
	phase_rss
	;;
esac
case " $PHASES " in *" disk "*) phase_disk ;; esac
rec load loadavg_end 1min "$(cut -d' ' -f1 /proc/loadavg)"

/usr/bin/python3 "$HERE/report.py" "$RES" "$OUTDIR/machine.txt" >"$OUTDIR/results.md" ||
	{ say "report.py failed; raw results in $RES"; exit 1; }
cat "$OUTDIR/results.md"
say "results: $OUTDIR/results.md (raw: $RES, logs: $LOG)"
