"""The optimizer pieces every trainer shares: AdamW with a transformers LR schedule, and one update."""

from __future__ import annotations

import logging
import math

import torch
from transformers import get_scheduler

log = logging.getLogger("r1kit.train")


def make_optimizer(params, cfg, optimizer_steps: int):
    """AdamW over `params` and the LR schedule `cfg.lr_scheduler_type` over `optimizer_steps` updates
    (`cfg` is any config with TrainingArgs' fields)."""
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_training_steps=optimizer_steps,
                              num_warmup_steps=math.ceil(cfg.warmup_ratio * optimizer_steps))
    return optimizer, scheduler


def apply_update(optimizer, scheduler, grad_norm: float, step: int) -> bool:
    """Step AdamW unless the (clipped) gradient norm is non-finite; the schedule always advances and the
    gradients are cleared. Returns False for a skipped update (the caller counts it)."""
    ok = math.isfinite(grad_norm)
    if ok:
        optimizer.step()
    else:
        log.warning("step %d: non-finite gradient norm, update skipped", step)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return ok
