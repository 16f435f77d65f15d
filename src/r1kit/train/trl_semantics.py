"""What r1kit's numbers mean, in TRL's terms: one place for the counts, checks and defaults r1kit shares
with TRL (GRPOTrainer, SFTTrainer), and for the defaults it keeps different on purpose.

GRPO's units, as TRL counts them:
- A *step* (`max_steps`, `save_steps`, `logging_steps`, `checkpoint-N`, metrics.jsonl's `step`, a reward
  function's `trainer_state.global_step`) is one optimizer update of `per_device_train_batch_size x
  gradient_accumulation_steps` completions per device.
- A *generation batch* is `generation_batch_size` completions over all processes =
  `per_device_train_batch_size x processes x steps_per_generation` (default steps_per_generation =
  gradient_accumulation_steps). It is cut into `steps_per_generation` micro-batches per device and used for
  `num_iterations` passes, so it makes `num_iterations x steps_per_generation / gradient_accumulation_steps`
  optimizer updates. The rollout engine gets the new weights once per generation batch, before the next one.
- The generation batch holds whole groups (`generation_batch_size % num_generations == 0`); a group may
  span processes (advantages are computed over every process's rewards).

`GenerationPlan` holds these counts for a run; `DEFAULT_DIFFERENCES` lists the defaults r1kit keeps
different from TRL's, with the reason, and `notice_default_differences` says so once per run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("r1kit.trl")


# ---- defaults r1kit keeps different from TRL's --------------------------------------------------------


@dataclass(frozen=True)
class DefaultDifference:
    """One option whose r1kit default differs from TRL's on purpose."""

    trainer: str  # the r1kit command: grpo or sft
    key: str  # the option (TRL's name)
    r1kit: Any  # r1kit's default
    trl: Any  # TRL's default (GRPOConfig / SFTConfig, over transformers.TrainingArguments)
    why: str  # why r1kit keeps its own
    applies: Callable[[Any], bool] | None = field(default=None, compare=False, repr=False)  # cfg -> does it matter


_GC_WHY = ("r1kit's defaults target small models, where recomputing activations costs about a third more "
           "time for memory nobody lacks; `r1kit plan` (and the check before every GRPO run) names "
           "gradient_checkpointing when a run would not fit without it")

# (trainer, key, r1kit default, TRL default, why). Read by tests and by documentation generators; every
# row's r1kit value is checked against the config class's default in tests/test_trl_semantics.py.
DEFAULT_DIFFERENCES: tuple[DefaultDifference, ...] = (
    DefaultDifference("grpo", "adam_beta2", 0.99, 0.999,
                      "RL runs make few optimizer updates (the tiny-world recipes 30-100); beta2 0.999 averages the "
                      "squared gradients over ~1000 updates, so the step size would still be adapting at the end"),
    DefaultDifference("grpo", "gradient_checkpointing", False, True, _GC_WHY),
    DefaultDifference("grpo", "logging_steps", 1, 10,
                      "r1kit logs each logged step's own values (TRL averages over the interval), so an interval of "
                      "10 would drop nine of every ten noisy RL steps from the curves"),
    DefaultDifference("grpo", "log_completions", True, False,
                      "completions/step-N.jsonl (files only, nothing printed) is what `r1kit report` and "
                      "`r1kit doctor` read to show and check what the policy writes"),
    DefaultDifference("grpo", "save_steps", 100, 500,
                      "a GRPO step costs a generation batch and rollout engines (vLLM servers) fail mid-run; a "
                      "checkpoint every 100 updates bounds the work lost"),
    DefaultDifference("grpo", "num_train_epochs", 1.0, 3.0,
                      "R1-Zero-style recipes pass over their prompts once (open-r1's GRPO recipes set 1); with "
                      "max_steps -1, TRL's 3 would triple the run", applies=lambda cfg: cfg.max_steps <= 0),
    DefaultDifference("grpo", "max_completion_length", 256, 512,
                      "sized for CPU-scale runs (the tiny world's answers fit in 160 tokens); reasoning recipes "
                      "on real models set it (thousands of tokens)"),
    DefaultDifference("grpo", "max_prompt_length", 512, None,
                      "TRL up to 0.25 truncated prompts to 512 tokens from the left, as r1kit does (with a warning "
                      "counting them); TRL 0.28 removed the option and never truncates. The limit bounds memory, "
                      "and `r1kit plan` sizes the prompt's share of the KV cache from it"),
    DefaultDifference("grpo", "template", "r1_zero", None,
                      "the R1-Zero prompt (DeepSeek-R1, Table 1) is what r1kit grpo trains with; TRL passes a "
                      "string prompt as is and renders a conversation with the chat template (template: chat "
                      "with conversation prompts does the latter)"),
    DefaultDifference("sft", "gradient_checkpointing", False, True, _GC_WHY),
    DefaultDifference("sft", "truncate", False, True,
                      "TRL cuts rows over max_length (truncation_mode keep_start), often the answer at the end; "
                      "r1kit stops before training naming each such row. truncate: true cuts them as TRL does"),
)


