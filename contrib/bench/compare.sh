#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Two builds of Ferry (say the tree before a refactor and after it) measured
# side by side in one sitting: initial ingest, cold sequential read and
# random 4 KiB IOPS through ferryfs. Runs bench.sh (PEERS="" PHASES="ferry
# reads" REPS=1) once per build per pair, interleaved so that drift of the
# host hits both alike, and the build that goes first alternates: A B, B A,
# A B, ... Every run uses the same image (built once) and has its own
# directory. The binaries are copied at the start, so rebuilding a build dir
# meanwhile changes nothing. Prints a table (per measure and build: median,
# min–max, the values in pair order; after/before ratio of the medians) and
# writes it to OUTDIR/compare.md; per-run values in OUTDIR/compare.tsv.
#
# Usage: contrib/bench/compare.sh --before BUILD_A --after BUILD_B
#            [--label-before X] [--label-after Y]          (as root)
#   BUILD_A, BUILD_B  Ferry build dirs, buildtype=release; make one of any
#                     revision with contrib/bench/build-rev.sh REV DIR.
#                     The same dir twice is an A/A run: the noise floor.
#   X, Y              names in the table [before, after]
# Environment (defaults in brackets):
#   BENCH_SIZE   image size [2G]; BENCH_SIZE=256M is a quick smoke run
#   BENCH_DATA   image and scratch space, as for bench.sh [/tmp/ferry-bench]
#   OUTDIR       results [$BENCH_DATA/compare-<UTC stamp>]
#   REPS         pairs of runs [3]
#   FIO_RUNTIME  seconds per random-read run [20]; FIO_JOBS ["1 4"]
#   CHECK=0      skip comparing each mounted image with the source
#   REBUILD=1    rebuild the image once, before the first run
#   SKIP_DEPS=1  no apt (by default bench.sh's prep run checks once)
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=$HERE/bench.sh
SIZE=${BENCH_SIZE:-2G}
DATA=${BENCH_DATA:-/tmp/ferry-bench}
PAIRS=${REPS:-3}
FIO_RUNTIME=${FIO_RUNTIME:-20}
FIO_JOBS=${FIO_JOBS:-"1 4"}
CHECK=${CHECK:-1}

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { echo "compare: $1" >&2; exit "${2:-1}"; }
usage() { sed -n '15,20s/^# \{0,1\}//p' "$0" >&2; exit 2; }

B_DIR='' A_DIR='' B_LABEL=before A_LABEL=after
while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		sed -n '4,29s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	--before | --after | --label-before | --label-after)
		[ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value" 2
		case $1 in
		--before) B_DIR=$2 ;;
		--after) A_DIR=$2 ;;
		--label-before) B_LABEL=$2 ;;
		--label-after) A_LABEL=$2 ;;
		esac
		shift 2
		;;
	--before=* | --after=* | --label-before=* | --label-after=*)
		set -- "${1%%=*}" "${1#*=}" "${@:2}"
		;;
	*)
		echo "compare: unknown argument: $1" >&2
		usage
		;;
	esac
done
[ -n "$B_DIR" ] && [ -n "$A_DIR" ] || { echo "compare: --before and --after are required" >&2; usage; }
[ "$B_LABEL" != "$A_LABEL" ] || die "the two labels are the same: $B_LABEL" 2
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number of pairs, not '$PAIRS'" 2
numfmt --from=iec "$SIZE" >/dev/null 2>&1 || die "BENCH_SIZE: not a size: $SIZE" 2
[ -x "$BENCH" ] || die "$BENCH not found"
command -v python3 >/dev/null || die "python3 not found"
[ "$(id -u)" = 0 ] || die "run as root: bench.sh drops the page cache and mounts FUSE file systems"

PROGS=(replicator/ferry replicator/ferry-agent replicator/ferry-replicator fs/ferryfs)

