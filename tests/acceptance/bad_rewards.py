"""Reward functions for the acceptance suite, good and hostile, in a real module.

They are referenced by import path (``acceptance.bad_rewards:raises``) so that the killable
``spawn`` worker of ``reward_timeout_s`` can import them too: it inherits the parent's
``sys.path``, which holds ``tests/`` (see conftest.py). Keep this module light (no torch): the
worker imports it before every call's deadline starts.
"""

from __future__ import annotations

import math
import time

CALLS = {"fails_after_first": 0}


def _text(c) -> str:
    return c if isinstance(c, str) else c[-1]["content"]


def digits(prompts, completions, **columns):
    """A reward random samples differ on (so groups have non-zero advantages): digits written."""
    return [sum(ch.isdigit() for ch in _text(c)) / 10 for c in completions]


def constant(prompts, completions, **columns):
    return [1.0] * len(completions)


def raises(prompts, completions, **columns):
    raise RuntimeError("reward backend is down")


def all_none(prompts, completions, **columns):
    return [None] * len(completions)


def nan_inf(prompts, completions, **columns):
    """NaN on row 0, inf on row 1, a usable 0.5 elsewhere: exactly 2 rows lost per call."""
    return [math.nan, math.inf] + [0.5] * (len(completions) - 2)


def wrong_length(prompts, completions, **columns):
    return [1.0] * (len(completions) + 1)


def sleep_forever(prompts, completions, **columns):
    while True:  # also ignores the usual ways out; only a kill ends it
        try:
            time.sleep(3600)
        except BaseException:
            pass


def fails_after_first(prompts, completions, **columns):
    """Works on its first call (step 1), raises on every later one."""
    CALLS["fails_after_first"] += 1
    if CALLS["fails_after_first"] > 1:
        raise ConnectionError("judge server went away")
    return digits(prompts, completions)


# ---- per-row deadlines (tests/test_reward_deadline.py) ----
# A `calls_to` column (one path per row, the same path) makes these append the size of every call
# they get to that file, so a test sees whether the batch was scored whole or one row at a time.

def _record(columns) -> None:
    paths = columns.get("calls_to")
    if paths:
        with open(paths[0], "a") as fh:
            fh.write(f"{len(paths)}\n")


def hang_on_marker(prompts, completions, **columns):
    """Length of each completion / 10, but never returns for a batch holding a "HANG" completion
    (and raises for one holding a "BOOM" completion, when it does return)."""
    _record(columns)
    if any("HANG" in _text(c) for c in completions):
        sleep_forever(prompts, completions)
    if any("BOOM" in _text(c) for c in completions):
        raise ValueError("cannot score BOOM")
    return [len(_text(c)) / 10 for c in completions]


def hang_always(prompts, completions, **columns):
    _record(columns)
    sleep_forever(prompts, completions)


def hang_with_child(prompts, completions, **columns):
    """Starts a long `sleep` process, writes its pid to the `calls_to` file, then never returns."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    with open(columns["calls_to"][0], "a") as fh:
        fh.write(f"pid {child.pid}\n")
    sleep_forever(prompts, completions)


def crash_on_marker(prompts, completions, **columns):
    """Kills its own process (as a segfault would) for a batch holding a "CRASH" completion."""
    import os

    if any("CRASH" in _text(c) for c in completions):
        os._exit(3)
    return [1.0] * len(completions)
