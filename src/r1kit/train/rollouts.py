"""What flows through a GRPO step before the gradient: prompts, scored rollouts, and how they are made.

`PromptSet` is the dataset rendered and tokenized once; `Rollouts` is one generation batch's scored
completions, grouped (the `num_generations` completions of a prompt are consecutive; when groups span
processes, a process holds its slice of the grouped batch); `Rewarder` scores them with TRL-style reward
functions; `generate_rollouts` makes a process's rollouts of whole groups, with DAPO's dynamic sampling, and
`generate_group_slice` its slice of groups shared with other processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace

from r1kit.algo import zero_std_groups
from r1kit.data.datasets import DataError, load_dataset_rows
from r1kit.data.templates import is_conversation, tokenize_prompts
from r1kit.rewards import RewardBatch, get_reward, score_completions
from r1kit.rollout import Completion, SamplingParams
from r1kit.train.sampler import PromptSampler

log = logging.getLogger("r1kit.grpo")


@dataclass
class PromptSet:
    """The training prompts, rendered with the template and tokenized before training starts."""

    prompts: list  # the dataset's prompts: strings or chat messages                     [R]
    texts: list[str]  # after the template                                                [R]
    prompt_ids: list[list[int]]  # tokenized texts                                        [R][P_r]
    columns: dict[str, list]  # every other dataset column (solution, ...)              {name: [R]}
    conversational: bool  # prompts are chat messages: completions are passed as messages too
    fingerprint: str  # hash of texts + solutions: a resume on other data is refused

    def __len__(self) -> int:
        return len(self.prompt_ids)


@dataclass
class Rollouts:
    """A generation batch's completions and their rewards, grouped: completions g*G .. g*G+G-1 share a prompt
    (a process whose groups span processes holds a slice of the grouped batch of all processes)."""

    completions: list[Completion]  # [N]
    rows: list[int]  # the PromptSet row each completion answers                          [N]
    rewards: RewardBatch  # per function and weighted total                              [N, F], [N]

    def concat(self, other: "Rollouts") -> "Rollouts":
        return Rollouts(self.completions + other.completions, self.rows + other.rows,
                        self.rewards.concat(other.rewards))

    def select(self, idx: list[int]) -> "Rollouts":
        return Rollouts([self.completions[i] for i in idx], [self.rows[i] for i in idx], self.rewards.select(idx))

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.completions]


@dataclass
class Rewarder:
    """The run's reward functions (names or dotted paths, resolved at construction so a typo fails
    before training), their weights, and the per-row deadline. `trainer_state` (an
    `r1kit.rewards.TrainerState`, or any object with TRL's fields) is what the functions receive as
    `trainer_state` when `score` is given none: the trainer sets it before each step's rollouts."""

    funcs: list[str]
    weights: list[float]
    timeout_s: float | None = None
    metric_names: list[str] | None = None  # what to call each function's scores (default: the registry's)
    trainer_state: object | None = None

    def __post_init__(self):
        for name in self.funcs:
            get_reward(name)

    def score(self, prompts: PromptSet, comps: list[Completion], rows: list[int],
              trainer_state: object | None = None) -> RewardBatch:
        """Call every function as TRL does, keywords only: prompts, completions (messages for chat data),
        completion_ids, trainer_state (this argument, else `self.trainer_state`, else step 0), log_extra,
        log_metric, and the dataset columns of each completion's row. What they log is on the batch
        (`logged`, `extra`)."""
        texts = [c.text for c in comps]
        completions = [[{"role": "assistant", "content": t}] for t in texts] if prompts.conversational else texts
        columns = {k: [v[r] for r in rows] for k, v in prompts.columns.items()}
        columns["completion_ids"] = [c.completion_ids for c in comps]
        state = trainer_state if trainer_state is not None else self.trainer_state
        return score_completions(self.funcs, self.weights, [prompts.prompts[r] for r in rows], completions, columns,
                                 names=self.metric_names, timeout_s=self.timeout_s, trainer_state=state)


def load_prompts(cfg, tokenizer, split: str, max_prompt_length: int | None = None) -> PromptSet:
    """Load and validate `split` of the dataset, render the template, tokenize; prompts over
    `max_prompt_length` tokens keep their last `max_prompt_length` tokens (TRL's left truncation), with one
    warning that counts them.

    `cfg` is a config with the dataset_*, template, system_prompt and model fields of GRPOConfig (or
    SampleConfig)."""
    ds = load_dataset_rows(cfg.dataset_name, split, prompt_column=cfg.dataset_prompt_column,
                           answer_column=cfg.dataset_answer_column, dataset_config=cfg.dataset_config,
                           num_rows=cfg.dataset_num_rows, seed=cfg.seed)
    prompts = ds["prompt"]
    check_chat_template(cfg, tokenizer)
    texts, prompt_ids = tokenize_prompts(prompts, tokenizer, cfg.template, cfg.system_prompt)
    too_long = [i for i, ids in enumerate(prompt_ids) if max_prompt_length and len(ids) > max_prompt_length]
    if too_long:
        i = too_long[0]
        log.warning("%s: %d of %d prompts are longer than max_prompt_length=%d tokens after the '%s' template (the "
                    "longest %d, first row %d): each keeps its last %d tokens (cut from the left, as TRL did); raise "
                    "max_prompt_length to keep them whole", cfg.dataset_name, len(too_long), len(prompt_ids),
                    max_prompt_length, cfg.template, max(len(prompt_ids[j]) for j in too_long), i, max_prompt_length)
        for j in too_long:
            prompt_ids[j] = prompt_ids[j][-max_prompt_length:]
            texts[j] = tokenizer.decode(prompt_ids[j])
    columns = {k: ds[k] for k in ds.column_names if k != "prompt"}
    fingerprint = hashlib.sha256(json.dumps([texts, columns.get("solution")], default=str).encode()).hexdigest()[:16]
    return PromptSet(prompts, texts, prompt_ids, columns, is_conversation(prompts[0]), fingerprint)


def check_chat_template(cfg, tokenizer) -> None:
    """Before any training: `template: chat` needs the tokenizer's chat template; name the model that lacks it."""
    if cfg.template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{cfg.tokenizer_name_or_path or cfg.model_name_or_path}: template is 'chat' but this "
                        f"tokenizer has no chat template; use template: r1_zero, or a model (or "
                        f"tokenizer_name_or_path) with a chat template")


