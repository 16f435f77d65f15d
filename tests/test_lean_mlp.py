"""models.lean_mlp: gated MLPs that save 2 of their 4 [tokens, inter] activations, with the same gradients."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from r1kit.diagnose.plan_estimate import Setup, mlp_kept
from r1kit.diagnose.plan_shape import from_model
from r1kit.models.lean_mlp import lean_mlps, leanable

HIDDEN, INTER, LAYERS = 32, 96, 2


def qwen2(**kw):
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, **kw)
    return Qwen2ForCausalLM(cfg).train()


def llama_with_bias():
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=4, mlp_bias=True)
    return LlamaForCausalLM(cfg).train()


def grads_and_saved(model, ids, lean: bool, autocast=None):
    """(loss, every parameter's gradient, bytes autograd saved for backward) of one forward + backward
    (the forward under `autocast`, a dtype, if given; the backward outside it, as a training loop runs)."""
    model.zero_grad()
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        with lean_mlps(model, lean) as swapped:
            logits = model(input_ids=ids).logits.float()  # [B, L, V]
    assert swapped == (LAYERS if lean else 0)
    loss = torch.log_softmax(logits, -1)[..., 3].mean()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, saved[0]


@pytest.mark.parametrize("make", [qwen2, llama_with_bias], ids=["qwen2", "llama-mlp-bias"])
def test_same_loss_and_gradients_with_half_the_mlp_activations(make):
    model = make()
    ids = torch.randint(0, 64, (3, 11))  # 33 tokens
    loss0, g0, saved0 = grads_and_saved(model, ids, lean=False)
    loss1, g1, saved1 = grads_and_saved(model, ids, lean=True)
    assert loss1 == loss0
    for name in g0:  # the same products in the same order: bitwise equal, not just close
        torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=0, msg=name)
    # plain autograd keeps gate(x), silu(gate(x)), up(x) and their product per layer; lean keeps gate and up:
    # 2 tensors x 33 tokens x 96 inter x 4 bytes x 2 layers = 50,688 bytes fewer
    assert saved0 - saved1 == 2 * 33 * INTER * 4 * LAYERS


def test_under_bf16_autocast_as_plain_autograd_is():
    """accelerate's mixed precision runs the forward under autocast (bf16 activations, fp32 weights): the
    backward must follow the forward's dtypes, and end at the same gradients as plain autograd's."""
    model = qwen2()
    ids = torch.randint(0, 64, (2, 9))
    loss0, g0, _ = grads_and_saved(model, ids, lean=False, autocast=torch.bfloat16)
    loss1, g1, _ = grads_and_saved(model, ids, lean=True, autocast=torch.bfloat16)
    assert loss1 == loss0
    for name, g in g0.items():
        assert g1[name].dtype == g.dtype == torch.float32
        torch.testing.assert_close(g1[name], g, rtol=2e-2, atol=1e-4, msg=name)


def test_the_model_is_restored_after_the_block_even_on_error():
    model = qwen2()
    mlps = [layer.mlp for layer in model.model.layers]
    with pytest.raises(RuntimeError, match="boom"):
        with lean_mlps(model):
            assert all("forward" in vars(m) for m in mlps)
            raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in mlps)
    assert all(leanable(m) for m in mlps)


def test_left_alone_where_the_swap_would_skip_or_break_something():
    model = qwen2()
    mlp0, mlp1 = model.model.layers[0].mlp, model.model.layers[1].mlp
    handle = mlp0.down_proj.register_forward_hook(lambda *a: None)  # e.g. DeepSpeed ZeRO-3 gathers in hooks
    assert not leanable(mlp0) and leanable(mlp1)
    with lean_mlps(model) as swapped:
        assert swapped == 1
    handle.remove()
    assert not leanable(qwen2(hidden_act="gelu").model.layers[0].mlp)  # not SiLU
    model.activation_checkpointing_enable()  # the replayed forward must save what the first one did
    with lean_mlps(model) as swapped:
        assert swapped == 0


def test_lora_on_down_proj_is_left_alone_and_on_gate_up_still_applies():
    peft = pytest.importorskip("peft")
    down = peft.get_peft_model(qwen2(), peft.LoraConfig(r=2, target_modules=["down_proj"]))
    with lean_mlps(down) as swapped:
        assert swapped == 0
    gate_up = peft.get_peft_model(qwen2(), peft.LoraConfig(r=2, target_modules=["gate_proj", "up_proj"],
                                                           init_lora_weights=False))
    ids = torch.randint(0, 64, (2, 7))
    loss0, g0, _ = grads_and_saved(gate_up, ids, lean=False)
    loss1, g1, _ = grads_and_saved(gate_up, ids, lean=True)
    assert loss1 == loss0
    assert g0 and set(g1) == set(g0)  # the LoRA weights
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, rtol=0, atol=0, msg=name)


def test_the_planner_counts_what_the_trainer_keeps():
    shape = from_model(qwen2(), "q")
    assert shape.lean_mlp and not from_model(qwen2(hidden_act="gelu"), "g").lean_mlp
    base = dict(micro_batch=4, batch=8, generations=4, prompt_len=8, completion_len=8)
    assert mlp_kept(shape, Setup(**base)) == 2
    assert mlp_kept(shape, Setup(**base, gradient_checkpointing=True)) == 4
    assert mlp_kept(shape, Setup(**base, strategy="fsdp2")) == 4
    assert mlp_kept(shape, Setup(**base, lora_r=8, lora_targets=["q_proj", "v_proj"])) == 2
    assert mlp_kept(shape, Setup(**base, lora_r=8)) == 4  # all-linear wraps down_proj


def test_the_reward_model_trainer_runs_lean_with_the_same_gradients(monkeypatch):
    """`rm.pair_rewards` (a sequence-classification backbone) swaps the MLPs when gradients are on: the same
    Bradley-Terry loss and gradients as plain autograd, with 2 [tokens, inter] tensors per layer fewer saved."""
    from transformers import Qwen2ForSequenceClassification

    from r1kit.train import rm

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
    model = Qwen2ForSequenceClassification(cfg).train()
    pairs = [([5, 6, 7, 8], [5, 6, 9]), ([10, 11, 12], [10, 13, 14, 15, 16])]  # 4 texts padded to 5 tokens

    def run():
        model.zero_grad()
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            r_c, r_r = rm.pair_rewards(model, pairs, 0, "cpu")
        loss = rm.bt_loss(r_c, r_r)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved[0]

    loss1, g1, saved1 = run()
    with monkeypatch.context() as m:
        m.setattr(rm, "lean_mlps", lambda model, enabled=True: lean_mlps(model, False))  # plain autograd
        loss0, g0, saved0 = run()
    assert loss1 == loss0 and saved0 - saved1 == 2 * (4 * 5) * INTER * 4 * LAYERS
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=0, msg=name)
