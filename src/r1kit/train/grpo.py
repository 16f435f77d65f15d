"""The GRPO loop of DeepSeek-R1 (arXiv 2501.12948, §2.2), readable top to bottom.

Each generation batch: sample prompts -> G completions each (rollout engine) -> rule-based rewards ->
group-relative advantages -> old/reference log-probs; then its optimizer updates, each: micro-batches with
gradient accumulation -> clip -> AdamW + schedule -> metrics -> checkpoint; after its last update, the engine
weight sync. All math lives in `r1kit.algo`, generation in `r1kit.rollout`, rewards in `r1kit.rewards`, the
set-up every trainer shares (runtime, optimizer, resume, tracking, checkpoints) in `r1kit.train.skeleton`.

A *step* is one optimizer update, as in TRL (`max_steps`, `save_steps`, `logging_steps`, metrics.jsonl's
`step`). A generation batch holds `per_device_train_batch_size x steps_per_generation` completions per
device (default steps_per_generation = gradient_accumulation_steps) and makes `num_iterations x
steps_per_generation / gradient_accumulation_steps` updates (`r1kit.train.trl_semantics.GenerationPlan`).
A checkpoint written between two updates of one generation batch carries that batch, so a resume is exact.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r1kit.algo import (MICRO_BATCH_NORMALISED, group_advantages, loss_normalizer, masked_mean, policy_loss,
                        sampler_correction_stats, sampler_correction_weights, sampler_drift, zero_std_groups)
from r1kit.data.datasets import DataError
from r1kit.diagnose.plan import preflight
from r1kit.models.loading import load_model_and_tokenizer
from r1kit.rewards import TrainerState, get_reward, language_mixing_rate, reward_metrics
from r1kit.rewards.reflection import reflection_rate
from r1kit.rollout import RolloutError, SamplingParams, make_engine
from r1kit.rollout.base import ALIASES
from r1kit.sandbox import sandbox_policy
from r1kit.train.ahead import Ahead, CopyingEngine, RolloutCopy
from r1kit.train.batch import Batch, batched_logps, collate, completion_logps, grad_batches, micro_batches
from r1kit.train.checkpoint import CheckpointError
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.rollouts import (PromptSet, Rewarder, Rollouts, generate_group_slice, generate_rollouts,
                                  load_prompts)
from r1kit.train.skeleton import TrainRun
from r1kit.train.trl_semantics import GenerationPlan, generation_plan

log = logging.getLogger("r1kit.grpo")

# Options that may change on resume besides checkpoint.RESUMABLE_CHANGES (they do not change what is trained).
ALSO_RESUMABLE = frozenset({"log_completions", "reward_timeout_s", "max_reward_failure_fraction",
                            "rollout_engine_kwargs",  # e.g. a restarted server's new URL
                            "skip_zero_advantage_backward"})  # the same updates either way


def train(cfg: GRPOConfig, callback=None) -> Path:
    """Run GRPO as `cfg` says; returns the output folder holding the final model.

    `callback(step, model, engine)`, when given, runs after each engine weight sync (the last update of each
    generation batch, and the run's last update); a dict it returns joins that step's metrics (the demo logs
    held-out accuracy this way).
    """
    run = TrainRun(cfg, "grpo", also_resumable=ALSO_RESUMABLE)
    plan = generation_plan(cfg, run.rt.world_size)  # TRL's batch checks, with the launch's processes
    check_fits(cfg, run.rt.world_size)  # `r1kit plan`'s estimate: stop now, with what to change, if it cannot fit

    # ---- model, reference model, prompts, rewards, rollout engine, optimizer ---------------------
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype, device=str(run.device),
                                                tokenizer_name_or_path=cfg.tokenizer_name_or_path, lora=cfg.lora(),
                                                **cfg.loader_options())  # TRL's model keys (trl_args.py)
    ref_model = reference_model(model) if cfg.beta > 0 else None  # copied before sharding
    model = run.prepare_model(model)
    prompts = load_prompts(cfg, tokenizer, cfg.dataset_train_split, cfg.max_prompt_length)
    rewarder = Rewarder(list(cfg.reward_funcs), cfg.reward_weights or [1.0] * len(cfg.reward_funcs),
                        cfg.reward_timeout_s)
    isolation = sandbox_check(rewarder.funcs, cfg.allow_unsandboxed)
    if len(prompts) < plan.prompts_per_generation:
        world = run.rt.world_size
        share = (f"{plan.prompts_per_generation} prompts shared by {world} processes" if plan.groups_span_processes
                 else f"{plan.prompts_per_process} prompts x {world} process(es)")
        raise DataError(f"{cfg.dataset_name}: {len(prompts)} prompts, fewer than one batch ({share})")
    engine = rollout_engine(cfg, run.full_model(), tokenizer)
    sampling = SamplingParams(n=cfg.num_generations, max_new_tokens=cfg.max_completion_length,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                              stop=tuple(cfg.stop_strings or ()))
    total_steps = plan.total_steps(cfg.max_steps, cfg.num_train_epochs, len(prompts))  # optimizer updates
    run.start(tokenizer, num_rows=len(prompts), total_steps=total_steps, fingerprint=prompts.fingerprint,
              data="dataset (or its template)", shared_order=plan.groups_span_processes)
    if cfg.resume_from_checkpoint and (error := sync_engine(run, engine)) is not None:
        raise RolloutError(f"resuming: the checkpoint's weights could not be sent to the rollout engine: {error}")
    correct = corrects_sampler(cfg)
    per_gen = plan.updates_per_generation
    source = Ahead(lambda index, sampler, params: generate_batch(run, engine, params, prompts, rewarder, plan, index,
                                                                 sampler),
                   sampling, plan.prompts_per_process, math.ceil(total_steps / per_gen), ahead=cfg.async_generation)

    current: GenerationBatch | None = None
    with sandbox_policy(allow_unsandboxed=cfg.allow_unsandboxed):  # the code reward's opt-out, for this run only
        try:
            for step in run.steps():
                t_step = time.perf_counter()
                index, update = divmod(step - 1, per_gen)  # generation batch (from 0), update within it
                if current is None or current.index != index + 1:  # 1-5 (async: made while the last batch trained)
                    current = (resumed_generation(run, index + 1, step) if update else
                               new_generation(run, source, plan, index + 1, step, model, ref_model,
                                              tokenizer.pad_token_id, prompts, isolation, correct))
                rows = plan.update_rows(update)
                t_train = time.perf_counter()
                stats = policy_update(run, model, current.batch.select(rows), current.advantages[rows],  # 6.
                                      _rows(current.old_logps, rows), _rows(current.ref_logps, rows), step, correct,
                                      track_correction=per_gen == 1)
                drift = ({} if current.old_logps is not None else
                         sampler_drift_metrics(run.rt, current.batch, stats.pass0_logps))
                last = update == per_gen - 1 or step == run.total_steps  # the engine gets the new weights
                t_wait = time.perf_counter()
                if last:
                    source.settle()  # async: the next batch's generation (with the old weights) must end first
                timings = {"generate": current.seconds, "train": t_wait - t_train,
                           "wait_generation": time.perf_counter() - t_wait}
                current.seconds = 0.0  # the batch's generation time counts in its first update
                sync_error = sync_engine(run, engine) if last else None  # 7. the engine samples from the new policy
                trained = current.batch.select(rows).completion_tokens.sum().item()
                metrics = update_metrics(run, current, stats, timings, trained, t_step) | drift \
                    | stats.correction_metrics(run.rt)  # 8.
                if callback is not None and last and sync_error is None:
                    metrics.update(callback(step, run.full_model(), engine) or {})
                completions, current.completions = current.completions, None  # logged with the batch's first update
                if completions is not None:
                    run.tracker.log_completions(step, completions)
                run.in_flight = current.in_flight if update < per_gen - 1 else None  # what a resume here needs
                run.end_step(step, metrics, {"reward": f"{metrics.get('reward', math.nan):.3f}",
                                             "len": f"{metrics['completions/mean_length']:.0f}"},
                             completions=completions)
                if sync_error is not None:  # this step is trained and recorded: keep it, then stop
                    raise RolloutError(f"step {step}: sending the new weights to the rollout engine failed: "
                                       f"{sync_error}. {run.checkpoint_last_completed(step + 1)}; resume with "
                                       f"resume_from_checkpoint=true once the engine works") from sync_error
        finally:
            source.close()
    return run.finish()


# ---- the phases of a step, in order ---------------------------------------------------------------


@dataclass
class Generation:
    """How a batch's rollouts were made: zero-std groups in the first round (None: groups span processes, so
    it is counted over all of them afterwards), extra dynamic-sampling rounds, generation + scoring time, and
    how many weight syncs old the sampling weights were (async: 1)."""

    frac_zero_std: float | None
    rounds: int
    seconds: float
    staleness: int = 0


@dataclass
class GenerationBatch:
    """One generation batch, ready for its optimizer updates: this process's completions as tensors, their
    advantages, old and reference log-probs, and its metrics (`head`: the rollouts' statistics, logged first in
    every row of its updates; `tail`: counters and how it was made; `sampler`: the engine's drift, when the old
    log-probs were computed). `completions` are the rows to log, until its first update logs them."""

    index: int  # from 1
    batch: Batch
    advantages: torch.Tensor  # [B]
    old_logps: torch.Tensor | None  # [B, T] (several updates per batch: the policy that sampled)
    ref_logps: torch.Tensor | None  # [B, T] (beta > 0)
    head: dict
    tail: dict
    sampler: dict
    seconds: float  # generation + scoring time, until its first update logs it
    completions: list[dict] | None = field(default=None, repr=False)

    _TENSORS = ("input_ids", "attention_mask", "position_ids", "completion_mask", "sampler_logps")

    def in_flight(self) -> dict:
        """Everything its remaining updates need, as plain data and CPU tensors (a checkpoint's in_flight)."""
        cpu = {k: None if getattr(self.batch, k) is None else getattr(self.batch, k).cpu() for k in self._TENSORS}
        return {"index": self.index, "batch": cpu, "prompt_len": self.batch.prompt_len,
                "advantages": self.advantages.cpu(), "seconds": self.seconds,
                **{k: None if getattr(self, k) is None else getattr(self, k).cpu() for k in ("old_logps", "ref_logps")},
                **{k: {m: _plain(v) for m, v in getattr(self, k).items()} for k in ("head", "tail", "sampler")}}

    @classmethod
    def from_in_flight(cls, saved: dict, device) -> "GenerationBatch":
        on = {k: None if v is None else v.to(device) for k, v in saved["batch"].items()}
        batch = Batch(on["input_ids"], on["attention_mask"], on["position_ids"], on["completion_mask"],
                      saved["prompt_len"], on["sampler_logps"])
        return cls(saved["index"], batch, saved["advantages"].to(device),
                   *(None if saved[k] is None else saved[k].to(device) for k in ("old_logps", "ref_logps")),
                   saved["head"], saved["tail"], saved["sampler"], saved["seconds"])


def _plain(value):
    """A metric value as plain Python (a checkpoint loads with weights_only=True)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return value.item() if hasattr(value, "item") else str(value)


def _rows(t: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if t is None else t[rows]


def new_generation(run: TrainRun, source: Ahead, plan: GenerationPlan, index: int, step: int, model, ref_model,
                   pad_id: int, prompts: PromptSet, isolation: str | None, correct: bool) -> GenerationBatch:
    """Steps 1-5 for generation batch `index`, whose first update is `step`: its scored rollouts, advantages,
    tensors, old/reference log-probs and metrics."""
    cfg, rt = run.cfg, run.rt
    run.in_flight = None  # a checkpoint written now (a failure below) holds the completed updates only
    roll, gen = sample_and_score(run, source, index, step)  # 1-3
    if gen.frac_zero_std is None:  # groups span processes: count them over everyone's rewards
        gen.frac_zero_std = zero_std_groups(rt.gather(roll.rewards.total), cfg.num_generations).float().mean().item()
    advantages = compute_advantages(run, roll, cfg).to(run.device)  # 4. [B]
    batch = make_batch(roll, pad_id, cfg).to(run.device)  # 5.
    old_logps, ref_logps = old_and_reference_logps(model, ref_model, batch, cfg, plan.updates_per_generation > 1)
    head, tail = generation_metrics(run, roll, advantages, gen, isolation)
    sampler = {}
    if old_logps is not None:  # several updates: the engine's drift and the correction, once per batch
        sampler = sampler_drift_metrics(rt, batch, old_logps) | (batch_correction_metrics(run, batch, old_logps)
                                                                  if correct else {})
    rows = gather_completion_rows(run, roll, advantages, prompts) if cfg.log_completions else None
    return GenerationBatch(index, batch, advantages, old_logps, ref_logps, head, tail, sampler, gen.seconds, rows)


def resumed_generation(run: TrainRun, index: int, step: int) -> GenerationBatch:
    """Generation batch `index`, part-trained when the checkpoint the run resumed from was written."""
    saved = run.resumed_in_flight()
    if saved is None or saved["index"] != index:
        raise CheckpointError(f"{run.resumed_from}: step {step - 1} ends inside generation batch {index}, but the "
                              f"checkpoint holds no such batch; resume from a checkpoint written by this r1kit")
    return GenerationBatch.from_in_flight(saved, run.device)


def generate_batch(run: TrainRun, engine, sampling: SamplingParams, prompts: PromptSet, rewarder: Rewarder,
                   plan: GenerationPlan, index: int, sampler) -> tuple[Rollouts, Generation]:
    """Steps 1-3 for generation batch `index`: this process's prompts of `sampler`, G completions each (or its
    slice of groups shared with other processes), rewards. Runs in the background thread with
    async_generation, so it only generates and scores: failures are handled by the caller."""
    cfg, rt = run.cfg, run.rt
    sampling.seed = cfg.seed * 1_000_003 + index * rt.world_size + rt.rank  # resume-exact sampling
    rewarder.trainer_state = TrainerState(  # what TRL passes reward functions, in TRL's units (optimizer updates)
        global_step=(index - 1) * plan.updates_per_generation, max_steps=run.total_steps,
        epoch=(index - 1) * plan.prompts_per_generation / len(prompts), num_train_epochs=cfg.num_train_epochs,
        num_input_tokens_seen=run.state.num_tokens, is_world_process_zero=rt.is_main,
        is_local_process_zero=rt.local_rank == 0)
    t0 = time.perf_counter()
    if plan.groups_span_processes:
        roll = generate_group_slice(engine, sampling, sampler, plan.prompts_per_process, prompts, rewarder, rt.rank,
                                    plan.local_batch_size)
        return roll, Generation(None, 0, time.perf_counter() - t0)
    roll, frac_zero_std, rounds = generate_rollouts(engine, sampling, sampler, plan.prompts_per_process, prompts,
                                                    rewarder, cfg.dynamic_sampling, cfg.max_resample_rounds)
    return roll, Generation(frac_zero_std, rounds, time.perf_counter() - t0)


def sample_and_score(run: TrainRun, source: Ahead, index: int, step: int) -> tuple[Rollouts, Generation]:
    """Steps 1-3, generation batch `index`'s scored rollouts (`generate_batch`, now or made ahead). A failing
    engine or reward functions that lose too many rows stop the run after checkpointing the last completed step
    (`step` - 1, the previous batch's last update)."""
    try:
        roll, gen, staleness = source.get(index, run.sampler)
    except RolloutError as e:  # e.g. a vLLM server that stalls or died: keep what was trained, then stop
        raise RolloutError(f"step {step}: the rollout engine failed: {e}. {run.checkpoint_last_completed(step)}; "
                           f"resume with resume_from_checkpoint=true once the engine works") from e
    check_reward_failures(run, roll.rewards.errors, len(roll.completions) * (gen.rounds + 1), step)
    gen.staleness = staleness
    return roll, gen


def sync_engine(run: TrainRun, engine) -> RolloutError | None:
    """Step 7: the engine's weights := the trainer's. An engine that fails (a server that died) is returned,
    not raised, so the caller can record the trained step before stopping."""
    try:
        run.sync_engine(engine)
    except RolloutError as e:
        return e
    return None


def compute_advantages(run: TrainRun, roll: Rollouts, cfg: GRPOConfig) -> torch.Tensor:
    """Step 4, the paper's A_i = (r_i - mean(r)) / std(r) over each group: computed over every process's
    rewards (scale='batch' needs the global std), then this process's rows. [B]"""
    everyone = run.rt.gather(roll.rewards.total)  # [B * world]
    return run.rt.shard(group_advantages(everyone, cfg.num_generations, scale=cfg.scale_rewards))  # [B]


def make_batch(roll: Rollouts, pad_id: int, cfg: GRPOConfig) -> Batch:
    """Step 5: the rollouts as tensors. Every completion enters the loss, or (mask_truncated_completions)
    those not cut at the limit; the engine's log-probs come along when it reported one per token."""
    comps = roll.completions
    keep = [not (cfg.mask_truncated_completions and c.finish_reason == "length") for c in comps]
    reported = all(len(c.logprobs) == len(c.completion_ids) for c in comps)
    return collate([c.prompt_ids for c in comps], [c.completion_ids for c in comps], pad_id, keep,
                   [c.logprobs for c in comps] if reported else None)


def old_and_reference_logps(model, ref_model, batch: Batch, cfg: GRPOConfig, need_old: bool):
    """Step 5: log-probs of the sampling policy (`need_old`: the batch makes several updates, so all but the
    first see a changed policy; with one the ratio is 1) and of the reference model (only when beta > 0).
    Each [B, T] or None."""
    mbs = cfg.per_device_train_batch_size
    old = batched_logps(model, batch, mbs, cfg.temperature) if need_old else None
    if cfg.beta == 0:
        return old, None
    if ref_model is not None:
        return old, batched_logps(ref_model, batch, mbs, cfg.temperature)
    with model.disable_adapter():  # LoRA: the base model is the reference
        return old, batched_logps(model, batch, mbs, cfg.temperature)


@dataclass
class LossStats:
    """The loss statistics of one optimizer update: token-weighted sums over its micro-batches."""

    sums: dict[str, float]  # statistic -> sum over micro-batches of (value x loss tokens)
    tokens: float = 0.0  # loss tokens summed over micro-batches (this rank)
    loss: float = 0.0  # the summed micro-batch losses (this rank)
    grad_norm: float = 0.0  # before clipping
    pass0_logps: torch.Tensor | None = None  # [B, T] the trainer's log-probs when they are the sampling policy's
    correction: dict[str, float] | None = None  # sums and extremes of the importance weights
    rows: int = 0  # completions in the update (this rank)
    forward_only: int = 0  # of which run without a backward pass: their loss is exactly 0

    def add(self, stats: dict, n_tokens: float) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n_tokens
        self.tokens += n_tokens

    def add_correction(self, stats: dict) -> None:
        c = self.correction or {"count": 0.0, "sum": 0.0, "min": math.inf, "max": -math.inf}
        self.correction = {"count": c["count"] + float(stats["count"]), "sum": c["sum"] + float(stats["sum"]),
                           "min": min(c["min"], float(stats["min"])), "max": max(c["max"], float(stats["max"]))}

    def correction_metrics(self, rt) -> dict:
        """TRL's `sampling/importance_sampling_ratio/*`, when the loss was corrected: the weights as applied
        (after truncation or masking), over all ranks. They replace the raw ratios `sampler_drift_metrics`
        logs under those names."""
        if self.correction is None:
            return {}
        c = self.correction
        return {"sampling/importance_sampling_ratio/min": rt.min(c["min"]),
                "sampling/importance_sampling_ratio/mean": rt.sum(c["sum"]) / max(rt.sum(c["count"]), 1.0),
                "sampling/importance_sampling_ratio/max": rt.max(c["max"])}


def policy_update(run: TrainRun, model, batch: Batch, advantages: torch.Tensor, old_logps, ref_logps,
                  step: int, correct: bool = False, track_correction: bool = True) -> LossStats:
    """Step 6, one optimizer update: the policy loss's gradients accumulated over `batch` (this update's rows)
    in micro-batches, normalised over those rows of every rank, then the update. With `correct` (and the
    engine's log-probs) each token's loss is weighted by pi_trainer_old / pi_sampler, truncated or masked
    (`track_correction`: the weights' statistics are recorded). Without `old_logps` the trainer's own log-probs
    are the sampling policy's (ratio 1) and are returned as `pass0_logps`. Rows whose loss is exactly 0
    (advantage 0, `skips_zero_advantage`) go last and run forward only, for the statistics (`micro_batches`)."""
    cfg, rt, mbs = run.cfg, run.rt, run.cfg.per_device_train_batch_size
    norm = rt.sum(loss_normalizer(batch.completion_mask, cfg.loss_type, cfg.max_completion_length,
                                  micro_batch_size=mbs)) / rt.world_size
    out = LossStats({})
    needs_grad = (advantages != 0 if skips_zero_advantage(cfg)
                  else torch.ones_like(advantages, dtype=torch.bool))  # [B] rows whose loss has a gradient
    first_pass = None  # [B, T] without old_logps: the trainer's log-probs, the sampling policy's
    lockstep = int(rt.max(grad_batches(needs_grad, mbs))) if rt.sharded else None  # every rank as many passes
    for rows, grad in micro_batches(needs_grad, mbs, lockstep):
        mb = batch.select(rows)
        with torch.set_grad_enabled(grad):  # the others' loss is exactly 0: forward only, for the statistics
            logps, entropy = completion_logps(model, mb, cfg.temperature, with_entropy=True)  # [b, T]
            old = old_logps[rows] if old_logps is not None else logps.detach()  # one update per batch: ratio 1
            if old_logps is None:  # kept in the batch's row order, whatever order the micro-batches ran in
                if first_pass is None:
                    first_pass = old.new_empty(batch.completion_mask.shape)  # [B, T]
                first_pass[rows] = old  # [b, T]
            weights = sampler_weights(cfg, old, mb) if correct and mb.sampler_logps is not None else None
            if weights is not None and track_correction:
                out.add_correction(sampler_correction_stats(weights, mb.completion_mask,
                                                            cfg.vllm_importance_sampling_mode))
            loss, stats = policy_loss(logps, old, advantages[rows], mb.completion_mask,
                                      loss_type=cfg.loss_type, eps_low=cfg.epsilon, eps_high=cfg.epsilon_high,
                                      beta=cfg.beta, ref_logp=None if ref_logps is None else ref_logps[rows],
                                      kl=cfg.kl_estimator, max_completion_length=cfg.max_completion_length,
                                      num_items=norm, importance_sampling_level=cfg.importance_sampling_level,
                                      sapo_temperature_pos=cfg.sapo_temperature_pos,
                                      sapo_temperature_neg=cfg.sapo_temperature_neg, token_weights=weights)
        if grad:
            loss.backward()
        else:
            out.forward_only += len(mb)
        out.rows += len(mb)
        out.loss += loss.item()
        stats["entropy"] = masked_mean(entropy, mb.completion_mask)
        out.add(stats, mb.completion_mask.sum().item())
    out.grad_norm = run.update(step)
    out.pass0_logps = first_pass
    return out


def skips_zero_advantage(cfg: GRPOConfig) -> bool:
    """Whether completions with advantage 0 may skip their backward: with beta 0 every surrogate's per-token
    loss is A x (something finite), so theirs and its gradient are exactly 0, unless the loss is normalised per
    micro-batch (bnpo's token mean counts their tokens)."""
    return cfg.skip_zero_advantage_backward and cfg.beta == 0 and cfg.loss_type not in MICRO_BATCH_NORMALISED


def batch_correction_metrics(run: TrainRun, batch: Batch, old_logps: torch.Tensor) -> dict:
    """The importance weights' statistics over a whole generation batch (when it makes several updates: the
    weights depend on the sampling policy's log-probs only, so they are the same in every update)."""
    cfg, mbs, stats = run.cfg, run.cfg.per_device_train_batch_size, LossStats({})
    if batch.sampler_logps is None:
        return {}
    for s in range(0, len(batch), mbs):
        mb = batch.select(slice(s, s + mbs))
        stats.add_correction(sampler_correction_stats(sampler_weights(cfg, old_logps[s:s + mbs], mb),
                                                      mb.completion_mask, cfg.vllm_importance_sampling_mode))
    return stats.correction_metrics(run.rt)


def sampler_weights(cfg: GRPOConfig, old: torch.Tensor, mb: Batch) -> torch.Tensor:
    """The importance weights [b, T] of one micro-batch: pi_trainer_old / pi_sampler, truncated or masked as
    vllm_importance_sampling_mode says."""
    return sampler_correction_weights(old, mb.sampler_logps, mb.completion_mask, cfg.vllm_importance_sampling_mode,
                                      clip_max=cfg.vllm_importance_sampling_clip_max,
                                      clip_min=cfg.vllm_importance_sampling_clip_min)  # [b, T]


def sampler_drift_metrics(rt, batch: Batch, trainer_logps: torch.Tensor | None) -> dict:
    """The rollout engine's log-probs against the trainer's for the policy that sampled (TRL's names):
    float noise when the engine follows the trainer, growing when its weights are stale. Over all ranks;
    none when the engine reported no log-probs."""
    if batch.sampler_logps is None or trainer_logps is None:
        return {}
    d = {k: float(v) for k, v in sampler_drift(trainer_logps, batch.sampler_logps, batch.completion_tokens).items()}
    tokens = rt.sum(d["tokens"])
    if tokens == 0:
        return {}
    return {"sampling/sampling_logp_difference/mean": rt.sum(d["abs_diff_sum"]) / tokens,
            "sampling/sampling_logp_difference/max": rt.max(d["abs_diff_max"]),
            "sampling/importance_sampling_ratio/min": rt.min(d["ratio_min"]),
            "sampling/importance_sampling_ratio/mean": rt.sum(d["ratio_sum"]) / tokens,
            "sampling/importance_sampling_ratio/max": rt.max(d["ratio_max"])}


def generation_metrics(run: TrainRun, roll: Rollouts, advantages: torch.Tensor, gen: Generation,
                       isolation: str | None) -> tuple[dict, dict]:
    """Step 8, a generation batch's part: its rollouts' statistics over all processes (TRL's names) and the
    counters and facts of how it was made, logged with each of its updates; counts its tokens and reward
    errors into the run state."""
    cfg, rt, state, comps = run.cfg, run.rt, run.state, roll.completions
    state.num_tokens += int(rt.sum(sum(len(c.completion_ids) for c in comps) + sum(len(c.prompt_ids) for c in comps)))
    everyone = gather_rollout_stats(rt, roll)
    for name, n in everyone["rewards"].errors.items():
        state.reward_errors[name] = state.reward_errors.get(name, 0) + n
    all_lengths = everyone["lengths"]
    head = {
        **reward_metrics(everyone["rewards"]),
        "completions/mean_length": sum(all_lengths) / len(all_lengths),
        "completions/max_length": max(all_lengths),
        "completions/min_length": min(all_lengths),
        "completions/clipped_ratio": everyone["clipped"],
        "completions/language_mixing_rate": rt.mean(language_mixing_rate(roll.texts)),
        "completions/reflection_rate": rt.mean(reflection_rate(roll.texts)),
        "frac_reward_zero_std": rt.mean(gen.frac_zero_std),
        "advantages/abs_mean": rt.mean(advantages.abs().mean().item()),
    }
    tail = {
        **{f"reward_errors/{k}": v for k, v in state.reward_errors.items()},
        "dynamic_sampling/rounds": gen.rounds,
        **({"async/staleness": gen.staleness} if cfg.async_generation else {}),
        **({"sandbox/isolation_level": isolation} if isolation else {}),
    }
    return head, tail


def update_metrics(run: TrainRun, gen: GenerationBatch, stats: LossStats, timings: dict[str, float],
                   trained_tokens: float, t_step: float) -> dict:
    """Step 8: an update's metrics over all processes (TRL's names): its generation batch's statistics, the
    loss statistics, optimizer and run counters, timings, the engine's drift when measured per batch."""
    cfg, rt, state = run.cfg, run.rt, run.state
    step_time = time.perf_counter() - t_step
    tok = max(rt.sum(stats.tokens), 1.0)
    metrics = {
        **gen.head,
        **{k: rt.sum(v) / tok for k, v in stats.sums.items()},  # token-weighted over ranks
        "loss": rt.mean(stats.loss),  # each rank's loss is its share x world_size (global normaliser)
        "grad_norm": stats.grad_norm,
        "learning_rate": run.learning_rate,
        "num_tokens": state.num_tokens,
        "skipped_steps": state.skipped_steps,
        **gen.tail,
        **{f"timing_s/{k}": v for k, v in timings.items()},
        "timing_s/step": step_time,
        "perf/tokens_per_sec": rt.sum(trained_tokens) / step_time,  # completion tokens this update trained on
    }
    if skips_zero_advantage(cfg):  # rows of this update whose loss was exactly 0, run without a backward pass
        metrics["frac_backward_skipped"] = rt.sum(stats.forward_only) / max(rt.sum(stats.rows), 1.0)
    if cfg.beta == 0:
        metrics.pop("kl", None)
    return metrics | gen.sampler


def gather_rollout_stats(rt, roll: Rollouts) -> dict:
    """Every process's rewards (one RewardBatch, rank order), completion lengths and clipped ratio."""
    mine = {"rewards": roll.rewards, "lengths": [len(c.completion_ids) for c in roll.completions],
            "clipped": [c.finish_reason == "length" for c in roll.completions]}
    parts = rt.gather_objects(mine)
    merged = parts[0]["rewards"]
    for p in parts[1:]:
        merged = merged.concat(p["rewards"])
    clipped = sum((p["clipped"] for p in parts), [])
    return {"rewards": merged, "lengths": sum((p["lengths"] for p in parts), []),
            "clipped": sum(clipped) / len(clipped)}


def gather_completion_rows(run: TrainRun, roll: Rollouts, advantages: torch.Tensor, prompts: PromptSet) -> list[dict]:
    """One row per completion of every process (prompt, completion, rewards, advantage) for completions/."""
    per_func = roll.rewards.per_func.tolist()
    mine = [{"row": roll.rows[i], "prompt": prompts.texts[roll.rows[i]], "completion": c.text,
             "finish_reason": c.finish_reason, "length": len(c.completion_ids),
             "reward": float(roll.rewards.total[i]), "advantage": float(advantages[i]),
             **{k: v[i] for k, v in roll.rewards.extra.items()},  # reward functions' log_extra columns
             **{f"rewards/{n}": per_func[i][j] for j, n in enumerate(roll.rewards.names)}}
            for i, c in enumerate(roll.completions)]
    return sum(run.rt.gather_objects(mine), [])


# ---- set-up and failure checks ----------------------------------------------------------------------


def rollout_engine(cfg: GRPOConfig, model, tokenizer):
    """The run's rollout engine. With async_generation an engine that reads the trainer's module directly
    (hf) gets a copy of the policy instead, kept current at every sync (it generates while the module trains)."""
    if cfg.async_generation and ALIASES.get(cfg.rollout_engine, cfg.rollout_engine) == "hf":
        rollout_copy = RolloutCopy(model)
        return CopyingEngine(make_engine("hf", rollout_copy.module, tokenizer, **cfg.rollout_engine_kwargs), rollout_copy)
    return make_engine(cfg.rollout_engine, model, tokenizer, **cfg.rollout_engine_kwargs)


def corrects_sampler(cfg: GRPOConfig) -> bool:
    """Whether the loss is importance-weighted for the sampler: when asked and the samples may come from other
    weights than the trainer's (an engine holding its own copy, or async generation). The synchronous hf
    engine samples from the trainer's own module, where the ratio is 1 up to float noise."""
    own_weights = ALIASES.get(cfg.rollout_engine, cfg.rollout_engine) != "hf" or cfg.async_generation
    on = cfg.vllm_importance_sampling_correction and own_weights
    if on:
        log.info("importance-sampling correction for the sampler: %s, clip [%s, %s]", cfg.vllm_importance_sampling_mode,
                 cfg.vllm_importance_sampling_clip_min, cfg.vllm_importance_sampling_clip_max)
    return on


def reference_model(model):
    """A frozen copy of the initial policy (for LoRA none: the base model with adapters disabled)."""
    if hasattr(model, "disable_adapter"):
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def check_fits(cfg: GRPOConfig, world_size: int) -> None:
    """Before loading anything: the planner's predicted peak memory per device against the device's memory
    (this machine's RAM on CPU); a run that cannot fit stops here with the changes that would make it fit.
    The planner never stops a run it cannot read (a model config it does not know): it warns and goes on."""
    with torch.random.fork_rng(devices=[]):  # the planner may build a tiny model: keep the run's RNG as it was
        try:
            result = preflight(cfg, world_size=world_size)
        except Exception as e:  # noqa: BLE001 - an estimate must not be the reason a run fails
            log.warning("r1kit plan could not estimate this run's memory (%s: %s); not checked", type(e).__name__, e)
            return
    if not result.fits:
        raise ValueError(f"this run does not fit: {result.advice_text} (r1kit plan --config ... shows the "
                         f"whole estimate)")


def sandbox_check(reward_funcs: list[str], allow_unsandboxed: bool) -> str | None:
    """Before any training: rewards that declare `requires_sandbox` (the code reward, or a user's own)
    need a working sandbox, or the explicit opt-out. The opt-out itself reaches those rewards through
    `r1kit.sandbox.sandbox_policy`, which the caller enters for the run."""
    from r1kit.sandbox import needs_sandbox, require_isolation

    if not any(needs_sandbox(get_reward(name)) for name in reward_funcs):
        return None
    return require_isolation(allow_unsandboxed)


class RewardFailureError(ValueError):
    """Reward functions failed on more of a step's rows than `max_reward_failure_fraction` allows."""


def check_reward_failures(run: TrainRun, errors: dict[str, int], n_rows: int, step: int) -> None:
    """Stop the run when a reward function lost too many of this step's rows (`errors[name]` of `n_rows`).

    Before raising, the last completed step is checkpointed (the failing step has not been trained on),
    unless no step has completed yet or that checkpoint already exists. Counts are summed over
    processes, so every rank takes the same decision.
    """
    limit = run.cfg.max_reward_failure_fraction
    if limit is None:
        return
    total = run.rt.sum(n_rows)
    lost = {name: int(run.rt.sum(n)) for name, n in errors.items()}
    bad = {name: n for name, n in lost.items() if n > limit * total}
    if not bad:
        return
    where = run.checkpoint_last_completed(step)
    raise RewardFailureError(
        f"step {step}: reward function(s) failed on too many rows: "
        + ", ".join(f"{name!r} lost {n} of {int(total)} rows" for name, n in bad.items())
        + f" (over max_reward_failure_fraction={limit:g}; the r1kit.rewards warnings name the first bad row "
        f"and the reason). {where}: fix the function(s) and resume with resume_from_checkpoint=true, or raise "
        f"max_reward_failure_fraction (null turns this check off).")
