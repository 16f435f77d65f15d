"""Unit tests of r1kit.sandbox and the ``code`` reward (fast; the hostile programs live in
tests/acceptance/test_code_sandbox.py)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from r1kit.rewards.code import answer_region, code_reward, extract_code, make_code_reward
from r1kit.sandbox import (
    Limits, Probe, Sandbox, SandboxUnavailableError, Verdict, find_sandbox_processes,
    isolation_level, probe, require_isolation, sandbox_stats,
)
from r1kit.sandbox import _seccomp
from r1kit.sandbox import isolation
from r1kit.sandbox.cases import (
    TestCase, normalize_output, outputs_match, parse_verification_info, run_tests, values_match,
)

SANDBOXED = isolation_level().startswith("bwrap")


def fence(code: str) -> str:
    return f"```python\n{code}\n```"


@pytest.fixture
def forced_probe():
    """Temporarily replace the cached probe result."""
    saved = isolation._PROBE

    def force(pb: Probe) -> None:
        isolation._PROBE = pb

    yield force
    isolation._PROBE = saved


# ------------------------------------------------------------------ extraction and parsing
def test_extract_last_python_block_of_answer():
    text = ("<think>```python\nprint('think')\n```</think><answer>first\n```python\nprint(1)\n```"
            "\n```text\nnot code\n```\n```py\nprint(2)\n```</answer>")
    assert extract_code(answer_region(text)) == "print(2)\n"
    assert extract_code("```python\nprint(1)\n```\n```python\nunterminated") == "print(1)\n"
    assert extract_code("no code here") is None
    assert extract_code("```\nuntagged\n```") is None
    assert answer_region("a<answer>x") == "x"
    assert answer_region("plain") == "plain"


def test_parse_formats():
    a = parse_verification_info({"language": "python",
                                 "test_cases": [{"input": "1\n", "output": "2\n"}]})
    assert a == [TestCase("1\n", "2\n", None)]
    b = parse_verification_info(json.dumps({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]}))
    assert b == [TestCase([1, 2], 3, "f")]
    c = parse_verification_info({"test_cases": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})})
    assert c == [TestCase("1\n", "1\n", None)]
    d = parse_verification_info({"test_cases": [
        {"type": "function_call", "fn_name": "g", "input": [[1]], "output": 1}]})
    assert d == [TestCase([[1]], 1, "g")]
    for bad in ("not json", {"language": "cpp", "test_cases": [{"input": "", "output": ""}]},
                {"test_cases": []}, {"nothing": 1}, 3,
                {"test_cases": [{"type": "function_call", "input": [], "output": 1}]}):
        with pytest.raises(ValueError):
            parse_verification_info(bad)


def test_output_comparison_is_strict_about_lines():
    assert outputs_match(b"1 2  \n3\n", "1 2\n3")
    assert outputs_match(b"1\r\n2\r\n\n\n", "1\n2\n")
    assert not outputs_match(b"1\n", "1\n2\n")  # first lines only
    assert not outputs_match(b"1\n2\n", "1 2\n")  # same tokens, other lines
    assert not outputs_match(b" 1\n", "1\n")  # leading whitespace counts
    assert not outputs_match(b"1\n\n2\n", "1\n2\n")  # inner blank line counts
    assert not outputs_match(b"\xff\xfe", "")  # non-UTF-8 is just wrong
    assert normalize_output("") == []
    assert outputs_match(b"", "\n")


def test_value_comparison():
    assert values_match([1, 2], (1, 2))
    assert values_match(3, [3])  # APPS wraps return values in a list
    assert values_match(0.1 + 0.2, 0.3)
    assert not values_match(True, 1) and not values_match(1, True)
    assert not values_match("1", 1)
    assert values_match({"a": [1]}, {"a": [1]})


def test_seccomp_filter_is_well_formed():
    if not _seccomp.supported():
        pytest.skip("seccomp filter is x86_64 only")
    prog = _seccomp.build_filter()
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    # every jump lands inside the program
    n = len(prog) // 8
    for i in range(n):
        code, jt, jf, _ = struct.unpack_from("=HBBI", prog, 8 * i)
        if code & 0x07 == 0x05:  # BPF_JMP
            assert i + 1 + max(jt, jf) < n
    code, _, _, k = struct.unpack_from("=HBBI", prog, len(prog) - 8)
    assert code == 0x06 and k == 0x7FFF0000  # default: allow


# ------------------------------------------------------------------ isolation level and refusal
def test_isolation_level_is_probed_and_reported():
    pb = probe()
    assert pb.level in ("bwrap+seccomp", "bwrap", "rlimits", "none")
    assert sandbox_stats()["isolation_level"] == pb.level
    assert probe() is pb  # cached


def test_refuses_without_sandbox_unless_allowed(forced_probe):
    forced_probe(Probe("rlimits", notes=["simulated: no bwrap"]))
    with pytest.raises(SandboxUnavailableError, match="allow_unsandboxed"):
        require_isolation(False)
    assert require_isolation(True) == "rlimits"
    with pytest.raises(SandboxUnavailableError):
        Sandbox().run("print(1)")
    with pytest.raises(SandboxUnavailableError):
        code_reward(["p"], [fence("print(1)")],
                    verification_info=[{"test_cases": [{"input": "", "output": "1"}]}])
    forced_probe(Probe("none", notes=["simulated"]))
    with pytest.raises(SandboxUnavailableError):
        require_isolation(True)


def test_rlimits_level_runs_and_cleans_up(forced_probe):
    """The fallback path (no bwrap): allowed explicitly, still kills a detached grandchild."""
    pb = isolation.probe_uncached(use_bwrap=False)
    if pb.level != "rlimits":
        pytest.skip(f"rlimits fallback unavailable: {pb.notes}")
    forced_probe(pb)
    sb = Sandbox(Limits(timeout=1.0), allow_unsandboxed=True)
    assert sb.run("print(input()[::-1])", "abc\n").stdout == b"cba\n"
    r = sb.run("import os, time\nif os.fork() == 0:\n    os.setsid()\n"
               "    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\nprint('ok')")
    assert r.verdict is Verdict.PASS
    assert find_sandbox_processes() == []
    assert sb.run("while True: pass").verdict is Verdict.TIMEOUT
    assert find_sandbox_processes() == []


# ------------------------------------------------------------------ runs (need some isolation)
needs_run = pytest.mark.skipif(isolation_level() == "none", reason="cannot run code here")


@pytest.fixture
def sb():
    return Sandbox(Limits(timeout=2.0), allow_unsandboxed=True)


@needs_run
def test_basic_verdicts(sb):
    case = [TestCase("3\n", "6\n")]
    assert run_tests("print(int(input()) * 2)", case, sb)[0].verdict is Verdict.PASS
    assert run_tests("print(7)", case, sb)[0].verdict is Verdict.WRONG
    assert run_tests("raise ValueError", case, sb)[0].verdict is Verdict.RUNTIME
    assert run_tests("import sys; sys.exit(0)", case, sb)[0].verdict is Verdict.WRONG
    fn = [TestCase([2, 3], 5, "add")]
    assert run_tests("def add(a, b):\n    print('noise')\n    return a + b", fn, sb)[0].verdict \
        is Verdict.PASS
    assert run_tests("def add(a, b): return a - b", fn, sb)[0].verdict is Verdict.WRONG
    assert run_tests("import sys; sys.exit(0)\ndef add(a, b): return a + b", fn, sb)[0].verdict \
        is Verdict.RUNTIME
    assert run_tests("x = 1", fn, sb)[0].verdict is Verdict.RUNTIME  # no such function


GOLD = [
    ({"language": "python", "test_cases": [
        {"input": "3\n1 2 3\n", "output": "6\n"}, {"input": "1\n-5\n", "output": "-5\n"},
        {"input": "4\n10 20 30 40\n", "output": "100"}]},
     "n = int(input())\nprint(sum(map(int, input().split())))"),
    ({"language": "python", "test_cases": [
        {"input": "abc\n", "output": "cba\n"}, {"input": "racecar\n", "output": "racecar\n"}]},
     "import sys\nfor line in sys.stdin:\n    print(line.rstrip('\\n')[::-1])"),
    ({"fn_name": "fib", "inputs": [[0], [1], [10], [30]], "outputs": [[0], [1], [55], [832040]]},
     "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    ({"test_cases": [{"type": "function_call", "fn_name": "twoSum", "input": [[2, 7, 11, 15], 9],
                      "output": [0, 1]}]},
     "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
     "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
     "                return [seen[target - x], i]\n            seen[x] = i"),
    ({"language": "python", "test_cases": [
        {"input": "5\n", "output": "1\n1 1\n1 2 1\n1 3 3 1\n1 4 6 4 1\n"}]},
     "n = int(input())\nrow = [1]\nfor _ in range(n):\n    print(*row)\n"
     "    row = [1] + [a + b for a, b in zip(row, row[1:])] + [1]"),
]


@needs_run
def test_gold_solutions_score_one_calibration():
    reward = make_code_reward(allow_unsandboxed=True, max_workers=2)
    completions = [f"<think>easy</think>\n<answer>\n{fence(code)}\n</answer>" for _, code in GOLD]
    infos = [info if i % 2 else json.dumps(info) for i, (info, _) in enumerate(GOLD)]
    assert reward(["p"] * len(GOLD), completions, verification_info=infos) == [1.0] * len(GOLD)
    # chat-message completions too
    msgs = [[{"role": "assistant", "content": c}] for c in completions]
    assert reward(["p"] * len(GOLD), msgs, verification_info=infos) == [1.0] * len(GOLD)


@needs_run
def test_fraction_all_or_nothing_and_unscorable_rows():
    info = {"test_cases": [{"input": "1\n", "output": "1\n"}, {"input": "2\n", "output": "2\n"},
                           {"input": "3\n", "output": "3\n"}, {"input": "4\n", "output": "4\n"}]}
    half = fence("x = int(input())\nprint(x if x % 2 else 0)")
    frac = make_code_reward(allow_unsandboxed=True)
    aon = make_code_reward(all_or_nothing=True, allow_unsandboxed=True)
    assert frac(["p"], [half], verification_info=[info]) == [0.5]
    assert aon(["p"], [half], verification_info=[info]) == [0.0]
    assert aon(["p"], [fence("print(input())")], verification_info=[info]) == [1.0]
    out = frac(["p"] * 4, ["no code", half, half, half],
               verification_info=[info, None, "{broken", {"language": "rust", "test_cases": []}])
    assert out == [0.0, None, None, None]
    st = frac.stats()
    assert st["no_code"] == 1 and st["missing_verification_info"] == 1
    assert st["invalid_verification_info"] == 2 and st["unscorable"] == 3
    assert frac(["p"], [half]) == [None]  # no verification_info column at all


def test_infrastructure_errors_are_none_and_counted(forced_probe, tmp_path):
    """A sandbox that cannot start gives None (never 0) and is counted."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: simulated failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    info = {"test_cases": [{"input": "", "output": "1"}]}
    for pb in (Probe("bwrap", bwrap=str(fake)), Probe("bwrap", bwrap=str(tmp_path / "missing"))):
        forced_probe(pb)
        before = sandbox_stats()["sandbox_errors"]
        r = Sandbox().run("print(1)")
        assert r.verdict is Verdict.SANDBOX_ERROR
        reward = make_code_reward()
        assert reward(["p", "p"], [fence("print(1)"), "no code"],
                      verification_info=[info, info]) == [None, 0.0]
        assert sandbox_stats()["sandbox_errors"] == before + 2
        assert reward.stats()["sandbox_error_rows"] == 1


