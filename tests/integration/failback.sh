#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Re-protect and failback with two vaults: the source site's (S, seeded from
# the original disks) and the target's (T, where the VM failed over). After
# changes inside the failed-over clone, failback must leave the original
# disks byte-identical to the clone while the bytes through the reverse
# cache stay within 1.2x the bytes changed plus a fixed overhead; forward
# protection afterwards ships only the delta.
. "$(dirname "$0")/lib.sh"
need_fuse
cd "$T"

seeded_bytes 33554432 71 > os.img
seeded_bytes 8388608 72 > data.img
truncate -s 16M data.img

# Forward protection into T, two cycles.
"$FERRY" init --vault T >/dev/null
"$FERRY" enable-replication --vault T --vm app --disk os=os.img --disk data=data.img \
	--crash-interval 0 >/dev/null
cycle T app
scatter_writes os.img 50 73
cycle T app

# Disaster: fail over to the latest point, and the VM runs at the target.
mount_vault_detached T mt
"$FERRY" failover --vault T app --recovery-point latest >/dev/null 2>&1 || fail "failover failed"
"$FERRY" commit --vault T app 2>/dev/null || fail "commit failed"
sleep 1.2
clone=mt/app/failovers/failover
[ -f $clone/os.img ] || fail "clone images missing from the mount"
scatter_writes $clone/os.img 300 74
dd if=/dev/urandom of=$clone/data.img bs=4096 seek=1000 count=256 conv=notrunc,fsync status=none
sync $clone/os.img
changed=$(( (300 + 256) * 4096 ))

# Re-protect: seed S from the original disks at the source, publish the
# seed in the reverse cache, replicate the clone back from the target.
mkdir rcache
"$FERRY" init --vault S >/dev/null
"$FERRY" reprotect-prepare --vault S --vm app --disk os=os.img --disk data=data.img \
	--cache "$T/rcache" >/dev/null 2>prepare.err || fail "reprotect-prepare: $(cat prepare.err)"
conf=$("$FERRY" reprotect --vault T app --mount mt --cache "$T/rcache" 2>reprotect.err) ||
	fail "reprotect: $(cat reprotect.err)"
"$FERRY" status --vault T | grep -q "re-protecting" || fail "status does not show re-protecting"
"$AGENT" --config "$conf" --once 2>/dev/null || fail "reverse agent cycle failed"
shipped=$(sed -n 's/^shipped_bytes=//p' T/agents/app.reprotect.state/stats)
note "reverse agent shipped $shipped bytes for $changed bytes changed since failover"
[ "$shipped" -le $((changed * 12 / 10 + 65536)) ] ||
	fail "re-protect shipped $shipped bytes, more than 1.2 x $changed + 64 KiB"
"$REPLICATOR" --vault S --once 2>/dev/null || fail "reverse replicator failed"

# Failback: a last delta, then the original disks take the clone's state.
dd if=/dev/urandom of=$clone/os.img bs=4096 seek=20 count=4 conv=notrunc,fsync status=none
"$AGENT" --config "$conf" --once 2>/dev/null || fail "final reverse agent cycle failed"
written=$("$FERRY" failback --vault S app 2>failback.err) || fail "failback: $(cat failback.err)"
cmp os.img $clone/os.img || fail "original os disk differs from the clone after failback"
cmp data.img $clone/data.img || fail "original data disk differs from the clone after failback"
note "failback rewrote $written bytes; original disks equal the clone"
[ "$written" -le $((changed + 4 * 4096 + 65536)) ] || fail "failback rewrote $written bytes"

# Forward protection again: only the delta travels.
"$FERRY" resume-replication --vault T app 2>/dev/null || fail "resume-replication failed"
sleep 1.2
[ ! -e $clone ] || fail "the failover clone is still in the mount: $(ls mt/app/failovers; "$FERRY" status --vault T | grep -i fail)"
"$AGENT" --config T/agents/app.conf --once 2>/dev/null || fail "forward agent failed"
fwd=$(sed -n 's/^shipped_bytes=//p' T/agents/app.state/stats)
note "forward agent shipped $fwd bytes after failback"
[ "$fwd" -le $((written * 12 / 10 + 65536)) ] || fail "forward protection shipped $fwd bytes"
"$REPLICATOR" --vault T --once 2>/dev/null || fail "forward replicator failed"
sleep 1.2
cmp mt/app/disks/os.img os.img || fail "forward live image differs after failback"
"$FERRY" jobs --vault T | grep -q resume-replication || fail "job history lacks resume-replication"
unmount_vault mt
"$FERRY" check --vault T --read-data >/dev/null || fail "target vault damaged"
"$FERRY" check --vault S --read-data >/dev/null || fail "source vault damaged"
