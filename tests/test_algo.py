"""Tests of r1kit.algo against hand-computed values (the working is in the comments)."""

import math

import pytest
import torch

from r1kit.algo import (
    AGGREGATIONS,
    entropy_from_logits,
    linear_selective_log_softmax,
    group_advantages,
    kl_estimate,
    loss_normalizer,
    masked_mean,
    policy_loss,
    selective_log_softmax,
    zero_std_groups,
)

EPS = 1e-4
NAN = float("nan")
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def close(a, b, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64),
                               torch.as_tensor(b, dtype=torch.float64), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- advantages
# Two groups of G=3:  g1 = [1, 2, 3],  g2 = [0, 0, 3]
REWARDS = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 3.0])


def test_group_advantages_scale_group():
    # g1: mean 2, dev [-1, 0, 1], sample var (1+0+1)/2 = 1, std 1
    # g2: mean 1, dev [-1, -1, 2], sample var (1+1+4)/2 = 3, std sqrt(3)
    s3 = math.sqrt(3.0)
    want = [-1 / (1 + EPS), 0.0, 1 / (1 + EPS), -1 / (s3 + EPS), -1 / (s3 + EPS), 2 / (s3 + EPS)]
    close(group_advantages(REWARDS, 3, scale="group"), want)


def test_group_advantages_scale_batch():
    # means per group as above (2 and 1); std over all six rewards [1,2,3,0,0,3]:
    # batch mean 9/6 = 1.5, squared deviations .25+.25+2.25+2.25+2.25+2.25 = 9.5, var 9.5/5 = 1.9
    d = math.sqrt(1.9) + EPS
    want = [-1 / d, 0.0, 1 / d, -1 / d, -1 / d, 2 / d]
    close(group_advantages(REWARDS, 3, scale="batch"), want)


def test_group_advantages_scale_none_dr_grpo():
    # r - mean_group: [1-2, 2-2, 3-2, 0-1, 0-1, 3-1]
    close(group_advantages(REWARDS, 3, scale="none"), [-1.0, 0.0, 1.0, -1.0, -1.0, 2.0])


def test_group_advantages_nan_rewards_excluded():
    # group [1, NaN, 3, 5]: scorable [1, 3, 5], mean 3, dev [-2, 0, 2], var (4+0+4)/2 = 4, std 2
    r = torch.tensor([1.0, NAN, 3.0, 5.0])
    close(group_advantages(r, 4), [-2 / (2 + EPS), 0.0, 0.0, 2 / (2 + EPS)])
    close(group_advantages(r, 4, scale="none"), [-2.0, 0.0, 0.0, 2.0])
    # batch: scorable [1, 3, 5] -> the same std 2
    close(group_advantages(r, 4, scale="batch"), [-2 / (2 + EPS), 0.0, 0.0, 2 / (2 + EPS)])
    # +-inf is treated as unscorable too
    r_inf = torch.tensor([1.0, float("inf"), 3.0, 5.0])
    close(group_advantages(r_inf, 4), [-2 / (2 + EPS), 0.0, 0.0, 2 / (2 + EPS)])


def test_group_advantages_degenerate_groups_are_zero():
    # g1: one scorable reward; g2: none scorable; g3: all equal (0.1 is inexact in binary, still
    # exactly 0); g4: two scorable that agree. Only g5 is informative: scorable [0, 1], mean .5,
    # dev [-.5, 0(NaN), .5], sample var (.25 + .25) / 1 = .5, std sqrt(.5)
    r = torch.tensor([NAN, 1.0, NAN,  NAN, NAN, NAN,  0.1, 0.1, 0.1,  0.7, NAN, 0.7,  0.0, NAN, 1.0])
    for scale in ("group", "batch", "none"):
        a = group_advantages(r, 3, scale=scale)
        assert torch.isfinite(a).all()
        assert (a[:12] == 0).all(), scale  # exactly zero, not merely small
    close(group_advantages(r, 3)[12:], [-0.5 / (math.sqrt(0.5) + EPS), 0.0, 0.5 / (math.sqrt(0.5) + EPS)])
    assert zero_std_groups(r, 3).tolist() == [True, True, True, True, False]
    # float64 rewards: (0.1 + 0.1 + 0.1) / 3 = 0.10000000000000002 != 0.1, so r - mean is ~1e-17,
    # not 0; the group is still detected as all-equal and gets exactly 0
    r64 = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        assert group_advantages(r64, 3, scale=scale).eq(0).all(), scale
    assert zero_std_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2).tolist() == [True, False]


