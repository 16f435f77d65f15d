"""`r1kit demo`: DeepSeek-R1-Zero in miniature, on a laptop CPU, in minutes.

Pure RL (GRPO, R1-Zero template, accuracy + format rewards) on the shipped tiny base model, which
was pretrained on a synthetic corpus that never contains the template. Before and after training it
evaluates the held-out test split with the paper's protocol (pass@1 averaged over k samples at
temperature 0.6 and top-p 0.95, and cons@k), and it tracks the behaviours the paper reports:
response length (Figure 3), the R1 format (`<think> ... </think> <answer> ... </answer>`, which the
base model writes only rarely), re-evaluation phrases and whether a re-check really corrects a step
("aha moment", `self_correction.py`), and language mixing.

Accuracy here uses a lenient extractor (the <answer> content if present, else the last number), so
learning the tags alone cannot raise it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1kit.config import field
from r1kit.tiny_world.self_correction import self_correction_stats

log = logging.getLogger("r1kit.demo")


@dataclass
class DemoConfig:
    out: str = field("runs/demo", help="Folder for summary.json, report.html, plots and the trained model.")
    model: str = field("r1kit:tiny-base", help="Base model (default: the shipped tiny-world model).")
    task: str = field("arithmetic", help="Tiny-world task (see r1kit.tasks.list_tasks()).")
    seed: int = field(0, help="Seed for data, sampling and training.")
    steps: int = field(100, help="GRPO steps.")
    prompts_per_step: int = field(8, help="Prompts per GRPO step.")
    num_generations: int = field(8, help="Completions per prompt (the group size G).")
    learning_rate: float = field(1e-4, help="Learning rate (constant). 1e-3 collapses this model within 20 steps.")
    beta: float = field(0.0, help="KL coefficient against the base model.")
    temperature: float = field(0.8, help="Sampling temperature of the training rollouts (evaluation: 0.6, the paper's). "
                                         "At 1.0 this tiny model's re-checks slip as often as its first tries, so "
                                         "re-checking gains less; 0.8 keeps the rare R1 format and re-checks explorable.")
    max_completion_length: int = field(160, help="Maximum completion tokens, in training and evaluation.")
    train_rows: int = field(4000, help="Training problems generated from the task's train split.")
    eval_problems: int = field(100, help="Held-out problems for the before/after evaluation.")
    k: int = field(4, help="Samples per held-out problem (pass@1 is averaged over them; cons@k votes).")
    eval_every: int = field(20, help="Evaluate a held-out subset every this many steps (0 = only before/after).")
    eval_every_problems: int = field(40, help="Problems in the periodic held-out evaluation.")
    rollout_engine: str = field("hf", help="Rollout engine for training: hf, or vllm (a real vLLM, colocated).")
    async_generation: bool = field(False, help="Generate the next step's batch while this one trains (one step off-policy).")
    num_threads: int = field(2, help="torch CPU threads.")
    disable_tqdm: bool = field(False, help="Hide progress bars.")

    def __post_init__(self):
        for name in ("steps", "prompts_per_step", "num_generations", "k", "eval_problems", "train_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)}")


def run_demo(cfg: DemoConfig) -> Path:
    """Evaluate, train with GRPO, evaluate again; write summary.json and report.html."""
    from r1kit.data.templates import tokenize_prompts
    from r1kit.eval import evaluate
    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.rollout import make_engine
    from r1kit.tasks import extract_number, get_task
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.tracking import read_metrics

    t_start = time.perf_counter()
    torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(cfg.task)
    test_rows = task.dataset("test", cfg.eval_problems, seed=cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model, dtype="float32")
    _, test_ids = tokenize_prompts([r["prompt"] for r in test_rows], tokenizer, "r1_zero")

    def held_out(engine, rows, ids, k):
        return evaluate(engine, ids, rows, task.score, extract_number, k=k, temperature=0.6, top_p=0.95,
                        max_new_tokens=cfg.max_completion_length, stop=("</answer>",), seed=cfg.seed + 1)

    log.info("evaluating the base model on %d held-out problems x %d samples", len(test_rows), cfg.k)
    before = held_out(make_engine("hf", model, tokenizer), test_rows, test_ids, cfg.k)
    del model

    n_sub = min(cfg.eval_every_problems, len(test_rows))
    curve = [{"step": 0, "pass@1": _subset_pass1(before, n_sub),
              "format_rate": format_rate([s for s in before.samples if s["problem"] < n_sub])}]

    def periodic_eval(step, policy, engine):
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            res = held_out(engine, test_rows[:n_sub], test_ids[:n_sub], cfg.k)
            fmt = format_rate(res.samples)
            curve.append({"step": step, "pass@1": res.pass_at_1, "format_rate": fmt})
            return {"eval/pass@1": res.pass_at_1, "eval/format_rate": fmt}
        return None

    grpo = GRPOConfig(
        model_name_or_path=cfg.model, dataset_name=f"r1kit:{cfg.task}", dataset_num_rows=cfg.train_rows,
        template="r1_zero", reward_funcs=["task_accuracy", "format"], num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations, max_steps=cfg.steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type="constant", beta=cfg.beta, loss_type="dapo",
        epsilon_high=0.28, max_completion_length=cfg.max_completion_length, stop_strings=["</answer>"],
        temperature=cfg.temperature, seed=cfg.seed, output_dir=str(out / "model"), save_steps=0, logging_steps=1,
        disable_tqdm=cfg.disable_tqdm, dtype="float32", rollout_engine=cfg.rollout_engine,
        async_generation=cfg.async_generation)
    model_dir = train(grpo, callback=periodic_eval)

    trained, tokenizer = load_model_and_tokenizer(str(model_dir), dtype="float32")
    after = held_out(make_engine("hf", trained, tokenizer), test_rows, test_ids, cfg.k)
    metrics = read_metrics(model_dir)
    summary = {
        "before": _behaviour(before), "after": _behaviour(after),
        "wall_seconds": round(time.perf_counter() - t_start, 1), "steps": cfg.steps, "k": cfg.k,
        "num_problems": len(test_rows), "task": cfg.task, "model": cfg.model, "seed": cfg.seed,
        "eval_curve": curve,
        "self_correction": {"before": self_correction_stats(before.samples),
                            "after": self_correction_stats(after.samples)},
    }
    summary["trends"] = _trends(metrics)
    summary["format_reward_above_0.9_from_step"] = _first_step_above(metrics, "rewards/format/mean", 0.9)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "samples_after.jsonl", "w") as f:
        for s in after.samples[: 4 * cfg.k]:
            f.write(json.dumps(s) + "\n")
    from r1kit.tiny_world.report import write_report

    write_report(out, summary, metrics, before.samples, after.samples)
    print(_table(summary))
    return out


def _subset_pass1(result, n_problems: int) -> float:
    scores = [s["score"] for s in result.samples if s["problem"] < n_problems]
    return sum(scores) / max(len(scores), 1)


def format_rate(samples: list[dict]) -> float:
    """Share of responses in the R1 format: exactly one <think>...</think> then one <answer>...</answer>."""
    from r1kit.rewards.format import is_r1_format

    return sum(is_r1_format(s["completion"].strip()) for s in samples) / max(len(samples), 1)


def _first_step_above(metrics: list[dict], key: str, level: float, window: int = 5) -> int | None:
    """First step from which the `window`-step running mean of `key` stays above `level` to the end."""
    vals = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
    means = [(vals[i][0], sum(v for _, v in vals[max(0, i - window + 1): i + 1]) / min(window, i + 1))
             for i in range(len(vals))]
    first = None
    for step, mean in means:
        if mean > level and first is None:
            first = step
        elif mean <= level:
            first = None
    return first


def _behaviour(result) -> dict:
    return {"pass@1": result.pass_at_1, "format_rate": format_rate(result.samples), "pass@1_ci": result.pass_at_1_ci,
            "cons@k": result.cons_at_k, "pass@k": result.pass_at_k, "mean_response_length": result.mean_response_length,
            "reflection_rate": result.reflection_rate, "language_mixing_rate": result.language_mixing_rate}


def _trends(metrics: list[dict]) -> dict:
    """First-quarter vs last-quarter means of the behaviours the paper tracks, with a verdict."""
    out = {}
    q = max(1, len(metrics) // 4)
    for key in ("completions/mean_length", "rewards/format/mean", "completions/reflection_rate",
                "completions/language_mixing_rate", "reward"):
        vals = [m[key] for m in metrics if m.get(key) is not None]
        if len(vals) < 2:
            continue
        first, last = sum(vals[:q]) / len(vals[:q]), sum(vals[-q:]) / len(vals[-q:])
        out[key] = {"first_quarter": first, "last_quarter": last, "rose": last > first}
    return out


def _table(summary: dict) -> str:
    rows = [("pass@1", "pass@1"), (f"cons@{summary['k']}", "cons@k"), ("format rate", "format_rate"),
            ("mean response length", "mean_response_length"),
            ("reflection rate", "reflection_rate"), ("language mixing rate", "language_mixing_rate")]
    lines = [f"{'held-out (' + str(summary['num_problems']) + ' problems)':<34}{'before':>10}{'after':>10}"]
    for label, key in rows:
        lines.append(f"{label:<34}{summary['before'][key]:>10.3f}{summary['after'][key]:>10.3f}")
    sc_b, sc_a = summary["self_correction"]["before"], summary["self_correction"]["after"]
    for label, key in [("re-checks changing a step", "rechecks_changing_a_step"),
                       ("  wrong answers fixed", "wrong_answers_fixed"), ("  right answers broken", "right_answers_broken")]:
        lines.append(f"{label:<34}{sc_b[key]:>10d}{sc_a[key]:>10d}")
    for label, key in [("accuracy when re-checking", "accuracy_rechecking"),
                       ("accuracy when not re-checking", "accuracy_not_rechecking")]:
        lines.append(f"{label:<34}" + "".join(f"{'-' if v is None else format(v, '.3f'):>10}"
                                               for v in (sc_b[key], sc_a[key])))
    lines.append(f"{summary['steps']} GRPO steps, {summary['wall_seconds']:.0f} s in all")
    return "\n".join(lines)