# check_build DIR ROLE : DIR is a Ferry build dir with all four programs.
check_build() {
	local d=$1 role=$2 p bt
	[ -d "$d" ] || die "--$role $d: no such directory (contrib/bench/build-rev.sh REV DIR makes one)"
	for p in "${PROGS[@]}"; do
		[ -x "$d/$p" ] ||
			die "--$role $d: not a Ferry build: $p is missing (build it: ninja -C $d, or contrib/bench/build-rev.sh REV DIR)"
	done
	bt=$(python3 -c 'import json, sys
o = json.load(open(sys.argv[1] + "/meson-info/intro-buildoptions.json"))
print([x["value"] for x in o if x["name"] == "buildtype"][0])' "$d" 2>/dev/null) || bt=unknown
	[ "$bt" = release ] ||
		say "WARNING: --$role $d: buildtype is $bt, not release; the figures are not those of a release build"
}

# describe DIR : what the build was made from, one line.
describe() {
	local d=$1 src rev dirty
	if [ -f "$d/ferry-rev.txt" ]; then # made by build-rev.sh
		cat "$d/ferry-rev.txt"
		return
	fi
	src=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1] + "/meson-info/meson-info.json"))["directories"]["source"])' "$d" 2>/dev/null)
	if [ -n "$src" ] && rev=$(git -C "$src" rev-parse --short HEAD 2>/dev/null); then
		# --no-optional-locks: no index refresh, the checkout is left as it is
		dirty=$(git --no-optional-locks -C "$src" status --porcelain --untracked-files=no 2>/dev/null | grep -q . &&
			echo "+uncommitted changes")
		echo "$rev$dirty, working tree $src ($(git -C "$src" log -1 --format=%s HEAD))"
	else
		echo "source ${src:-unknown}"
	fi
}

check_build "$B_DIR" before
check_build "$A_DIR" after
B_DIR=$(cd "$B_DIR" && pwd) && A_DIR=$(cd "$A_DIR" && pwd) || exit 1

OUTDIR=${OUTDIR:-$DATA/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$DATA" "$OUTDIR" && DATA=$(cd "$DATA" && pwd) && OUTDIR=$(cd "$OUTDIR" && pwd) ||
	die "cannot create $DATA or $OUTDIR"
[ -z "$(ls -A "$OUTDIR")" ] || die "OUTDIR $OUTDIR is not empty; pick a new one"

# Freeze the binaries: bench.sh runs ninja in FERRY_BUILD before every run,
# and a build of a working tree that is being edited would change between
# runs. Each copy has an empty build.ninja, so that ninja has nothing to do.
freeze() {
	local role=$1 src=$2 dst=$OUTDIR/builds/$1 p
	mkdir -p "$dst/replicator" "$dst/fs" || die "cannot create $dst"
	for p in "${PROGS[@]}"; do cp -p "$src/$p" "$dst/$p" || die "cannot copy $src/$p"; done
	: >"$dst/build.ninja"
	{
		echo "$role: $src"
		echo "  $(describe "$src")"
		(cd "$dst" && sha256sum "${PROGS[@]}" | sed 's/^/  /')
	} >>"$OUTDIR/builds.txt"
}
freeze before "$B_DIR"
freeze after "$A_DIR"
B_DESC=$(describe "$B_DIR")
A_DESC=$(describe "$A_DIR")
SAME=0
if cmp -s <(cd "$OUTDIR/builds/before" && sha256sum "${PROGS[@]}") <(cd "$OUTDIR/builds/after" && sha256sum "${PROGS[@]}"); then
	SAME=1
	say "the two builds have identical programs: this is an A/A run (it measures the noise)"
fi

trap 'exit 130' INT
trap 'exit 143' TERM

# bench_run OUTDIR ROLE [VAR=value...] : one bench.sh run, output to OUTDIR/bench.out.
bench_run() {
	local out=$1 role=$2
	shift 2
	mkdir -p "$out"
	env BENCH_SIZE="$SIZE" BENCH_DATA="$DATA" OUTDIR="$out" FERRY_BUILD="$OUTDIR/builds/$role" \
		PEERS="" REPS=1 FIO_RUNTIME="$FIO_RUNTIME" FIO_JOBS="$FIO_JOBS" CHECK="$CHECK" \
		PROFILE=0 KEEP=0 RSS_SIZES="" "$@" "$BENCH" >"$out/bench.out" 2>&1
}

say "compare: $B_LABEL = $B_DIR ($B_DESC)"
say "compare: $A_LABEL = $A_DIR ($A_DESC)"
say "compare: image $SIZE in $DATA, $PAIRS pairs, fio ${FIO_RUNTIME}s x jobs $FIO_JOBS; results in $OUTDIR"

# Prep: the dependencies (once) and the image (reused if present, built once
# otherwise), through bench.sh itself with no phase to run.
say "prep: dependencies and image (bench.sh with no phase; log $OUTDIR/prep/bench.out)"
T0=$EPOCHREALTIME
bench_run "$OUTDIR/prep" before PHASES=none SKIP_DEPS="${SKIP_DEPS:-0}" REBUILD="${REBUILD:-0}" || {
	tail -20 "$OUTDIR/prep/bench.out" >&2
	die "prep run failed, see $OUTDIR/prep/bench.out"
}
[ -f "$DATA/img-$SIZE/disk.img" ] || die "prep run made no image $DATA/img-$SIZE/disk.img"
say "prep: done in $(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{printf "%.0f", a-b}') s"

MANIFEST=$OUTDIR/runs.tsv
printf 'pair\tslot\trole\tdir\trc\twall_s\tload1\n' >"$MANIFEST"
NRUNS=$((2 * PAIRS)) N=0 FAILED=0
for i in $(seq 1 "$PAIRS"); do
	if [ $((i % 2)) = 1 ]; then order="before after"; else order="after before"; fi
	slot=0
	for role in $order; do
		N=$((N + 1)) slot=$((slot + 1))
		if [ "$role" = before ]; then label=$B_LABEL; else label=$A_LABEL; fi
		dir=$OUTDIR/p$i-$role
		load=$(cut -d' ' -f1 /proc/loadavg)
		say "run $N of $NRUNS: pair $i, $label (load $load)"
		T0=$EPOCHREALTIME
		bench_run "$dir" "$role" PHASES="ferry reads" SKIP_DEPS=1 REBUILD=0
		rc=$?
		wall=$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{printf "%.1f", a-b}')
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$slot" "$role" "$dir" "$rc" "$wall" "$load" >>"$MANIFEST"
		if [ "$rc" != 0 ]; then
			FAILED=$((FAILED + 1))
			tail -5 "$dir/bench.out" | sed 's/^/    /' >&2
			say "  FAILED (rc $rc) after $wall s, see $dir/bench.out"
			# A build whose first run fails is broken (or the setup is):
			# the other runs would measure one build alone.
			[ "$i" -gt 1 ] || die "$label's first run failed; stopping (see $dir/bench.out and $dir/log/)"
			continue
		fi
		say "  $(awk -F'\t' '$1 == "ferry" && ($2 == "ingest_MBps" || $2 == "seq_read_MBps" || $2 ~ /^rand4k_iops_j/) {
			printf "%s %s %s, ", $2, $5, $3 }' "$dir/results.tsv")$wall s"
	done
