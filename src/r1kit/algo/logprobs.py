"""Memory-lean per-token log-probabilities and entropies from logits.

A full-vocabulary fp32 log-softmax of [B, T, V] logits is huge (B*T = 16k rows of a 152k vocabulary
is ~10 GB). Everything here works on chunks of ``chunk_size`` rows of the flattened [B*T, V]
logits, in fp32 per chunk (so bf16 logits are fine), via

    log softmax(z / tau)[y] = z_y / tau - logsumexp(z / tau)

``selective_log_softmax`` is a custom autograd function: forward keeps only the per-row logsumexp
[B*T]; backward recomputes each chunk's softmax and writes the gradient
d logp_y / d z = (onehot(y) - softmax(z / tau)) / tau  chunk by chunk. So no fp32 [B, T, V] copy is
held for backward either (plain autograd would keep every chunk's fp32 copy alive until backward).
Only first-order gradients are supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["selective_log_softmax", "selective_log_softmax_with_entropy", "entropy_from_logits", "masked_mean",
           "DEFAULT_CHUNK_SIZE", "chunk_rows"]

# 1024 rows x 152k vocabulary x 4 bytes ~ 0.6 GB of fp32 scratch per chunk.
DEFAULT_CHUNK_SIZE = 1024
# Callers that know the vocabulary size can size chunks by elements instead (see `chunk_rows`).
CHUNK_ELEMENTS = 1 << 24  # 16M fp32 = 64 MB of scratch per chunk


def chunk_rows(vocab_size: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Rows per chunk so that one fp32 [rows, V] chunk holds about `elements` values (at least 1 row)."""
    return max(1, elements // max(1, int(vocab_size)))


def _check(temperature: float, chunk_size: int) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _read_in_place(logits: Tensor, temperature: float) -> bool:
    """Whether chunks of these logits are already z / tau in fp32 (read as they are, never copied)."""
    return logits.dtype == torch.float32 and temperature == 1.0


def _scaled_fp32(chunk: Tensor, temperature: float, buf: Tensor | None = None) -> Tensor:
    """A [C, V] logits chunk in fp32 divided by the temperature, for reading only: the chunk itself when
    `_read_in_place` (no copy), else written into `buf` (a reused [>=C, V] fp32 scratch) or a new tensor."""
    if _read_in_place(chunk, temperature):
        return chunk  # [C, V] (not mutated by any caller)
    out = buf[: chunk.shape[0]] if buf is not None else torch.empty(chunk.shape, dtype=torch.float32,
                                                                     device=chunk.device)  # [C, V]
    out.copy_(chunk)  # [C, V] in fp32 (dividing first would round the quotient to the chunk's dtype)
    return out.div_(temperature) if temperature != 1.0 else out  # [C, V]


def _scratch(flat: Tensor, chunk_size: int) -> Tensor:
    """One fp32 [min(chunk, R), V] buffer reused by every chunk (fresh big allocations page-fault each time)."""
    return torch.empty(min(chunk_size, flat.shape[0]), flat.shape[1], dtype=torch.float32, device=flat.device)


def _copy_scratch(flat: Tensor, temperature: float, chunk_size: int) -> Tensor | None:
    """The scratch `_scaled_fp32` writes each chunk's z / tau into, or None when chunks are read in place."""
    return None if _read_in_place(flat, temperature) else _scratch(flat, chunk_size)


class _SelectiveLogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, index: Tensor, temperature: float, chunk_size: int, with_entropy: bool):
        flat = logits.reshape(-1, logits.shape[-1])  # [R, V], R = B*T (a view when logits are contiguous)
        idx = index.reshape(-1, 1)  # [R, 1]
        out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)  # [R]
        lse = torch.empty_like(out)  # [R]
        ent = torch.empty_like(out) if with_entropy else out.new_empty(0)  # [R] or [0]
        copy_buf = _copy_scratch(flat, temperature, chunk_size)
        exp_buf = _scratch(flat, chunk_size)  # exp(z - max) of a chunk
        for s in range(0, flat.shape[0], chunk_size):
            e = min(s + chunk_size, flat.shape[0])
            x = _scaled_fp32(flat[s:e], temperature, copy_buf)  # [C, V]
            m = x.amax(dim=-1, keepdim=True)  # [C, 1] max, for a stable exp
            ex = torch.sub(x, m, out=exp_buf[: e - s]).exp_()  # [C, V] exp(z - max)
            z = ex.sum(dim=-1)  # [C] partition function / exp(max)
            lse[s:e] = z.log() + m.squeeze(-1)  # [C] logsumexp
            out[s:e] = x.gather(-1, idx[s:e]).squeeze(-1) - lse[s:e]  # [C]
            if with_entropy:  # H = lse - sum_v p_v z_v = lse - (sum_v ex_v z_v) / sum_v ex_v
                dot = ex.mul_(x).sum(dim=-1)  # [C] sum_v ex_v z_v (in place: ex is not needed again)
                ent[s:e] = lse[s:e] - dot / z  # [C]
        ctx.save_for_backward(logits, index, lse)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(ent)
        return out.view(index.shape), (ent.view(index.shape) if with_entropy else ent)  # [B, T], [B, T]

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_entropy=None):
        logits, index, lse = ctx.saved_tensors  # [B, T, V], [B, T], [R]
        tau, chunk_size = ctx.temperature, ctx.chunk_size
        flat = logits.reshape(-1, logits.shape[-1])  # [R, V]
        idx = index.reshape(-1, 1)  # [R, 1]
        g = grad_out.reshape(-1, 1).to(torch.float32) / tau  # [R, 1] d logp / d (z / tau) scaled back to z
        grad = torch.empty(flat.shape, dtype=logits.dtype, device=logits.device)  # [R, V]
        fp32 = logits.dtype == torch.float32
        buf = _copy_scratch(flat, tau, chunk_size)
        for s in range(0, flat.shape[0], chunk_size):
            e = min(s + chunk_size, flat.shape[0])
            x = _scaled_fp32(flat[s:e], tau, buf)  # [C, V] z / tau (the chunk itself, or buf)
            # softmax, written straight into the gradient's rows when they are fp32 (else into buf, in place)
            p = torch.sub(x, lse[s:e, None], out=grad[s:e] if fp32 else x).exp_()  # [C, V] softmax(z / tau)
            gc = p.mul_(-g[s:e])  # [C, V] -g * softmax
            gc.scatter_add_(-1, idx[s:e], g[s:e])  # [C, V] + g * onehot(y)
            if not fp32:
                grad[s:e] = gc  # [C, V] cast to the logits' dtype
        return grad.view(logits.shape), None, None, None, None  # [B, T, V]


