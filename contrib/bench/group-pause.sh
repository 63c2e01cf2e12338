#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# How long a consistency group keeps its VMs paused, for groups of 2, 4 and
# 8 VMs, with the cache in a local directory and in Azure Blob storage
# (Azurite on loopback). Each VM is a qemu-system-x86_64 with no CPU
# (-machine none: QMP stop and cont, dirty bitmaps and NBD work as in any
# VM, and no guest eats the machine's cores) and one 64 MiB disk; each has
# its own agent (qemu tracker, one cycle every 2 s), all in group "g" with
# a round every GROUP_INTERVAL seconds. The pause of a VM in a round is
# what its agent logs: from the QMP stop to the QMP cont, which includes
# waiting for the other members' pauses to show in the cache. A replicator
# drains the cache. Prints, per cache and group size: rounds cut with every
# member, rounds skipped, and the pause per VM and round (p50, p90, max).
#
#   contrib/bench/group-pause.sh [OUTDIR]
#
# Environment (defaults in brackets):
#   FERRY_BUILD    build directory [<src>/build/bench]
#   GROUP_SIZES    ["2 4 8"]; GROUP_ROUNDS rounds to wait for [8]
#   GROUP_INTERVAL seconds between rounds [3]
#   GROUP_CACHES   ["local azure"]; azure needs Azurite, installed as the
#                  tests install it (npm, under ~/.cache/ferry-test/azurite)
#   GROUP_DATA     disks, vaults, sockets (keep it short) [/tmp/ferry-grp]
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
B=${FERRY_BUILD:-$SRC/build/bench}
read -r -a SIZES <<<"${GROUP_SIZES:-2 4 8}"
read -r -a CACHES <<<"${GROUP_CACHES:-local azure}"
ROUNDS=${GROUP_ROUNDS:-8}
INTERVAL=${GROUP_INTERVAL:-3}
DATA=${GROUP_DATA:-/tmp/ferry-grp}
OUT=${1:-$DATA/results}
AZ_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/ferry-test/azurite
for p in ferry ferry-agent ferry-replicator; do
	[ -x "$B/replicator/$p" ] ||
		{ echo "group-pause: no $B/replicator/$p (meson setup $B -Dbuildtype=release; ninja -C $B)" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "group-pause: qemu-system-x86_64 missing" >&2; exit 1; }

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
rm -rf "$DATA"
mkdir -p "$DATA" "$OUT"
TSV=$OUT/pauses.tsv
printf 'cache\tvms\tvm\tround\tpause_ms\n' >"$TSV"

azurite() {
	[ -x "$AZ_DIR/node_modules/.bin/azurite-blob" ] || return 1
	local port
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	"$AZ_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
		--inMemoryPersistence --disableTelemetry --silent >"$DATA/azurite.log" 2>&1 &
	PIDS+=($!)
	local ep=http://127.0.0.1:$port/devstoreaccount1
	for _ in $(seq 100); do
		curl -s -o /dev/null "$ep?comp=list" && break
		sleep 0.1
	done
	export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=$ep;"
	export FERRY_INSECURE_HTTP=1
}

# run CACHE N: one group of N VMs; appends its pauses to the TSV.
run() {
	local cache=$1 n=$2 d=$DATA/$1-$2 url i
	mkdir -p "$d"
	case $cache in
	local) url=$d/cache ;;
	azure) url=azblob://grp$n/cache ;;
	esac
	"$B/replicator/ferry" init --vault "$d/vault" >/dev/null
	local vpids=()
	for i in $(seq "$n"); do
		truncate -s 64M "$d/vm$i.img"
		qemu-system-x86_64 -M none -nodefaults -display none -no-user-config \
			-qmp unix:"$d/vm$i.qmp",server=on,wait=off \
			-blockdev driver=file,node-name=f0,filename="$d/vm$i.img" \
			-blockdev driver=raw,node-name=d0,file=f0 2>"$d/vm$i.qemu.err" &
		PIDS+=($!)
		vpids+=($!)
	done
	for i in $(seq "$n"); do
		for _ in $(seq 50); do [ -S "$d/vm$i.qmp" ] && break; sleep 0.1; done
		"$B/replicator/ferry" enable-replication --vault "$d/vault" --vm "vm$i" --tracker qemu \
			--qmp "$d/vm$i.qmp" --disk disk=d0 --cache "$url" --crash-interval 0 \
			--group g --group-interval "$INTERVAL" >"$d/enable$i.out" 2>&1 ||
			{ cat "$d/enable$i.out" >&2; exit 1; }
	done
	local apids=()
	for i in $(seq "$n"); do
		"$B/replicator/ferry-agent" --config "$d/vault/agents/vm$i.conf" --interval 2 \
			2>"$d/agent$i.log" &
		PIDS+=($!)
		apids+=($!)
	done
	"$B/replicator/ferry-replicator" --vault "$d/vault" --interval 1 2>"$d/replicator.log" &
	local rpid=$!
	PIDS+=($rpid)
	sleep $(((ROUNDS + 1) * INTERVAL + 2))
	kill "${apids[@]}" "$rpid" "${vpids[@]}" 2>/dev/null || true
	wait "${apids[@]}" "$rpid" "${vpids[@]}" 2>/dev/null || true
	for i in $(seq "$n"); do
		sed -n 's/.*round \([0-9]*\): cut with every member, paused \([0-9.]*\) ms.*/\1 \2/p' \
			"$d/agent$i.log" | while read -r round ms; do
			printf '%s\t%s\tvm%s\t%s\t%s\n' "$cache" "$n" "$i" "$round" "$ms" >>"$TSV"
		done
		grep -h "round .* skipped" "$d/agent$i.log" >>"$d/skipped.log" || true
	done
	local skipped
	skipped=$(sed -n 's/.*round \([0-9]*\) skipped.*/\1/p' "$d/skipped.log" 2>/dev/null | sort -u | wc -l)
	python3 - "$TSV" "$cache" "$n" "$skipped" <<'PY'
import sys
tsv, cache, n, skipped = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [l.rstrip("\n").split("\t") for l in open(tsv)][1:]
rows = [r for r in rows if r[0] == cache and r[1] == n]
rounds = {}
for r in rows:
    rounds.setdefault(r[3], []).append(float(r[4]))
full = [k for k, v in rounds.items() if len(v) == int(n)]
ms = sorted(float(r[4]) for r in rows)
def q(p):
    return ms[min(len(ms) - 1, int(p * len(ms)))] if ms else float("nan")
print("%-6s %2s VMs  rounds with every member %3d  skipped %3s  pause ms p50 %6.1f  p90 %6.1f  max %6.1f"
      % (cache, n, len(full), skipped, q(0.5), q(0.9), ms[-1] if ms else float("nan")))
PY
}

for cache in "${CACHES[@]}"; do
	if [ "$cache" = azure ] && ! azurite; then
		echo "group-pause: no Azurite under $AZ_DIR (run tests/integration/azurite.sh once): azure skipped" >&2
		continue
	fi
	for n in "${SIZES[@]}"; do
		run "$cache" "$n"
	done
done
echo "every pause: $TSV"
