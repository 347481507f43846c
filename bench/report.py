#!/usr/bin/env python3
"""Turns the samples written by bench/run.sh into a markdown report (stdout).

Usage: report.py SAMPLES.tsv META.env

Standard library only. Medians of alternating reps; ratios are ours/native of the medians.
Warnings (hits != gets on warm runs, uncached test results, missing stats) are printed in
the report and on stderr.
"""

import csv
import json
import math
import statistics
import sys

LABELS = {
    "build": "go build std",
    "test": "go test {test_pkgs}",
    "vet": "go vet {vet_pkgs}",
}
TARGET, GOAL = 1.10, 1.05


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def load_samples(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            r["seconds"] = float(r["seconds"])
            r["rep"] = int(r["rep"])
            r["stats_data"] = None
            if r["stats"] != "-":
                try:
                    with open(r["stats"]) as sf:
                        r["stats_data"] = json.load(sf)
                except (OSError, ValueError) as e:
                    print(f"report: cannot read {r['stats']}: {e}", file=sys.stderr)
            rows.append(r)
    return rows


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def fmt_s(x):
    return f"{x:.3f}"


def select(rows, phase, wl=None, side=None):
    return [
        r
        for r in rows
        if r["phase"] == phase
        and (wl is None or r["workload"] == wl)
        and (side is None or r["side"] == side)
    ]


def main():
    samples_path, meta_path = sys.argv[1], sys.argv[2]
    meta = load_meta(meta_path)
    rows = load_samples(samples_path)
    out = []
    warnings = []
    p = out.append

    label = {k: v.format(**meta) for k, v in LABELS.items()}
    workloads = [w for w in ("build", "test", "vet") if select(rows, "warm", w)]

    p(f"# gobuildcache benchmark, {meta.get('date', '?')}")
    p("")
    p(f"- machine: {meta.get('nproc')} CPUs, {meta.get('cpu')}, {meta.get('mem')}, {meta.get('kernel')}")
    p(f"- {meta.get('go')}; helper commit {meta.get('commit')}, binary sha256 {meta.get('bin_sha256')}…")
    p(
        f"- load average (1/5/15 min) at start {meta.get('load_start')}, at end {meta.get('load_end')}; "
        f"whole run {meta.get('elapsed')} s"
    )
    p(
        f"- {meta.get('reps')} measured reps per workload and side, alternating native, ours; "
        f"{meta.get('warmup')} uncounted warm-up run(s) each after a cold fill"
    )
    p("- native: Go's own cache in a private GOCACHE, GOCACHEPROG unset; ours: "
      "GOCACHEPROG=gobuildcache -cache-dir DIR (private GOCACHE too); "
      "GOTOOLCHAIN=local, GOFLAGS= on both sides")
    p("")

    # --- W1 -----------------------------------------------------------------------------
    p("## W1 warm-local (median seconds)")
    p("")
    p("| workload | native | ours | ours/native | (ratio of fastest runs) |")
    p("|---|---:|---:|---:|---:|")
    med = {}
    for wl in workloads:
        ns = [r["seconds"] for r in select(rows, "warm", wl, "native")]
        os_ = [r["seconds"] for r in select(rows, "warm", wl, "ours")]
        n, o = statistics.median(ns), statistics.median(os_)
        med[wl] = (n, o)
        p(f"| {label[wl]} | {fmt_s(n)} | {fmt_s(o)} | {o / n:.3f} | ({min(os_) / min(ns):.3f}) |")
    sum_n = sum(n for n, _ in med.values())
    sum_o = sum(o for _, o in med.values())
    overall = sum_o / sum_n
    geo = math.exp(statistics.mean(math.log(o / n) for n, o in med.values()))
    p(f"| **overall (sum of medians)** | {fmt_s(sum_n)} | {fmt_s(sum_o)} | **{overall:.3f}** | |")
    p("")
    p(f"Geometric mean of the per-workload ratios: {geo:.3f}. "
      f"Target ≤ {TARGET:.2f}, goal ≤ {GOAL:.2f}. The last column compares the fastest run of "
      "each side, a cross-check when other load on the machine only ever adds time.")
    if overall > TARGET or geo > TARGET:
        warnings.append(f"overall ratio {overall:.3f} (geomean {geo:.3f}) is above the {TARGET:.2f} target")
    p("")

    # --- helper stats on warm runs -----------------------------------------------------------
    p("## Helper on the measured warm runs")
    p("")
    p("| workload | gets | hits | misses | puts | served | get p50 / p99 / max (µs) | peak RSS |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    all_stats = [r for r in rows if r["side"] == "ours"]
    for wl in workloads:
        rs = select(rows, "warm", wl, "ours")
        st = [r["stats_data"] for r in rs if r["stats_data"]]
        if len(st) < len(rs):
            warnings.append(f"{label[wl]}: {len(rs) - len(st)} warm run(s) wrote no stats JSON")
        for r in rs:
            s = r["stats_data"]
            if s and (s["hits"] != s["gets"] or s["misses"] or s["puts"]):
                warnings.append(
                    f"{label[wl]} rep {r['rep']}: not all hits on a warm run "
                    f"(gets {s['gets']}, hits {s['hits']}, misses {s['misses']}, puts {s['puts']})"
                )
        for r in select(rows, "warm", wl):
            if r["note"] not in ("-", ""):
                warnings.append(f"{label[wl]} {r['side']} rep {r['rep']}: {r['note']} (test results not cached)")
        if not st:
            p(f"| {label[wl]} | - | - | - | - | - | - | - |")
            continue
        # Counters are the same every warm rep; show the median of each.
        m = lambda key: int(statistics.median(s[key] for s in st))  # noqa: E731
        q = lambda key: int(statistics.median(s["get_latency"][key] for s in st))  # noqa: E731
        rss = max(s["peak_rss_bytes"] for s in st)
        p(
            f"| {label[wl]} | {m('gets')} | {m('hits')} | {m('misses')} | {m('puts')} | "
            f"{mib(m('bytes_out'))} | {q('p50_us')} / {q('p99_us')} / {q('max_us')} | {mib(rss)} |"
        )
    p("")
    p("Counters and latencies are medians over the measured reps (one helper process per go "
      "command); peak RSS is the maximum VmHWM.")
    warm_rss = [r["stats_data"]["peak_rss_bytes"] for r in select(rows, "warm") if r["stats_data"]]
    any_rss = [r["stats_data"]["peak_rss_bytes"] for r in all_stats if r["stats_data"]]
    if warm_rss:
        p(f"Peak RSS of the helper: max {mib(max(warm_rss))} over the measured warm runs, "
          f"max {mib(max(any_rss))} over all runs including the cold fill"
          f"{' and W3' if select(rows, 'cold') else ''}.")
    ok = not any("not all hits" in w for w in warnings)
    p("")
    p(f"hits == gets on every measured warm run: {'yes' if ok else '**NO** (see warnings)'}.")
    p("")

    # --- cold fill (one sample, informational) -----------------------------------------------
    fills = {(r["workload"], r["side"]): r for r in select(rows, "fill")}
    if fills:
        p("## Cold fill (one sample each, not a benchmark)")
        p("")
        p("| workload | native | ours | ours/native | puts | stored | put p50 / p90 / p99 / max (µs) |")
        p("|---|---:|---:|---:|---:|---:|---:|")
        for wl in workloads:
            n, o = fills.get((wl, "native")), fills.get((wl, "ours"))
            if not (n and o):
                continue
            s = o["stats_data"]
            extra = "| - | - | - |"
            if s:
                pl = s["put_latency"]
                extra = (f"| {s['puts']} | {mib(s['bytes_in'])} | {pl['p50_us']} / {pl['p90_us']} / "
                         f"{pl['p99_us']} / {pl['max_us']} |")
            p(f"| {label[wl]} | {fmt_s(n['seconds'])} | {fmt_s(o['seconds'])} | "
              f"{o['seconds'] / n['seconds']:.3f} {extra}")
        p("")

    # --- W3 -----------------------------------------------------------------------------
    cold = select(rows, "cold")
    if cold:
        cn = [r["seconds"] for r in select(rows, "cold", "build", "native")]
        co = [r["seconds"] for r in select(rows, "cold", "build", "ours")]
        n, o = statistics.median(cn), statistics.median(co)
        p(f"## W3 cold: go build std with empty caches (median of {len(cn)} alternating reps)")
        p("")
        p("| | native | ours | ours/native |")
        p("|---|---:|---:|---:|")
        p(f"| seconds | {fmt_s(n)} | {fmt_s(o)} | **{o / n:.3f}** |")
        nb = statistics.median(int(r["bytes"]) for r in select(rows, "cold", "build", "native"))
        ob = statistics.median(int(r["bytes"]) for r in select(rows, "cold", "build", "ours"))
        p(f"| cache size on disk after | {mib(nb)} | {mib(ob)} | {ob / nb:.3f} |")
        st = [r["stats_data"] for r in select(rows, "cold", "build", "ours") if r["stats_data"]]
        if st:
            s = st[len(st) // 2]
            pl = s["put_latency"]
            p("")
            p(f"Helper (median rep): {s['gets']} gets, {s['misses']} misses, {s['puts']} puts, "
              f"{mib(s['bytes_in'])} stored; put latency p50 {pl['p50_us']} µs, p90 {pl['p90_us']} µs, "
              f"p99 {pl['p99_us']} µs, max {pl['max_us']} µs; peak RSS max "
              f"{mib(max(x['peak_rss_bytes'] for x in st))}.")
        p("")

    # --- raw samples -----------------------------------------------------------------------
    p("## Raw samples (seconds, in run order)")
    p("")
    for phase in ("warm", "cold"):
        for wl in workloads:
            for side in ("native", "ours"):
                xs = [r["seconds"] for r in select(rows, phase, wl, side)]
                if xs:
                    p(f"- {phase} {label[wl]}, {side}: " + ", ".join(fmt_s(x) for x in xs))
    p("")

    if warnings:
        p("## Warnings")
        p("")
        for w in warnings:
            p(f"- WARNING: {w}")
            print(f"bench: WARNING: {w}", file=sys.stderr)
        p("")

    print("\n".join(out))


if __name__ == "__main__":
    main()
