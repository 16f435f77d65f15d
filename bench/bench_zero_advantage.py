"""Rows with advantage 0 run forward only (`skip_zero_advantage_backward`): the training phase, on and off.

Real GRPO runs (`r1kit.train.grpo.train`) in the demo's shape: the shipped tiny base model, the R1-Zero
template, 8 prompts x 8 completions per step in one micro-batch of 64, completions up to 160 tokens ending at
</answer>, beta 0, loss dapo. The reward makes a chosen share of the prompts score every completion alike (a
group without signal, advantage 0, as when a model solves a problem every time or never) and scores the others
by their length in characters (nearly always spread). Both sides generate from the same seeds with the same
weights up to float rounding (the rows with a gradient run in other micro-batches), so the completions are the
same unless a rounding difference flips a sampled token, and the training phase (`timing_s/train`) is what
is compared. Runs alternate ABBA per share; the first step of each run is dropped (warm-up).

    python bench/bench_zero_advantage.py                    # shares 0, 0.25, 0.5, 0.75
    python bench/bench_zero_advantage.py --shares 0.5 --steps 6 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import zlib
from pathlib import Path

ZERO_SHARE = 0.0  # set by main(); read by the reward in this process


def share_reward(prompts, completions, **columns):
    """The prompts in the first ZERO_SHARE of a hash order score 1.0 (no signal); the others, length / 100."""
    return [1.0 if zlib.crc32(p.encode()) % 1000 < ZERO_SHARE * 1000 else len(c) / 100
            for p, c in zip(prompts, completions)]


def run(out: Path, skip: bool, steps: int, seed: int) -> list[dict]:
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.tracking import read_metrics

    cfg = GRPOConfig(model_name_or_path="r1kit:tiny-base", dataset_name="r1kit:arithmetic", dataset_num_rows=512,
                     template="r1_zero", reward_funcs=["__main__:share_reward"], num_generations=8,
                     per_device_train_batch_size=64, max_steps=steps, learning_rate=1e-3, beta=0.0, loss_type="dapo",
                     epsilon_high=0.28, max_completion_length=160, stop_strings=["</answer>"], temperature=1.0,
                     seed=seed, output_dir=str(out), save_steps=0, disable_tqdm=True, log_completions=False,
                     dtype="float32", skip_zero_advantage_backward=skip)
    return read_metrics(train(cfg))


def main():
    global ZERO_SHARE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75])
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is dropped)")
    ap.add_argument("--rounds", type=int, default=1, help="ABBA rounds per share")
    ap.add_argument("--json", type=Path, help="write every step's timings here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    raw, table = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for share in args.shares:
            ZERO_SHARE = share
            sides = {True: [], False: []}
            order = [True, False, False, True] * args.rounds
            for i, skip in enumerate(order):
                rows = run(Path(tmp) / f"{share}-{i}", skip, args.steps, seed=1)
                sides[skip].append(rows)
            raw[share] = {str(k): v for k, v in sides.items()}
            train = {k: statistics.median(r["timing_s/train"] for rows in v for r in rows[1:]) for k, v in sides.items()}
            zero = statistics.mean(r["frac_reward_zero_std"] for rows in sides[True] for r in rows[1:])
            skipped = statistics.mean(r["frac_backward_skipped"] for rows in sides[True] for r in rows[1:])
            pairs = [(a, b) for x, y in zip(sides[True], sides[False]) for a, b in zip(x, y)]
            dloss = max(abs(a["loss"] - b["loss"]) for a, b in pairs)
            same = sum(a["reward"] == b["reward"] for a, b in pairs) / len(pairs)  # steps with the same rewards
            table.append((share, zero, skipped, train[False], train[True], train[True] / train[False], dloss, same))
            print(f"share {share:.2f}: zero-std groups {zero:.2f}, rows skipped {skipped:.2f}, train off "
                  f"{train[False]:.3f} s, on {train[True]:.3f} s, ratio {train[True] / train[False]:.2f}x, "
                  f"max |loss on - off| {dloss:.1e}, steps with equal mean reward {same:.2f}", flush=True)
    print("\n| constant-reward share of prompts | zero-std groups | rows without backward | train s/step off | on | "
          "on / off | max loss difference | steps with equal mean reward |")
    print("|---|---|---|---|---|---|---|---|")
    for share, zero, skipped, off, on, ratio, dloss, same in table:
        print(f"| {share:.2f} | {zero:.2f} | {skipped:.2f} | {off:.3f} | {on:.3f} | **{ratio:.2f}x** | {dloss:.1e} | "
              f"{same:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
