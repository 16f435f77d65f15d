"""train/optim.py: `make_optimizer` (AdamW + LR schedule) and `apply_update`, the one update every
trainer shares, which skips the optimizer step on a non-finite gradient norm.

`apply_update`'s documented contract: "Step AdamW unless the (clipped) gradient norm is non-finite;
the schedule always advances and the gradients are cleared. Returns False for a skipped update."

Hand-checkable numbers. AdamW's first step on a parameter with gradient g (betas b1, b2, eps):
    m1 = (1 - b1) g,  v1 = (1 - b2) g^2                      (moments, started at 0)
    m^ = m1 / (1 - b1) = g,  v^ = v1 / (1 - b2) = g^2        (bias correction at step 1)
    p <- p (1 - lr wd) - lr m^ / (sqrt(v^) + eps) = p (1 - lr wd) - lr g / (|g| + eps)
so each weight moves by lr * sign(g) (|g| >> eps = 1e-8), after the decoupled decay p (1 - lr wd).
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from r1kit.train.optim import apply_update, make_optimizer

LR = 0.1


def config(**kw) -> SimpleNamespace:
    """The TrainingArgs fields make_optimizer reads."""
    base = dict(learning_rate=LR, adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.0, lr_scheduler_type="linear",
                warmup_ratio=0.0)
    base.update(kw)
    return SimpleNamespace(**base)


def linear() -> torch.nn.Linear:
    """y = 0.5 x0 - 0.25 x1 + 0.1"""
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.25]]))
        layer.bias.copy_(torch.tensor([0.1]))
    return layer


def backward(layer: torch.nn.Linear, x: list[float]) -> float:
    """loss = y(x): d loss / d weight = x, d loss / d bias = 1. Returns the gradient norm as the trainer
    computes it (clip_grad_norm_, which does not clip here: max_norm is large)."""
    layer(torch.tensor([x])).sum().backward()
    return torch.nn.utils.clip_grad_norm_(layer.parameters(), max_norm=1e6).item()


def snapshot(layer, optimizer) -> tuple[dict, dict]:
    weights = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for p, s in optimizer.state.items()}
    return weights, state


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_same(a[k], b[k])
        else:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)  # bit for bit: nothing touched them


def test_finite_gradient_takes_adamw_first_step_by_hand():
    layer = linear()
    optimizer, scheduler = make_optimizer(layer.parameters(), config(), optimizer_steps=4)
    grad_norm = backward(layer, [1.0, -2.0])  # grads: weight [1, -2], bias [1]
    assert grad_norm == pytest.approx(math.sqrt(1 + 4 + 1))
    assert apply_update(optimizer, scheduler, grad_norm, step=1) is True
    # first AdamW step: p - lr * sign(g), lr = 0.1, no weight decay
    #   weight: [0.5 - 0.1, -0.25 + 0.1] = [0.4, -0.15];  bias: 0.1 - 0.1 = 0.0
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.4, -0.15]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.bias.detach(), torch.tensor([0.0]), rtol=0, atol=1e-6)
    state = optimizer.state[layer.weight]
    assert int(state["step"]) == 1
    torch.testing.assert_close(state["exp_avg"], 0.1 * torch.tensor([[1.0, -2.0]]))  # (1 - b1) g
    torch.testing.assert_close(state["exp_avg_sq"], 0.001 * torch.tensor([[1.0, 4.0]]))  # (1 - b2) g^2
    # the schedule advanced: linear decay over 4 updates, no warmup -> lr 0.1 * 3/4
    assert scheduler.get_last_lr() == [pytest.approx(0.075)]
    assert all(p.grad is None for p in layer.parameters())  # gradients cleared for the next step


def test_weight_decay_is_part_of_the_step():
    layer = linear()
    optimizer, scheduler = make_optimizer(layer.parameters(), config(weight_decay=0.5), optimizer_steps=4)
    assert apply_update(optimizer, scheduler, backward(layer, [1.0, -2.0]), step=1) is True
    # p (1 - lr wd) - lr sign(g), lr wd = 0.05:
    #   0.5 * 0.95 - 0.1 = 0.375;  -0.25 * 0.95 + 0.1 = -0.1375;  bias 0.1 * 0.95 - 0.1 = -0.005
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.375, -0.1375]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.bias.detach(), torch.tensor([-0.005]), rtol=0, atol=1e-6)


# torch warns when the schedule advances before any optimizer step: here that is the documented
# contract (a skipped first update still moves the schedule on), checked below
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_gradient_skips_the_step_on_a_fresh_optimizer(bad, caplog):
    layer = linear()
    optimizer, scheduler = make_optimizer(layer.parameters(), config(weight_decay=0.5), optimizer_steps=4)
    before, _ = snapshot(layer, optimizer)
    grad_norm = backward(layer, [bad, 1.0])  # one input non-finite: so are the gradient and its norm
    assert not math.isfinite(grad_norm)
    with caplog.at_level(logging.WARNING, logger="r1kit.train"):
        assert apply_update(optimizer, scheduler, grad_norm, step=7) is False
    after, state = snapshot(layer, optimizer)
    assert_same(before, after)  # not a step, not even the weight decay (which would move them)
    assert state == {}  # AdamW never ran: no moments, no step count
    assert all(p.grad is None for p in layer.parameters())  # the bad gradients are dropped
    assert scheduler.get_last_lr() == [pytest.approx(0.075)]  # the schedule advances anyway (documented)
    assert [r.getMessage() for r in caplog.records] == ["step 7: non-finite gradient norm, update skipped"]

    # the next, finite update is AdamW's first step, at the schedule's lr for step 2: 0.1 * 3/4
    assert apply_update(optimizer, scheduler, backward(layer, [1.0, -2.0]), step=8) is True
    assert int(optimizer.state[layer.weight]["step"]) == 1
    # p (1 - 0.075 * 0.5) - 0.075 sign(g):  0.5 * 0.9625 - 0.075 = 0.40625;  -0.25 * 0.9625 + 0.075 = -0.165625
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.40625, -0.165625]]), rtol=0, atol=1e-6)
    assert scheduler.get_last_lr() == [pytest.approx(0.05)]


def test_non_finite_gradient_leaves_adam_moments_alone():
    """After real updates the optimizer holds moments and a step count: a skipped update keeps them
    exactly (a NaN in them would poison every later step)."""
    layer = linear()
    optimizer, scheduler = make_optimizer(layer.parameters(), config(), optimizer_steps=10)
    assert apply_update(optimizer, scheduler, backward(layer, [1.0, -2.0]), step=1)
    assert apply_update(optimizer, scheduler, backward(layer, [0.5, 3.0]), step=2)
    weights, state = snapshot(layer, optimizer)
    assert all(int(s["step"]) == 2 for s in state.values()) and len(state) == 2
    lr = scheduler.get_last_lr()[0]

    assert apply_update(optimizer, scheduler, backward(layer, [math.nan, 1.0]), step=3) is False
    weights_after, state_after = snapshot(layer, optimizer)
    assert_same(weights, weights_after)
    assert_same(state, state_after)
    assert all(torch.isfinite(v).all() for s in state_after.values() for v in s.values() if torch.is_tensor(v))
    assert scheduler.get_last_lr()[0] == pytest.approx(lr - LR / 10)  # advanced one step of the linear decay
    assert all(p.grad is None for p in layer.parameters())


def test_default_is_torchs_fused_adamw_and_takes_the_same_steps_as_adamw_torch():
    """The default (adamw_torch_fused, as in transformers) runs torch's fused kernel on CPU; `optim: adamw_torch`
    the multi-tensor one. Both are AdamW: after five steps with weight decay on the same gradients the
    weights agree to fp32 rounding."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, 8) for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    fused, _ = make_optimizer(layers[0].parameters(), config(weight_decay=0.1), optimizer_steps=5)
    plain, _ = make_optimizer(layers[1].parameters(), config(weight_decay=0.1, optim="adamw_torch"), optimizer_steps=5)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    for _ in range(5):
        x = torch.randn(4, 16)
        for layer, opt in zip(layers, (fused, plain)):
            (layer(x) ** 2).sum().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(layers[0].parameters(), layers[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
