#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The systemd units (contrib/systemd/): `meson install` puts them, the
# programs and the man pages into a scratch DESTDIR; the units' ExecStart=
# name the installed programs; and instances of them, named as `ferry
# enable-replication` tells the user to name them, pass `systemd-analyze
# verify` without a word (with ExecStart= pointed into the DESTDIR, as
# verify wants the programs to exist).
. "$(dirname "$0")/lib.sh"
cd "$T"

command -v systemd-analyze > /dev/null || skip "no systemd-analyze (Debian package systemd)"
command -v systemd-escape > /dev/null || skip "no systemd-escape (Debian package systemd)"
command -v meson > /dev/null || skip "no meson on PATH to install with"

dest=$T/dest
meson install -C "$BUILD" --destdir "$dest" --no-rebuild --quiet > install.log 2>&1 ||
	fail "meson install failed: $(tail -n 5 install.log)"
units=(ferry-agent@.service ferry-replicator@.service ferryfs@.service)
unitdir=$(dirname "$(find "$dest" -name ferry-agent@.service -print -quit)")
[ "$unitdir" != . ] || fail "meson install installed no ferry-agent@.service"
case "$unitdir" in
*/lib/systemd/system) ;;
*) fail "units installed into $unitdir, not a systemd unit directory" ;;
esac
bindir=
for u in "${units[@]}"; do
	[ -f "$unitdir/$u" ] || fail "meson install did not install $u"
	! grep -n '@[A-Z_]*@' "$unitdir/$u" || fail "$u keeps a placeholder"
	exe=$(sed -n 's/^ExecStart=//p' "$unitdir/$u" | cut -d' ' -f1)
	[ -x "$dest$exe" ] || fail "$u runs $exe, which meson install did not install"
	bindir=$(dirname "$exe")
done
for prog in ferry ferry-agent ferry-replicator ferryfs; do
	[ -x "$dest$bindir/$prog" ] || fail "meson install did not install $prog into $bindir"
done
manargs=(--man=no)
if command -v scdoc > /dev/null && command -v man > /dev/null; then
	for page in man1/ferry.1 man8/ferry-agent.8 man8/ferry-replicator.8 man8/ferryfs.8; do
		[ -n "$(find "$dest" -path "*/man/$page")" ] || fail "meson install did not install $page"
	done
	# Documentation=man:... is checked against the installed pages.
	export MANPATH
	MANPATH=$(dirname "$(dirname "$(find "$dest" -path '*/man/man8/ferryfs.8' -print -quit)")")
	manargs=(--man=yes)
fi

# The instances enable-replication names, for a vault whose path needs
# escaping (a blank, a '-').
mkdir -p "my vault"
"$FERRY" init --vault "my vault/v-1" > /dev/null
truncate -s 8M d.img
"$FERRY" enable-replication --vault "my vault/v-1" --vm web-1 --disk a=d.img > enable.out ||
	fail "enable-replication failed"
systemctl() { # records the unit the printed line enables
	[ "$1 $2" = "enable --now" ] || fail "enable-replication prints 'systemctl $*'"
	echo "$3" >> enabled.txt
}
: > enabled.txt
for kind in ferry-agent ferry-replicator; do
	line=$(grep -o "systemctl enable --now \"$kind@.*" enable.out) ||
		fail "enable-replication prints no systemctl line for $kind: $(cat enable.out)"
	eval "$line"
done
agent_unit=$(sed -n 1p enabled.txt) replicator_unit=$(sed -n 2p enabled.txt)
inst() { local i=${1#*@}; systemd-escape --unescape --path -- "${i%.service}"; }
[ "$(inst "$agent_unit")" = "$T/my vault/v-1/agents/web-1.conf" ] ||
	fail "agent unit $agent_unit is not the configuration's path"
[ "$(inst "$replicator_unit")" = "$T/my vault/v-1" ] ||
	fail "replicator unit $replicator_unit is not the vault's path"

mkdir verify
for u in "${units[@]}"; do
	sed "s|^\(Exec[A-Za-z]*=-\{0,1\}\)$bindir/|\1$dest$bindir/|" "$unitdir/$u" > "verify/$u"
done
for name in "$agent_unit" "$replicator_unit" ferryfs@dr.service; do
	cp "verify/${name%%@*}@.service" "verify/$name"
	if ! systemd-analyze verify "${manargs[@]}" "$T/verify/$name" > verify.out 2>&1 ||
		[ -s verify.out ]; then
		fail "systemd-analyze verify $name: $(cat verify.out)"
	fi
done
note "units verified: $agent_unit $replicator_unit ferryfs@dr.service"
