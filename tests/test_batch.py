"""The training forward (r1kit.train.batch.completion_logps): prompt sharing and activation
checkpointing give the plain per-row forward's log-probs, entropies and gradients."""

import pytest
import torch

from r1kit.models.heads import plain_head
from r1kit.models.loading import enable_activation_checkpointing
from r1kit.models.tiny import build_model, build_tokenizer
from r1kit.algo.linear_logprobs import FUSE_ABOVE
from r1kit.models.forward_cost import SHARE_BELOW, shared_cost, unmasked_cost
from r1kit.train.batch import (_can_share_prompts, _checkpointed_layers, _flop_rates, _prompt_starts, choose_head,
                               choose_path, collate, completion_logps)



def _batch(tok):
    # two GRPO groups (3 + 2 rows) with prompts of different lengths (left padding) and completions of
    # different lengths (right padding), one completion empty of everything but one token
    p1, p2 = tok("What is 17 * 3?").input_ids, tok("Hi").input_ids
    comps = [tok(t).input_ids for t in (" <think> 51", " 50 ok", " <answer> 51 </answer>", " x", " hello there")]
    return collate([p1, p1, p1, p2, p2], comps, tok.pad_token_id)


def _run(model, batch, **kw):
    model.zero_grad(set_to_none=True)
    logps, ent = completion_logps(model, batch, temperature=0.7, with_entropy=True, **kw)  # [B, T]
    mask = batch.completion_mask
    (logps * mask * torch.linspace(0.5, 1.5, mask.numel()).view_as(mask)).sum().backward()  # weighted: rows differ
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach() * mask, ent * mask, grads


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_prompt_sharing_and_checkpointing_equal_the_plain_forward(arch):
    tok = build_tokenizer()
    model = build_model(tok, arch=arch, num_kv_heads=2, seed=0).train()
    batch = _batch(tok)
    plain = _run(model, batch, path="plain", head="logits")
    assert choose_head(model, 40, "fused") is not None  # the fused head really runs below
    others = [_run(model, batch, path=path, head=head) for path in ("plain", "shared", "unmasked")
              for head in ("logits", "fused")][1:]  # the two prompt lengths run as two unmasked sub-batches
    others.append(_run(model, batch))
    enable_activation_checkpointing(model)
    try:
        assert _can_share_prompts(model, _checkpointed_layers(model))  # the shared path, not the fallback
        others += [_run(model, batch, path=path, head=head) for path in ("shared", "unmasked", "plain")
                   for head in ("logits", "fused")]
    finally:
        model.activation_checkpointing_disable()
    assert plain[0].abs().sum() > 0 and len(plain[2]) == len(list(model.parameters()))
    for other in others:
        assert torch.allclose(other[0], plain[0], atol=1e-5, rtol=0)
        assert torch.allclose(other[1], plain[1], atol=1e-5, rtol=0)
        assert other[2].keys() == plain[2].keys()
        for name, g in plain[2].items():
            assert torch.allclose(other[2][name], g, atol=1e-5, rtol=1e-4), name


def test_no_prompt_sharing_where_checkpointed_layers_would_drop_the_cache(monkeypatch):
    from transformers.modeling_layers import GradientCheckpointingLayer

    tok = build_tokenizer()
    model = build_model(tok, seed=0).train()
    assert _checkpointed_layers(model) == []  # checkpointing off: sharing needs no flag
    enable_activation_checkpointing(model)
    layers = _checkpointed_layers(model)
    assert len(layers) == model.config.num_hidden_layers and all(isinstance(m, GradientCheckpointingLayer) for m in layers)
    # a transformers release without the keep-the-cache flag drops every cache in checkpointed layers
    monkeypatch.delattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache")
    assert _checkpointed_layers(model) is None and not _can_share_prompts(model, None)


