#!/usr/bin/env python3
"""Turns the samples written by bench/w4.sh into a markdown report (stdout).

Usage: w4report.py SAMPLES.tsv META.env

A job is three go commands; its time is their sum, and a row's figure is the median of its
jobs. Our counters are summed over the job's three helpers (close and peak RSS: the largest).
"""

import csv
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import gocacher_stats, load_meta, mib  # noqa: E402

SUMMED = ("gets", "hits", "misses", "remote_hits", "local_hits", "pack_entries", "uploads", "bytes_up",
          "bytes_down", "remote_errors", "upload_failures", "uploads_not_done", "cpu_us", "pack_published")


def load_jobs(path):
    """{(phase, side, lat, rep): {"steps": {step: seconds}, "stats": summed counters or None}}"""
    jobs = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            key = (r["phase"], r["side"], int(r["lat_ms"]), int(r["rep"]))
            j = jobs.setdefault(key, {"steps": {}, "stats": {}, "warnings": [], "server_cpu": 0.0,
                                         "side": r["side"]})
            j["steps"][r["step"]] = float(r["seconds"])
            j["server_cpu"] += float(r.get("server_cpu_s") or 0)
            s = None
            if r["stats"] != "-":
                try:
                    with open(r["stats"]) as sf:
                        s = json.load(sf)
                except (OSError, ValueError) as e:
                    j["warnings"].append(f"{r['step']}: no stats ({e})")
            elif r["side"] == "gocacher":
                s = gocacher_stats(r["log"])
            if s is None:
                j["stats"] = None if r["side"] != "native" else {}
                continue
            if j["stats"] is None:
                continue
            for k in SUMMED:
                if k in s:  # go-cacher reports only its gets and puts
                    j["stats"][k] = j["stats"].get(k, 0) + s[k]
            for k in ("close_us", "peak_rss_bytes"):
                if k in s:
                    j["stats"][k] = max(j["stats"].get(k, 0), s[k])
    for j in jobs.values():
        j["seconds"] = sum(j["steps"].values())
    return jobs


def pick(jobs, phase, side, lat=None):
    return [j for (p, s, l, _), j in sorted(jobs.items()) if p == phase and s == side and (lat is None or l == lat)]


def med(js, f=lambda j: j["seconds"]):
    xs = [f(j) for j in js]
    return statistics.median(xs) if xs else None


def stat_med(js, k):
    xs = [j["stats"][k] for j in js if j["stats"] and k in j["stats"]]
    return statistics.median(xs) if xs else None


def cell(x, fmt="{:.0f}"):
    return "-" if x is None else fmt.format(x)


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "-"


