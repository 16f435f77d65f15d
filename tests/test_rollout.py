"""r1kit.rollout: the HF engine's own decode loop against transformers and against first principles."""

import types

import pytest
import torch

from r1kit.models.tiny import build_model, build_tokenizer
from r1kit.rollout import Completion, RolloutEngine, SamplingParams, make_engine, packed_linear
from r1kit.rollout.hf import HFEngine

TEXTS = ["What is 17 * 3?", "Hi", "Compute 245 - 78. Let me check", "<think> 9 + 8 ="]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _sharpen(model, seed=0):
    """Re-draw the weights with unit-scale init: random tiny models otherwise repeat one token."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * (0.4 if "embed" in name else p.shape[1] ** -0.5))
    return model


def _model(tok, arch="qwen2", seed=0, **kw):
    return _sharpen(build_model(tok, arch=arch, seed=seed, **kw), seed=seed).eval()


@pytest.fixture(scope="module")
def qwen(tok):
    return _model(tok)


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok(t).input_ids for t in TEXTS]


def _eos_bias(model, tok, bias):
    """Push EOS up by `bias` logits (a hook on lm_head: seen by generate, the engine and forward)."""
    def hook(_m, _i, out):
        out = out.clone()
        out[..., tok.eos_token_id] += bias
        return out
    return model.lm_head.register_forward_hook(hook)


def _reference_greedy(model, tok, prompts, max_new):
    """transformers' greedy decode of the left-padded batch, each row cut after its first EOS."""
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
    rows = []
    for r in out[:, enc.input_ids.shape[1]:].tolist():
        rows.append(r[: r.index(tok.eos_token_id) + 1] if tok.eos_token_id in r else r)
    return rows


def _full_forward_logprobs(model, c: Completion, temperature: float):
    ids = torch.tensor([c.prompt_ids + c.completion_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(c.prompt_ids) - 1 : -1].float()
    lp = torch.log_softmax(logits / temperature, -1)
    return lp.gather(1, torch.tensor(c.completion_ids)[:, None]).squeeze(1)


def test_contract(qwen, tok):
    eng = make_engine("hf", qwen, tok)
    assert isinstance(eng, HFEngine) and isinstance(eng, RolloutEngine)
    with pytest.raises(ValueError):
        make_engine("nope", qwen, tok)
    assert SamplingParams(stop="x").stop == ("x",)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)
    assert eng.generate([], SamplingParams()) == []


