#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs what is missing, builds and runs every test the way CI does:
#   1. gcc, warnings as errors: all suites (unit, fuzz, integration, fuse);
#   2. clang with ASan+UBSan: the unit and fuzz suites (FERRY_ASAN_SUITES
#      to change the list; FERRY_SKIP_ASAN=1 to skip this build);
#   3. the clang-format check (contrib/check-format.sh), counted as one test;
#   4. the layout check (contrib/check-layout.sh on the gcc build): no source
#      of replicator/ or fs/ in two executables, no .c file included.
# Before the builds, contrib/check-deps.sh checks that install-deps.sh
# installs every meson dependency(), also counted as one test.
# Results come from meson's testlog.json, so a crashed test cannot be lost
# in the noise of its output. A failed step prints its own error where it
# fails (a failed meson setup the end of its meson-log.txt and the package
# of each dependency not found) and again, in one line, in the summary.
# The last line printed is always
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
# why: one line for the summary, so that it says what broke, not only where.
count_step() { # name status [why]
	if [ "$2" = 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failed_names+=("$1${3:+ -- $3}")
	fi
}

# The first line of a log matching an extended regex, or nothing.
first_match() { # regex logfile
	grep -m1 -E "$1" "$2" 2>/dev/null | cut -c1-200 || true
}

# Reads one meson testlog.json (one JSON object per line) and adds it up.
count_log() { # label logfile
	local kind name results
	# Read whole first: a reader that dies half-way must not pass for fewer tests.
	if ! results=$(python3 - "$2" <<'PY'
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
	); then
		count_step "tests ($1): cannot read $2" 1 "python3 failed on it (see above)"
		return
	fi
	while IFS=$'\t' read -r kind name; do
		case "$kind" in
		pass) passed=$((passed + 1)) ;;
		fail) failed=$((failed + 1)) && failed_names+=("$1: $name") ;;
		skip) skipped=$((skipped + 1)) && skipped_names+=("$1: $name") ;;
		esac
	done <<<"$results"
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
			contrib/check-deps.sh --explain "$dir"
			count_step "build ($label): meson setup" 1 \
				"$(first_match 'ERROR:' "$dir.setup.log") (log: $dir.setup.log)"
			return
		fi
	fi
	# Through tee, so that the summary can name the first failed target.
	if ! ninja -C "$dir" -j "$jobs" 2>&1 | tee "$dir.ninja.log"; then
		local target why
		target=$(first_match '^FAILED: ' "$dir.ninja.log")
		why=$(first_match ': (fatal )?error:|undefined reference|^ninja: error' "$dir.ninja.log")
		count_step "build ($label): ninja" 1 "$target $why (log: $dir.ninja.log)"
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
	local rc=$?
	if [ -s "$log" ]; then
		count_log "$label" "$log"
	else
		count_step "tests ($label): meson test wrote no testlog.json" 1 "meson test exited with $rc (see above)"
	fi
}

section "dependencies"
if ! contrib/install-deps.sh --test; then
	count_step "install-deps" 1 "contrib/install-deps.sh --test failed (apt's output above)"
fi

section "build dependencies: meson dependency() -> contrib/deps.tsv -> install-deps.sh"
contrib/check-deps.sh
count_step "check-deps" $? "a meson dependency() that install-deps.sh does not install (see above)"

mkdir -p "$build_root"

# Test builds can inject faults (FERRY_FAULTS, docs/reliability.md).
CC=gcc build_and_test gcc "$build_root/ci-gcc" "" --buildtype=debugoptimized -Dwerror=true \
	-Dfault_injection=true

section "layout check"
contrib/check-layout.sh "$build_root/ci-gcc"
count_step "layout check" $? "a source built into two programs, or a .c file included (see above)"

if [ "${FERRY_SKIP_ASAN:-0}" != 1 ]; then
	# halt_on_error so that UBSan findings fail the test instead of scrolling by.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}
	CC=clang build_and_test asan "$build_root/ci-asan" "$asan_suites" \
		--buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
		-Dfault_injection=true
else
	section "ASan build skipped (FERRY_SKIP_ASAN=1)"
fi

section "format check"
contrib/check-format.sh
count_step "clang-format check" $? "contrib/check-format.sh --fix rewrites the files listed above"

section "summary"
for n in "${skipped_names[@]}"; do echo "skipped: $n"; done
for n in "${failed_names[@]}"; do echo "FAILED:  $n"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
