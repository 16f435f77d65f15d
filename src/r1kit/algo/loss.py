"""The GRPO-family policy loss: importance ratio -> per-token objective -> token aggregation.

Per token t of completion i (GRPO, DeepSeekMath arXiv 2402.03300, eq. 3):

    rho_{i,t} = pi_theta(o_{i,t}) / pi_old(o_{i,t}) = exp(logp - old_logp)
    l_{i,t}   = w_{i,t} * -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta KL_{i,t}

with KL_{i,t} the per-token estimate of KL(pi_theta || pi_ref) (eq. 4 = the "k3" estimator; see
``kl.py``) and w_{i,t} optional detached ``token_weights`` (1 when None; e.g. the sampler-mismatch
correction of ``sampler_correction.py``). ``eps_high != eps_low`` is DAPO's clip-higher
(arXiv 2503.14476, Sec. 3.1). Three things vary, each in its own module:

* the importance ratio: ``importance_sampling_level`` in ``IS_LEVELS`` -- "token" above, or GSPO's
  sequence ratio "sequence" / "sequence_token" (``surrogates.importance_log_ratio``);
* the per-token objective of ``loss_type``: ``SURROGATES`` (clipped for grpo/dapo/dr_grpo/bnpo,
  CISPO's clipped stop-gradient weight, SAPO's soft gate);
* the reduction of the l_{i,t} to one number: ``AGGREGATIONS`` (``aggregations.py``), which also
  documents exact gradient accumulation with ``num_items``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .aggregations import AGGREGATIONS, get_aggregation, loss_normalizer
from .kl import kl_estimate
from .logprobs import masked_mean
from .surrogates import IS_LEVELS, SURROGATES, importance_log_ratio

__all__ = ["policy_loss", "loss_normalizer", "AGGREGATIONS"]


def _check_args(logp: Tensor, advantages: Tensor, named: dict[str, Tensor | None], eps_low: float,
                eps_high: float, beta: float, ref_logp: Tensor | None, level: str,
                temperatures: tuple[float, float]) -> None:
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    for name, t in named.items():
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape != (logp.shape[0],):
        raise ValueError(f"advantages must be [B={logp.shape[0]}], got {tuple(advantages.shape)}")
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip epsilons must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logp (log-probs of the reference model)")
    if level not in IS_LEVELS:
        raise ValueError(f"unknown importance_sampling_level {level!r}; expected one of {IS_LEVELS}")
    if min(temperatures) <= 0:
        raise ValueError(f"sapo temperatures must be > 0, got {temperatures}")


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_type: str = "grpo",
    eps_low: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    ref_logp: Tensor | None = None,
    kl: str = "k3",
    max_completion_length: int | None = None,
    num_items: float | Tensor | None = None,
    importance_sampling_level: str = "token",
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy loss (to minimise) and detached statistics.

    Args:
        logp: [B, T] log pi_theta of the completion tokens (requires grad).
        old_logp: [B, T] log pi_old (from the rollout); detached here.
        advantages: [B] one advantage per completion (e.g. ``group_advantages``); detached here.
        mask: [B, T] 1 on completion tokens, 0 on prompt/padding (bool or float). Values of
            logp/old_logp/ref_logp/token_weights where the mask is 0 are ignored, even NaN or -inf.
        loss_type: a key of ``AGGREGATIONS``: "grpo" | "dapo" | "dr_grpo" | "bnpo" | "cispo" | "sapo".
        eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high]; eps_high=None means eps_low.
            For "cispo" ``eps_high`` is the absolute cap of the IS weight (TRL; see ``cispo_surrogate``).
        beta: KL coefficient; > 0 requires ``ref_logp``.
        ref_logp: [B, T] log pi_ref; when given, ``stats["kl"]`` is reported even if beta == 0.
        kl: KL estimator, "k1" | "k2" | "k3".
        max_completion_length: the constant L of "dr_grpo" (defaults to T).
        num_items: normaliser of the full batch for exact gradient accumulation (``aggregations``).
        importance_sampling_level: one of ``IS_LEVELS``: "token" | "sequence" (GSPO) |
            "sequence_token" (GSPO-token). TRL warns that "sequence" is meant for the per-sequence
            aggregations (grpo, sapo); it is allowed with all.
        sapo_temperature_pos, sapo_temperature_neg: SAPO's gate temperatures for A > 0 / A <= 0.
        token_weights: [B, T] optional detached weights multiplying the policy term of each token
            before aggregation (not the KL term), as TRL multiplies per_token_loss by its vLLM
            importance-sampling ratio; see ``sampler_correction_weights``. None = no weighting.

    Each token's log-ratio logp - old_logp is clamped to [-20, 20] before ``exp`` (a ratio beyond
    e^20 is meaningless and would overflow; the gradient there is 0). Returns ``(loss [], stats)``
    with stats, token means over this call's mask: ``ratio_mean``; for the clipped loss types
    ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``; for "cispo"
    ``cispo_clip_ratio``; with ``ref_logp``, ``kl``. At sequence levels the ratio and the flags of
    a sequence count once per token (TRL averages them per sequence).
    """
    aggregate = get_aggregation(loss_type)
    eps_high = eps_low if eps_high is None else eps_high
    _check_args(logp, advantages, {"old_logp": old_logp, "mask": mask, "ref_logp": ref_logp,
                                   "token_weights": token_weights},
                eps_low, eps_high, beta, ref_logp, importance_sampling_level,
                (sapo_temperature_pos, sapo_temperature_neg))

    # Compute in at least fp32 (bf16 cannot even count 257 tokens exactly); grads flow through.
    dtype = torch.promote_types(logp.dtype, torch.float32)
    keep = mask != 0  # [B, T] bool
    m = mask.to(dtype)  # [B, T] float weights
    zero = torch.zeros(logp.shape, dtype=dtype, device=logp.device)  # [B, T]
    # Padding may hold NaN/-inf; replace it before any arithmetic so no NaN reaches the gradient.
    lp = torch.where(keep, logp.to(dtype), zero)  # [B, T]
    old = torch.where(keep, old_logp.detach().to(dtype), zero)  # [B, T]
    adv = advantages.detach().to(dtype)[:, None]  # [B, 1]

    log_ratio = importance_log_ratio(lp, old, m, importance_sampling_level)  # [B, T]
    ratio = torch.exp(log_ratio)  # [B, T]
    per_token, flags = SURROGATES[loss_type](
        ratio, lp, adv, eps_low=eps_low, eps_high=eps_high,
        sapo_temperature_pos=sapo_temperature_pos, sapo_temperature_neg=sapo_temperature_neg)  # [B, T]
    if token_weights is not None:
        w = torch.where(keep, token_weights.detach().to(dtype), zero)  # [B, T]
        per_token = per_token * w  # [B, T]

    kl_tok = None
    if ref_logp is not None:
        ref = torch.where(keep, ref_logp.detach().to(dtype), zero)  # [B, T]
        kl_tok = kl_estimate(lp, ref, kind=kl)  # [B, T]
        if beta > 0:
            per_token = per_token + beta * kl_tok  # [B, T]

    total, norm = aggregate(per_token, m, max_completion_length)  # [], []
    if num_items is not None:
        norm = torch.as_tensor(num_items, dtype=total.dtype, device=total.device)  # []
    loss = total / torch.where(norm != 0, norm, torch.ones_like(norm))  # []

    with torch.no_grad():
        stats = {name: masked_mean(flag.to(m.dtype), m) for name, flag in flags.items()}  # [] each
        stats["ratio_mean"] = masked_mean(ratio, m)  # []
        if kl_tok is not None:
            stats["kl"] = masked_mean(kl_tok, m)  # []
    stats = {k: v.detach() for k, v in stats.items()}
    return loss, stats
