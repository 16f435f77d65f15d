"""How far the rollout engine's sampling distribution is from the trainer's: the check to run first when
a run with a separate sampler (vLLM, an async engine) misbehaves.

With correct weight sync both compute log pi(token) of the same policy at the same temperature, so the
difference is float noise; a stale or broken sync makes it grow. TRL logs the same quantities as
`sampling/sampling_logp_difference/{mean,max}` and `sampling/importance_sampling_ratio/{min,mean,max}`.
"""

from __future__ import annotations

import torch


def sampler_drift(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Token statistics of the sampler/trainer mismatch over the tokens where `mask` is 1.

    Per token: d = log pi_trainer(y_t) - log pi_sampler(y_t) and the importance ratio
    r = pi_trainer / pi_sampler = exp(d) (the weight truncated importance sampling would apply).

    Args:
        trainer_logp: [B, T] the trainer's log-probs of the sampled tokens.
        sampler_logp: [B, T] the engine's log-probs of the same tokens (as it sampled them).
        mask:         [B, T] 1 on completion tokens.
    Returns sums (to combine over micro-batches and ranks) and extremes, each a 0-d tensor:
        tokens, abs_diff_sum, abs_diff_max, ratio_sum, ratio_min, ratio_max (extremes are 0 / 1 with no token).
    """
    m = mask.bool()  # [B, T]
    d = (trainer_logp.detach().float() - sampler_logp.float())[m]  # [n]
    ratio = d.exp()  # [n]
    empty = d.numel() == 0
    return {
        "tokens": torch.tensor(float(d.numel())),  # []
        "abs_diff_sum": d.abs().sum(),  # []
        "abs_diff_max": torch.tensor(0.0) if empty else d.abs().max(),  # []
        "ratio_sum": ratio.sum(),  # []
        "ratio_min": torch.tensor(1.0) if empty else ratio.min(),  # []
        "ratio_max": torch.tensor(1.0) if empty else ratio.max(),  # []
    }
