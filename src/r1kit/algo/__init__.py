"""Pure math of R1-style RL: advantages, KL estimators, the GRPO loss, log-prob utilities.

Tensors and floats in, tensors out; torch only (no config objects, no I/O, no transformers).
"""

from .advantages import SCALES, group_advantages, zero_std_groups
from .drift import sampler_drift
from .kl import KL_ESTIMATORS, LOG_RATIO_CLAMP, kl_estimate
from .logprobs import DEFAULT_CHUNK_SIZE, entropy_from_logits, masked_mean, selective_log_softmax
from .loss import AGGREGATIONS, loss_normalizer, policy_loss

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_CHUNK_SIZE",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "SCALES",
    "entropy_from_logits",
    "group_advantages",
    "kl_estimate",
    "loss_normalizer",
    "masked_mean",
    "policy_loss",
    "sampler_drift",
    "selective_log_softmax",
    "zero_std_groups",
]
