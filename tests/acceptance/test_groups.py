"""Acceptance: groups that carry no signal. All rewards equal, one generation per group, every
completion masked: the step runs, the metrics say so, nothing becomes NaN, and the weights do not
move when there is nothing to learn from."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from r1kit.train.grpo import train
from r1kit.train.tracking import read_metrics

from .conftest import initial_tiny_weights, safetensors_of, tiny_cfg


def assert_finite_and_unchanged(out, unchanged: bool = True):
    init, final = initial_tiny_weights(), safetensors_of(out)
    assert all(torch.isfinite(v).all() for v in final.values())
    if unchanged:
        assert all(torch.equal(init[k], v) for k, v in final.items() if k in init)


def test_all_rewards_equal(tmp_path):
    out = train(tiny_cfg(tmp_path, reward_funcs=["acceptance.bad_rewards:constant"], max_steps=2, beta=0.04))
    for r in read_metrics(out):
        assert r["frac_reward_zero_std"] == 1.0 and r["reward_std"] == 0.0 and r["advantages/abs_mean"] == 0.0
        # loss = beta * KL(policy || reference) with the policy still equal to its reference: zero up to
        # float round-off (a fresh install once gave 3.8e-16), so compared with a tolerance
        assert r["loss"] == pytest.approx(0.0, abs=1e-9) and r["grad_norm"] == pytest.approx(0.0, abs=1e-9)
        assert math.isfinite(r["kl"]) and None not in r.values()
    assert_finite_and_unchanged(out)


def test_one_generation_per_group_is_refused():
    """G = 1: every group would be a single completion, every advantage 0 (GRPO has no baseline); as in
    TRL, num_generations must be >= 2, and the config says so before anything loads."""
    with pytest.raises(ValueError, match=r"'num_generations' must be >= 2, got 1"):
        tiny_cfg(Path("unused"), num_generations=1)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_every_completion_masked(tmp_path, scripted_engine, loss_type):
    """mask_truncated_completions with every completion truncated: no token enters the loss (the
    token-mean normaliser is 0), yet rewards vary, so advantages are non-zero."""
    scripted_engine(lambda k: ([5 + k] * (k + 1), "7" * k, "length"))  # different digits -> varied rewards
    out = train(tiny_cfg(tmp_path, mask_truncated_completions=True, loss_type=loss_type, beta=0.04))
    r = read_metrics(out)[0]
    assert r["completions/clipped_ratio"] == 1.0 and r["advantages/abs_mean"] > 0
    assert r["loss"] == pytest.approx(0.0, abs=1e-9) and r["grad_norm"] == pytest.approx(0.0, abs=1e-9)
    assert r["skipped_steps"] == 0
    assert None not in r.values()  # the log writes NaN/inf as null: no metric was NaN
    assert_finite_and_unchanged(out)
