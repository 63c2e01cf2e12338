#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The qemu tracker's cycle time against disk size, same writes, for one
# build or to compare several. One qemu-storage-daemon per build and size
# (a sparse raw disk with the same CYCLE_FILL of data at its start), each
# with its own vault. Every round writes the same scattered blocks
# (qemu-io through the daemon's writable NBD export, within the first GiB)
# to every disk, then runs one agent cycle (`ferry-agent --once`) on each,
# the order rotating from round to round so that other work on the machine
# hits every build and size alike. The cycle's time is the agent's own
# (<state>/stats duration_ms); a replicator pass after each cycle, not
# timed, keeps the cache drained. A few more rounds with LIBNBD_DEBUG=1
# count the NBD block-status requests per cycle. With CYCLE_LOAD_RATE, a
# writer (rpo-load) also writes to every disk while the cycles run, as a
# guest would (and as contrib/bench/rpo.sh does), so that the daemon serves
# writes while the agent asks it for block status.
#
#   contrib/bench/cycle-size.sh [OUTDIR]
#
# Environment (defaults in brackets):
#   FERRY_BUILDS  build directories, buildtype=release [<src>/build/bench]
#   CYCLE_SIZES   ["1G 64G"]; CYCLE_FILL data at the start of each disk [256M]
#   CYCLES        timed rounds [20]; COUNT_ROUNDS rounds with LIBNBD_DEBUG [2]
#   CYCLE_WRITES  writes per round, 4-64 KiB each [300, about 10 MB]
#   CYCLE_LOAD_RATE  bytes/s the writer writes to each disk during the
#                 rounds, within the first GiB [none: no writer]
#   CYCLE_DATA    disks, vaults, sockets (keep it short) [/tmp/ferry-cyc]
# Prints a table per build (p50, p90, min, max ms, block-status requests)
# with the ratio of the medians of the last size to the first, and writes
# OUTDIR/cycles.tsv (every cycle) [OUTDIR: CYCLE_DATA/results].
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
read -r -a BUILDS <<<"${FERRY_BUILDS:-$SRC/build/bench}"
read -r -a SIZES <<<"${CYCLE_SIZES:-1G 64G}"
CYCLES=${CYCLES:-20}
FILL=${CYCLE_FILL:-256M}
WRITES=${CYCLE_WRITES:-300}
COUNT_ROUNDS=${COUNT_ROUNDS:-2}
DATA=${CYCLE_DATA:-/tmp/ferry-cyc}
OUT=${1:-$DATA/results}
LOAD_RATE=${CYCLE_LOAD_RATE:-}

for b in "${BUILDS[@]}"; do
	for p in ferry ferry-agent ferry-replicator; do
		[ -x "$b/replicator/$p" ] ||
			{ echo "cycle-size: no $b/replicator/$p (meson setup $b -Dbuildtype=release; ninja -C $b)" >&2; exit 1; }
	done
done
for c in qemu-storage-daemon qemu-io openssl python3 numfmt; do
	command -v "$c" >/dev/null || { echo "cycle-size: $c missing" >&2; exit 1; }
done

