"""The trainer skeleton's contract, checked on the reward-model trainer (GRPO and SFT have their own
resume tests): a run killed right after a checkpoint and resumed equals a straight run, LoRA included;
the counters a checkpoint carries round-trip."""

import pytest
import torch
from safetensors.torch import load_file

from r1kit.train.rm import train
from r1kit.train.rm_config import RMConfig
from r1kit.train.skeleton import TrainState
from r1kit.train.tracking import read_metrics

TIMING = ("timing_s/", "perf/")


class Crash(Exception):
    pass


def rm_cfg(tmp_path, name, **kw) -> RMConfig:
    return RMConfig(**dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:preferences", dataset_num_rows=40,
                           eval_fraction=0.2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                           learning_rate=1e-3, max_steps=4, save_steps=2, max_length=96, logging_steps=1,
                           output_dir=str(tmp_path / name), disable_tqdm=True, seed=5, **kw))


@pytest.mark.parametrize("lora", [{}, {"lora_r": 4, "lora_alpha": 8}], ids=["full", "lora"])
def test_rm_resume_equals_straight_run(tmp_path, monkeypatch, lora):
    import r1kit.train.skeleton as skeleton

    straight = train(rm_cfg(tmp_path, "straight", **lora))
    real_save = skeleton.save_checkpoint

    def save_then_crash(*args, **kw):
        raise Crash(real_save(*args, **kw))

    monkeypatch.setattr(skeleton, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):  # dies right after writing checkpoint-2
        train(rm_cfg(tmp_path, "resumed", **lora))
    monkeypatch.setattr(skeleton, "save_checkpoint", real_save)
    resumed = train(rm_cfg(tmp_path, "resumed", resume_from_checkpoint="true", **lora))

    def clean(rows):
        return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]

    assert [r["step"] for r in read_metrics(resumed)] == [1, 2, 3, 4]
    assert clean(read_metrics(straight)) == clean(read_metrics(resumed))
    a, b = (load_file(str(p / "model.safetensors")) for p in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the reward model's own file travels with the final model
    assert (resumed / "r1kit_rm.json").is_file()


def test_train_state_round_trips_through_a_checkpoint_dict():
    state = TrainState(step=3, num_tokens=120, skipped_steps=1, sampler={"epoch": 0, "position": 8},
                       reward_errors={"accuracy": 2})
    saved = {**state.__dict__, "config": {"seed": 1}, "data_fingerprint": "f", "python_rng": [3, [], None]}
    assert TrainState.from_checkpoint(saved) == state
    # a checkpoint written before reward_errors existed (SFT/RM) still loads, with no errors counted
    old = {k: v for k, v in saved.items() if k != "reward_errors"}
    assert TrainState.from_checkpoint(old).reward_errors == {}


def test_live_doctor_warns_once_per_problem_during_training(tmp_path, caplog):
    """`r1kit doctor`'s rules run in the trainer: completions cut at a 3-token limit on every step give one
    `clipped_completions` warning, at the step the rule first fires, not one per step."""
    import logging

    from r1kit.diagnose.doctor import diagnose_run
    from r1kit.train.grpo import train as grpo_train
    from r1kit.train.grpo_config import GRPOConfig

    cfg = GRPOConfig(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=32,
                     num_generations=4, per_device_train_batch_size=8, max_completion_length=3, max_steps=8,
                     save_steps=0, reward_funcs=["format"], output_dir=str(tmp_path / "run"), disable_tqdm=True)
    with caplog.at_level(logging.WARNING, logger="r1kit.doctor"):
        out = grpo_train(cfg)
    titles = [r.getMessage().split(" at step")[0] for r in caplog.records if r.name == "r1kit.doctor"]
    assert len(titles) == len(set(titles)), titles  # each problem warned about once, however many steps show it
    assert all(r["completions/clipped_ratio"] == 1.0 for r in read_metrics(out))
    # the doctor, reading the finished run, finds exactly what the live monitor warned about
    findings = diagnose_run(out).findings
    assert "clipped_completions" in {f.rule for f in findings}
    assert sorted(titles) == sorted(f.title for f in findings)
