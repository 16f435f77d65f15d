"""The GRPO loop of DeepSeek-R1 (arXiv 2501.12948, §2.2), readable top to bottom.

Each step: sample prompts -> G completions each (rollout engine) -> rule-based rewards ->
group-relative advantages -> old/reference log-probs -> mu passes of micro-batches with gradient
accumulation -> clip -> AdamW + schedule -> engine weight sync -> metrics -> checkpoint.
All math lives in `r1kit.algo`, generation in `r1kit.rollout`, rewards in `r1kit.rewards`.

One *step* is one generation batch (`per_device_train_batch_size x gradient_accumulation_steps`
completions per device); with `num_iterations` (mu) > 1 it makes mu optimizer updates.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from r1kit.algo import group_advantages, loss_normalizer, masked_mean, policy_loss, zero_std_groups
from r1kit.config import to_dict
from r1kit.data.datasets import DataError, load_dataset_rows
from r1kit.data.templates import is_conversation, render_prompt
from r1kit.rewards.reflection import reflection_rate
from r1kit.models.loading import enable_activation_checkpointing, load_model_and_tokenizer, save_model
from r1kit.rewards import get_reward, language_mixing_rate, reward_metrics, score_completions
from r1kit.rollout import RolloutError, SamplingParams, make_engine
from r1kit.train.batch import batched_logps, collate, completion_logps
from r1kit.train.optim import apply_update, make_optimizer
from r1kit.train.checkpoint import STATE_FILE, check_resume, find_checkpoint, load_checkpoint, save_checkpoint
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.sampler import PromptSampler
from r1kit.train.tracking import Tracker
from r1kit.utils.dist import Runtime

log = logging.getLogger("r1kit.grpo")

# Options that may change on resume besides checkpoint.RESUMABLE_CHANGES (they do not change what is trained).
ALSO_RESUMABLE = frozenset({"log_completions", "reward_timeout_s", "max_reward_failure_fraction"})



def train(cfg: GRPOConfig, callback=None) -> Path:
    """Run GRPO as `cfg` says; returns the output folder holding the final model.

    `callback(step, model, engine)`, when given, runs after each step's update and weight sync; a
    dict it returns joins that step's metrics (the demo logs held-out accuracy this way).
    """
    rt = Runtime.create(strategy=cfg.distributed_strategy)
    torch.manual_seed(cfg.seed + rt.rank)
    random.seed(cfg.seed + rt.rank)
    out = Path(cfg.output_dir)

    # ---- model, tokenizer, reference model, data, rewards -------------------------------------
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype, device=str(rt.device),
                                                tokenizer_name_or_path=cfg.tokenizer_name_or_path, lora=cfg.lora())
    model.train()
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    ref_model = reference_model(model) if cfg.beta > 0 else None
    model = rt.prepare_model(model)  # rank 0's weights on every rank; fsdp2: sharded
    data = prepare_data(cfg, tokenizer)
    reward_funcs = list(cfg.reward_funcs)  # names (as metrics keys); resolved now to fail early
    for name in reward_funcs:
        get_reward(name)
    isolation = sandbox_check(reward_funcs, cfg.allow_unsandboxed)
    weights = cfg.reward_weights or [1.0] * len(reward_funcs)
    prompts_per_step = cfg.batch_size // cfg.num_generations
    if len(data["prompt_ids"]) < prompts_per_step * rt.world_size:
        raise DataError(f"{cfg.dataset_name}: {len(data['prompt_ids'])} prompts, fewer than one batch "
                        f"({prompts_per_step} prompts x {rt.world_size} process(es))")

    # ---- engine, optimizer, schedule, data order ----------------------------------------------
    engine = make_engine(cfg.rollout_engine, rt.rollout_model(model), tokenizer, **cfg.rollout_engine_kwargs)
    sampling = SamplingParams(n=cfg.num_generations, max_new_tokens=cfg.max_completion_length,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                              stop=tuple(cfg.stop_strings or ()))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(
        cfg.num_train_epochs * len(data["prompt_ids"]) / (prompts_per_step * rt.world_size)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, cfg, total_steps * cfg.num_iterations)
    sampler = PromptSampler(len(data["prompt_ids"]), cfg.seed, rt.rank, rt.world_size)
    state = {"step": 0, "num_tokens": 0, "skipped_steps": 0, "reward_errors": {}, "sampler": sampler.state_dict()}

    if cfg.resume_from_checkpoint:
        rt.check_resumable()
        ckpt = find_checkpoint(cfg.resume_from_checkpoint, out)
        state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        check_resume(state, to_dict(cfg), data["fingerprint"], ckpt, "dataset (or its template)", ALSO_RESUMABLE)
        sampler.load_state_dict(state["sampler"])
        rt.sync_engine(engine, model)
        log.info("resumed from %s at step %d", ckpt, state["step"])
    tracker = Tracker(str(out), cfg.report_to, to_dict(cfg), enabled=rt.is_main,
                      resume_step=state["step"] if cfg.resume_from_checkpoint else None)

    def checkpoint(step: int):
        return save_checkpoint(out, step, model=rt.unwrap(model), tokenizer=tokenizer, optimizer=optimizer,
                               scheduler=scheduler, save_total_limit=cfg.save_total_limit,
                               trainer_state=dict(state, config=to_dict(cfg), data_fingerprint=data["fingerprint"]))

    bar = tqdm(total=total_steps, initial=state["step"], disable=cfg.disable_tqdm or not rt.is_main,
               desc="grpo", dynamic_ncols=True)

    for step in range(state["step"] + 1, total_steps + 1):
        t_step = time.perf_counter()

        # ---- 1-3. sample prompts, generate G completions each, score them -----------------------
        sampling.seed = cfg.seed * 1_000_003 + step * rt.world_size + rt.rank  # resume-exact sampling
        t0 = time.perf_counter()
        try:
            roll, first_zero_std, rounds = generate_batch(engine, sampling, sampler, prompts_per_step, data,
                                                          reward_funcs, weights, cfg)
        except RolloutError as e:  # e.g. a vLLM server that stalls or died: keep what was trained, then stop
            where = checkpoint_last_completed(step, rt, out, lambda: checkpoint(state["step"]))
            raise RolloutError(f"step {step}: the rollout engine failed: {e}. {where}; resume with "
                               f"resume_from_checkpoint=true once the engine works") from e
        timing_generate = time.perf_counter() - t0
        check_reward_failures(roll["rewards"].errors, cfg.batch_size * (rounds + 1), step, cfg, rt, out,
                              lambda: checkpoint(state["step"]))
        comps, rewards = roll["completions"], roll["rewards"]

        # ---- 4. group-relative advantages (the paper's A_i = (r_i - mean) / std) ------------------
        # over all processes' rewards (scale='batch' needs the global std), then this process's rows
        advantages = rt.shard(group_advantages(rt.gather(rewards.total), cfg.num_generations,
                                               scale=cfg.scale_rewards))  # [B]

        # ---- 5. batch tensors; old log-probs (mu > 1) and reference log-probs (beta > 0) ---------
        keep = [not (cfg.mask_truncated_completions and c.finish_reason == "length") for c in comps]
        batch = collate([c.prompt_ids for c in comps], [c.completion_ids for c in comps],
                        tokenizer.pad_token_id, keep).to(rt.device)
        advantages = advantages.to(rt.device)
        mbs = cfg.per_device_train_batch_size
        old_logps = batched_logps(model, batch, mbs, cfg.temperature) if cfg.num_iterations > 1 else None
        ref_logps = reference_logps(model, ref_model, batch, mbs, cfg.temperature) if cfg.beta > 0 else None
        norm = rt.sum(loss_normalizer(batch.completion_mask, cfg.loss_type, cfg.max_completion_length)) / rt.world_size

        # ---- 6. mu passes of micro-batches, gradient accumulation, clip, AdamW --------------------
        t0 = time.perf_counter()
        totals: dict[str, float] = {}
        for _ in range(cfg.num_iterations):
            loss_sum = 0.0
            for s in range(0, len(batch), mbs):
                sl = slice(s, s + mbs)
                mb = batch.select(sl)
                logps, entropy = completion_logps(model, mb, cfg.temperature, with_entropy=True)  # [b, T]
                old = old_logps[sl] if old_logps is not None else logps.detach()  # mu = 1: ratio is 1
                loss, stats = policy_loss(logps, old, advantages[sl], mb.completion_mask,
                                          loss_type=cfg.loss_type, eps_low=cfg.epsilon, eps_high=cfg.epsilon_high,
                                          beta=cfg.beta, ref_logp=None if ref_logps is None else ref_logps[sl],
                                          kl=cfg.kl_estimator, max_completion_length=cfg.max_completion_length,
                                          num_items=norm)
                loss.backward()
                loss_sum += loss.item()
                n_tok = mb.completion_mask.sum().item()
                stats["entropy"] = masked_mean(entropy, mb.completion_mask)
                for k, v in stats.items():  # token-weighted means over the whole batch
                    totals[k] = totals.get(k, 0.0) + float(v) * n_tok
                totals["_tokens"] = totals.get("_tokens", 0.0) + n_tok
            rt.all_reduce_grads(model)
            grad_norm = rt.clip_grad_norm(params, cfg.max_grad_norm)
            if not apply_update(optimizer, scheduler, grad_norm, step):
                state["skipped_steps"] += 1
            totals["loss"] = totals.get("loss", 0.0) + loss_sum / cfg.num_iterations
        rt.sync_engine(engine, model)  # ---- 7. the engine samples from the new policy next step
        timing_train = time.perf_counter() - t0

        # ---- 8. metrics over all processes (rank 0 logs them), completions, checkpoint ----------
        lengths = [len(c.completion_ids) for c in comps]
        n_gen = rt.sum(sum(lengths))
        state["num_tokens"] += int(rt.sum(sum(lengths) + sum(len(c.prompt_ids) for c in comps)))
        everyone = gather_step(rt, comps, rewards)  # every process's rewards, lengths, finish reasons
        for name, n in everyone["rewards"].errors.items():
            state["reward_errors"][name] = state["reward_errors"].get(name, 0) + n
        step_time = time.perf_counter() - t_step
        tok = max(rt.sum(totals.pop("_tokens")), 1.0)
        all_lengths = everyone["lengths"]
        metrics = {
            **reward_metrics(everyone["rewards"]),
            "completions/mean_length": sum(all_lengths) / len(all_lengths),
            "completions/max_length": max(all_lengths),
            "completions/min_length": min(all_lengths),
            "completions/clipped_ratio": everyone["clipped"],
            "completions/language_mixing_rate": rt.mean(language_mixing_rate([c.text for c in comps])),
            "completions/reflection_rate": rt.mean(reflection_rate([c.text for c in comps])),
            "frac_reward_zero_std": rt.mean(first_zero_std),
            "advantages/abs_mean": rt.mean(advantages.abs().mean().item()),
            **{k: rt.sum(v) / tok for k, v in totals.items() if k != "loss"},  # token-weighted over ranks
            "loss": rt.mean(totals["loss"]),  # each rank's loss is its share x world_size (global normaliser)
            "grad_norm": grad_norm,
            "learning_rate": scheduler.get_last_lr()[0],
            "num_tokens": state["num_tokens"],
            "skipped_steps": state["skipped_steps"],
            **{f"reward_errors/{k}": v for k, v in state["reward_errors"].items()},
            "dynamic_sampling/rounds": rounds,
            **({"sandbox/isolation_level": isolation} if isolation else {}),
            "timing_s/generate": timing_generate,
            "timing_s/train": timing_train,
            "timing_s/step": step_time,
            "perf/tokens_per_sec": n_gen / step_time,
        }
        if cfg.beta == 0:
            metrics.pop("kl", None)
        if callback is not None:
            metrics.update(callback(step, rt.unwrap(model), engine) or {})
        if step % cfg.logging_steps == 0 or step == total_steps:
            tracker.log(step, metrics)
        if cfg.log_completions:
            rows = sum(rt.gather_objects(completion_rows(comps, roll, rewards, advantages, data["texts"])), [])
            tracker.log_completions(step, rows)
        bar.set_postfix(reward=f"{metrics.get('reward', math.nan):.3f}", len=f"{metrics['completions/mean_length']:.0f}")
        bar.update(1)
        state.update(step=step, sampler=sampler.state_dict())
        if (cfg.save_steps > 0 and step % cfg.save_steps == 0) or step == total_steps:
            if rt.is_main:
                checkpoint(step)
            rt.barrier()

    bar.close()
    tracker.close()
    if rt.is_main:
        save_model(rt.unwrap(model), tokenizer, out)
        (out / "r1kit_config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    rt.barrier()
    return out


# ---- the pieces the loop calls ----------------------------------------------------------------


def prepare_data(cfg: GRPOConfig, tokenizer) -> dict:
    """Load and validate the dataset, render the template, tokenize, check prompt lengths."""
    ds = load_dataset_rows(cfg.dataset_name, cfg.dataset_train_split, prompt_column=cfg.dataset_prompt_column,
                           answer_column=cfg.dataset_answer_column, dataset_config=cfg.dataset_config,
                           num_rows=cfg.dataset_num_rows, seed=cfg.seed)
    prompts = ds["prompt"]
    check_chat_template(cfg, tokenizer)
    texts = [render_prompt(p, tokenizer, cfg.template, cfg.system_prompt) for p in prompts]
    # The chat template writes its own special tokens; a plain string gets the tokenizer's (e.g. BOS).
    prompt_ids = tokenizer(texts, add_special_tokens=cfg.template != "chat").input_ids
    too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) > cfg.max_prompt_length]
    if too_long:
        i = too_long[0]
        raise DataError(f"{cfg.dataset_name}: row {i}: 'prompt' is {len(prompt_ids[i])} tokens after the "
                        f"'{cfg.template}' template, over max_prompt_length={cfg.max_prompt_length} "
                        f"({len(too_long)} row(s) in all)")
    columns = {k: ds[k] for k in ds.column_names if k != "prompt"}
    fingerprint = hashlib.sha256(json.dumps([texts, columns["solution"]], default=str).encode()).hexdigest()[:16]
    return {"prompts": prompts, "texts": texts, "prompt_ids": prompt_ids, "columns": columns,
            "conversational": is_conversation(prompts[0]), "fingerprint": fingerprint}


def rollout_and_score(engine, sampling, rows, data, reward_funcs, weights, cfg) -> dict:
    """Generate `sampling.n` completions for each row and score them with every reward function."""
    comps = engine.generate([data["prompt_ids"][r] for r in rows], sampling)
    row_of = [rows[c.prompt_index] for c in comps]
    texts = [c.text for c in comps]
    completions = [[{"role": "assistant", "content": t}] for t in texts] if data["conversational"] else texts
    columns = {k: [v[r] for r in row_of] for k, v in data["columns"].items()}
    columns["completion_ids"] = [c.completion_ids for c in comps]
    rewards = score_completions(reward_funcs, weights, [data["prompts"][r] for r in row_of], completions, columns,
                                timeout_s=cfg.reward_timeout_s)
    return {"completions": comps, "rows": row_of, "rewards": rewards}


def gather_step(rt, comps, rewards) -> dict:
    """Every process's rewards (one RewardBatch, rank order), completion lengths and clipped ratio."""
    mine = {"rewards": rewards, "lengths": [len(c.completion_ids) for c in comps],
            "clipped": [c.finish_reason == "length" for c in comps]}
    parts = rt.gather_objects(mine)
    merged = parts[0]["rewards"]
    for p in parts[1:]:
        merged = merged.concat(p["rewards"])
    clipped = sum((p["clipped"] for p in parts), [])
    return {"rewards": merged, "lengths": sum((p["lengths"] for p in parts), []),
            "clipped": sum(clipped) / len(clipped)}


