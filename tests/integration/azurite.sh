#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The Azure backend against Azurite, the Azure Storage emulator: installs a
# pinned azurite with npm into a cache outside the repository (once), starts
# its blob service alone on a free loopback port with telemetry off
# (objstore-lib.sh), and runs test-azure-live against it. Skips (77) with the
# reason where npm or the install is unavailable.
. "$(dirname "$0")/objstore-lib.sh"

LIVE=$BUILD/tests/test-azure-live
[ -x "$LIVE" ] || fail "$LIVE not built"
azurite_start
"$LIVE" | tee "$T/live.tap"
! grep -q '^not ok' "$T/live.tap"
