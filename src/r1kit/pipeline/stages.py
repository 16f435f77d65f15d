"""The stages of DeepSeek-R1's recipe, each one call of an existing r1kit command, declared by name.

A `Stage` declares what it is (`title`, for the report), the config class that checks the recipe's
overrides, its `defaults` (built from the recipe's shared settings), what it reads and what it writes:
- `wired`: config keys only the pipeline sets: `Model(stage)` (the model a stage produced; `Model(BASE)`
  is the recipe's base model), `Data(stage, file)` (a file a stage wrote), `OUTPUT` (this stage's own
  output folder) or a fixed value;
- `reads`: further inputs its run function opens itself, by role (`ctx.read(role)`);
- `model` (a model in `<stage>/model/`, a trainer's output_dir with the final model at its top) and
  `data` (files in `<stage>/data/`): the outputs whose hashes are the stage's output digest.
The stages a stage depends on and whether it reads the base model follow from those inputs, so they
cannot disagree with what it really reads. A `{stage}` in a list value of the defaults or of the recipe
(e.g. `rm:{reward_model}?segment=answer` in reward_funcs) is that input stage's model folder.

What is specific to the tiny world is supplied from outside the table's machinery: the cold-start and
non-reasoning data come from `r1kit.tiny_world.cold_start` generators (`(config, task) -> (rows, summary)`,
written by `generated`), training prompts and the held-out evaluation from the recipe's `task`
(`r1kit:TASK`), the reward model's pairs from `r1kit:preferences` unless the recipe names another
`dataset_name` under `stages: reward_model:`, and the base model from `base_model`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from r1kit.data.datasets import TASK_PREFIX
from r1kit.pipeline.config import PipelineConfig, StudentConfig, build_student
from r1kit.tiny_world.cold_start import ColdStartDataConfig, NonReasoningDataConfig, cold_start_data, non_reasoning_data
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.rm_config import RMConfig
from r1kit.train.sample_config import SampleConfig
from r1kit.train.sft_config import SFTConfig
from r1kit.utils.io import write_jsonl

BASE = "base"  # the stage whose model is the recipe's base model


@dataclass(frozen=True)
class Model:
    """An input: the model `stage` produced (`Model(BASE)`: the recipe's base model)."""

    stage: str


@dataclass(frozen=True)
class Data:
    """An input: the file `name` that `stage` wrote to its data folder."""

    stage: str
    name: str


class _Output:
    def __repr__(self) -> str:
        return "OUTPUT"


OUTPUT = _Output()  # a wired value: the stage's own output folder (model/ when it makes a model, else data/)
TRAINER = {"output_dir": OUTPUT, "resume_from_checkpoint": None}  # a trainer writes its model, never resumes
SAMPLER = {"output_dir": OUTPUT}  # r1kit sample writes its samples to the data folder


def _no_defaults(ctx: Ctx) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    name: str
    title: str                                   # what it is, in the paper's words (report)
    run: Callable[[Any, Ctx], dict]              # (config, ctx for this stage) -> metrics summary
    config: type | None = None                   # config class checking the recipe's overrides (None: takes none)
    defaults: Callable[[Ctx], dict] = _no_defaults
    wired: Mapping[str, Any] = field(default_factory=dict)         # config key -> Model / Data / OUTPUT / value
    reads: Mapping[str, Model | Data] = field(default_factory=dict)  # role -> input the run function opens
    model: bool = False                          # writes a model to <stage>/model/
    data: tuple[str, ...] = ()                   # writes these files to <stage>/data/
    evaluated: bool = False                      # a policy model: evaluated after it runs

    @property
    def inputs(self) -> list[Model | Data]:
        return [v for v in (*self.wired.values(), *self.reads.values()) if isinstance(v, (Model, Data))]

    @property
    def deps(self) -> tuple[str, ...]:
        """The stages whose outputs it reads (in the order declared)."""
        names = [ref.stage for ref in self.inputs if ref.stage not in (BASE, self.name)]
        return tuple(dict.fromkeys(names))

    @property
    def from_base(self) -> bool:
        """It reads the base model (whose digest is then one of its inputs)."""
        return any(ref.stage == BASE for ref in self.inputs)

    def outputs(self, stage_dir: Path) -> list[Path]:
        """The files whose hashes are its output: the model folder's files, then its data files."""
        from r1kit.pipeline.manifest import model_files

        return (model_files(stage_dir / "model") if self.model else []) + [stage_dir / "data" / n for n in self.data]


@dataclass(frozen=True)
class Ctx:
    cfg: PipelineConfig
    out: Path
    stage: Stage | None = None  # the stage being run (`for_stage`), for its run function

    def dir(self, stage: str) -> Path:
        return self.out / stage

    def model(self, stage: str) -> str:
        """The model a stage produced (the base model for `base`)."""
        return self.cfg.base_model if stage == BASE else str(self.dir(stage) / "model")

    def output(self, stage: Stage) -> str:
        """Where `stage` writes: its model folder when it makes a model, else its data folder."""
        return self.model(stage.name) if stage.model else str(self.dir(stage.name) / "data")

    def resolve(self, stage: Stage, value: Any) -> Any:
        if isinstance(value, Model):
            return self.model(value.stage)
        if isinstance(value, Data):
            return str(self.dir(value.stage) / "data" / value.name)
        return self.output(stage) if value is OUTPUT else value

    def wired(self, stage: Stage) -> dict:
        """The config keys the pipeline sets for `stage`, resolved."""
        return {key: self.resolve(stage, value) for key, value in stage.wired.items()}

    def for_stage(self, stage: Stage) -> Ctx:
        return Ctx(self.cfg, self.out, stage)

    def read(self, role: str) -> str:
        """The path of the running stage's input `role` (one of its `reads`)."""
        return self.resolve(self.stage, self.stage.reads[role])

    def data_file(self) -> Path:
        """The running stage's one data file."""
        (name,) = self.stage.data
        return self.dir(self.stage.name) / "data" / name


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
    return {**_common(ctx), "dataset_name": f"{TASK_PREFIX}{c.task}", "dataset_num_rows": c.train_rows, "template": c.template,
            "reward_funcs": rewards, "reward_weights": weights, "num_generations": 8,
            "per_device_train_batch_size": 64, "max_completion_length": c.max_completion_length,
            "stop_strings": list(c.stop_strings), "learning_rate": 5e-4, "lr_scheduler_type": "constant",
            "loss_type": "dapo", "epsilon_high": 0.28, "temperature": 1.0, "max_steps": 30, "save_steps": 0,
            "save_total_limit": 1, "logging_steps": 1, "disable_tqdm": c.disable_tqdm}


def sample_defaults(ctx: Ctx, offset: int) -> dict:
    c = ctx.cfg
    ev = eval_defaults(ctx)
    return {**_common(ctx, offset), "dataset_name": f"{TASK_PREFIX}{c.task}", "dataset_split": "train",
            "dataset_num_rows": 300, "template": c.template, "num_samples": 4, "prompts_per_batch": 64,
            "max_completion_length": c.max_completion_length, "temperature": 0.6, "top_p": 0.95,
            "stop_strings": list(c.stop_strings), "reward_funcs": ["task_accuracy", "format", "language"],
            "verify_reward": "task_accuracy", "min_reward": 1.0, "max_per_prompt": 2,
            "decontamination_datasets": [f"{TASK_PREFIX}{c.task}"],
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


def generated(make_rows: Callable[[Any, str], tuple[list[dict], dict]]) -> Callable[[Any, Ctx], dict]:
    """The run function of a data stage: `make_rows(config, task) -> (rows, summary)`, the rows written to
    the stage's one data file, the summary returned."""

    def run(cfg, ctx: Ctx) -> dict:
        rows, summary = make_rows(cfg, ctx.cfg.task)
        write_jsonl(ctx.data_file(), rows)
        return summary

    return run


def run_sft(cfg, ctx: Ctx) -> dict:
    from r1kit.train.sft import train

    train(cfg)
    return _last_metrics(cfg.output_dir, ("loss", "mean_token_accuracy", "epoch"))


def run_rs_sft(cfg, ctx: Ctx) -> dict:
    """Combine the verified reasoning samples and the non-reasoning rows (shuffled), then SFT."""
    from r1kit.data.sft_data import load_sft_rows

    reasoning, _, _ = _rows_or_empty(Path(ctx.read("reasoning")), load_sft_rows)
    general, _, _ = load_sft_rows(ctx.read("general"))
    rows = [{"prompt": r["prompt"], "completion": r["completion"], "source": "reasoning"} for r in reasoning]
    rows += [{"prompt": r["prompt"], "completion": r["completion"], "source": "non_reasoning"} for r in general]
    random.Random(ctx.cfg.seed).shuffle(rows)
    write_jsonl(cfg.dataset_name, rows)
    return {"reasoning_rows": len(reasoning), "non_reasoning_rows": len(general), **run_sft(cfg, ctx)}


def _rows_or_empty(path: Path, load):
    return load(str(path)) if path.is_file() and path.stat().st_size > 0 else ([], None, None)


def run_grpo(cfg, ctx: Ctx) -> dict:
    from r1kit.rewards import reward_names  # the names GRPO logs its rewards under
    from r1kit.train.grpo import train

    train(cfg)
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
    return build_student(ctx.read("base"), ctx.output(ctx.stage), cfg,
                         dtype="float32" if ctx.cfg.dtype == "auto" else ctx.cfg.dtype)


def run_nothing(cfg, ctx: Ctx) -> dict:
    return {}


# ---- the table ------------------------------------------------------------------------------------------


def _seed(ctx: Ctx) -> dict:
    return {"seed": ctx.cfg.seed}


def _rm_defaults(ctx: Ctx) -> dict:
    return {**_common(ctx), "dataset_name": "r1kit:preferences", "dataset_num_rows": 1000, "segment": "answer",
            "max_length": 256, "learning_rate": 1e-4, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05,
            "num_train_epochs": 1.0, "per_device_train_batch_size": 32, "save_steps": 0, "save_total_limit": 1,
            "logging_steps": 5, "disable_tqdm": ctx.cfg.disable_tqdm}


STAGES: list[Stage] = [
    Stage(name=BASE, title="base model (no training)", run=run_nothing,
          reads={"model": Model(BASE)}, evaluated=True),
    Stage(name="r1_zero", title="R1-Zero control: GRPO from the base model, accuracy + format rewards",
          config=GRPOConfig, defaults=lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format"]),
          wired={"model_name_or_path": Model(BASE), **TRAINER}, run=run_grpo, model=True, evaluated=True),
    Stage(name="cold_start_data", title="cold-start data: curated readable chains of thought",
          config=ColdStartDataConfig, defaults=_seed, run=generated(cold_start_data), data=("cold_start.jsonl",)),
    Stage(name="cold_start", title="cold-start SFT of the base model", config=SFTConfig, defaults=sft_defaults,
          wired={"model_name_or_path": Model(BASE), "dataset_name": Data("cold_start_data", "cold_start.jsonl"),
                 **TRAINER}, run=run_sft, model=True, evaluated=True),
    Stage(name="reasoning_rl", title="reasoning RL (GRPO) with the language-consistency reward", config=GRPOConfig,
          defaults=lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format", "language"], [1.0, 0.5, 0.5]),
          wired={"model_name_or_path": Model("cold_start"), **TRAINER}, run=run_grpo, model=True, evaluated=True),
    Stage(name="rejection_sampling", title="rejection sampling from the reasoning-RL checkpoint",
          config=SampleConfig, defaults=lambda ctx: sample_defaults(ctx, 1),
          wired={"model_name_or_path": Model("reasoning_rl"), **SAMPLER}, run=run_sample, data=("samples.jsonl",)),
    Stage(name="non_reasoning_data", title="non-reasoning data (simple prompts, no chain of thought)",
          config=NonReasoningDataConfig, defaults=_seed, run=generated(non_reasoning_data),
          data=("non_reasoning.jsonl",)),
    Stage(name="rs_sft", title="SFT of the base model on rejection samples + non-reasoning data", config=SFTConfig,
          defaults=sft_defaults,
          wired={"model_name_or_path": Model(BASE), "dataset_name": Data("rs_sft", "train.jsonl"), **TRAINER},
          reads={"reasoning": Data("rejection_sampling", "samples.jsonl"),
                 "general": Data("non_reasoning_data", "non_reasoning.jsonl")},
          run=run_rs_sft, model=True, data=("train.jsonl",), evaluated=True),
    Stage(name="reward_model", title="helpfulness reward model (Bradley-Terry, scored on the summary)",
          config=RMConfig, defaults=_rm_defaults, wired={"model_name_or_path": Model(BASE), **TRAINER},
          run=run_rm, model=True),
    Stage(name="all_scenarios_rl", title="RL for all scenarios: rule rewards + the reward model", config=GRPOConfig,
          defaults=lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format", "rm:{reward_model}?segment=answer"],
                                             [1.0, 0.5, 0.5]),
          wired={"model_name_or_path": Model("rs_sft"), **TRAINER}, reads={"reward_model": Model("reward_model")},
          run=run_grpo, model=True, evaluated=True),
    Stage(name="distill_data", title="distillation data: verified samples of the final model", config=SampleConfig,
          defaults=lambda ctx: sample_defaults(ctx, 2),
          wired={"model_name_or_path": Model("all_scenarios_rl"), **SAMPLER}, run=run_distill_data,
          data=("samples.jsonl",)),
    Stage(name="student_init", title="student: the base model truncated to fewer layers (no training)",
          config=StudentConfig, reads={"base": Model(BASE)}, run=run_student_init, model=True, evaluated=True),
    Stage(name="distill", title="distilled student: SFT on the final model's samples", config=SFTConfig,
          defaults=sft_defaults,
          wired={"model_name_or_path": Model("student_init"), "dataset_name": Data("distill_data", "samples.jsonl"),
                 **TRAINER}, run=run_sft, model=True, evaluated=True),
    Stage(name="student_rl", title="RL-only student: GRPO from the same student init (the paper's control)",
          config=GRPOConfig, defaults=lambda ctx: grpo_defaults(ctx, ["task_accuracy", "format"]),
          wired={"model_name_or_path": Model("student_init"), **TRAINER}, run=run_grpo, model=True, evaluated=True),
]
STAGE_NAMES = [s.name for s in STAGES]
BY_NAME = {s.name: s for s in STAGES}