@pytest.mark.parametrize("backend", ["fast", "hf"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_greedy_matches_generate(tok, prompts, arch, backend):
    model = _model(tok, arch=arch, num_kv_heads=2)  # GQA too
    ref = _reference_greedy(model, tok, prompts, 24)
    out = make_engine("hf", model, tok, backend=backend).generate(prompts, SamplingParams(max_new_tokens=24, temperature=0))
    assert [c.completion_ids for c in out] == ref
    assert len({tuple(r) for r in ref}) == len(ref)  # the rows differ: the comparison means something
    for c in out:
        assert c.finish_reason == ("eos" if c.completion_ids[-1] == tok.eos_token_id else "length")
        assert c.text == tok.decode(c.completion_ids, skip_special_tokens=True)


@pytest.mark.parametrize("backend,check_every", [("fast", 1), ("fast", 3), ("hf", 2)])
def test_greedy_with_eos_and_compaction_matches_generate(qwen, tok, prompts, backend, check_every):
    many = prompts + [p[:-1] for p in prompts if len(p) > 1] + [p + p[:2] for p in prompts]
    handle = _eos_bias(qwen, tok, 8.0)  # rows reach EOS at different steps
    try:
        ref = _reference_greedy(qwen, tok, many, 20)
        eng = make_engine("hf", qwen, tok, backend=backend, check_every=check_every, compact_frac=0.1)
        out = eng.generate(many, SamplingParams(max_new_tokens=20, temperature=0))
    finally:
        handle.remove()
    assert [c.completion_ids for c in out] == ref
    reasons = [c.finish_reason for c in out]
    assert "eos" in reasons and "length" in reasons  # compaction actually happened mid-run
    for c in out:
        if c.finish_reason == "eos":
            assert c.completion_ids.index(tok.eos_token_id) == len(c.completion_ids) - 1
            assert "<|endoftext|>" not in c.text


@pytest.mark.parametrize("arch,backend,pack", [("qwen2", "fast", False), ("qwen2", "fast", True), ("llama", "fast", True),
                                               ("qwen2", "hf", None)])
def test_sampled_logprobs_match_full_forward(tok, prompts, arch, backend, pack):
    model = _model(tok, arch=arch)
    params = SamplingParams(n=3, max_new_tokens=12, temperature=0.7, top_k=40, top_p=0.9, seed=1)
    out = make_engine("hf", model, tok, backend=backend, pack_weights=pack).generate(prompts, params)
    for c in out:
        ref = _full_forward_logprobs(model, c, params.temperature)
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-5, rtol=0), (c.logprobs, ref)


@pytest.mark.parametrize("cache", ["shared", "private"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_shared_prompt_cache_with_compaction_matches_full_forward(tok, prompts, arch, cache):
    # n samples share one prompt cache (or each row holds a copy of it: "private"); rows finish (EOS) at
    # different steps and leave the batch, so the row -> (prompt, slot) map and the private pad biases are
    # exercised after compaction; GQA folds 2 query heads per kv head
    model = _model(tok, arch=arch, num_kv_heads=2)
    handle = _eos_bias(model, tok, 3.0)
    try:
        eng = make_engine("hf", model, tok, backend="fast", compact_frac=0.1, kv_cache=cache)
        out = eng.generate(prompts, SamplingParams(n=4, max_new_tokens=16, temperature=1.0, seed=2))
        reasons = [c.finish_reason for c in out]
        assert "eos" in reasons and "length" in reasons
        assert len({len(c.completion_ids) for c in out}) > 2  # many different finishing steps
        for c in out:
            ref = _full_forward_logprobs(model, c, 1.0)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-5, rtol=0), (c.logprobs, ref)
    finally:
        handle.remove()


def test_logprobs_are_before_filtering(qwen, tok, prompts):
    # top_k=1 draws the argmax (= greedy) but the log-probs are under the unfiltered tempered softmax
    greedy = make_engine("hf", qwen, tok).generate(prompts, SamplingParams(max_new_tokens=10, temperature=0))
    topk1 = make_engine("hf", qwen, tok).generate(prompts, SamplingParams(max_new_tokens=10, temperature=0.8, top_k=1, seed=3))
    assert [c.completion_ids for c in topk1] == [c.completion_ids for c in greedy]
    tiny_p = make_engine("hf", qwen, tok).generate(prompts, SamplingParams(max_new_tokens=10, top_p=1e-6, seed=4))
    assert [c.completion_ids for c in tiny_p] == [c.completion_ids for c in greedy]  # top-p keeps the argmax
    for c in topk1:
        assert all(lp < 0 for lp in c.logprobs)  # not log(1) from the filtered distribution
        assert torch.allclose(torch.tensor(c.logprobs), _full_forward_logprobs(qwen, c, 0.8), atol=1e-5, rtol=0)
    for c in greedy:  # greedy log-probs are at temperature 1
        assert torch.allclose(torch.tensor(c.logprobs), _full_forward_logprobs(qwen, c, 1.0), atol=1e-5, rtol=0)


def test_seed_determinism_and_grouping(qwen, tok, prompts):
    eng = make_engine("hf", qwen, tok)
    params = SamplingParams(n=4, max_new_tokens=16, temperature=1.0, seed=123)
    a, b = eng.generate(prompts, params), eng.generate(prompts, params)
    c = eng.generate(prompts, SamplingParams(n=4, max_new_tokens=16, temperature=1.0, seed=124))
    ids = lambda outs: [x.completion_ids for x in outs]  # noqa: E731
    assert ids(a) == ids(b) and [x.logprobs for x in a] == [x.logprobs for x in b]
    assert ids(a) != ids(c)
    assert len(a) == len(prompts) * 4
    for i, x in enumerate(a):
        assert x.prompt_index == i // 4 and x.prompt_ids == prompts[i // 4]
    # the n samples of one prompt are different draws, not copies
    assert len({tuple(x.completion_ids) for x in a[:4]}) > 1


def test_max_new_tokens(qwen, tok, prompts):
    out = make_engine("hf", qwen, tok, eos_token_ids=()).generate(prompts, SamplingParams(n=2, max_new_tokens=7, seed=0))
    assert all(len(c.completion_ids) == len(c.logprobs) == 7 and c.finish_reason == "length" for c in out)


def test_sampled_eos(qwen, tok, prompts):
    handle = _eos_bias(qwen, tok, 6.0)
    try:
        out = make_engine("hf", qwen, tok).generate(prompts, SamplingParams(n=4, max_new_tokens=30, seed=5))
    finally:
        handle.remove()
    eos = [c for c in out if c.finish_reason == "eos"]
    assert eos and len(eos) < len(out)
    for c in out:
        assert len(c.completion_ids) == len(c.logprobs) <= 30
        assert (tok.eos_token_id in c.completion_ids) == (c.finish_reason == "eos")
        if c.finish_reason == "eos":
            assert c.completion_ids[-1] == tok.eos_token_id
        else:
            assert len(c.completion_ids) == 30


def test_stop_string_greedy_exact(qwen, tok, prompts):
    eng = make_engine("hf", qwen, tok, eos_token_ids=())
    free = eng.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0))
    ids = free[2].completion_ids
    stop = tok.decode(ids[5:7])  # a stop string that this greedy completion certainly produces
    # expected cut: the first token after which the decoded text contains the stop string
    cut = next(j + 1 for j in range(len(ids)) if stop in tok.decode(ids[: j + 1]))
    for check_every in (1, 4):
        eng = make_engine("hf", qwen, tok, eos_token_ids=(), check_every=check_every)
        out = eng.generate(prompts, SamplingParams(max_new_tokens=24, temperature=0, stop=(stop, "\x00never")))
        assert out[2].completion_ids == ids[:cut] and out[2].finish_reason == "stop"
        assert out[2].text.endswith(stop) or stop in out[2].text
        for f, c in zip(free, out):  # every row: cut at its own first occurrence, or untouched
            if c.finish_reason == "stop":
                j = len(c.completion_ids)
                assert stop in c.text and stop not in tok.decode(f.completion_ids[: j - 1])
                assert c.completion_ids == f.completion_ids[:j] and c.logprobs == pytest.approx(f.logprobs[:j], abs=1e-6)
            else:
                assert c.completion_ids == f.completion_ids and stop not in c.text