def test_group_advantages_never_nan_or_inf():
    big = torch.tensor([3.4e38, -3.4e38, -3.4e38, 1e-30, 2e-30, 3e-30, 0.0, 0.0, 5e-45])
    for scale in ("group", "batch", "none"):
        for eps in (1e-4, 0.0):
            a = group_advantages(big, 3, scale=scale, eps=eps)
            assert torch.isfinite(a).all(), (scale, eps)
    # |dev| of the first group is 4.5e38 > float32 max: clamped, not inf
    assert group_advantages(big, 3, scale="none")[0] == torch.finfo(torch.float32).max
    assert group_advantages(torch.full((4,), NAN), 2).eq(0).all()
    # dtype follows the input; integer rewards give float32
    assert group_advantages(REWARDS.double(), 3).dtype == torch.float64
    assert group_advantages(torch.tensor([0, 1, 1, 1]), 2).dtype == torch.float32


def test_group_advantages_validation():
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="'per_token'"):
        group_advantages(torch.zeros(4), 2, scale="per_token")
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 2), 2)


# ----------------------------------------------------------------------------- KL
def test_kl_hand_values():
    # pi_theta = 0.5, pi_ref = 0.25: x = log(pi_ref/pi_theta) = log(0.5) = -0.693147
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    close(kl_estimate(logp, ref, "k1"), [math.log(2)])                # -x = 0.693147
    close(kl_estimate(logp, ref, "k2"), [0.5 * math.log(2) ** 2])     # x^2/2 = 0.240227
    close(kl_estimate(logp, ref, "k3"), [0.5 - math.log(0.5) - 1])    # e^x - x - 1 = 0.193147
    with pytest.raises(ValueError, match="'k4'"):
        kl_estimate(logp, ref, "k4")


def test_kl_k3_nonnegative_zero_at_equal_and_finite():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(64, 32, generator=g) * 30
    ref = -torch.rand(64, 32, generator=g) * 30
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, ref, "k2") >= 0).all()
    assert kl_estimate(logp, logp, "k3").eq(0).all()
    # x = ref - logp clamped to [-20, 20]: x = +1000 -> e^20 - 20 - 1; x = -1000 -> e^-20 + 20 - 1
    k = kl_estimate(torch.tensor([-1000.0, 0.0]), torch.tensor([0.0, -1000.0]), "k3")
    close(k, [math.exp(20) - 21, math.exp(-20) + 19], tol=1e-5)


# ----------------------------------------------------------------------------- policy loss
def _ragged_batch():
    """B=2, T=3; row 0 has 3 completion tokens, row 1 has 1. Padding holds garbage (NaN / -inf)."""
    old = torch.full((2, 3), math.log(0.5))
    ratios = torch.tensor([[1.1, 0.9, 1.0], [1.05, 1.0, 1.0]])
    logp = (old + ratios.log()).clone()
    logp[1, 1], logp[1, 2] = NAN, -float("inf")
    old[1, 2] = NAN
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([2.0, -1.0])
    return logp.requires_grad_(), old, adv, mask


def test_policy_loss_aggregations_unequal_lengths():
    # all ratios inside [0.8, 1.2] -> per-token loss = -A * ratio
    # row 0 (A=2):  [-2.2, -1.8, -2.0]  sum -6.0, mean -2.0
    # row 1 (A=-1): [+1.05]             sum 1.05, mean 1.05
    # grpo    = (-2.0 + 1.05) / 2 = -0.475
    # dapo    = (-6.0 + 1.05) / 4 tokens = -1.2375
    # dr_grpo = (-6.0 + 1.05) / (B*T = 6) = -0.825;  with L = 5: -4.95 / 10 = -0.495
    want = {"grpo": -0.475, "dapo": -1.2375, "dr_grpo": -0.825}
    for lt, w in want.items():
        logp, old, adv, mask = _ragged_batch()
        loss, _ = policy_loss(logp, old, adv, mask, loss_type=lt)
        close(loss, w)
        loss.backward()
        assert torch.isfinite(logp.grad).all() and (logp.grad[~mask] == 0).all()
    logp, old, adv, mask = _ragged_batch()
    close(policy_loss(logp, old, adv, mask.float(), loss_type="dr_grpo", max_completion_length=5)[0],
          -0.495)
    assert set(AGGREGATIONS) >= set(LOSS_TYPES)
    with pytest.raises(ValueError, match="'ppo'"):
        policy_loss(logp, old, adv, mask, loss_type="ppo")


