"""How fast r1kit's step would have to run for the grid's 0.5x-step goal, from a grid run's own measurements.

For each cell of a `bench_grid.py` JSON: the step-time budget (half of TRL's median step, less r1kit's own
median "rest": rewards, optimizer, bookkeeping), the seconds the training pass and the generation would take
at 100% of the fp32 matmul peak measured at the start of the cell, and from these:

  need        the share of the peak the whole step (training + generation) must run at to fit the budget
  gen budget  what is left for generation at r1kit's measured training time, as a fraction of r1kit's
              measured generation time (below its floor: the goal needs a faster training pass too)

FLOPs: the generation's as the grid counts them (2 x params per token, plus attention); the training pass's
as the least any exact implementation runs: the grid's nominal forward + backward over [prompt | completion]
scaled to the tokens that must run (every completion token, and each group's prompt once, as prompt sharing
does), so the floors are lower bounds.

    python bench/grid_floor.py bench/results/grid.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grid import MODELS  # noqa: E402
from bench_grpo_vs_trl import WORKLOADS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", type=Path, help="a bench_grid.py --out JSON")
    raw = json.loads(ap.parse_args().grid.read_text())["raw"]
    print("| cell | TRL step (s) | budget (s) | r1kit train (s) | at peak | r1kit generate (s) | at peak | need | "
          "gen budget / r1kit gen |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cell in raw.items():
        peak, flops = cell["peak_gflops"] * 1e9, cell["flops"]
        ours, trl = cell["medians"]["r1kit"], cell["medians"]["trl"]  # per step, as the grid's table reads them
        budget = 0.5 * trl["step"] - ours["rest"]
        train, gen = ours["logp_fwd"] + ours["backward"], ours["generate"]
        model, _, completion = name.split("/")
        w = WORKLOADS[MODELS[model]]
        rows, prompt, completion = w["prompts"] * w["generations"], flops["prompt_tokens"], int(completion)
        must = (rows * completion + w["prompts"] * prompt) / (rows * (prompt + completion))  # of the nominal tokens
        train_floor = (flops["logp_fwd"] + flops["backward"]) * must / peak
        gen_floor = flops["generate"] / peak
        need = (train_floor + gen_floor) / budget
        left = budget - train
        print(f"| {name} | {trl['step']:.2f} | {budget:.2f} | {train:.2f} | {train_floor:.2f} | "
              f"{gen:.2f} | {gen_floor:.2f} | **{need:.0%}** | {left / gen:.2f}x"
              f"{' (below its floor)' if left < gen_floor else ''} |")


if __name__ == "__main__":
    main()
