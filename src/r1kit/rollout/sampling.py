"""Sampling one token per row, and the log-prob the engine reports for it.

logp = log_softmax(logits / T) in fp32; the chosen token's log-prob is read from this UNFILTERED
distribution (what the trainer recomputes as old log-probs); then top-k and top-p filtering; then an
exact categorical draw (exponential-race / Gumbel-max trick) with a `torch.Generator` seeded from
`params.seed`. T == 0 is greedy, log-probs then at T = 1.
"""

from __future__ import annotations

import torch

from r1kit.rollout.base import SamplingParams


def make_generator(seed: int | None, device) -> torch.Generator:
    """The random stream of one `generate` call: seeded (reproducible) or from fresh entropy."""
    gen = torch.Generator(device=device)
    if seed is not None:  # same seed + inputs + weights + engine settings -> same output
        gen.manual_seed(seed)
    else:
        gen.seed()
    return gen


def sample(logits, params: SamplingParams, gen):
    """logits [B, V] fp32 -> (token [B], logp of token under softmax(logits/T) before filtering [B])."""
    if params.temperature == 0:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(1, tok[:, None]).squeeze(1)
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    filt = logp
    if 0 < params.top_k < logp.shape[-1]:
        kth = logp.topk(params.top_k, dim=-1).values[:, -1:]
        filt = filt.masked_fill(filt < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_lp, order = filt.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_lp, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= params.top_p  # keep the smallest prefix with mass >= top_p
        filt = filt.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    # exact categorical draw: argmax p_i / E_i with E_i ~ Exp(1) (equivalent to Gumbel-max)
    race = torch.rand(filt.shape, generator=gen, device=filt.device).log_().neg_()  # Exp(1) draws
    tok = (filt - filt.amax(-1, keepdim=True)).exp_().div_(race).argmax(-1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)
