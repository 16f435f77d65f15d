"""Linear layers in oneDNN's blocked weight layout, for the fast decoder's decode steps on CPU.

A decode step multiplies a few rows (the batch's completions) by every weight matrix of the model.
With so few rows, the BLAS behind `F.linear` repacks each weight on every call, so a step reads and
writes the weights more than once: on SmolLM2-135M (8 rows, fp32, 2 threads) its projections ran at
6-9 GB/s against a 28 GB/s memory read. Repacking each weight ONCE per generate call into oneDNN's
layout (`torch.ops.mkldnn._reorder_linear_weight`, the op torch's inductor uses for frozen CPU
linears) and multiplying with `torch.ops.mkldnn._linear_pointwise` skips that work: the layers'
matmuls took 35-40 ms per step instead of 63-66 ms, the 49,152-token head 6.6 ms instead of 14.5 ms
(`bench/RESULTS.md`). Same products, summed in another order (differences at fp32 rounding).

The packed copy is a snapshot: it is made from the weights when a generate call starts (the
engine's decoder is built per call, so every call sees the current weights) and freed with the
decoder, so it never outlives the rollout (peak memory is in the training pass, not here). Only
plain `nn.Linear` modules with fp32 weights on CPU are packed; wrapped ones (LoRA, hooks) run as
they are.
"""

from __future__ import annotations

import torch

from r1kit.models.heads import unhooked


def available() -> bool:
    """Whether this torch build has oneDNN and the two ops (private to torch, so checked, not assumed)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return callable(torch.ops.mkldnn._reorder_linear_weight) and callable(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


def packable(mod) -> bool:
    """A plain `nn.Linear` (not a subclass, no forward hooks) with an fp32 weight on CPU."""
    return (
        type(mod) is torch.nn.Linear
        and unhooked(mod)
        and mod.weight.device.type == "cpu"
        and mod.weight.dtype == torch.float32
        and (mod.bias is None or mod.bias.dtype == torch.float32)
    )


class PackedLinear:
    """`mod(x)` for a packable linear `mod`, with its weight reordered once; `rows` is the number of
    rows the calls will have (a hint for the layout; any number of rows gives the same result)."""

    def __init__(self, mod: torch.nn.Linear, rows: int):
        self.weight = torch.ops.mkldnn._reorder_linear_weight(mod.weight.detach(), max(1, rows))  # [out, in], blocked
        self.bias = None if mod.bias is None else mod.bias.detach()  # [out]

    def __call__(self, x):  # x [..., in] -> [..., out]
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


class PackedFused:
    """Several packable linears that read the same input (q/k/v, or an MLP's gate and up) as ONE packed
    matmul over their stacked weights; returns their outputs, in order, as views of its output.

    One call over a [960, 576] matrix instead of three over [576|192|192, 576] (SmolLM2's q/k/v), and one
    over [3072, 576] instead of two for gate/up: fewer, larger matmuls per decode step (each call has a
    fixed cost; bench_rollout.py measures the step). Needs every bias present or every bias absent."""

    def __init__(self, mods, rows: int):
        w = torch.cat([m.weight.detach() for m in mods])  # [sum(out), in], freed after the reorder
        self.weight = torch.ops.mkldnn._reorder_linear_weight(w, max(1, rows))  # [sum(out), in], blocked
        self.bias = None if mods[0].bias is None else torch.cat([m.bias.detach() for m in mods])  # [sum(out)]
        self.sizes = [m.weight.shape[0] for m in mods]

    @staticmethod
    def fusable(mods) -> bool:
        return all(packable(m) for m in mods) and len({m.bias is None for m in mods}) == 1 and \
            len({m.weight.shape[1] for m in mods}) == 1

    def __call__(self, x):  # x [..., in] -> tuple of [..., out_i]
        y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")  # [..., sum(out)]
        return y.split(self.sizes, dim=-1)


class PackedMLP:
    """A gated MLP, down(act(gate(x)) * up(x)) (Llama, Qwen2/3, Mistral), on packed projections (gate and
    up fused into one matmul)."""

    def __init__(self, mlp, rows: int):
        self.gate_up = PackedFused((mlp.gate_proj, mlp.up_proj), rows)
        self.down = PackedLinear(mlp.down_proj, rows)
        self.act = mlp.act_fn

    def __call__(self, x):  # x [..., hidden] -> [..., hidden]
        gate, up = self.gate_up(x)  # each [..., inter]
        return self.down(self.act(gate) * up)  # [..., inter] -> [..., hidden]


def pack(mod, rows: int):
    """`mod` itself, or a `PackedLinear` of it where it is packable."""
    return PackedLinear(mod, rows) if packable(mod) else mod
