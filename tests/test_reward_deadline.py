"""Per-row reward deadlines (`score_completions(timeout_s=...)`): the batch is tried whole, and only
if it passes its deadline are the rows scored one at a time, so a row that hangs is lost alone;
a function that hangs on every row costs a bounded time; no process is left behind."""

from __future__ import annotations

import logging
import math
import os
import select
import sys
from pathlib import Path

import psutil
import pytest

# the spawn worker imports `acceptance.bad_rewards` too: it copies this sys.path
TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from r1kit.rewards import _worker, score_completions  # noqa: E402
from r1kit.rewards.runner import MAX_ROW_TIMEOUTS  # noqa: E402

BAD = "acceptance.bad_rewards:"
GOOD = "<think>a</think>\n<answer>1</answer>"


def calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def children() -> list[psutil.Process]:
    """This process's descendants, less multiprocessing's resource tracker (one per interpreter,
    started with the first spawn worker, exits with us)."""
    return [p for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())]


def assert_no_stray_processes() -> None:
    """Our only child, if any, is the idle worker kept for the next call (alive, not a zombie)."""
    kept = _worker.worker_pid()
    children_ = children()
    assert [p.pid for p in children_] in ([], [kept]), [(p.pid, p.cmdline()) for p in children_]
    for p in children_:
        assert p.status() != psutil.STATUS_ZOMBIE


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.INFO, logger="r1kit.rewards")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_fast_path_scores_the_whole_batch_in_one_call(tmp_path, warnings):
    log = tmp_path / "calls"
    comps = ["ab", "abcd", GOOD, "a"]
    b = score_completions([BAD + "hang_on_marker", "format"], None, ["q"] * 4, comps,
                          {"calls_to": [str(log)] * 4}, timeout_s=0.5)
    assert calls(log) == ["4"]  # one call, the whole batch: no row-by-row work when it is in time
    assert b.per_func[:, 0].tolist() == pytest.approx([0.2, 0.4, len(GOOD) / 10, 0.1])
    assert b.per_func[:, 1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert b.errors == {"hang_on_marker": 0, "format": 0} and warnings() == []
    # the worker is kept and reused by the next call (no start-up per call)
    pid = _worker.worker_pid()
    assert pid is not None
    score_completions([BAD + "hang_on_marker"], None, None, ["x"], {"calls_to": [str(log)]}, timeout_s=0.5)
    assert _worker.worker_pid() == pid and calls(log) == ["4", "1"]
    assert_no_stray_processes()


def test_only_the_hanging_rows_are_lost(tmp_path, warnings, caplog):
    log = tmp_path / "calls"
    comps = ["ab", "HANG", "abcd", "x HANG", "abc"]
    b = score_completions([BAD + "hang_on_marker", "format", BAD + "digits"], [1.0, 1.0, 1.0], ["q"] * 5, comps,
                          {"calls_to": [str(log)] * 5}, timeout_s=0.5)
    hang = b.per_func[:, 0].tolist()
    assert hang[0] == pytest.approx(0.2) and hang[2] == pytest.approx(0.4) and hang[4] == pytest.approx(0.3)
    assert math.isnan(hang[1]) and math.isnan(hang[3])
    assert b.errors == {"hang_on_marker": 2, "format": 0, "digits": 0}
    assert b.per_func[:, 1:].isnan().sum() == 0 and not b.total.isnan().any()  # other functions unaffected
    # the whole batch (2.5 s = 5 rows x 0.5 s), then each row alone
    assert calls(log) == ["5", "1", "1", "1", "1", "1"]
    w = warnings()
    assert w == ["reward 'hang_on_marker': row 1: passed its 0.5 s deadline; worker killed",
                 "reward 'hang_on_marker': row 3: passed its 0.5 s deadline; worker killed"]
    assert any("batch deadline of 2.5 s" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert_no_stray_processes()  # every worker killed at a deadline is gone; only the one kept remains


def test_rows_scored_alone_keep_their_other_failures_per_row(warnings):
    """Once isolated, a row that raises loses itself only (one summary line); in the whole batch
    (no hang) the same exception loses the whole batch, as in-process."""
    b = score_completions([BAD + "hang_on_marker"], None, None, ["ab", "HANG", "BOOM", "a"], {}, timeout_s=0.3)
    v = b.per_func[:, 0].tolist()
    assert v[0] == pytest.approx(0.2) and v[3] == pytest.approx(0.1) and math.isnan(v[1]) and math.isnan(v[2])
    assert b.errors == {"hang_on_marker": 2}
    assert warnings() == ["reward 'hang_on_marker': row 1: passed its 0.3 s deadline; worker killed",
                          "reward 'hang_on_marker': row 2: raised ValueError: cannot score BOOM "
                          "(1 of 4 rows unusable, scored one at a time)"]
    b = score_completions([BAD + "hang_on_marker"], None, None, ["ab", "BOOM"], {}, timeout_s=0.3)
    assert b.errors == {"hang_on_marker": 2} and b.per_func.isnan().all()


def test_a_function_that_hangs_on_every_row_costs_a_bounded_time(tmp_path, warnings, caplog):
    """The cost is counted in deadlines waited, not measured: one batch deadline (12 rows x 0.25 s)
    and max_row_timeouts=2 row deadlines; the other 10 rows are never started."""
    log = tmp_path / "calls"
    n = 12
    b = score_completions([BAD + "hang_always"], None, None, ["a"] * n, {"calls_to": [str(log)] * n},
                          timeout_s=0.25, max_row_timeouts=2)
    assert b.errors == {"hang_always": n} and b.per_func.isnan().all() and b.total.isnan().all()
    assert calls(log) == [str(n), "1", "1"]  # the batch, then 2 rows; the other 10 are not tried
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info == ["reward 'hang_always': passed its batch deadline of 3 s (12 rows); worker killed, "
                    "scoring the rows one at a time"]
    w = warnings()
    assert w[:2] == ["reward 'hang_always': row 0: passed its 0.25 s deadline; worker killed",
                     "reward 'hang_always': row 1: passed its 0.25 s deadline; worker killed"]
    assert w[2:] == ["reward 'hang_always': rows 2..11 not scored (10 rows): gave up after 2 rows passed "
                     "their 0.25 s deadline or killed the worker"]
    assert _worker.worker_pid() is None  # the last worker hung: killed, none kept
    assert_no_stray_processes()
    assert MAX_ROW_TIMEOUTS >= 1


def test_a_killed_worker_takes_the_processes_it_started(tmp_path, warnings):
    log = tmp_path / "calls"
    b = score_completions([BAD + "hang_with_child"], None, None, ["a"], {"calls_to": [str(log)]},
                          timeout_s=0.5, max_row_timeouts=0)
    assert b.errors == {"hang_with_child": 1}
    assert warnings() == ["reward 'hang_with_child': rows 0..0 not scored (1 rows): gave up after 0 rows "
                          "passed their 0.5 s deadline or killed the worker"]
    pid = int(calls(log)[1])  # ["pid", "<n>"]
    # `sleep 600` ends on its own only after 10 minutes: if it has exited, the kill of the worker's
    # process group reached it. Its exit is an event (a pidfd turns readable), waited for, not polled;
    # the 60 s is a hang guard only (a SIGKILLed process exits at once), not a speed check.
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        pass  # already exited and reaped
    else:
        try:
            readable, _, _ = select.select([fd], [], [], 60)
        finally:
            os.close(fd)
        assert readable, f"the reward's own child {pid} outlived its killed worker"
    assert_no_stray_processes()


def test_a_row_that_kills_the_worker_is_lost_alone(warnings):
    b = score_completions([BAD + "crash_on_marker"], None, None, ["a", "CRASH", "b"], {}, timeout_s=2.0)
    assert b.per_func[:, 0].tolist()[0::2] == [1.0, 1.0] and math.isnan(b.per_func[1, 0])
    assert b.errors == {"crash_on_marker": 1}
    assert warnings() == ["reward 'crash_on_marker': row 1: worker process died (exit code 3)"]
    assert_no_stray_processes()


def test_rows_are_sliced_per_row_and_batch_settings_kept():
    args = _worker.row_args(["p0", "p1"], ["c0", "c1"], {"sol": ("1", "2"), "k": 3, "s": "xy", "d": {"a": 1}}, 2, 1)
    assert args == (["p1"], ["c1"], {"sol": ("2",), "k": 3, "s": "xy", "d": {"a": 1}})
    assert _worker.row_args(None, ["c0"], {}, 1, 0) == (None, ["c0"], {})


def test_in_process_default_is_unchanged(tmp_path):
    """timeout_s=None: called here, once, on the whole batch; no worker started."""
    _worker.shutdown()
    log = tmp_path / "calls"
    b = score_completions([BAD + "hang_on_marker"], None, None, ["ab", "a"], {"calls_to": [str(log)] * 2})
    assert calls(log) == ["2"] and b.per_func[:, 0].tolist() == pytest.approx([0.2, 0.1])
    assert children() == []


def test_shutdown_leaves_no_child_process():
    score_completions(["format"], None, None, [GOOD], {}, timeout_s=2.0)
    assert _worker.worker_pid() is not None
    _worker.shutdown()
    assert children() == []
