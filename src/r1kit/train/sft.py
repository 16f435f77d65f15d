"""Supervised fine-tuning: DeepSeek-R1's cold start, its rejection-sampling SFT, and distillation.

Each step: the next `per_device_train_batch_size x gradient_accumulation_steps` rows (examples, or
packed rows of several examples) in a seeded per-epoch order -> micro-batches -> token log-probs of
the targets -> loss = -sum(log p) over the loss tokens of the WHOLE step / their number (so gradient
accumulation gives exactly the gradient of one big batch) -> clip -> AdamW + schedule -> metrics ->
checkpoint. The output contract is `r1kit grpo`'s: metrics.jsonl, atomic checkpoints, exact resume,
a final save_pretrained folder.

Packing: examples share a row with position ids restarting at 0 at each example; the model gets no
2D attention mask and no KV cache. transformers 5 then builds a block-diagonal causal mask from the
position ids for its mask-based attention (eager, sdpa, flex; flash-attention uses them as sequence
boundaries), so attention does not cross examples: tests/test_sft.py checks that packed per-token
log-probs equal unpacked ones on the tiny Qwen2. A model whose own code ignores position-id packing
would attend across example boundaries; packing is then an approximation (loss masks stay exact).
Unpacked rows use the same path (right padding is a segment of its own that nothing real attends to).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from r1kit.algo import selective_log_softmax
from r1kit.config import to_dict
from r1kit.data.datasets import DataError
from r1kit.data.sft_data import SFTBatch, build_examples, collate, fingerprint, load_sft_rows, pack_examples
from r1kit.models.loading import enable_activation_checkpointing, load_model_and_tokenizer, save_model
from r1kit.train.optim import apply_update, make_optimizer
from r1kit.train.checkpoint import check_resume, find_checkpoint, load_checkpoint, save_checkpoint
from r1kit.train.sampler import PromptSampler
from r1kit.train.sft_config import SFTConfig
from r1kit.train.tracking import Tracker
from r1kit.utils.dist import Runtime

log = logging.getLogger("r1kit.sft")



def train(cfg: SFTConfig) -> Path:
    """Run SFT as `cfg` says; returns the output folder holding the final model."""
    rt = Runtime.create()
    torch.manual_seed(cfg.seed + rt.rank)
    random.seed(cfg.seed + rt.rank)
    out = Path(cfg.output_dir)

    # ---- model, tokenizer, data -----------------------------------------------------------------
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype, device=str(rt.device),
                                                tokenizer_name_or_path=cfg.tokenizer_name_or_path, lora=cfg.lora())
    model.train()
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    data = prepare_data(cfg, tokenizer)
    rows = data["rows"]  # each: a list of one example (or several, packed)
    if len(rows) < rt.world_size:
        raise DataError(f"{cfg.dataset_name}: {len(rows)} rows, fewer than the {rt.world_size} processes")

    # ---- optimizer, schedule, data order ----------------------------------------------------------
    rows_per_step = cfg.batch_size * rt.world_size
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(
        1, math.ceil(cfg.num_train_epochs * len(rows) / rows_per_step))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, cfg, total_steps)
    sampler = PromptSampler(len(rows), cfg.seed, rt.rank, rt.world_size)
    state = {"step": 0, "num_tokens": 0, "skipped_steps": 0}

    if cfg.resume_from_checkpoint:
        ckpt = find_checkpoint(cfg.resume_from_checkpoint, out)
        state = load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        check_resume(state, to_dict(cfg), data["fingerprint"], ckpt, "dataset (or its tokenization/packing)")
        sampler.load_state_dict(state["sampler"])
        log.info("resumed from %s at step %d", ckpt, state["step"])
    tracker = Tracker(str(out), cfg.report_to, to_dict(cfg), enabled=rt.is_main,
                      resume_step=state["step"] if cfg.resume_from_checkpoint else None)
    bar = tqdm(total=total_steps, initial=state["step"], disable=cfg.disable_tqdm or not rt.is_main,
               desc="sft", dynamic_ncols=True)
    log.info("sft: %d %srows (%d examples, %s), %d steps", len(rows), "packed " if cfg.packing else "",
             data["num_examples"], data["kind"], total_steps)

    for step in range(state["step"] + 1, total_steps + 1):
        t_step = time.perf_counter()

        # ---- 1. this step's rows, tokens to normalise by (all micro-batches, all ranks) ----------
        step_rows = [rows[i] for i in sampler.next(cfg.batch_size)]
        mbs = cfg.per_device_train_batch_size
        micro = [collate(step_rows[s:s + mbs], tokenizer.pad_token_id).to(rt.device)
                 for s in range(0, len(step_rows), mbs)]
        num_items = rt.sum(sum(float(mb.loss_mask[:, 1:].sum()) for mb in micro))
        norm = max(num_items, 1.0) / rt.world_size  # gradients are averaged over ranks below

        # ---- 2. forward/backward per micro-batch: sum of -log p over loss tokens / num_items -----
        loss_sum, correct = 0.0, 0.0
        for mb in micro:
            loss, stats = sft_loss(model, mb, num_items=norm)
            loss.backward()
            loss_sum += loss.item()
            correct += stats["correct"]

        # ---- 3. clip, AdamW, schedule ------------------------------------------------------------
        rt.all_reduce_grads(model)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
        if not apply_update(optimizer, scheduler, grad_norm, step):
            state["skipped_steps"] += 1

        # ---- 4. metrics, checkpoint --------------------------------------------------------------
        n_input = rt.sum(sum(float((mb.input_ids != tokenizer.pad_token_id).sum()) for mb in micro))
        state["num_tokens"] += int(n_input)
        step_time = time.perf_counter() - t_step
        metrics = {
            "loss": rt.sum(loss_sum) / rt.world_size,
            "mean_token_accuracy": rt.sum(correct) / max(num_items, 1.0),
            "grad_norm": grad_norm,
            "learning_rate": scheduler.get_last_lr()[0],
            "num_tokens": state["num_tokens"],
            "num_loss_tokens": int(num_items),
            "epoch": step * rows_per_step / len(rows),
            "skipped_steps": state["skipped_steps"],
            "timing_s/step": step_time,
            "perf/tokens_per_sec": n_input / step_time,
        }
        if step % cfg.logging_steps == 0 or step == total_steps:
            tracker.log(step, metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}")
        bar.update(1)
        state.update(step=step, sampler=sampler.state_dict())
        if (cfg.save_steps > 0 and step % cfg.save_steps == 0) or step == total_steps:
            if rt.is_main:
                save_checkpoint(out, step, model=model, tokenizer=tokenizer, optimizer=optimizer,
                                scheduler=scheduler, save_total_limit=cfg.save_total_limit,
                                trainer_state=dict(state, config=to_dict(cfg), data_fingerprint=data["fingerprint"]))
            rt.barrier()

    bar.close()
    tracker.close()
    if rt.is_main:
        save_model(model, tokenizer, out)
        (out / "r1kit_config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    rt.barrier()
    return out


# ---- the pieces the loop calls ----------------------------------------------------------------


def prepare_data(cfg: SFTConfig, tokenizer) -> dict:
    """Read, check and tokenize every row (failing before training on a bad one); pack if asked."""
    raw, source, lines = load_sft_rows(cfg.dataset_name, cfg.dataset_train_split, dataset_config=cfg.dataset_config,
                                       num_rows=cfg.dataset_num_rows)
    examples, kind = build_examples(
        raw, tokenizer, source, lines, max_length=cfg.max_length, truncate=cfg.truncate, template=cfg.template,
        system_prompt=cfg.system_prompt, messages_column=cfg.messages_column, prompt_column=cfg.prompt_column,
        completion_column=cfg.completion_column, completion_only_loss=cfg.completion_only_loss)
    rows = pack_examples(examples, cfg.max_length) if cfg.packing else [[e] for e in examples]
    return {"rows": rows, "kind": kind, "num_examples": len(examples),
            "fingerprint": fingerprint(examples) + ("-packed" if cfg.packing else "")}


def sft_loss(model, batch: SFTBatch, num_items: float | None = None) -> tuple[torch.Tensor, dict]:
    """-sum of log p(target) over the loss tokens of `batch`, divided by `num_items`.

    `num_items` is the number of loss tokens of the whole optimizer step (default: this batch's), so
    summing the micro-batch losses gives the token mean over the step. Position t's logits predict
    token t+1; the loss mask of token t+1 says whether it counts. Returns (loss, stats) with
    `stats["correct"]`: loss tokens whose argmax prediction is right, and `stats["token_logps"]` [B, L-1].
    """
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=None, use_cache=False)
    logits = out.logits[:, :-1, :]  # [B, L-1, V]  position t predicts token t+1
    targets = batch.input_ids[:, 1:]  # [B, L-1]
    mask = batch.loss_mask[:, 1:].to(torch.float32)  # [B, L-1]
    logps = selective_log_softmax(logits, targets)  # [B, L-1]
    n = float(mask.sum()) if num_items is None else num_items
    loss = -(logps * mask).sum() / max(n, 1.0)
    with torch.no_grad():
        correct = float(((logits.argmax(-1) == targets).float() * mask).sum())
    return loss, {"correct": correct, "token_logps": logps.detach()}
