"""Acceptance: checkpoints survive `kill -9` at any moment of a save, damaged `latest` pointers,
resuming twice and at an epoch boundary, with keep-last-N enforced and changed data or options
refused by name. Loading uses weights_only: a checkpoint cannot run code."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from r1kit.train.checkpoint import CheckpointError, find_checkpoint, list_checkpoints
from r1kit.data.datasets import DataError
from r1kit.train.grpo import train
from r1kit.train.tracking import read_metrics

from .conftest import TESTS_DIR, safetensors_of, tiny_cfg

RUNNER = Path(__file__).with_name("crash_runner.py")
TIMING = ("timing_s/", "perf/")


def clean(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def same_weights(a: Path, b: Path) -> bool:
    x, y = safetensors_of(a), safetensors_of(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def ended(pid: int) -> bool:
    """The job process has exited (a zombie until the runner reaps it, then gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Runner:
    """crash_runner.py: one process importing everything once, forking one child per job."""

    def __init__(self, log: Path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)
        assert self._read() == "ready"

    def _read(self) -> str:
        line = self.proc.stdout.readline().strip()
        assert line, f"crash_runner died; see {self.log.name}"
        return line

    def start(self, cfg: dict, stall: str | None = None, stall_step: int | None = None) -> int:
        self.proc.stdin.write(json.dumps({"cfg": cfg, "stall": stall, "stall_step": stall_step}) + "\n")
        self.proc.stdin.flush()
        kind, pid = self._read().split()
        assert kind == "pid"
        return int(pid)

    def wait(self) -> int:
        kind, status = self._read().split()
        assert kind == "exit"
        return int(status)

    def kill9(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        status = self.wait()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    def kill9_when_stalled(self, pid: int, marker: Path) -> None:
        """Wait for the job to reach its stall (it writes `marker`, then sleeps until killed); a job
        that ends instead (reaped by the runner) fails here at once, with its log."""
        hang_guard = time.monotonic() + 600  # not a speed check: a tiny job reaches its stall in seconds;
        while not marker.exists():           # this only keeps a deadlocked job from hanging the suite
            if ended(pid):
                assert marker.exists(), (f"job {pid} ended without reaching its stall: "
                                         f"{Path(self.log.name).read_text()[-3000:]}")
            if time.monotonic() > hang_guard:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"job {pid} neither reached its stall nor ended in 600 s (deadlock?); see {self.log.name}")
            time.sleep(0.02)
        marker.unlink()
        self.kill9(pid)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = Runner(tmp_path_factory.mktemp("runner") / "crash_runner.log")
    yield r
    r.close()


def job_cfg(out: Path, **kw) -> dict:
    base = dict(dataset_num_rows=8, num_generations=2, per_device_train_batch_size=4, max_completion_length=6,
                learning_rate=1e-3, max_steps=6, save_steps=1, save_total_limit=2, reward_funcs=["format"],
                output_dir=str(out), disable_tqdm=True, seed=3)
    base.update(kw)
    return base


def assert_checkpoints_whole(out: Path) -> None:
    """Every visible checkpoint-N is complete (a half-written or half-deleted one stays hidden)."""
    for step, path in list_checkpoints(out):
        names = {p.name for p in path.iterdir()}
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json"} <= names, path
        assert json.loads((path / "trainer_state.json").read_text())["step"] == step
    visible = sorted(p.name for p in out.glob("checkpoint-*")) if out.exists() else []
    assert visible == [p.name for _, p in list_checkpoints(out)]


def test_kill_9_in_every_phase_of_a_save_then_resume(tmp_path, runner):
    out = tmp_path / "run"
    marker = Path(f"{out}.stalled")
    resume = dict(resume_from_checkpoint="true")

    # 1. killed while the tmp folder of checkpoint-2 is half written
    runner.kill9_when_stalled(runner.start(job_cfg(out), "write", 2), marker)
    assert [s for s, _ in list_checkpoints(out)] == [1] and find_checkpoint("true", out).name == "checkpoint-1"
    assert [p.name.startswith(".tmp-checkpoint-2-") for p in out.iterdir() if p.name.startswith(".")] == [True]
    assert_checkpoints_whole(out)

    # 2. resumed at 1; killed with checkpoint-3 complete in its tmp folder, not yet renamed
    runner.kill9_when_stalled(runner.start(job_cfg(out, **resume), "rename", 3), marker)
    assert [s for s, _ in list_checkpoints(out)] == [1, 2] and find_checkpoint("true", out).name == "checkpoint-2"
    assert_checkpoints_whole(out)

    # 3. resumed at 2; killed after checkpoint-4 was renamed into place, before `latest` moved
    runner.kill9_when_stalled(runner.start(job_cfg(out, **resume), "pointer", 4), marker)
    assert [s for s, _ in list_checkpoints(out)] == [2, 3, 4]  # rotation after 3 removed 1 (keep 2)
    assert (out / "latest").read_text().strip() == "checkpoint-3"
    assert [p.name.startswith(".latest.tmp-") for p in out.iterdir() if p.name.startswith(".")] == [True]
    assert_checkpoints_whole(out)

    # 4. a garbage pointer: resume still finds the newest complete checkpoint
    (out / "latest").write_bytes(b"checkpoint-\xff\x00")
    assert find_checkpoint("true", out).name == "checkpoint-4"

    # 5. resumed at 4; killed while rotation is half way through deleting checkpoint-2
    runner.kill9_when_stalled(runner.start(job_cfg(out, **resume), "rotate", 5), marker)
    assert [s for s, _ in list_checkpoints(out)] == [3, 4, 5]  # 2 was renamed away before deletion
    assert find_checkpoint("true", out).name == "checkpoint-5"
    assert_checkpoints_whole(out)

    # 6. a truncated (empty) pointer, then resume to completion
    (out / "latest").write_text("")
    runner.start(job_cfg(out, **resume))
    assert runner.wait() == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # each step once, in order
    assert [s for s, _ in list_checkpoints(out)] == [5, 6] and (out / "latest").read_text().strip() == "checkpoint-6"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # leftovers cleaned up
    # nothing lost: identical to the same run never interrupted (every RNG state is restored)
    straight = train(tiny_cfg(tmp_path, "straight", **{k: v for k, v in job_cfg(out).items() if k != "output_dir"}))
    assert clean(read_metrics(straight)) == clean(rows)
    assert same_weights(straight, out)


def test_kill_9_at_random_moments(tmp_path, runner):
    """Killed at random moments (saves are a large part of each tiny step), again and again:
    what is on disk is always whole and the run always resumes, to the same final state."""
    out = tmp_path / "run"
    rng = random.Random(1)
    for attempt in range(5):
        cfg = job_cfg(out, max_steps=8, resume_from_checkpoint="true" if list_checkpoints(out) else None)
        pid = runner.start(cfg)
        time.sleep(rng.uniform(0.3, 2.0))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it had already ended (and was reaped)
            pass
        status = runner.wait()
        assert os.WIFSIGNALED(status) or status == 0, Path(runner.log.name).read_text()[-3000:]
        assert_checkpoints_whole(out)
        if list_checkpoints(out):
            find_checkpoint("true", out)
    cfg = job_cfg(out, max_steps=8, resume_from_checkpoint="true" if list_checkpoints(out) else None)
    runner.start(cfg)
    assert runner.wait() == 0
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 9))
    assert [s for s, _ in list_checkpoints(out)] == [7, 8]


