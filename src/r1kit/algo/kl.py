"""Per-token estimators of KL(pi_theta || pi_ref) from sampled tokens.

Tokens are sampled from pi_theta (strictly: from the old policy; on-policy they coincide). With the
log-ratio  x = log pi_ref(o_t) - log pi_theta(o_t)  (i.e. ``ref_logp - logp``), J. Schulman,
"Approximating KL divergence" (2020, http://joschu.net/blog/kl-approx.html) defines

* k1 = -x                 = logp - ref_logp         unbiased, high variance, can be negative
* k2 = x^2 / 2                                      biased, low variance, always >= 0
* k3 = (e^x - 1) - x                                unbiased, low variance, always >= 0

k3 is the estimator of the GRPO objective (DeepSeekMath, arXiv 2402.03300, eq. 4:
pi_ref/pi_theta - log(pi_ref/pi_theta) - 1).

Numerical guard: for k3 the log-ratio is clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] = [-20, 20]
before ``exp`` (and the same clamped value is used in the linear term, so k3 stays >= 0). This
keeps the value finite (at most e^20 - 21, about 4.9e8) for tokens where the two policies disagree
wildly; outside the clamp the gradient of k3 is 0. Within [-20, 20] the result is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kl_estimate", "KL_ESTIMATORS", "LOG_RATIO_CLAMP"]

LOG_RATIO_CLAMP = 20.0


def _k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """log-ratio: unbiased, high variance, can be negative"""
    return logp - ref_logp  # [...]


def _k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """half the squared log-ratio: biased, low variance"""
    return 0.5 * (logp - ref_logp).square()  # [...]


def _k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """the paper's: unbiased, low variance, >= 0"""
    x = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [...] log(pi_ref / pi_theta)
    return torch.expm1(x) - x  # [...] e^x - 1 - x >= 0 (expm1 is exact near x = 0)


# kl_estimator name -> estimator (the first docstring line says what it is: help texts read it)
KL_ESTIMATORS = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL estimate, same shape as ``logp`` (e.g. [B, T]).

    Args:
        logp: log pi_theta of the sampled tokens (gradients flow through it).
        ref_logp: log pi_ref of the same tokens (usually without grad).
        kind: "k1" | "k2" | "k3" (Schulman's estimators; see the module docstring).
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; expected one of {tuple(KL_ESTIMATORS)}")
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"logp and ref_logp must have the same shape, got {tuple(logp.shape)} "
            f"and {tuple(ref_logp.shape)}"
        )
    return KL_ESTIMATORS[kind](logp, ref_logp)  # [B, T]