def rollout_and_score(engine, sampling: SamplingParams, rows: list[int], prompts: PromptSet,
                      rewarder: Rewarder) -> Rollouts:
    """`sampling.n` completions for each of `rows`, scored by every reward function."""
    comps = engine.generate([prompts.prompt_ids[r] for r in rows], sampling)
    row_of = [rows[c.prompt_index] for c in comps]
    return Rollouts(comps, row_of, rewarder.score(prompts, comps, row_of))


def generate_rollouts(engine, sampling: SamplingParams, sampler: PromptSampler, num_prompts: int,
                      prompts: PromptSet, rewarder: Rewarder, dynamic_sampling: bool = False,
                      max_resample_rounds: int = 0) -> tuple[Rollouts, float, int]:
    """One step's scored rollouts for `num_prompts` prompts. With DAPO's dynamic sampling, groups whose
    rewards all agree are replaced by groups of new prompts (at most `max_resample_rounds` extra rounds).

    Returns (rollouts, fraction of zero-std groups in the first round, extra rounds made)."""
    group = sampling.n
    roll = rollout_and_score(engine, sampling, sampler.next(num_prompts), prompts, rewarder)
    first_zero_std = zero_std_groups(roll.rewards.total, group).float().mean().item()
    rounds = 0
    while dynamic_sampling and rounds < max_resample_rounds and zero_std_groups(roll.rewards.total, group).any():
        rounds += 1
        extra = rollout_and_score(engine, sampling, sampler.next(num_prompts), prompts, rewarder)
        roll = refill(roll, extra, num_prompts, group)
    return roll, first_zero_std, rounds


def generate_group_slice(engine, sampling: SamplingParams, sampler: PromptSampler, num_prompts: int,
                         prompts: PromptSet, rewarder: Rewarder, rank: int, num_rows: int) -> Rollouts:
    """This process's slice of a generation batch whose groups span processes: every process draws the same
    `num_prompts` prompts (a sampler shared by all), lays out their groups (each prompt `sampling.n` times,
    consecutive) and generates one completion for each of the `num_rows` rows from `rank * num_rows` on."""
    rows = [r for r in sampler.next(num_prompts) for _ in range(sampling.n)]
    mine = rows[rank * num_rows:(rank + 1) * num_rows]
    return rollout_and_score(engine, replace(sampling, n=1), mine, prompts, rewarder)


def refill(roll: Rollouts, extra: Rollouts, num_prompts: int, group_size: int) -> Rollouts:
    """Dynamic sampling: `num_prompts` whole groups of `roll` + `extra`, those with varied rewards first
    (in their order), topped up with zero-std groups (in their order)."""
    merged = roll.concat(extra)
    flat = zero_std_groups(merged.rewards.total, group_size).tolist()  # [groups]
    order = [g for g, z in enumerate(flat) if not z] + [g for g, z in enumerate(flat) if z]
    return merged.select([g * group_size + j for g in order[:num_prompts] for j in range(group_size)])
