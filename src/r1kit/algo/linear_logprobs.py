"""Per-token log-probs straight from the last hidden states and the LM head: no [B, T, V] logits, ever.

``selective_log_softmax(hidden @ W.T + b, index)`` (logprobs.py) needs the logits [R, V] (R = B*T
rows) in memory for the forward and a second [R, V] tensor, their gradient, in the backward: at
R = 4096 rows and V = 49k that is 0.8 GB each in fp32, 2.5 GB each at V = 152k. Here the head's
matmul runs inside the chunk loop instead, on ``chunk_size`` rows at a time into one reused fp32
scratch, and backward recomputes each chunk's logits (one more [C, d] x [d, V] matmul per chunk)
rather than keeping them:

    forward   z_c = h_c W^T + b,   lse_c = logsumexp(z_c / tau),   logp = z_c[y] / tau - lse_c
    backward  dL/dz_c = g (onehot(y) - softmax(z_c / tau)) / tau          (g = dL/dlogp, per row)
              dL/dh_c = dL/dz_c W,   dL/dW += (dL/dz_c)^T h_c,   dL/db += sum_rows dL/dz_c

the same gradient as the logits path (the softmax Jacobian of the log-softmax, as in logprobs.py),
known in the literature as a fused linear cross-entropy. Gradients are computed only for the inputs
that need them (a frozen head, as with LoRA, skips the dW matmuls). First-order only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .logprobs import _check

__all__ = ["linear_selective_log_softmax", "fuse_pays", "FUSE_ABOVE", "FUSED_CHUNK_ELEMENTS"]

# fp32 values per chunk: 32M = 128 MB of scratch (682 rows at V = 49k, 220 at V = 152k; smaller chunks
# make the head's matmuls less efficient, bigger ones cost memory)
FUSED_CHUNK_ELEMENTS = 1 << 25
# Fusing pays once one forward's logits pass this many values (0.5 GB in fp32, and as much again for their
# gradient): below it the logits path is as fast or faster, since recomputing each chunk's logits in
# backward adds a third to the head's FLOPs (measured on SmolLM2, 2 CPU threads: bench/RESULTS.md).
FUSE_ABOVE = 1 << 27


def fuse_pays(rows: int, vocab: int) -> bool:
    """Whether `rows` rows of logits over a `vocab`-token vocabulary are big enough to fuse the head."""
    return rows * vocab > FUSE_ABOVE


def _logits_chunk(h: Tensor, weight: Tensor, bias: Tensor | None, tau: float, buf: Tensor) -> Tensor:
    """fp32 z / tau of one [C, d] chunk of hidden states, written into the reused scratch `buf` [>=C, V]."""
    out = buf[: h.shape[0]]  # [C, V]
    if weight.dtype == torch.float32 and h.dtype == torch.float32:
        torch.mm(h, weight.t(), out=out)  # [C, V] straight into the scratch: no page faults, no copy
    else:
        out.copy_(torch.mm(h.to(weight.dtype), weight.t()))  # [C, V] in the head's dtype, then fp32
    if bias is not None:
        out.add_(bias.to(torch.float32))  # [C, V]
    return out.div_(tau) if tau != 1.0 else out  # [C, V] z / tau


class _LinearSelectiveLogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, index: Tensor, temperature: float,
                chunk_size: int, with_entropy: bool):
        flat = hidden.reshape(-1, hidden.shape[-1])  # [R, d]
        idx = index.reshape(-1, 1)  # [R, 1]
        R, V = flat.shape[0], weight.shape[0]
        out = torch.empty(R, dtype=torch.float32, device=hidden.device)  # [R]
        lse = torch.empty_like(out)  # [R]
        ent = torch.empty_like(out) if with_entropy else out.new_empty(0)  # [R] or [0]
        z_buf = torch.empty(min(chunk_size, R), V, dtype=torch.float32, device=hidden.device)  # [C, V], reused
        for s in range(0, R, chunk_size):
            e = min(s + chunk_size, R)
            x = _logits_chunk(flat[s:e], weight, bias, temperature, z_buf)  # [C, V] x = z / tau
            picked = x.gather(-1, idx[s:e]).squeeze(-1)  # [C] x_y
            m = x.amax(dim=-1, keepdim=True)  # [C, 1] max, for a stable exp
            ex = x.sub_(m).exp_()  # [C, V] exp(x - m), in place (x is not needed again)
            zsum = ex.sum(dim=-1)  # [C] sum_v exp(x_v - m)
            lse[s:e] = zsum.log() + m.squeeze(-1)  # [C] logsumexp(x)
            out[s:e] = picked - lse[s:e]  # [C] log p(y)
            if with_entropy:  # H = log zsum - sum_v ex_v (x_v - m) / zsum, with x_v - m = log ex_v
                ent[s:e] = zsum.log() - ex.xlogy_(ex).sum(dim=-1) / zsum  # [C]
        ctx.save_for_backward(flat, weight, bias, idx, lse)
        ctx.hidden_shape = hidden.shape
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ent = ent.view(index.shape) if with_entropy else ent  # [B, T] or [0]
        ctx.mark_non_differentiable(ent)  # the tensor returned (a view of it would still carry a grad_fn)
        return out.view(index.shape), ent  # [B, T], [B, T]

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_entropy=None):
        flat, weight, bias, idx, lse = ctx.saved_tensors  # [R, d], [V, d], [V] | None, [R, 1], [R]
        tau, chunk_size = ctx.temperature, ctx.chunk_size
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        R, V = flat.shape[0], weight.shape[0]
        g = grad_out.reshape(-1, 1).to(torch.float32) / tau  # [R, 1] dL/dlogp, scaled for d(z / tau)/dz
        z_buf = torch.empty(min(chunk_size, R), V, dtype=torch.float32, device=flat.device)  # [C, V]
        grad_h = torch.empty_like(flat) if need_h else None  # [R, d]
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None  # [V, d]
        grad_b = torch.zeros(V, dtype=torch.float32, device=weight.device) if need_b else None  # [V]
        w32 = weight if weight.dtype == torch.float32 else None  # the head in fp32 for the matmuls, when it is
        for s in range(0, R, chunk_size):
            e = min(s + chunk_size, R)
            h = flat[s:e]  # [C, d]
            x = _logits_chunk(h, weight, bias, tau, z_buf)  # [C, V] z / tau, recomputed
            gz = x.sub_(lse[s:e, None]).exp_().mul_(-g[s:e])  # [C, V] -g softmax(z / tau)
            gz.scatter_add_(-1, idx[s:e], g[s:e])  # [C, V] g (onehot(y) - softmax) = dL/dz
            if w32 is not None and h.dtype == torch.float32:
                if need_h:
                    torch.mm(gz, w32, out=grad_h[s:e])  # [C, d] dL/dh
                if need_w:
                    grad_w.addmm_(gz.t(), h)  # [V, d] += dL/dz^T h
            else:  # low-precision head: the matmuls in its dtype, dW accumulated in fp32
                gzl = gz.to(weight.dtype)  # [C, V]
                if need_h:
                    grad_h[s:e] = torch.mm(gzl, weight).to(flat.dtype)  # [C, d]
                if need_w:
                    grad_w.add_(torch.mm(gzl.t(), h.to(weight.dtype)).float())  # [V, d]
            if need_b:
                grad_b.add_(gz.sum(0))  # [V]
        grad_h = grad_h.view(ctx.hidden_shape) if need_h else None  # [B, T, d]
        grad_w = grad_w.to(weight.dtype) if need_w else None  # [V, d]
        grad_b = grad_b.to(bias.dtype) if need_b else None  # [V]
        return grad_h, grad_w, grad_b, None, None, None, None


def linear_selective_log_softmax(
    hidden: Tensor,
    weight: Tensor,
    index: Tensor,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """fp32 [B, T] log softmax((hidden @ weight.T + bias) / temperature) gathered at ``index``, and the
    entropy of that softmax (a metric, no gradient) when ``with_entropy``, else None.

    Equals ``selective_log_softmax(F.linear(hidden, weight, bias), index, temperature)`` (R1-Zero's
    pi_theta(o_t | q, o_<t), paper eq. 1) without the [B, T, V] logits or their gradient; differentiable
    w.r.t. ``hidden``, ``weight`` and ``bias`` (first order). hidden [..., d], weight [V, d], index [...].
    """
    _check(temperature, chunk_size)
    if hidden.shape[:-1] != index.shape:
        raise ValueError(f"index shape {tuple(index.shape)} must equal hidden shape without the feature "
                         f"dimension {tuple(hidden.shape[:-1])}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight shape {tuple(weight.shape)} must be [V, {hidden.shape[-1]}]")
    lp, ent = _LinearSelectiveLogSoftmax.apply(hidden, weight, bias, index.long(), float(temperature), chunk_size,
                                               with_entropy)  # [B, T], [B, T] or [0]
    return lp, (ent if with_entropy else None)
