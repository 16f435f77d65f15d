"""Importance-sampling correction for the sampler/trainer mismatch (TRL's
``vllm_importance_sampling_correction``).

The completions are sampled by a rollout engine (vLLM, ...) whose log-probs differ from the
trainer's for the same policy (kernels, precision, stale weights). The loss treats the trainer's
log-probs of the sampling policy as pi_old, so the samples are off-policy by the ratio

    r = pi_trainer_old(o) / pi_sampler(o),

per token (r_{i,t} = exp(old_logp - sampler_logp)) or per sequence (r_i = prod_t r_{i,t} =
exp(sum_t (old_logp - sampler_logp)), the full-sequence likelihood ratio -- a product, unlike
GSPO's length-normalised geometric mean). Each per-token loss is multiplied by a detached weight
(``policy_loss(..., token_weights=w)``) built from r as one of ``IS_MODES`` with bounds
[C_min, C_max] (TRL's ``vllm_importance_sampling_clip_min``/``_clip_max``):

* "token_truncate" / "sequence_truncate": truncated IS (TIS; Retrace, arXiv 1606.02647, and
  F. Yao et al.'s blog fengyao.notion.site/off-policy-rl): w = clamp(r, C_min, C_max); the usual
  setting has only C_max.
* "token_mask" / "sequence_mask": masked IS (MIS; IcePop, arXiv 2510.18855): w = r where
  C_min <= r <= C_max, else 0 (the token, or the whole sequence, leaves the loss).

A bound that is None is absent. See ``drift.py`` for the raw mismatch statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kl import LOG_RATIO_CLAMP

__all__ = ["IS_MODES", "sampler_correction_stats", "sampler_correction_weights"]

IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def _check(mode: str, clip_max: float | None, clip_min: float | None) -> None:
    if mode not in IS_MODES:
        raise ValueError(f"unknown importance sampling mode {mode!r}; expected one of {IS_MODES}")
    if mode.endswith("_truncate") and clip_max is None and clip_min is None:
        raise ValueError(f"mode {mode!r} needs clip_max or clip_min (or both)")
    if clip_max is not None and clip_min is not None and clip_min >= clip_max:
        raise ValueError(f"clip_min ({clip_min}) must be < clip_max ({clip_max})")


def sampler_correction_weights(trainer_old_logp: Tensor, sampler_logp: Tensor, mask: Tensor,
                               mode: str = "sequence_mask", clip_max: float | None = 3.0,
                               clip_min: float | None = None) -> Tensor:
    """Detached importance weights [B, T] that correct the loss for sampling by another engine.

    Args:
        trainer_old_logp: [B, T] the trainer's log-probs of the sampled tokens under the policy
            that sampled them (``old_logp`` of ``policy_loss``); detached here.
        sampler_logp: [B, T] the engine's log-probs of the same tokens.
        mask: [B, T] 1 on completion tokens; values of the log-probs where it is 0 are ignored
            (even NaN), as if their difference were 0.
        mode: one of ``IS_MODES`` (module doc); TRL's default "sequence_mask".
        clip_max, clip_min: C_max (TRL's default 3.0) and C_min (default None); a *_truncate mode
            needs at least one.

    Returns weights w [B, T] (float32 or wider, no gradient): per token for token_* modes, and the
    sequence's weight repeated on each of its tokens for sequence_* modes (TRL keeps it [B, 1]).
    Where the mask is 0 a token mode gives the weight of r = 1; ``policy_loss`` ignores those.
    The log-ratio is clamped to [-20, 20] before ``exp``: this only matters for a side with no
    bound (w at most e^20 instead of inf), where TRL would overflow.
    """
    _check(mode, clip_max, clip_min)
    if sampler_logp.shape != trainer_old_logp.shape or mask.shape != trainer_old_logp.shape:
        raise ValueError(f"shapes differ: trainer_old_logp {tuple(trainer_old_logp.shape)}, "
                         f"sampler_logp {tuple(sampler_logp.shape)}, mask {tuple(mask.shape)}")
    dtype = torch.promote_types(trainer_old_logp.dtype, torch.float32)
    keep = mask != 0  # [B, T]
    m = mask.to(dtype)  # [B, T]
    with torch.no_grad():
        diff = trainer_old_logp.to(dtype) - sampler_logp.to(dtype)  # [B, T]
        diff = torch.where(keep, diff, torch.zeros_like(diff)) * m  # [B, T]
        if mode.startswith("sequence"):
            diff = diff.sum(-1, keepdim=True).expand_as(diff)  # [B, T] log r_i on every token
        ratio = diff.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()  # [B, T]
        if mode.endswith("_truncate"):
            return ratio.clamp(min=clip_min, max=clip_max)  # [B, T]
        out = torch.zeros_like(ratio) > 0  # [B, T] False
        if clip_min is not None:
            out = out | (ratio < clip_min)  # [B, T]
        if clip_max is not None:
            out = out | (ratio > clip_max)  # [B, T]
        return ratio.masked_fill(out, 0.0)  # [B, T]


def sampler_correction_stats(weights: Tensor, mask: Tensor, mode: str) -> dict[str, Tensor]:
    """Sums and extremes of the correction weights, for TRL's metrics
    ``sampling/importance_sampling_ratio/{min,mean,max}`` (which TRL computes on the weights AFTER
    truncation/masking, when the correction is on).

    Over the masked tokens for token_* modes; over the sequences for sequence_* modes -- every row,
    as TRL flattens its [B, 1] ratios (a row with no token has weight 1). Returns 0-d tensors
    ``count``, ``sum`` (mean = sum / count once summed over micro-batches and ranks), ``min`` and
    ``max`` (1.0 when there is nothing, like ``sampler_drift``).
    """
    if mode not in IS_MODES:
        raise ValueError(f"unknown importance sampling mode {mode!r}; expected one of {IS_MODES}")
    w = weights.detach().float()  # [B, T]
    if mode.startswith("sequence"):
        values = w[:, 0] if w.shape[1] > 0 else w.new_ones(w.shape[0])  # [B]
    else:
        values = w[mask != 0]  # [n]
    empty = values.numel() == 0
    one = torch.tensor(1.0)  # []
    return {
        "count": torch.tensor(float(values.numel())),  # []
        "sum": values.sum(),  # []
        "min": one if empty else values.min(),  # []
        "max": one if empty else values.max(),  # []
    }
