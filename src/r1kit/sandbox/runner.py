"""The public runner: :class:`Sandbox` (limits + the unsandboxed opt-out) and the counters."""

from __future__ import annotations

import shutil

from .base import STATS, Limits, Probe, RunResult, Verdict
from .isolation import isolation_level, probe, require_isolation
from .run import prepare_dir, run


def sandbox_stats(reset: bool = False) -> dict:
    """Counters over every run in this process: ``runs``, ``sandbox_errors`` (infrastructure
    failures, scored None), ``verdict_<NAME>`` and ``leftover_killed``, plus
    ``isolation_level``."""
    snap = STATS.snapshot()
    snap["isolation_level"] = isolation_level()
    if reset:
        STATS.reset()
    return snap


class Sandbox:
    """Runs untrusted Python programs. ``run`` gives the raw result of one execution (verdict
    PASS there only means "exited 0"; comparing outputs is ``r1kit.sandbox.cases``' job)."""

    def __init__(self, limits: Limits | None = None, allow_unsandboxed: bool = False) -> None:
        self.limits = limits or Limits()
        self.allow_unsandboxed = allow_unsandboxed

    @property
    def isolation_level(self) -> str:
        return isolation_level()

    def check(self) -> str:
        return require_isolation(self.allow_unsandboxed)

    def run(self, code: str, stdin: bytes | str = b"", *, fn_name: str | None = None,
            run_dir: str | None = None, count: bool = True) -> RunResult:
        """One execution. ``count=False``: the caller records the final verdict itself
        (``record``), e.g. after comparing the output."""
        self.check()
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        return run(probe(), code, stdin, self.limits, fn_name, run_dir=run_dir, count=count)

    @staticmethod
    def record(verdict: Verdict, leftovers: int = 0) -> None:
        STATS.add(verdict, leftovers)

    def program_dir(self, code: str) -> "_ProgramDir":
        """A prepared folder to run several tests of one program without re-copying files."""
        self.check()
        return _ProgramDir(code, probe())


class _ProgramDir:
    def __init__(self, code: str, pb: Probe) -> None:
        self.path = prepare_dir(code, pb)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