def generate_batch(engine, sampling, sampler, prompts_per_step: int, data, reward_funcs, weights, cfg):
    """One step's scored completions; with DAPO's dynamic sampling, groups whose rewards all agree are
    replaced by groups of new prompts (at most `max_resample_rounds` extra rounds).

    Returns (rollouts, fraction of zero-std groups in the first round, extra rounds made)."""
    roll = rollout_and_score(engine, sampling, sampler.next(prompts_per_step), data, reward_funcs, weights, cfg)
    first_zero_std = zero_std_groups(roll["rewards"].total, cfg.num_generations).float().mean().item()
    rounds = 0
    while cfg.dynamic_sampling and rounds < cfg.max_resample_rounds and zero_std_groups(
            roll["rewards"].total, cfg.num_generations).any():
        rounds += 1
        extra = rollout_and_score(engine, sampling, sampler.next(prompts_per_step), data, reward_funcs, weights, cfg)
        roll = refill(roll, extra, prompts_per_step, cfg.num_generations)
    return roll, first_zero_std, rounds


def refill(roll: dict, extra: dict, num_prompts: int, group_size: int) -> dict:
    """Dynamic sampling: keep groups with varied rewards first, topped up with others, to `num_prompts`."""
    merged = {"completions": roll["completions"] + extra["completions"], "rows": roll["rows"] + extra["rows"],
              "rewards": roll["rewards"].concat(extra["rewards"])}
    flat = zero_std_groups(merged["rewards"].total, group_size).tolist()
    order = [g for g, z in enumerate(flat) if not z] + [g for g, z in enumerate(flat) if z]
    idx = [g * group_size + j for g in order[:num_prompts] for j in range(group_size)]
    return {"completions": [merged["completions"][i] for i in idx], "rows": [merged["rows"][i] for i in idx],
            "rewards": merged["rewards"].select(idx)}


