#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Private by default (docs/architecture.md, "Permissions"). Under umask 000,
# everything ferry makes in the vault, the cache and the agent's state is
# 0600 or 0700, and another user (nobody) can read neither a waiting
# segment, the ack, the catalog nor a pack, even with every directory on
# the way opened to it; vault and cache directories left open to others are
# tightened by the next program that opens them. ferryfs with allow_other
# keeps images to the mounting user unless uid=, gid= and umask= share
# them. Object storage over plain http:// is refused before any connection
# unless --insecure-http or FERRY_INSECURE_HTTP=1 allow it.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" -eq 0 ] || skip "needs root: it reads the vault as another user (nobody)"
command -v setpriv >/dev/null || skip "setpriv missing (Debian package util-linux)"
id nobody >/dev/null 2>&1 || skip "no user nobody on this machine"
need_fuse

NOBODY_UID=$(id -u nobody)
AS_NOBODY=(setpriv --reuid="$NOBODY_UID" --regid="$(id -g nobody)" --clear-groups)

# mktemp made $T 0700: open it, or nobody would be stopped at its door and
# the test would prove nothing about ferry's own modes.
chmod 0755 "$T"
cd "$T"
umask 000

# Fails unless every file and directory under the paths is private.
all_private() { # WHAT PATH...
	local open
	open=$(find "${@:2}" ! -type l -perm /077 -printf '%m %p\n')
	[ -z "$open" ] || fail "$1: open to group or others under umask 000:"$'\n'"$open"
}

# Fails unless nobody's read of FILE fails with EACCES.
nobody_denied() { # FILE WHAT
	local out
	[ -f "$1" ] || fail "$2: $1 does not exist"
	if out=$("${AS_NOBODY[@]}" cat -- "$1" 2>&1 >/dev/null); then
		fail "nobody could read $2 ($1)"
	fi
	[[ $out == *"Permission denied"* ]] || fail "nobody's read of $2 failed, but not with EACCES: $out"
}

mode_of() { stat -c %a "$1"; }

seeded_bytes 2097152 61 > disk.img
"$FERRY" init --vault vault >/dev/null || fail "ferry init"
"$FERRY" enable-replication --vault vault --vm vm1 --disk d=disk.img --crash-interval 0 \
	>/dev/null || fail "enable-replication"
"$AGENT" --config vault/agents/vm1.conf --once 2>/dev/null || fail "agent cycle"

seg=$(find vault/cache/segments -name '*.seg' | head -1)
[ -n "$seg" ] || fail "no segment waiting in the cache after the agent's cycle"
all_private "vault with a waiting segment" vault
nobody_denied "$seg" "a waiting segment"
nobody_denied vault/agents/vm1.conf "the agent's configuration"

"$REPLICATOR" --vault vault --once 2>/dev/null || fail "replicator pass"
[ -n "$(points_of vault vm1)" ] || fail "no recovery point after the replicator's pass"
ack=vault/cache/acks/vm1.ack
pack=$(find vault/store -name '*.pack' | head -1)
[ -n "$pack" ] || fail "no pack in the store"
all_private "vault after the replicator" vault
[ "$(mode_of vault)" = 700 ] || fail "vault directory is $(mode_of vault), not 700"
for f in "$ack" vault/catalog.db "$pack" vault/agents/vm1.state/d.fp; do
	nobody_denied "$f" "$f"
done

# The files themselves, not only the directories above them: in a copy
# with every directory opened to nobody, the reads must still fail.
cp -a vault open
find open -type d -exec chmod 0755 {} +
"${AS_NOBODY[@]}" ls open/cache/acks >/dev/null || fail "nobody cannot list an opened directory"
for f in "$ack" vault/catalog.db "$pack" vault/agents/vm1.conf vault/agents/vm1.state/d.fp; do
	nobody_denied "open/${f#vault/}" "${f#vault/} in an opened directory"
done
note "files 0600 and directories 0700 under umask 000; nobody reads nothing"

# Directories opened to others are tightened by the next program to open
# them: the vault by ferry, the store and the cache by the replicator.
chmod 0777 vault
"$FERRY" status --vault vault >/dev/null || fail "ferry status"
[ "$(mode_of vault)" = 700 ] || fail "ferry left the 0755 vault directory at $(mode_of vault)"
chmod 0777 vault/cache vault/store
"$REPLICATOR" --vault vault --once 2>/dev/null || fail "replicator pass over opened directories"
[ "$(mode_of vault/cache)" = 700 ] || fail "replicator left a 0777 cache at $(mode_of vault/cache)"
[ "$(mode_of vault/store)" = 700 ] || fail "replicator left a 0777 store at $(mode_of vault/store)"
mkdir -m 0777 outside
[ "$(mode_of outside)" = 777 ] || fail "setup: outside is not 0777"
"$FERRY" enable-replication --vault vault --vm vm2 --disk d=disk.img --cache "$T/outside" \
	>/dev/null || fail "enable-replication with a 0777 cache directory"
[ "$(mode_of outside)" = 700 ] || fail "a 0777 cache directory was left at $(mode_of outside)"
chmod 0777 outside
"$AGENT" --config vault/agents/vm2.conf --once 2>/dev/null || fail "agent cycle into outside"
[ "$(mode_of outside)" = 700 ] || fail "the agent left its 0777 cache at $(mode_of outside)"
all_private "a cache that was 0777" outside
all_private "the agents' state" vault/agents
note "0777 vault, store and cache directories tightened to 0700"