@pytest.mark.parametrize(
    "adv, ratio, want_loss, want_grad",
    [
        # A>0, ratio 1.5 > 1+eps_high=1.28: min(1.5, 1.28) picks the clipped 1.28 -> loss -1.28, no grad
        (1.0, 1.5, -1.28, 0.0),
        # A>0, ratio 0.5 < 0.8: min(0.5, 0.8) picks unclipped 0.5 -> loss -0.5, dL/dlogp = -A*ratio
        (1.0, 0.5, -0.5, -0.5),
        # A<0, ratio 1.5: min(-1.5, -1.28) picks unclipped -1.5 -> loss 1.5, grad -A*ratio = 1.5
        (-1.0, 1.5, 1.5, 1.5),
        # A<0, ratio 0.5: min(-0.5, -0.8) picks the clipped -0.8 -> loss 0.8, no grad
        (-1.0, 0.5, 0.8, 0.0),
        # inside the range: unclipped -A*ratio, grad -A*ratio (d ratio / d logp = ratio)
        (1.0, 1.1, -1.1, -1.1),
    ],
)
def test_policy_loss_clipping(adv, ratio, want_loss, want_grad):
    old = torch.tensor([[-1.0]])
    logp = (old + math.log(ratio)).requires_grad_()
    loss, _ = policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1), loss_type="dapo",
                          eps_low=0.2, eps_high=0.28)
    loss.backward()
    close(loss, want_loss)
    close(logp.grad, [[want_grad]])


def test_policy_loss_stats_hand_example():
    # the four clipping cases above plus (A=1, ratio 1.25) as one batch (B=5, T=2; the second
    # column is padding), eps_low=0.2, eps_high=0.28:
    # low (ratio < 0.8 and A < 0): only (A=-1, 0.5) -> 1/5; high (ratio > 1.28 and A > 0): only
    # (A=1, 1.5) -> 1/5 (1.25 is inside 1.28); region 2/5; ratio mean (1.5+.5+1.5+.5+1.25)/5 = 1.05
    old = torch.full((5, 2), -1.0)
    logp = old + torch.tensor([[1.5, 9], [0.5, 9], [1.5, 9], [0.5, 9], [1.25, 9]]).log()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])
    mask = torch.tensor([[1, 0]] * 5)
    _, st = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    close(st["clip_ratio/low_mean"], 0.2)
    close(st["clip_ratio/high_mean"], 0.2)
    close(st["clip_ratio/region_mean"], 0.4)
    close(st["ratio_mean"], 1.05)
    assert "kl" not in st and all(not v.requires_grad for v in st.values())
    # eps_high=None -> symmetric 0.2: now 1.25 > 1.2 is high-clipped too -> 2/5
    _, st = policy_loss(logp, old, adv, mask, eps_low=0.2)
    close(st["clip_ratio/high_mean"], 0.4)


def _random_batch(seed, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g)
    ref = logp + 0.3 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    lengths = torch.tensor([7, 3, 0, 1, 5, 2])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    return logp, old, ref, adv, mask


