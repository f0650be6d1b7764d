#!/usr/bin/env python3
"""Sums up the decode's per-CTA timeline (PERF.md rows 15 and 17).

The bench's decode-trace step runs each traced tuning variant (10: the default with TRACE; 15: run
17a's merge with TRACE) three times at sk = 32k. The kernel records %globaltimer readings per CTA
and a one-thread kernel after it prints them as "TRACE ..." lines (the four loop ends: warps 0 and 1,
the earliest and the latest warp of the CTA). This reads a log and, for each traced variant, keeps
the last call's lines (calls are told apart by a gap in the start times) and prints, in microseconds
from the first CTA's start: when the CTAs started, when their warps left the key loop, the
epilogue's steps, and the merges.

    python3 packages/cuda/bench/decode_trace.py packages/cuda/bench/results/run17b/cuda-bench.log
"""
import re
import statistics
import sys

PAT = re.compile(
    r"TRACE s=(\d+) h=(\d+) sm=(\d+) last=(\d) start=(\d+) first=(-?\d+) w=(-?\d+),(-?\d+),(-?\d+),(-?\d+) "
    r"part=(-?\d+) atom=(-?\d+) end=(-?\d+)"
)


def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(f * (len(xs) - 1) + 0.5))]


def row(name, xs):
    xs = [x / 1000 for x in xs]
    print(
        f"{name:34s} min {min(xs):6.2f}  p10 {q(xs, .1):6.2f}  median {statistics.median(xs):6.2f}  "
        f"p90 {q(xs, .9):6.2f}  max {max(xs):6.2f}"
    )


def main(path):
    # One summary per "decode-trace:" line (the bench prints one after each traced variant's calls),
    # of the TRACE lines before it.
    ctas = []
    for line in open(path, errors="replace"):
        m = PAT.search(line)
        if m:
            v = [int(x) for x in m.groups()]
            ctas.append(dict(s=v[0], h=v[1], sm=v[2], last=v[3], start=v[4], first=v[5], w=v[6:10],
                             part=v[10], atom=v[11], end=v[12]))
        elif line.startswith("decode-trace:"):
            print(line.strip())
            summarize(ctas)
            ctas = []
    if ctas:
        summarize(ctas)


def summarize(ctas):
    if not ctas:
        print("no TRACE lines")
        return
    ctas.sort(key=lambda c: c["start"])
    calls = [[ctas[0]]]
    for c in ctas[1:]:
        (calls[-1].append(c) if c["start"] - calls[-1][-1]["start"] < 20000 else calls.append([c]))
    print(f"{len(ctas)} TRACE lines, {len(calls)} calls of {[len(c) for c in calls]} CTAs; the last call:")
    cs = calls[-1]
    t0 = min(c["start"] for c in cs)
    rel = lambda c, k: c["start"] - t0 + (0 if k == "start" else c[k])
    row("CTA start", [rel(c, "start") for c in cs])
    row("first tile in place (warp 0)", [rel(c, "first") for c in cs])
    wend = [c["start"] - t0 + w for c in cs for w in c["w"]]
    row("warp leaves the key loop", wend)
    row("CTA's last warp leaves", [c["start"] - t0 + max(c["w"]) for c in cs])
    row("spread of a CTA's warps", [max(c["w"]) - min(c["w"]) for c in cs])
    row("partials stored (after barrier)", [rel(c, "part") for c in cs])
    row("  minus the last warp's loop end", [c["part"] - max(c["w"]) for c in cs])
    row("arrival counted (atomic back)", [rel(c, "atom") for c in cs])
    row("  atomic round trip", [c["atom"] - c["part"] for c in cs])
    mg = [c for c in cs if c["last"]]
    row("merging CTAs: done", [rel(c, "end") for c in mg])
    row("  merge (atomic back to done)", [c["end"] - c["atom"] for c in mg])
    heads = sorted({c["h"] for c in cs})
    for h in heads:
        hc = [c for c in cs if c["h"] == h]
        arr = sorted(rel(c, "atom") for c in hc)
        last_cta = max(hc, key=lambda c: c["atom"])
        print(
            f"key head {h}: {len(hc)} CTAs, arrivals {arr[0] / 1000:.2f} .. {arr[-1] / 1000:.2f} us, last split "
            f"{last_cta['s']} on SM {last_cta['sm']}, merged by done at "
            f"{max(rel(c, 'end') for c in hc if c['last']) / 1000:.2f} us"
        )
    span = max(rel(c, "end") for c in cs)
    print(f"span of the last call (first CTA start to last CTA done): {span / 1000:.2f} us")
    per_sm = {}
    for c in cs:
        per_sm.setdefault(c["sm"], []).append(c)
    print(f"SMs used {len(per_sm)}, CTAs per SM {sorted({len(v) for v in per_sm.values()})}")


if __name__ == "__main__":
    main(sys.argv[1])
