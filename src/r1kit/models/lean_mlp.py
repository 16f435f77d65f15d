"""Gated MLPs that keep half the activations for the backward pass (training forward only).

A Llama-family MLP computes down(silu(gate(x)) * up(x)). Plain autograd keeps four [tokens, inter]
tensors per layer for the backward pass: g = gate(x) (for silu), a = silu(g) and u = up(x) (for the
product), and h = a * u (for down's weight gradient). `_SwiGLUDown` keeps only g and u and recomputes
a and h in the backward (two elementwise ops over [tokens, inter], next to three matmuls of the same
size), as Liger-Kernel's and Unsloth's SwiGLU do. On SmolLM2-135M (inter 1536, 30 layers) a micro-batch
of 4 x 1037 tokens keeps 1.5 GB less; the gradients are the same products in the same order.

`lean_mlps(model)` swaps the forward of every MLP it can run exactly this way (the families and the
module checks below) for the duration of a `with` block, and restores them after. It leaves alone any
MLP whose down projection is not a plain `nn.Linear` with an ordinary weight (LoRA, FSDP2 shards,
DeepSpeed ZeRO-3 placeholders), anything hooked, activations other than SiLU, and models under gradient
checkpointing (which keep only each layer's input anyway).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from r1kit.models.heads import unhooked

# MLP classes whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x))
GATED_MLPS = frozenset({"LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP"})
_SILUS = frozenset({"SiLU", "SiLUActivation"})


class _SwiGLUDown(torch.autograd.Function):
    """y = (silu(g) * u) @ W^T + b, saving g, u (not silu(g), nor the product) for the backward."""

    @staticmethod
    def forward(ctx, g, u, weight, bias):  # g, u [..., I]; weight [H, I]; bias [H] or None
        ctx.save_for_backward(g, u, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.silu(g) * u, weight, bias)  # [..., H]

    @staticmethod
    def backward(ctx, grad):  # grad [..., H]
        g, u, weight = ctx.saved_tensors
        # under autocast the forward's matmul ran in the activations' dtype (bf16 g, u, fp32 weight): so here
        dt = g.dtype
        grad = grad.to(dt)  # [..., H]
        a = F.silu(g)  # [..., I]  recomputed
        dh = grad @ weight.to(dt)  # [..., I]
        dg = torch.ops.aten.silu_backward(dh * u, g)  # [..., I]  d/dg of silu(g), times dh * u
        du = dh * a  # [..., I]
        dw = db = None
        if ctx.needs_input_grad[2]:
            h = a * u  # [..., I]  recomputed
            dw = (grad.reshape(-1, grad.shape[-1]).t() @ h.reshape(-1, h.shape[-1])).to(weight.dtype)  # [H, I]
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db = grad.reshape(-1, grad.shape[-1]).sum(0).to(weight.dtype)  # [H]
        return dg, du, dw, db


def lean_forward(mlp):
    """The forward `lean_mlps` gives `mlp`: same output as its own, lighter backward."""
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj

    def forward(x):  # x [..., hidden] -> [..., hidden]
        return _SwiGLUDown.apply(gate(x), up(x), down.weight, down.bias)

    return forward


def leanable(mlp) -> bool:
    """A gated MLP of a known family, SiLU activation, plain unhooked `nn.Linear` down projection with an
    ordinary tensor weight (gate and up are called as modules, so adapters on them still apply)."""
    down = getattr(mlp, "down_proj", None)
    return (
        type(mlp).__name__ in GATED_MLPS
        and type(getattr(mlp, "act_fn", None)).__name__ in _SILUS
        and type(down) is torch.nn.Linear
        and type(down.weight.data) is torch.Tensor
        and not hasattr(down.weight, "ds_id")
        and unhooked(mlp, mlp.act_fn, down)
        and "forward" not in vars(mlp)  # not already swapped (or patched by someone else)
    )


def _checkpointed(model) -> bool:
    """Gradient checkpointing re-runs the layers' forward in the backward, after the block has restored the
    MLPs, and checks that the re-run saves what the first run did: so no swapping under it."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


@contextlib.contextmanager
def lean_mlps(model, enabled: bool = True):
    """Within the block, every `leanable` MLP of `model` runs `lean_forward`; restored on exit. Yields how
    many were swapped (none when not `enabled` or under gradient checkpointing)."""
    swapped = [m for m in model.modules() if leanable(m)] if enabled and not _checkpointed(model) else []
    for m in swapped:
        m.forward = lean_forward(m)
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            del m.forward
