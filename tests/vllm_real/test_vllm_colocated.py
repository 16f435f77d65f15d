"""`rollout_engine: vllm` against a real vLLM (CPU build): the engine samples what the trainer's model
would, its log-probs are the trainer's to float noise, and they stay so after every weight sync of a
GRPO run at a learning rate that moves the policy fast. A sync that is skipped shows up in the
sampling/sampling_logp_difference metric at once, so that metric is worth watching."""

import json

import pytest
import torch

from r1kit.rollout import SamplingParams, make_engine
from r1kit.train.grpo import train
from r1kit.train.grpo_config import GRPOConfig

PROMPTS = ["12 + 7 = ", "Compute 3 * 4 + 5. ", "What is 81 - 19? "]


def trainer_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log p(completion token | prefix) under the trainer's model at temperature 1."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt):, None])[:, 0]


def digit_share(completions, **kw):
    """A reward that varies within every group from the first step (so the policy moves at once)."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in open(f"{out}/metrics.jsonl")]


def grpo(tmp_path, name: str, **kw) -> GRPOConfig:
    return GRPOConfig(**{**dict(
        model_name_or_path="r1kit:tiny-base", dataset_name="r1kit:arithmetic", dataset_num_rows=64,
        reward_funcs=["task_accuracy", "format", "test_vllm_colocated:digit_share"], num_generations=4, per_device_train_batch_size=16,
        max_completion_length=24, learning_rate=1e-3, lr_scheduler_type="constant", max_steps=4,
        rollout_engine="vllm", output_dir=str(tmp_path / name), save_steps=0, disable_tqdm=True,
        log_completions=False), **kw})


def test_vllm_samples_what_the_trainer_would_before_and_after_a_sync(tiny_base):
    model, tok = tiny_base
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    vllm_engine, hf = make_engine("vllm", model, tok), make_engine("hf", model, tok)
    greedy = SamplingParams(n=1, max_new_tokens=24, temperature=0)
    for round_ in ("start", "after sync"):
        a, b = vllm_engine.generate(ids, greedy), hf.generate(ids, greedy)
        assert [c.completion_ids for c in a] == [c.completion_ids for c in b], round_
        for c in a:  # vLLM's log-probs are the trainer's, to float noise
            ref = trainer_logps(model, c.prompt_ids, c.completion_ids)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4), round_
        with torch.no_grad():  # a large update: greedy outputs change, so a stale engine would be caught
            g = torch.Generator().manual_seed(0)
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        vllm_engine.update_weights(model)
    # sampled (temperature 1, one seed per prompt): the log-probs of what vLLM sampled, under the trainer
    for c in vllm_engine.generate(ids, SamplingParams(n=2, max_new_tokens=16, temperature=1.0, seed=3)):
        ref = trainer_logps(model, c.prompt_ids, c.completion_ids)
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4)


def test_grpo_with_vllm_keeps_the_sampler_on_the_trainers_policy(tmp_path, monkeypatch):
    """4 steps at lr 1e-3 (the tiny model's policy moves a lot each step): the difference stays at float
    noise. Then the same run with the weight sync switched off: the difference grows step after step."""
    train(grpo(tmp_path, "synced"))
    synced = metrics(tmp_path / "synced")
    diffs = [m["sampling/sampling_logp_difference/mean"] for m in synced]
    assert len(diffs) == 4 and max(diffs) < 1e-4, diffs
    assert max(m["sampling/sampling_logp_difference/max"] for m in synced) < 1e-2
    assert all(abs(m["sampling/importance_sampling_ratio/mean"] - 1) < 1e-3 for m in synced)

    from r1kit.rollout.vllm_engine import VLLMEngine

    monkeypatch.setattr(VLLMEngine, "update_weights", lambda self, model: None)  # a broken sync
    train(grpo(tmp_path, "stale"))
    stale = [m["sampling/sampling_logp_difference/mean"] for m in metrics(tmp_path / "stale")]
    assert stale[0] < 1e-4  # step 1 samples from the weights vLLM started with: still the same
    assert min(stale[1:]) > 100 * max(diffs), stale


def test_async_generation_with_vllm_runs_one_step_off_policy_with_importance_weights(tmp_path):
    train(grpo(tmp_path, "async", async_generation=True, learning_rate=3e-4))
    rows = metrics(tmp_path / "async")
    assert [m["async/staleness"] for m in rows] == [0, 1, 1, 1]
    for m in rows:  # sequence_mask: the weights applied are 0 (dropped) or the ratio, at most clip_max 3.0
        assert 0.0 <= m["sampling/importance_sampling_ratio/min"] <= m["sampling/importance_sampling_ratio/mean"]
        assert m["sampling/importance_sampling_ratio/max"] <= 3.0
    # one sync old: the sampler's log-probs differ from the trainer's by more than float noise
    assert min(m["sampling/sampling_logp_difference/mean"] for m in rows[1:]) > 1e-4
