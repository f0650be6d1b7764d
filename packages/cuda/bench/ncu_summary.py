#!/usr/bin/env python3
"""Short summary of an Nsight Compute raw CSV export (`ncu -i REP --page raw --csv`): per kernel, the
duration, throughputs, issue activity, the largest warp-stall reasons and the busiest pipes.

    python3 packages/cuda/bench/ncu_summary.py RAW.csv
"""
import csv
import sys


def num(x):
    try:
        return float(str(x).replace(",", ""))
    except ValueError:
        return None


def main():
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.reader(f))
    # Header row, then a units row, then one row per profiled kernel.
    start = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    head = rows[start]
    for r in rows[start + 2:]:
        if len(r) != len(head):
            continue
        m = dict(zip(head, r))
        print(f"== {m.get('Kernel Name', '?')[:110]}")
        print(f"   grid {m.get('Grid Size')} block {m.get('Block Size')} regs {m.get('launch__registers_per_thread')}")
        for key in (
            "gpu__time_duration.sum",
            "sm__throughput.avg.pct_of_peak_sustained_elapsed",
            "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
            "dram__throughput.avg.pct_of_peak_sustained_elapsed",
            "dram__bytes_read.sum.per_second",
            "sm__warps_active.avg.pct_of_peak_sustained_active",
            "smsp__issue_active.avg.pct_of_peak_sustained_active",
            "smsp__inst_executed.avg.per_cycle_active",
            "smsp__average_warp_latency_per_inst_issued.ratio",
            "smsp__warps_eligible.avg.per_cycle_active",
            "l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum",
            "smsp__inst_executed.sum",
        ):
            if key in m:
                print(f"   {key} = {m[key]}")
        stalls = []
        for k, v in m.items():
            if k.startswith("smsp__average_warp_latency_issue_stalled_") or k.startswith(
                "smsp__average_warps_issue_stalled_"
            ):
                x = num(v)
                if x is not None and x > 0:
                    stalls.append((x, k))
        stalls.sort(reverse=True)
        print("   stalls (cycles per issued instruction):")
        for x, k in stalls[:10]:
            print(f"     {x:8.3f}  {k}")
        pipes = []
        for k, v in m.items():
            if k.startswith("sm__pipe_") or k.startswith("sm__inst_executed_pipe_"):
                x = num(v)
                if x is not None and x > 0 and "pct" in k:
                    pipes.append((x, k))
        pipes.sort(reverse=True)
        print("   pipes (% of peak):")
        for x, k in pipes[:8]:
            print(f"     {x:8.2f}  {k}")


if __name__ == "__main__":
    main()
