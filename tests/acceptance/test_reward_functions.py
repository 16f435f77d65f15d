"""Acceptance: reward functions that raise, return all None, NaN/inf, the wrong length, or never
return. The run goes on with the lost rows counted in `reward_errors/<fn>` (cumulative) and one
warning naming the function and row, or, past `max_reward_failure_fraction`, stops with a message
naming the function after checkpointing the last completed step, and resumes from there."""

from __future__ import annotations

import logging
import math

import pytest

from r1kit.cli import main as cli_main
from r1kit.train.checkpoint import list_checkpoints
from r1kit.train.grpo import RewardFailureError, train
from r1kit.train.tracking import read_metrics

from .bad_rewards import CALLS
from .conftest import tiny_cfg

BAD = "acceptance.bad_rewards:"
ROWS = 4  # completions per step in tiny_cfg (2 prompts x 2 generations)


@pytest.mark.parametrize("fn, lost_per_step, log_text", [
    ("raises", ROWS, "reward 'raises' raised RuntimeError: reward backend is down (row 0"),
    ("all_none", 0, None),  # None means "cannot score": excluded, not an error
    ("nan_inf", 2, "reward 'nan_inf': row 0: non-finite value nan (2 of 4 rows unusable)"),
    ("wrong_length", ROWS, "reward 'wrong_length' returned 5 values for 4 completions (row 0)"),
])
def test_bad_reward_is_counted_and_the_run_goes_on(tmp_path, caplog, fn, lost_per_step, log_text):
    caplog.set_level(logging.WARNING, logger="r1kit.rewards")
    out = train(tiny_cfg(tmp_path, reward_funcs=[BAD + "digits", BAD + fn], max_steps=2,
                         max_reward_failure_fraction=None))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert [r[f"reward_errors/{fn}"] for r in rows] == [lost_per_step, 2 * lost_per_step]  # cumulative
    assert all(r["reward_errors/digits"] == 0 and math.isfinite(r["loss"]) for r in rows)
    assert all(math.isfinite(r["reward"]) for r in rows)  # the good function still scores every row
    warnings = [r.getMessage() for r in caplog.records if r.name == "r1kit.rewards"]
    if log_text is None:
        assert warnings == []
    else:
        assert len(warnings) == 2 and all(log_text in w for w in warnings)  # one line per step


def test_reward_that_scores_nothing_does_not_crash_the_loop(tmp_path):
    """Every total is NaN: advantages 0, loss 0, `reward` absent from the metrics (never NaN).
    (Before the fix, the progress bar's metrics['reward'] raised KeyError after the update.)"""
    out = train(tiny_cfg(tmp_path, reward_funcs=[BAD + "all_none"], max_steps=2, save_steps=1))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all("reward" not in r and r["frac_reward_zero_std"] == 1.0 for r in rows)
    assert [r["loss"] for r in rows] == [pytest.approx(0.0, abs=1e-9)] * 2  # zero up to float round-off
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]


def _spawn_workers() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def test_reward_that_never_returns_is_killed_at_its_deadline(tmp_path, caplog):
    """The deadline is per row: the whole batch gets ROWS x 1 s, then rows alone get 1 s each, and
    after 3 rows past their deadline (MAX_ROW_TIMEOUTS) the rest of the batch is given up."""
    caplog.set_level(logging.INFO, logger="r1kit.rewards")
    out = train(tiny_cfg(tmp_path, reward_funcs=[BAD + "digits", BAD + "sleep_forever"], reward_timeout_s=1.0,
                         max_reward_failure_fraction=None))
    row = read_metrics(out)[0]
    assert row["reward_errors/sleep_forever"] == ROWS and row["reward_errors/digits"] == 0
    assert math.isfinite(row["loss"]) and math.isfinite(row["reward"])
    messages = [r.getMessage() for r in caplog.records]
    # what it cost, counted in deadlines rather than timed: the 4 s batch deadline, then 3 one-second
    # rows, each ending in a killed worker; the 4th row is not started
    assert ("reward 'sleep_forever': passed its batch deadline of 4 s (4 rows); worker killed, "
            "scoring the rows one at a time") in messages
    for i in range(3):
        assert f"reward 'sleep_forever': row {i}: passed its 1 s deadline; worker killed" in messages
    assert any("reward 'sleep_forever': rows 3..3 not scored (1 rows): gave up" in m for m in messages)
    # the workers that ran it were killed and reaped (the last one hung): no spawn worker is left
    assert _spawn_workers() == []


