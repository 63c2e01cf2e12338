#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Ferry on object storage against plain curl, in one run, on Azurite (started
# here on loopback, as the tests do):
#  - ingest: one agent cycle plus one replicator pass of a disk image with
#    the cache and the store both on Azurite, against uploading the same
#    bytes as block blobs with parallel curl (PUT with a SAS, xargs -P);
#  - read: a cold sequential read of the replicated image through ferryfs
#    (fresh mount, empty chunk cache, store on Azurite) against a parallel
#    ranged download of the same bytes by curl.
# Prints a table with the Ferry/curl ratios (goal for ingest: >= 0.8).
#
# Usage: FERRY_BUILD=/path/to/release-build contrib/bench/objstore-bench.sh
# Environment (defaults in brackets):
#   BENCH_SIZE   image size in MiB [256]
#   BENCH_FILL   fraction of the image that is data, the rest holes [1.0]
#   PARALLEL     curl's parallel transfers [4]; PIECE piece size in MiB [4]
#   REPS         repetitions, medians reported [3]
# Needs root (FUSE), node/npm (Azurite), python3, curl.
set -euo pipefail
export LC_ALL=C
SRCROOT=$(cd "$(dirname "$0")/../.." && pwd)
export FERRY_BUILD=${FERRY_BUILD:-$SRCROOT/build/bench}
. "$SRCROOT/tests/integration/objstore-lib.sh"
SIZE=${BENCH_SIZE:-256}
PARALLEL=${PARALLEL:-4}
PIECE=${PIECE:-4}
REPS=${REPS:-3}
cd "$T"

azurite_start
need_fuse

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.1f", b / s / 1e6}'; }

# The image: random (incompressible) data, so that zstd gains nothing and
# both sides move the same bytes.
seeded_bytes $((SIZE << 20)) 11 > disk.img
BYTES=$(stat -c %s disk.img)
split -b "${PIECE}M" -d -a 5 disk.img piece.

# A SAS for curl, as an agent would hold one.
sas_for() { azurite_sas "$1" racwdl 2099-01-01T00:00:00Z; }

curl_upload() { # CONTAINER
	local sas
	sas=$(sas_for "$1")
	azurite_container PUT "$1"
	ls piece.* | xargs -P "$PARALLEL" -I{} curl -sf -o /dev/null -X PUT \
		-H "x-ms-blob-type: BlockBlob" -T {} "$AZ_ENDPOINT/$1/{}?$sas"
}

ferry_ingest() { # N -> prints agent seconds and total seconds
	local n=$1 t0 t1 t2
	"$FERRY" init --vault "v$n" --store "azblob://store$n/v" >/dev/null
	"$FERRY" enable-replication --vault "v$n" --vm vm --disk d=disk.img \
		--cache "azblob://cache$n/c" --crash-interval 0 >/dev/null
	t0=$(now)
	"$AGENT" --config "v$n/agents/vm.conf" --once 2>/dev/null
	t1=$(now)
	"$REPLICATOR" --vault "v$n" --once 2>/dev/null
	t2=$(now)
	echo "$(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t0" | bc -l)"
}

ferry_read() { # N -> seconds for a cold sequential read through ferryfs
	local n=$1 t0 t1
	mount_vault "v$n" "mnt$n"
	sync
	echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
	t0=$(now)
	dd if="mnt$n/vm/disks/d.img" of=/dev/null bs=1M status=none
	t1=$(now)
	cmp "mnt$n/vm/disks/d.img" disk.img || fail "ferryfs read differs from the source"
	unmount_vault "mnt$n"
	echo "$t1 - $t0" | bc -l
}

curl_read() { # CONTAINER -> seconds for a parallel ranged download of one blob
	local sas t0 t1 n i
	sas=$(sas_for "$1")
	azurite_container PUT "$1"
	curl -sf -o /dev/null -X PUT -H "x-ms-blob-type: BlockBlob" -T disk.img "$AZ_ENDPOINT/$1/disk.img?$sas"
	n=$(((BYTES + (PIECE << 20) - 1) / (PIECE << 20)))
	t0=$(now)
	for ((i = 0; i < n; i++)); do
		echo "$((i * (PIECE << 20)))-$(((i + 1) * (PIECE << 20) - 1))"
	done | xargs -P "$PARALLEL" -I{} curl -sf -o /dev/null -H "x-ms-range: bytes={}" \
		"$AZ_ENDPOINT/$1/disk.img?$sas"
	t1=$(now)
	echo "$t1 - $t0" | bc -l
}

command -v bc >/dev/null || fail "bc missing (Debian package bc)"
: >agent.s; : >ferry.s; : >curl.s; : >fread.s; : >cread.s
for r in $(seq "$REPS"); do
	t0=$(now); curl_upload "curlup$r"; t1=$(now)
	echo "$t1 - $t0" | bc -l >>curl.s
	read -r a f < <(ferry_ingest "$r")
	echo "$a" >>agent.s
	echo "$f" >>ferry.s
	ferry_read "$r" >>fread.s
	curl_read "curldown$r" >>cread.s
done

A=$(median <agent.s); F=$(median <ferry.s); C=$(median <curl.s)
FR=$(median <fread.s); CR=$(median <cread.s)
cat <<EOF
Object storage on Azurite (loopback), $SIZE MiB of incompressible data, curl -P$PARALLEL in ${PIECE} MiB pieces, median of $REPS
| measurement | Ferry | curl | Ferry/curl |
|---|---|---|---|
| ingest, agent only (into the cache) | $(mbps "$BYTES" "$A") MB/s | $(mbps "$BYTES" "$C") MB/s | $(awk -v a="$A" -v c="$C" 'BEGIN {printf "%.2f", c / a}') |
| ingest, agent + replicator (cache and store) | $(mbps "$BYTES" "$F") MB/s | $(mbps "$BYTES" "$C") MB/s | $(awk -v a="$F" -v c="$C" 'BEGIN {printf "%.2f", c / a}') |
| cold sequential read (ferryfs vs ranged GETs) | $(mbps "$BYTES" "$FR") MB/s | $(mbps "$BYTES" "$CR") MB/s | $(awk -v a="$FR" -v c="$CR" 'BEGIN {printf "%.2f", c / a}') |
EOF
