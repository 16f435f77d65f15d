"""Loss variants (bnpo, cispo, sapo), GSPO's sequence ratio and the sampler-mismatch importance weights,
against hand-computed values (the working is in the comments)."""

import math

import pytest
import torch

from r1kit.algo import (
    AGGREGATIONS,
    IS_LEVELS,
    MICRO_BATCH_NORMALISED,
    IS_MODES,
    SURROGATES,
    importance_log_ratio,
    loss_normalizer,
    policy_loss,
    sampler_correction_stats,
    sampler_correction_weights,
)

NAN, INF = float("nan"), float("inf")


def close(a, b, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64),
                               torch.as_tensor(b, dtype=torch.float64), rtol=tol, atol=tol)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _from_ratios(ratios, logp=None):
    """(logp requiring grad, old_logp) with exp(logp - old) = ratios; logp defaults to -1."""
    r = torch.tensor(ratios, dtype=torch.float32)
    lp = torch.full_like(r, -1.0) if logp is None else torch.tensor(logp, dtype=torch.float32)
    return lp.clone().requires_grad_(), lp - r.log()


def _grad(loss_type, logp0, old, adv, mask, **kw):
    logp = logp0.detach().clone().requires_grad_()
    loss, stats = policy_loss(logp, old, adv, mask, loss_type=loss_type, **kw)
    loss.backward()
    return loss.detach(), logp.grad, stats