# ferryfs: default_permissions always, images the mounting user's (root).
"$FERRY" test-failover --vault vault vm1 --name t1 >/dev/null 2>&1 || fail "test-failover"
live=mnt/vm1/disks/d.img
clone=mnt/vm1/failovers/t1/d.img
mount_vault_detached vault mnt -o allow_other
cmp "$live" disk.img || fail "root cannot read the live image"
# The catalog's -wal and -shm, open now, copy the catalog's mode.
[ -e vault/catalog.db-wal ] && [ -e vault/catalog.db-shm ] || fail "no -wal or -shm while mounted"
all_private "vault while ferryfs has it open" vault
dd if=/dev/zero of="$clone" bs=4096 count=1 conv=notrunc status=none ||
	fail "root cannot write the clone"
[ "$(stat -c '%a %u' "$live")" = "400 0" ] || fail "live image is $(stat -c '%a %u' "$live"), not 400 root"
[ "$(stat -c '%a %u' "$clone")" = "600 0" ] || fail "clone image is $(stat -c '%a %u' "$clone"), not 600 root"
nobody_denied "$live" "a live image through allow_other"
"${AS_NOBODY[@]}" dd if=/dev/zero of="$clone" bs=4096 count=1 conv=notrunc status=none 2>/dev/null &&
	fail "nobody wrote a failover clone through allow_other"
unmount_vault mnt

# umask=022 shares reading, not writing; uid= hands the images to nobody.
mount_vault_detached vault mnt -o allow_other,umask=022
"${AS_NOBODY[@]}" cmp "$live" disk.img || fail "nobody cannot read a live image with umask=022"
"${AS_NOBODY[@]}" dd if=/dev/zero of="$clone" bs=4096 count=1 conv=notrunc status=none 2>/dev/null &&
	fail "nobody wrote a clone of mode $(stat -c %a "$clone") with umask=022"
unmount_vault mnt
mount_vault_detached vault mnt -o "allow_other,uid=$NOBODY_UID,umask=077"
[ "$(stat -c '%a %u' "$clone")" = "600 $NOBODY_UID" ] ||
	fail "with uid=$NOBODY_UID the clone is $(stat -c '%a %u' "$clone")"
"${AS_NOBODY[@]}" cmp "$live" disk.img || fail "nobody cannot read a live image it owns (uid=)"
"${AS_NOBODY[@]}" dd if=/dev/zero of="$clone" bs=4096 count=1 conv=notrunc status=none ||
	fail "nobody cannot write a clone it owns (uid=)"
if id daemon >/dev/null 2>&1; then
	setpriv --reuid=daemon --regid="$(id -g daemon)" --clear-groups cat "$live" >/dev/null 2>&1 &&
		fail "with uid=nobody,umask=077 the user daemon read a live image"
fi
must_fail "$FERRYFS" --vault vault mnt2 -o umask=999
grep -q "invalid umask" "$T/must_fail.out" || fail "umask=999: $(cat "$T/must_fail.out")"
unmount_vault mnt
note "ferryfs: images private to the owner, shared only by uid=, gid=, umask="

# Plain http:// to object storage: refused before connecting, unless allowed.
# 0.0.0.0 is not loopback by name, yet on Linux a connection to it reaches
# this machine, where port 9 is closed: allowed, it fails fast and otherwise.
export AWS_ACCESS_KEY_ID=ferry AWS_SECRET_ACCESS_KEY=ferry AWS_ENDPOINT_URL=http://0.0.0.0:9
must_fail "$FERRY" init --vault v1 --store s3://ferry-bucket
grep -q "refusing plain http://.*--insecure-http" "$T/must_fail.out" ||
	fail "http:// store not refused with a message naming --insecure-http: $(cat "$T/must_fail.out")"
[ ! -e v1 ] || fail "a refused init left v1 behind"
must_fail env FERRY_INSECURE_HTTP=1 "$FERRY" init --vault v2 --store s3://ferry-bucket
grep -q "refusing plain http" "$T/must_fail.out" &&
	fail "FERRY_INSECURE_HTTP=1 did not allow http://: $(cat "$T/must_fail.out")"
grep -q "cannot create vault" "$T/must_fail.out" || fail "init v2: $(cat "$T/must_fail.out")"
must_fail "$FERRY" init --insecure-http --vault v3 --store s3://ferry-bucket
grep -q "refusing plain http" "$T/must_fail.out" &&
	fail "--insecure-http did not allow http://: $(cat "$T/must_fail.out")"
"$REPLICATOR" --vault vault --once --insecure-http 2>/dev/null ||
	fail "ferry-replicator does not take --insecure-http"
"$AGENT" --config vault/agents/vm1.conf --once --insecure-http 2>/dev/null ||
	fail "ferry-agent does not take --insecure-http"
must_fail env "AZURE_STORAGE_CONNECTION_STRING=AccountName=a;AccountKey=a2V5;BlobEndpoint=http://192.0.2.1/a" \
	"$FERRY" init --vault v4 --store azblob://ferry-container
grep -q "refusing plain http://" "$T/must_fail.out" ||
	fail "http:// Azure endpoint not refused: $(cat "$T/must_fail.out")"
note "plain http:// refused unless --insecure-http or FERRY_INSECURE_HTTP=1"
