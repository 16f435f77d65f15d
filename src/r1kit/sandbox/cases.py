"""Test cases (open-r1 / TACO / APPS formats), output comparison, and running a program on them.

Accepted ``verification_info`` (a dict or its JSON string):

* ``{"language": "python", "test_cases": [{"input": "...", "output": "..."}, ...]}`` - stdin/stdout
  tests (open-r1). An item may carry ``"type": "function_call"`` with ``"fn_name"``, in which case
  ``input`` is the list of arguments and ``output`` the return value.
* ``{"fn_name": "f", "inputs": [[args...], ...], "outputs": [value, ...]}`` - function-call tests
  (TACO/APPS ``input_output``), at the top level or as the value of ``"test_cases"``;
  without ``fn_name`` the same parallel lists are stdin/stdout tests.
* ``language`` other than python (``python3``/``py`` accepted) is rejected.

Comparison of stdout (documented contract, see ``normalize_output``): the program's bytes are
decoded as UTF-8 (invalid bytes become U+FFFD, so non-UTF-8 output is simply wrong), ``\\r\\n`` is
read as ``\\n``, the text is split on ``\\n``, trailing whitespace is stripped from every line, and
trailing empty lines are dropped; both sides must then have the same lines, in the same number.
Leading whitespace, blank lines in the middle and the case of letters all count.

Comparison of return values (function-call tests): JSON-normalised values must be equal; a float
matches within ``rel_tol=abs_tol=1e-9``; ``bool`` only matches ``bool``. As in APPS, an expected
value of the form ``[x]`` also accepts ``x``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .base import RunResult, Verdict
from .runner import Sandbox


@dataclass
class TestCase:
    __test__ = False  # not a pytest class

    input: Any  # stdin text, or the list of arguments for a function call
    expected: Any  # expected stdout text, or the expected return value
    fn_name: str | None = None


@dataclass
class TestOutcome:
    __test__ = False

    verdict: Verdict
    detail: str = ""
    wall_time: float = 0.0


def _text(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)):
        return "\n".join(_text(v) for v in x)
    if x is None:
        return ""
    return str(x)


def parse_verification_info(info: Any) -> list[TestCase]:
    """Normalise a ``verification_info`` value into test cases; ValueError when unusable."""
    if isinstance(info, (bytes, bytearray)):
        info = info.decode("utf-8")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError as e:
            raise ValueError(f"verification_info is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise ValueError(f"verification_info must be a dict, got {type(info).__name__}")
    lang = info.get("language", "python")
    if str(lang).lower() not in ("python", "python3", "py"):
        raise ValueError(f"unsupported language {lang!r}")
    tc = info.get("test_cases", info if ("inputs" in info or "outputs" in info) else None)
    if isinstance(tc, str):
        try:
            tc = json.loads(tc)
        except ValueError as e:
            raise ValueError(f"test_cases is not valid JSON: {e}") from None
    cases: list[TestCase] = []
    if isinstance(tc, dict):
        ins, outs = tc.get("inputs"), tc.get("outputs")
        fn = tc.get("fn_name") or info.get("fn_name")
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise ValueError("test_cases needs 'inputs' and 'outputs' lists of equal length")
        for i, o in zip(ins, outs):
            cases.append(_make_case(i, o, fn))
    elif isinstance(tc, list):
        for k, item in enumerate(tc):
            if not isinstance(item, dict) or "input" not in item or "output" not in item:
                raise ValueError(f"test case {k} needs 'input' and 'output'")
            fn = item.get("fn_name") or info.get("fn_name")
            if item.get("type", "function_call" if fn else "stdin_stdout") == "stdin_stdout":
                fn = None
            elif not fn:
                raise ValueError(f"test case {k} is a function call without 'fn_name'")
            cases.append(_make_case(item["input"], item["output"], fn))
    else:
        raise ValueError("verification_info has no 'test_cases'")
    if not cases:
        raise ValueError("verification_info has no test cases")
    return cases


def _make_case(inp: Any, out: Any, fn: str | None) -> TestCase:
    if fn:
        if isinstance(inp, str):
            try:
                inp = json.loads(inp)
            except ValueError:
                inp = [inp]
        args = inp if isinstance(inp, list) else [inp]
        return TestCase(args, out, str(fn))
    return TestCase(_text(inp), _text(out), None)


def normalize_output(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def outputs_match(actual: bytes | str, expected: str) -> bool:
    if isinstance(actual, (bytes, bytearray)):
        actual = bytes(actual).decode("utf-8", "replace")
    return normalize_output(actual) == normalize_output(expected)


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def values_match(actual: Any, expected: Any) -> bool:
    expected = json.loads(json.dumps(expected))  # tuples -> lists, like the harness's side
    if _values_equal(actual, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and _values_equal(actual, expected[0])


def judge(case: TestCase, res: RunResult) -> TestOutcome:
    """Final verdict of one test from the raw run result (decided here, in the parent)."""
    if res.verdict is not Verdict.PASS:
        return TestOutcome(res.verdict, res.detail, res.wall_time)
    if case.fn_name is None:
        ok = outputs_match(res.stdout, case.expected)
        return TestOutcome(Verdict.PASS if ok else Verdict.WRONG, "" if ok else "output differs",
                           res.wall_time)
    lines = res.stdout.splitlines()
    if len(lines) != 1:
        return TestOutcome(Verdict.WRONG, "no return value", res.wall_time)
    try:
        value = json.loads(lines[0])
    except ValueError:
        return TestOutcome(Verdict.WRONG, "unreadable return value", res.wall_time)
    ok = values_match(value, case.expected)
    return TestOutcome(Verdict.PASS if ok else Verdict.WRONG, "" if ok else "value differs",
                       res.wall_time)


def run_tests(code: str, cases: list[TestCase], sandbox: Sandbox, *,
              stop_on_first_failure: bool = False,
              stop_after_timeouts: int | None = None) -> list[TestOutcome]:
    """Run ``code`` on each case, one fresh sandboxed process per case, in order.

    Stops early after a SANDBOX_ERROR (the caller cannot score this program), after the first
    failure when ``stop_on_first_failure``, or after ``stop_after_timeouts`` TIMEOUTs; tests not
    run are simply absent from the returned list."""
    out: list[TestOutcome] = []
    timeouts = 0
    with sandbox.program_dir(code) as d:
        for case in cases:
            if case.fn_name is None:
                stdin = case.input.encode("utf-8", "surrogatepass")
            else:
                stdin = json.dumps(case.input).encode()
            res = sandbox.run(code, stdin, fn_name=case.fn_name, run_dir=d, count=False)
            o = judge(case, res)
            sandbox.record(o.verdict, res.leftovers)
            out.append(o)
            if o.verdict is Verdict.SANDBOX_ERROR:
                break
            if o.verdict is Verdict.TIMEOUT:
                timeouts += 1
                if stop_after_timeouts is not None and timeouts >= stop_after_timeouts:
                    break
            if stop_on_first_failure and o.verdict is not Verdict.PASS:
                break
    return out
