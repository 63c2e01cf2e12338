#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Small writes stay small: on a 256 MiB disk full of data, 2,000 random
# 4 KiB writes of random data (7.8 MiB) must grow the store by at most
# 12 MiB, not by 2,000 chunks. The new point must still read back exactly.
. "$(dirname "$0")/lib.sh"
cd "$T"

seeded_bytes 268435456 31 > disk.img
"$FERRY" init --vault vault >/dev/null
"$FERRY" enable-replication --vault vault --vm vm1 --disk d=disk.img --crash-interval 0 >/dev/null
cycle vault vm1 2>/dev/null

store_bytes() { du -sb vault/store | cut -f1; }
before=$(store_bytes)
scatter_writes disk.img 2000 32
cycle vault vm1 2>/dev/null
after=$(store_bytes)
growth=$((after - before))
note "store grew by $growth bytes for 2000 x 4 KiB = 8192000 bytes written"
[ "$growth" -le $((12 * 1024 * 1024)) ] || fail "store grew by $growth bytes, more than 12 MiB"
[ "$growth" -ge 8192000 ] || fail "store grew by $growth bytes, less than the random data written"

need_fuse
mount_vault vault mnt
cmp mnt/vm1/disks/d.img disk.img || fail "live image differs after the small writes"
first=$(points_of vault vm1 | head -1)
seeded_bytes 268435456 31 | cmp - "mnt/vm1/recovery-points/$first/d.img" ||
	fail "first point changed"
unmount_vault mnt
