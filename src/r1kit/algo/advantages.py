"""Group-relative advantages (GRPO and its variants).

GRPO (DeepSeekMath, arXiv 2402.03300, Sec. 4.1.2, "outcome supervision"): for each question, G
outputs are sampled and scored; every token of output i gets the advantage

    A_i = (r_i - mean(r)) / std(r)                     (mean/std over the G rewards of the group)

Variants selected with ``scale``:

* ``"group"``  -- the formula above, std = sample (unbiased, N-1) std of the group, plus ``eps``
  in the denominator (the convention of TRL and verl).
* ``"batch"``  -- mean per group, std over all scorable rewards of the whole batch (TRL's
  ``scale_rewards="batch"``): a question with nearly-identical rewards is not blown up.
* ``"none"``   -- Dr. GRPO (arXiv 2503.20783, "GRPO done right"): no std division,
  A_i = r_i - mean(r); the paper shows the std term up-weights too-easy and too-hard questions.

Unscorable rewards are NaN (the reward layer's convention). They are left out of every mean and
std and get advantage 0, so they contribute no gradient. Non-finite values (+-inf) are treated the
same way. A group with fewer than two scorable rewards, or whose scorable rewards are all equal,
carries no learning signal and gets exactly 0 everywhere.

All statistics are computed in float64 (so squares of rewards near the float32 limit cannot
overflow) and the result is cast back to the input's floating dtype, clamped to its finite range.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["group_advantages", "zero_std_groups", "SCALES"]


def _as_groups(rewards: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Validate and reshape ``rewards`` [N] to float64 [P, G]; also return the scorable mask."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    n = rewards.numel()
    if n % group_size != 0:
        raise ValueError(
            f"number of rewards ({n}) is not divisible by group_size ({group_size}); "
            "each prompt must contribute exactly group_size contiguous completions"
        )
    r = rewards.detach().to(torch.float64).view(-1, group_size)  # [P, G]
    valid = torch.isfinite(r)  # [P, G] True where the reward could be computed
    return r, valid


def _zero_std(r: Tensor, valid: Tensor) -> Tensor:
    """Groups with < 2 scorable rewards or whose scorable rewards are all equal (exact compare)."""
    count = valid.sum(dim=-1)  # [P]
    hi = torch.where(valid, r, torch.full_like(r, -float("inf"))).amax(dim=-1)  # [P]
    lo = torch.where(valid, r, torch.full_like(r, float("inf"))).amin(dim=-1)  # [P]
    return (count < 2) | (hi == lo)  # [P]


def zero_std_groups(rewards: Tensor, group_size: int) -> Tensor:
    """Bool [P]: groups that give no GRPO signal (all scorable rewards equal, or < 2 scorable).

    ``frac_reward_zero_std`` = ``zero_std_groups(r, G).float().mean()``. DAPO's dynamic sampling
    (arXiv 2503.14476, Sec. 3.2: keep only groups with 0 < #correct < G) drops these groups.
    """
    r, valid = _as_groups(rewards, group_size)  # [P, G], [P, G]
    return _zero_std(r, valid)  # [P]


def _unbiased_std(dev: Tensor, count: Tensor) -> Tensor:
    """sqrt(sum dev^2 / (count - 1)); dev is already 0 at unscorable entries. Safe for count < 2."""
    denom = (count - 1).clamp(min=1).to(dev.dtype)  # [...]
    return (dev.square().sum(dim=-1) / denom).sqrt()  # [...]


def _scale_group(r0: Tensor, dev: Tensor, valid: Tensor, count: Tensor, eps: float) -> Tensor:
    """each group's std

    Sample std of each group's scorable rewards, + eps."""
    return _unbiased_std(dev, count)[:, None] + eps  # [P, 1]


def _scale_batch(r0: Tensor, dev: Tensor, valid: Tensor, count: Tensor, eps: float) -> Tensor:
    """the batch's std

    Sample std of all scorable rewards of the batch, + eps (the same for every group)."""
    n_valid = valid.sum()  # [] scorable rewards in the batch
    batch_mean = r0.sum() / n_valid.clamp(min=1).to(r0.dtype)  # []
    batch_dev = torch.where(valid, r0 - batch_mean, torch.zeros_like(r0))  # [P, G]
    denom = _unbiased_std(batch_dev.reshape(-1), n_valid) + eps  # []
    return denom.expand(r0.shape[0], 1)  # [P, 1]


def _scale_none(r0: Tensor, dev: Tensor, valid: Tensor, count: Tensor, eps: float) -> Tensor:
    """Dr. GRPO: no std scaling"""
    return torch.ones(r0.shape[0], 1, dtype=r0.dtype, device=r0.device)  # [P, 1]


# scale_rewards name -> the denominator of each group's advantages [P, 1] (the first docstring line says
# what it is: help texts read it)
SCALES = {"group": _scale_group, "batch": _scale_batch, "none": _scale_none}


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
) -> Tensor:
    """Per-completion advantages [N] from rewards [N] (groups of ``group_size``, contiguous).

    Implements A_i = (r_i - mean_group(r)) / (std + eps) (DeepSeekMath Sec. 4.1.2, outcome
    supervision; std per ``scale``, see the module docstring). ``eps`` is only used when dividing
    by a std. Never returns NaN or inf.

    Args:
        rewards: float [N], NaN where the reward could not be computed.
        group_size: G, the number of completions per prompt; N must be divisible by it.
        scale: "group" | "batch" | "none" (Dr. GRPO).
        eps: added to the std before dividing.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; expected one of {tuple(SCALES)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    r, valid = _as_groups(rewards, group_size)  # [P, G], [P, G]
    r0 = torch.where(valid, r, torch.zeros_like(r))  # [P, G] unscorable -> 0
    count = valid.sum(dim=-1)  # [P] scorable rewards per group
    mean = r0.sum(dim=-1) / count.clamp(min=1).to(r.dtype)  # [P]
    dev = torch.where(valid, r0 - mean[:, None], torch.zeros_like(r))  # [P, G]

    denom = SCALES[scale](r0, dev, valid, count, eps)  # [P, 1]
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))  # [P, 1] eps=0 and std=0 guard
    adv = dev / denom  # [P, G]
    keep = valid & ~_zero_std(r, valid)[:, None]  # [P, G] scorable entries of informative groups
    adv = torch.where(keep, adv, torch.zeros_like(adv))  # [P, G]
    finfo = torch.finfo(out_dtype)
    adv = adv.clamp(min=finfo.min, max=finfo.max)  # [P, G] stay finite after the cast
    return adv.reshape(-1).to(device=rewards.device, dtype=out_dtype)  # [N]
