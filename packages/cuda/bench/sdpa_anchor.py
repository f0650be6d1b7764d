#!/usr/bin/env python3
"""PyTorch SDPA anchors for @flashattn/cuda's benchmarks, measured in the same run on the same GPU.

SPEC section 9 shapes: 16k tokens in total (b = 16384 / s), hidden 2048 (hq = 2048 / d), d in {64, 128},
s in {512 ... 16384}, causal and not, bfloat16 and float16; forward and backward, with the FLASH and
cuDNN backends of torch.nn.functional.scaled_dot_product_attention. Device time only: CUDA events
around each call, median of the timed runs after warm-up. Also a device-to-device copy (torch) for the
decode target. FLOPs as SPEC section 9: forward 4*d*pairs, backward 2.5x forward.

    python3 packages/cuda/bench/sdpa_anchor.py [--out DIR] [--quick] [--iters N]
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def pairs(s, causal):
    return s * (s + 1) // 2 if causal else s * s


def time_ms(fn, warmup, iters):
    """Events around each call, every call queued before the first is waited for (as the addon's
    timing does): the host's launch latency stays out of the device time of short calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in ev:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    out = [start.elapsed_time(end) for start, end in ev]
    return statistics.median(out), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "test-output"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--dims", default="64,128", help="head dims, comma-separated")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    print(f"torch {torch.__version__} on {props.name}, {props.multi_processor_count} SMs", flush=True)

    rows = []
    # Copy bandwidth: 1 GiB device to device, bytes read + written.
    n = 2**30
    src = torch.empty(n, dtype=torch.uint8, device=dev).fill_(1)
    dst = torch.empty_like(src)
    ms, _ = time_ms(lambda: dst.copy_(src), 3, 20)
    copy_gbs = 2 * n / ms / 1e6
    print(f"torch copy 1 GiB: {ms:.3f} ms = {copy_gbs:.0f} GB/s (read + write)", flush=True)
    del src, dst

    seqs = [1024, 4096] if a.quick else [512, 1024, 2048, 4096, 8192, 16384]
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    for dtype_name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        for d in [int(x) for x in a.dims.split(",")]:
            for s in seqs:
                b = 16384 // s
                hq = 2048 // d
                torch.manual_seed(0)
                q = torch.randn(b, hq, s, d, device=dev, dtype=dtype, requires_grad=True)
                k = torch.randn(b, hq, s, d, device=dev, dtype=dtype, requires_grad=True)
                v = torch.randn(b, hq, s, d, device=dev, dtype=dtype, requires_grad=True)
                dout = torch.randn(b, hq, s, d, device=dev, dtype=dtype)
                for causal in (False, True):
                    fl = 4 * d * pairs(s, causal) * b * hq
                    for name, backend in backends.items():
                        try:
                            with sdpa_kernel(backend):
                                with torch.no_grad():
                                    fwd_ms, _ = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), 3, a.iters)
                                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                                bwd_ms, _ = time_ms(lambda: out.backward(dout, retain_graph=True), 2, a.iters)
                                del out
                        except Exception as e:  # a backend that refuses the shape
                            print(f"{name} {dtype_name} d={d} s={s} causal={causal}: {str(e).splitlines()[0][:200]}", flush=True)
                            continue
                        row = dict(backend=name, dtype=dtype_name, d=d, s=s, b=b, hq=hq, causal=causal,
                                   fwd_ms=fwd_ms, fwd_tflops=fl / (fwd_ms * 1e-3) / 1e12,
                                   bwd_ms=bwd_ms, bwd_tflops=2.5 * fl / (bwd_ms * 1e-3) / 1e12)
                        rows.append(row)
                        print(f"sdpa-{name:5s} {dtype_name:8s} d={d:<3d} s={s:<6d} b={b:<3d} hq={hq:<3d} "
                              f"{'causal' if causal else 'full  '} fwd {fwd_ms:8.3f} ms {row['fwd_tflops']:6.1f} TFLOP/s  "
                              f"bwd {bwd_ms:8.3f} ms {row['bwd_tflops']:6.1f} TFLOP/s", flush=True)
                del q, k, v, dout
                torch.cuda.empty_cache()

    with open(os.path.join(a.out, "cuda-anchor.json"), "w") as f:
        json.dump(dict(date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__,
                       device=props.name, copy_gbs=copy_gbs, iters=a.iters, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
