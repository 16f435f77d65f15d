"""A rollout engine that fails mid-run (a vLLM server that stalls or died): the run checkpoints the
last completed step, stops with a message naming the step, and resumes once the engine works."""

import pytest

from acceptance.conftest import ScriptedEngine, tiny_cfg
from r1kit.rollout.base import RolloutError
from r1kit.train.checkpoint import find_checkpoint
from r1kit.train.grpo import train
from r1kit.train.tracking import read_metrics


class FailingEngine(ScriptedEngine):
    """Answers `ok_calls` generate calls, then raises like a server past its read timeout."""

    def __init__(self, ok_calls: int):
        super().__init__(lambda k: ([5, 6], "12", "length"))
        self.ok_calls = ok_calls

    def generate(self, prompt_ids, params):
        if self.calls >= self.ok_calls:
            raise RolloutError("http://127.0.0.1:8000/generate/: no answer within the 600 s read timeout")
        return super().generate(prompt_ids, params)


def test_engine_failure_checkpoints_then_resumes(tmp_path, monkeypatch):
    import r1kit.train.grpo as grpo

    monkeypatch.setattr(grpo, "make_engine", lambda *a, **k: FailingEngine(ok_calls=2))
    cfg = dict(max_steps=4, save_steps=0)  # no periodic saves: the stop itself must checkpoint step 2
    with pytest.raises(RolloutError, match=r"step 3: the rollout engine failed: .*read timeout.*checkpoint-2 holds step 2"):
        train(tiny_cfg(tmp_path, **cfg))
    assert find_checkpoint("true", tmp_path / "run").name == "checkpoint-2"

    monkeypatch.setattr(grpo, "make_engine", lambda *a, **k: FailingEngine(ok_calls=99))
    out = train(tiny_cfg(tmp_path, resume_from_checkpoint="true", **cfg))
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]


def test_engine_failure_before_any_step_exits_nonzero_via_cli(tmp_path, monkeypatch, capsys):
    import r1kit.train.grpo as grpo
    from r1kit.cli import main

    monkeypatch.setattr(grpo, "make_engine", lambda *a, **k: FailingEngine(ok_calls=0))
    code = main(["grpo", "--model_name_or_path", "r1kit:tiny", "--dataset_num_rows", "8", "--num_generations", "2",
                 "--per_device_train_batch_size", "4", "--max_completion_length", "4", "--max_steps", "2",
                 "--output_dir", str(tmp_path / "cli"), "--disable_tqdm", "true"])
    err = capsys.readouterr().err
    assert code == 1 and "step 1: the rollout engine failed" in err and "nothing to checkpoint" in err