@needs_run
def test_parallel_batch_and_stats(sb):
    info = {"test_cases": [{"input": f"{i}\n", "output": f"{i * i}\n"} for i in range(3)]}
    comps = [fence("n = int(input())\nprint(n * n)")] * 6 + [fence("print(0)")] * 2
    reward = make_code_reward(allow_unsandboxed=True, max_workers=4)
    before = sandbox_stats()
    out = reward(["p"] * 8, comps, verification_info=[info] * 8)
    assert out == [1.0] * 6 + [pytest.approx(1 / 3)] * 2
    after = sandbox_stats()
    assert after["runs"] - before["runs"] == 24
    assert after["verdict_WRONG"] - before["verdict_WRONG"] == 4
    assert find_sandbox_processes() == []


@needs_run
def test_environment_is_clean(sb, monkeypatch):
    monkeypatch.setenv("R1KIT_SECRET_TOKEN", "hunter2")
    r = sb.run("import os, sys\nprint(sorted(os.environ))\nprint(sys.flags.isolated)\n"
               "print(os.getcwd() == os.environ['HOME'])")
    assert r.verdict is Verdict.PASS
    lines = r.stdout.decode().splitlines()
    assert "R1KIT_SECRET_TOKEN" not in lines[0] and lines[1:] == ["1", "True"]


