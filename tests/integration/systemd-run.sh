#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The agent and the replicator run under their systemd units (issue 15, 2):
# where systemd is the init system, the units `meson install` installs
# (ExecStart= pointed into a scratch DESTDIR) go into /run/systemd/system
# for the test's time; an instance of each, named as `ferry
# enable-replication` prints them, replicates a file through the units'
# sandboxing (the vault outside /tmp: the replicator has PrivateTmp=), and
# both are active and cut points; stopping them stops them. Skips with the
# reason where systemd is not running (containers, build machines).
. "$(dirname "$0")/lib.sh"

[ -d /run/systemd/system ] ||
	skip "systemd is not the init system here (no /run/systemd/system): the units are checked with systemd-analyze verify by systemd-units.sh only"
[ "$(id -u)" = 0 ] || skip "not root: cannot install units into /run/systemd/system"
command -v systemctl >/dev/null || skip "no systemctl"
command -v meson >/dev/null || skip "no meson on PATH to install with"

dest=$T/dest
meson install -C "$BUILD" --destdir "$dest" --no-rebuild --quiet >"$T/install.log" 2>&1 ||
	fail "meson install failed: $(tail -n 5 "$T/install.log")"
unitdir=$(dirname "$(find "$dest" -name ferry-agent@.service -print -quit)")
bindir=$(dirname "$(sed -n 's/^ExecStart=//p' "$unitdir/ferry-agent@.service" | cut -d' ' -f1)")
run=/run/systemd/system
# Outside /tmp: PrivateTmp= would hide it from the replicator.
D=$(mktemp -d /var/lib/ferry-systemd-test.XXXXXX)
units=()
stop_units() {
	local u
	for u in "${units[@]}"; do systemctl stop "$u" 2>/dev/null || true; done
	rm -f "$run/ferry-agent@.service" "$run/ferry-replicator@.service"
	systemctl daemon-reload 2>/dev/null || true
	rm -rf "$D"
}
trap 'stop_units; cleanup' EXIT
for u in ferry-agent@.service ferry-replicator@.service; do
	sed "s|^ExecStart=$bindir/|ExecStart=$dest$bindir/|" "$unitdir/$u" >"$run/$u"
done
systemctl daemon-reload

"$dest$bindir/ferry" init --vault "$D/vault" >/dev/null
truncate -s 16M "$D/disk.img"
"$dest$bindir/ferry" enable-replication --vault "$D/vault" --vm svc1 --disk d="$D/disk.img" \
	--interval 2 --crash-interval 0 >"$T/enable.out" 2>&1 || fail "enable-replication: $(cat "$T/enable.out")"
for kind in ferry-agent ferry-replicator; do
	line=$(grep -o "systemctl enable --now \"$kind@.*" "$T/enable.out") ||
		fail "enable-replication prints no systemctl line for $kind"
	unit=$(eval "echo ${line#systemctl enable --now }")
	units+=("$unit")
	systemctl start "$unit" || fail "systemctl start $unit failed: $(systemctl status "$unit" 2>&1 | tail -n 5)"
done
for i in $(seq 300); do
	n=$("$dest$bindir/ferry" recovery-points --vault "$D/vault" svc1 2>/dev/null | grep -c . || true)
	[ "$n" -ge 2 ] && break
	sleep 0.2
done
[ "$n" -ge 2 ] || fail "under systemd: $n recovery points in 60 s; $(journalctl -n 20 -u "${units[0]}" -u "${units[1]}" 2>&1)"
for u in "${units[@]}"; do
	[ "$(systemctl is-active "$u")" = active ] || fail "$u is not active"
done
note "agent and replicator ran as ${units[*]} and cut $n points"
for u in "${units[@]}"; do
	systemctl stop "$u"
	[ "$(systemctl is-active "$u" || true)" != active ] || fail "$u still active after stop"
done