def test_stop_string_sampled_properties(qwen, tok, prompts):
    stops = (" ", "=")  # common single-character stop strings
    out = make_engine("hf", qwen, tok, check_every=2).generate(
        prompts, SamplingParams(n=6, max_new_tokens=40, temperature=1.0, stop=stops, seed=11))
    assert any(c.finish_reason == "stop" for c in out)
    for c in out:
        before = tok.decode(c.completion_ids[:-1], skip_special_tokens=True)
        assert not any(s in before for s in stops)  # nothing was cut too late
        if c.finish_reason == "stop":
            assert any(s in c.text for s in stops)
            assert c.text.endswith(tok.decode(c.completion_ids[-1:]))
        else:
            assert not any(s in c.text for s in stops)


def test_train_mode_restored_and_update_weights(tok, prompts):
    model = _model(tok)
    model.train()
    eng = make_engine("hf", model, tok)
    params = SamplingParams(max_new_tokens=6, temperature=0)
    before = eng.generate(prompts, params)
    assert model.training
    other = _model(tok, seed=1)
    eng.update_weights(other)
    after = eng.generate(prompts, params)
    assert [c.completion_ids for c in after] == _reference_greedy(other, tok, prompts, 6)
    assert [c.completion_ids for c in after] != [c.completion_ids for c in before]
    with torch.no_grad():  # in-place weight changes (an optimizer step) are seen without a reload
        for p in other.parameters():
            p.mul_(1.5)
    assert [c.completion_ids for c in eng.generate(prompts, params)] == _reference_greedy(other, tok, prompts, 6)


def test_private_cache_rule():
    from r1kit.rollout.fast_decoder import FastDecoder

    # copies add (n - 1) x N x P prompt reads per step; private when that is <= B x M / 2 (B = N x n)
    assert FastDecoder.private_cache(8, 8, 24, 64)  # 7 x 8 x 24 = 1344 <= 64 x 64 / 2 = 2048
    assert not FastDecoder.private_cache(8, 8, 240, 256)  # 13440 > 64 x 256 / 2 = 8192
    assert FastDecoder.private_cache(8, 8, 240, 1024)  # 13440 <= 32768
    assert FastDecoder.private_cache(4, 1, 500, 1)  # one sample per prompt: nothing to share
    with pytest.raises(ValueError, match=r"kv_cache must be one of shared\|private\|auto, got .copied."):
        make_engine("hf", None, types.SimpleNamespace(pad_token_id=0, eos_token_id=1), kv_cache="copied")


def test_peft_lora_model_uses_adapters(tok, prompts):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_model(tok), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(max_new_tokens=12, temperature=0)
    # runs the wrapped modules (packing only the plain ones: k_proj, o_proj, the head)
    fast = make_engine("hf", model, tok, backend="fast", pack_weights=True).generate(prompts, params)
    ref = make_engine("hf", model, tok, backend="hf").generate(prompts, params)  # the peft model's forward
    assert [c.completion_ids for c in fast] == [c.completion_ids for c in ref]
    with model.disable_adapter():
        base = make_engine("hf", model, tok, backend="fast").generate(prompts, params)
    assert [c.completion_ids for c in base] != [c.completion_ids for c in fast]


