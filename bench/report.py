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
    "build": "go build {build_pkgs}",
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

    meta.setdefault("build_pkgs", "std")
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
    if meta.get("remote") == "1":
        p(f"- remote tiers: S3 on moto_server {meta.get('moto', '?')} at 127.0.0.1 (path-style, fake "
          f"keys), and a disk directory; {meta.get('cold_reps')} W3 reps, {meta.get('w2_reps')} W2 reps")
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
    cold_native = None
    if cold:
        cside = "s3" if select(rows, "cold", "build", "s3") else "ours"
        cname = "ours+S3" if cside == "s3" else "ours"
        cn = [r["seconds"] for r in select(rows, "cold", "build", "native")]
        co = [r["seconds"] for r in select(rows, "cold", "build", cside)]
        n, o = statistics.median(cn), statistics.median(co)
        cold_native = n
        p(f"## W3 cold: {label['build']} with empty caches (median of {len(cn)} alternating reps)")
        p("")
        if cside == "s3":
            p("Everything empty: native GOCACHE; ours with a new GOCACHE, a new -cache-dir and a new "
              "S3 key prefix per rep on the moto_server. Our time includes draining the upload queue "
              "at close (uploads are async; the go command waits for the helper to exit).")
            p("")
        p(f"| | native | {cname} | {cname}/native |")
        p("|---|---:|---:|---:|")
        p(f"| seconds | {fmt_s(n)} | {fmt_s(o)} | **{o / n:.3f}** |")
        nb = statistics.median(int(r["bytes"]) for r in select(rows, "cold", "build", "native"))
        ob = statistics.median(int(r["bytes"]) for r in select(rows, "cold", "build", cside))
        p(f"| local cache size on disk after | {mib(nb)} | {mib(ob)} | {ob / nb:.3f} |")
        st = [r["stats_data"] for r in select(rows, "cold", "build", cside) if r["stats_data"]]
        if st:
            s = sorted(st, key=lambda x: x["put_latency"]["p50_us"])[len(st) // 2]
            pl, gl = s["put_latency"], s["get_latency"]
            p("")
            p(f"Helper (median rep): {s['gets']} gets, {s['misses']} misses, {s['puts']} puts, "
              f"{mib(s['bytes_in'])} stored; put latency p50 {pl['p50_us']} µs, p90 {pl['p90_us']} µs, "
              f"p99 {pl['p99_us']} µs, max {pl['max_us']} µs; get (miss) latency p50 {gl['p50_us']} µs, "
              f"p90 {gl['p90_us']} µs, p99 {gl['p99_us']} µs, max {gl['max_us']} µs; peak RSS max "
              f"{mib(max(x['peak_rss_bytes'] for x in st))}.")
            if cside == "s3":
                p("")
                p("| rep | seconds | uploads | bytes_up | uploads_existing | upload_failures | uploads_dropped "
                  "| uploads_not_done | upload_queue_high_water | remote_misses | remote_errors |")
                p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
                for r in select(rows, "cold", "build", cside):
                    x = r["stats_data"]
                    if not x:
                        continue
                    p(f"| {r['rep']} | {fmt_s(r['seconds'])} | {x['uploads']} | {mib(x['bytes_up'])} | "
                      f"{x['uploads_existing']} | {x['upload_failures']} | {x['uploads_dropped']} | "
                      f"{x['uploads_not_done']} | {x['upload_queue_high_water']} | {x['remote_misses']} | "
                      f"{x['remote_errors']} |")
                    if x["uploads"] != x["puts"] or x["uploads_not_done"] or x["upload_failures"] \
                            or x["uploads_dropped"] or x["remote_errors"]:
                        warnings.append(
                            f"W3 rep {r['rep']}: not every put was uploaded (puts {x['puts']}, uploads "
                            f"{x['uploads']}, not done {x['uploads_not_done']}, failures "
                            f"{x['upload_failures']}, dropped {x['uploads_dropped']}, remote errors "
                            f"{x['remote_errors']})")
        for r in select(rows, "cold"):
            if r["note"] not in ("-", ""):
                warnings.append(f"W3 {r['side']} rep {r['rep']}: {r['note']}")
        p("")

    # --- W2 -----------------------------------------------------------------------------
    w2 = select(rows, "w2")
    if w2:
        p(f"## W2 fresh local, warm remote: {label['build']} (median seconds)")
        p("")
        p("Each rep: a brand-new GOCACHE and -cache-dir, the remote filled by W3 rep 1 (S3 on "
          "moto_server at 127.0.0.1) or by one cold run (disk: `GOBUILDCACHE_REMOTE_DIR`, default "
          "backend, no HTTP: a lower bound). Compared with W1's warm medians and W3's native cold.")
        p("")
        p("| remote | seconds | / W1 native warm | / W1 ours warm | / native cold |")
        p("|---|---:|---:|---:|---:|")
        w1n, w1o = med.get("build", (None, None))
        for side, name in (("s3", "S3 (moto_server)"), ("disk", "disk directory")):
            xs = [r["seconds"] for r in select(rows, "w2", "build", side)]
            if not xs:
                continue
            m_ = statistics.median(xs)
            cells = [f"{m_ / w1n:.2f}" if w1n else "-", f"{m_ / w1o:.2f}" if w1o else "-",
                     f"{m_ / cold_native:.3f}" if cold_native else "-"]
            p(f"| {name} | {fmt_s(m_)} | {' | '.join(cells)} |")
        if w1n:
            p(f"| (W1 native warm / ours warm / W3 native cold) | {fmt_s(w1n)} / {fmt_s(w1o)} / "
              f"{fmt_s(cold_native) if cold_native else '-'} | | | |")
        p("")
        p("| remote | gets | remote_hits | local_hits | misses | remote_misses | remote_errors | "
          "bytes_down | get p50 / p90 / p99 / max (µs) | gets×p50 / wall | peak RSS max |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for side, name in (("s3", "S3"), ("disk", "disk")):
            rs = [r for r in select(rows, "w2", "build", side) if r["stats_data"]]
            if not rs:
                continue
            st = [r["stats_data"] for r in rs]
            m = lambda key: int(statistics.median(x[key] for x in st))  # noqa: E731
            q = lambda key: int(statistics.median(x["get_latency"][key] for x in st))  # noqa: E731
            wall = statistics.median(r["seconds"] for r in rs)
            conc = m("gets") * q("p50_us") / 1e6 / wall
            p(f"| {name} | {m('gets')} | {m('remote_hits')} | {m('local_hits')} | {m('misses')} | "
              f"{m('remote_misses')} | {m('remote_errors')} | {mib(m('bytes_down'))} | "
              f"{q('p50_us')} / {q('p90_us')} / {q('p99_us')} / {q('max_us')} | {conc:.1f} | "
              f"{mib(max(x['peak_rss_bytes'] for x in st))} |")
            for r in rs:
                x = r["stats_data"]
                if x["remote_hits"] != x["gets"] - x["misses"]:
                    warnings.append(
                        f"W2 {side} rep {r['rep']}: remote_hits {x['remote_hits']} != gets {x['gets']} - "
                        f"misses {x['misses']} (local_hits {x['local_hits']})")
                bad = {k: x[k] for k in ("remote_errors", "remote_corrupt", "breaker_trips", "puts") if x[k]}
                if bad:
                    warnings.append(f"W2 {side} rep {r['rep']}: {bad}")
            for r in select(rows, "w2", "build", side):
                if r["note"] not in ("-", ""):
                    warnings.append(f"W2 {side} rep {r['rep']}: {r['note']}")
        ok = not any(w.startswith("W2") and "remote_hits" in w for w in warnings)
        p("")
        p(f"remote_hits == gets − misses on every W2 rep: {'yes' if ok else '**NO** (see warnings)'}. "
          "Counters and latencies are medians over the reps. `gets×p50 / wall` is a rough count "
          "of gets in flight on average: get time summed at the median latency, over the wall time.")
        for r in select(rows, "fill-disk"):
            if r["note"] not in ("-", ""):
                warnings.append(f"disk remote fill: {r['note']}")
        fd = [r for r in select(rows, "fill-disk") if r["stats_data"]]
        if fd:
            r = fd[0]
            x = r["stats_data"]
            p("")
            p(f"Disk remote fill (one cold run, not counted): {fmt_s(r['seconds'])} s, {x['uploads']} "
              f"uploads, {mib(x['bytes_up'])} up, uploads_not_done {x['uploads_not_done']}, "
              f"queue high water {x['upload_queue_high_water']}"
              f"{', remote dir ' + mib(int(meta['remote_disk_bytes'])) if meta.get('remote_disk_bytes') else ''}.")
        p("")

    # --- raw samples -----------------------------------------------------------------------
    p("## Raw samples (seconds, in run order)")
    p("")
    for phase in ("warm", "cold", "w2"):
        for wl in workloads:
            for side in ("native", "ours", "s3", "disk"):
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