QSDS=()
LOAD_PID=
cleanup() {
	local p
	[ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
	for p in "${QSDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
rm -rf "$DATA"
mkdir -p "$DATA" "$OUT"
TSV=$OUT/cycles.tsv
printf 'round\tbuild\tsize\tduration_ms\tscanned_bytes\tshipped_bytes\tblock_status\n' >"$TSV"

# One configuration per build and size: "INDEX SIZE", its directory
# DATA/INDEX-SIZE.
CONFIGS=()
for i in "${!BUILDS[@]}"; do
	for sz in "${SIZES[@]}"; do CONFIGS+=("$i $sz"); done
done

# setup INDEX SIZE : disk, daemon, vault, and the first (full) cycle.
setup() {
	local b=${BUILDS[$1]} d=$DATA/$1-$2 i
	mkdir -p "$d"
	truncate -s "$2" "$d/disk.img"
	head -c "$(numfmt --from=iec "$FILL")" /dev/zero |
		openssl enc -aes-128-ctr -nosalt -K "$(printf '%032x' 7)" -iv 0 2>/dev/null |
		dd of="$d/disk.img" conv=notrunc bs=1M status=none
	qemu-storage-daemon \
		--chardev socket,id=m0,path="$d/q.qmp",server=on,wait=off --monitor chardev=m0 \
		--blockdev driver=file,node-name=file0,filename="$d/disk.img",discard=unmap \
		--blockdev driver=raw,node-name=disk0,file=file0,discard=unmap \
		--nbd-server addr.type=unix,addr.path="$d/nbd.sock" \
		--export type=nbd,id=rw0,node-name=disk0,name=rw,writable=on \
		>>"$d/qsd.log" 2>&1 &
	QSDS+=($!)
	for i in $(seq 200); do
		[ -S "$d/nbd.sock" ] && [ -S "$d/q.qmp" ] && break
		sleep 0.05
	done
	[ -S "$d/nbd.sock" ] || { echo "cycle-size: qemu-storage-daemon did not start: $(cat "$d/qsd.log")" >&2; exit 1; }
	"$b/replicator/ferry" init --vault "$d/vault" >/dev/null
	"$b/replicator/ferry" enable-replication --vault "$d/vault" --vm vm --tracker qemu \
		--qmp "$d/q.qmp" --nbd-socket "$d/nbd.sock" --disk d0=disk0 --crash-interval 0 \
		>"$d/enable.out"
	cycle "$1" "$2" >/dev/null
}

# writes ROUND : qemu-io commands, the same for every disk.
writes() {
	python3 - "$1" "$WRITES" <<'PY'
import random, sys
rng = random.Random(int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    n = rng.randrange(1, 17) * 4096
    off = rng.randrange((1 << 30) // 4096 - 16) * 4096
    print("write -P %d %d %d" % (rng.randrange(1, 256), off, n))
PY
}

# cycle INDEX SIZE [DEBUG] : one agent cycle, then an untimed replicator
# pass; prints duration_ms scanned shipped and, with DEBUG, the
# block-status requests libnbd logged (else -).
cycle() {
	local b=${BUILDS[$1]} d=$DATA/$1-$2 n=-
	local st=$d/vault/agents/vm.state/stats
	if [ -n "${3:-}" ]; then
		LIBNBD_DEBUG=1 "$b/replicator/ferry-agent" --config "$d/vault/agents/vm.conf" --once 2>"$d/cycle.log"
	else
		"$b/replicator/ferry-agent" --config "$d/vault/agents/vm.conf" --once 2>"$d/cycle.log"
	fi || { cat "$d/cycle.log" >&2; echo "cycle-size: agent cycle failed ($d)" >&2; exit 1; }
	cat "$d/cycle.log" >>"$d/agent.log"
	"$b/replicator/ferry-replicator" --vault "$d/vault" --once 2>>"$d/replicator.log" ||
		{ echo "cycle-size: replicator failed ($d)" >&2; exit 1; }
	[ -n "${3:-}" ] && n=$(grep -c 'nbd_block_status: enter' "$d/cycle.log" || true)
	echo "$(sed -n 's/^duration_ms=//p' "$st") $(sed -n 's/^scanned_bytes=//p' "$st")" \
		"$(sed -n 's/^shipped_bytes=//p' "$st") $n"
}

for c in "${CONFIGS[@]}"; do
	read -r bi sz <<<"$c"
	setup "$bi" "$sz"
done
{
	for i in "${!BUILDS[@]}"; do echo "build $i: ${BUILDS[$i]}"; done
	echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

if [ -n "$LOAD_RATE" ]; then
	# shellcheck disable=SC2046
	cc -O2 -pthread -o "$DATA/rpo-load" "$HERE/rpo-load.c" $(pkg-config --cflags --libs libnbd)
	triples=()
	for c in "${CONFIGS[@]}"; do
		d=$DATA/${c/ /-}
		triples+=("${c/ /-}" "nbd+unix:///rw?socket=$d/nbd.sock" "$d/disk.img")
	done
	"$DATA/rpo-load" run --seconds 86400 --rate "$LOAD_RATE" --drain 0 --region $((1 << 30)) \
		--seed 3 --out "$DATA/load.tsv" "${triples[@]}" >"$DATA/load.out" 2>"$DATA/load.err" &
	LOAD_PID=$!
	echo "writer: $LOAD_RATE bytes/s to each disk" >>"$OUT/machine.txt"
fi

order=("${CONFIGS[@]}")
for round in $(seq 1 $((CYCLES + COUNT_ROUNDS))); do
	debug=
	[ "$round" -gt "$CYCLES" ] && debug=1
	cmds=()
	while read -r line; do cmds+=(-c "$line"); done < <(writes "$round")
	for c in "${CONFIGS[@]}"; do
		qemu-io -f raw "nbd+unix:///rw?socket=$DATA/${c/ /-}/nbd.sock" "${cmds[@]}" >/dev/null
	done
	for c in "${order[@]}"; do
		read -r bi sz <<<"$c"
		read -r ms sc sh n < <(cycle "$bi" "$sz" "$debug")
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$bi" "$sz" "$ms" "$sc" "$sh" "$n" >>"$TSV"
	done
	order=("${order[@]:1}" "${order[0]}")
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
if [ -n "$LOAD_PID" ]; then
	kill "$LOAD_PID" 2>/dev/null || true
	LOAD_PID=
fi

python3 - "$TSV" "$CYCLES" "${BUILDS[@]}" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
timed, builds = int(sys.argv[2]), sys.argv[3:]
sizes = list(dict.fromkeys(r["size"] for r in rows))
for i, b in enumerate(builds):
    print(f"\n{b}\n")
    print("| disk | cycles | p50 ms | p90 ms | min ms | max ms | read per cycle MB | block-status requests per cycle |")
    print("|---|---|---|---|---|---|---|---|")
    med = {}
    for s in sizes:
        mine = [r for r in rows if r["build"] == str(i) and r["size"] == s]
        t = [r for r in mine if int(r["round"]) <= timed]
        ms = sorted(int(r["duration_ms"]) for r in t)
        med[s] = statistics.median(ms)
        p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        mb = statistics.mean(int(r["scanned_bytes"]) for r in t) / 1e6
        req = sorted({r["block_status"] for r in mine if int(r["round"]) > timed}) or ["-"]
        print(f"| {s} | {len(ms)} | {med[s]:.0f} | {p90} | {ms[0]} | {ms[-1]} | {mb:.1f} | {', '.join(req)} |")
    if len(sizes) > 1:
        print(f"\nMedian cycle {sizes[-1]} / {sizes[0]}: {med[sizes[-1]] / med[sizes[0]]:.2f}")
PY
