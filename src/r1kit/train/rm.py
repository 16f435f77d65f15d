"""`r1kit rm`: a Bradley-Terry reward model for DeepSeek-R1's "RL for all scenarios" (§2.3.4).

A one-output score head on a causal LM (`AutoModelForSequenceClassification`, `num_labels=1`) reads
`prompt + segment(response)` (see `r1kit.rewards.reward_model`: `segment: answer` for helpfulness, the
paper's "final summary only"; `full` for harmlessness) and is trained on chosen/rejected pairs with
loss = -log sigmoid(r_chosen - r_rejected), averaged over the pairs of the optimizer step.

Each step: the next `per_device_train_batch_size x gradient_accumulation_steps` pairs in a seeded
per-epoch order -> micro-batches of chosen and rejected texts in one forward pass -> loss -> clip ->
AdamW + schedule -> metrics (`loss`, `accuracy` = fraction with r_chosen > r_rejected, `margin` = mean
r_chosen - r_rejected; `eval_*` on the held-out pairs) -> checkpoint. Output contract as `r1kit sft`:
metrics.jsonl, atomic checkpoints, exact resume, a final save_pretrained folder plus `r1kit_rm.json`
(segment, template) so `rm:OUTPUT_DIR` scores the way the model was trained.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from r1kit.data.datasets import DataError
from r1kit.models.lean_mlp import lean_mlps
from r1kit.models.loading import TINY_PREFIX, load_model_and_tokenizer, lora_config, save_model
from r1kit.rewards.reward_model import (META_FILE, load_reward_model, prepare_reward_tokenizer, resolve_template,
                                        rm_text, segment_text)
from r1kit.train.rm_config import RMConfig
from r1kit.train.skeleton import TrainRun
from r1kit.utils.dist import Runtime

log = logging.getLogger("r1kit.rm")

PREFERENCES = "r1kit:preferences"
DEFAULT_PAIRS = 2000


def train(cfg: RMConfig) -> Path:
    """Train a reward model as `cfg` says; returns the output folder holding it."""
    run = TrainRun(cfg, "rm", also_resumable=frozenset({"eval_steps"}))
    model, tokenizer = load_backbone(cfg.model_name_or_path, cfg.dtype, run.rt, cfg.lora())
    prepare_reward_tokenizer(model, tokenizer, cfg.max_length)
    model = run.prepare_model(model)
    template = resolve_template(cfg.template, tokenizer)
    data = prepare_pairs(cfg, tokenizer, template)
    train_set, eval_set = data["train"], data["eval"]
    world = run.rt.world_size
    if len(train_set) < world:
        raise DataError(f"{cfg.dataset_name}: {len(train_set)} training pairs, fewer than the {world} processes")
    pairs_per_step = cfg.batch_size * world
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(
        1, math.ceil(cfg.num_train_epochs * len(train_set) / pairs_per_step))
    run.start(tokenizer, num_rows=len(train_set), total_steps=total_steps, fingerprint=data["fingerprint"],
              data="preference pairs (or their tokenization)")
    log.info("rm: %d training pairs, %d held out, segment=%s, template=%s, %d steps", len(train_set),
             len(eval_set), cfg.segment, template, total_steps)
    pad = tokenizer.pad_token_id

    for step in run.steps():
        # ---- 1. this rank's pairs of the step; loss and gradients per micro-batch ------------------
        pairs = [train_set[i] for i in run.sampler.next(cfg.batch_size)]
        sums = forward_backward(model, pairs, cfg, pad, run.device)
        run.state.num_tokens += int(run.rt.sum(sum(len(p[0]) + len(p[1]) for p in pairs)))

        # ---- 2. average over ranks, clip, AdamW, schedule ------------------------------------------
        grad_norm = run.update(step)

        # ---- 3. metrics over all ranks, held-out evaluation, checkpoint ----------------------------
        total = {k: run.rt.sum(v) for k, v in sums.items()}
        n = pairs_per_step
        metrics = {"loss": total["loss"] / world, "accuracy": total["correct"] / n, "margin": total["margin"] / n,
                   "rewards/chosen": total["chosen"] / n, "rewards/rejected": total["rejected"] / n,
                   "grad_norm": grad_norm, "learning_rate": run.learning_rate,
                   "num_tokens": run.state.num_tokens, "epoch": step * pairs_per_step / len(train_set),
                   "skipped_steps": run.state.skipped_steps}
        evaluated = bool(eval_set) and ((cfg.eval_steps and step % cfg.eval_steps == 0) or step == total_steps)
        if evaluated:  # every rank scores every held-out pair (fsdp2 forwards are collective)
            held_out = evaluate(model, eval_set, pad, run.device, cfg.per_device_train_batch_size)
            metrics.update({f"eval_{k}": v for k, v in held_out.items()})
            model.train()
        run.end_step(step, metrics, {"loss": f"{metrics['loss']:.4f}", "acc": f"{metrics['accuracy']:.2f}"},
                     force_log=evaluated)

    return run.finish({META_FILE: {"segment": cfg.segment, "template": template, "max_length": cfg.max_length}})


# ---- the pieces the loop calls ----------------------------------------------------------------


def load_backbone(name: str, dtype: str, rt: Runtime, lora: dict | None = None):
    """(one-output sequence-classification model, tokenizer) on `rt.device` from a causal-LM folder, hub id
    or r1kit:tiny; with `lora`, LoRA adapters on the backbone and the score head trained in full. The
    score head is new (randomly initialised) unless the folder already holds a reward model; data parallel
    runs make it rank 0's (`TrainRun.prepare_model`)."""
    model, tokenizer = _load_score_model(name, dtype, rt)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(lora, task_type="SEQ_CLS"))
    return model, tokenizer


