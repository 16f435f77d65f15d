"""Evaluation statistics: unbiased pass@k, majority vote, bootstrap intervals, behaviour rates."""

from __future__ import annotations

import random
from collections import Counter

# the reflection metric is a text metric of the rewards layer (next to the language-mixing rate)
from r1kit.rewards.reflection import REFLECTION_PHRASES, has_reflection, reflection_rate

__all__ = ["REFLECTION_PHRASES", "bootstrap_ci", "has_reflection", "majority_vote", "pass_at_k", "reflection_rate"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021, eq. 1): 1 - C(n-c, k) / C(n, k).

    `n` samples of which `c` are correct. Computed as a running product,
    1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the huge binomials.
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} is larger than the number of samples n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_vote(answers: list[str | None]) -> str | None:
    """The most frequent non-empty answer (ties: the one seen first), or None if there is none."""
    counts = Counter(a for a in answers if a not in (None, ""))
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a not in (None, "") and counts[a] == best)


def bootstrap_ci(per_problem: list[float], iters: int = 1000, alpha: float = 0.05, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean over problems (resampling problems)."""
    if not per_problem:
        return [float("nan"), float("nan")]
    rng = random.Random(seed)
    n = len(per_problem)
    means = sorted(sum(per_problem[rng.randrange(n)] for _ in range(n)) / n for _ in range(iters))
    return [means[int(alpha / 2 * iters)], means[min(iters - 1, int((1 - alpha / 2) * iters))]]
