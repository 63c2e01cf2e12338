#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Checks that every C source and header follows .clang-format. Lists each
# file that does not, with the first lines of clang-format's complaint.
# With --fix, rewrites them in place instead.
#
# Usage: contrib/check-format.sh [--fix]
set -uo pipefail
cd "$(dirname "$0")/.." || exit

if ! command -v clang-format >/dev/null; then
	echo "check-format: clang-format not found (contrib/install-deps.sh --test)" >&2
	exit 1
fi

mapfile -t files < <(find include replicator fs tests -name '*.[ch]' -type f | sort)
if [ "${1:-}" = --fix ]; then
	clang-format -i "${files[@]}"
	exit 0
fi

bad=0
for f in "${files[@]}"; do
	if ! out=$(clang-format --dry-run --Werror "$f" 2>&1); then
		echo "check-format: $f is not formatted (clang-format -i $f):"
		printf '%s\n' "$out" | head -n 6 | sed 's/^/    /'
		bad=$((bad + 1))
	fi
done
echo "check-format: ${#files[@]} files, $bad not formatted ($(clang-format --version))"
[ "$bad" = 0 ]