def default_differences(trainer: str) -> list[DefaultDifference]:
    """The rows of `DEFAULT_DIFFERENCES` for one r1kit command (grpo, sft)."""
    return [d for d in DEFAULT_DIFFERENCES if d.trainer == trainer]


_NOTICED: set[tuple[str, str]] = set()  # (trainer, key) already said in this process


def notice_default_differences(trainer: str, cfg, given: set[str] | frozenset[str] | None = None) -> list[str]:
    """Log, once per process and option, each option of `DEFAULT_DIFFERENCES` that the run leaves at r1kit's
    default where TRL's differs (and where it matters: num_train_epochs only without max_steps). `given` names
    the options the recipe or command line set; without it, an option at r1kit's default value counts as left
    unset. Returns the messages logged now."""
    said = []
    for d in default_differences(trainer):
        if (trainer, d.key) in _NOTICED or not hasattr(cfg, d.key) or (d.applies and not d.applies(cfg)):
            continue
        unset = d.key not in given if given is not None else getattr(cfg, d.key) == d.r1kit
        if not unset:
            continue
        _NOTICED.add((trainer, d.key))
        trl = "none" if d.trl is None else repr(d.trl)
        msg = (f"r1kit {trainer}: '{d.key}' is {d.r1kit!r}, r1kit's default; TRL's default is {trl} ({d.why}). "
               f"Set '{d.key}' to choose.")
        log.info(msg)
        said.append(msg)
    return said


# ---- GRPO: generation batches and optimizer steps ---------------------------------------------------


