"""An engine that fails while receiving the new weights (a vLLM server that died after generating): the
step it follows is trained and recorded, so it is checkpointed, logged, and the run stops with a message
naming the failure; resuming continues with the next step."""

import json

import pytest

from r1kit.rollout import RolloutError
from r1kit.train.grpo import train
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.skeleton import TrainRun


def digit_reward(prompts, completions, **columns):
    return [sum(ch.isdigit() for ch in c) / 10 for c in completions]


def cfg(tmp_path, **kw):
    return GRPOConfig(**{**dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=16,
                                num_generations=4, per_device_train_batch_size=8, max_completion_length=8, max_steps=4,
                                reward_funcs=["test_engine_sync_failure:digit_reward"], learning_rate=1e-3,
                                output_dir=str(tmp_path / "run"), save_steps=0, disable_tqdm=True), **kw})


def test_failed_sync_keeps_the_trained_step_and_resumes_after_it(tmp_path, monkeypatch):
    real, calls = TrainRun.sync_engine, []

    def dies_at_step_2(self, engine):
        calls.append(1)
        if len(calls) == 2:
            raise RolloutError("vLLM server POST http://127.0.0.1:1/start_weight_update/ failed: connection refused")
        real(self, engine)

    monkeypatch.setattr(TrainRun, "sync_engine", dies_at_step_2)
    with pytest.raises(RolloutError, match=r"step 2: sending the new weights .*http://127\.0\.0\.1:1/.*checkpoint-2 holds step 2"):
        train(cfg(tmp_path))
    out = tmp_path / "run"
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl")] == [1, 2]
    monkeypatch.setattr(TrainRun, "sync_engine", real)
    train(cfg(tmp_path, resume_from_checkpoint="true"))
    assert [json.loads(line)["step"] for line in open(out / "metrics.jsonl")] == [1, 2, 3, 4]