def main():
    jobs = load_jobs(sys.argv[1])
    meta = load_meta(sys.argv[2])
    lats = [int(x) for x in meta["latencies"].split()]
    last = lats[-1]
    native_warm = med(pick(jobs, "warm", "native"))
    out = []
    w = out.append
    w(f"# W4: {meta['module']}, a three-command CI job ({meta['date']})")
    w("")
    w(f"{meta['packages']} packages; `go build ./...`, `go vet ./...`, `go test -count=1 -run '^$' ./...`, "
      "each with its own helper, sharing one GOCACHE and local dir. "
      f"{meta['nproc']} CPUs ({meta['cpu']}), {meta['go']}; load at the end {meta['load_end']}; "
      f"{int(meta['elapsed']) // 60} min. Helper sha256 {meta['bin_sha256']} ({meta['commit']}); "
      f"{meta.get('gocacher_version', 'no go-cacher')}. S3: moto_server through toxiproxy; go-cacher: "
      "gocached through the same toxiproxy. Medians of "
      f"{meta['reps']} reps (\"changed\": {meta['changed']}); job = the sum of its three steps.")
    w("")
    w("| row | +ms | job s | build | vet | test | vs native warm | gets | hits | misses | waited on remote "
      "| from packs | uploads | helper CPU | servers' CPU | close max | peak RSS |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    warns = []

    def row(label, js, lat="-"):
        if not js:
            return
        steps = [cell(med(js, lambda j, s=s: j["steps"].get(s, 0)), "{:.2f}") for s in ("build", "vet", "test")]
        s = js[0]["stats"]
        has = s is not None and len(s) > 0
        ours = has and "cpu_us" in s
        closes = [j["stats"].get("close_us") for j in js if j["stats"] and "close_us" in j["stats"]]
        rss = [j["stats"].get("peak_rss_bytes") for j in js if j["stats"] and "peak_rss_bytes" in j["stats"]]
        w(f"| {label} | {lat} | {med(js):.2f} | {' | '.join(steps)} | {ratio(med(js), native_warm)} "
          f"| {cell(stat_med(js, 'gets')) if has else '-'} | {cell(stat_med(js, 'hits')) if has else '-'} "
          f"| {cell(stat_med(js, 'misses')) if has else '-'} "
          f"| {cell(stat_med(js, 'remote_hits')) if ours else '-'} | {cell(stat_med(js, 'pack_entries')) if ours else '-'} "
          f"| {cell(stat_med(js, 'uploads')) if ours else '-'} "
          f"| {cell(stat_med(js, 'cpu_us') / 1e6, '{:.2f} s') if ours else '-'} "
          f"| {cell(med(js, lambda j: j['server_cpu']), '{:.1f} s') if js[0]['side'] != 'native' else '-'} "
          f"| {f'{max(closes) / 1000:.0f} ms' if closes else '-'} | {mib(max(rss)) if rss else '-'} |")
        for j in js:
            warns.extend(j["warnings"])
            st = j["stats"]
            if st and (st.get("remote_errors") or st.get("upload_failures") or st.get("uploads_not_done")):
                warns.append(f"{label} +{lat} ms: remote errors {st.get('remote_errors')}, upload failures "
                             f"{st.get('upload_failures')}, uploads not done {st.get('uploads_not_done')}")

    row("native cold", pick(jobs, "cold", "native"))
    row("native warm", pick(jobs, "warm", "native"))
    row("ours cold, filling S3", pick(jobs, "cold", "ours"), 0)
    for l in lats:
        row("ours warm-local", pick(jobs, "warm", "ours", l), l)
    for l in lats:
        row("ours fresh, first after the fill", pick(jobs, "first", "ours", l), l)
        row("ours fresh, later", pick(jobs, "fresh", "ours", l), l)
    row("go-cacher cold, filling gocached", pick(jobs, "cold", "gocacher"), 0)
    for l in lats:
        row("go-cacher fresh", pick(jobs, "fresh", "gocacher", l), l)
    row("changed: native warm", pick(jobs, "changed", "native"))
    row("changed: ours fresh", pick(jobs, "changed", "ours"), last)
    row("changed: go-cacher fresh", pick(jobs, "changed", "gocacher"), last)
    w("")
    w(f"\"changed\": `{meta['leaf']}` (from {meta['dep']}, replaced by a writable copy; {meta['leaf_users']} of "
      "the job's packages and test packages depend on it) gains an exported function before each rep, "
      "a different one each time, so every run meets a change the caches do not hold.")
    w("")
    w("## Goals")
    w("")
    for l in lats:
        first, later = med(pick(jobs, "first", "ours", l)), med(pick(jobs, "fresh", "ours", l))
        w(f"- +{l} ms: first fresh run after the fill / later fresh runs: {ratio(first, later)} (goal ≤ 2×)")
    fresh_last = med(pick(jobs, "fresh", "ours", last))
    w(f"- +{last} ms: ours fresh / ours warm-local: "
      f"{ratio(fresh_last, med(pick(jobs, 'warm', 'ours', last)))} (goal ≤ 1.5×); / native warm: "
      f"{ratio(fresh_last, native_warm)}")
    gc_last = med(pick(jobs, "fresh", "gocacher", last))
    if gc_last is not None:
        w(f"- +{last} ms: go-cacher fresh / ours fresh: {ratio(gc_last, fresh_last)} (goal ≥ 3×); changed: "
          f"{ratio(med(pick(jobs, 'changed', 'gocacher')), med(pick(jobs, 'changed', 'ours')))}")
    w(f"- changed, ours fresh / native warm with the same change: "
      f"{ratio(med(pick(jobs, 'changed', 'ours')), med(pick(jobs, 'changed', 'native')))}")
    closes = [j["stats"]["close_us"] for j in jobs.values() if j["stats"] and "close_us" in j["stats"]]
    rss = [j["stats"]["peak_rss_bytes"] for j in jobs.values() if j["stats"] and "peak_rss_bytes" in j["stats"]]
    if closes:
        w(f"- our `close` to answer, largest of every run: {max(closes) / 1000:.0f} ms (goal ≤ 1 s); "
          f"peak RSS {mib(max(rss))} (goal ≤ 64 MiB)")
    if warns:
        w("")
        w("## Warnings")
        w("")
        for x in warns:
            w(f"- {x}")
            print(f"w4report: {x}", file=sys.stderr)
    print("\n".join(out))


if __name__ == "__main__":
    main()
