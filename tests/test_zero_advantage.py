"""Completions whose advantage is exactly 0 run forward only (skip_zero_advantage_backward)."""

import json
import math

import pytest
import torch

from r1kit.train.batch import grad_batches, micro_batches
from r1kit.train.grpo import train
from r1kit.train.tracking import read_metrics
from test_grpo import tiny_cfg, weights


def _rows(plan):
    return [r.tolist() if torch.is_tensor(r) else list(range(r.start, r.stop)) for r, _ in plan]


def test_micro_batches_put_the_rows_with_a_gradient_first():
    need = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)  # 6 of 12 rows
    plan = micro_batches(need, 4)
    # the 6 rows in order in ceil(6 / 4) = 2 micro-batches with a backward, then the 6 others forward only
    assert _rows(plan) == [[4, 5, 6, 7], [10, 11], [0, 1, 2, 3], [8, 9]]
    assert [g for _, g in plan] == [True, True, False, False]
    # one micro-batch of 12 rows (as the demo's 8 x 8): 6 rows back-propagate instead of 12
    assert _rows(micro_batches(need, 12)) == [[4, 5, 6, 7, 10, 11], [0, 1, 2, 3, 8, 9]]
    # nothing to skip: the plain consecutive slices
    assert micro_batches(torch.ones(10, dtype=torch.bool), 4) == [(slice(0, 4), True), (slice(4, 8), True),
                                                                   (slice(8, 12), True)]
    # no row has a gradient: one row still runs a backward (every parameter gets its zero gradient)
    none = torch.zeros(6, dtype=torch.bool)
    assert _rows(micro_batches(none, 4)) == [[0], [1, 2, 3, 4], [5]]
    assert [g for _, g in micro_batches(none, 4)] == [True, False, False]


def test_micro_batches_in_lockstep_over_processes():
    """Sharded weights: every process runs as many forward and backward passes (the max of grad_batches)."""
    need = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    assert grad_batches(need, 4) == 2 and grad_batches(torch.zeros(6, dtype=torch.bool), 4) == 1  # ceil, >= 1
    # its own 2, filled up with the first others: as many micro-batches as without skipping
    plan = micro_batches(need, 4, with_grad=2)
    assert _rows(plan) == [[4, 5, 6, 7], [10, 11, 0, 1], [2, 3, 8, 9]] and [g for _, g in plan] == [True, True, False]
    # another process needs 3 backward passes: so does this one, and that is every row
    assert micro_batches(need, 4, with_grad=3) == [(slice(0, 4), True), (slice(4, 8), True), (slice(8, 12), True)]
    two = torch.zeros(12, dtype=torch.bool)
    two[4:6] = True
    plan = micro_batches(two, 4, with_grad=2)
    assert _rows(plan) == [[4, 5, 0, 1], [2, 3, 6, 7], [8, 9, 10, 11]] and [g for _, g in plan] == [True, True, False]


def half_constant(prompts, completions, **columns):
    """Prompts of even length score every completion 0.5 (a group without signal: advantage 0); the others
    score digits written (the random model's samples differ)."""
    return [0.5 if len(p) % 2 == 0 else sum(ch.isdigit() for ch in c) / 10 for p, c in zip(prompts, completions)]


@pytest.mark.parametrize("num_iterations, micro_batch", [(1, 2), (2, 8)])
def test_skipping_the_backward_of_zero_advantage_rows_changes_nothing_but_the_work(tmp_path, num_iterations,
                                                                                   micro_batch):
    """Same losses, statistics and weights as the run that back-propagates every row; the skipped share is
    logged. num_iterations 1: the trainer's own log-probs are the sampling policy's (scattered back into the
    batch's row order for the drift metrics); 2: old log-probs are computed once per generation batch.
    Micro-batches of 2 rows (4 per update) or the update's 8 rows in one (the demo's shape)."""
    kw = dict(reward_funcs=["test_zero_advantage:half_constant"], max_steps=4, save_steps=0,
              num_iterations=num_iterations, per_device_train_batch_size=micro_batch,
              gradient_accumulation_steps=8 // micro_batch, epsilon_high=0.28)
    plain = train(tiny_cfg(tmp_path, "plain", skip_zero_advantage_backward=False, **kw))
    skip = train(tiny_cfg(tmp_path, "skip", **kw))
    a_rows, b_rows = read_metrics(plain), read_metrics(skip)
    assert "frac_backward_skipped" not in a_rows[0]
    skipped = [r["frac_backward_skipped"] for r in b_rows]
    for a, b in zip(a_rows, b_rows):
        for key in ("loss", "entropy", "reward", "clip_ratio/region_mean", "ratio_mean", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)
    # the logged advantages say which rows had no gradient: at most those were skipped, and some were
    zero = []
    for f in sorted((skip / "completions").glob("step-*.jsonl")):
        adv = [json.loads(line)["advantage"] for line in f.read_text().splitlines()]
        zero.append(sum(a == 0 for a in adv) / len(adv))
    per_batch = [skipped[i] for i in range(0, len(skipped), num_iterations)]  # one completions file per batch
    assert all(s <= z for s, z in zip(per_batch, zero)) and sum(skipped) > 0, (skipped, zero)
    a, b = weights(plain), weights(skip)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_no_skipping_where_zero_advantage_rows_have_a_gradient(tmp_path):
    """beta > 0 (the KL term) and bnpo (each micro-batch's token mean counts the rows) back-propagate all rows."""
    for name, kw in (("kl", dict(beta=0.04)), ("bnpo", dict(loss_type="bnpo"))):
        rows = read_metrics(train(tiny_cfg(tmp_path, name, reward_funcs=["test_zero_advantage:half_constant"],
                                           max_steps=1, save_steps=0, **kw)))
        assert "frac_backward_skipped" not in rows[0] and math.isfinite(rows[0]["loss"]), name