def test_policy_loss_on_policy_gradient_is_reinforce():
    # ratio = 1 -> inside the clip range, d loss / d logp_{i,t} = -A_i * m_{i,t} / norm_{i}
    logp0, _, _, adv, mask = _random_batch(1)
    B, T = mask.shape
    n_tok = mask.sum(-1, keepdim=True)  # [B, 1] = [7, 3, 0, 1, 5, 2]
    norms = {
        "grpo": B * n_tok.clamp(min=1),   # 1/B * 1/|o_i|
        "dapo": mask.sum(),               # 1/18
        "dr_grpo": B * T,                 # 1/42
    }
    for lt, norm in norms.items():
        logp = logp0.clone().requires_grad_()
        loss, st = policy_loss(logp, logp.detach(), adv, mask, loss_type=lt)
        loss.backward()
        close(logp.grad, -adv[:, None] * mask / norm)
        close(st["ratio_mean"], 1.0)
        close(st["clip_ratio/region_mean"], 0.0)


def test_policy_loss_zero_advantages_and_empty_mask():
    logp0, old, _, _, mask = _random_batch(2)
    for lt in LOSS_TYPES:
        logp = logp0.clone().requires_grad_()
        loss, _ = policy_loss(logp, old, torch.zeros(6), mask, loss_type=lt)
        loss.backward()
        assert loss.item() == 0 and logp.grad.abs().max() == 0
        # all-empty mask: loss 0, finite zero grad; same with num_items=0
        for n in (None, 0):
            logp = logp0.clone().requires_grad_()
            loss, st = policy_loss(logp, old, torch.ones(6), torch.zeros(6, 7), loss_type=lt,
                                   num_items=n)
            loss.backward()
            assert loss.item() == 0 and logp.grad.abs().max() == 0
            assert all(torch.isfinite(v) for v in st.values())


def test_policy_loss_kl_penalty():
    # on-policy, A = 0, logp = log .5, ref = log .25 everywhere -> per token beta*k3 = 0.1*0.193147
    # rows have 3 and 1 tokens (B=2, T=3):
    # grpo: mean of the seq means = 0.0193147; dapo: 4*0.0193147/4; dr_grpo: 4*0.0193147/6
    k3 = 0.5 - math.log(0.5) - 1
    logp = torch.full((2, 3), math.log(0.5))
    ref = torch.full((2, 3), math.log(0.25))
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    want = {"grpo": 0.1 * k3, "dapo": 0.1 * k3, "dr_grpo": 0.1 * k3 * 4 / 6}
    for lt, w in want.items():
        loss, st = policy_loss(logp, logp, torch.zeros(2), mask, loss_type=lt, beta=0.1, ref_logp=ref)
        close(loss, w)
        close(st["kl"], k3)
    # with A != 0 the KL adds on top of the policy term: dapo, ratio 1 -> -(2*3 - 1*1)/4 + 0.1*k3
    loss, _ = policy_loss(logp, logp, torch.tensor([2.0, -1.0]), mask, loss_type="dapo", beta=0.1,
                          ref_logp=ref)
    close(loss, -5 / 4 + 0.1 * k3)
    # k1: logp - ref = log 2 per token
    loss, st = policy_loss(logp, logp, torch.zeros(2), mask, loss_type="dapo", beta=0.1,
                           ref_logp=ref, kl="k1")
    close(loss, 0.1 * math.log(2))
    # ref_logp with beta = 0: reported, not added
    loss, st = policy_loss(logp, logp, torch.zeros(2), mask, ref_logp=ref)
    assert loss.item() == 0 and "kl" in st
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp, torch.zeros(2), mask, beta=0.1)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_loss_micro_batch_accumulation_with_num_items(loss_type):
    logp0, old, ref, adv, mask = _random_batch(3)
    kw = dict(loss_type=loss_type, eps_low=0.2, eps_high=0.28, beta=0.05, ref_logp=ref)
    full_logp = logp0.clone().requires_grad_()
    full, _ = policy_loss(full_logp, old, adv, mask, **kw)
    full.backward()

    num_items = loss_normalizer(mask, loss_type)  # grpo 6; dapo 18 tokens; dr_grpo 6*7 = 42
    assert num_items == {"grpo": 6.0, "dapo": 18.0, "dr_grpo": 42.0}[loss_type]
    acc_logp = logp0.clone().requires_grad_()
    total = 0.0
    for sl in (slice(0, 2), slice(2, 5), slice(5, 6)):
        # each micro-batch is trimmed to its own longest completion, like a padding collator
        width = max(int(mask[sl].sum(-1).max()), 1)
        k = dict(kw, ref_logp=ref[sl, :width])
        part, _ = policy_loss(acc_logp[sl, :width], old[sl, :width], adv[sl], mask[sl, :width],
                              num_items=num_items, **k)
        total = total + part
    total.backward()
    close(total, full)
    close(acc_logp.grad, full_logp.grad)
    if loss_type in ("grpo", "dapo"):  # without num_items the micro-batch sum is not the full loss
        naive = sum(policy_loss(logp0[sl], old[sl], adv[sl], mask[sl], **dict(kw, ref_logp=ref[sl]))[0]
                    for sl in (slice(0, 2), slice(2, 5), slice(5, 6)))
        assert abs(naive.item() - full.item()) > 1e-3


