"""The verdict of a sandboxed test, from a table: what the supervisor observed (and, for the
output comparison, the test case) -> verdict and detail. No process is started here:
``r1kit.sandbox.verdict.decide`` and ``r1kit.sandbox.cases.judge`` are pure functions."""

from __future__ import annotations

import json
import signal

import pytest

from r1kit.sandbox import Limits, RunResult, Verdict
from r1kit.sandbox.cases import TestCase, judge
from r1kit.sandbox.verdict import STARTUP, WALL, Decision, Observation, decide, exit_report

LIMITS = Limits(timeout=1.5, memory_mb=512, max_output_bytes=1024)  # CPU limit: ceil(1.5) + 1 = 3 s
READY = b"R\n"


def report(exit=0, sig=None, cpu=0.1) -> bytes:
    return json.dumps({"exit": exit, "signal": sig, "cpu": cpu, "maxrss_kb": 9000}).encode() + b"\n"


def ran(exit=0, sig=None, cpu=0.1, **kw) -> Observation:
    """The launcher started the program and reported its end."""
    return Observation(status=READY + report(exit, sig, cpu), **{"returncode": 0, **kw})


STDIN_CASE = TestCase("3\n", "1\n2\n3\n")
FN_CASE = TestCase([2, 3], 5, "add")
MEMORY_TAIL = b"Traceback (most recent call last):\n  ...\nMemoryError\n"

# (id, observation, test case or None for the run-level verdict only, verdict, text in the detail)
TABLE = [
    # ---- ran to completion
    ("exit 0", ran(), None, Verdict.PASS, ""),
    ("exit 0, bwrap's own exit status ignored", ran(returncode=1), None, Verdict.PASS, ""),
    ("exit 1", ran(exit=1, stderr=b"ValueError\n"), None, Verdict.RUNTIME, "exit code 1"),
    ("SIGSEGV", ran(exit=None, sig=signal.SIGSEGV), None, Verdict.RUNTIME,
     f"killed by signal {int(signal.SIGSEGV)}"),
    ("SIGKILL with CPU to spare (not ours)", ran(exit=None, sig=signal.SIGKILL, cpu=0.5), None,
     Verdict.RUNTIME, f"killed by signal {int(signal.SIGKILL)}"),
    # ---- CPU limit (RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one)
    ("SIGXCPU at the CPU limit", ran(exit=None, sig=signal.SIGXCPU, cpu=3.0), None,
     Verdict.TIMEOUT, "CPU limit 3s"),
    ("SIGXCPU 0.1 s short of the limit still counts", ran(exit=None, sig=signal.SIGXCPU, cpu=2.9),
     None, Verdict.TIMEOUT, "CPU limit 3s"),
    ("SIGKILL past the hard CPU limit", ran(exit=None, sig=signal.SIGKILL, cpu=4.0), None,
     Verdict.TIMEOUT, "CPU limit 3s"),
    ("SIGXCPU well under the limit (sent by the program)",
     ran(exit=None, sig=signal.SIGXCPU, cpu=1.0), None, Verdict.RUNTIME,
     f"killed by signal {int(signal.SIGXCPU)}"),
    ("exit 0 after using all its CPU", ran(exit=0, cpu=3.5), None, Verdict.PASS, ""),
    # ---- wall clock
    ("wall-clock deadline, launcher killed (no report)",
     Observation(status=READY, deadline=WALL, returncode=-9), None, Verdict.TIMEOUT,
     "wall-clock limit 1.5s"),
    ("wall-clock deadline, then reported as killed by SIGKILL",
     Observation(status=READY + report(None, signal.SIGKILL, 0.2), deadline=WALL, returncode=-9),
     None, Verdict.TIMEOUT, "wall-clock limit 1.5s"),
    ("wall-clock deadline beats a memory sign in stderr",
     Observation(status=READY, deadline=WALL, stderr=MEMORY_TAIL), None, Verdict.TIMEOUT,
     "wall-clock"),
    # ---- output cap
    ("stdout over the cap", Observation(status=READY, stdout=b"x" * 1025, output_overflow=True),
     None, Verdict.OUTPUT_LIMIT, "more than 1024 bytes"),
    ("stderr over the cap after a clean exit report",
     ran(stderr=b"e" * 1025, output_overflow=True), None, Verdict.OUTPUT_LIMIT, "1024 bytes"),
    ("over the cap beats the deadline", Observation(status=READY, deadline=WALL, output_overflow=True),
     None, Verdict.OUTPUT_LIMIT, "output"),
    ("over the cap before the launcher was ready", Observation(output_overflow=True), None,
     Verdict.OUTPUT_LIMIT, "output"),
    # ---- memory
    ("MemoryError, exit 1", ran(exit=1, stderr=MEMORY_TAIL), None, Verdict.MEMORY,
     "memory limit 512 MB"),
    ("Cannot allocate memory, aborted", ran(exit=None, sig=signal.SIGABRT,
                                            stderr=b"fatal: Cannot allocate memory\n"),
     None, Verdict.MEMORY, "memory limit"),
    ("MemoryError caught by the program, exit 0", ran(exit=0, stderr=MEMORY_TAIL), None, Verdict.PASS, ""),
    ("MemoryError only far back in stderr", ran(exit=1, stderr=MEMORY_TAIL + b"." * 5000), None,
     Verdict.RUNTIME, "exit code 1"),
    # ---- the launcher's status message missing or broken
    ("started, no exit report (launcher killed by the program)",
     Observation(status=READY, returncode=0), None, Verdict.RUNTIME, "supervisor was killed"),
    ("started, exit report cut short", Observation(status=READY + b'{"exit": 0, "sig'), None,
     Verdict.RUNTIME, "supervisor was killed"),
    ("two exit reports: the last one counts", Observation(status=READY + report(0) + report(1)),
     None, Verdict.RUNTIME, "exit code 1"),
    ("a report after a garbled line", Observation(status=READY + b"{garbled\n" + report(0)), None,
     Verdict.PASS, ""),
    ("nothing on the status channel: bwrap failed",
     Observation(status=b"", returncode=1, stderr=b"bwrap: setting up uid map: Permission denied\n"),
     None, Verdict.SANDBOX_ERROR, "sandbox failed to start:  | exit 1 | bwrap: setting up uid map"),
    ("launcher set-up error", Observation(status=b"E launcher setup failed: PermissionError()\n",
                                          returncode=70), None,
     Verdict.SANDBOX_ERROR, "E launcher setup failed: PermissionError() | exit 70"),
    ("start-up deadline", Observation(deadline=STARTUP, returncode=-9), None, Verdict.SANDBOX_ERROR,
     "did not start in time"),
    ("start-up deadline, 'ready' read only after it fired",
     Observation(status=READY, deadline=STARTUP, returncode=-9), None, Verdict.SANDBOX_ERROR,
     "did not start in time"),
    ("a memory sign does not turn a failed start into MEMORY",
     Observation(status=b"", returncode=1, stderr=MEMORY_TAIL), None, Verdict.SANDBOX_ERROR,
     "failed to start"),
    # ---- the test's verdict: the run-level PASS, compared with the expected output
    ("stdout as expected", ran(stdout=b"1\n2\n3\n"), STDIN_CASE, Verdict.PASS, ""),
    ("stdout as expected up to trailing spaces", ran(stdout=b"1  \n2\n3\n\n"), STDIN_CASE, Verdict.PASS, ""),
    ("stdout cut short", ran(stdout=b"1\n"), STDIN_CASE, Verdict.WRONG, "output differs"),
    ("sys.exit(0) before printing", ran(stdout=b""), STDIN_CASE, Verdict.WRONG, "output differs"),
    ("right output, but the deadline fired", Observation(status=READY, stdout=b"1\n2\n3\n", deadline=WALL),
     STDIN_CASE, Verdict.TIMEOUT, "wall-clock"),
    ("right output, then a crash", ran(exit=1, stdout=b"1\n2\n3\n"), STDIN_CASE, Verdict.RUNTIME, "exit code 1"),
    ("return value as expected", ran(stdout=b"5\n"), FN_CASE, Verdict.PASS, ""),
    ("return value differs", ran(stdout=b"-1\n"), FN_CASE, Verdict.WRONG, "value differs"),
    ("no return value", ran(stdout=b""), FN_CASE, Verdict.WRONG, "no return value"),
    ("unreadable return value", ran(stdout=b"five\n"), FN_CASE, Verdict.WRONG, "unreadable"),
    ("a return value over the cap", ran(stdout=b"5" * 1025, output_overflow=True), FN_CASE,
     Verdict.OUTPUT_LIMIT, "output"),
]


