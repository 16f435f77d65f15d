"""async_generation: the next step's batch is generated (by the previous weights) while this step trains.

What must hold: every batch after the first is exactly one sync old and says so; the loss is weighted by
the engine's log-probs (the importance weights are logged under TRL's names); the run's data order is
the synchronous run's (the look-ahead draws from a copy of the sampler); a run stopped after step 2 and
resumed trains on the rows the uninterrupted run trained on; and the trainer's module is never read
while it trains (the hf engine gets a copy of the policy)."""

import json

import pytest

from r1kit.train.grpo import train
from r1kit.train.grpo_config import GRPOConfig


def digit_reward(prompts, completions, **columns):
    return [sum(ch.isdigit() for ch in c) / 10 for c in completions]


def cfg(tmp_path, name, **kw) -> GRPOConfig:
    base = dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=32,
                num_generations=4, per_device_train_batch_size=8, max_completion_length=10, learning_rate=1e-3,
                max_steps=4, reward_funcs=["test_async_generation:digit_reward"], async_generation=True,
                output_dir=str(tmp_path / name), save_steps=2, disable_tqdm=True, seed=3)
    return GRPOConfig(**{**base, **kw})


def rows_of(out, step):
    return sorted(r["row"] for r in map(json.loads, open(out / "completions" / f"step-{step:06d}.jsonl")))


def metrics(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def test_async_batches_are_one_sync_old_and_importance_weighted(tmp_path):
    out = train(cfg(tmp_path, "async"))
    ms = metrics(out)
    assert [m["async/staleness"] for m in ms] == [0, 1, 1, 1]
    # step 1 was sampled by the weights it trains: the weights are exactly 1 (sequence_mask keeps ratio 1)
    assert ms[0]["sampling/sampling_logp_difference/mean"] < 1e-5
    assert ms[0]["sampling/importance_sampling_ratio/min"] == pytest.approx(1.0, abs=1e-4)
    # later steps: sampled one update earlier (lr 1e-3 moves the random model), so the ratio is not 1
    assert all(m["sampling/sampling_logp_difference/mean"] > 1e-4 for m in ms[1:])
    assert all(0.0 <= m["sampling/importance_sampling_ratio/min"] <= m["sampling/importance_sampling_ratio/max"] <= 3.0
               for m in ms)
    # same data order as the synchronous run: the look-ahead draws the rows the step would have drawn
    sync = train(cfg(tmp_path, "sync", async_generation=False))
    assert [rows_of(out, s) for s in range(1, 5)] == [rows_of(sync, s) for s in range(1, 5)]
    assert "async/staleness" not in metrics(sync)[0]
    # the synchronous hf engine samples from the trainer's own module: no correction, ratios of 1
    assert all(m["sampling/sampling_logp_difference/mean"] < 1e-5 for m in metrics(sync))


def test_resumed_async_run_trains_on_the_rows_of_the_uninterrupted_run(tmp_path):
    whole = train(cfg(tmp_path, "whole"))
    train(cfg(tmp_path, "parts", max_steps=2))  # stops with step 3's batch in flight: not recorded as seen
    parts = train(cfg(tmp_path, "parts", resume_from_checkpoint="true"))
    assert [rows_of(parts, s) for s in (3, 4)] == [rows_of(whole, s) for s in (3, 4)]
    assert [m["async/staleness"] for m in metrics(parts)][-2:] == [0, 1]  # the in-flight batch was regenerated


def test_async_options_are_checked():
    with pytest.raises(ValueError, match="'async_generation' cannot be combined with dynamic_sampling"):
        GRPOConfig(async_generation=True, dynamic_sampling=True)
    with pytest.raises(ValueError, match="'max_staleness' must be >= 1"):
        GRPOConfig(max_staleness=0)
    assert GRPOConfig(vllm_importance_sampling_cap=2.0).vllm_importance_sampling_clip_max == 2.0  # TRL's old name
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode"):
        GRPOConfig(vllm_importance_sampling_mode="sequence_truncate", vllm_importance_sampling_clip_max=None)
