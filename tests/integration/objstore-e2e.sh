#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The foundation's end-to-end flow with the cache and the store both on
# object storage: first on Azurite (installed and started by the test; no
# Azurite means exit 77 with the reason), then on moto's S3 server where the
# machine has moto (otherwise that half is skipped with the reason). A VM
# with two disks (one ext4 made with mkfs.ext4 -d) goes through three
# cycles with changes between them; every recovery point must read back
# byte-identical through a ferryfs mount of the vault (ranged GETs from the
# store), the live images must equal the newest point, and the container or
# bucket must hold packs and no leftover segments. On Azurite, ferryfs's
# on-disk object cache is then shown to serve what was read once with the
# store gone, and to keep its size limit.
. "$(dirname "$0")/objstore-lib.sh"
# ferryfs keeps a disk cache per remote vault under XDG_CACHE_HOME; the
# test's own, not the user's (objstore-lib.sh has already placed Azurite).
export XDG_CACHE_HOME=$T/xdg-cache
need_fuse
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 missing (Debian package e2fsprogs)"
command -v debugfs >/dev/null || skip "debugfs missing (Debian package e2fsprogs)"
cd "$T"

# The source disks and their state after each of three cycles, made once
# and replayed for each backend so both see the same bytes.
make_disks() {
	mkdir -p stage/etc stage/home
	echo "version one" > stage/etc/motd
	seeded_bytes 3000000 1 > stage/home/blob1
	mkfs.ext4 -q -F -d stage -L vmroot os.img 64M
	seeded_bytes 8388608 2 > data.img
	truncate -s 32M data.img
}

change_disks() { # CYCLE
	case $1 in
	2)
		echo "version two" > motd2
		debugfs -w -R "write motd2 /etc/motd2" os.img >/dev/null 2>&1
		seeded_bytes 1000000 3 > blob2
		debugfs -w -R "write blob2 /home/blob2" os.img >/dev/null 2>&1
		scatter_writes data.img 300 4
		fallocate --punch-hole --offset 1048576 --length 1048576 data.img
		;;
	3)
		scatter_writes data.img 50 5
		seeded_bytes 1048576 6 | dd of=data.img bs=64K seek=100 conv=notrunc status=none
		;;
	esac
}

# run_flow NAME STORE_URL CACHE_URL: the whole flow in a fresh directory.
run_flow() {
	local name=$1 store=$2 cache=$3 i p
	mkdir "$T/$name"
	pushd "$T/$name" >/dev/null
	make_disks
	"$FERRY" init --vault vault --store "$store" > init.out || fail "$name: ferry init --store $store"
	grep -q "store $store" init.out || fail "$name: init does not print the store URL"
	[ ! -d vault/store ] || fail "$name: a remote store made vault/store"
	"$FERRY" enable-replication --vault vault --vm web1 --disk os=os.img --disk data=data.img \
		--cache "$cache" --crash-interval 0 >/dev/null || fail "$name: enable-replication"
	for i in 1 2 3; do
		change_disks $i
		cycle vault web1
		cp --sparse=always os.img os.$i
		cp --sparse=always data.img data.$i
	done

	mapfile -t points < <(points_of vault web1)
	[ "${#points[@]}" -eq 3 ] || fail "$name: expected 3 recovery points, got ${#points[@]}"
	mount_vault vault mnt
	for i in 1 2 3; do
		p=mnt/web1/recovery-points/${points[$((i - 1))]}
		cmp "$p/os.img" "os.$i" || fail "$name: point $i: os.img differs from the source"
		cmp "$p/data.img" "data.$i" || fail "$name: point $i: data.img differs from the source"
	done
	cmp mnt/web1/disks/os.img os.3 || fail "$name: live os.img is not the newest state"
	cmp mnt/web1/disks/data.img data.3 || fail "$name: live data.img is not the newest state"
	[ "$(readlink mnt/web1/recovery-points/latest)" = "${points[2]}" ] ||
		fail "$name: latest symlink"
	unmount_vault mnt
	"$FERRY" check --vault vault --read-data >/dev/null || fail "$name: ferry check --read-data"
	popd >/dev/null
	note "$name: 3 points byte-identical through ferryfs, live = newest, check clean"
}

# --- Azure Blob Storage (Azurite) ---
azurite_start
run_flow azure azblob://ferry-store/vault1 azblob://ferry-cache/site-a
packs=$(azurite_list ferry-store | grep -c '^vault1/packs/.*\.pack$' || true)
[ "$packs" -gt 0 ] || fail "azure: no packs in the store container"
left=$(azurite_list ferry-cache | grep -c '/segments/' || true)
[ "$left" -eq 0 ] || fail "azure: $left segment(s) left in the cache after they were applied"
note "azure: $packs pack(s) in azblob://ferry-store/vault1, cache drained"

# --- the on-disk object cache, on the Azurite vault ---

