"""`r1kit eval --model DIR --task NAME [--n K] [--out DIR]`: DeepSeek-R1's evaluation protocol.

k samples per problem at temperature 0.6, top-p 0.95 (paper §3): pass@1 = mean correctness over
all samples (correct: the verifier scores it 1.0), its bootstrap 95% interval over problems, cons@k
(majority vote on the extracted answer), unbiased pass@k (Chen et al.), mean response length,
reflection and language-mixing rates; `partial_credit` too for a task that gives it (rg:NAME).
Writes `out/results.json` and `out/samples.jsonl` (one line per sample).

Tasks:
- a procedural task of the tiny world (`arithmetic`, `countdown`, `rg:NAME`, ...): its held-out
  `test` split, `num_problems` rows, scored by the task's exact verifier;
- a local `.jsonl`/`.json`/`.parquet` file (or folder) with `problem_column` and `solution_column`:
  scored by the `accuracy` reward (math-verify on the last `<answer>` / `\\boxed{}`); rows whose gold
  answer cannot be parsed are left out (and counted);
- presets `aime24`, `math500`, `gpqa_diamond`, `gsm8k`: handed to lighteval (else lm-eval for those it
  has), an optional extra; a clear error names the package when neither is installed.

Small-sample warning: with k < 4 samples per problem, or fewer than 1000 samples in all (k x problems),
pass@1 is noisy; the warning is logged and stored in results.json. The paper uses k = 4..64, more
for smaller sets; the bootstrap interval shows how noisy a result is.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import field
from r1kit.data.datasets import DataError, load_dataset_rows
from r1kit.data.templates import is_template, template_choices, template_help, tokenize_prompts
from r1kit.eval.runner import evaluate
from r1kit.utils.dist import default_device
from r1kit.utils.io import finite_or_none

log = logging.getLogger("r1kit.eval")

MIN_K = 4
MIN_TOTAL_SAMPLES = 1000
PRESETS = {  # name -> (lighteval task, lm-eval task or None)
    "aime24": ("lighteval|aime24|0|0", None),
    "math500": ("lighteval|math_500|0|0", None),
    "gpqa_diamond": ("lighteval|gpqa:diamond|0|0", "gpqa_diamond_cot_zeroshot"),
    "gsm8k": ("lighteval|gsm8k|0|0", "gsm8k"),
}
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class EvalConfig:
    model: str = field("", help="Model folder (save_pretrained), hub id, or r1kit:tiny.")
    task: str = field("arithmetic", help="Task name (arithmetic, countdown, rg:NAME, ...), a .jsonl/.parquet file, "
                                          "or a preset: aime24, math500, gpqa_diamond, gsm8k.")
    n: int = field(8, help="Samples per problem (the paper's k).")
    out: str = field("outputs/eval", help="Folder for results.json and samples.jsonl.")
    num_problems: int | None = field(None, help="Problems to evaluate (tasks: generated, default 200; files: the first rows).")
    split: str = field("test", help="Split of a task or folder (tasks: the held-out test split).")
    problem_column: str = field("problem", help="Problem column of a file task.")
    solution_column: str = field("solution", help="Reference-answer column of a file task.")
    template: str = field("r1_zero", help=f"{template_help()}.")
    system_prompt: str | None = field(None, help="System message for template: chat.")
    temperature: float = field(0.6, help="Sampling temperature (the paper: 0.6).")
    top_p: float = field(0.95, help="Nucleus sampling threshold (the paper: 0.95).")
    max_completion_length: int = field(1024, help="Maximum new tokens per sample (the paper: 32768).")
    stop_strings: list[str] | None = field(None, help="Generation stops after any of these strings (e.g. </answer>).")
    batch_size: int = field(64, help="Problems per generation call (each with n samples).")
    seed: int = field(0, help="Seed of the task's problems and of sampling.")
    dtype: str = field("auto", help="auto, float32, bfloat16 or float16.")
    rollout_engine: str = field("hf", help="Generation backend: hf.")

    def __post_init__(self):
        def need(cond: bool, name: str, msg: str):
            if not cond:
                raise ValueError(f"'{name}' {msg}, got {getattr(self, name)!r}")

        need(bool(self.model), "model", "must name a model folder, hub id or r1kit:tiny")
        need(self.n >= 1, "n", "must be >= 1")
        need(self.num_problems is None or self.num_problems >= 1, "num_problems", "must be >= 1")
        need(is_template(self.template), "template", f"must be {template_choices()}")
        need(self.temperature >= 0, "temperature", "must be >= 0")
        need(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(self.max_completion_length >= 1, "max_completion_length", "must be >= 1")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")


def run_eval(cfg: EvalConfig) -> Path:
    """Evaluate `cfg.model` on `cfg.task`; returns the folder holding results.json."""
    out = Path(cfg.out)
    if cfg.task in PRESETS:
        return run_preset(cfg, out)
    import torch

    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.rollout import make_engine

    rows, score, extract, partial = load_problems(cfg)
    device = default_device()
    model, tokenizer = load_model_and_tokenizer(cfg.model, dtype=cfg.dtype, device=device)
    model.eval()
    _, prompt_ids = tokenize_prompts([r["prompt"] for r in rows], tokenizer, cfg.template, cfg.system_prompt)
    warnings = sample_size_warnings(cfg.n, len(rows))
    for w in warnings:
        log.warning(w)
    engine = make_engine(cfg.rollout_engine, model, tokenizer)
    with torch.no_grad():
        res = evaluate(engine, prompt_ids, rows, score, extract, k=cfg.n, temperature=cfg.temperature,
                       top_p=cfg.top_p, max_new_tokens=cfg.max_completion_length,
                       stop=tuple(cfg.stop_strings or ()), seed=cfg.seed, chunk=cfg.batch_size)
    summary = res.summary()
    summary.update({
        "model": cfg.model, "task": cfg.task, "split": cfg.split, "template": cfg.template,
        "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p,
                     "max_new_tokens": cfg.max_completion_length, "stop": list(cfg.stop_strings or []),
                     "seed": cfg.seed},
        "num_samples": len(res.samples), "warnings": warnings,
    })
    if partial is not None:  # a task with partial credit (rg:NAME): its mean, beside the exact-match accuracy
        summary["partial_credit"] = sum(partial(s["completion"], rows[s["problem"]]) for s in res.samples) / max(
            len(res.samples), 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(finite_or_none(summary), indent=1) + "\n")
    with open(out / "samples.jsonl", "w") as f:
        for s in res.samples:
            row = rows[s["problem"]]
            f.write(json.dumps({**s, "prompt": row["prompt"], "solution": row["solution"]}, default=str) + "\n")
    log.info("%s on %s: pass@1 %.4f [%.4f, %.4f], cons@%d %.4f, pass@%d %.4f over %d problems", cfg.model,
             cfg.task, summary["pass@1"], *summary["pass@1_ci"], cfg.n, summary["cons@k"], cfg.n,
             summary["pass@k"], summary["num_problems"])
    return out


def sample_size_warnings(k: int, num_problems: int) -> list[str]:
    """Why a result with `k` samples on `num_problems` problems may be too noisy to compare runs."""
    out = []
    if k < MIN_K:
        out.append(f"k={k} samples per problem is small: pass@1 per problem is coarse and cons@k near "
                   f"meaningless; the paper uses k=4..64 (use --n {MIN_K} or more)")
    if k * num_problems < MIN_TOTAL_SAMPLES:
        out.append(f"{k} samples x {num_problems} problems = {k * num_problems} samples, under {MIN_TOTAL_SAMPLES}: "
                   f"pass@1 is noisy (see pass@1_ci); use more samples (--n) or problems")
    return out


def load_problems(cfg: EvalConfig):
    """(rows with prompt and solution, score(text, row), extract(text), partial(text, row) or None) for a task
    name or a file; `partial` is a task's partial credit (rg:NAME tasks), reported as `partial_credit`."""
    from r1kit.rewards.math import accuracy, extract_answer

    is_file = cfg.task.endswith(FILE_SUFFIXES) or Path(cfg.task).exists()
    if not is_file:
        from r1kit.tasks import extract_answer as tag_answer
        from r1kit.tasks import extract_number, get_task

        try:
            task = get_task(cfg.task)
        except KeyError as e:
            raise ValueError(f"--task {cfg.task!r}: not a known task, an existing file, or a preset "
                             f"({', '.join(PRESETS)}): {e.args[0]}") from None
        except ImportError as e:
            raise ValueError(f"--task {cfg.task!r}: {e}") from None
        rows = task.dataset(cfg.split, cfg.num_problems or 200, cfg.seed)
        numeric = all(_is_number(r["solution"]) for r in rows)
        return rows, task.score, (extract_number if numeric else tag_answer), getattr(task, "partial_credit", None)

    ds = load_dataset_rows(cfg.task, cfg.split, prompt_column=cfg.problem_column,
                           answer_column=cfg.solution_column, num_rows=cfg.num_problems,
                           column_keys=("problem_column", "solution_column"))
    rows = ds.to_list()
    # The accuracy reward returns None for a gold answer it cannot parse: such problems cannot be scored.
    usable = accuracy([""] * len(rows), ["<answer>0</answer>"] * len(rows), solution=[r["solution"] for r in rows])
    bad = [i for i, u in enumerate(usable) if u is None]
    if bad:
        log.warning("%s: %d problem(s) with an unparsable %r left out (rows %s%s)", cfg.task, len(bad),
                    cfg.solution_column, bad[:10], " ..." if len(bad) > 10 else "")
        rows = [r for i, r in enumerate(rows) if i not in set(bad)]
    if not rows:
        raise DataError(f"{cfg.task}: no problem has a usable {cfg.solution_column!r}")

    def score(text: str, row: dict) -> float:
        return accuracy([row["prompt"]], [text], solution=[row["solution"]])[0] or 0.0

    return rows, score, extract_answer, None