def env_world_size() -> int:
    """The processes of the launch (WORLD_SIZE, set by torchrun and accelerate launch), as the runtime reads it."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class GenerationPlan:
    """How a GRPO run's completions are generated and trained on, in TRL's units (module doc)."""

    world_size: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    steps_per_generation: int
    num_generations: int
    num_iterations: int

    @property
    def generation_batch_size(self) -> int:
        """Completions per generation batch over all processes (TRL's generation_batch_size)."""
        return self.per_device_train_batch_size * self.world_size * self.steps_per_generation

    @property
    def local_batch_size(self) -> int:
        """Completions per generation batch on one process."""
        return self.per_device_train_batch_size * self.steps_per_generation

    @property
    def prompts_per_generation(self) -> int:
        """Prompts per generation batch over all processes (each gets num_generations completions)."""
        return self.generation_batch_size // self.num_generations

    @property
    def prompts_per_process(self) -> int:
        """Prompts each process draws per generation batch: its whole groups' prompts, or (groups spanning
        processes) all of them, the same on every process."""
        if self.groups_span_processes:
            return self.prompts_per_generation
        return self.local_batch_size // self.num_generations

    @property
    def groups_span_processes(self) -> bool:
        """True when a process's share of the generation batch is not a whole number of groups: the
        processes then draw the same prompts and each generates its slice of the groups."""
        return self.local_batch_size % self.num_generations != 0

    @property
    def updates_per_pass(self) -> int:
        """Optimizer updates per pass over a generation batch."""
        return self.steps_per_generation // self.gradient_accumulation_steps

    @property
    def updates_per_generation(self) -> int:
        """Optimizer updates each generation batch makes: num_iterations x steps_per_generation / grad. accum."""
        return self.num_iterations * self.updates_per_pass

    @property
    def rows_per_update(self) -> int:
        """Completions per optimizer update on one process."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def update_rows(self, update: int) -> slice:
        """This process's rows of its generation batch that optimizer update `update` (0-based within the
        generation batch) trains on: the same micro-batches in every pass, in order."""
        part = update % self.updates_per_pass
        return slice(part * self.rows_per_update, (part + 1) * self.rows_per_update)

    def total_steps(self, max_steps: int, num_train_epochs: float, num_prompts: int) -> int:
        """Optimizer updates of the run: max_steps, or (-1) enough generation batches for num_train_epochs
        passes over the prompts (the last one whole), times the updates each makes."""
        if max_steps > 0:
            return max_steps
        generations = max(1, math.ceil(num_train_epochs * num_prompts / self.prompts_per_generation))
        return generations * self.updates_per_generation


def generation_plan(cfg, world_size: int | None = None) -> GenerationPlan:
    """The run's `GenerationPlan` from a GRPO config, checked as TRL's GRPOConfig checks it (a ValueError
    naming the options otherwise). `world_size` defaults to the launch's (WORLD_SIZE)."""
    world = env_world_size() if world_size is None else world_size
    pd, acc, G = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.num_generations
    spg, gbs = cfg.steps_per_generation, cfg.generation_batch_size
    if G < 2:
        raise ValueError(f"'num_generations' must be >= 2, got {G}: GRPO's advantage compares each completion "
                         f"with the other completions of its prompt (TRL requires at least 2 as well)")
    if spg is not None and gbs is not None:
        raise ValueError(f"'generation_batch_size' ({gbs}) and 'steps_per_generation' ({spg}) cannot both be set "
                         f"(as in TRL): generation_batch_size = per_device_train_batch_size x processes x "
                         f"steps_per_generation; set one")
    if gbs is not None:
        if gbs < 1 or gbs % (pd * world):
            raise ValueError(f"'generation_batch_size' ({gbs}) must be a positive multiple of the global batch "
                             f"per_device_train_batch_size x processes ({pd} x {world} = {pd * world}), as in TRL")
        spg = gbs // (pd * world)
    if spg is None:
        spg = acc
    if spg < 1:
        raise ValueError(f"'steps_per_generation' must be >= 1, got {spg}")
    if spg % acc:
        closest = acc * math.ceil(spg / acc)
        raise ValueError(f"'steps_per_generation' ({spg}) must be a multiple of gradient_accumulation_steps ({acc}) "
                         f"in r1kit, so that each optimizer update takes its micro-batches from one generation "
                         f"batch. TRL also accepts it (an update then spans two generation batches); the closest "
                         f"r1kit setting is steps_per_generation: {closest}"
                         + (" (the same updates, generated in one batch)" if spg < acc and acc % spg == 0
                            and cfg.num_iterations == 1 else ""))
    plan = GenerationPlan(world, pd, acc, spg, G, cfg.num_iterations)
    if plan.generation_batch_size % G:
        raise ValueError(
            f"'num_generations' ({G}) must divide the generation batch: generation_batch_size = "
            f"per_device_train_batch_size x processes x steps_per_generation = {pd} x {world} x {spg} = "
            f"{plan.generation_batch_size} completions, which is not whole groups of {G}. As in TRL, only the "
            f"generation batch over all processes must hold whole groups (a group may span processes); change "
            f"num_generations, per_device_train_batch_size or steps_per_generation")
    if plan.groups_span_processes and getattr(cfg, "dynamic_sampling", False):
        raise ValueError(f"'dynamic_sampling' needs whole groups on every process: per_device_train_batch_size x "
                         f"steps_per_generation ({plan.local_batch_size}) must be a multiple of num_generations ({G}) "
                         f"(a group that spans processes cannot be dropped and refilled by one of them)")
    return plan
