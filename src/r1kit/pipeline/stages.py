"""The stages of DeepSeek-R1's recipe: each one call of an existing r1kit command.

Every stage has a config class (the command's own: SFTConfig, GRPOConfig, SampleConfig, RMConfig; or a
small one for the data generators and the student), pipeline defaults built from the recipe's shared
settings, the recipe's per-stage overrides on top, and WIRED keys (which model to start from, which data,
where to write) that only the pipeline sets. Stage folder layout: `<stage>/model/` (a trainer's
output_dir, the final model at its top), `<stage>/data/` (generated or sampled data), `<stage>/eval/`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from r1kit.pipeline.config import PipelineConfig, StudentConfig, build_student
from r1kit.tiny_world.cold_start import (ColdStartDataConfig, NonReasoningDataConfig, cold_start_rows,
                                         non_reasoning_rows)
from r1kit.utils.io import write_jsonl


@dataclass
class Ctx:
    cfg: PipelineConfig
    out: Path

    def dir(self, stage: str) -> Path:
        return self.out / stage

    def model(self, stage: str) -> str:
        """The model a stage produced (the base model for `base`)."""
        return self.cfg.base_model if stage == "base" else str(self.dir(stage) / "model")


@dataclass
class Stage:
    name: str
    title: str                      # what it is, in the paper's words (report)
    cls: type | None                # config class checking the recipe's overrides (None: takes none)
    deps: tuple[str, ...]           # stages whose outputs it reads
    from_base: bool                 # reads the base model
    evaluated: bool                 # a policy model: evaluated after it runs
    defaults: Callable[[Ctx], dict]
    wired: Callable[[Ctx], dict]
    run: Callable[[object, Ctx], dict]      # (config, ctx) -> metrics summary
    outputs: Callable[[Path], list[Path]]   # stage dir -> files whose hashes are the stage's output


# ---- defaults shared by the commands ---------------------------------------------------------------


def _common(ctx: Ctx, offset: int = 0) -> dict:
    c = ctx.cfg
    return {"seed": c.seed + offset, "dtype": c.dtype}


def sft_defaults(ctx: Ctx) -> dict:
    c = ctx.cfg
    return {**_common(ctx), "template": c.template, "max_length": 512, "learning_rate": 5e-4,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "num_train_epochs": 2.0,
            "per_device_train_batch_size": 16, "save_steps": 0, "save_total_limit": 1, "logging_steps": 5,
            "disable_tqdm": c.disable_tqdm}


def grpo_defaults(ctx: Ctx, rewards: list[str], weights: list[float] | None = None) -> dict:
    c = ctx.cfg
    return {**_common(ctx), "dataset_name": f"r1kit:{c.task}", "dataset_num_rows": c.train_rows, "template": c.template,
            "reward_funcs": rewards, "reward_weights": weights, "num_generations": 8,
            "per_device_train_batch_size": 64, "max_completion_length": c.max_completion_length,
            "stop_strings": list(c.stop_strings), "learning_rate": 5e-4, "lr_scheduler_type": "constant",
            "loss_type": "dapo", "epsilon_high": 0.28, "temperature": 1.0, "max_steps": 30, "save_steps": 0,
            "save_total_limit": 1, "logging_steps": 1, "disable_tqdm": c.disable_tqdm}


def sample_defaults(ctx: Ctx, offset: int) -> dict:
    c = ctx.cfg
    ev = eval_defaults(ctx)
    return {**_common(ctx, offset), "dataset_name": f"r1kit:{c.task}", "dataset_split": "train",
            "dataset_num_rows": 300, "template": c.template, "num_samples": 4, "prompts_per_batch": 64,
            "max_completion_length": c.max_completion_length, "temperature": 0.6, "top_p": 0.95,
            "stop_strings": list(c.stop_strings), "reward_funcs": ["task_accuracy", "format", "language"],
            "verify_reward": "task_accuracy", "min_reward": 1.0, "max_per_prompt": 2,
            "decontamination_datasets": [f"r1kit:{c.task}"],
            "decontamination_num_rows": int(c.eval.get("num_problems", ev["num_problems"])),
            "decontamination_seed": int(c.eval.get("seed", ev["seed"]))}


def eval_defaults(ctx: Ctx) -> dict:
    c = ctx.cfg
    return {"task": c.task, "n": 4, "num_problems": 100, "template": c.template, "temperature": 0.6, "top_p": 0.95,
            "max_completion_length": c.max_completion_length, "stop_strings": list(c.stop_strings),
            "seed": c.seed, "dtype": c.dtype}


# ---- run functions ----------------------------------------------------------------------------------


def _last_metrics(model_dir: str, keys: tuple[str, ...]) -> dict:
    from r1kit.train.tracking import read_metrics

    try:
        rows = read_metrics(model_dir)
    except OSError:
        return {}
    out = {"steps": rows[-1].get("step") if rows else 0}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals:
            out[k] = vals[-1]
            out[f"{k}/first"] = vals[0]
    return out


def run_cold_start_data(cfg: ColdStartDataConfig, ctx: Ctx) -> dict:
    rows, stats = cold_start_rows(cfg, task=ctx.cfg.task)
    write_jsonl(ctx.dir("cold_start_data") / "data" / "cold_start.jsonl", rows)
    return {**stats, "self_check_share": sum(r["self_check"] for r in rows) / len(rows)}


def run_non_reasoning_data(cfg: NonReasoningDataConfig, ctx: Ctx) -> dict:
    rows = non_reasoning_rows(cfg)
    write_jsonl(ctx.dir("non_reasoning_data") / "data" / "non_reasoning.jsonl", rows)
    return {"rows": len(rows)}


def run_sft(cfg, ctx: Ctx) -> dict:
    from r1kit.train.sft import train

    train(cfg)
    return _last_metrics(cfg.output_dir, ("loss", "mean_token_accuracy", "epoch"))


def run_rs_sft(cfg, ctx: Ctx) -> dict:
    """Combine the verified reasoning samples and the non-reasoning rows (shuffled), then SFT."""
    from r1kit.data.sft_data import load_sft_rows

    reasoning, _, _ = _rows_or_empty(ctx.dir("rejection_sampling") / "data" / "samples.jsonl", load_sft_rows)
    general, _, _ = load_sft_rows(str(ctx.dir("non_reasoning_data") / "data" / "non_reasoning.jsonl"))
    rows = [{"prompt": r["prompt"], "completion": r["completion"], "source": "reasoning"} for r in reasoning]
    rows += [{"prompt": r["prompt"], "completion": r["completion"], "source": "non_reasoning"} for r in general]
    random.Random(ctx.cfg.seed).shuffle(rows)
    write_jsonl(cfg.dataset_name, rows)
    return {"reasoning_rows": len(reasoning), "non_reasoning_rows": len(general), **run_sft(cfg, ctx)}


def _rows_or_empty(path: Path, load):
    return load(str(path)) if path.is_file() and path.stat().st_size > 0 else ([], None, None)


def run_grpo(cfg, ctx: Ctx) -> dict:
    from r1kit.train.grpo import train

    train(cfg)
    from r1kit.rewards import reward_names  # the names GRPO logs its rewards under

    return _last_metrics(cfg.output_dir, ("reward", "completions/mean_length", "completions/language_mixing_rate",
                                          *(f"rewards/{n}/mean" for n in reward_names(cfg.reward_funcs))))


def run_sample(cfg, ctx: Ctx) -> dict:
    from r1kit.train.sample import run_sample as sample

    sample(cfg)
    stats = json.loads((Path(cfg.output_dir) / "stats.json").read_text())
    return {k: stats.get(k) for k in ("num_prompts", "num_samples", "kept", "prompts_with_kept", "dropped",
                                       "reward_means")}


def run_distill_data(cfg, ctx: Ctx) -> dict:
    summary = run_sample(cfg, ctx)
    if not summary.get("kept"):
        raise ValueError(f"distill_data: no sample of {cfg.model_name_or_path} passed verification and the filters "
                         f"({summary.get('dropped')}); the student has nothing to learn from (more prompts or "
                         f"samples, or a lower min_reward)")
    return summary


def run_rm(cfg, ctx: Ctx) -> dict:
    from r1kit.train.rm import train

    train(cfg)
    return _last_metrics(cfg.output_dir, ("loss", "accuracy", "eval_loss", "eval_accuracy"))


def run_student_init(cfg: StudentConfig, ctx: Ctx) -> dict:
    return build_student(ctx.cfg.base_model, ctx.model("student_init"), cfg,
                         dtype="float32" if ctx.cfg.dtype == "auto" else ctx.cfg.dtype)


def run_nothing(cfg, ctx: Ctx) -> dict:
    return {}


# ---- outputs ------------------------------------------------------------------------------------------


def model_outputs(stage_dir: Path) -> list[Path]:
    from r1kit.pipeline.manifest import model_files

    return model_files(stage_dir / "model")


def data_outputs(*names: str) -> Callable[[Path], list[Path]]:
    return lambda stage_dir: [stage_dir / "data" / n for n in names]


# ---- the table ------------------------------------------------------------------------------------------


def _rl_rewards(ctx: Ctx) -> dict:
    return grpo_defaults(ctx, ["task_accuracy", "format", "language"], [1.0, 0.5, 0.5])


def _rm_spec(ctx: Ctx) -> str:
    return f"rm:{ctx.model('reward_model')}?segment=answer"


def _sft_wired(model: Callable[[Ctx], str], data: Callable[[Ctx], str], stage: str) -> Callable[[Ctx], dict]:
    return lambda ctx: {"model_name_or_path": model(ctx), "dataset_name": data(ctx),
                        "output_dir": ctx.model(stage), "resume_from_checkpoint": None}


def _wired(model: Callable[[Ctx], str], stage: str) -> Callable[[Ctx], dict]:
    return lambda ctx: {"model_name_or_path": model(ctx), "output_dir": ctx.model(stage), "resume_from_checkpoint": None}


def _sample_wired(model_stage: str, stage: str) -> Callable[[Ctx], dict]:
    return lambda ctx: {"model_name_or_path": ctx.model(model_stage), "output_dir": str(ctx.dir(stage) / "data")}


def _base(ctx: Ctx) -> str:
    return ctx.cfg.base_model


STAGES: list[Stage] = [
    Stage("base", "base model (no training)", None, (), True, True, lambda ctx: {}, lambda ctx: {}, run_nothing,
          lambda d: []),
    Stage("r1_zero", "R1-Zero control: GRPO from the base model, accuracy + format rewards", None, (), True, True,
          lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format"]), _wired(_base, "r1_zero"), run_grpo,
          model_outputs),
    Stage("cold_start_data", "cold-start data: curated readable chains of thought", ColdStartDataConfig, (), False,
          False, lambda ctx: {"seed": ctx.cfg.seed}, lambda ctx: {}, run_cold_start_data,
          data_outputs("cold_start.jsonl")),
    Stage("cold_start", "cold-start SFT of the base model", None, ("cold_start_data",), True, True, sft_defaults,
          _sft_wired(_base, lambda ctx: str(ctx.dir("cold_start_data") / "data" / "cold_start.jsonl"), "cold_start"),
          run_sft, model_outputs),
    Stage("reasoning_rl", "reasoning RL (GRPO) with the language-consistency reward", None, ("cold_start",), False,
          True, _rl_rewards, _wired(lambda ctx: ctx.model("cold_start"), "reasoning_rl"), run_grpo, model_outputs),
    Stage("rejection_sampling", "rejection sampling from the reasoning-RL checkpoint", None, ("reasoning_rl",), False,
          False, lambda ctx: sample_defaults(ctx, 1), _sample_wired("reasoning_rl", "rejection_sampling"), run_sample,
          data_outputs("samples.jsonl")),
    Stage("non_reasoning_data", "non-reasoning data (simple prompts, no chain of thought)", NonReasoningDataConfig, (),
          False, False, lambda ctx: {"seed": ctx.cfg.seed}, lambda ctx: {}, run_non_reasoning_data,
          data_outputs("non_reasoning.jsonl")),
    Stage("rs_sft", "SFT of the base model on rejection samples + non-reasoning data", None,
          ("rejection_sampling", "non_reasoning_data"), True, True, sft_defaults,
          _sft_wired(_base, lambda ctx: str(ctx.dir("rs_sft") / "data" / "train.jsonl"), "rs_sft"), run_rs_sft,
          lambda d: model_outputs(d) + [d / "data" / "train.jsonl"]),
    Stage("reward_model", "helpfulness reward model (Bradley-Terry, scored on the summary)", None, (), True, False,
          lambda ctx: {**_common(ctx), "dataset_name": "r1kit:preferences", "dataset_num_rows": 1000,
                       "segment": "answer", "max_length": 256, "learning_rate": 1e-4, "lr_scheduler_type": "cosine",
                       "warmup_ratio": 0.05, "num_train_epochs": 1.0, "per_device_train_batch_size": 32,
                       "save_steps": 0, "save_total_limit": 1, "logging_steps": 5,
                       "disable_tqdm": ctx.cfg.disable_tqdm},
          _wired(_base, "reward_model"), run_rm, model_outputs),
    Stage("all_scenarios_rl", "RL for all scenarios: rule rewards + the reward model", None, ("rs_sft", "reward_model"),
          False, True, lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format", _rm_spec(ctx)], [1.0, 0.5, 0.5]),
          _wired(lambda ctx: ctx.model("rs_sft"), "all_scenarios_rl"), run_grpo, model_outputs),
    Stage("distill_data", "distillation data: verified samples of the final model", None, ("all_scenarios_rl",), False,
          False, lambda ctx: sample_defaults(ctx, 2), _sample_wired("all_scenarios_rl", "distill_data"),
          run_distill_data, data_outputs("samples.jsonl")),
    Stage("student_init", "student: the base model truncated to fewer layers (no training)", StudentConfig, (), True,
          True, lambda ctx: {}, lambda ctx: {}, run_student_init, model_outputs),
    Stage("distill", "distilled student: SFT on the final model's samples", None, ("distill_data", "student_init"),
          False, True, sft_defaults,
          _sft_wired(lambda ctx: ctx.model("student_init"),
                     lambda ctx: str(ctx.dir("distill_data") / "data" / "samples.jsonl"), "distill"),
          run_sft, model_outputs),
    Stage("student_rl", "RL-only student: GRPO from the same student init (the paper's control)", None,
          ("student_init",), False, True, lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format"]),
          _wired(lambda ctx: ctx.model("student_init"), "student_rl"), run_grpo, model_outputs),
]


def _attach_classes() -> None:
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.rm_config import RMConfig
    from r1kit.train.sample import SampleConfig
    from r1kit.train.sft_config import SFTConfig

    by_run = {run_sft: SFTConfig, run_rs_sft: SFTConfig, run_grpo: GRPOConfig, run_sample: SampleConfig,
              run_distill_data: SampleConfig, run_rm: RMConfig}
    for s in STAGES:
        if s.run in by_run:
            s.cls = by_run[s.run]


_attach_classes()
STAGE_NAMES = [s.name for s in STAGES]
BY_NAME = {s.name: s for s in STAGES}
