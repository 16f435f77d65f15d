"""The ``code`` reward: run the model's Python against the row's test cases, in a sandbox.

``code_reward(prompts, completions, verification_info=None, **columns) -> list[float | None]``

* The program is the last fenced block tagged ``python`` / ``py`` / ``python3`` of the answer:
  the content of the last ``<answer>...</answer>`` when the completion has one, otherwise the whole
  completion. An unterminated block does not count. No block: 0.0.
* ``verification_info`` (one per row, a dict or a JSON string): see ``r1kit.sandbox.cases``.
  Missing, unparsable, or another language: ``None`` (cannot score), counted.
* Reward = fraction of tests passed, or 1.0/0.0 with ``make_code_reward(all_or_nothing=True)``.
  ``binary_code`` (open-r1's name): 1.0 when the fraction passed is over 0.99, else 0.0
  (``make_code_reward(threshold=0.99)``); an unscorable row stays ``None``.
* Any infrastructure failure (the sandbox did not start, ...) makes the row ``None``, never 0, and
  is counted: ``code_reward.stats()`` returns the counters (reward-level ones and the sandbox's
  verdict counts and ``isolation_level``) for the trainer's metrics.
* The sandbox is bubblewrap (+ seccomp) when it works here. Without it the reward refuses to run
  (``SandboxUnavailableError``) unless ``make_code_reward(allow_unsandboxed=True)``, or, for a
  reward built without that argument (the registered default), inside the run's
  ``with r1kit.sandbox.sandbox_policy(allow_unsandboxed=True):`` (the GRPO trainer enters it from
  its ``allow_unsandboxed`` option; it ends with the run).
* Every reward built here declares ``requires_sandbox`` (``r1kit.sandbox.needs_sandbox``), so the
  trainer checks for a working sandbox before training.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from r1kit.sandbox import (
    Limits, Sandbox, Verdict, require_isolation, requires_sandbox, sandbox_stats, unsandboxed_allowed,
)
from r1kit.rewards.text import completion_text
from r1kit.sandbox.cases import parse_verification_info, run_tests

_CODE_TAGS = ("python", "python3", "py")


def answer_region(text: str) -> str:
    """The content of the last ``<answer>`` (to ``</answer>`` or the end), else ``text``."""
    i = text.rfind("<answer>")
    if i < 0:
        return text
    j = text.find("</answer>", i)
    return text[i + len("<answer>"): j if j >= 0 else len(text)]


def extract_code(text: str) -> str | None:
    """The last complete fenced block tagged python/py/python3 (linear scan, no regex)."""
    last = None
    i = 0
    while True:
        j = text.find("```", i)
        if j < 0:
            break
        nl = text.find("\n", j + 3)
        if nl < 0:
            break
        tag = text[j + 3: nl].strip().lower()
        end = text.find("```", nl + 1)
        if end < 0:
            break
        if tag in _CODE_TAGS:
            last = text[nl + 1: end]
        i = end + 3
    return last


class _RewardStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._c[key] = self._c.get(key, 0) + n

    def snapshot(self, reset: bool = False) -> dict:
        with self._lock:
            out = dict(self._c)
            if reset:
                self._c.clear()
        return out


def make_code_reward(all_or_nothing: bool = False, *, timeout: float = 2.0,
                     memory_mb: int = 1024, limits: Limits | None = None,
                     max_workers: int | None = None, allow_unsandboxed: bool | None = None,
                     stop_after_timeouts: int | None = None, threshold: float | None = None,
                     name: str = "code_reward"):
    """Build a code reward. ``limits`` overrides ``timeout``/``memory_mb``; ``max_workers``
    completions run in parallel (default ``min(4, cpu_count)``), the tests of one completion run
    one after the other, each in a fresh process. ``stop_after_timeouts=k`` stops a completion's
    tests after k TIMEOUTs (the rest count as failed) to bound the time spent on hung programs.
    ``allow_unsandboxed``: None (default) follows the caller's ``sandbox_policy`` at each call.
    ``threshold``: 1.0 when the fraction passed is over it, else 0.0 (open-r1's ``binary_code``: 0.99).
    ``name``: the function's ``__name__`` / ``__qualname__`` (a module-level reward built here must be
    bound to that name for the reward worker to pickle it by reference)."""
    lim = limits or Limits(timeout=timeout, memory_mb=memory_mb)
    workers = max_workers or max(1, min(4, os.cpu_count() or 1))
    stats = _RewardStats()

    def _score_one(code: str, cases, allowed: bool) -> float | None:
        sb = Sandbox(lim, allow_unsandboxed=allowed)
        outcomes = run_tests(code, cases, sb, stop_on_first_failure=all_or_nothing,
                             stop_after_timeouts=stop_after_timeouts)
        stats.add("tests_run", len(outcomes))
        if any(o.verdict is Verdict.SANDBOX_ERROR for o in outcomes):
            stats.add("sandbox_error_rows")
            return None
        passed = sum(o.verdict is Verdict.PASS for o in outcomes)
        stats.add("tests_passed", passed)
        if all_or_nothing:
            return 1.0 if passed == len(cases) else 0.0
        if threshold is not None:
            return 1.0 if passed / len(cases) > threshold else 0.0
        return passed / len(cases)

    @requires_sandbox
    def code_reward(prompts, completions, verification_info=None, **kwargs) -> list[float | None]:
        n = len(completions)
        # read here, in the caller's context: the pool threads below do not inherit it
        allowed = unsandboxed_allowed() if allow_unsandboxed is None else allow_unsandboxed
        require_isolation(allowed)  # raises SandboxUnavailableError with the reason
        infos = list(verification_info) if verification_info is not None else [None] * n
        if len(infos) != n:
            raise ValueError(f"verification_info has {len(infos)} rows for {n} completions")
        out: list[float | None] = [None] * n
        jobs = {}
        for i, (comp, info) in enumerate(zip(completions, infos)):
            stats.add("rows")
            if info is None:
                stats.add("missing_verification_info")
                continue
            try:
                cases = parse_verification_info(info)
            except ValueError:
                stats.add("invalid_verification_info")
                continue
            code = extract_code(answer_region(completion_text(comp)))
            if code is None or not code.strip():
                stats.add("no_code")
                out[i] = 0.0
                continue
            jobs[i] = (code, cases)
        if jobs:
            with ThreadPoolExecutor(max_workers=min(workers, len(jobs)),
                                    thread_name_prefix="r1kit-code") as ex:
                futs = {i: ex.submit(_score_one, c, cs, allowed) for i, (c, cs) in jobs.items()}
                for i, f in futs.items():
                    try:
                        out[i] = f.result()
                    except Exception:  # noqa: BLE001 - an infrastructure problem, never a 0
                        stats.add("internal_errors")
                        out[i] = None
        for v in out:
            stats.add("unscorable" if v is None else "scored")
        return out

    def get_stats(reset: bool = False) -> dict:
        """Reward counters (rows, scored, unscorable, no_code, missing/invalid_verification_info,
        sandbox_error_rows, internal_errors, tests_run, tests_passed) plus ``sandbox_stats()``
        (process-wide verdict counts, ``sandbox_errors``, ``isolation_level``)."""
        snap = stats.snapshot(reset)
        for k, v in sandbox_stats().items():
            snap["sandbox_" + k if not k.startswith("sandbox") else k] = v
        return snap

    code_reward.stats = get_stats
    code_reward.limits = lim
    code_reward.__name__ = name
    code_reward.__qualname__ = name
    return code_reward


code_reward = make_code_reward()
binary_code_reward = make_code_reward(threshold=0.99, name="binary_code_reward")

try:  # the registry may not exist (yet): this module also works on its own
    from r1kit.rewards import register_reward
except ImportError:  # pragma: no cover
    register_reward = None
if register_reward is not None:
    register_reward("code")(code_reward)
    register_reward("binary_code")(binary_code_reward)
