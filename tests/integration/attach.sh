#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# ferry attach: a vault with two VMs (three disks) replicated through
# several cycles, garbage-collected, then rebuilt from its store alone into
# a new directory. The new catalog must list the same recovery points,
# every point and live image must read back byte-identical through ferryfs,
# ferry check --read-data must pass, and replication must continue into the
# new vault without a resync. A damaged pack makes attach refuse (nothing
# created) unless --force.
. "$(dirname "$0")/lib.sh"
need_fuse

cd "$T"
seeded_bytes 6000000 1 > os.img
truncate -s 16M os.img
seeded_bytes 3000000 2 > data.img
truncate -s 8M data.img
seeded_bytes 5000000 3 > db.img

"$FERRY" init --vault A >/dev/null
"$FERRY" enable-replication --vault A --vm web --disk os=os.img --disk data=data.img \
	--crash-interval 0 --cpus 2 --memory 512 --nic mac=52:54:00:12:34:56 >/dev/null
"$FERRY" enable-replication --vault A --vm db --disk db=db.img --crash-interval 0 >/dev/null

cycles() { # VAULT N: N cycles of both VMs with changes between them
	local i
	for i in $(seq "$2"); do
		"$AGENT" --config A/agents/web.conf --once >/dev/null 2>&1 || fail "agent web"
		"$AGENT" --config A/agents/db.conf --once >/dev/null 2>&1 || fail "agent db"
		"$REPLICATOR" --vault "$1" --once 2>/dev/null || fail "replicator pass on $1"
		scatter_writes os.img 40 $((RANDOM + 10))
		scatter_writes db.img 20 $((RANDOM + 10))
		dd if=/dev/urandom of=data.img bs=64K seek=$((RANDOM % 100)) count=3 conv=notrunc status=none
	done
}
cycles A 4
# GC must keep every record a rebuild needs.
"$FERRY" gc --vault A >/dev/null || fail "gc on A"

"$FERRY" attach --vault B --store A/store || fail "attach"
for vm in web db; do
	diff <("$FERRY" recovery-points --vault A $vm) <("$FERRY" recovery-points --vault B $vm) ||
		fail "recovery points of $vm differ after attach"
done
n=$("$FERRY" recovery-points --vault B web | wc -l)
[ "$n" -eq 4 ] || fail "expected 4 points of web, got $n"
note "attach rebuilt both VMs with the same recovery points"

# Settings and resources come back too.
for what in "target-group" "vm-cpus" "nic.0" "availability-set"; do
	diff <("$FERRY" show --vault A web | grep -F "$what") \
		<("$FERRY" show --vault B web | grep -F "$what") >/dev/null ||
		fail "$what of web differs after attach"
done

"$FERRY" check --vault B --read-data >/dev/null || fail "check --read-data on the attached vault"

mount_vault A mntA
mount_vault B mntB
for vm in web db; do
	for img in mntA/$vm/disks/*.img; do
		cmp "$img" "mntB/$vm/disks/$(basename "$img")" || fail "live $img differs"
	done
	for p in mntA/$vm/recovery-points/2*; do
		for img in "$p"/*.img; do
			cmp "$img" "mntB/$vm/recovery-points/$(basename "$p")/$(basename "$img")" ||
				fail "point image $img differs"
		done
	done
done
note "every point and live image byte-identical through ferryfs"
unmount_vault mntA
unmount_vault mntB

# Replication continues into B from where A stood: the agent keeps its chain
# and the cache the VM record names (A's); B's store is A's store. No resync:
# few bytes stored.
before=$(du -sb A/store | cut -f1)
cycles B 1
cp --sparse=always os.img os.now
cp --sparse=always data.img data.now
"$AGENT" --config A/agents/web.conf --once >/dev/null 2>&1 || fail "agent web"
"$REPLICATOR" --vault B --once 2>/dev/null || fail "replicator pass on B"
n=$("$FERRY" recovery-points --vault B web | wc -l)
[ "$n" -eq 6 ] || fail "expected 6 points of web in B after two more cycles, got $n"
after=$(du -sb A/store | cut -f1)
[ $((after - before)) -lt 4000000 ] || fail "continuing stored $((after - before)) bytes: a resync?"
last=$("$FERRY" recovery-points --vault B web | tail -1 | awk '{print $1}')
mount_vault B mntB
cmp mntB/web/recovery-points/$last/os.img os.img || fail "new point's os.img differs from the source"
cmp mntB/web/recovery-points/$last/data.img data.img || fail "new point's data.img differs"
unmount_vault mntB
"$FERRY" check --vault B --read-data >/dev/null || fail "check after continuing in B"
note "replication continued into the attached vault without a resync"

# Attaching again (from B's store, which is A's) sees the new points.
"$FERRY" attach --vault C --store A/store >/dev/null || fail "second attach"
diff <("$FERRY" recovery-points --vault B web) <("$FERRY" recovery-points --vault C web) ||
	fail "second attach lost the points made after the first"

# Refusals: a non-empty directory; a damaged pack without --force.
mkdir -p full && touch full/x
must_fail "$FERRY" attach --vault full --store A/store
cp -a A/store store2
# The largest pack holds data; the VAULT record sits in a small pack of its
# own, and without it even --force has nothing to attach.
pack=$(ls -S store2/packs/*.pack | head -1)
printf 'X' | dd of="$pack" bs=1 seek=$(($(stat -c %s "$pack") - 40)) conv=notrunc status=none
must_fail "$FERRY" attach --vault D --store store2
[ ! -e D/catalog.db ] || fail "a refused attach left a catalog"
grep -q "damaged" "$T/must_fail.out" || fail "refusal does not say the pack is damaged"
if "$FERRY" attach --vault D --store store2 --force >/dev/null 2>&1; then
	fail "a forced attach of a damaged store exits 0"
fi
[ -e D/catalog.db ] || fail "--force did not attach"
note "attach refuses non-empty directories and damaged stores unless --force"