# ----------------------------------------------------------------------------- log-probs
def _ref_logp(logits, ids, t):
    return torch.log_softmax(logits.float() / t, dim=-1).gather(-1, ids[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [1, 4, 5, 21, 4096])  # rows = 3*7 = 21
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_selective_log_softmax_fp32_matches_reference(chunk, temperature):
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(3, 7, 11, generator=g) * 3).requires_grad_()
    ids = torch.randint(0, 11, (3, 7), generator=g)
    up = torch.randn(3, 7, generator=g)
    got = selective_log_softmax(logits, ids, temperature=temperature, chunk_size=chunk)
    (gg,) = torch.autograd.grad((got * up).sum(), logits)
    want = _ref_logp(logits, ids, temperature)
    (gw,) = torch.autograd.grad((want * up).sum(), logits)
    assert got.dtype == torch.float32 and got.shape == (3, 7)
    close(got, want, tol=1e-5)
    close(gg, gw, tol=1e-5)


@pytest.mark.parametrize("chunk", [4, 5, 4096])
def test_selective_log_softmax_bf16(chunk):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 9, 50, generator=g) * 4).bfloat16().requires_grad_()
    ids = torch.randint(0, 50, (2, 9), generator=g)
    up = torch.randn(2, 9, generator=g)
    got = selective_log_softmax(logits, ids, temperature=0.6, chunk_size=chunk)
    (gg,) = torch.autograd.grad((got * up).sum(), logits)
    want = _ref_logp(logits, ids, 0.6)  # reference in fp32 from the same bf16 values
    (gw,) = torch.autograd.grad((want * up).sum(), logits)
    assert got.dtype == torch.float32 and gg.dtype == torch.bfloat16
    close(got, want, tol=1e-5)
    torch.testing.assert_close(gg.float(), gw.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("chunk", [1, 4, 21, 4096])  # rows = 3*7 = 21
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_linear_selective_log_softmax_equals_the_logits_path(chunk, temperature):
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(3, 7, 5, generator=g).requires_grad_()
    weight = torch.randn(11, 5, generator=g).requires_grad_()
    bias = torch.randn(11, generator=g).requires_grad_()
    ids = torch.randint(0, 11, (3, 7), generator=g)
    up = torch.randn(3, 7, generator=g)
    lp, ent = linear_selective_log_softmax(hidden, weight, ids, bias, temperature, chunk, with_entropy=True)
    got = torch.autograd.grad((lp * up).sum(), (hidden, weight, bias))
    logits = torch.nn.functional.linear(hidden, weight, bias)  # [3, 7, 11]
    want = _ref_logp(logits, ids, temperature)
    wanted = torch.autograd.grad((want * up).sum(), (hidden, weight, bias))
    close(lp, want, tol=1e-5)
    ref_lp = torch.log_softmax(logits.detach() / temperature, -1)
    close(ent, -(ref_lp.exp() * ref_lp).sum(-1), tol=1e-5)  # H = -sum p log p
    assert not ent.requires_grad
    for a, b in zip(got, wanted):
        close(a, b, tol=1e-5)
    # a frozen head (LoRA): gradients for the hidden states only, the same ones
    lp2, none = linear_selective_log_softmax(hidden, weight.detach(), ids, None, temperature, chunk)
    assert none is None
    (gh,) = torch.autograd.grad((lp2 * up).sum(), hidden)
    (wh,) = torch.autograd.grad((_ref_logp(torch.nn.functional.linear(hidden, weight.detach()), ids, temperature)
                                 * up).sum(), hidden)
    close(gh, wh, tol=1e-5)


def test_linear_selective_log_softmax_by_hand():
    # h = [1, 0], W rows [1, 0], [0, 0], [-1, 0] -> logits [1, 0, -1]; logsumexp = log(e + 1 + 1/e) = 1.40761
    # log p(y=0) = 1 - 1.40761 = -0.40761; d logp / d logits = onehot - softmax = [1 - 0.66524, -0.24473, -0.09003]
    # d logp / d h = (onehot - p) @ W = [0.33476 * 1 + 0.09003 * 1, 0] = [0.42479, 0]
    h = torch.tensor([[1.0, 0.0]], requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    lp, _ = linear_selective_log_softmax(h, w, torch.tensor([0]))
    lp.sum().backward()
    close(lp, [-0.40761], tol=1e-5)
    close(h.grad, [[0.42479, 0.0]], tol=1e-5)
    close(w.grad, [[0.33476, 0.0], [-0.24473, 0.0], [-0.09003, 0.0]], tol=1e-5)  # (onehot - p) outer h


def test_linear_selective_log_softmax_bf16_head():
    g = torch.Generator().manual_seed(8)
    hidden = torch.randn(2, 9, 16, generator=g).bfloat16().requires_grad_()
    weight = torch.randn(50, 16, generator=g).bfloat16().requires_grad_()
    ids = torch.randint(0, 50, (2, 9), generator=g)
    up = torch.randn(2, 9, generator=g)
    lp, _ = linear_selective_log_softmax(hidden, weight, ids, temperature=0.6, chunk_size=4)
    gh, gw = torch.autograd.grad((lp * up).sum(), (hidden, weight))
    want = _ref_logp(torch.nn.functional.linear(hidden, weight), ids, 0.6)  # bf16 logits, fp32 softmax
    wh, ww = torch.autograd.grad((want * up).sum(), (hidden, weight))
    assert lp.dtype == torch.float32 and gh.dtype == gw.dtype == torch.bfloat16
    close(lp, want, tol=1e-5)
    for a, b in ((gh, wh), (gw, ww)):
        torch.testing.assert_close(a.float(), b.float(), rtol=3e-2, atol=3e-2)


def test_linear_selective_log_softmax_validation():
    h, w, ids = torch.zeros(1, 2, 3), torch.zeros(5, 3), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        linear_selective_log_softmax(h, w, ids, temperature=0.0)
    with pytest.raises(ValueError, match="index shape"):
        linear_selective_log_softmax(h, w, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight shape \(5, 4\)"):
        linear_selective_log_softmax(h, torch.zeros(5, 4), ids)


def test_selective_log_softmax_validation():
    with pytest.raises(ValueError, match="temperature"):
        selective_log_softmax(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match="shape"):
        selective_log_softmax(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("chunk", [1, 4, 4096])
def test_entropy_from_logits(chunk):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 5, 13, generator=g, requires_grad=True)
    for t in (1.0, 0.5):
        lp = torch.log_softmax(logits.detach() / t, -1)
        want = -(lp.exp() * lp).sum(-1)  # H = -sum p log p
        got = entropy_from_logits(logits, temperature=t, chunk_size=chunk)
        close(got, want, tol=1e-5)
        assert not got.requires_grad
    # uniform over V -> log V; one-hot-ish -> ~0
    close(entropy_from_logits(torch.zeros(1, 1, 8)), [[math.log(8)]])
    close(entropy_from_logits(torch.tensor([[[0.0, -1e4, -1e4]]])), [[0.0]])
    close(entropy_from_logits(torch.zeros(1, 2, 8).bfloat16()), [[math.log(8)] * 2])


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, NAN], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    close(masked_mean(x, m), 1.5)               # (1 + 2) / 2, NaN ignored
    close(masked_mean(x, m, dim=-1), [1.5, 0])  # empty row -> 0
    close(masked_mean(x, torch.zeros(2, 3)), 0.0)
    xg = torch.ones(2, 2, requires_grad=True)
    masked_mean(xg, torch.zeros(2, 2)).backward()
    assert xg.grad.eq(0).all()
