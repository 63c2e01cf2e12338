#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Azure backend against Azurite, the Azure Storage emulator: installs a
# pinned azurite with npm into a cache outside the repository (once), starts
# its blob service alone on a free loopback port with telemetry off, and runs
# test-azure-live against it. Skips (77) with the reason where npm or the
# install is unavailable.
set -euo pipefail

BUILD=${FERRY_BUILD:?FERRY_BUILD must point at the meson build directory}
AZURITE_VERSION=3.35.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ferry-test/azurite
LIVE=$BUILD/tests/test-azure-live

skip() { echo "SKIP: $*" >&2; exit 77; }

[ -x "$LIVE" ] || { echo "FAIL: $LIVE not built" >&2; exit 1; }
command -v node >/dev/null || skip "node missing (Debian package nodejs)"
installed=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$CACHE/node_modules/azurite/package.json" 2>/dev/null || true)
if [ "$installed" != "$AZURITE_VERSION" ] || [ ! -x "$CACHE/node_modules/.bin/azurite-blob" ]; then
	command -v npm >/dev/null || skip "npm missing (Debian package npm)"
	mkdir -p "$CACHE"
	npm install --prefix "$CACHE" --no-audit --no-fund "azurite@$AZURITE_VERSION" \
		>"$CACHE/install.log" 2>&1 ||
		skip "npm install azurite@$AZURITE_VERSION failed (see $CACHE/install.log)"
fi

T=$(mktemp -d /tmp/ferry-azurite.XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

# A free port: the kernel picks one for a socket we close right away.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
	echo $((20000 + RANDOM % 20000)))
"$CACHE/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$PORT" \
	--inMemoryPersistence --disableTelemetry --silent >"$T/azurite.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
	curl -s -o /dev/null "http://127.0.0.1:$PORT/devstoreaccount1?comp=list" && break
	kill -0 "$PID" 2>/dev/null || { cat "$T/azurite.log" >&2; echo "FAIL: azurite died" >&2; exit 1; }
	sleep 0.1
done

export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$PORT/devstoreaccount1;"
"$LIVE" | tee "$T/live.tap"
! grep -q '^not ok' "$T/live.tap"
