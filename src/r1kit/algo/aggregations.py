"""Token aggregations of the policy loss: how the per-token losses l_{i,t} become one number.

Each ``loss_type`` is one small function in ``AGGREGATIONS`` that returns ``(total, normaliser)``
with ``loss = total / normaliser`` (the per-token objective of each ``loss_type`` is in
``surrogates.SURROGATES``):

* "grpo"    (DeepSeekMath arXiv 2402.03300, eq. 3):  1/G sum_i 1/|o_i| sum_t l_{i,t}
            total = sum of per-sequence token means, normaliser = number of sequences.
* "dapo"    (DAPO arXiv 2503.14476, Sec. 3.3, token-level):  sum_{i,t} l_{i,t} / sum_i |o_i|
            total = masked token sum, normaliser = number of completion tokens of the whole batch.
* "dr_grpo" (Dr. GRPO arXiv 2503.20783, its unbiased objective): sum_{i,t} l_{i,t} / (G * L)
            with the constant L = max_completion_length (T, the padded width, when None).
            total = masked token sum, normaliser = B * L.
* "bnpo"    (TRL's name): the token mean of each micro-batch (the LOCAL batch of one process and
            one accumulation step), averaged over the micro-batches.
            total = this micro-batch's token mean, normaliser = 1 (one micro-batch).
* "cispo"   (MiniMax-M1 arXiv 2506.13585): aggregated like "dapo" (J_CISPO divides by sum_i |o_i|).
* "sapo"    (SAPO arXiv 2511.20347): aggregated like "grpo" (TRL's choice for it).

Gradient accumulation. When a batch is split into micro-batches, pass ``num_items`` = the FULL
batch's normaliser to every micro-batch call (see ``policy_loss``); then the micro-batch losses
simply SUM to the full-batch loss. Normalisers add up over micro-batches, so the full batch's is
``loss_normalizer(full_mask, loss_type, max_completion_length, micro_batch_size=...)``: the sum of
its micro-batches' normalisers (summed over data-parallel ranks and divided by their number when
DDP averages gradients). For grpo, dapo and dr_grpo the split does not matter; for bnpo it is the
whole point: its full normaliser is the NUMBER OF MICRO-BATCHES, so each micro-batch contributes
(its own token mean) / (number of micro-batches) -- TRL's bnpo, whose per-micro-batch token mean is
divided by the gradient-accumulation steps. "dapo" instead divides every token by the token count
of the whole (global) batch; the two agree only when there is a single micro-batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .logprobs import masked_mean

__all__ = ["AGGREGATIONS", "MICRO_BATCH_NORMALISED", "loss_normalizer"]

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


def _agg_bnpo(per_token: Tensor, mask: Tensor, max_completion_length: int | None):
    """token mean of each micro-batch, the local batch

    This call's masked token mean (0 when it has no token); normaliser 1: one micro-batch."""
    return masked_mean(per_token, mask), per_token.new_tensor(1.0)  # [], []


def _agg_cispo(per_token: Tensor, mask: Tensor, max_completion_length: int | None):
    """CISPO: clipped stop-gradient IS weight x A x log-prob, token mean

    MiniMax-M1's J_CISPO: aggregated like "dapo" (masked token sum / number of tokens)."""
    return _agg_dapo(per_token, mask, max_completion_length)  # [], []


def _agg_sapo(per_token: Tensor, mask: Tensor, max_completion_length: int | None):
    """SAPO: soft sigmoid gate instead of clipping, per-sequence mean

    Soft Adaptive Policy Optimization, aggregated like "grpo" (as TRL does)."""
    return _agg_grpo(per_token, mask, max_completion_length)  # [], []


# loss_type name -> aggregation (the first docstring line says what it is: help texts read it)
AGGREGATIONS: dict[str, Aggregation] = {
    "grpo": _agg_grpo,
    "dapo": _agg_dapo,
    "dr_grpo": _agg_dr_grpo,
    "bnpo": _agg_bnpo,
    "cispo": _agg_cispo,
    "sapo": _agg_sapo,
}


# loss_types whose normaliser is each micro-batch's own (bnpo: its token mean): a row's share of the loss then
# depends on which rows share its micro-batch, so rows cannot be moved between micro-batches (or left out of
# one, even with a zero per-token loss) without changing the others' gradients
MICRO_BATCH_NORMALISED = frozenset({"bnpo"})


def get_aggregation(loss_type: str) -> Aggregation:
    """The aggregation of ``loss_type``; ValueError naming the valid ones when it is unknown."""
    if loss_type not in AGGREGATIONS:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {tuple(AGGREGATIONS)}")
    return AGGREGATIONS[loss_type]


def loss_normalizer(mask: Tensor, loss_type: str, max_completion_length: int | None = None,
                    micro_batch_size: int | None = None) -> float:
    """The normaliser of ``loss_type`` for ``mask`` [B, T]: pass it as ``num_items`` (module doc).

    grpo: B; dapo, cispo: number of masked tokens; dr_grpo: B * (max_completion_length or T);
    sapo: B; bnpo: the number of micro-batches. With ``micro_batch_size`` the rows are cut into
    micro-batches of that many rows (the last may be shorter) and their normalisers summed; only
    bnpo depends on it (without it the whole mask is one micro-batch, normaliser 1).
    """
    aggregate = get_aggregation(loss_type)
    m = mask.detach().float()  # [B, T]
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    parts = [m] if micro_batch_size is None else (list(m.split(micro_batch_size)) or [m])  # [b, T] each
    return float(sum(float(aggregate(torch.zeros_like(p), p, max_completion_length)[1]) for p in parts))