@pytest.mark.skipif(not SANDBOXED, reason="needs bubblewrap")
def test_inside_bwrap_unprivileged_readonly_no_network(sb):
    r = sb.run(
        "import os, socket\n"
        "print(os.getuid() != 0, os.getpid() <= 5)\n"
        "try:\n    open('/usr/r1kit-x', 'w')\nexcept OSError as e:\n    print('ro', e.errno)\n"
        "print(sorted(os.listdir('/proc'))[:0], len([p for p in os.listdir('/proc') if p.isdigit()]) < 6)\n")
    assert r.verdict is Verdict.PASS, r.stderr
    out = r.stdout.decode().splitlines()
    assert out[0] == "True True" and out[1].startswith("ro ") and out[2] == "[] True"
    assert os.geteuid() != 0 or probe().privileged


@pytest.mark.skipif(not SANDBOXED, reason="needs bubblewrap")
def test_bubblewrap_works_when_python_lives_under_tmp(tmp_path):
    """The sandbox mounts a private /tmp; an interpreter (e.g. a CI clone's virtualenv) under the
    host's /tmp must still be visible inside it, or every run fails to start."""
    import subprocess
    import sys
    from pathlib import Path

    venv = tmp_path / "venv"  # pytest's tmp_path lives under /tmp
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    src = str(Path(isolation.__file__).resolve().parents[2])
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "from r1kit.sandbox import probe; print(probe().level)"],
                         env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().startswith("bwrap"), out.stdout + out.stderr
