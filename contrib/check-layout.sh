#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Checks the source layout rules of the house style: each program is a thin
# main over libraries, so a source of replicator/ or fs/ is built once, into
# one executable or into a library the executables link. Fails, naming the
# file and the targets, when
#   - a source under replicator/ or fs/ is compiled into more than one
#     executable, or into an executable and a library too (static libraries
#     among themselves are fine: the fuzzing build has a coverage copy of the
#     core and of the middle library);
#   - a .c or .h file under include/, replicator/, fs/ or tests/ #includes a
#     .c file.
# The targets come from `meson introspect --targets BUILDDIR`; --targets-json
# reads that JSON from a file instead (to test this script).
#
# Usage: contrib/check-layout.sh BUILDDIR
#        contrib/check-layout.sh --targets-json FILE [--source-root DIR]
set -uo pipefail

usage() {
	echo "usage: contrib/check-layout.sh BUILDDIR" >&2
	echo "       contrib/check-layout.sh --targets-json FILE [--source-root DIR]" >&2
	exit 2
}

builddir='' json='' root=''
while [ $# -gt 0 ]; do
	case "$1" in
	--targets-json) [ $# -ge 2 ] || usage; json=$2; shift 2 ;;
	--source-root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
	-h | --help) sed -n '4,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) usage ;;
	*) [ -z "$builddir" ] || usage; builddir=$1; shift ;;
	esac
done
if { [ -n "$builddir" ] && [ -n "$json" ]; } || { [ -z "$builddir" ] && [ -z "$json" ]; }; then
	usage
fi

tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
if [ -n "$builddir" ]; then
	if ! command -v meson >/dev/null; then
		echo "check-layout: meson not found (contrib/install-deps.sh --test)" >&2
		exit 1
	fi
	if ! meson introspect --targets "$builddir" >"$tmp"; then
		echo "check-layout: cannot read the targets of $builddir (not a meson build directory?)" >&2
		exit 1
	fi
	json=$tmp
	# The tree the build directory was configured from.
	if [ -z "$root" ]; then
		root=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["directories"]["source"])' \
			"$builddir/meson-info/meson-info.json") || exit 1
	fi
fi
[ -n "$root" ] || root=$(cd "$(dirname "$0")/.." && pwd)

python3 - "$json" "$root" <<'EOF'
import json
import os
import re
import sys

targets_file, root = sys.argv[1], os.path.realpath(sys.argv[2])
try:
    with open(targets_file) as f:
        targets = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"check-layout: cannot read targets from {targets_file}: {e}")

def rel(path):
    path = os.path.normpath(os.path.join(root, path))
    r = os.path.relpath(os.path.realpath(path), root)
    return None if r.startswith("..") else r

problems = 0
# source -> [(kind, target name)]
users = {}
nexe = 0
for t in targets:
    kind = t.get("type", "")
    if kind == "executable":
        nexe += 1
    elif kind != "static library":
        continue
    seen = set()
    for group in t.get("target_sources", []):
        for src in group.get("sources", []):
            r = rel(src)
            if r is None or r in seen or not r.startswith(("replicator/", "fs/")):
                continue
            seen.add(r)
            users.setdefault(r, []).append((kind, t["name"]))

for src in sorted(users):
    exes = sorted(n for k, n in users[src] if k == "executable")
    libs = sorted(n for k, n in users[src] if k != "executable")
    if len(exes) > 1:
        print(f"check-layout: {src} is compiled into {len(exes)} executables: "
              f"{', '.join(exes)}; build it once into a library and link that")
        problems += 1
    elif exes and libs:
        print(f"check-layout: {src} is compiled into executable {exes[0]} and into "
              f"library {', '.join(libs)}; link the library instead")
        problems += 1

# An #include of a .c file, "" or <>; a comment or a string that merely
# names one does not count.
include_c = re.compile(r'^\s*#\s*include\s*[<"]([^">]*\.c)[">]')
nfiles = 0
for top in ("include", "replicator", "fs", "tests"):
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, name)
            nfiles += 1
            with open(path, errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    m = include_c.match(line)
                    if m:
                        print(f"check-layout: {os.path.relpath(path, root)}:{lineno} "
                              f"includes {m.group(1)}; link the library that builds "
                              f"it instead")
                        problems += 1

print(f"check-layout: {nexe} executables, {len(users)} sources of replicator/ and fs/, "
      f"{nfiles} C files: {problems} problem{'' if problems == 1 else 's'}")
sys.exit(1 if problems else 0)
EOF
