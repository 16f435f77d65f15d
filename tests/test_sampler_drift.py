"""The sampler/trainer mismatch (TRL's sampling/* metrics): hand-checked math, and a real run where it
stays at float noise with a correct weight sync and grows when the engine is never synced."""

import math

import pytest
import torch

from r1kit.algo import sampler_drift
from r1kit.train.tracking import read_metrics


def test_sampler_drift_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, 0.0]])  # [B=2, T=3]
    sampler = torch.tensor([[-1.5, -2.0, -0.5], [-0.1, -2.0, 9.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the last token of row 1 is padding
    s = sampler_drift(trainer, sampler, mask)
    # d = trainer - sampler over the 5 real tokens: 0.5, 0, 0, 0, -1.0
    assert s["tokens"].item() == 5
    assert s["abs_diff_sum"].item() == pytest.approx(1.5) and s["abs_diff_max"].item() == pytest.approx(1.0)
    # ratios exp(d): e^0.5, 1, 1, 1, e^-1
    assert s["ratio_sum"].item() == pytest.approx(math.exp(0.5) + 3 + math.exp(-1.0))
    assert s["ratio_min"].item() == pytest.approx(math.exp(-1.0)) and s["ratio_max"].item() == pytest.approx(math.exp(0.5))
    none = sampler_drift(trainer, sampler, torch.zeros_like(mask))
    assert none["tokens"].item() == 0 and none["abs_diff_max"].item() == 0 and none["ratio_min"].item() == 1


def run(tmp_path, name, monkeypatch=None, broken_sync=False):
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig

    if broken_sync:
        import r1kit.train.grpo as grpo
        from r1kit.rollout.hf import HFEngine

        class StaleEngine(HFEngine):  # samples from a frozen copy of the initial weights, forever
            def __init__(self, model, tokenizer, **kw):
                import copy

                super().__init__(copy.deepcopy(model), tokenizer, **kw)

            def update_weights(self, model):
                pass

        monkeypatch.setattr(grpo, "make_engine", lambda name, model, tokenizer, **kw: StaleEngine(model, tokenizer))
    cfg = GRPOConfig(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=32,
                     num_generations=4, per_device_train_batch_size=8, max_completion_length=12,
                     learning_rate=3e-2, max_steps=4, save_steps=0, reward_funcs=["test_grpo:digit_reward"],
                     output_dir=str(tmp_path / name), disable_tqdm=True, seed=7)
    return read_metrics(train(cfg))


def test_engine_follows_the_trainer_and_a_stale_engine_shows(tmp_path, monkeypatch):
    synced = run(tmp_path, "synced")
    keys = ["sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
            "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
            "sampling/importance_sampling_ratio/max"]
    for r in synced:  # a learning rate that moves the policy fast, yet every step samples the current weights
        assert all(k in r for k in keys)
        assert r["sampling/sampling_logp_difference/max"] < 1e-3, r
        assert r["sampling/importance_sampling_ratio/min"] <= 1 <= r["sampling/importance_sampling_ratio/max"]
    stale = run(tmp_path, "stale", monkeypatch, broken_sync=True)
    assert stale[0]["sampling/sampling_logp_difference/max"] < 1e-3  # step 1: nothing has been trained yet
    later = [r["sampling/sampling_logp_difference/mean"] for r in stale[1:]]
    assert min(later) > 100 * max(r["sampling/sampling_logp_difference/mean"] for r in synced), later
