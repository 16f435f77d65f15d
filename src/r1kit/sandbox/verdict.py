"""The verdict of one sandboxed run, as a pure function of what the supervisor observed.

The supervisor (``r1kit.sandbox.supervise``) only collects an :class:`Observation`; :func:`decide`
turns it into a :class:`Decision`. No clock, no processes, no files: the same observation always
gives the same verdict, so the rules can be tested from a table.

The launcher's status channel carries ``R\\n`` once the program is about to start (resource limits
set, uid dropped), then one JSON line ``{"exit": ..., "signal": ..., "cpu": ..., "maxrss_kb": ...}``
when the program has exited. A missing report means the launcher itself was killed.

Rules, first match wins:

1. output over the cap                       -> OUTPUT_LIMIT
2. the launcher never said ``R``, or the
   start-up deadline fired                    -> SANDBOX_ERROR (ours, not the program's)
3. the wall-clock deadline fired             -> TIMEOUT
4. no exit report                            -> RUNTIME (the program killed its launcher)
5. SIGXCPU/SIGKILL with the CPU limit used up -> TIMEOUT (CPU)
6. non-zero exit or killed by a signal:
   ``MemoryError`` / ``Cannot allocate memory`` at the end of stderr -> MEMORY, else RUNTIME
7. exit 0                                    -> PASS (the caller then compares the output)
"""

from __future__ import annotations

import json
import signal as _signal
from dataclasses import dataclass

from .base import Limits, Verdict

STARTUP = "startup"  # Observation.deadline: the sandbox did not start in time
WALL = "wall"  # Observation.deadline: the program passed its wall-clock limit

_MEMORY_SIGNS = (b"MemoryError", b"Cannot allocate memory")


@dataclass(frozen=True)
class Observation:
    """What the supervisor saw of one run (everything :func:`decide` needs, nothing more)."""

    status: bytes = b""  # everything the launcher wrote on its status channel
    stdout: bytes = b""  # captured, at most max_output_bytes + 1
    stderr: bytes = b""  # captured, at most max_output_bytes + 1
    returncode: int | None = None  # exit status of the process we started (bwrap or the launcher)
    deadline: str | None = None  # the deadline that fired: None, STARTUP or WALL
    output_overflow: bool = False  # stdout or stderr went past max_output_bytes
    wall_time: float = 0.0  # seconds from the launcher's "ready" (from the start if it never was)

    @property
    def started(self) -> bool:
        """The launcher reported that the program was about to start."""
        return self.status.startswith(b"R\n")


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    detail: str = ""
    exit_code: int | None = None  # from the launcher's report, when it was read
    signal: int | None = None
    cpu_time: float | None = None


def exit_report(status: bytes) -> dict | None:
    """The launcher's exit report: the last line of ``status`` after ``R`` that starts with ``{``
    (None when that line is not valid JSON, or when there is none)."""
    report = None
    for line in status.splitlines()[1:]:
        if line.startswith(b"{"):
            try:
                report = json.loads(line)
            except ValueError:
                report = None
    return report


def decide(obs: Observation, limits: Limits) -> Decision:
    """The verdict of one run from what was observed (see the module docstring for the rules)."""
    if obs.output_overflow:
        return Decision(Verdict.OUTPUT_LIMIT, f"more than {limits.max_output_bytes} bytes of output")
    if obs.deadline == STARTUP:
        return Decision(Verdict.SANDBOX_ERROR, "sandbox did not start in time")
    if not obs.started:
        return Decision(Verdict.SANDBOX_ERROR,
                        "sandbox failed to start: " + obs.status.decode("utf-8", "replace").strip()
                        + " | exit " + str(obs.returncode) + " | "
                        + obs.stderr[-400:].decode("utf-8", "replace"))
    if obs.deadline == WALL:
        return Decision(Verdict.TIMEOUT, f"wall-clock limit {limits.timeout}s")
    report = exit_report(obs.status)
    if report is None:
        return Decision(Verdict.RUNTIME, "the program's supervisor was killed (by the program?)")
    code, sig, cpu = report["exit"], report["signal"], report["cpu"]
    cpu_limit = limits.rlimits()["RLIMIT_CPU"][0]
    if sig in (_signal.SIGXCPU, _signal.SIGKILL) and (cpu or 0) >= cpu_limit - 0.1:
        verdict, detail = Verdict.TIMEOUT, f"CPU limit {cpu_limit}s"
    elif code != 0:
        if any(sign in obs.stderr[-4096:] for sign in _MEMORY_SIGNS):
            verdict, detail = Verdict.MEMORY, f"memory limit {limits.memory_mb} MB"
        else:
            verdict = Verdict.RUNTIME
            detail = f"killed by signal {sig}" if sig is not None else f"exit code {code}"
    else:
        verdict, detail = Verdict.PASS, ""  # ran to completion; the caller compares the output
    return Decision(verdict, detail, exit_code=code, signal=sig, cpu_time=cpu)