# -- packed weights for the decode steps (rollout.packed_linear) ---------------------------------------

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_matches_linear(bias):
    from r1kit.rollout.packed_linear import PackedLinear, pack

    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(48, 80, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(80, 48, generator=g))
        if bias:
            lin.bias.copy_(torch.randn(80, generator=g))
    packed = PackedLinear(lin, rows=8)
    for shape in [(8, 48), (3, 48), (2, 5, 48), (40, 48)]:  # the row hint is only a hint
        x = torch.randn(shape, generator=g)
        ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
        assert packed(x).shape == ref.shape
        torch.testing.assert_close(packed(x), ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # a snapshot: later weight changes are not seen (the decoder re-packs per call)
        lin.weight.mul_(2)
    assert not torch.allclose(packed(x), lin(x))
    assert pack(lin.double(), 8) is lin  # only fp32 plain nn.Linear is packed
    hooked = torch.nn.Linear(4, 4)
    hooked.register_forward_hook(lambda *a: None)
    assert pack(hooked, 8) is hooked


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
def test_packed_fused_matches_each_linear(bias):
    from r1kit.rollout.packed_linear import PackedFused

    torch.manual_seed(0)
    q, k, v = torch.nn.Linear(48, 64, bias=bias), torch.nn.Linear(48, 16, bias=bias), torch.nn.Linear(48, 16, bias=bias)
    fused = PackedFused((q, k, v), rows=8)
    x = torch.randn(2, 5, 48)
    outs = fused(x)
    assert [o.shape for o in outs] == [(2, 5, 64), (2, 5, 16), (2, 5, 16)]
    for o, m in zip(outs, (q, k, v)):  # each output is that linear's own, at fp32 rounding
        torch.testing.assert_close(o, m(x), rtol=1e-5, atol=1e-5)
    mixed = (torch.nn.Linear(48, 8, bias=True), torch.nn.Linear(48, 8, bias=False))
    assert PackedFused.fusable((q, k, v)) and not PackedFused.fusable(mixed)
    assert not PackedFused.fusable((q, torch.nn.Linear(32, 8, bias=bias)))  # different input widths
    hooked = torch.nn.Linear(48, 8, bias=bias)
    hooked.register_forward_hook(lambda *a: None)
    assert not PackedFused.fusable((q, hooked))


@needs_onednn
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_decoder_steps_match_unpacked(tok, prompts, arch):
    from r1kit.rollout.fast_decoder import FastDecoder
    from r1kit.rollout.hf import _left_pad
    from r1kit.rollout.packed_linear import PackedFused, PackedLinear, PackedMLP

    model = _model(tok, arch=arch, num_kv_heads=2)
    ids, am = _left_pad(prompts, tok.pad_token_id, torch.device("cpu"))
    pos = (am.long().cumsum(1) - 1).clamp_(min=0)
    P, n = ids.shape[1], 3
    decs, logits = [], []
    with torch.inference_mode():
        for pack in (False, True):
            dec = FastDecoder(model, len(prompts), P, 8, pack=pack)
            first = dec.prefill(ids, am, pos)
            dec.repeat(n)
            decs.append(dec)
            tok_ = torch.arange(len(prompts) * n) % 50 + 5
            steps = [first] + [dec.step(tok_ + s, pos[:, -1].repeat_interleave(n) + 1 + s, P + s) for s in range(8)]
            logits.append(torch.stack(steps[1:]))
    plain, packed = decs
    qkv, o, mlp = packed.proj[1]  # q/k/v as one fused matmul, o packed, the MLP's gate/up fused
    attn = model.model.layers[1].self_attn
    assert isinstance(qkv, PackedFused) and isinstance(o, PackedLinear)
    assert qkv.sizes == [attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features]
    assert isinstance(mlp, PackedMLP) and isinstance(mlp.gate_up, PackedFused)
    assert isinstance(packed.head_packed, PackedLinear)
    assert plain.proj[0][1] is model.model.layers[0].self_attn.o_proj and plain.head_packed is None
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=1e-4)
    assert logits[0].abs().max() > 1  # logits of a real size: the tolerance is relative to them


