#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs the Debian 12 packages Ferry needs, and only those that are
# missing, so that running it on a prepared machine costs nothing and needs
# no network. Build packages always; --test adds what the test suites use
# (sanitizer runtimes, clang-format, e2fsprogs, qemu, virt-xml-validate and
# the boot fixture's tools, qemu-ga for its guest); --demo what contrib/demo.sh uses; --bench the
# peers and tools of contrib/bench/ (with qemu for rpo.sh). --list prints
# the packages wanted, one a line, and installs nothing (check-deps.sh reads
# the build list from it). Runs as root, or through sudo.
#
# Usage: contrib/install-deps.sh [--test] [--demo] [--bench] [--dry-run] [--list]
set -euo pipefail

# Every meson dependency() must map (contrib/deps.tsv) to one of these:
# contrib/check-deps.sh fails otherwise.
build_pkgs=(build-essential meson ninja-build pkg-config libfuse3-dev fuse3 libsqlite3-dev
	libzstd-dev libssl-dev libcurl4-openssl-dev libxxhash-dev libinih-dev libjson-c-dev
	libxml2-dev libnbd-dev libvirt-dev scdoc)
# libclang-rt-14-dev holds the ASan/UBSan/libFuzzer runtimes; clang only
# recommends it, and we install without recommends.
test_pkgs=(e2fsprogs util-linux xxd python3 clang libclang-rt-14-dev clang-format
	libvirt-clients libvirt-daemon-system qemu-system-x86 qemu-utils busybox-static cpio fdisk syslinux syslinux-common
	mtools dosfstools xz-utils binutils libnbd-bin qemu-guest-agent)
# contrib/demo.sh: make and inspect an ext4 image, loop devices.
demo_pkgs=(e2fsprogs util-linux)
bench_pkgs=(restic borgbackup fio zstd openssl python3 python3-pyfuse3 e2fsprogs time curl
	qemu-system-x86)

want=("${build_pkgs[@]}")
dry_run=0 list=0
for arg in "$@"; do
	case "$arg" in
	--test) want+=("${test_pkgs[@]}") ;;
	--demo) want+=("${demo_pkgs[@]}") ;;
	--bench) want+=("${bench_pkgs[@]}") ;;
	--dry-run) dry_run=1 ;;
	--list) list=1 ;;
	-h | --help)
		sed -n '4,13s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*)
		echo "install-deps: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
if [ "$list" = 1 ]; then
	printf '%s\n' "${want[@]}"
	exit 0
fi
missing=()
for pkg in "${want[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#want[@]} packages present"
	exit 0
fi
echo "install-deps: installing ${missing[*]}"
[ "$dry_run" = 1 ] && exit 0

sudo=()
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null; then
		sudo=(sudo)
	else
		echo "install-deps: not root and no sudo; install these as root: ${missing[*]}" >&2
		exit 1
	fi
fi

# Through env, because sudo drops most of the caller's environment.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q)
"${apt[@]}" update
"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
