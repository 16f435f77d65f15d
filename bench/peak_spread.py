"""How stable is the fp32 matmul peak that the grid's "% of peak" figures divide by?

`bench_grid.py` measures the peak once at the start of each cell (`matmul_peak`: the best 2048^3 `torch.mm`
of a 3-second window) and reports each side's training pass as a share of it. This script repeats that same
measurement, and the same at other sizes, round after round, and prints the spread: if the bound itself moves
by more than the margin a goal is judged by (60% vs 49-57% in the fourth grid run), the "% of peak" goal
cannot be judged from one measurement per cell on this machine.

    python bench/peak_spread.py                # 4 rounds x sizes 512 / 1024 / 2048 / 3072, ~2 min
    python bench/peak_spread.py --rounds 8 --seconds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grpo_vs_trl import matmul_peak  # noqa: E402  (the grid's own measurement)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 3072])
    ap.add_argument("--seconds", type=float, default=3.0, help="window per measurement (the grid uses 3 s)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    got: dict[int, list[float]] = {n: [] for n in args.sizes}
    print("round | " + " | ".join(f"{n}^3 GFLOP/s" for n in args.sizes), flush=True)
    for r in range(args.rounds):
        for n in args.sizes:  # sizes interleaved, so a drift of the machine hits each alike
            got[n].append(matmul_peak(args.threads, n, args.seconds))
        print(f"{r + 1:5d} | " + " | ".join(f"{got[n][-1]:12.0f}" for n in args.sizes), flush=True)
    print("\nsize | min | median | max | max / min")
    for n in args.sizes:
        v = got[n]
        print(f"{n:4d} | {min(v):.0f} | {statistics.median(v):.0f} | {max(v):.0f} | {max(v) / min(v):.2f}x")
    every = [x for v in got.values() for x in v]
    print(f"all sizes: {min(every):.0f}-{max(every):.0f} GFLOP/s ({max(every) / min(every):.2f}x)")
    if 2048 in got:  # the grid's size: one training pass, read against the highest and the lowest reading
        lo, hi = min(got[2048]), max(got[2048])
        print(f"a training pass read as 55% of the highest 2048^3 reading is {55 * hi / lo:.0f}% of the lowest")


if __name__ == "__main__":
    main()
