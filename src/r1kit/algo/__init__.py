"""Pure math of R1-style RL: advantages, KL estimators, the GRPO-family losses, log-prob utilities.

Tensors and floats in, tensors out; torch only (no config objects, no I/O, no transformers).
"""

from .advantages import SCALES, group_advantages, zero_std_groups
from .aggregations import AGGREGATIONS, MICRO_BATCH_NORMALISED, loss_normalizer
from .drift import sampler_drift
from .kl import KL_ESTIMATORS, LOG_RATIO_CLAMP, kl_estimate
from .linear_logprobs import linear_selective_log_softmax
from .logprobs import DEFAULT_CHUNK_SIZE, entropy_from_logits, masked_mean, selective_log_softmax
from .loss import policy_loss
from .sampler_correction import IS_MODES, sampler_correction_stats, sampler_correction_weights
from .surrogates import (
    IS_LEVELS,
    SURROGATES,
    cispo_surrogate,
    clipped_surrogate,
    importance_log_ratio,
    sapo_surrogate,
)

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_CHUNK_SIZE",
    "IS_LEVELS",
    "IS_MODES",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "MICRO_BATCH_NORMALISED",
    "SCALES",
    "SURROGATES",
    "cispo_surrogate",
    "clipped_surrogate",
    "entropy_from_logits",
    "group_advantages",
    "importance_log_ratio",
    "kl_estimate",
    "linear_selective_log_softmax",
    "loss_normalizer",
    "masked_mean",
    "policy_loss",
    "sampler_correction_stats",
    "sampler_correction_weights",
    "sampler_drift",
    "sapo_surrogate",
    "selective_log_softmax",
    "zero_std_groups",
]