def test_auto_path_shares_long_prompts_and_unmasks_long_completions():
    tok = build_tokenizer()
    model = build_model(tok, seed=0).train()
    lin, pair = _flop_rates(model)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    cfg = model.config
    assert lin == 2 * n and pair == 4 * cfg.num_hidden_layers * cfg.hidden_size
    # one group of 8 rows, prompt 10 tokens, completion 4: the prompt once + 8 x 4 tokens against 14 keys,
    # vs 8 rows of 14 tokens, causal (14 * 14 / 2 pairs each)
    assert shared_cost(1, 8, 10, 4, lin, pair) == 10 * (lin + 10 * pair) + 8 * 4 * (lin + 14 * pair)
    starts = torch.zeros(8, dtype=torch.long)
    assert unmasked_cost(starts, 10, 4, lin, pair) == 8 * (14 * lin + 14 * 14 / 2 * pair)

    def choice(prompt_len, completion_len):
        am = torch.ones(8, prompt_len + completion_len, dtype=torch.long)
        groups = (torch.tensor([0]), torch.zeros(8, dtype=torch.long))  # one group of 8
        return choose_path(model, am, prompt_len, completion_len, groups, [])

    assert choice(240, 64) == "shared"  # R1-length prompt, short completions: run the prompt once
    assert choice(24, 1024) == "unmasked"  # short prompt, long completions: skip half the attention
    # sharing must save at least 1 - SHARE_BELOW of the estimate (its second pass has costs the FLOPs miss)
    narrow = 0
    for P in (4, 8, 12, 16, 24, 32):
        for T in (16, 32, 64, 128):
            ratio = shared_cost(1, 8, P, T, lin, pair) / unmasked_cost(torch.zeros(8, dtype=torch.long), P, T, lin, pair)
            assert choice(P, T) == ("shared" if ratio <= SHARE_BELOW else "unmasked"), (P, T, ratio)
            narrow += SHARE_BELOW < ratio < 1  # cheaper by the estimate, yet not shared
    assert narrow > 0
    am = torch.ones(2, 6, dtype=torch.long)
    am[0, 0] = 0  # a row whose prompt starts one column later
    assert _prompt_starts(am[:, :3]).tolist() == [1, 0]
    assert choose_path(model, am, 3, 3, None, [], path="shared") == "plain"  # no groups: cannot share
    assert choose_path(model, am, 3, 3, None, []) == "unmasked"  # rows of each prompt length run unmasked
    with pytest.raises(ValueError, match="path must be one of"):
        choose_path(model, am, 3, 3, None, [], path="fast")


def test_fused_head_only_where_the_logits_are_exactly_the_heads_output():
    tok = build_tokenizer()
    model = build_model(tok, seed=0).train()
    decoder, head = plain_head(model)
    assert decoder is model.get_decoder() and head is model.get_output_embeddings()
    V = head.weight.shape[0]
    assert choose_head(model, 8, "logits") is None
    assert choose_head(model, 8, "fused") is not None
    # auto: only where one forward's logits would pass FUSE_ABOVE values
    assert choose_head(model, FUSE_ABOVE // V, "auto") is None
    assert choose_head(model, FUSE_ABOVE // V + 1, "auto") is not None
    with pytest.raises(ValueError, match="head must be one of"):
        choose_head(model, 8, "chunked")
    # anything that hooks the forward (FSDP2 and DeepSpeed do) keeps the model's own forward
    handle = model.register_forward_pre_hook(lambda *a: None)
    assert plain_head(model) is None and choose_head(model, 10**9, "fused") is None
    handle.remove()
    handle = head.register_forward_hook(lambda *a: None)
    assert plain_head(model) is None
    handle.remove()
    # a model family whose forward may scale or soft-cap its logits is never fused
    model.config.model_type = "gemma2"
    assert plain_head(model) is None


def test_the_cache_goes_by_the_keyword_the_model_names():
    import inspect
    import warnings

    from r1kit.models.loading import cache_kwarg

    tok = build_tokenizer()
    model = build_model(tok, seed=0).train()
    want = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    assert cache_kwarg(model) == want

    class Old(torch.nn.Module):  # a remote-code model with the old signature
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    assert cache_kwarg(Old()) == "past_key_values"
    with warnings.catch_warnings(record=True) as caught:  # prompt sharing passes its cache without deprecation
        warnings.simplefilter("always")
        completion_logps(model, _batch(tok), path="shared", head="fused")
        completion_logps(model, _batch(tok), path="shared", head="logits")
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_fused_head_under_lora_gives_the_same_adapter_gradients():
    from peft import get_peft_model

    from r1kit.models.loading import lora_config

    tok = build_tokenizer()
    model = get_peft_model(build_model(tok, seed=0), lora_config({"r": 4, "dropout": 0.0})).train()
    assert choose_head(model, 8, "fused") is not None  # the head is a plain frozen Linear under the adapters
    batch = _batch(tok)
    for path in ("shared", "plain"):
        want, got = _run(model, batch, path=path, head="logits"), _run(model, batch, path=path, head="fused")
        assert torch.allclose(got[0], want[0], atol=1e-5, rtol=0)
        assert got[2].keys() == want[2].keys() and all("lora" in name for name in got[2])
        for name, g in want[2].items():
            assert torch.allclose(got[2][name], g, atol=1e-5, rtol=1e-4), name
