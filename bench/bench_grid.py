"""The workload grid: r1kit vs TRL's GRPOTrainer on short and R1-length prompts x 64 / 256 / 1024-token
completions, on the tiny random Qwen2 and on SmolLM2-135M, each cell measured side by side.

Each cell is one `bench_grpo_vs_trl.py` run (its own subprocesses per side, ABBA order, medians after
warm-up; see that script for the phases and the FLOP estimates). This script runs the cells one after
the other and prints one row per cell:

  step      r1kit / TRL seconds per optimizer step (goal <= 0.5x)
  generate  the rollout phase, r1kit / TRL
  train     forward + backward of the completion log-probs (goal: r1kit no slower, <= 1.0x), and each
            side's share of the fp32 matmul peak measured at the start of the cell (nominal FLOPs: the
            full [prompt | completion] forward that TRL runs; r1kit's prompt sharing does less work)
  RSS       peak resident memory, r1kit / TRL (goal <= 1.0x)
  reward    mean reward over the run's steps on each side (same model, rewards and data: equal within noise)

    python bench/bench_grid.py                      # the whole grid (75-135 min on the 2-core machine)
    python bench/bench_grid.py --models tiny        # one model
    python bench/bench_grid.py --cells tiny/short/64 smollm2/r1/1024
    python bench/bench_grid.py --out bench/results/grid.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE / "bench_grpo_vs_trl.py"

# (model, prompt, completion) -> bench_grpo_vs_trl options: fewer steps where a step takes minutes
MODELS = {"tiny": "tiny", "smollm2": "smollm2-small"}
PROMPTS = ("short", "r1")
COMPLETIONS = (64, 256, 1024)


def cell_options(model: str, completion: int) -> list[str]:
    # two ABBA rounds wherever a step takes seconds: the machine's speed drifts by 10-15% within minutes
    # (one-round medians of the tiny short cells moved 1.09x -> 0.85x between two runs of the same code)
    if model == "tiny":
        rounds, steps, warmup = (2, 4, 1) if completion <= 256 else (2, 2, 1)
    else:
        rounds, steps, warmup = (1, 3, 1) if completion <= 256 else (1, 1, 0)  # 1024: minutes per step
    return ["--rounds", str(rounds), "--steps", str(steps), "--warmup", str(warmup)]


def run_cell(model: str, prompt: str, completion: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, str(BENCH), "--workload", MODELS[model], "--prompt", prompt, "--completion",
           str(completion), "--threads", str(threads), "--json", out] + cell_options(model, completion)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"cell {model}/{prompt}/{completion} failed ({p.returncode})")
    res = json.loads(Path(out).read_text())
    Path(out).unlink()
    res["wall_s"] = time.perf_counter() - t
    return res


def summarize(res: dict) -> dict:
    med, fl, peak = res["medians"], res["flops"], res["peak_gflops"]
    train_flops = fl["logp_fwd"] + fl["backward"]
    row = {"prompt_tokens": fl["prompt_tokens"], "peak_gflops": peak}
    for side in ("r1kit", "trl"):
        m = med[side]
        train = m["logp_fwd"] + m["backward"]
        curve = [c["reward"] for run in res["results"][side] for c in run["curve"] if c.get("reward") is not None]
        row[side] = {"step": m["step"], "generate": m["generate"], "train": train, "rss_mb": m["rss_mb"],
                     "train_peak_frac": train_flops / 1e9 / peak / train if train > 0 else None,
                     "gen_peak_frac": fl["generate"] / 1e9 / peak / m["generate"] if m["generate"] > 0 else None,
                     "reward_mean": statistics.mean(curve) if curve else None, "reward_curve": curve,
                     "threads": sorted({s.get("threads") for run in res["results"][side] for s in run["steps"]
                                        if s.get("threads")})}
    a, b = row["r1kit"], row["trl"]
    row["ratios"] = {k: a[k] / b[k] for k in ("step", "generate", "train", "rss_mb")}
    row["green"] = {"step": row["ratios"]["step"] <= 0.5, "train": row["ratios"]["train"] <= 1.0,
                    "rss": row["ratios"]["rss_mb"] <= 1.0}
    return row


def table(rows: dict) -> str:
    def mark(ok):
        return "ok" if ok else "NO"

    lines = ["| model | prompt | completion | step r1kit / TRL (s) | step ratio | generate ratio | train r1kit / TRL (s) "
             "| train ratio | train % of fp32 peak r1kit / TRL | peak RSS r1kit / TRL (MB) | RSS ratio | mean reward r1kit / TRL |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        model, prompt, completion = key.split("/")
        a, b, q, g = r["r1kit"], r["trl"], r["ratios"], r["green"]
        lines.append(
            f"| {model} | {prompt} (~{r['prompt_tokens']:.0f}) | {completion} | {a['step']:.2f} / {b['step']:.2f} | "
            f"**{q['step']:.2f}x** {mark(g['step'])} | {q['generate']:.2f}x | {a['train']:.2f} / {b['train']:.2f} | "
            f"**{q['train']:.2f}x** {mark(g['train'])} | {100 * a['train_peak_frac']:.0f}% / {100 * b['train_peak_frac']:.0f}% | "
            f"{a['rss_mb']:,.0f} / {b['rss_mb']:,.0f} | **{q['rss_mb']:.2f}x** {mark(g['rss'])} | "
            f"{a['reward_mean']:.3f} / {b['reward_mean']:.3f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    ap.add_argument("--prompts", nargs="+", choices=PROMPTS, default=list(PROMPTS))
    ap.add_argument("--completions", nargs="+", type=int, default=list(COMPLETIONS))
    ap.add_argument("--cells", nargs="+", help="explicit cells model/prompt/completion (overrides the three above)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write every cell's raw results and summary here (JSON)")
    args = ap.parse_args()
    cells = [tuple(c.split("/")) for c in args.cells] if args.cells else \
        [(m, p, str(c)) for m in args.models for p in args.prompts for c in args.completions]
    rows, raw = {}, {}
    for model, prompt, completion in cells:
        key = f"{model}/{prompt}/{completion}"
        print(f"cell {key} ...", flush=True)
        raw[key] = run_cell(model, prompt, int(completion), args.threads)
        rows[key] = summarize(raw[key])
        r = rows[key]
        print(f"  step {r['r1kit']['step']:.2f} / {r['trl']['step']:.2f} s = {r['ratios']['step']:.2f}x, train "
              f"{r['ratios']['train']:.2f}x, RSS {r['ratios']['rss_mb']:.2f}x ({raw[key]['wall_s']:.0f} s)", flush=True)
        if args.out:  # after every cell: a stopped grid keeps what it measured
            Path(args.out).write_text(json.dumps({"rows": rows, "raw": raw}, indent=1))
    print()
    print(table(rows))
    n = len(rows)
    for goal in ("step", "train", "rss"):
        print(f"{goal}: {sum(r['green'][goal] for r in rows.values())} of {n} cells meet the goal")


if __name__ == "__main__":
    main()
