#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Turns rpo.sh's OUTDIR (results.tsv, lags.tsv, cycles.tsv, machine.txt)
into the Markdown tables of results.md (stdout).

usage: rpo-report.py OUTDIR

Lag percentiles are nearest-rank over every write of the run that could be
observed: a write never seen before the drain ended counts as infinitely
late; a write whose blocks later writes all overwrote before it was seen
(superseded) is left out and counted.
"""
import math
import os
import sys

out = sys.argv[1]
res = {}
order = []
with open(os.path.join(out, "results.tsv")) as f:
    next(f)
    for line in f:
        run, metric, _unit, val = line.rstrip("\n").split("\t")
        if run not in res:
            res[run] = {}
            order.append(run)
        try:
            res[run][metric] = float(val)
        except ValueError:
            pass

lags = {}
per_vm = {}
with open(os.path.join(out, "lags.tsv")) as f:
    next(f)
    for line in f:
        p = line.rstrip("\n").split("\t")
        run, label, status = p[0], p[1], p[8]
        if status == "superseded":
            continue
        v = float(p[7]) if status == "seen" else math.inf
        lags.setdefault(run, []).append(v)
        per_vm.setdefault(run, {}).setdefault(label, []).append(v)

cycles = {}
with open(os.path.join(out, "cycles.tsv")) as f:
    next(f)
    for line in f:
        run, epoch, cyc, dur, scanned, shipped = line.rstrip("\n").split("\t")
        cycles.setdefault(run, []).append(
            (float(epoch), int(cyc), int(dur), int(scanned or 0), int(shipped or 0)))


def pct(xs, p):
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def s(x, nd=2):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == math.inf:
        return "never"
    return "%.*f" % (nd, x)


def mb(b):
    return s(b / 1e6, 1) if b is not None else "-"


def mib(kib):
    return s(kib / 1024, 1) if kib is not None else "-"


def window_cycles(run):
    """Cycles that ended while the writers ran, after the first interval
    (the first may have started before the first write)."""
    r = res[run]
    t0 = r.get("write_start_epoch")
    if t0 is None:
        return []
    lo, hi = t0 + r.get("agent_interval", 2), t0 + r.get("write_seconds", 0)
    return [c for c in cycles.get(run, []) if lo <= c[0] <= hi]


def verdict(ok):
    return "met" if ok else "**not met**"


print("# Ferry replication lag (contrib/bench/rpo.sh)\n")
print("Lag = time a write's stamp first appeared in the target's live image "
      "(ferryfs, reopened with O_DIRECT every sweep) minus the time the write "
      "completed at the source (NBD reply, or pwrite+fsync for the scan tracker). "
      "Percentiles over every write; a write never seen counts as infinite.\n")

rate_runs = [r for r in order if r.startswith("rate-")]
if rate_runs:
    print("## Lag by tracker and write rate\n")
    print("| tracker | MB/s target (achieved) | writes | lag p50 s | p95 s | p99 s | max s | "
          "never seen (superseded) | agent CPU s (% of window) | agent peak RSS MiB "
          "(initial sync) | agent read MB | written MB | read / written | cycle p50 s | "
          "replicator CPU s | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in rate_runs:
        r = res[run]
        tr = run.split("-")[1]
        xs = lags.get(run, [])
        p50, p95, p99, mx = (pct(xs, q) for q in (50, 95, 99, 100))
        rate = r.get("rate_target", 0)
        win = r.get("window_s", math.nan)
        cpu = r.get("agent_cpu_s")
        rss = r.get("agent_peak_rss")
        read, written = r.get("agent_scanned_bytes"), r.get("written_bytes")
        wc = window_cycles(run)
        cyc = pct([c[2] / 1000 for c in wc], 50)
        goal = "-"
        if tr == "qemu":
            g = []
            if rate <= 5:
                g.append("p95 ≤ 6 s: " + verdict(p95 <= 6))
            else:
                g.append("p99 ≤ 15 s: " + verdict(p99 <= 15))
            if rss is not None:
                g.append("RSS ≤ 64 MiB: " + verdict(rss <= 65536))
            goal = "; ".join(g)
        print("| %s | %s (%s) | %d | %s | %s | %s | %s | %d (%d) | %s (%s %%) | %s (%s) | %s | %s | "
              "%s | %s | %s | %s |" % (
                  tr, s(rate, 1), s(r.get("achieved_Bps", 0) / 1e6), r.get("writes", 0),
                  s(p50), s(p95), s(p99), s(mx), r.get("unseen", 0), r.get("superseded", 0),
                  s(cpu), s(100 * cpu / win if cpu is not None and win else math.nan, 0),
                  mib(rss), mib(r.get("agent_peak_rss_initial")), mb(read), mb(written),
                  s(read / written, 1) if read is not None and written else "-", s(cyc),
                  s(r.get("replicator_cpu_s")), goal))
    print()
    print("Window: from the first write to the last write seen (writes, then the drain). "
          "Agent read = the sum of \"scanned N bytes\" over the cycles the agent logged in "
          "the window; written = bytes the writer wrote. Peak RSS is VmHWM over the window "
          "(reset at its start); in brackets over the initial replication before it.\n")

cycle_runs = [r for r in order if r.startswith("cycle-")]
if cycle_runs:
    print("## qemu tracker: cycle time against disk size, same churn\n")
    print("| disk | MB/s | cycles | duration p50 ms | p95 ms | max ms | read per cycle MB | "
          "shipped per cycle MB | lag p95 s | agent peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    p50s = {}
    for run in cycle_runs:
        r = res[run]
        wc = window_cycles(run)
        d = [c[2] for c in wc]
        p50s[run] = pct(d, 50)
        print("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            run[len("cycle-"):], s(r.get("rate_target", 0), 1), len(wc), s(pct(d, 50), 0),
            s(pct(d, 95), 0), s(pct(d, 100), 0),
            mb(sum(c[3] for c in wc) / len(wc)) if wc else "-",
            mb(sum(c[4] for c in wc) / len(wc)) if wc else "-",
            s(pct(lags.get(run, []), 95)), mib(r.get("agent_peak_rss"))))
    print()
    if len(cycle_runs) >= 2:
        a, b = cycle_runs[0], cycle_runs[-1]
        if p50s[a] and not math.isnan(p50s[a]) and not math.isnan(p50s[b]):
            ratio = p50s[b] / p50s[a]
            print("Median cycle %s / %s: %.2f (goal ≤ 1.2: %s).\n" % (
                b[len("cycle-"):], a[len("cycle-"):], ratio, verdict(ratio <= 1.2)))
    print("Cycles counted: those that ended while the writer ran, after its first "
          "interval. Writes of the same seed, at the same offsets (within the first "
          "RPO_CYCLE_REGION), on every disk size.\n")

vm_runs = [r for r in order if r.startswith("vms-")]
if vm_runs:
    print("## Several VMs into one vault (qemu tracker, one agent per VM, one replicator)\n")
    print("| VMs | MB/s each (total achieved) | writes | lag p50 s | p95 s | p99 s | max s | "
          "worst VM p95 s | never seen | agents CPU s | agent peak RSS MiB (max) | "
          "replicator CPU s | replicator peak RSS MiB | checker period ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in vm_runs:
        r = res[run]
        xs = lags.get(run, [])
        worst = max((pct(v, 95) for v in per_vm.get(run, {}).values()), default=math.nan)
        print("| %d | %s (%s) | %d | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |" % (
            r.get("vms", 0), s(r.get("rate_target", 0), 2), s(r.get("achieved_Bps", 0) / 1e6),
            r.get("writes", 0), s(pct(xs, 50)), s(pct(xs, 95)), s(pct(xs, 99)),
            s(pct(xs, 100)), s(worst), r.get("unseen", 0), s(r.get("agents_cpu_s")),
            mib(r.get("agent_peak_rss")), s(r.get("replicator_cpu_s")),
            mib(r.get("replicator_peak_rss")), s(r.get("sweep_interval_ms"), 0)))
    print()

print("## Measurement\n")
print("| run | checker period ms | mean sweep ms | max sweep ms | initial sync s | "
      "load 1 min before | after |")
print("|---|---|---|---|---|---|---|")
for run in order:
    r = res[run]
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        run, s(r.get("sweep_interval_ms"), 0), s(r.get("sweep_mean_ms")),
        s(r.get("sweep_max_ms")), s(r.get("initial_sync_s"), 0),
        s(r.get("loadavg_before")), s(r.get("loadavg_after"))))
print()
print("A write is timed as visible when the read that found it returned, so a lag "
      "is high by at most one checker period plus one sweep.\n")
try:
    with open(os.path.join(out, "machine.txt")) as f:
        print("## Machine\n\n```\n" + f.read().rstrip() + "\n```")
except OSError:
    pass
