#!/usr/bin/env python3
"""Turns the JSON of a cuda-run.sh run (cuda-bench.json, cuda-anchor.json, cuda-verify-*.json) into the
markdown tables of docs/BENCHMARKS.md's "@flashattn/cuda" section.

    python3 scripts/device/cuda-report.py DIR > /tmp/section.md
"""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def main():
    d = sys.argv[1]
    bench = load(d, "cuda-bench.json")
    anchor = load(d, "cuda-anchor.json")
    out = []
    for mode in ("auto", "generic"):
        v = load(d, f"cuda-verify-{mode}.json")
        if not v:
            continue
        rows = [r for r in v["rows"] if "[clone as " not in r["name"] and "[decode]" not in r["name"]]
        clones = [r for r in v["rows"] if "[clone as " in r["name"]]
        dec = [r for r in v["rows"] if "[decode]" in r["name"]]
        cnt = lambda lst, s: sum(1 for r in lst if r["status"] == s)
        line = (f"- conformance, kernels `{mode}`: **{cnt(rows, 'pass')} pass**, {cnt(rows, 'fail')} fail, "
                f"{cnt(rows, 'unsupported')} unsupported of {len(rows)} cases")
        if clones:
            line += (f"; float32 cases re-run in bfloat16/float16 (tensor-core coverage): {cnt(clones, 'pass')} pass, "
                     f"{cnt(clones, 'fail')} fail of {len(clones)}")
        if dec:
            line += (f"; long 16-bit decode cases: {cnt(dec, 'pass')} pass, {cnt(dec, 'fail')} fail of {len(dec)} "
                     f"(kernels: {', '.join(sorted(set(r.get('kernel') or '-' for r in dec)))})")
        out.append(line)
        for r in v["rows"]:
            if r["status"] == "fail":
                out.append(f"  - FAIL {r['name']}: {r.get('message', '')[:300]}")
    out.append("")
    if not bench:
        print("\n".join(out))
        return
    anc = {}
    if anchor:
        for r in anchor["rows"]:
            anc[(r["backend"], r["dtype"], r["d"], r["s"], r["causal"])] = r
    out.append(f"Copy (device to device, 1 GiB, read + write): {bench['copyGBs']:.0f} GB/s"
               + (f"; torch's copy in the same run: {anchor['copy_gbs']:.0f} GB/s" if anchor else ""))
    out.append("")
    titles = {"forward": "Forward", "backward": "Backward",
              "backward-nd": "Backward, `deterministic: false`"}
    for what in ("forward", "backward", "backward-nd"):
        if not any(r["what"] == what for r in bench["rows"]):
            continue
        out.append(f"**{titles[what]}** (TFLOP/s, SPEC §9 FLOPs; ratio = ours / SDPA FLASH)")
        out.append("")
        nd = what == "backward-nd"
        out.append("| dtype | d | s | mask | ours ms | ours | SDPA flash | SDPA cuDNN | ours / flash |"
                   + (" kernel |" if nd else ""))
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if nd else ""))
        for r in bench["rows"]:
            if r["what"] != what or r["dtype"] == "float32":
                continue
            key = r["dtype"], r["d"], r["s"], r["causal"]
            fa = anc.get(("flash",) + key)
            cu = anc.get(("cudnn",) + key)
            k = "fwd_tflops" if what == "forward" else "bwd_tflops"
            fl = fa[k] if fa else None
            cd = cu[k] if cu else None
            ratio = f"{r['tflops'] / fl:.2f}" if fl else "-"
            out.append((f"| {r['dtype']} | {r['d']} | {r['s']} | {'causal' if r['causal'] else 'full'} | {r['ms']:.3f} | "
                        f"{r['tflops']:.0f} | {fl:.0f} | {cd:.0f} | {ratio} |" if fl and cd else
                        f"| {r['dtype']} | {r['d']} | {r['s']} | {'causal' if r['causal'] else 'full'} | {r['ms']:.3f} | "
                        f"{r['tflops']:.0f} | - | - | - |") + (f" {r['kernel']} |" if nd else ""))
        out.append("")
    out.append("**Decode** (sq = 1, hq = 32, hk = 8, d = 128, b = 1; GB/s of K and V read; copy as above)")
    out.append("")
    out.append("| dtype | sk | ms | GB/s | of copy | kernel |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for r in bench["rows"]:
        if r["what"] == "decode":
            out.append(f"| {r['dtype']} | {r['s']} | {r['ms']:.3f} | {r['gbs']:.0f} | {100 * r['gbs'] / bench['copyGBs']:.0f} % | {r['kernel']} |")
    out.append("")
    dv = [r for r in bench["rows"] if r["what"] == "decode-var"]
    if dv:
        out.append("Decode variants (bfloat16; `generic-split` is the CUDA-core decode, forced):")
        out.append("")
        out.append("| sk | variant | ms | GB/s | of copy | kernel |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for r in bench["rows"]:
            if r["what"] in ("decode", "decode-var") and r["dtype"] == "bfloat16":
                out.append(f"| {r['s']} | {r.get('variant', 0)} | {r['ms']:.3f} | {r['gbs']:.0f} | "
                           f"{100 * r['gbs'] / bench['copyGBs']:.0f} % | {r['kernel']} |")
        out.append("")
    rep = [r for r in bench["rows"] if r["what"].startswith("decode-repeat")]
    if rep:
        out.append("Decode repeatability (bfloat16, three calls of the default and one of variant 3): "
                   + "; ".join(f"sk = {r['s']}: {'bit-identical' if r['what'] == 'decode-repeat' else 'DIFFERENT'} "
                               f"({r['kernel']})" for r in rep))
        out.append("")
    # d = 64 forward variants at several lengths (run 12 on): one row per shape, one column per variant.
    v64 = [r for r in bench["rows"] if r["what"] == "fwd-variant" and r["d"] == 64]
    if v64 and len({r["s"] for r in v64}) > 1:
        vs = sorted({r.get("variant", 0) for r in v64})
        out.append("**d = 64 forward variants** (bfloat16, TFLOP/s; variant 0 = the default)")
        out.append("")
        out.append("| s | mask | " + " | ".join(f"v{v}" for v in vs) + " |")
        out.append("| --- | --- | " + " | ".join("---" for _ in vs) + " |")
        cells = {}
        for r in v64:
            cells[(r["s"], r["causal"], r.get("variant", 0))] = r["tflops"]
        for s_, c_ in sorted({(r["s"], r["causal"]) for r in v64}):
            out.append(f"| {s_} | {'causal' if c_ else 'full'} | "
                       + " | ".join(f"{cells[(s_, c_, v)]:.0f}" if (s_, c_, v) in cells else "-" for v in vs) + " |")
        out.append("")
    out.append("**Variants and other paths** (bfloat16, s = 4096 unless noted)")
    out.append("")
    out.append("| what | d | s | mask | variant | ms | TFLOP/s | kernel |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in bench["rows"]:
        if r["what"] == "fwd-variant" and r["d"] == 64 and v64 and len({x["s"] for x in v64}) > 1:
            continue
        if r["what"] in ("fwd-variant", "bwd-variant", "fwd-generic") or r["dtype"] == "float32":
            name = r["what"] if r["dtype"] != "float32" else "forward float32"
            out.append(f"| {name} | {r['d']} | {r['s']} | {'causal' if r['causal'] else 'full'} | {r.get('variant', '-')} | "
                       f"{r['ms']:.3f} | {r['tflops']:.1f} | {r['kernel']} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
