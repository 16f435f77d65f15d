"""FLOP estimates of the two exact layouts of the training forward (train/batch.py `completion_logps`), and
when prompt sharing pays. Arithmetic only, so the planner (diagnose/plan_estimate.py) makes the same choice.

`lin`: FLOPs per token of the decoder's linear layers (2 x the non-embedding parameters); `pair`: FLOPs per
attended (query, key) pair (4 x layers x hidden size: q.k and p.v). Only compared between layouts.
"""

from __future__ import annotations

import torch

# Prompt sharing runs the layers twice (the prompt with a cache, then the completions on it), copies the cache
# into every row, runs the prompt's matmuls on few rows, and on a later micro-batch holds a second set of
# parameter gradients until the prompt's pass adds its own: none of that is in the FLOP estimates. So sharing
# is chosen only where they say it saves at least 15%. Measured (2 threads, two micro-batches per step):
# SmolLM2, 12-token prompts, 4 x 64 tokens, estimate 0.89: shared 4.96 s, unmasked 4.72 s and 186 MB less peak
# RSS; 97-token prompts, 4 x 256 tokens, estimate 0.83: shared 16.6 s, unmasked 21.4 s; tiny model, 24-token
# prompts, 16 x 64 tokens, estimate 0.78: shared 0.243 s, unmasked 0.289 s (bench/RESULTS.md).
SHARE_BELOW = 0.85


def shared_cost(groups: int, rows: int, P: int, T: int, lin: float, pair: float) -> float:
    """Estimated FLOPs of the prompt-shared forward: each group's prompt once (masked: every (query, key)
    pair of the P x P square), then every row's T completion tokens against P + T keys (masked: the whole
    rectangle, as the kernel cannot skip blocks under an explicit mask)."""
    return groups * P * (lin + P * pair) + rows * T * (lin + (P + T) * pair)


def unmasked_cost(starts: torch.Tensor, P: int, T: int, lin: float, pair: float) -> float:
    """Estimated FLOPs of the unmasked forward: each row's own prompt + completion, causal (half the square).
    `starts` [B]: each row's first live prompt column."""
    L = (P - starts).double() + T  # [B] tokens per row
    return float((L * lin + L * L / 2 * pair).sum())


def sharing_pays(groups: int, starts: torch.Tensor, P: int, T: int, lin: float, pair: float) -> bool:
    """Whether `groups` prompts shared by the rows whose prompts start at `starts` [B] (of P columns, T completion
    tokens) are estimated to cost at most `SHARE_BELOW` x the unmasked forward."""
    return shared_cost(groups, starts.shape[0], P, T, lin, pair) <= SHARE_BELOW * unmasked_cost(starts, P, T, lin, pair)