def _load_score_model(name: str, dtype: str, rt: Runtime):
    device = str(rt.device)
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    if not name.startswith(TINY_PREFIX):
        return load_reward_model(name, device, dtype)
    # Built in memory: save it so the seq-cls class can load it. save_pretrained writes on rank 0 only
    # when torch.distributed is up, so rank 0 writes one folder that every rank then reads.
    causal, tok = load_model_and_tokenizer(name, dtype=dtype)
    tmp = tempfile.mkdtemp(prefix="r1kit-rm-backbone-") if rt.is_main else None
    folder = rt.gather_objects(tmp)[0]
    try:
        if rt.is_main:
            save_model(causal, tok, folder)
        rt.barrier()
        return load_reward_model(folder, device, dtype)
    finally:
        rt.barrier()
        if rt.is_main:
            shutil.rmtree(folder, ignore_errors=True)


def load_pair_rows(cfg: RMConfig) -> tuple[list[dict], str]:
    """Rows with prompt/chosen/rejected from a file/folder/hub dataset or r1kit:preferences."""
    if cfg.dataset_name.startswith(PREFERENCES):
        from r1kit.tasks.preferences import preference_pairs

        return preference_pairs(cfg.dataset_num_rows or DEFAULT_PAIRS, seed=cfg.seed), cfg.dataset_name
    from r1kit.data.sft_data import load_sft_rows

    rows, source, _ = load_sft_rows(cfg.dataset_name, cfg.dataset_train_split, num_rows=cfg.dataset_num_rows)
    return rows, source


