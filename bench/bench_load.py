"""r1kit's GRPO step on an idle machine and next to one busy process, side by side.

Every laptop runs something else. On a machine with few cores, torch using every core while another
process also wants one makes each op wait for a descheduled thread (utils/threads.py). This bench runs
the same r1kit training runs (bench_grpo_vs_trl.py's worker: tiny random Qwen2, 8 prompts x 8, short
prompts) in four conditions, interleaved round by round:

  idle   / adaptive   r1kit's default (cpu_threads 0: threads follow the free cores before each step)
  loaded / adaptive   the same, next to `python -c "while True: pass"`
  idle   / fixed      cpu_threads = every core (torch's default: what r1kit did before)
  loaded / fixed      the same, next to the busy process

and prints each condition's median step time (first step of every run dropped), the threads the
steps ran with, and the ratios loaded / idle (goal: <= 2.5x for the default) and adaptive / fixed
when idle (goal: the idle speed unchanged, ~1.0x).

    python bench/bench_load.py                              # 2 rounds x 5 steps, 64-token completions
    python bench/bench_load.py --rounds 1 --completion 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE / "bench_grpo_vs_trl.py"


def run_one(args, cpu_threads: int, loaded: bool) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result = f.name
        cmd = [sys.executable, str(BENCH), "--worker", "r1kit", "--result", result, "--workload", "tiny",
               "--steps", str(args.steps), "--micro", "16", "--threads", str(args.threads),
               "--prompt", args.prompt, "--completion", str(args.completion), "--cpu_threads", str(cpu_threads)]
        p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            sys.stderr.write(p.stderr.decode(errors="replace")[-4000:])
            raise SystemExit(f"worker failed ({p.returncode})")
        out = json.loads(Path(result).read_text())
        os.unlink(result)
        return out
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="steps per run (the first is dropped)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads at the start")
    ap.add_argument("--prompt", choices=["short", "r1"], default="short")
    ap.add_argument("--completion", type=int, default=64)
    ap.add_argument("--json", help="also write all raw results here")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_grpo_vs_trl import prepare_model

    prepare_model("tiny")
    conds = [("idle", "adaptive", 0), ("loaded", "adaptive", 0), ("idle", "fixed", args.threads),
             ("loaded", "fixed", args.threads)]
    res: dict[tuple, list] = {c[:2]: [] for c in conds}
    print(f"tiny workload, {args.prompt} prompts, {args.completion}-token completions, {args.rounds} round(s) x "
          f"{args.steps} steps per condition, {os.cpu_count()} cores", flush=True)
    for r in range(args.rounds):
        for load, policy, n in (conds if r % 2 == 0 else conds[::-1]):
            t = time.perf_counter()
            out = run_one(args, n, load == "loaded")
            kept = out["steps"][1:]
            res[(load, policy)] += kept
            print(f"  round {r + 1} {load:>6} {policy:>8}: median step {statistics.median(s['step'] for s in kept):.3f} s, "
                  f"threads {[s['threads'] for s in out['steps']]} ({time.perf_counter() - t:.0f} s)", flush=True)
    med = {k: statistics.median(s["step"] for s in v) for k, v in res.items()}
    print("\nmedian step (s):  " + "  ".join(f"{l}/{p} {v:.3f}" for (l, p), v in med.items()))
    for policy in ("adaptive", "fixed"):
        print(f"{policy:>8}: loaded / idle = {med[('loaded', policy)] / med[('idle', policy)]:.2f}x")
    print(f"idle: adaptive / fixed = {med[('idle', 'adaptive')] / med[('idle', 'fixed')]:.2f}x")
    print(f"RATIO loaded/idle (default, goal <= 2.5) = {med[('loaded', 'adaptive')] / med[('idle', 'adaptive')]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{l}/{p}": v for (l, p), v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