def _random_batch(seed, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    lengths = torch.tensor([7, 3, 0, 1, 5, 2])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    return logp, old, adv, mask


# ----------------------------------------------------------------------------- registries
def test_registries_list_every_loss_type_with_a_help_line():
    assert set(AGGREGATIONS) == set(SURROGATES) == {"grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo"}
    for fn in AGGREGATIONS.values():
        assert fn.__doc__.strip().splitlines()[0]
    assert IS_LEVELS == ("token", "sequence", "sequence_token")
    assert IS_MODES == ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
    logp, old = _from_ratios([[1.0]])
    with pytest.raises(ValueError, match="importance_sampling_level"):
        policy_loss(logp, old, torch.ones(1), torch.ones(1, 1), importance_sampling_level="seq")
    with pytest.raises(ValueError, match="temperatures"):
        policy_loss(logp, old, torch.ones(1), torch.ones(1, 1), loss_type="sapo", sapo_temperature_neg=0.0)
    with pytest.raises(ValueError, match="token_weights"):
        policy_loss(logp, old, torch.ones(1), torch.ones(1, 1), token_weights=torch.ones(1, 2))


@pytest.mark.parametrize("loss_type", sorted(AGGREGATIONS))
def test_zero_advantage_rows_can_leave_the_micro_batch_unless_it_normalises_itself(loss_type):
    """What the trainer's forward-only rows rely on (beta 0): with the full batch's num_items, rows with
    advantage 0 add exactly 0 to the loss and the gradient, so the other rows alone give the same loss and
    gradients, except for MICRO_BATCH_NORMALISED loss types, whose normaliser counts the rows in the call."""
    logp0, old, _, mask = _random_batch(5)
    adv = torch.tensor([0.7, 0.0, -1.1, 0.0, 0.4, 0.0])  # rows 1, 3, 5 carry no signal
    kw = dict(loss_type=loss_type, eps_low=0.2, eps_high=5.0 if loss_type == "cispo" else 0.28,
              num_items=loss_normalizer(mask, loss_type))
    full_logp = logp0.clone().requires_grad_()
    full = policy_loss(full_logp, old, adv, mask, **kw)[0]
    full.backward()
    keep = adv != 0
    part_logp = logp0.clone().requires_grad_()
    part = policy_loss(part_logp[keep], old[keep], adv[keep], mask[keep], **kw)[0]
    part.backward()
    zero_rows = policy_loss(logp0[~keep], old[~keep], adv[~keep], mask[~keep], **kw)[0]
    if loss_type in MICRO_BATCH_NORMALISED:  # the token mean over 3 rows differs from the one over 6
        assert not torch.allclose(part, full)
        return
    assert zero_rows.item() == 0.0 and torch.equal(full_logp.grad[~keep], torch.zeros_like(logp0[~keep]))
    close(part, full)
    close(part_logp.grad, full_logp.grad)


# ----------------------------------------------------------------------------- token_weights=None
def _fixed_batch():
    logp = torch.tensor([[-0.5, -1.25, -2.0, -0.75], [-1.5, -0.25, NAN, -INF], [-3.0, -0.1, -0.9, -1.7]])
    old = logp + torch.tensor([[0.1, -0.3, 0.05, 0.4], [-0.2, 0.25, 0.0, 0.0], [0.0, 0.6, -0.15, 0.02]])
    ref = logp + torch.tensor([[0.3, -0.2, 0.1, 0.0], [0.5, -0.4, 0.0, 0.0], [-0.1, 0.2, 0.3, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    return logp, old, ref, mask, torch.tensor([1.5, -0.75, 0.5])


# Loss and gradient of the implementation before the variants existed (r1kit 3436a4d), on _fixed_batch
# with eps 0.2/0.28, beta 0.04 (k3): the defaults must reproduce them bit for bit.
BEFORE = {
    "grpo": (-0.37167009711265564, [
        [-0.11427087336778641, 0.0006042309105396271, -0.11925425380468369, -0.08379000425338745],
        [0.1483505368232727, 0.002197866328060627, 0.0, 0.0],
        [-0.05513261258602142, -0.0314735472202301, -0.06610127538442612, 0.0]]),
    "dapo": (-0.6148993968963623, [
        [-0.1523611694574356, 0.0008056412916630507, -0.15900567173957825, -0.111720010638237],
        [0.09890036284923553, 0.0014652442187070847, 0.0, 0.0],
        [-0.05513261258602142, -0.0314735472202301, -0.06610127538442612, 0.0]]),
    "dr_grpo": (-0.4611745774745941, [
        [-0.11427087336778641, 0.0006042309105396271, -0.11925425380468369, -0.08379000425338745],
        [0.07417526841163635, 0.0010989331640303135, 0.0, 0.0],
        [-0.04134945943951607, -0.023605160415172577, -0.04957595467567444, 0.0]]),
}


@pytest.mark.parametrize("loss_type", sorted(BEFORE))
def test_defaults_and_no_token_weights_are_bit_identical_to_before(loss_type):
    want_loss, want_grad = BEFORE[loss_type]
    logp, old, ref, mask, adv = _fixed_batch()
    kw = dict(eps_low=0.2, eps_high=0.28, beta=0.04, ref_logp=ref)
    loss, grad, st = _grad(loss_type, logp, old, adv, mask, **kw)
    assert torch.equal(loss, torch.tensor(want_loss)) and torch.equal(grad, torch.tensor(want_grad))
    assert list(st) == ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "ratio_mean", "kl"]
    # explicit token_weights=None, level "token", and weights of exactly 1 (x * 1.0 is exact) agree
    for extra in (dict(token_weights=None, importance_sampling_level="token"),
                  dict(token_weights=torch.ones(3, 4))):
        loss2, grad2, st2 = _grad(loss_type, logp, old, adv, mask, **kw, **extra)
        assert torch.equal(loss2, loss) and torch.equal(grad2, grad)
        assert all(torch.equal(st2[k], st[k]) for k in st)


# ----------------------------------------------------------------------------- bnpo
def _ragged():
    # ratios (inside [0.8, 1.2]): row 0 (A=2): [1.1, 0.9, 1.0]; row 1 (A=-1): [1.05, pad, pad]
    logp, old = _from_ratios([[1.1, 0.9, 1.0], [1.05, 1.0, 1.0]])
    return logp, old, torch.tensor([2.0, -1.0]), torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_bnpo_one_micro_batch_is_dapo():
    # per-token -A*rho: [-2.2, -1.8, -2.0] and [1.05]; 4 tokens -> (-6.0 + 1.05) / 4 = -1.2375
    logp, old, adv, mask = _ragged()
    loss, grad, _ = _grad("bnpo", logp, old, adv, mask)
    close(loss, -1.2375)
    _, grad_dapo, _ = _grad("dapo", logp, old, adv, mask)
    close(grad, grad_dapo)  # d/dlogp = -A*rho / 4: [[-0.55, -0.45, -0.5], [0.2625, 0, 0]]
    close(grad, [[-0.55, -0.45, -0.5], [0.2625, 0.0, 0.0]])


def test_bnpo_micro_batches_average_their_token_means():
    # micro-batches of 1 row; num_items = number of micro-batches = 2:
    #   row 0: mean(-2.2, -1.8, -2.0) / 2 = -1.0;   row 1: 1.05 / 2 = 0.525;   sum -0.475
    # = grpo's value here (TRL: bnpo with per_device_train_batch_size 1 is grpo); dapo: -1.2375
    logp, old, adv, mask = _ragged()
    n = loss_normalizer(mask, "bnpo", micro_batch_size=1)
    assert n == 2.0 and loss_normalizer(mask, "bnpo") == 1.0
    x = logp.detach().clone().requires_grad_()
    total = sum(policy_loss(x[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], loss_type="bnpo",
                            num_items=n)[0] for i in range(2))
    total.backward()
    close(total, -0.475)
    # d/dlogp: row 0 -A*rho / 3 tokens / 2 = -rho/3; row 1 -A*rho / 1 / 2 = 0.525
    close(x.grad, [[-1.1 / 3, -0.9 / 3, -1.0 / 3], [0.525, 0.0, 0.0]])


def test_loss_normalizer_micro_batches():
    mask = _random_batch(0)[3]  # lengths 7, 3, 0, 1, 5, 2: 18 tokens, 6 rows
    for mbs in (None, 1, 4, 6, 10):
        assert loss_normalizer(mask, "dapo", micro_batch_size=mbs) == 18.0
        assert loss_normalizer(mask, "cispo", micro_batch_size=mbs) == 18.0
        assert loss_normalizer(mask, "grpo", micro_batch_size=mbs) == 6.0
        assert loss_normalizer(mask, "sapo", micro_batch_size=mbs) == 6.0
        assert loss_normalizer(mask, "dr_grpo", 8, micro_batch_size=mbs) == 48.0
    # bnpo: ceil(6 / mbs) micro-batches
    assert [loss_normalizer(mask, "bnpo", micro_batch_size=k) for k in (None, 1, 4, 6, 10)] == [1, 6, 2, 1, 1]
    with pytest.raises(ValueError, match="micro_batch_size"):
        loss_normalizer(mask, "bnpo", micro_batch_size=0)


# ----------------------------------------------------------------------------- cispo
def test_cispo_hand_example():
    # one row, A = 2, logp = [-1, -2, -0.5, -0.25], rho = [0.5, 1, 3, 6], eps_high = 5 (cap):
    # w = min(rho, 5) = [0.5, 1, 3, 5] (detached); l = -w A logp = [1.0, 4.0, 3.0, 2.5];
    # token mean 10.5 / 4 = 2.625; d l / d logp = -w A / 4 = [-0.25, -0.5, -1.5, -2.5]
    # (no d w / d logp term: the weight is detached); capped (rho > 5, A > 0): 1 of 4
    logp, old = _from_ratios([[0.5, 1.0, 3.0, 6.0]], logp=[[-1.0, -2.0, -0.5, -0.25]])
    loss, grad, st = _grad("cispo", logp, old, torch.tensor([2.0]), torch.ones(1, 4), eps_high=5.0)
    close(loss, 2.625)
    close(grad, [[-0.25, -0.5, -1.5, -2.5]])
    close(st["cispo_clip_ratio"], 0.25)
    assert "clip_ratio/region_mean" not in st
    # A < 0: l = -w A logp = [-0.5, -2, -1.5, -1.25] / 4 -> -1.3125, never counted as capped
    loss, grad, st = _grad("cispo", logp, old, torch.tensor([-1.0]), torch.ones(1, 4), eps_high=5.0)
    close(loss, -1.3125)
    close(grad, [[0.125, 0.25, 0.75, 1.25]])
    close(st["cispo_clip_ratio"], 0.0)
    # TRL's cap is eps_high itself, defaulting to eps_low: with 0.2 every weight is 0.2
    # -> d/dlogp = -0.2 * 2 / 4 = -0.1 on every token
    _, grad, _ = _grad("cispo", logp, old, torch.tensor([2.0]), torch.ones(1, 4), eps_low=0.2)
    close(grad, [[-0.1] * 4])


def test_cispo_on_policy_gradient_is_dapos():
    # rho = 1 <= cap: w = 1, d/dlogp = -A m / N, the plain policy gradient, as dapo's at rho = 1
    logp, _, adv, mask = _random_batch(1)
    for level in IS_LEVELS:
        kw = dict(eps_high=5.0, importance_sampling_level=level)
        _, g_cispo, _ = _grad("cispo", logp, logp, adv, mask, **kw)
        _, g_dapo, _ = _grad("dapo", logp, logp, adv, mask, **kw)
        close(g_cispo, g_dapo)
        close(g_cispo, -adv[:, None] * mask / mask.sum())


# ----------------------------------------------------------------------------- sapo
def test_sapo_hand_example():
    # f(rho) = sigmoid(tau (rho - 1)) 4 / tau,  l = -f(rho) A,  grpo aggregation (B = 2, 2 tokens each)
    # row 0: A = 1 -> tau_pos = 2, rho = [1, 1.5]: f = [0.5*2, s(1)*2] = [1, 1.46211716]
    #        l = [-1, -1.46211716], mean -1.23105858
    # row 1: A = -2 -> tau_neg = 4, rho = [1, 0.5]: f = [0.5*1, s(-2)*1] = [0.5, 0.11920292]
    #        l = [1, 0.23840584], mean 0.61920292
    # loss = (-1.23105858 + 0.61920292) / 2 = -0.30592783
    # d l / d logp = -A f'(rho) rho with f'(rho) = 4 s (1 - s), s = sigmoid(tau (rho - 1)); / (2 tokens * B 2)
    # row 0: [-1 * 1 * 1, -1 * 4 s(1)(1-s(1)) * 1.5] / 4 = [-0.25, -0.29491790]
    # row 1: [2 * 1 * 1, 2 * 4 s(-2)(1-s(-2)) * 0.5] / 4 = [0.5, 0.10499359]
    s1, s2 = sigmoid(1.0), sigmoid(-2.0)
    logp, old = _from_ratios([[1.0, 1.5], [1.0, 0.5]])
    loss, grad, st = _grad("sapo", logp, old, torch.tensor([1.0, -2.0]), torch.ones(2, 2),
                           sapo_temperature_pos=2.0, sapo_temperature_neg=4.0)
    close(loss, ((-1 - 2 * s1) / 2 + (1 + 2 * s2) / 2) / 2)
    close(loss, -0.30592783, tol=1e-7)
    close(grad, [[-0.25, -4 * s1 * (1 - s1) * 1.5 / 4], [0.5, 2 * 4 * s2 * (1 - s2) * 0.5 / 4]])
    close(grad, [[-0.25, -0.29491790], [0.5, 0.10499359]], tol=1e-7)
    assert set(st) == {"ratio_mean"}


def test_sapo_on_policy_gradient_is_grpos():
    # rho = 1: f'(1) = 4 * 0.5 * 0.5 = 1 for every tau -> grad -A m / (B |o_i|), grpo's; the value
    # is -A f(1) = -2A / tau per token, not -A
    logp, _, adv, mask = _random_batch(2)
    _, g_grpo, _ = _grad("grpo", logp, logp, adv, mask)
    for taus in ((1.0, 1.05), (0.5, 3.0)):
        kw = dict(sapo_temperature_pos=taus[0], sapo_temperature_neg=taus[1])
        loss, g_sapo, _ = _grad("sapo", logp, logp, adv, mask, **kw)
        close(g_sapo, g_grpo)
        tau = torch.where(adv > 0, taus[0], taus[1])
        close(loss, (-2 * adv / tau * (mask.sum(-1) > 0)).sum() / 6)


# ----------------------------------------------------------------------------- GSPO
def test_gspo_sequence_ratio_hand_example():
    # log-ratios: row 0 [0.3, -0.1, 0.1] -> mean 0.1; row 1 [0.5, -0.3, pad] -> mean 0.1
    # s_0 = s_1 = e^0.1 = 1.10517092, inside [0.8, 1.2] for both (eps 0.2)
    # grpo, A = [1, -0.5]: l_0 = -s, l_1 = 0.5 s; loss = (-s + 0.5 s) / 2 = -0.27629273
    # d s / d logp_t = s / |o_i|:  row 0: -1 * s / 3 / 2 = -0.18419515;  row 1: 0.5 * s / 2 / 2 = 0.13814637
    s = math.exp(0.1)
    lr = torch.tensor([[0.3, -0.1, 0.1], [0.5, -0.3, 7.0]])
    logp0 = torch.full((2, 3), -1.0)
    old, mask, adv = logp0 - lr, torch.tensor([[1, 1, 1], [1, 1, 0]]), torch.tensor([1.0, -0.5])
    for level in ("sequence", "sequence_token"):
        loss, grad, st = _grad("grpo", logp0, old, adv, mask, importance_sampling_level=level)
        close(loss, -0.5 * s / 2)
        close(loss, -0.27629273, tol=1e-7)
        close(grad, [[-s / 6] * 3, [s / 8, s / 8, 0.0]])
        close(st["ratio_mean"], s)  # the sequence ratio on each of its 5 tokens
        close(st["clip_ratio/region_mean"], 0.0)
    close(importance_log_ratio(logp0, old, mask, "sequence"), [[0.1] * 3, [0.1] * 3])
    # token level differs: row 1's rho = e^0.5 = 1.65 > 1.2 with A < 0 is NOT clipped (min picks it)
    # and rho = e^-0.3 = 0.74 < 0.8 with A < 0 is clipped -> grads [0.5 e^0.5 / 4, 0]
    _, grad, _ = _grad("grpo", logp0, old, adv, mask)
    close(grad[1], [0.5 * math.exp(0.5) / 4, 0.0, 0.0])


def test_gspo_clips_the_whole_sequence():
    # row log-ratios [0.5, 0.3] -> s = e^0.4 = 1.49 > 1.28 with A > 0: clipped, loss -1.28, no gradient
    # at any token (token level would clip both tokens too, but row [0.5, -0.5] -> s = 1 would not)
    logp0 = torch.full((1, 2), -1.0)
    _, grad, st = _grad("grpo", logp0, logp0 - torch.tensor([[0.5, 0.3]]), torch.ones(1), torch.ones(1, 2),
                        eps_high=0.28, importance_sampling_level="sequence")
    close(grad, [[0.0, 0.0]])
    close(st["clip_ratio/high_mean"], 1.0)
    # [0.5, -0.5] -> s = 1: gradient -A s / 2 = -0.5 on both, although token 0's own ratio e^0.5 is clipped
    _, grad, _ = _grad("grpo", logp0, logp0 - torch.tensor([[0.5, -0.5]]), torch.ones(1), torch.ones(1, 2),
                       eps_high=0.28, importance_sampling_level="sequence")
    close(grad, [[-0.5, -0.5]])


def test_gspo_reduces_to_token_level_with_equal_token_ratios():
    # every token of a row has the same log-ratio c_i -> s_i = e^{c_i} = rho_{i,t}: same loss and grads
    logp0, _, adv, mask = _random_batch(4)
    c = torch.tensor([0.05, -0.1, 0.0, 0.3, 0.02, -0.4])[:, None]
    old = logp0 - c
    for lt in AGGREGATIONS:
        kw = dict(eps_high=5.0) if lt == "cispo" else {}
        want_loss, want_grad, _ = _grad(lt, logp0, old, adv, mask, **kw)
        for level in ("sequence", "sequence_token"):
            loss, grad, _ = _grad(lt, logp0, old, adv, mask, importance_sampling_level=level, **kw)
            close(loss, want_loss)
            close(grad, want_grad)


@pytest.mark.parametrize("loss_type", ["bnpo", "cispo", "sapo", "grpo"])
def test_micro_batch_accumulation_with_new_variants(loss_type):
    # with num_items = the full batch's normaliser the micro-batch losses sum to the full loss; for bnpo
    # "full" is TRL's: the mean over micro-batches of their own token means
    logp0, old, adv, mask = _random_batch(3)
    kw = dict(loss_type=loss_type, eps_low=0.2, eps_high=5.0 if loss_type == "cispo" else 0.28,
              importance_sampling_level="sequence" if loss_type != "bnpo" else "token",
              token_weights=torch.rand(6, 7, generator=torch.Generator().manual_seed(0)))
    slices = (slice(0, 2), slice(2, 4), slice(4, 6))
    full_logp = logp0.clone().requires_grad_()

    def part(x, sl, **extra):
        return policy_loss(x[sl], old[sl], adv[sl], mask[sl], **dict(kw, token_weights=kw["token_weights"][sl]),
                           **extra)[0]

    if loss_type == "bnpo":
        full = sum(part(full_logp, sl) for sl in slices) / 3
    else:
        full = policy_loss(full_logp, old, adv, mask, **kw)[0]
    full.backward()
    num_items = loss_normalizer(mask, loss_type, micro_batch_size=2)
    acc_logp = logp0.clone().requires_grad_()
    total = sum(part(acc_logp, sl, num_items=num_items) for sl in slices)
    total.backward()
    close(total, full)
    close(acc_logp.grad, full_logp.grad)


# ----------------------------------------------------------------------------- token_weights
def test_token_weights_scale_the_policy_term_not_the_kl():
    # dapo, on-policy (rho = 1), one row of 2 tokens, A = 2, w = [0.5, 0]:
    # policy term -A rho w = [-1, 0]; beta 0.1 * k3 with ref - logp = log 0.5 per token:
    # k3 = 0.5 - log 0.5 - 1 = 0.19314718 -> loss = (-1 + 0 + 2 * 0.1 * k3) / 2 = -0.48068528
    k3 = 0.5 - math.log(0.5) - 1
    logp = torch.full((1, 2), -1.0)
    ref = logp + math.log(0.5)
    w = torch.tensor([[0.5, 0.0]])
    loss, _, st = _grad("dapo", logp, logp, torch.tensor([2.0]), torch.ones(1, 2), token_weights=w,
                        beta=0.1, ref_logp=ref)
    close(loss, (-1 + 2 * 0.1 * k3) / 2)
    close(st["kl"], k3)
    # without KL: d/dlogp = -A rho w / 2 = [-0.5, 0]; NaN weights on padding are ignored
    logp, old = _from_ratios([[1.0, 1.0, 1.0]])
    w = torch.tensor([[0.5, 0.0, NAN]])
    loss, grad, _ = _grad("dapo", logp, old, torch.tensor([2.0]), torch.tensor([[1, 1, 0]]), token_weights=w)
    close(loss, -0.5)
    close(grad, [[-0.5, 0.0, 0.0]])


# ----------------------------------------------------------------------------- sampler correction
def _sampler_batch():
    # r = pi_trainer_old / pi_sampler per token: row 0 [1, 2, 4, pad], row 1 [0.25, 0.5, pad, pad],
    # row 2 empty; sequence ratios (products): r_0 = 8, r_1 = 0.125, r_2 = 1
    old = torch.full((3, 4), -1.0)
    r = torch.tensor([[1.0, 2.0, 4.0, 1.0], [0.25, 0.5, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    sampler = old - r.log()
    sampler[0, 3], sampler[1, 2] = NAN, -INF  # padding is ignored
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    return old, sampler, mask


@pytest.mark.parametrize("mode, clip_max, clip_min, want", [
    # token_truncate: min(r, 3)                       -> [1, 2, 3], [0.25, 0.5]
    ("token_truncate", 3.0, None, [[1, 2, 3], [0.25, 0.5]]),
    # ... and max(., 0.5)                              -> [1, 2, 3], [0.5, 0.5]
    ("token_truncate", 3.0, 0.5, [[1, 2, 3], [0.5, 0.5]]),
    # token_mask: 0 where r > 3                        -> [1, 2, 0], [0.25, 0.5]
    ("token_mask", 3.0, None, [[1, 2, 0], [0.25, 0.5]]),
    # ... or r < 0.5 (0.5 itself is kept)             -> [1, 2, 0], [0, 0.5]
    ("token_mask", 3.0, 0.5, [[1, 2, 0], [0.0, 0.5]]),
    # sequence_truncate: min(8, 3) = 3; min(0.125, 3) = 0.125 on every token of the row
    ("sequence_truncate", 3.0, None, [[3, 3, 3], [0.125, 0.125]]),
    # ... max(0.125, 0.5) = 0.5
    ("sequence_truncate", 3.0, 0.5, [[3, 3, 3], [0.5, 0.5]]),
    # sequence_mask: 8 > 3 -> the whole row 0 leaves the loss; 0.125 stays
    ("sequence_mask", 3.0, None, [[0, 0, 0], [0.125, 0.125]]),
    # ... 0.125 < 0.2 -> row 1 too
    ("sequence_mask", 3.0, 0.2, [[0, 0, 0], [0.0, 0.0]]),
    # only a lower bound: 8 kept as it is
    ("sequence_mask", None, 0.2, [[8, 8, 8], [0.0, 0.0]]),
])
def test_sampler_correction_weights(mode, clip_max, clip_min, want):
    old, sampler, mask = _sampler_batch()
    old.requires_grad_()
    w = sampler_correction_weights(old, sampler, mask, mode, clip_max=clip_max, clip_min=clip_min)
    assert w.shape == (3, 4) and not w.requires_grad and torch.isfinite(w).all()
    close(w[0, :3], want[0])
    close(w[1, :2], want[1])
    if mode.startswith("sequence"):
        close(w[2], [1.0] * 4)  # an empty row: r = 1


def test_sampler_correction_stats_and_validation():
    old, sampler, mask = _sampler_batch()
    # token_mask, cap 3: masked tokens' weights [1, 2, 0, 0.25, 0.5]: count 5, sum 3.75, min 0, max 2
    st = sampler_correction_stats(sampler_correction_weights(old, sampler, mask, "token_mask"), mask, "token_mask")
    close([st["count"], st["sum"], st["min"], st["max"]], [5, 3.75, 0, 2])
    # sequence_truncate, cap 3: one per row (the empty one too, as TRL): [3, 0.125, 1] -> 3, 4.125, 0.125, 3
    w = sampler_correction_weights(old, sampler, mask, "sequence_truncate")
    st = sampler_correction_stats(w, mask, "sequence_truncate")
    close([st["count"], st["sum"], st["min"], st["max"]], [3, 4.125, 0.125, 3])
    st = sampler_correction_stats(w, torch.zeros(3, 4), "token_truncate")
    close([st["count"], st["sum"], st["min"], st["max"]], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="mode"):
        sampler_correction_weights(old, sampler, mask, "sequence_clip")
    with pytest.raises(ValueError, match="clip_max or clip_min"):
        sampler_correction_weights(old, sampler, mask, "token_truncate", clip_max=None)
    with pytest.raises(ValueError, match="clip_min"):
        sampler_correction_weights(old, sampler, mask, "token_mask", clip_max=2.0, clip_min=2.0)
    # no bound at all is allowed for a mask mode: the raw ratio (TRL's behaviour)
    w = sampler_correction_weights(old, sampler, mask, "token_mask", clip_max=None)
    close(w[0, :3], [1, 2, 4])


def test_sampler_weights_in_the_loss():
    # sequence_mask drops row 0 (r_0 = 8 > 3) from the numerator only: dapo, on-policy, A = [1, 1, 1]:
    # per token -A rho w = row 0 [0, 0, 0], row 1 [-0.125, -0.125]; 5 tokens -> loss -0.25 / 5 = -0.05
    old, sampler, mask = _sampler_batch()
    w = sampler_correction_weights(old, sampler, mask, "sequence_mask")
    loss, grad, _ = _grad("dapo", old, old, torch.ones(3), mask, token_weights=w)
    close(loss, -0.05)
    close(grad, [[0, 0, 0, 0], [-0.025, -0.025, 0, 0], [0, 0, 0, 0]])