def prepare_pairs(cfg: RMConfig, tokenizer, template: str) -> dict:
    """Check and tokenize every pair (failing on a bad row, named), split off the held-out pairs."""
    rows, source = load_pair_rows(cfg)
    problems, encoded = [], []
    for i, row in enumerate(rows):
        bad = [k for k in ("prompt", "chosen", "rejected") if not isinstance(row.get(k), (str, list)) or not row.get(k)]
        if bad:
            problems.append(f"row {i}: missing or empty {bad}")
            continue
        texts = [rm_text(row["prompt"], segment_text(row[k], cfg.segment), tokenizer, template)
                 for k in ("chosen", "rejected")]
        ids = tokenizer(texts, truncation=True, max_length=cfg.max_length, add_special_tokens=False).input_ids
        encoded.append((ids[0], ids[1]))
    if problems:
        raise DataError(f"{source}: {len(problems)} invalid preference row(s) (need non-empty 'prompt', 'chosen', "
                        f"'rejected'):\n  " + "\n  ".join(problems[:5]))
    order = list(range(len(encoded)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = int(round(cfg.eval_fraction * len(encoded)))
    if len(encoded) - n_eval < 1:
        raise DataError(f"{source}: {len(encoded)} pairs leave none to train on after eval_fraction={cfg.eval_fraction}")
    fp = hashlib.sha256(repr((encoded, order, n_eval)).encode()).hexdigest()[:16]
    return {"train": [encoded[i] for i in order[n_eval:]], "eval": [encoded[i] for i in order[:n_eval]],
            "fingerprint": fp}


def pair_rewards(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen and rejected texts of `pairs` (one right-padded forward pass): [b], [b]."""
    seqs = [p[0] for p in pairs] + [p[1] for p in pairs]
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)  # [2b, L]
    mask = torch.zeros((len(seqs), L), dtype=torch.long)  # [2b, L]
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    with lean_mlps(model, torch.is_grad_enabled()):  # gated MLPs: half the activations kept for backward
        rewards = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float()  # [2b]
    return rewards[:len(pairs)], rewards[len(pairs):]


def forward_backward(model, pairs: list, cfg: RMConfig, pad_id: int, device) -> dict[str, float]:
    """Backward of the Bradley-Terry loss averaged over this rank's `pairs` (micro-batches of chosen and
    rejected texts in one forward each); returns this rank's sums (loss, correct, margin, chosen, rejected)."""
    mbs = cfg.per_device_train_batch_size
    sums = {"loss": 0.0, "correct": 0.0, "margin": 0.0, "chosen": 0.0, "rejected": 0.0}
    for s in range(0, len(pairs), mbs):
        mb = pairs[s:s + mbs]
        r_c, r_r = pair_rewards(model, mb, pad_id, device)  # [b], [b]
        loss = bt_loss(r_c, r_r, cfg.center_rewards_coefficient) * len(mb) / len(pairs)
        loss.backward()
        accumulate(sums, loss.item(), r_c.detach(), r_r.detach())
    return sums


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, center_coef: float = 0.0) -> torch.Tensor:
    """Bradley-Terry: mean of -log sigmoid(r_chosen - r_rejected), plus the optional centring term."""
    loss = -F.logsigmoid(r_chosen - r_rejected).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


def accumulate(sums: dict, loss: float, r_c: torch.Tensor, r_r: torch.Tensor) -> None:
    sums["loss"] += loss
    sums["correct"] += float((r_c > r_r).sum())
    sums["margin"] += float((r_c - r_r).sum())
    sums["chosen"] += float(r_c.sum())
    sums["rejected"] += float(r_r.sum())


@torch.no_grad()
def evaluate(model, pairs, pad_id: int, device, batch_size: int) -> dict:
    """loss, accuracy and margin over held-out pairs."""
    model.eval()
    sums = {"loss": 0.0, "correct": 0.0, "margin": 0.0, "chosen": 0.0, "rejected": 0.0}
    for s in range(0, len(pairs), batch_size):
        mb = pairs[s:s + batch_size]
        r_c, r_r = pair_rewards(model, mb, pad_id, device)
        accumulate(sums, bt_loss(r_c, r_r).item() * len(mb), r_c, r_r)
    n = max(len(pairs), 1)
    return {"loss": sums["loss"] / n, "accuracy": sums["correct"] / n, "margin": sums["margin"] / n}
