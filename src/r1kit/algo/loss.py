"""The clipped GRPO policy loss and its token-aggregation variants.

Per token t of completion i (GRPO, DeepSeekMath arXiv 2402.03300, eq. 3):

    rho_{i,t} = pi_theta(o_{i,t}) / pi_old(o_{i,t}) = exp(logp - old_logp)
    l_{i,t}   = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i) + beta KL_{i,t}

with KL_{i,t} the per-token estimate of KL(pi_theta || pi_ref) (eq. 4 = the "k3" estimator; see
``kl.py``). ``eps_high != eps_low`` is DAPO's clip-higher (arXiv 2503.14476, Sec. 3.1).

How the l_{i,t} are reduced to one number is the ``loss_type``; each is one small function in
``AGGREGATIONS`` that returns ``(total, normaliser)`` with ``loss = total / normaliser``:

* "grpo"    (DeepSeekMath eq. 3):  1/G sum_i 1/|o_i| sum_t l_{i,t}
            total = sum of per-sequence token means, normaliser = number of sequences.
* "dapo"    (DAPO Sec. 3.3, token-level):  sum_{i,t} l_{i,t} / sum_i |o_i|
            total = masked token sum, normaliser = number of completion tokens.
* "dr_grpo" (Dr. GRPO arXiv 2503.20783, its unbiased objective): sum_{i,t} l_{i,t} / (G * L)
            with the constant L = max_completion_length (T, the padded width, when None).
            total = masked token sum, normaliser = B * L.

Gradient accumulation. When a batch is split into micro-batches, pass ``num_items`` = the FULL
batch's normaliser (``loss_normalizer(full_mask, loss_type, max_completion_length)``, summed over
data-parallel ranks when the loss is averaged across them) to every micro-batch call. Then each
micro-batch loss is its ``total / num_items`` and the micro-batch losses simply SUM to the
full-batch loss (do not divide by the number of accumulation steps). With ``num_items=None`` each
micro-batch uses its own normaliser, which is exact only for a single micro-batch ("dapo" then
becomes TRL's per-micro-batch "bnpo").

A new variant is a new ``(per_token, mask, max_completion_length) -> (total, normaliser)``
function registered in ``AGGREGATIONS``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .kl import LOG_RATIO_CLAMP, kl_estimate
from .logprobs import masked_mean

__all__ = ["policy_loss", "loss_normalizer", "AGGREGATIONS"]

Aggregation = Callable[[Tensor, Tensor, "int | None"], "tuple[Tensor, Tensor]"]


def _masked_sum(per_token: Tensor, mask: Tensor) -> Tensor:
    return (per_token * mask).sum()  # []


def _agg_grpo(per_token: Tensor, mask: Tensor, max_completion_length: int | None):
    """per-sequence mean

    Sum over sequences of each sequence's masked token mean; normaliser B (empty rows give 0)."""
    seq_mean = masked_mean(per_token, mask, dim=-1)  # [B]
    return seq_mean.sum(), per_token.new_tensor(float(per_token.shape[0]))  # [], []


def _agg_dapo(per_token: Tensor, mask: Tensor, max_completion_length: int | None):
    """token mean

    Masked token sum; normaliser = number of masked tokens."""
    return _masked_sum(per_token, mask), mask.sum()  # [], []


def _agg_dr_grpo(per_token: Tensor, mask: Tensor, max_completion_length: int | None):
    """constant divisor

    Masked token sum; normaliser = B * max_completion_length (or B * T)."""
    length = max_completion_length if max_completion_length is not None else per_token.shape[1]
    norm = per_token.new_tensor(float(per_token.shape[0] * length))  # []
    return _masked_sum(per_token, mask), norm  # [], []


# loss_type name -> aggregation (the first docstring line says what it is: help texts read it)
AGGREGATIONS: dict[str, Aggregation] = {
    "grpo": _agg_grpo,
    "dapo": _agg_dapo,
    "dr_grpo": _agg_dr_grpo,
}


def _get_aggregation(loss_type: str) -> Aggregation:
    if loss_type not in AGGREGATIONS:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {tuple(AGGREGATIONS)}")
    return AGGREGATIONS[loss_type]


