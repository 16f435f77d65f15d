"""Where a causal LM's logits are exactly its LM head applied to its decoder's last hidden states.

The trainer may then take log-probs straight from the hidden states (algo/linear_logprobs.py: the
[B, T, V] logits never exist) by calling the decoder and the head's weight itself, which bypasses the
model's own forward. That is only exact for families whose forward adds nothing after the head (no
logit soft-capping or scaling) and only safe where nothing hooks those forwards (FSDP2 and DeepSpeed
ZeRO-3 gather weights in hooks; a PEFT adapter on the head replaces the `nn.Linear`).
"""

from __future__ import annotations

import torch
from torch.nn.modules import module as nn_module

# model types whose causal-LM forward is exactly lm_head(decoder(...).last_hidden_state)
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def unhooked(*modules) -> bool:
    """No forward (pre-)hooks on any of `modules` and no global module hooks: code that uses their weights
    directly instead of calling them skips nothing."""
    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def plain_head(model):
    """(decoder, lm_head) when `model`'s logits are exactly lm_head(decoder(...).last_hidden_state) and nothing
    wraps that: a `PLAIN_HEAD_MODEL_TYPES` family, a plain `nn.Linear` head with ordinary weights, no forward
    hooks on the model, its decoder or its head, no global module hooks; else None."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES or getattr(cfg, "final_logit_softcapping", None):
        return None
    if not (hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")):
        return None
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or decoder is None or decoder is model:
        return None
    if not unhooked(model, decoder, head):
        return None
    if type(head.weight.data) is not torch.Tensor or hasattr(head.weight, "ds_id"):
        return None  # a DTensor shard (FSDP2) or a DeepSpeed ZeRO-3 placeholder
    return decoder, head
