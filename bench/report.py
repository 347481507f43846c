#!/usr/bin/env python3
"""Turns the samples written by bench/run.sh into a markdown report (stdout).

Usage: report.py SAMPLES.tsv META.env

Standard library only. Medians of alternating reps; ratios are of the medians. The report
opens with one summary table (W1, W2 per added round trip, W3, go-cacher, our peak RSS), then
the details of each workload. Warnings (not all hits on warm runs, uncached test results,
missing stats, remote errors, a latency calibration that is off) are printed in the report
and on stderr.
"""

import csv
import json
import math
import re
import statistics
import sys

LABELS = {
    "build": "go build {build_pkgs}",
    "test": "go test {test_pkgs}",
    "vet": "go vet {vet_pkgs}",
}
TARGET, GOAL = 1.10, 1.05  # W1 ours/native
COLD_GOAL = 1.10  # W3 ours/native
GOCACHER_RE = re.compile(
    r"cacher: closing; (\d+) gets \((\d+) hits, (\d+) misses, (\d+) errors\); (\d+) puts \((\d+) errors\)"
)
FLOOR_RE = re.compile(r"protocol_floor: closing; (\d+) gets \((\d+) hits, (\d+) misses\); (\d+) entries loaded")


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def gocacher_stats(log):
    """go-cacher -verbose prints its counters at close; the last such line is its own."""
    try:
        with open(log, errors="replace") as f:
            found = GOCACHER_RE.findall(f.read())
    except OSError:
        return None
    if not found:
        return None
    g = [int(x) for x in found[-1]]
    return {"gets": g[0], "hits": g[1], "misses": g[2], "get_errors": g[3], "puts": g[4], "put_errors": g[5]}


def floor_stats(log):
    """tools/src/bin/protocol_floor.rs prints its counters at close."""
    try:
        with open(log, errors="replace") as f:
            found = FLOOR_RE.findall(f.read())
    except OSError:
        return None
    if not found:
        return None
    g = [int(x) for x in found[-1]]
    return {"gets": g[0], "hits": g[1], "misses": g[2], "entries": g[3], "puts": 0}