def loss_normalizer(mask: Tensor, loss_type: str, max_completion_length: int | None = None) -> float:
    """The normaliser of ``loss_type`` for ``mask`` [B, T]: pass it as ``num_items`` (see module doc).

    grpo: B; dapo: number of masked tokens; dr_grpo: B * (max_completion_length or T).
    """
    m = mask.detach().float()  # [B, T]
    _, norm = _get_aggregation(loss_type)(torch.zeros_like(m), m, max_completion_length)
    return float(norm)


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
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate loss (to minimise) and detached statistics.

    Args:
        logp: [B, T] log pi_theta of the completion tokens (requires grad).
        old_logp: [B, T] log pi_old (from the rollout); detached here.
        advantages: [B] one advantage per completion (e.g. ``group_advantages``); detached here.
        mask: [B, T] 1 on completion tokens, 0 on prompt/padding (bool or float). Values of
            logp/old_logp/ref_logp where the mask is 0 are ignored, even NaN or -inf.
        loss_type: a key of ``AGGREGATIONS``: "grpo" | "dapo" | "dr_grpo".
        eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high]; eps_high=None means eps_low.
        beta: KL coefficient; > 0 requires ``ref_logp``.
        ref_logp: [B, T] log pi_ref; when given, ``stats["kl"]`` is reported even if beta == 0.
        kl: KL estimator, "k1" | "k2" | "k3".
        max_completion_length: the constant L of "dr_grpo" (defaults to T).
        num_items: normaliser of the full batch for exact gradient accumulation (module doc).

    The log-ratio logp - old_logp is clamped to [-20, 20] before ``exp`` (a ratio beyond e^20 is
    meaningless and would overflow; the gradient there is 0). Returns ``(loss [], stats)`` with
    stats: ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``,
    ``ratio_mean`` and, with ``ref_logp``, ``kl`` -- token means over this call's mask.
    """
    aggregate = _get_aggregation(loss_type)
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(logp.shape)}")
    if advantages.shape != (logp.shape[0],):
        raise ValueError(f"advantages must be [B={logp.shape[0]}], got {tuple(advantages.shape)}")
    eps_high = eps_low if eps_high is None else eps_high
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip epsilons must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logp (log-probs of the reference model)")

    # Compute in at least fp32 (bf16 cannot even count 257 tokens exactly); grads flow through.
    dtype = torch.promote_types(logp.dtype, torch.float32)
    keep = mask != 0  # [B, T] bool
    m = mask.to(dtype)  # [B, T] float weights
    zero = torch.zeros(logp.shape, dtype=dtype, device=logp.device)  # [B, T]
    # Padding may hold NaN/-inf; replace it before any arithmetic so no NaN reaches the gradient.
    lp = torch.where(keep, logp.to(dtype), zero)  # [B, T]
    old = torch.where(keep, old_logp.detach().to(dtype), zero)  # [B, T]
    adv = advantages.detach().to(dtype)[:, None]  # [B, 1]

    log_ratio = (lp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    ratio = torch.exp(log_ratio)  # [B, T]
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # [B, T]
    # -min(rho A, clip(rho) A) == max(-rho A, -clip(rho) A)
    per_token = torch.maximum(-ratio * adv, -clipped * adv)  # [B, T]

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
        low = (ratio < 1.0 - eps_low) & (adv < 0)  # [B, T]
        high = (ratio > 1.0 + eps_high) & (adv > 0)  # [B, T]
        stats = {
            "clip_ratio/low_mean": masked_mean(low.to(m.dtype), m),  # []
            "clip_ratio/high_mean": masked_mean(high.to(m.dtype), m),  # []
            "clip_ratio/region_mean": masked_mean((low | high).to(m.dtype), m),  # []
            "ratio_mean": masked_mean(ratio, m),  # []
        }
        if kl_tok is not None:
            stats["kl"] = masked_mean(kl_tok, m)  # []
    stats = {k: v.detach() for k, v in stats.items()}
    return loss, stats
