"""The data every layer of the sandbox shares: verdicts, per-test limits, the result of one run, what
the probe found, and the process-wide verdict counters. No I/O, no processes.
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass, field


class Verdict(str, enum.Enum):
    PASS = "PASS"
    WRONG = "WRONG"
    RUNTIME = "RUNTIME"
    TIMEOUT = "TIMEOUT"
    MEMORY = "MEMORY"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    SANDBOX_ERROR = "SANDBOX_ERROR"

    def __str__(self) -> str:  # noqa: D105
        return self.value


class SandboxUnavailableError(RuntimeError):
    """No isolation is available and running unsandboxed was not allowed."""


@dataclass(frozen=True)
class Limits:
    """Per-test limits. ``timeout`` is wall-clock seconds for the program itself (Python start
    included, sandbox start-up excluded: that has its own ``startup_timeout``)."""

    timeout: float = 2.0
    cpu_seconds: int | None = None  # default: ceil(timeout) + 1
    memory_mb: int = 1024  # RLIMIT_AS
    file_size_mb: int = 16  # RLIMIT_FSIZE
    nproc: int = 32  # RLIMIT_NPROC (see r1kit.sandbox.run)
    nofile: int = 64  # RLIMIT_NOFILE
    max_output_bytes: int = 4 << 20  # stdout cap; stderr has the same cap
    tmpfs_mb: int = 64  # size of /sandbox and of /tmp inside bubblewrap
    startup_timeout: float = 15.0  # sandbox + launcher start; exceeded = SANDBOX_ERROR

    def rlimits(self) -> dict[str, tuple[int, int]]:
        cpu = self.cpu_seconds if self.cpu_seconds is not None else math.ceil(self.timeout) + 1
        mem = self.memory_mb << 20
        fsz = self.file_size_mb << 20
        return {
            "RLIMIT_AS": (mem, mem),
            "RLIMIT_CPU": (cpu, cpu + 1),
            "RLIMIT_FSIZE": (fsz, fsz),
            "RLIMIT_NOFILE": (self.nofile, self.nofile),
            "RLIMIT_CORE": (0, 0),
            "RLIMIT_NPROC": (self.nproc, self.nproc),
        }


@dataclass
class RunResult:
    verdict: Verdict
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int | None = None
    signal: int | None = None
    wall_time: float = 0.0
    cpu_time: float | None = None
    detail: str = ""
    leftovers: int = 0  # processes of this run that the final sweep had to kill


@dataclass
class Probe:
    level: str  # "bwrap+seccomp" | "bwrap" | "rlimits" | "none"
    bwrap: str | None = None
    privileged: bool = False  # bwrap run by root without a user namespace, uid dropped inside
    seccomp: bool = False
    drop_uid: bool = False  # the launcher changes to a private uid
    notes: list[str] = field(default_factory=list)


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.counts: dict[str, int] = {v.value: 0 for v in Verdict}
            self.runs = 0
            self.leftover_killed = 0

    def add(self, verdict: Verdict, leftovers: int = 0) -> None:
        with self._lock:
            self.runs += 1
            self.counts[verdict.value] += 1
            self.leftover_killed += leftovers

    def snapshot(self) -> dict:
        with self._lock:
            out = {"runs": self.runs, "leftover_killed": self.leftover_killed}
            out.update({"verdict_" + k: v for k, v in self.counts.items()})
            out["sandbox_errors"] = self.counts[Verdict.SANDBOX_ERROR.value]
            return out


STATS = _Stats()  # every run in this process