def load_samples(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            r["seconds"] = float(r["seconds"])
            r["rep"] = int(r["rep"])
            r["lat"] = None if r.get("lat_ms", "-") in ("-", "", None) else int(r["lat_ms"])
            r["mode"] = r.get("mode") or "default"
            r["stats_data"] = None
            if r["stats"] != "-":
                try:
                    with open(r["stats"]) as sf:
                        r["stats_data"] = json.load(sf)
                except (OSError, ValueError) as e:
                    print(f"report: cannot read {r['stats']}: {e}", file=sys.stderr)
            elif r["side"] in ("gocacher", "gcremote") and r.get("log"):
                r["stats_data"] = gocacher_stats(r["log"])
            elif r["side"] in ("floor", "lookup") and r.get("log"):
                r["stats_data"] = floor_stats(r["log"])
            rows.append(r)
    return rows


def mib(n):
    return f"{n / 1048576:.1f} MiB"


def fmt_s(x):
    return f"{x:.3f}"


def ratio(a, b, digits=3):
    return f"{a / b:.{digits}f}" if a is not None and b else "-"


def select(rows, phase, wl=None, side=None, lat="any", mode="any"):
    return [
        r
        for r in rows
        if r["phase"] == phase
        and (wl is None or r["workload"] == wl)
        and (side is None or r["side"] == side)
        and (lat == "any" or r["lat"] == lat)
        and (mode == "any" or r["mode"] == mode)
    ]


def median_s(rs):
    return statistics.median(r["seconds"] for r in rs) if rs else None


def max_rss(rs):
    xs = [r["stats_data"]["peak_rss_bytes"] for r in rs if r["stats_data"] and "peak_rss_bytes" in r["stats_data"]]
    return max(xs) if xs else None


def cpu(s):
    """Our helper's own CPU time from its stats ('-' when the helper does not report it)."""
    if "cpu_us" not in s:
        return "-"
    if "cpu_system_us" not in s:
        return f"{s['cpu_us'] / 1e6:.2f} s"
    return f"{s['cpu_us'] / 1e6:.2f} s ({s['cpu_system_us'] / 1e6:.2f} s system)"


def max_close(rs):
    """The longest close-to-answer time of our helper over rows `rs`, as a cell ('-' when the
    helper does not report it)."""
    xs = [r["stats_data"]["close_us"] for r in rs if r["stats_data"] and "close_us" in r["stats_data"]]
    return f"{max(xs) / 1000:.0f} ms" if xs else "-"


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
    has_gc = bool(select(rows, "warm", side="gocacher") or select(rows, "cold", side="gocacher"))
    gc_name = "go-cacher"
    has_floor = bool(select(rows, "warm", side="floor"))
    has_lookup = bool(select(rows, "warm", side="lookup"))

    p(f"# gobuildcache benchmark, {meta.get('date', '?')}")
    p("")
    p(f"- machine: {meta.get('nproc')} CPUs, {meta.get('cpu')}, {meta.get('mem')}, {meta.get('kernel')}")
    p(f"- {meta.get('go')}; helper commit {meta.get('commit')}, binary sha256 {meta.get('bin_sha256')}…")
    p(
        f"- load average (1/5/15 min) at start {meta.get('load_start')}, at end {meta.get('load_end')}; "
        f"whole run {meta.get('elapsed')} s"
    )
    p(
        f"- W1: {meta.get('reps')} measured reps per workload and side, alternating; "
        f"{meta.get('warmup')} uncounted warm-up run(s) each after a cold fill"
    )
    if meta.get("remote") == "1":
        p(f"- remote: S3 on moto_server {meta.get('moto', '?')} at 127.0.0.1 (path-style, fake keys) "
          f"behind toxiproxy ({meta.get('toxiproxy', '?')}); {meta.get('cold_reps')} W3 reps; "
          f"{meta.get('w2_reps')} W2 reps per added round trip ({meta.get('w2_latencies')} ms)"
          f"{', prefetch modes ' + meta['w2_modes'] if meta.get('w2_modes', 'default') != 'default' else ''}"
          f"; manifest key {meta.get('manifest_key', '(helper default)')}")
    if has_gc:
        p(f"- {gc_name}: {meta.get('gocacher_version', '?')} (`cmd/go-cacher`, disk cache, "
          "`-verbose -cache-dir DIR`)")
    p("- native: Go's own cache in a private GOCACHE, GOCACHEPROG unset; ours: "
      "GOCACHEPROG=gobuildcache -cache-dir DIR (private GOCACHE too); "
      "GOTOOLCHAIN=local, GOFLAGS= on every side")
    if has_floor:
        p("- floor (W1 only): GOCACHEPROG=`protocol_floor DIR` (tools/src/bin/protocol_floor.rs) (private GOCACHE too), DIR a copy "
          "of native's cache taken once after its cold fill; a helper that does no work per request")
    if has_lookup:
        p("- lookup floor (W1 only): GOCACHEPROG=`protocol_floor -lookup DIR`, the floor plus the per-get "
          "file work of a helper whose entries live on disk (read the entry file, stat the output file)")
    p("")

    # --- medians used by the summary and the details ----------------------------------------
    w1 = {}
    for wl in workloads:
        w1[wl] = {s: median_s(select(rows, "warm", wl, s))
                  for s in ("native", "ours", "gocacher", "floor", "lookup")}
    cold_rows = select(rows, "cold", "build")
    cside = "s3" if select(rows, "cold", "build", "s3") else "ours"
    cold = {s: median_s(select(rows, "cold", "build", s)) for s in ("native", cside, "gocacher")}
    w2_keys = []  # (side, lat, mode) in run order
    for r in select(rows, "w2", "build"):
        k = (r["side"], r["lat"], r["mode"])
        if k not in w2_keys:
            w2_keys.append(k)
    side_order = {"s3": 0, "gcremote": 1, "disk": 2}
    mode_order = meta.get("w2_modes", "default").split()
    w2_keys.sort(key=lambda k: (side_order.get(k[0], 9), mode_order.index(k[2]) if k[2] in mode_order else 9,
                                k[1] if k[1] is not None else -1))
    ours_w2 = [k for k in w2_keys if k[0] != "gcremote"]

    def w2_rows(k):
        return select(rows, "w2", "build", k[0], k[1], k[2])

    def w2_name(k):
        side, lat, mode = k
        name = {"s3": f"S3 +{lat} ms", "gcremote": f"{gc_name} + gocached +{lat} ms"}.get(side, "disk remote")
        return name + (f", prefetch={mode}" if mode != "default" else "")

    def w2_gc(lat):
        """go-cacher's W2 median at the same added round trip (its own HTTP server)."""
        return median_s(select(rows, "w2", "build", "gcremote", lat))

    # --- summary ------------------------------------------------------------------------------
    p("## Summary (median seconds and ratios)")
    p("")
    sum_n = sum(w1[wl]["native"] for wl in workloads)
    sum_o = sum(w1[wl]["ours"] for wl in workloads)
    sum_g = sum(w1[wl]["gocacher"] for wl in workloads) if all(w1[wl]["gocacher"] for wl in workloads) else None
    sum_f = sum(w1[wl]["floor"] for wl in workloads) if all(w1[wl]["floor"] for wl in workloads) else None
    sum_l = sum(w1[wl]["lookup"] for wl in workloads) if all(w1[wl]["lookup"] for wl in workloads) else None
    overall = sum_o / sum_n

    def floor_cells(f, n, o, bold=False):
        """The summary's floor columns: floor, floor / native, ours / floor (empty without a floor)."""
        if not has_floor:
            return ""
        if f is None:
            return " | | |"
        b = "**" if bold else ""
        return f" {fmt_s(f)} | {b}{ratio(f, n)}{b} | {b}{ratio(o, f)}{b} |"

    fl_head = " floor | floor / native | ours / floor |" if has_floor else ""
    p(f"| workload | native | ours | ours / native |{fl_head} ours / W1 ours warm | {gc_name} "
      f"| {gc_name} / native | our peak RSS | our close max |")
    p("|---|---:|---:|---:|" + ("---:|" * 3 if has_floor else "") + "---:|---:|---:|---:|---:|")
    for wl in workloads:
        m = w1[wl]
        rss = max_rss(select(rows, "warm", wl, "ours"))
        p(f"| W1 warm local: {label[wl]} | {fmt_s(m['native'])} | {fmt_s(m['ours'])} | "
          f"{ratio(m['ours'], m['native'])} |{floor_cells(m['floor'], m['native'], m['ours'])} | "
          f"{fmt_s(m['gocacher']) if m['gocacher'] else '-'} | "
          f"{ratio(m['gocacher'], m['native'])} | {mib(rss) if rss else '-'} | "
          f"{max_close(select(rows, 'warm', wl, 'ours'))} |")
    p(f"| **W1 overall** (sum of medians) | {fmt_s(sum_n)} | {fmt_s(sum_o)} | **{overall:.3f}** |"
      f"{floor_cells(sum_f, sum_n, sum_o, bold=True)} | "
      f"{fmt_s(sum_g) if sum_g else '-'} | {ratio(sum_g, sum_n)} | | |")
    w1b_n = w1.get("build", {}).get("native")
    w1b_o = w1.get("build", {}).get("ours")
    for k in ours_w2:
        rs = w2_rows(k)
        m = median_s(rs)
        rss = max_rss(rs)
        g = w2_gc(k[1]) if k[0] == "s3" else None
        p(f"| W2 fresh local, warm remote: {w2_name(k)} | {fmt_s(w1b_n) if w1b_n else '-'}¹ | {fmt_s(m)} | "
          f"{ratio(m, w1b_n, 2)} |{floor_cells(None, None, None)} {ratio(m, w1b_o, 2)} | {fmt_s(g) if g else '-'} | {ratio(g, w1b_n, 2)} | "
          f"{mib(rss) if rss else '-'} | {max_close(rs)} |")
    if cold_rows:
        rss = max_rss(select(rows, "cold", "build", cside))
        cname = "ours+S3" if cside == "s3" else "ours"
        p(f"| W3 cold: {label['build']} ({cname}) | {fmt_s(cold['native'])} | {fmt_s(cold[cside])} | "
          f"**{ratio(cold[cside], cold['native'])}** |{floor_cells(None, None, None)} | "
          f"{fmt_s(cold['gocacher']) if cold['gocacher'] else '-'} | {ratio(cold['gocacher'], cold['native'])} | "
          f"{mib(rss) if rss else '-'} | {max_close(select(rows, 'cold', 'build', cside))} |")
    p("")
    notes = [f"W1 goal ours/native ≤ {GOAL:.2f} (≤ {TARGET:.2f} for now)"]
    if has_floor:
        notes.append("floor: a GOCACHEPROG helper that does no work (W1 only), so floor / native is the go "
                     "command's own GOCACHEPROG cost, the least ours / native can be, and ours / floor is "
                     "what our helper adds")
    if cold_rows:
        notes.append(f"W3 goal ≤ {COLD_GOAL:.2f}")
    if w2_keys:
        notes.append("¹ W2 rows compare with W1's warm `" + label["build"] + "` medians of this run "
                     "(native: Go's warm GOCACHE; ours: our warm local tier); W2 / W3 native cold is in "
                     "the W2 section"
                     + (f"; in W2 rows the {gc_name} column is {gc_name} with its own HTTP cache server "
                        "(gocached) behind the same toxiproxy latency" if any(k[0] == "gcremote" for k in w2_keys)
                        else ""))
    p("; ".join(notes) + ". Peak RSS: the maximum VmHWM of our helper over the measured runs of that row. "
      "Close max: the longest our helper took to answer the go command's `close` over those runs "
      "(it exits right after the answer; goal ≤ 1 s).")
    if overall > TARGET:
        warnings.append(f"W1 overall ratio {overall:.3f} is above the {TARGET:.2f} target")
    if cold_rows and cold[cside] / cold["native"] > COLD_GOAL:
        warnings.append(f"W3 ratio {cold[cside] / cold['native']:.3f} is above the {COLD_GOAL:.2f} goal")
    p("")

    # --- W1 -----------------------------------------------------------------------------
    p("## W1 warm-local (median seconds)")
    p("")
    gc_head = f" {gc_name} | {gc_name}/native |" if has_gc else ""
    fl_head = " floor | floor/native | ours/floor |" if has_floor else ""
    lk_head = " lookup floor | lookup/native | ours/lookup |" if has_lookup else ""
    p(f"| workload | native | ours | ours/native | (ratio of fastest runs) |{fl_head}{lk_head}{gc_head}")
    p("|---|---:|---:|---:|---:|" + ("---:|" * 3 if has_floor else "") + ("---:|" * 3 if has_lookup else "")
      + ("---:|---:|" if has_gc else ""))
    for wl in workloads:
        ns = [r["seconds"] for r in select(rows, "warm", wl, "native")]
        os_ = [r["seconds"] for r in select(rows, "warm", wl, "ours")]
        n, o = w1[wl]["native"], w1[wl]["ours"]
        g, f = w1[wl]["gocacher"], w1[wl]["floor"]
        gc_cells = f" {fmt_s(g) if g else '-'} | {ratio(g, n)} |" if has_gc else ""
        fl_cells = f" {fmt_s(f) if f else '-'} | {ratio(f, n)} | {ratio(o, f)} |" if has_floor else ""
        lk = w1[wl]["lookup"]
        lk_cells = f" {fmt_s(lk) if lk else '-'} | {ratio(lk, n)} | {ratio(o, lk)} |" if has_lookup else ""
        p(f"| {label[wl]} | {fmt_s(n)} | {fmt_s(o)} | {o / n:.3f} | ({min(os_) / min(ns):.3f}) |"
          f"{fl_cells}{lk_cells}{gc_cells}")
    geo = math.exp(statistics.mean(math.log(w1[wl]["ours"] / w1[wl]["native"]) for wl in workloads))
    gc_cells = f" {fmt_s(sum_g) if sum_g else '-'} | {ratio(sum_g, sum_n)} |" if has_gc else ""
    fl_cells = (f" {fmt_s(sum_f) if sum_f else '-'} | **{ratio(sum_f, sum_n)}** | **{ratio(sum_o, sum_f)}** |"
                if has_floor else "")
    lk_cells = (f" {fmt_s(sum_l) if sum_l else '-'} | **{ratio(sum_l, sum_n)}** | **{ratio(sum_o, sum_l)}** |"
                if has_lookup else "")
    p(f"| **overall (sum of medians)** | {fmt_s(sum_n)} | {fmt_s(sum_o)} | **{overall:.3f}** | |"
      f"{fl_cells}{lk_cells}{gc_cells}")
    p("")
    p(f"Geometric mean of our per-workload ratios: {geo:.3f}. "
      f"Target ≤ {TARGET:.2f}, goal ≤ {GOAL:.2f}. The fastest-runs column compares the fastest run of "
      "each side, a cross-check when other load on the machine only ever adds time.")
    if has_floor:
        p("")
        p("The floor is `tools/src/bin/protocol_floor.rs`, a GOCACHEPROG helper that does no work: it answers "
          "each get from memory (a copy of native's filled cache, preloaded at start, DiskPath pointing "
          "at native's own files), so floor / native is what the go command's own GOCACHEPROG path costs "
          "(a JSON request and response over a pipe per get), the least any helper's ratio to native can "
          "be, and ours / floor is what our helper adds on top.")
    if has_lookup:
        p("")
        p("The lookup floor is the same helper run with `-lookup`: before each answer it opens, reads and "
          "closes the entry file, checks it names the expected output and stats that output for its size, "
          "the least file work a helper that keeps its entries on disk does per get (the native cache does "
          "this and more in the go command's own process). lookup / floor is what that file work costs on "
          "this machine; ours / lookup is what our helper adds beyond it.")
    p("")

    # --- helper stats on warm runs -----------------------------------------------------------
    p("## Our helper on the measured warm runs")
    p("")
    p("| workload | gets | hits | misses | puts | served | get p50 / p99 / max (µs) | peak RSS |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
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
    ours_like = [r for r in rows if r["side"] in ("ours", "s3", "disk") and r["stats_data"]]
    warm_rss = max_rss(select(rows, "warm", side="ours"))
    if warm_rss:
        p(f"Peak RSS of our helper: max {mib(warm_rss)} over the measured warm runs, "
          f"max {mib(max_rss(ours_like))} over all its runs (fills, W2, W3 included).")
    ok = not any("not all hits" in w for w in warnings)
    p("")
    p(f"hits == gets on every measured warm run: {'yes' if ok else '**NO** (see warnings)'}.")
    if has_gc:
        gc_warm = select(rows, "warm", side="gocacher")
        bad = [r for r in gc_warm if not r["stats_data"]
               or r["stats_data"]["hits"] != r["stats_data"]["gets"] or r["stats_data"]["puts"]]
        for r in bad:
            s = r["stats_data"]
            warnings.append(f"{gc_name} {label[r['workload']]} rep {r['rep']}: "
                            + (f"not all hits (gets {s['gets']}, hits {s['hits']}, puts {s['puts']})"
                               if s else "no counters in its log"))
        per = ", ".join(
            f"{label[wl]} {int(statistics.median(r['stats_data']['gets'] for r in select(rows, 'warm', wl, 'gocacher') if r['stats_data']))} gets"
            for wl in workloads if any(r["stats_data"] for r in select(rows, "warm", wl, "gocacher")))
        p(f"{gc_name} (its `-verbose` counters at close): hits == gets on every measured warm run: "
          f"{'yes' if not bad else '**NO** (see warnings)'} ({per}).")
    for fside in ("floor", "lookup") if has_floor else ():
        bad = [r for r in select(rows, "warm", side=fside)
               if not r["stats_data"] or r["stats_data"]["hits"] != r["stats_data"]["gets"]]
        for r in bad:
            s = r["stats_data"]
            warnings.append(f"{fside} {label[r['workload']]} rep {r['rep']}: "
                            + (f"not all hits (gets {s['gets']}, hits {s['hits']})" if s else "no counters in its log"))
        per = ", ".join(
            f"{label[wl]} {int(statistics.median(r['stats_data']['gets'] for r in select(rows, 'warm', wl, fside) if r['stats_data']))} gets"
            for wl in workloads if any(r["stats_data"] for r in select(rows, "warm", wl, fside)))
        entries = [r["stats_data"]["entries"] for r in select(rows, "warm", side=fside) if r["stats_data"]]
        if not entries:
            continue
        p("")
        p(f"{'lookup floor' if fside == 'lookup' else 'floor'} (its counters at close): hits == gets on every measured warm run: "
          f"{'yes' if not bad else '**NO** (see warnings)'} ({per}; {max(entries) if entries else 0} entries "
          "preloaded from the copy of native's cache).")
    p("")

    # --- cold fill (one sample, informational) -----------------------------------------------
    fills = {(r["workload"], r["side"]): r for r in select(rows, "fill")}
    if fills:
        p("## Cold fill of the W1 caches (one sample each, not a benchmark)")
        p("")
        gc_head = f" {gc_name} | {gc_name}/native |" if has_gc else ""
        p(f"| workload | native | ours | ours/native |{gc_head} our puts | stored | put p50 / p90 / p99 / max (µs) "
          "| our CPU |")
        p("|---|---:|---:|---:|" + ("---:|---:|" if has_gc else "") + "---:|---:|---:|---:|")
        for wl in workloads:
            n, o, g = fills.get((wl, "native")), fills.get((wl, "ours")), fills.get((wl, "gocacher"))
            if not (n and o):
                continue
            s = o["stats_data"]
            extra = " - | - | - | - |"
            if s:
                pl = s["put_latency"]
                extra = (f" {s['puts']} | {mib(s['bytes_in'])} | {pl['p50_us']} / {pl['p90_us']} / "
                         f"{pl['p99_us']} / {pl['max_us']} | {cpu(s)} |")
            gc_cells = (f" {fmt_s(g['seconds'])} | {g['seconds'] / n['seconds']:.3f} |" if g else " - | - |") \
                if has_gc else ""
            p(f"| {label[wl]} | {fmt_s(n['seconds'])} | {fmt_s(o['seconds'])} | "
              f"{o['seconds'] / n['seconds']:.3f} |{gc_cells}{extra}")
        p("")

    # --- W3 -----------------------------------------------------------------------------
    cold_native = cold.get("native")
    if cold_rows:
        cname = "ours+S3" if cside == "s3" else "ours"
        nreps = len(select(rows, "cold", "build", "native"))
        p(f"## W3 cold: {label['build']} with empty caches (median of {nreps} alternating reps)")
        p("")
        if cside == "s3":
            p("Everything empty: native GOCACHE; ours with a new GOCACHE, a new -cache-dir and a new "
              "S3 key prefix per rep on the moto_server (through toxiproxy, no latency added). Our time "
              "includes draining the upload queue at close (uploads are async; the go command waits "
              "for the helper to exit)."
              + (f" {gc_name}: a new GOCACHE and a new -cache-dir per rep (local disk only)." if has_gc else ""))
            p("")
        gc_head = f" {gc_name} | {gc_name}/native |" if has_gc else ""
        p(f"| | native | {cname} | {cname}/native |{gc_head}")
        p("|---|---:|---:|---:|" + ("---:|---:|" if has_gc else ""))
        g = cold.get("gocacher")
        gc_cells = f" {fmt_s(g) if g else '-'} | {ratio(g, cold_native)} |" if has_gc else ""
        p(f"| seconds | {fmt_s(cold_native)} | {fmt_s(cold[cside])} | **{cold[cside] / cold_native:.3f}** |{gc_cells}")

        def med_bytes(side):
            xs = [int(r["bytes"]) for r in select(rows, "cold", "build", side) if r["bytes"] not in ("-", "")]
            return statistics.median(xs) if xs else None

        nb, ob, gb = med_bytes("native"), med_bytes(cside), med_bytes("gocacher")
        gc_cells = f" {mib(gb) if gb else '-'} | {ratio(gb, nb)} |" if has_gc else ""
        p(f"| local cache size on disk after | {mib(nb)} | {mib(ob)} | {ob / nb:.3f} |{gc_cells}")
        st = [r["stats_data"] for r in select(rows, "cold", "build", cside) if r["stats_data"]]
        if st:
            s = sorted(st, key=lambda x: x["put_latency"]["p50_us"])[len(st) // 2]
            pl, gl = s["put_latency"], s["get_latency"]
            p("")
            p(f"Our helper (median rep): {s['gets']} gets, {s['misses']} misses, {s['puts']} puts, "
              f"{mib(s['bytes_in'])} stored; put latency p50 {pl['p50_us']} µs, p90 {pl['p90_us']} µs, "
              f"p99 {pl['p99_us']} µs, max {pl['max_us']} µs; get (miss) latency p50 {gl['p50_us']} µs, "
              f"p90 {gl['p90_us']} µs, p99 {gl['p99_us']} µs, max {gl['max_us']} µs; peak RSS max "
              f"{mib(max(x['peak_rss_bytes'] for x in st))}; helper CPU (user + system) {cpu(s)}; "
              f"close answered in {max_close([{'stats_data': s}])}.")
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

    # --- latency calibration ---------------------------------------------------------------
    lats = [int(x) for x in meta.get("w2_latencies", "").split()] if meta.get("remote") == "1" else []
    if lats and meta.get("calib_0_ms"):
        base, base_min = float(meta["calib_0_ms"]), float(meta.get("calib_0_min_ms", meta["calib_0_ms"]))
        p("## Added round trip (toxiproxy latency toxics), measured with curl")
        p("")
        p("30 small GETs on one keep-alive connection (connection set-up excluded), median / fastest; "
          f"moto_server directly: {meta.get('calib_direct_ms')} / {meta.get('calib_direct_min_ms', '-')} ms; "
          "through toxiproxy:")
        p("")
        p("| intended added round trip | toxics (upstream + downstream) | GET median / fastest (ms) "
          "| added: median / fastest (ms) |")
        p("|---:|---|---:|---:|")
        for lat in sorted(set([0] + lats)):
            v = meta.get(f"calib_{lat}_ms")
            if v is None:
                continue
            vmin = meta.get(f"calib_{lat}_min_ms", v)
            added, added_min = float(v) - base, float(vmin) - base_min
            p(f"| {lat} ms | {lat // 2} + {lat - lat // 2} ms | {v} / {vmin} | {added:+.2f} / {added_min:+.2f} |")
            # The fastest GETs are the steadier measure on a busy machine (load only adds time).
            if lat and abs(added_min - lat) > max(2.0, 0.25 * lat):
                warnings.append(f"toxiproxy calibration: +{lat} ms intended, {added_min:+.2f} ms measured "
                                "(fastest GETs)")
        p("")

    # --- W2 -----------------------------------------------------------------------------
    if w2_keys:
        p(f"## W2 fresh local, warm remote: {label['build']} (median seconds)")
        p("")
        p("Each rep: a brand-new GOCACHE and -cache-dir against a remote filled earlier by another "
          "process: S3 filled by W3 rep 1 (a normal cold run; it also publishes the warm-start "
          "manifest when the helper has that feature), reached through toxiproxy with the added "
          "round trip shown; the disk remote (`GOBUILDCACHE_REMOTE_DIR`, no HTTP: the floor of the "
          "remote path) filled by one extra cold run. Reps alternate over the rows.")
        p("")
        p("| remote | seconds | / W1 ours warm | / W1 native warm | / W3 native cold | reps |")
        p("|---|---:|---:|---:|---:|---:|")
        for k in w2_keys:
            rs = w2_rows(k)
            m = median_s(rs)
            p(f"| {w2_name(k)} | {fmt_s(m)} | {ratio(m, w1b_o, 2)} | {ratio(m, w1b_n, 2)} | "
              f"{ratio(m, cold_native)} | {len(rs)} |")
        p(f"| (W1 ours warm / native warm / W3 native cold) | {fmt_s(w1b_o) if w1b_o else '-'} / "
          f"{fmt_s(w1b_n) if w1b_n else '-'} / {fmt_s(cold_native) if cold_native else '-'} | | | | |")
        p("")
        # W2's floors: what writing the warm start (a copy) and fetching it (curl) cost alone.
        for side, what, tail in (
            ("copy", lambda r: f"W2 floor: `cp -a` of the first fresh run's filled local tier ({mib(int(r['bytes']))}, "
                               f"{r['note'].removeprefix('files=')} files) into a new dir before each rep, no helper, "
                               "no network, no go command",
             " A fresh machine cannot have its warm start for less."),
            ("sha256", lambda r: f"W2 verify floor: SHA-256 of the copied bodies ({mib(int(r['bytes']))}, "
                                 f"{r['note'].removeprefix('files=')} files), already in memory, with Python's hashlib "
                                 "(OpenSSL), the check every body read from a remote must pass", ""),
            ("s3get", lambda r: f"W2 download floor: the packs under W2's prefix ({r['note'].removeprefix('objects=')} "
                                f"objects, {mib(int(r['bytes']))}) fetched with curl from moto_server through toxiproxy "
                                "at +0 ms, three at a time, into /dev/null, no helper, no go command", ""),
        ):
            fl = select(rows, "w2floor", "build", side)
            if fl:
                fm = median_s(fl)
                p(f"{what(fl[0])}: median {fmt_s(fm)} s ({', '.join(fmt_s(r['seconds']) for r in fl)}), "
                  f"{ratio(fm, w1b_n, 2)} × W1 native warm.{tail}")
                p("")
        # The fresh run is CPU-bound on two cores shared by the go command, the store and the
        # helper, so the floor of W2's goal adds the parts up.
        parts = [median_s(select(rows, "w2floor", "build", side)) for side in ("copy", "sha256")]
        if w1b_n and all(parts):
            total = w1b_n + sum(parts)
            p(f"W1 native warm + copy floor + verify floor: {fmt_s(total)} s, **{ratio(total, w1b_n, 2)} × "
              "native warm**: the least a fresh run that stores and checks its warm start costs here, "
              "where the go command, the store and the helper share two cores.")
            p("")
        # New counters (a warm-start manifest / prefetch) are shown whatever their names.
        extra_keys = sorted({key for k in ours_w2 for r in w2_rows(k) if r["stats_data"]
                             for key, v in r["stats_data"].items()
                             if isinstance(v, (int, float))
                             and any(w in key for w in ("prefetch", "manifest", "pack", "absent"))})
        p("| remote | gets | hits | remote_hits | local_hits | misses | remote_errors | bytes_down | "
          "get p50 / p90 / p99 / max (µs) | gets×p50 / wall | peak RSS max |"
          + "".join(f" {key} |" for key in extra_keys))
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra_keys))
        for k in ours_w2:
            rs = [r for r in w2_rows(k) if r["stats_data"]]
            if not rs:
                continue
            st = [r["stats_data"] for r in rs]
            m = lambda key: int(statistics.median(x.get(key, 0) for x in st))  # noqa: E731
            q = lambda key: int(statistics.median(x["get_latency"][key] for x in st))  # noqa: E731
            wall = statistics.median(r["seconds"] for r in rs)
            conc = m("gets") * q("p50_us") / 1e6 / wall
            p(f"| {w2_name(k)} | {m('gets')} | {m('hits')} | {m('remote_hits')} | {m('local_hits')} | "
              f"{m('misses')} | {m('remote_errors')} | {mib(m('bytes_down'))} | "
              f"{q('p50_us')} / {q('p90_us')} / {q('p99_us')} / {q('max_us')} | {conc:.1f} | "
              f"{mib(max(x['peak_rss_bytes'] for x in st))} |" + "".join(f" {m(key)} |" for key in extra_keys))
            for r in rs:
                x = r["stats_data"]
                if x["hits"] != x["gets"] or x["misses"]:
                    warnings.append(
                        f"W2 {w2_name(k)} rep {r['rep']}: not every get was served from the remote or "
                        f"the prefetch (gets {x['gets']}, hits {x['hits']}, misses {x['misses']})")
                bad = {key: x[key] for key in ("remote_errors", "remote_corrupt", "breaker_trips", "puts")
                       if x.get(key)}
                if bad:
                    warnings.append(f"W2 {w2_name(k)} rep {r['rep']}: {bad}")
            for r in w2_rows(k):
                if r["note"] not in ("-", ""):
                    warnings.append(f"W2 {w2_name(k)} rep {r['rep']}: {r['note']}")
        for k in w2_keys:
            if k[0] != "gcremote":
                continue
            for r in w2_rows(k):
                x = r["stats_data"]
                if not x or x["hits"] != x["gets"] or x["misses"] or x["get_errors"]:
                    warnings.append(f"W2 {w2_name(k)} rep {r['rep']}: not every get was a hit "
                                    + (f"(gets {x['gets']}, hits {x['hits']}, misses {x['misses']}, "
                                       f"errors {x['get_errors']})" if x else "(no counters in its log)"))
        ok = not any(w.startswith("W2") and "not every get" in w for w in warnings)
        p("")
        p(f"hits == gets (no misses) on every W2 rep: {'yes' if ok else '**NO** (see warnings)'}. "
          "Counters and latencies are medians over the reps; `local_hits` are gets already in the "
          "local tier (prefetched), `remote_hits` waited for a remote fetch. `gets×p50 / wall` is a "
          "rough count of gets in flight on average: get time summed at the median latency, over "
          "the wall time.")
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
        for r in select(rows, "pack"):
            x = r["stats_data"]
            p("")
            p(f"First fresh run on {w2_name((r['side'], r['lat'], r['mode']))} after its cold fill "
              f"(not counted): {fmt_s(r['seconds'])} s"
              + (f", {x['remote_downloads']} entries fetched, {x.get('pack_entries', 0)} of them from a pack; "
                 f"published packs of {x.get('pack_published', 0)} entries; close took "
                 f"{max_close([r])}" if x else "")
              + ". The W2 reps above start from the packs on the remote then (the cold fill's, "
              "and this run's if it published any).")
        for r in select(rows, "fill-gc"):
            x = r["stats_data"]
            p("")
            p(f"gocached fill (one cold {gc_name} run with `-cache-server`, not counted): {fmt_s(r['seconds'])} s"
              + (f", {x['puts']} puts ({x['put_errors']} errors)" if x else "")
              + (f", gocached dir {mib(int(meta['gocached_bytes']))}" if meta.get("gocached_bytes") else "")
              + f". {gc_name}'s W2 rows: a brand-new GOCACHE and -cache-dir per rep, "
              "`-cache-server http://127.0.0.1:PROXY` (one HTTP round trip per hit with its `Want-Object` "
              "protocol).")
        p("")

    # --- raw samples -----------------------------------------------------------------------
    p("## Raw samples (seconds, in run order)")
    p("")
    for phase in ("warm", "cold"):
        for wl in workloads:
            for side in ("native", "floor", "lookup", "ours", "s3", "gocacher"):
                xs = [r["seconds"] for r in select(rows, phase, wl, side)]
                if xs:
                    p(f"- {phase} {label[wl]}, {side}: " + ", ".join(fmt_s(x) for x in xs))
    for k in w2_keys:
        p(f"- w2 {label['build']}, {w2_name(k)}: " + ", ".join(fmt_s(r["seconds"]) for r in w2_rows(k)))
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
