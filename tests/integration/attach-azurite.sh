#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ferry attach with the store on Azure Blob (Azurite): a vault whose packs
# live in a container is rebuilt in a new directory from the container
# alone; the recovery points match, ferry check --read-data passes, and
# every point and live image reads back byte-identical through ferryfs.
. "$(dirname "$0")/objstore-lib.sh"
need_fuse
azurite_start

cd "$T"
seeded_bytes 3000000 1 > os.img
truncate -s 8M os.img
"$FERRY" init --vault A --store azblob://attach/pre >/dev/null || fail "init with an Azure store"
"$FERRY" enable-replication --vault A --vm web --disk os=os.img --crash-interval 0 >/dev/null
for i in 1 2 3; do
	cycle A web >/dev/null 2>&1
	scatter_writes os.img 30 "$i"
done

"$FERRY" attach --vault B --store azblob://attach/pre >/dev/null || fail "attach from Azurite"
diff <("$FERRY" recovery-points --vault A web) <("$FERRY" recovery-points --vault B web) ||
	fail "recovery points differ after attach"
[ "$("$FERRY" recovery-points --vault B web | wc -l)" -eq 3 ] || fail "expected 3 points"
"$FERRY" check --vault B --read-data >/dev/null || fail "check --read-data on the attached vault"

mount_vault A mntA
mount_vault B mntB
for p in mntA/web/recovery-points/2*; do
	cmp "$p/os.img" "mntB/web/recovery-points/$(basename "$p")/os.img" ||
		fail "point $(basename "$p") differs"
done
cmp mntA/web/disks/os.img mntB/web/disks/os.img || fail "live image differs"
note "attach from an Azure store: 3 points and the live image byte-identical"