def run_preset(cfg: EvalConfig, out: Path) -> Path:
    """Hand a standard benchmark to lighteval (or lm-eval) with the paper's sampling settings."""
    light, harness = PRESETS[cfg.task]
    gen = f"temperature:{cfg.temperature},top_p:{cfg.top_p},max_new_tokens:{cfg.max_completion_length}"
    if shutil.which("lighteval"):
        backend = "lighteval"
        cmd = ["lighteval", "accelerate", f"model_name={cfg.model},generation_parameters={{{gen}}}", light,
               "--output-dir", str(out / "lighteval")] + (["--use-chat-template"] if cfg.template == "chat" else [])
    elif harness and shutil.which("lm_eval"):
        backend = "lm-eval"
        cmd = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={cfg.model}", "--tasks", harness,
               "--gen_kwargs", f"do_sample=true,temperature={cfg.temperature},top_p={cfg.top_p},"
               f"max_gen_toks={cfg.max_completion_length}", "--output_path", str(out / "lm_eval")]
        if cfg.template == "chat":
            cmd.append("--apply_chat_template")
    else:
        need = "pip install 'lighteval[math]'" + ("" if harness is None else " (or pip install lm-eval)")
        raise ValueError(f"--task {cfg.task} is evaluated by lighteval{'' if harness is None else ' or lm-eval'}, "
                         f"which is not installed: {need}")
    out.mkdir(parents=True, exist_ok=True)
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd)
    (out / "results.json").write_text(json.dumps({"model": cfg.model, "task": cfg.task, "backend": backend,
                                                  "command": cmd, "returncode": proc.returncode}, indent=1) + "\n")
    if proc.returncode != 0:
        raise ValueError(f"{backend} failed with exit code {proc.returncode} (command: {' '.join(cmd)})")
    return out


def _is_number(s) -> bool:
    try:
        float(str(s))
        return True
    except ValueError:
        return False