def reference_model(model):
    """A frozen copy of the initial policy (for LoRA, the base model with adapters disabled)."""
    if hasattr(model, "disable_adapter"):
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def reference_logps(model, ref_model, batch, micro_batch_size: int, temperature: float) -> torch.Tensor:
    if ref_model is not None:
        return batched_logps(ref_model, batch, micro_batch_size, temperature)
    with model.disable_adapter():
        return batched_logps(model, batch, micro_batch_size, temperature)


def completion_rows(comps, roll, rewards, advantages, prompt_texts) -> list[dict]:
    per_func = rewards.per_func.tolist()
    return [{"row": roll["rows"][i], "prompt": prompt_texts[roll["rows"][i]], "completion": c.text,
             "finish_reason": c.finish_reason, "length": len(c.completion_ids),
             "reward": float(rewards.total[i]), "advantage": float(advantages[i]),
             **{f"rewards/{n}": per_func[i][j] for j, n in enumerate(rewards.names)}}
            for i, c in enumerate(comps)]


def sandbox_check(reward_funcs: list[str], allow_unsandboxed: bool) -> str | None:
    """Before any training: code rewards need a working sandbox (or an explicit opt-out)."""
    def runs_code(fn) -> bool:
        return (getattr(fn, "__module__", None) or type(fn).__module__) == "r1kit.rewards.code"

    if not any(runs_code(get_reward(name)) for name in reward_funcs):
        return None
    from r1kit.sandbox import require_isolation

    if allow_unsandboxed:
        os.environ["R1KIT_ALLOW_UNSANDBOXED"] = "1"
    return require_isolation(allow_unsandboxed)