def selective_log_softmax(
    logits: Tensor,
    index: Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """fp32 [B, T]: log softmax(logits / temperature) gathered at ``index``.

    Equals ``torch.log_softmax(logits.float() / temperature, -1).gather(-1, index[..., None])
    .squeeze(-1)`` without materialising the [B, T, V] fp32 log-softmax; differentiable w.r.t.
    ``logits`` (first order). Any leading shape works: logits [..., V], index [...].

    The temperature must be the sampling temperature, so that these log-probs match the rollout's
    (design.md: ``Completion.logprobs`` are under softmax(logits / temperature)).
    """
    _check(temperature, chunk_size)
    if logits.shape[:-1] != index.shape:
        raise ValueError(
            f"index shape {tuple(index.shape)} must equal logits shape without the vocabulary "
            f"dimension {tuple(logits.shape[:-1])}"
        )
    return _SelectiveLogSoftmax.apply(logits, index.long(), float(temperature), chunk_size, False)[0]  # [B, T]


def selective_log_softmax_with_entropy(
    logits: Tensor,
    index: Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """(:func:`selective_log_softmax`, :func:`entropy_from_logits`) from ONE chunked pass over the
    logits: each fp32 chunk is made once and gives the logsumexp, the picked log-prob and the entropy.
    The log-probs are differentiable as in :func:`selective_log_softmax`; the entropy is a metric
    (no gradient). Both fp32 [B, T]."""
    _check(temperature, chunk_size)
    if logits.shape[:-1] != index.shape:
        raise ValueError(
            f"index shape {tuple(index.shape)} must equal logits shape without the vocabulary "
            f"dimension {tuple(logits.shape[:-1])}"
        )
    return _SelectiveLogSoftmax.apply(logits, index.long(), float(temperature), chunk_size, True)  # [B, T] x 2


@torch.no_grad()
def entropy_from_logits(
    logits: Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """fp32 [B, T]: entropy H = logsumexp(z) - sum_v softmax(z)_v z_v of softmax(logits / tau).

    A metric only: computed under ``torch.no_grad`` (the result has no grad), chunked like
    :func:`selective_log_softmax`.
    """
    _check(temperature, chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])  # [R, V]
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)  # [R]
    for s in range(0, flat.shape[0], chunk_size):
        x = _scaled_fp32(flat[s : s + chunk_size], temperature)  # [C, V]
        lse = torch.logsumexp(x, dim=-1)  # [C]
        p = torch.softmax(x, dim=-1)  # [C, V]
        out[s : s + chunk_size] = lse - (p * x).sum(dim=-1)  # [C]
    return out.view(logits.shape[:-1])  # [B, T]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over entries where ``mask`` is nonzero (mask values act as weights).

    Never divides by zero: where the mask is empty the result is 0 (with a defined, zero gradient).
    Values of ``x`` outside the mask are ignored even if they are NaN or inf.
    """
    m = mask.to(x.dtype) if x.is_floating_point() else mask.float()  # [B, T]
    xm = torch.where(m != 0, x, torch.zeros_like(x)) * m  # [B, T]
    num = xm.sum() if dim is None else xm.sum(dim=dim)  # [] or reduced
    den = m.sum() if dim is None else m.sum(dim=dim)  # [] or reduced
    return num / torch.where(den != 0, den, torch.ones_like(den))  # [] or reduced