def test_reward_that_hangs_on_one_row_loses_that_row_only(tmp_path, caplog, scripted_engine):
    """One completion of the step makes the reward hang: that row alone is lost (1 of 4, under
    max_reward_failure_fraction=0.5, so the run goes on) and its warning names it."""
    texts = ["12", "HANG 1", "123", "1"]
    scripted_engine(lambda k: ([5, 6, 0], texts[k % 4], "eos"))
    caplog.set_level(logging.WARNING, logger="r1kit.rewards")
    out = train(tiny_cfg(tmp_path, reward_funcs=[BAD + "digits", BAD + "hang_on_marker"], reward_timeout_s=0.5))
    row = read_metrics(out)[0]
    assert row["reward_errors/hang_on_marker"] == 1 and row["reward_errors/digits"] == 0
    assert math.isfinite(row["loss"]) and math.isfinite(row["reward"])
    warnings = [r.getMessage() for r in caplog.records if r.name == "r1kit.rewards"]
    assert warnings == ["reward 'hang_on_marker': row 1: passed its 0.5 s deadline; worker killed"]
    from r1kit.rewards._worker import shutdown, worker_pid

    assert [p.pid for p in _spawn_workers()] == [worker_pid()]  # the one kept for the next step
    shutdown()
    assert _spawn_workers() == []


def test_too_many_failures_stop_with_a_checkpoint_and_resume(tmp_path):
    """Step 1 scores, step 2's reward raises on every row: the run stops at step 2 naming the
    function, checkpoint-1 holds step 1, and resuming (with the check off) finishes the run."""
    CALLS["fails_after_first"] = 0
    cfg = dict(reward_funcs=[BAD + "fails_after_first"], max_steps=3, save_steps=0)
    with pytest.raises(RewardFailureError) as err:
        train(tiny_cfg(tmp_path, **cfg))
    msg = str(err.value)
    assert "step 2" in msg and "'fails_after_first' lost 4 of 4 rows" in msg and "max_reward_failure_fraction=0.5" in msg
    out = tmp_path / "run"
    assert [s for s, _ in list_checkpoints(out)] == [1] and "checkpoint-1 holds step 1" in msg
    assert [r["step"] for r in read_metrics(out)] == [1]
    # nothing lost: the fixed function (here: the check turned off) resumes after step 1
    train(tiny_cfg(tmp_path, **cfg, resume_from_checkpoint="true", max_reward_failure_fraction=None))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["reward_errors/fails_after_first"] == 2 * ROWS


def test_failure_fraction_threshold(tmp_path):
    """nan_inf loses 2 of 4 rows (0.5): not over the default 0.5; over 0.25 it stops at step 1,
    before any update, so there is nothing to checkpoint."""
    out = train(tiny_cfg(tmp_path, "half", reward_funcs=[BAD + "nan_inf"]))
    assert read_metrics(out)[0]["reward_errors/nan_inf"] == 2
    with pytest.raises(RewardFailureError, match="'nan_inf' lost 2 of 4 rows .*nothing to checkpoint"):
        train(tiny_cfg(tmp_path, "strict", reward_funcs=[BAD + "nan_inf"], max_reward_failure_fraction=0.25))
    assert list_checkpoints(tmp_path / "strict") == []


def test_failure_stop_through_the_cli(tmp_path, capsys):
    rc = cli_main(["grpo", "--dataset_num_rows", "8", "--num_generations", "2", "--per_device_train_batch_size", "4",
                   "--max_completion_length", "4", "--max_steps", "1", "--disable_tqdm", "true",
                   "--reward_funcs", f"[{BAD}raises]", "--output_dir", str(tmp_path / "cli")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: step 1: reward function(s) failed on too many rows: 'raises' lost 4 of 4 rows" in err