# dc_mount VAULT MOUNTPOINT ARGS...: as mount_vault, with more ferryfs
# arguments. Read-ahead is off: it fetches on threads of its own, and
# this is about what the cache holds after a read.
dc_mount() {
	local v=$1 m=$2 i
	shift 2
	mkdir -p "$m"
	"$FERRYFS" -f --vault "$v" -o readahead=0 "$@" "$m" 2>>"$m.log" &
	PIDS+=($!)
	MOUNTS+=("$m")
	for i in $(seq 100); do
		mountpoint -q "$m" && return 0
		sleep 0.05
	done
	fail "ferryfs could not mount $v: $(cat "$m.log")"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# Bytes the cache's entries take on disk (allocated blocks).
entry_bytes() { find "$1/v1" -type f -printf '%b\n' | awk '{s += $1 * 512} END {print s + 0}'; }

cd "$T/azure"
mapfile -t points < <(points_of vault web1)
last=recovery-points/${points[2]}

# Default: a remote vault gets a cache under XDG_CACHE_HOME.
dc_mount vault mnt
cmp mnt/web1/$last/os.img os.3 || fail "disk cache: default mount reads os.img wrong"
unmount_vault mnt
vid=$(sqlite3 vault/catalog.db "SELECT value FROM settings WHERE key = 'vault_id'" 2>/dev/null || true)
n=$(find "$XDG_CACHE_HOME/ferryfs" -path '*/v1/*' -type f 2>/dev/null | wc -l)
[ "$n" -gt 0 ] || fail "disk cache: no default cache under $XDG_CACHE_HOME/ferryfs"
[ -z "$vid" ] || [ -d "$XDG_CACHE_HOME/ferryfs/$vid/v1" ] ||
	fail "disk cache: default cache is not at XDG_CACHE_HOME/ferryfs/<vault id>"
dc_mount vault mnt --disk-cache-size 0
cat mnt/web1/$last/data.img >/dev/null || fail "disk cache: read with --disk-cache-size 0"
unmount_vault mnt

# Cold: every chunk from Azurite, kept in the cache on the way.
dc_mount vault mnt --disk-cache "$T/azure/dcache" --disk-cache-size 64
t0=$(now_ms)
cmp mnt/web1/$last/data.img data.3 || fail "disk cache: cold read of data.img differs"
cmp mnt/web1/$last/os.img os.3 || fail "disk cache: cold read of os.img differs"
cold=$(($(now_ms) - t0))
unmount_vault mnt
# Warm, on a new mount (no page cache, no chunk cache): from local disk.
dc_mount vault mnt --disk-cache "$T/azure/dcache" --disk-cache-size 64
t0=$(now_ms)
cmp mnt/web1/$last/data.img data.3 || fail "disk cache: warm read of data.img differs"
cmp mnt/web1/$last/os.img os.3 || fail "disk cache: warm read of os.img differs"
warm=$(($(now_ms) - t0))
unmount_vault mnt
note "disk cache: point 3 (os.img + data.img, 96 MiB) cold from Azurite ${cold} ms, warm from the disk cache ${warm} ms, cache $(entry_bytes dcache) bytes"

# A small cache keeps its limit while every point is read through it.
dc_mount vault mnt --disk-cache "$T/azure/dsmall" --disk-cache-size 2
for p in "${points[@]}"; do
	cat mnt/web1/recovery-points/$p/os.img mnt/web1/recovery-points/$p/data.img >/dev/null ||
		fail "disk cache: read of point $p through a 2 MiB cache"
done
unmount_vault mnt
small=$(entry_bytes dsmall)
total=$(du -sb dsmall | cut -f1)
[ "$small" -le $((2 << 20)) ] || fail "disk cache: 2 MiB cache holds $small bytes of entries"
# Besides its entries: at most 256 fan-out directories and two small files.
[ "$total" -le $(((2 << 20) + 260 * 4096)) ] || fail "disk cache: 2 MiB cache takes $total bytes"
note "disk cache: limit 2 MiB kept after reading 3 points ($small bytes of entries, $total in all)"

# The store gone: what was read once still reads back, from the cache, on
# a new mount. (Opening a vault asks the store, so the mount comes first.)
dc_mount vault mnt --disk-cache "$T/azure/dcache" --disk-cache-size 64
kill "$AZ_PID"
for _ in $(seq 50); do kill -0 "$AZ_PID" 2>/dev/null || break; sleep 0.1; done
! curl -s -o /dev/null "$AZ_ENDPOINT?comp=list" || fail "azurite still answers"
cmp mnt/web1/$last/data.img data.3 || fail "disk cache: with Azurite gone, data.img differs"
cmp mnt/web1/$last/os.img os.3 || fail "disk cache: with Azurite gone, os.img differs"
# ... and what was never read does not: the reads above did not reach a store.
if cat mnt/web1/recovery-points/${points[0]}/data.img >/dev/null 2>&1; then
	fail "disk cache: point 1 read back with Azurite gone and never cached"
fi
unmount_vault mnt
note "disk cache: point 3 byte-identical through ferryfs with Azurite stopped"

# --- S3 (moto) ---
if ! moto_available; then
	note "S3 half skipped: moto is not installed on this machine (python3 -m moto.server)"
	exit 0
fi
moto_start
moto_enforce_auth
moto_make_bucket ferry-store
moto_make_bucket ferry-cache
export AWS_ACCESS_KEY_ID=$MOTO_KEY_ID AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=$MOTO_ENDPOINT
run_flow s3 s3://ferry-store/vault1 s3://ferry-cache/site-a
