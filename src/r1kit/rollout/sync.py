"""Weights for engines that hold their own copy of the policy (vLLM, a rollout copy, a server).

`merged_state_dict(model)` returns the weights a plain transformers model of the same architecture
loads with `load_state_dict(strict=True)`: for a peft LoRA model every adapted weight is
W + scale * B @ A (the active adapters' deltas, computed on the fly), the LoRA tensors are dropped
and the names lose peft's prefixes (`base_model.model.`, `.base_layer`). The training model is
never modified (no merge/unmerge in place, so no round-off drift in the trained base weights).
"""

from __future__ import annotations

import torch


def _lora_layer_cls():
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft not installed: no model can be a LoRA model
        return None
    return LoraLayer


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Base-model names -> tensors with LoRA deltas merged (detached; plain models: their state dict)."""
    get_base = getattr(model, "get_base_model", None)
    if get_base is None:
        return {k: v.detach() for k, v in model.state_dict().items()}
    base = get_base()
    LoraLayer = _lora_layer_cls()
    deltas: dict[str, torch.Tensor] = {}
    for name, mod in base.named_modules():
        if LoraLayer is None or not isinstance(mod, LoraLayer):
            continue
        if any(getattr(mod, "use_dora", {}).get(a, False) for a in mod.active_adapters):
            raise NotImplementedError(f"{name}: DoRA adapters are not supported by merged_state_dict")
        if getattr(mod, "merged", False) or getattr(mod, "disable_adapters", False):
            continue  # already inside the base weight / adapters switched off
        with torch.no_grad():
            delta = None
            for a in mod.active_adapters:
                if a in getattr(mod, "lora_A", {}) or a in getattr(mod, "lora_embedding_A", {}):
                    d = mod.get_delta_weight(a)
                    delta = d if delta is None else delta + d
        if delta is not None:
            deltas[f"{name}.base_layer.weight"] = delta
    active = set(getattr(model, "active_adapters", None) or [getattr(model, "active_adapter", "default")])
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        parts = key.split(".")
        if any(p.startswith(("lora_", "lora_magnitude")) for p in parts):
            continue  # adapter tensors: merged above
        if "original_module" in parts:
            continue  # modules_to_save keeps the frozen original beside the trained copy
        if "modules_to_save" in parts:
            i = parts.index("modules_to_save")
            if parts[i + 1] not in active:
                continue
            parts = parts[:i] + parts[i + 2:]
        value = value.detach()
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        out[".".join(p for p in parts if p != "base_layer")] = value
    return out
