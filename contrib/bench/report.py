#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Turns bench.sh's results.tsv into the Markdown results table (stdout).

usage: report.py results.tsv [machine.txt]
Each row: Ferry, each peer, the Ferry/peer ratios and, where the issue sets
one, the target and whether it is met. Ratios are oriented so that >1 means
Ferry is better (faster, smaller), except growth / bytes written.
"""
import statistics
import sys

samples = {}
units = {}
with open(sys.argv[1]) as f:
    next(f)
    for line in f:
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 4:  # older files: no repetition column
            parts.insert(3, "1")
        if len(parts) != 5:
            continue
        sec, met, unit, _rep, val = parts
        try:
            v = float(val)
        except ValueError:
            continue
        if v != v:  # nan: a failed measurement
            continue
        samples.setdefault((sec, met), []).append(v)
        units[(sec, met)] = unit
# Medians over the repetitions; load averages are listed as measured.
rows = {k: statistics.median(v) for k, v in samples.items()}

peers = [p for p in ("restic", "borg") if any(k[0] == p for k in rows)]


def get(sec, met):
    v = rows.get((sec, met))
    return None if v is None or v != v else v


def fmt(x, unit=""):
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        s = "{:,.0f}".format(x)
    elif ax >= 100:
        s = "%.0f" % x
    elif ax >= 10:
        s = "%.1f" % x
    elif ax >= 1:
        s = "%.2f" % x
    else:
        s = "%.3f" % x
    return s + (" " + unit if unit else "")


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def x(r):
    return "-" if r is None else "%.2f×" % r


MB = 1e6
size = get("image", "size")
changed = get("image", "changed_4k_blocks")
written = changed * 4096 if changed else None

out = []
w = out.append
if len(sys.argv) > 2:
    w("Machine and versions:\n")
    w("```")
    with open(sys.argv[2]) as f:
        w(f.read().rstrip())
    w("```\n")

w("Image: %s bytes (%s MB allocated); modified copy: %s scattered 4 KiB blocks rewritten "
  "= %s MB written.\n" % (fmt(size), fmt((get("image", "allocated") or 0) / MB),
                          fmt(changed), fmt(written / MB if written else None)))

if get("raw", "seq_read_cold_MBps"):
    w("Reference: the image file itself reads cold at %s MB/s (dd bs=1M, one reader).\n"
      % fmt(get("raw", "seq_read_cold_MBps")))

hdr = "| measure | Ferry | " + " | ".join(peers) + " | " + \
    " | ".join("Ferry vs %s" % p for p in peers) + " | target | met |"
w(hdr)
w("|" + "---|" * (hdr.count("|") - 1))

targets = []


def line(name, met, unit, scale=1.0, better="higher", target=None, digits_unit=""):
    """target = (peer, factor): Ferry must be >= factor x peer (higher) or <= (lower)."""
    vals = {p: get(p, met) for p in ["ferry"] + peers}
    vals = {p: (None if v is None else v / scale) for p, v in vals.items()}
    cells = [fmt(vals["ferry"], digits_unit)] + [fmt(vals[p], digits_unit) for p in peers]
    rats = []
    for p in peers:
        r = ratio(vals["ferry"], vals[p]) if better == "higher" else ratio(vals[p], vals["ferry"])
        rats.append(x(r))
    tcell, mcell = "", ""
    if target:
        tp, factor = target
        tv = get(tp, met)
        tv = None if tv is None else tv / scale
        r = ratio(vals["ferry"], tv) if better == "higher" else ratio(tv, vals["ferry"])
        tcell = "≥ %g× %s" % (factor, tp)
        ok = r is not None and r >= factor
        mcell = "-" if r is None else ("**yes**" if ok else "**no**")
        targets.append((name, tcell, x(r), ok))
    w("| %s (%s) | %s | %s | %s | %s |" % (name, unit, " | ".join(cells), " | ".join(rats), tcell, mcell))


line("initial ingest, cold", "ingest_MBps", "MB/s", target=("restic", 3))
line("initial ingest time", "ingest_s", "s", better="lower")
if get("ferry", "ingest_pipelined_MBps"):
    pm = get("ferry", "ingest_pipelined_MBps")
    w("| initial ingest, Ferry's agent and replicator at once (MB/s) | %s | %s | %s | | |" % (
        fmt(pm), " | ".join("" for p in peers),
        " | ".join(x(ratio(pm, get(p, "ingest_MBps"))) for p in peers)))
line("initial ingest CPU time", "ingest_cpu_s", "s", better="lower")
line("backup of the modified image", "incr_s", "s", better="lower")
line("repository after the first backup", "repo_v0", "MB", scale=MB, better="lower")
line("store growth after 5 % scattered 4 KiB writes", "growth", "MB", scale=MB, better="lower")
line("mount → first byte, cold", "ttfb_s", "s", better="lower")
line("sequential read of the point, cold", "seq_read_MBps", "MB/s", target=("borg", 3))
line("random 4 KiB read, 1 job", "rand4k_iops_j1", "IOPS", target=("restic", 30))
line("random 4 KiB read, 4 jobs", "rand4k_iops_j4", "IOPS")

w("")
w("Ferry/peer columns: > 1× means Ferry is better (faster, or smaller).\n")

# growth vs bytes written
w("Store growth / bytes written (target for Ferry ≤ 1.2×):\n")
w("| | growth (MB) | / bytes written |")
w("|---|---|---|")
g_ok = None
for p in ["ferry"] + peers:
    g = get(p, "growth")
    r = ratio(g, written)
    w("| %s | %s | %s |" % (p, fmt(g / MB if g is not None else None), x(r)))
    if p == "ferry":
        g_ok = r is not None and r <= 1.2
        targets.append(("store growth / bytes written", "≤ 1.2×", x(r), g_ok))
w("")

# Ferry split and RSS
w("Ferry's initial ingest, by program: agent %s s (%s s CPU), replicator %s s (%s s CPU); "
  "segments in the cache %s MB. Modified image: agent %s s, replicator %s s, "
  "segments %s MB.\n" % (
      fmt(get("ferry", "ingest_agent_s")), fmt(get("ferry", "ingest_agent_cpu_s")),
      fmt(get("ferry", "ingest_replicator_s")), fmt(get("ferry", "ingest_replicator_cpu_s")),
      fmt((get("ferry", "segments_v0_bytes") or 0) / MB),
      fmt(get("ferry", "incr_agent_s")), fmt(get("ferry", "incr_replicator_s")),
      fmt((get("ferry", "segments_v1_bytes") or 0) / MB)))

# What the disk allows: an ingest through Ferry makes its bytes durable
# twice (segments in the cache, then packs in the vault).
rates = [v for v in (get("disk", "durable_%dM_%s_MBps" % (m, k))
                     for m in (8, 16) for k in ("buffered", "direct")) if v]
if rates:
    best = max(rates)
    ferry_mb = ((get("ferry", "segments_v0_bytes") or 0) + (get("ferry", "repo_v0") or 0)) / MB
    parts = ["Disk floor: durable writes of 8 and 16 MiB files (durable-writes.py: write, "
             "fsync, rename, fsync of the directory) run at %s-%s MB/s here. An initial "
             "ingest makes %s MB durable with Ferry (segments, then packs): %s s of disk "
             "time alone at the best rate" % (fmt(min(rates)), fmt(best), fmt(ferry_mb),
                                               fmt(ferry_mb / best))]
    if get("restic", "repo_v0") and get("restic", "ingest_s"):
        restic_mb = get("restic", "repo_v0") / MB
        parts.append("; restic makes %s MB durable (%s s), and 3x its throughput means "
                     "the whole ingest in %s s" % (fmt(restic_mb), fmt(restic_mb / best),
                                                  fmt(get("restic", "ingest_s") / 3)))
    w("".join(parts) + ".\n")

rss = []
for (sec, met), v in rows.items():
    if sec == "ferry" and met.startswith("replicator_rss_at_"):
        sz = met[len("replicator_rss_at_"):]
        rss.append((sz, v, get("ferry", "agent_rss_at_" + sz)))


def sizeval(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return float(s[:-1]) * mult[s[-1]] if s[-1] in mult else float(s)


rss.sort(key=lambda t: sizeval(t[0]))
if rss:
    w("Peak RSS of an initial ingest, by disk size (GNU time):\n")
    w("| disk size | ferry-replicator | ferry-agent |")
    w("|---|---|---|")
    for sz, r, a in rss:
        w("| %s | %s MiB | %s MiB |" % (sz, fmt(r / 1024), fmt(a / 1024 if a else None)))
    for p in peers:
        if get(p, "ingest_rss"):
            w("| (%s backup at the main size) | %s MiB | |" % (p, fmt(get(p, "ingest_rss") / 1024)))
    w("")
    if len(rss) >= 2:
        # Bounded: past the size where the fixed buffers are full, a 4x or
        # larger disk may cost at most 1.25x the memory. Compared between the
        # two largest sizes, since small disks never fill those buffers.
        (s_lo, r_lo, _), (s_hi, r_hi, _) = rss[-2], rss[-1]
        grow = r_hi / r_lo
        sratio = sizeval(s_hi) / sizeval(s_lo)
        slope = (r_hi - r_lo) / 1024 / ((sizeval(s_hi) - sizeval(s_lo)) / (1 << 30))
        w("From %s to %s of disk the replicator's peak RSS changes by %.2f× (%+.1f MiB per GiB "
          "of disk).\n" % (s_lo, s_hi, grow, slope))
        targets.append(("replicator peak RSS bounded", "%s→%s disk (%g×): RSS ≤ 1.25×" % (
            s_lo, s_hi, sratio), "%.2f×" % grow, grow <= 1.25))

nreps = max((len(v) for (sec, met), v in samples.items() if met == "ingest_MBps"), default=1)
w("Figures are medians of %d repetitions. Spread (min–max):\n" % nreps)
w("| measure | " + " | ".join(["ferry"] + peers) + " |")
w("|---|" + "---|" * (1 + len(peers)))
for name, met in (("initial ingest MB/s", "ingest_MBps"), ("sequential read MB/s", "seq_read_MBps"),
                  ("random 4 KiB IOPS, 1 job", "rand4k_iops_j1"),
                  ("random 4 KiB IOPS, 4 jobs", "rand4k_iops_j4"), ("mount → first byte s", "ttfb_s")):
    cells = []
    for p in ["ferry"] + peers:
        v = samples.get((p, met))
        cells.append("-" if not v else "%s–%s" % (fmt(min(v)), fmt(max(v))))
    w("| %s | %s |" % (name, " | ".join(cells)))
w("")

loads = [(met, v) for (sec, met), v in samples.items() if sec == "load"]
if loads:
    w("Load average (1 min) when each phase began: %s. This host's 2 CPUs may be shared; "
      "a load well above 1 before a phase means other work competed with it.\n" % ", ".join(
          "%s %s" % (m.replace("loadavg_before_", "").replace("loadavg_", ""),
                     "/".join("%.1f" % x for x in v))
          for m, v in loads))

w("Targets:\n")
w("| target | required | measured | met |")
w("|---|---|---|---|")
for name, req, meas, ok in targets:
    verdict = "not measured" if meas == "-" else ("**yes**" if ok else "**no**")
    w("| %s | %s | %s | %s |" % (name, req, meas, verdict))
w("")
for p in ["ferry"] + peers:
    c = get(p, "content_matches_v1")
    if c is not None and c != 1:
        w("WARNING: %s's mounted image differs from the modified source image." % p)
print("\n".join(out))