class Crash(Exception):
    pass


def crash_after_saving(monkeypatch, step: int) -> None:
    """The loop dies (in-process) right after checkpoint-`step` is written."""
    import r1kit.train.skeleton as skeleton
    from r1kit.train.checkpoint import save_checkpoint

    def save_then_crash(root, n, **kw):
        path = save_checkpoint(root, n, **kw)
        if n == step:
            raise Crash(path)
        return path

    monkeypatch.setattr(skeleton, "save_checkpoint", save_then_crash)


def test_resume_twice_keeps_last_n(tmp_path, monkeypatch):
    """Crash after 2, resume, crash after 3, resume to 4 == 4 straight steps; save_total_limit=2
    holds after each resume."""
    cfg = dict(max_steps=4, save_steps=1, save_total_limit=2)
    straight = train(tiny_cfg(tmp_path, "straight", **cfg))
    out = tmp_path / "resumed"
    crash_after_saving(monkeypatch, 2)
    with pytest.raises(Crash):
        train(tiny_cfg(tmp_path, "resumed", **cfg))
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]
    crash_after_saving(monkeypatch, 3)
    with pytest.raises(Crash):
        train(tiny_cfg(tmp_path, "resumed", **cfg, resume_from_checkpoint="true"))
    assert [s for s, _ in list_checkpoints(out)] == [2, 3]
    monkeypatch.undo()
    train(tiny_cfg(tmp_path, "resumed", **cfg, resume_from_checkpoint="true"))
    assert [s for s, _ in list_checkpoints(out)] == [3, 4]
    assert clean(read_metrics(out)) == clean(read_metrics(straight))
    assert same_weights(straight, out)


def test_resume_at_an_epoch_boundary_trains_the_remaining_steps(tmp_path, monkeypatch):
    """8 prompts, 2 per step: 4 steps an epoch, 2 epochs. Killed right after checkpoint-4 (the
    epoch boundary), the resumed run trains steps 5-8 of the second epoch, not 0 steps."""
    cfg = dict(max_steps=-1, num_train_epochs=2, save_steps=4)
    crash_after_saving(monkeypatch, 4)
    with pytest.raises(Crash):
        train(tiny_cfg(tmp_path, **cfg))
    monkeypatch.undo()
    out = tmp_path / "run"
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["sampler"]["epoch"] == 0 and state["sampler"]["position"] == 8  # epoch 0 used up
    train(tiny_cfg(tmp_path, **cfg, resume_from_checkpoint="true"))
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())["sampler"]["epoch"] == 1


def test_changed_data_or_options_are_refused_by_name(tmp_path):
    train(tiny_cfg(tmp_path, save_steps=1))
    with pytest.raises(DataError, match="the dataset \\(or its template\\) changed since this checkpoint"):
        train(tiny_cfg(tmp_path, dataset_num_rows=10, max_steps=2, resume_from_checkpoint="true"))
    with pytest.raises(ValueError, match="options changed since this checkpoint: learning_rate: 0.001 -> 0.0001, "
                                         "num_generations: 2 -> 4"):
        train(tiny_cfg(tmp_path, learning_rate=1e-4, num_generations=4, max_steps=2, resume_from_checkpoint="true"))
    # options that do not change what is trained may change
    out = train(tiny_cfg(tmp_path, max_steps=2, save_total_limit=1, max_reward_failure_fraction=None,
                         resume_from_checkpoint="true"))
    assert [r["step"] for r in read_metrics(out)] == [1, 2]


class RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("damage", ["code", "truncated"])
def test_checkpoint_files_load_weights_only(tmp_path, damage):
    out = train(tiny_cfg(tmp_path, save_steps=1))
    target = out / "checkpoint-1" / "optimizer.pt"
    marker = tmp_path / "code-ran"
    if damage == "code":
        torch.save({"state": {}, "param_groups": RunsCode(marker)}, target)
    else:
        target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{target}: cannot be loaded with weights_only=True"):
        train(tiny_cfg(tmp_path, max_steps=2, resume_from_checkpoint="true"))
    assert not marker.exists()