def check_chat_template(cfg: GRPOConfig, tokenizer) -> None:
    """Before any training: `template: chat` needs the tokenizer's chat template; name the model that lacks it."""
    if cfg.template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{cfg.tokenizer_name_or_path or cfg.model_name_or_path}: template is 'chat' but this "
                        f"tokenizer has no chat template; use template: r1_zero, or a model (or "
                        f"tokenizer_name_or_path) with a chat template")


class RewardFailureError(ValueError):
    """Reward functions failed on more of a step's rows than `max_reward_failure_fraction` allows."""


def check_reward_failures(errors: dict[str, int], n_rows: int, step: int, cfg: GRPOConfig, rt, out: Path,
                          save) -> None:
    """Stop the run when a reward function lost too many of this step's rows (`errors[name]` of `n_rows`).

    Before raising, `save()` checkpoints the last completed step (the failing step has not been trained
    on), unless no step has completed yet or that checkpoint already exists. Counts are summed over
    processes, so every rank takes the same decision.
    """
    limit = cfg.max_reward_failure_fraction
    if limit is None:
        return
    total = rt.sum(n_rows)
    lost = {name: int(rt.sum(n)) for name, n in errors.items()}
    bad = {name: n for name, n in lost.items() if n > limit * total}
    if not bad:
        return
    where = checkpoint_last_completed(step, rt, out, save)
    raise RewardFailureError(
        f"step {step}: reward function(s) failed on too many rows: "
        + ", ".join(f"{name!r} lost {n} of {int(total)} rows" for name, n in bad.items())
        + f" (over max_reward_failure_fraction={limit:g}; the r1kit.rewards warnings name the first bad row "
        f"and the reason). {where}: fix the function(s) and resume with resume_from_checkpoint=true, or raise "
        f"max_reward_failure_fraction (null turns this check off).")


def checkpoint_last_completed(step: int, rt, out: Path, save) -> str:
    """Before stopping at `step`: make sure the last completed step is checkpointed; say where it is."""
    done = step - 1
    ckpt = out / f"checkpoint-{done}"
    if rt.is_main and done > 0 and not (ckpt / STATE_FILE).is_file():
        save()
    rt.barrier()
    return f"{ckpt} holds step {done}" if done > 0 else "no step had completed, so there was nothing to checkpoint"