def verdict_of(obs: Observation, case: TestCase | None) -> tuple[Verdict, str]:
    d = decide(obs, LIMITS)
    if case is None:
        return d.verdict, d.detail
    o = judge(case, RunResult(d.verdict, stdout=obs.stdout, stderr=obs.stderr, detail=d.detail))
    return o.verdict, o.detail


@pytest.mark.parametrize("obs, case, verdict, detail", [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_verdict_table(obs, case, verdict, detail):
    got, got_detail = verdict_of(obs, case)
    assert got is verdict, got_detail
    assert detail in got_detail
    if verdict is Verdict.PASS:
        assert got_detail == ""
    assert verdict_of(obs, case) == (got, got_detail)  # pure: the same observation, the same answer


def test_table_covers_every_verdict():
    assert {row[3] for row in TABLE} == set(Verdict)


def test_decision_carries_the_launchers_report():
    assert decide(ran(exit=3, cpu=0.25), LIMITS) == Decision(Verdict.RUNTIME, "exit code 3", 3, None, 0.25)
    d = decide(ran(exit=None, sig=signal.SIGXCPU, cpu=3.0), LIMITS)
    assert (d.exit_code, d.signal, d.cpu_time) == (None, signal.SIGXCPU, 3.0)
    # a verdict decided before the report is read (deadline, output cap, failed start) carries none
    for obs in (Observation(status=READY + report(0), deadline=WALL),
                Observation(status=READY + report(0), output_overflow=True)):
        d = decide(obs, LIMITS)
        assert (d.exit_code, d.signal, d.cpu_time) == (None, None, None)


def test_cpu_limit_follows_the_limits():
    obs = ran(exit=None, sig=signal.SIGXCPU, cpu=7.0)
    assert decide(obs, Limits(timeout=1.0, cpu_seconds=7)).detail == "CPU limit 7s"
    assert decide(obs, Limits(timeout=1.0, cpu_seconds=9)).verdict is Verdict.RUNTIME


def test_exit_report_parsing():
    assert exit_report(b"") is None
    assert exit_report(READY) is None
    assert exit_report(report(0)) is None  # the first line is never the report
    assert exit_report(READY + report(2))["exit"] == 2
    assert exit_report(READY + report(2) + b"{bad\n") is None  # the last '{' line counts
    assert Observation(status=READY).started and not Observation(status=b"E x\n").started