@needs_onednn
def test_packing_keeps_forward_hooks(tok, prompts):
    # a hooked MLP or projection is called as a module, so its hook still runs (model.generate runs it too)
    model = _model(tok)
    layer = model.model.layers[0]
    handles = [layer.mlp.register_forward_hook(lambda _m, _i, out: out * 3.0),
               layer.self_attn.v_proj.register_forward_pre_hook(lambda _m, args: (args[0] * 0.5,))]
    try:
        ref = _reference_greedy(model, tok, prompts, 20)
        out = make_engine("hf", model, tok, backend="fast", pack_weights=True).generate(
            prompts, SamplingParams(max_new_tokens=20, temperature=0))
    finally:
        for h in handles:
            h.remove()
    assert [c.completion_ids for c in out] == ref
    assert ref != _reference_greedy(model, tok, prompts, 20)  # the hooks change what is generated


def test_pack_weights_rule(qwen, tok):
    from r1kit.rollout.hf import PACK_MIN_TOKENS

    available = packed_linear.available
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    eng = make_engine("hf", qwen, tok)  # auto: on CPU, for calls long enough to repay the packing
    assert eng._pack(cpu, PACK_MIN_TOKENS) == available() and not eng._pack(cpu, PACK_MIN_TOKENS - 1)
    assert not eng._pack(cuda, 1024)
    assert not make_engine("hf", qwen, tok, pack_weights=False)._pack(cpu, 1024)
    if available():
        assert make_engine("hf", qwen, tok, pack_weights=True)._pack(cpu, 1)


# -- more architectures: qwen3 (per-head q/k norms) and mistral (a config-level sliding window) -------

def _arch_model(tok, arch, seed=0, **cfg):
    """A tiny random qwen3 / mistral model, built from its config (no download); GQA, head_dim 16."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch, vocab_size=len(tok), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None, **cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial q/k norm weights, so applying them (or not) shows
        for name, p in model.named_parameters():
            if "q_norm" in name or "k_norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return _sharpen(model, seed=seed).eval()


@pytest.mark.parametrize("arch,cfg", [("qwen3", {}), ("mistral", {"sliding_window": None}),
                                      ("mistral", {"sliding_window": 4096})])  # a window wider than the run
def test_fast_decoder_qwen3_mistral_match_full_forward_and_generate(tok, prompts, arch, cfg):
    from r1kit.rollout.fast_decoder import FastDecoder

    model = _arch_model(tok, arch, **cfg)
    assert FastDecoder.supports(model, max_len=64)  # the fast decoder runs them (qwen3 with its q/k norms)
    greedy = make_engine("hf", model, tok, backend="fast").generate(prompts, SamplingParams(max_new_tokens=16, temperature=0))
    assert [c.completion_ids for c in greedy] == _reference_greedy(model, tok, prompts, 16)
    handle = _eos_bias(model, tok, 3.0)
    try:
        out = make_engine("hf", model, tok, backend="fast", compact_frac=0.1).generate(
            prompts, SamplingParams(n=3, max_new_tokens=14, temperature=0.8, top_p=0.95, seed=4))
        assert {c.finish_reason for c in out} == {"eos", "length"}  # compaction of the shared-prompt cache
        for c in out:
            ref = _full_forward_logprobs(model, c, 0.8)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-5, rtol=0), (c.logprobs, ref)
    finally:
        handle.remove()


@pytest.mark.parametrize("arch,cfg", [("mistral", {"sliding_window": 4}),  # the window lives on the config
                                      ("qwen3", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1})])
def test_narrow_sliding_window_falls_back_and_matches_full_forward(tok, prompts, arch, cfg):
    from r1kit.rollout.fast_decoder import FastDecoder
    from r1kit.rollout.hf_decoder import HFDecoder

    model = _arch_model(tok, arch, **cfg)
    assert not FastDecoder.supports(model, max_len=20) and not FastDecoder.supports(model)
    assert FastDecoder.supports(_arch_model(tok, arch, **{**cfg, "sliding_window": 20}), max_len=20)  # covers the run
    eng = make_engine("hf", model, tok)
    assert eng._decoder_cls(20) is HFDecoder
    out = eng.generate(prompts, SamplingParams(n=2, max_new_tokens=12, temperature=1.0, seed=6))
    for c in out:  # the window matters here: full-forward log-probs are only matched when it is applied
        ref = _full_forward_logprobs(model, c, 1.0)
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-5, rtol=0), (c.logprobs, ref)
    with pytest.raises(ValueError, match="backend='fast'"):
        make_engine("hf", model, tok, backend="fast").generate(prompts, SamplingParams(max_new_tokens=4))
