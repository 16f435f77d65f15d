"""Per-token policy objectives (to minimise) and the importance ratio they are built on.

The importance ratio of token t of completion i, at one of ``IS_LEVELS``:

* "token"   (GRPO, DeepSeekMath arXiv 2402.03300, eq. 3):
            rho_{i,t} = pi_theta(o_{i,t}) / pi_old(o_{i,t}) = exp(logp - old_logp)
* "sequence" (GSPO, arXiv 2507.18071, eq. 5 with its length-normalised sequence ratio):
            s_i = (pi_theta(o_i) / pi_old(o_i))^(1/|o_i|) = exp(1/|o_i| sum_t (logp - old_logp)),
            the same value for every token of o_i; its gradient flows into every token of the
            sequence: d s_i / d logp_{i,t} = s_i / |o_i|.
* "sequence_token" (GSPO-token, same paper; TRL's ``trl.experimental.gspo_token``):
            s_{i,t} = sg[s_i] * pi_theta(o_{i,t}) / sg[pi_theta(o_{i,t})]: the value of s_i with a
            token-local gradient d s_{i,t} / d logp_{i,t} = s_i. With one advantage per sequence
            (as here) its gradient under a per-sequence mean equals GSPO's.

Each ``loss_type`` has a per-token objective in ``SURROGATES``; all share one signature
``(ratio [B, T], logp [B, T], adv [B, 1], *, eps_low, eps_high, sapo_temperature_pos,
sapo_temperature_neg) -> (per_token [B, T], flags)`` and ignore the hyper-parameters they do not
use; ``flags`` are detached [B, T] bool indicators whose masked means ``policy_loss`` reports.
A new objective is a new function registered here (and its aggregation in ``AGGREGATIONS``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .kl import LOG_RATIO_CLAMP
from .logprobs import masked_mean

__all__ = ["IS_LEVELS", "SURROGATES", "cispo_surrogate", "clipped_surrogate", "importance_log_ratio",
           "sapo_surrogate"]

IS_LEVELS = ("token", "sequence", "sequence_token")

Surrogate = Callable[..., "tuple[Tensor, dict[str, Tensor]]"]


def importance_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, level: str = "token") -> Tensor:
    """log of the importance ratio per token [B, T] at ``level`` (one of ``IS_LEVELS``, module doc).

    ``logp`` carries the gradient; ``old_logp`` is detached. Both must already be finite where
    ``mask`` is 0 (``policy_loss`` zero-fills them). Each token's log-ratio is clamped to
    [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] = [-20, 20] before anything else (a ratio beyond e^20 is
    meaningless and would overflow ``exp``; the gradient there is 0), as for the token level.
    Sequence levels average the clamped log-ratios over the masked tokens (an empty row gives 0).
    """
    if level not in IS_LEVELS:
        raise ValueError(f"unknown importance_sampling_level {level!r}; expected one of {IS_LEVELS}")
    log_ratio = (logp - old_logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    if level == "token":
        return log_ratio  # [B, T]
    seq = masked_mean(log_ratio, mask, dim=-1)[:, None]  # [B, 1] log s_i
    if level == "sequence":
        return seq.expand_as(log_ratio)  # [B, T]
    return logp - logp.detach() + seq.detach()  # [B, T] value log s_i, gradient d logp_{i,t}


def clipped_surrogate(ratio: Tensor, logp: Tensor, adv: Tensor, *, eps_low: float, eps_high: float,
                      **_: float) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO/GRPO clipped objective: -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A).

    DeepSeekMath eq. 3 (DAPO's clip-higher when eps_high != eps_low; GSPO eq. 5 when ``ratio`` is
    the sequence ratio). Flags: clip_ratio/{low,high,region}_mean -- the tokens whose gradient the
    clip removes (rho < 1 - eps_low with A < 0; rho > 1 + eps_high with A > 0).
    """
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)  # [B, T]
    # -min(rho A, clip(rho) A) == max(-rho A, -clip(rho) A)
    per_token = torch.maximum(-ratio * adv, -clipped * adv)  # [B, T]
    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (adv < 0)  # [B, T]
        high = (ratio > 1.0 + eps_high) & (adv > 0)  # [B, T]
    flags = {"clip_ratio/low_mean": low, "clip_ratio/high_mean": high, "clip_ratio/region_mean": low | high}
    return per_token, flags


def cispo_surrogate(ratio: Tensor, logp: Tensor, adv: Tensor, *, eps_high: float,
                    **_: float) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585, its J_CISPO): -sg(min(rho, eps_high)) A log pi_theta.

    REINFORCE with the importance weight clipped and detached, so every token keeps its gradient
    -w A (scaled, never zeroed). The paper writes the weight as clip(rho, 1 - eps_low^IS,
    1 + eps_high^IS) and uses no lower bound in practice; TRL (followed here) caps it from above
    only, at ``eps_high`` itself -- an ABSOLUTE cap on rho, not 1 + eps_high (ScaleRL arXiv
    2510.13786 recommends 5.0; with eps_high < 1 even on-policy tokens are scaled down to eps_high).
    Flag: cispo_clip_ratio -- tokens with rho > eps_high and A > 0 (TRL's metric).
    """
    weight = ratio.clamp(max=eps_high).detach()  # [B, T]
    per_token = -weight * adv * logp  # [B, T]
    with torch.no_grad():
        capped = (ratio > eps_high) & (adv > 0)  # [B, T]
    return per_token, {"cispo_clip_ratio": capped}


def sapo_surrogate(ratio: Tensor, logp: Tensor, adv: Tensor, *, sapo_temperature_pos: float,
                   sapo_temperature_neg: float, **_: float) -> tuple[Tensor, dict[str, Tensor]]:
    """SAPO (Soft Adaptive Policy Optimization, arXiv 2511.20347): -f(rho) A with a soft gate.

    f(rho) = sigmoid(tau (rho - 1)) * 4 / tau, tau = sapo_temperature_pos where A > 0 and
    sapo_temperature_neg otherwise (the paper's asymmetric temperatures; TRL's defaults 1.0 and
    1.05). At rho = 1 the gradient is the plain policy gradient (-A d logp: f'(1) = 1) and it decays
    smoothly as rho leaves 1 instead of being cut off by a clip. No flags (TRL logs none).
    """
    tau = torch.where(adv > 0, sapo_temperature_pos, sapo_temperature_neg).to(ratio.dtype)  # [B, 1]
    gate = torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau  # [B, T]
    return -gate * adv, {}  # [B, T]


# loss_type -> per-token objective (keys: those of AGGREGATIONS)
SURROGATES: dict[str, Surrogate] = {
    "grpo": clipped_surrogate,
    "dapo": clipped_surrogate,
    "dr_grpo": clipped_surrogate,
    "bnpo": clipped_surrogate,
    "cispo": cispo_surrogate,
    "sapo": sapo_surrogate,
}
