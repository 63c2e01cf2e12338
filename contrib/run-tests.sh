#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs what is missing, builds and runs every test the way CI does:
#   1. gcc, warnings as errors: all suites (unit, fuzz, integration, fuse);
#   2. clang with ASan+UBSan: the unit and fuzz suites (FERRY_ASAN_SUITES
#      to change the list; FERRY_SKIP_ASAN=1 to skip this build);
#   3. the clang-format check (contrib/check-format.sh), counted as one test.
# Results come from meson's testlog.json, so a crashed test cannot be lost
# in the noise of its output. The last line printed is always
#   N passed, N failed, N skipped
# and the exit status is non-zero when anything failed. Build directories
# live under build/ (FERRY_BUILD_ROOT to move them).
set -uo pipefail

cd "$(dirname "$0")/.." || exit
src=$PWD
build_root=${FERRY_BUILD_ROOT:-$src/build}
asan_suites=${FERRY_ASAN_SUITES:-unit fuzz}
jobs=$(nproc 2>/dev/null || echo 2)

passed=0 failed=0 skipped=0
skipped_names=() failed_names=()

section() { printf '\n==== %s ====\n' "$*"; }

# A step that is not a meson test (a build, the format check) still counts,
# so a broken build can never look like a green run with fewer tests.
count_step() { # name status
	if [ "$2" = 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failed_names+=("$1")
	fi
}

# Reads one meson testlog.json (one JSON object per line) and adds it up.
count_log() { # label logfile
	local kind name
	while IFS=$'\t' read -r kind name; do
		case "$kind" in
		pass) passed=$((passed + 1)) ;;
		fail) failed=$((failed + 1)) && failed_names+=("$1: $name") ;;
		skip) skipped=$((skipped + 1)) && skipped_names+=("$1: $name") ;;
		esac
	done < <(python3 - "$2" <<'PY'
import json, sys
kinds = {"OK": "pass", "EXPECTEDFAIL": "pass", "SKIP": "skip"}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    line = line.strip()
    if not line:
        continue
    try:
        t = json.loads(line)
    except ValueError:
        print("fail\tunreadable testlog line")
        continue
    # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS and anything unknown are failures.
    print("%s\t%s" % (kinds.get(t.get("result"), "fail"), t.get("name", "?")))
PY
	)
}

# Configures (or reconfigures) a build dir, builds it and runs suites in it.
build_and_test() { # label dir "suites" meson-args...
	local label=$1 dir=$2 suites=$3
	shift 3
	local setup=(meson setup)
	[ -f "$dir/meson-private/coredata.dat" ] && setup+=(--reconfigure)

	section "build ($label) in ${dir#"$src"/}"
	# A build dir left by another meson version cannot be reconfigured: wipe it.
	if ! "${setup[@]}" "$dir" "$src" "$@" >"$dir.setup.log" 2>&1; then
		if ! [ -f "$dir/meson-private/coredata.dat" ] ||
			! meson setup --wipe "$dir" "$src" "$@" >"$dir.setup.log" 2>&1; then
			cat "$dir.setup.log"
			count_step "build ($label): meson setup" 1
			return
		fi
	fi
	if ! ninja -C "$dir" -j "$jobs"; then
		count_step "build ($label): ninja" 1
		return
	fi
	count_step "build ($label)" 0

	section "tests ($label): ${suites:-all suites}"
	local args=(-C "$dir" --print-errorlogs --no-rebuild)
	for s in $suites; do args+=(--suite "$s"); done
	[ "$label" = asan ] && args+=(--timeout-multiplier 3)
	local log=$dir/meson-logs/testlog.json
	rm -f "$log"
	meson test "${args[@]}"
	if [ -s "$log" ]; then
		count_log "$label" "$log"
	else
		count_step "tests ($label): meson test wrote no testlog.json" 1
	fi
}

section "dependencies"
if ! contrib/install-deps.sh --test; then
	count_step "install-deps" 1
fi

mkdir -p "$build_root"

CC=gcc build_and_test gcc "$build_root/ci-gcc" "" --buildtype=debugoptimized -Dwerror=true

if [ "${FERRY_SKIP_ASAN:-0}" != 1 ]; then
	# halt_on_error so that UBSan findings fail the test instead of scrolling by.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}
	CC=clang build_and_test asan "$build_root/ci-asan" "$asan_suites" \
		--buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false
else
	section "ASan build skipped (FERRY_SKIP_ASAN=1)"
fi

section "format check"
contrib/check-format.sh
count_step "clang-format check" $?

section "summary"
for n in "${skipped_names[@]}"; do echo "skipped: $n"; done
for n in "${failed_names[@]}"; do echo "FAILED:  $n"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
