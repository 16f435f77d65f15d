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

import logging
import math
import time
from pathlib import Path

import torch

from r1kit.algo import selective_log_softmax
from r1kit.data.datasets import DataError
from r1kit.data.sft_data import SFTBatch, build_examples, collate, fingerprint, load_sft_rows, pack_examples
from r1kit.models.loading import load_model_and_tokenizer
from r1kit.models.lean_mlp import lean_mlps
from r1kit.train.sft_config import SFTConfig
from r1kit.train.skeleton import TrainRun

log = logging.getLogger("r1kit.sft")



def train(cfg: SFTConfig) -> Path:
    """Run SFT as `cfg` says; returns the output folder holding the final model."""
    run = TrainRun(cfg, "sft")

    # ---- model, tokenizer, data -----------------------------------------------------------------
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype, device=str(run.device),
                                                tokenizer_name_or_path=cfg.tokenizer_name_or_path, lora=cfg.lora(),
                                                **cfg.loader_options())  # TRL's model keys (trl_args.py)
    model = run.prepare_model(model)
    data = prepare_data(cfg, tokenizer)
    rows = data["rows"]  # each: a list of one example (or several, packed)
    world = run.rt.world_size
    if len(rows) < world:
        raise DataError(f"{cfg.dataset_name}: {len(rows)} rows, fewer than the {world} processes")
    rows_per_step = cfg.batch_size * world
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(
        1, math.ceil(cfg.num_train_epochs * len(rows) / rows_per_step))
    run.start(tokenizer, num_rows=len(rows), total_steps=total_steps, fingerprint=data["fingerprint"],
              data="dataset (or its tokenization/packing)")
    log.info("sft: %d %srows (%d examples, %s; loss on %s), %d steps", len(rows), "packed " if cfg.packing else "",
             data["num_examples"], data["kind"], loss_tokens(cfg, data["kind"]), total_steps)

    for step in run.steps():
        t_step = time.perf_counter()
        micro = step_batches(run, rows, tokenizer.pad_token_id)  # ---- 1. this step's rows
        loss_sum, correct, num_items = forward_backward(run, model, micro)  # ---- 2. loss, gradients
        grad_norm = run.update(step)  # ---- 3. average over ranks, clip, AdamW, schedule

        # ---- 4. metrics, checkpoint --------------------------------------------------------------
        n_input = run.rt.sum(sum(float((mb.input_ids != tokenizer.pad_token_id).sum()) for mb in micro))
        run.state.num_tokens += int(n_input)
        step_time = time.perf_counter() - t_step
        metrics = {
            "loss": run.rt.sum(loss_sum) / world,
            "mean_token_accuracy": run.rt.sum(correct) / max(num_items, 1.0),
            "grad_norm": grad_norm,
            "learning_rate": run.learning_rate,
            "num_tokens": run.state.num_tokens,
            "num_loss_tokens": int(num_items),
            "epoch": step * rows_per_step / len(rows),
            "skipped_steps": run.state.skipped_steps,
            "timing_s/step": step_time,
            "perf/tokens_per_sec": n_input / step_time,
        }
        run.end_step(step, metrics, {"loss": f"{metrics['loss']:.4f}"})
    return run.finish()


# ---- the pieces the loop calls ----------------------------------------------------------------


def prepare_data(cfg: SFTConfig, tokenizer) -> dict:
    """Read, check and tokenize every row (failing before training on a bad one); pack if asked."""
    raw, source, lines = load_sft_rows(cfg.dataset_name, cfg.dataset_train_split, dataset_config=cfg.dataset_config,
                                       num_rows=cfg.dataset_num_rows)
    examples, kind = build_examples(
        raw, tokenizer, source, lines, max_length=cfg.max_length, truncate=cfg.truncate, template=cfg.template,
        system_prompt=cfg.system_prompt, messages_column=cfg.messages_column, prompt_column=cfg.prompt_column,
        completion_column=cfg.completion_column, completion_only_loss=cfg.completion_only_loss,
        assistant_only_loss=cfg.assistant_only_loss, dataset_text_field=cfg.dataset_text_field)
    rows = pack_examples(examples, cfg.max_length) if cfg.packing else [[e] for e in examples]
    return {"rows": rows, "kind": kind, "num_examples": len(examples),
            "fingerprint": fingerprint(examples) + ("-packed" if cfg.packing else "")}


def loss_tokens(cfg: SFTConfig, kind: str) -> str:
    """Which tokens of a `kind` row the loss is on, as TRL's completion_only_loss / assistant_only_loss say."""
    completion = kind == "prompt_completion" and cfg.completion_only_loss is not False
    if completion and cfg.assistant_only_loss:
        return "the completion's assistant turns"
    if completion:
        return "the completion"
    return "the assistant turns" if cfg.assistant_only_loss else "every token"


def step_batches(run: TrainRun, rows: list, pad_id: int) -> list[SFTBatch]:
    """This rank's rows of the step (`batch_size` of them, in the sampler's order) as micro-batches."""
    step_rows = [rows[i] for i in run.sampler.next(run.cfg.batch_size)]
    mbs = run.cfg.per_device_train_batch_size
    return [collate(step_rows[s:s + mbs], pad_id).to(run.device) for s in range(0, len(step_rows), mbs)]


def forward_backward(run: TrainRun, model, micro: list[SFTBatch]) -> tuple[float, float, float]:
    """Backward of sum(-log p) over the loss tokens of every micro-batch / the step's loss tokens (all
    ranks), so the gradients are those of one big batch. Returns (this rank's loss, its correct loss
    tokens, the step's loss tokens over all ranks)."""
    num_items = run.rt.sum(sum(float(mb.loss_mask[:, 1:].sum()) for mb in micro))
    norm = max(num_items, 1.0) / run.rt.world_size  # gradients are averaged over ranks in run.update
    loss_sum, correct = 0.0, 0.0
    for mb in micro:
        loss, stats = sft_loss(model, mb, num_items=norm)
        loss.backward()
        loss_sum += loss.item()
        correct += stats["correct"]
    return loss_sum, correct, num_items


def sft_loss(model, batch: SFTBatch, num_items: float | None = None) -> tuple[torch.Tensor, dict]:
    """-sum of log p(target) over the loss tokens of `batch`, divided by `num_items`.

    `num_items` is the number of loss tokens of the whole optimizer step (default: this batch's), so
    summing the micro-batch losses gives the token mean over the step. Position t's logits predict
    token t+1; the loss mask of token t+1 says whether it counts. Returns (loss, stats) with
    `stats["correct"]`: loss tokens whose argmax prediction is right, and `stats["token_logps"]` [B, L-1].
    """
    with lean_mlps(model, torch.is_grad_enabled()):  # gated MLPs: half the activations kept for backward
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