done

python3 - "$MANIFEST" "$OUTDIR" "$B_LABEL" "$A_LABEL" "$B_DESC" "$A_DESC" "$SIZE" "$FIO_RUNTIME" "$SAME" \
	>"$OUTDIR/compare.md" <<'EOF'
import os, statistics, sys

manifest, outdir, labels = sys.argv[1], sys.argv[2], {"before": sys.argv[3], "after": sys.argv[4]}
desc = {"before": sys.argv[5], "after": sys.argv[6]}
size, fio_runtime, same = sys.argv[7], sys.argv[8], sys.argv[9] == "1"
roles = ("before", "after")

runs = []
with open(manifest) as f:
    next(f)
    for line in f:
        pair, slot, role, d, rc, wall, load = line.rstrip("\n").split("\t")
        runs.append(dict(pair=int(pair), slot=int(slot), role=role, dir=d, rc=int(rc), wall=float(wall),
                         load=float(load)))
pairs = max(r["pair"] for r in runs)

# values[(section, metric)][role][pair] = value
values, size_bytes = {}, None
for r in runs:
    path = os.path.join(r["dir"], "results.tsv")
    if r["rc"] != 0 or not os.path.exists(path):
        continue
    with open(path) as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 5:
                continue
            try:
                v = float(p[4])
            except ValueError:
                continue
            if v != v:  # nan: a failed measurement
                continue
            if p[:2] == ["image", "size"]:
                size_bytes = v
            values.setdefault((p[0], p[1]), {}).setdefault(r["role"], {})[r["pair"]] = v


def fmt(x):
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return "{:,.0f}".format(x)
    if ax >= 100:
        return "%.0f" % x
    if ax >= 10:
        return "%.1f" % x
    if ax >= 1:
        return "%.2f" % x
    return "%.3f" % x


jobs = sorted(int(m[len("rand4k_iops_j"):]) for (s, m) in values
              if s == "ferry" and m.startswith("rand4k_iops_j") and m[len("rand4k_iops_j"):].isdigit())
measures = [("ingest_MBps", "initial ingest, cold (MB/s)", "up"),
            ("seq_read_MBps", "sequential read of the point, cold (MB/s)", "up")]
measures += [("rand4k_iops_j%d" % j, "random 4 KiB read, %d job%s (IOPS)" % (j, "" if j == 1 else "s"), "up")
             for j in jobs]
measures += [("ingest_cpu_s", "initial ingest CPU time, agent + replicator (s)", "down")]

out = []
w = out.append
w("## Ferry: %s vs %s\n" % (labels["before"], labels["after"]))
for role in roles:
    w("- **%s**: %s" % (labels[role], desc[role]))
order = ", ".join(
    " ".join(labels[r["role"]] for r in sorted((r for r in runs if r["pair"] == p), key=lambda r: r["slot"]))
    for p in range(1, pairs + 1))
if same:
    w("\nThe two builds have identical programs: an A/A run, whose ratios show this sitting's noise.")
w("")
w("Image %s%s; %d pair%s of bench.sh runs (PHASES=\"ferry reads\", REPS=1), in the order: %s; "
  "fio %s s per random-read run.\n" % (
      size, " (%s bytes)" % "{:,.0f}".format(size_bytes) if size_bytes else "", pairs, "" if pairs == 1 else "s",
      order, fio_runtime))
w("| measure | build | median | min–max | %s | %s/%s | ranges |" % (
    "value" if pairs == 1 else "values, pair 1…%d" % pairs, labels["after"], labels["before"]))
w("|---|---|---|---|---|---|---|")
tsv = ["measure\tbuild\tpair\tvalue"]
for met, name, better in measures:
    per = values.get(("ferry", met), {})
    med, rng = {}, {}
    for role in roles:
        vals = per.get(role, {})
        for p in sorted(vals):
            tsv.append("%s\t%s\t%d\t%s" % (met, labels[role], p, vals[p]))
        if vals:
            med[role] = statistics.median(vals.values())
            rng[role] = (min(vals.values()), max(vals.values()))
    ratio = overlap = ""
    if "before" in med and "after" in med and med["before"]:
        r = med["after"] / med["before"]
        ratio = "**%.2f×**" % r
        (lo_b, hi_b), (lo_a, hi_a) = rng["before"], rng["after"]
        if min(len(per["before"]), len(per["after"])) < 2:
            overlap = ""  # one value each: no range to speak of
        elif lo_a > hi_b or hi_a < lo_b:
            overlap = "apart, %s %s" % (labels["after"], "better" if (lo_a > hi_b) == (better == "up") else "worse")
        else:
            overlap = "overlap"
    for role in roles:
        vals = per.get(role, {})
        cells = ", ".join(fmt(vals[p]) if p in vals else "-" for p in range(1, pairs + 1))
        w("| %s | %s | %s | %s | %s | %s | %s |" % (
            name if role == "before" else "", labels[role], fmt(med.get(role)),
            "%s–%s" % tuple(fmt(x) for x in rng[role]) if role in rng else "-", cells,
            ratio if role == "after" else "", overlap if role == "after" else ""))
w("")
w("Ratio: above 1× the %s build is faster (MB/s, IOPS); for CPU time below 1× it uses less. "
  "\"overlap\": the min–max ranges of the two builds overlap, so the difference is within this "
  "sitting's noise." % labels["after"])
w("")
checks = values.get(("ferry", "content_matches_v1"), {})
if checks:
    w("Mounted image equal to the source (disk.mod.img): " + "; ".join(
        "%s %d of %d runs" % (labels[r], sum(1 for v in checks.get(r, {}).values() if v == 1),
                              len(checks.get(r, {}))) for r in roles) + ".\n")
w("Load average (1 min) before each run: " + "; ".join(
    "pair %d: %s" % (p, ", ".join(
        "%s %s" % (labels[r["role"]], fmt(r["load"]))
        for r in sorted((r for r in runs if r["pair"] == p), key=lambda r: r["slot"])))
    for p in range(1, pairs + 1)) + ". This host's CPUs may be shared; a load well above 1 means other work "
  "competed with the run.\n")
walls = {role: [r["wall"] for r in runs if r["role"] == role and r["rc"] == 0] for role in roles}
if all(walls.values()):
    w("Wall time of one bench.sh run (median): %s %.0f s, %s %.0f s; one pair %.0f s." % (
        labels["before"], statistics.median(walls["before"]), labels["after"],
        statistics.median(walls["after"]), statistics.median(walls["before"]) + statistics.median(walls["after"])))
failed = [r for r in runs if r["rc"] != 0]
if failed:
    w("")
    w("**%d run(s) failed**: %s." % (len(failed), ", ".join(
        "pair %d %s (rc %d, %s/bench.out)" % (r["pair"], labels[r["role"]], r["rc"], r["dir"]) for r in failed)))
w("")
w("Runs: %s/p<pair>-<before|after>/ (results.tsv, results.md, log/); the programs measured and their "
  "sha256 in %s/builds.txt." % (outdir, outdir))
print("\n".join(out))
with open(os.path.join(outdir, "compare.tsv"), "w") as f:
    f.write("\n".join(tsv) + "\n")
EOF
rc=$?
[ "$rc" = 0 ] || die "the statistics failed (python3 rc $rc); per-run results are in $OUTDIR/p*/results.tsv"
cat "$OUTDIR/compare.md"
say "compare: $OUTDIR/compare.md (per-run values: compare.tsv, runs: runs.tsv)"
[ "$FAILED" = 0 ] || die "$FAILED of $NRUNS runs failed"
exit 0
