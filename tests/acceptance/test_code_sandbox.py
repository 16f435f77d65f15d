"""Acceptance: hostile model-written programs (issue 6, part 5, "code").

Every test shows the verdict (or the reward) AND that nothing escaped or remained: no process of
any sandbox run is left (``find_sandbox_processes()`` scans /proc for the private uids and the
run marker), host marker files were not created, no connection reached a loopback listener.

Tests marked ``needs_bwrap`` are about escaping: without a working bubblewrap they first assert
that the reward refuses to run code (SandboxUnavailableError) and then skip, saying why.
Timeouts are short (1-1.5 s) so the whole file stays well under a minute. No test measures time
itself: a deadline shows as the verdict, the run's own ``wall_time`` and nothing left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from r1kit.rewards.code import make_code_reward
from r1kit.sandbox import (
    Limits, Sandbox, SandboxUnavailableError, Verdict, find_sandbox_processes, isolation_level,
    probe, sandbox_stats,
)
from r1kit.sandbox.cases import TestCase, run_tests

LEVEL = isolation_level()
BWRAP = LEVEL.startswith("bwrap")
LIMITS = Limits(timeout=1.5, memory_mb=512, file_size_mb=8, nproc=24, max_output_bytes=1 << 20)


def fence(code: str) -> str:
    return f"<answer>\n```python\n{code}\n```\n</answer>"


@pytest.fixture
def sb():
    if LEVEL == "none":
        pytest.skip(f"cannot run code at all here: {probe().notes}")
    return Sandbox(LIMITS, allow_unsandboxed=True)


@pytest.fixture
def strict_sb():
    """A sandbox that does NOT allow unsandboxed runs. Without bwrap: assert the refusal, skip."""
    s = Sandbox(LIMITS, allow_unsandboxed=False)
    if not BWRAP:
        with pytest.raises(SandboxUnavailableError):
            s.run("print(1)")
        reward = make_code_reward(limits=LIMITS)
        with pytest.raises(SandboxUnavailableError):
            reward(["p"], [fence("print(1)")],
                   verification_info=[{"test_cases": [{"input": "", "output": "1"}]}])
        pytest.skip(f"needs bubblewrap (isolation level here: {LEVEL}; {probe().notes}); "
                    "checked that code is refused instead")
    return s


@pytest.fixture(autouse=True)
def nothing_remains():
    yield
    left = find_sandbox_processes()
    assert left == [], f"sandbox processes remained: {left}"


def host_alive() -> None:
    """The machine still works: we can fork and run a program."""
    assert subprocess.run(["true"], timeout=10).returncode == 0


# ------------------------------------------------------------------ resource exhaustion
def test_busy_loop_that_swallows_every_exception(sb):
    code = ("import time\nwhile True:\n    try:\n        while True:\n            pass\n"
            "    except BaseException:\n        pass\n")
    r = sb.run(code)
    # stopped by the wall-clock deadline (not the CPU limit, not a crash), and not before it by the
    # supervisor's own clock; SIGKILL to the process group took the whole tree down by itself: the
    # sweep had nothing to kill (and the autouse check finds nothing left)
    assert r.verdict is Verdict.TIMEOUT and r.detail == f"wall-clock limit {LIMITS.timeout}s"
    assert r.wall_time >= LIMITS.timeout
    assert r.leftovers == 0 and r.exit_code is None and r.cpu_time is None


def test_huge_power(sb):
    r = sb.run("x = 10**10**8\nprint(x % 7)")
    assert r.verdict in (Verdict.TIMEOUT, Verdict.MEMORY)


def test_allocate_10_gb(sb):
    r = sb.run("x = bytearray(10 * (1 << 30))\nprint(len(x))")
    assert r.verdict is Verdict.MEMORY
    # growing step by step until the limit (pages are touched: give it a longer deadline)
    small = Sandbox(Limits(timeout=6.0, memory_mb=256), allow_unsandboxed=True)
    r = small.run("chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))")
    assert r.verdict is Verdict.MEMORY


def test_write_10_gb(sb, tmp_path):
    before = shutil.disk_usage(tmp_path).free
    r = sb.run("b = b'x' * (1 << 20)\nwith open('big.bin', 'wb') as f:\n"
               "    for _ in range(10 * 1024):\n        f.write(b)\nprint('done')")
    assert r.verdict is Verdict.RUNTIME and b"File too large" in r.stderr
    # the same through many files: bounded by the tmpfs size (or the file size limit per file)
    r2 = sb.run("b = b'x' * (1 << 20)\nfor i in range(10 * 1024):\n"
                "    with open(f'f{i}', 'wb') as f:\n        f.write(b * 4)\nprint('done')")
    assert r2.verdict is not Verdict.PASS and b"done" not in r2.stdout
    assert before - shutil.disk_usage(tmp_path).free < 200 << 20


def test_print_1_gb_hits_the_output_cap_quickly(sb):
    r = sb.run("import sys\nb = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(b)")
    # OUTPUT_LIMIT, not TIMEOUT: the cap stopped it before the deadline; the kill left nothing
    # behind (the sweep killed nothing) and no more than the cap was kept
    assert r.verdict is Verdict.OUTPUT_LIMIT, (r.verdict, r.detail)
    assert r.leftovers == 0
    assert len(r.stdout) <= LIMITS.max_output_bytes + 1
    r = sb.run("import os\nb = b'e' * (1 << 20)\nwhile True:\n    os.write(2, b)")
    assert r.verdict is Verdict.OUTPUT_LIMIT


def test_deep_recursion(sb):
    r = sb.run("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.verdict is Verdict.RUNTIME and b"RecursionError" in r.stderr
    # past the C stack: the interpreter crashes (SIGSEGV) - still just a runtime error
    r = sb.run("import sys\nsys.setrecursionlimit(10**7)\nx = []\nfor _ in range(200000):\n"
               "    x = [x]\nprint(repr(x)[:5])")
    assert r.verdict in (Verdict.RUNTIME, Verdict.TIMEOUT)


def test_fork_bomb_is_contained(strict_sb):
    counts = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            counts.append(len(find_sandbox_processes()))
            time.sleep(0.05)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        r = strict_sb.run("import os\nwhile True:\n    try:\n        os.fork()\n"
                          "    except OSError:\n        pass")
    finally:
        stop.set()
        w.join()
    assert r.verdict is Verdict.TIMEOUT
    # RLIMIT_NPROC (per private uid) caps it; + launcher and a little slack for the watcher's races
    assert max(counts) <= LIMITS.nproc + 2
    host_alive()


# ------------------------------------------------------------------ escapes
ESCAPES = {
    "posix.system": "import posix\nprint(posix.system('touch {m}; echo x > {m}2'))",
    "reload(os)": "import importlib, os\nos = importlib.reload(os)\nprint(os.system('touch {m}'))",
    "ctypes system": "import ctypes\nlibc = ctypes.CDLL(None)\nprint(libc.system(b'touch {m}'))",
    "subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'touch {m}'])\nprint('ran')",
    "write outside": "open('{m}', 'w').write('escaped')",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_shell_and_file_escapes_cannot_touch_the_host(strict_sb, tmp_path, name):
    # a host folder that exists inside the sandbox too (the interpreter's, bound read-only)...
    py_dir = os.path.dirname(os.path.realpath(sys.executable))
    markers = [str(tmp_path / "escaped"), os.path.join(py_dir, f"r1kit-escaped-{os.getpid()}"),
               os.path.join(os.getcwd(), f"r1kit-escaped-{os.getpid()}")]
    try:
        for m in markers:
            r = strict_sb.run(ESCAPES[name].format(m=m))
            # the command itself may run (inside the sandbox) but cannot write to the host
            assert r.verdict in (Verdict.PASS, Verdict.RUNTIME), (r.verdict, r.detail)
            assert not os.path.exists(m) and not os.path.exists(m + "2"), f"{name} wrote {m}"
    finally:
        for m in markers:
            for p in (m, m + "2"):
                if os.path.exists(p):
                    os.unlink(p)


def test_no_connection_to_loopback(strict_sb):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.3)
    port = srv.getsockname()[1]
    try:
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "s.sendall(b'hello')\nprint('connected')")
        r = strict_sb.run(code)
        ctypes_code = (  # the raw syscall path, no Python socket module
            "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "fd = libc.socket(2, 1, 0)\n"
            f"addr = struct.pack('!HH4s8x', 2, {port}, bytes([127, 0, 0, 1]))\n"
            "addr = struct.pack('=H', 2) + addr[2:]\n"
            "print(fd, libc.connect(fd, addr, 16), ctypes.get_errno())")
        r2 = strict_sb.run(ctypes_code)
        with pytest.raises(socket.timeout):
            conn, _ = srv.accept()
            conn.close()
    finally:
        srv.close()
    assert r.verdict is Verdict.RUNTIME and b"connected" not in r.stdout
    assert r2.verdict is Verdict.PASS and b" -1 " in r2.stdout  # connect() failed


def test_setsid_double_fork_leaves_nothing(strict_sb):
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.closerange(0, 3)\n        time.sleep(300)\n    os._exit(0)\n"
            "print('parent done')")
    before = sandbox_stats()["leftover_killed"]
    r = strict_sb.run(code)
    assert r.verdict is Verdict.PASS and r.stdout == b"parent done\n"
    assert find_sandbox_processes() == []
    # with bwrap the pid namespace took the daemon down; the sweep found nothing to kill
    assert r.leftovers == 0 and sandbox_stats()["leftover_killed"] == before


def test_killing_its_parent_and_everything_it_can_see(strict_sb):
    for code in ("import os\nos.kill(os.getppid(), 9)",
                 "import os, signal\nos.kill(-1, signal.SIGKILL)\nimport time\ntime.sleep(5)",
                 "import os\nfor p in range(1, 400):\n    try:\n        os.kill(p, 9)\n"
                 "    except OSError:\n        pass\nprint('survived')"):
        r = strict_sb.run(code)
        assert r.verdict in (Verdict.RUNTIME, Verdict.PASS), (r.verdict, r.detail)
        assert r.verdict is not Verdict.SANDBOX_ERROR
    host_alive()  # and this test process is obviously still here


# ------------------------------------------------------------------ wrong answers, via the reward
INFO = {"language": "python", "test_cases": [
    {"input": "3\n", "output": "1\n2\n3\n"}, {"input": "2\n", "output": "1\n2\n"}]}


def test_exit_before_the_tests_and_partial_output_are_not_pass(sb):
    reward = make_code_reward(limits=LIMITS, allow_unsandboxed=True)
    gold = "for i in range(int(input())):\n    print(i + 1)"
    out = reward(["p"] * 4, [
        fence(gold),
        fence("import sys\nsys.exit(0)\n" + gold),
        fence("n = int(input())\nprint(1)"),  # only the first line of the expected output
        fence("import os\nos._exit(0)"),
    ], verification_info=[INFO] * 4)
    assert out == [1.0, 0.0, 0.0, 0.0]
    fn = {"fn_name": "f", "inputs": [[1]], "outputs": [2]}
    assert reward(["p"], [fence("import sys\nsys.exit(0)\ndef f(x):\n    return 2 * x")],
                  verification_info=[fn]) == [0.0]
    assert reward(["p"], [fence("import os\nos._exit(0)\ndef f(x):\n    return 2 * x")],
                  verification_info=[fn]) == [0.0]


def test_non_utf8_output_is_wrong_not_a_crash(sb):
    info = {"test_cases": [{"input": "", "output": "abc\n"}]}
    reward = make_code_reward(limits=LIMITS, allow_unsandboxed=True)
    out = reward(["p"] * 2, [
        fence("import sys\nsys.stdout.buffer.write(b'\\xff\\xfeabc\\n')"),
        fence("import sys\nsys.stdout.buffer.write(b'abc\\n')\nsys.stderr.buffer.write(b'\\xff')"),
    ], verification_info=[info] * 2)
    assert out == [0.0, 1.0]
    fn = {"fn_name": "f", "inputs": [[]], "outputs": ["x"]}
    assert reward(["p"], [fence("def f():\n    return '\\udcff'")],
                  verification_info=[json.dumps(fn)]) == [0.0]


def test_verdicts_of_a_mixed_batch(sb):
    """A batch of hostile completions scored together: right rewards, no None, all counted."""
    reward = make_code_reward(limits=LIMITS, allow_unsandboxed=True, max_workers=4)
    gold = "for i in range(int(input())):\n    print(i + 1)"
    comps = [fence(gold), fence("while True:\n    pass"), fence("x = bytearray(1 << 34)"),
             fence("while True:\n    print('x' * 4096)"), fence("raise SystemExit(3)"), fence(gold)]
    before = sandbox_stats()
    out = reward(["p"] * len(comps), comps, verification_info=[INFO] * len(comps))
    assert out == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    after = sandbox_stats()
    d = {k: after[k] - before[k] for k in after if k.startswith("verdict_")}
    assert d["verdict_PASS"] == 4 and d["verdict_TIMEOUT"] == 2 and d["verdict_MEMORY"] == 2
    assert d["verdict_OUTPUT_LIMIT"] == 2 and d["verdict_RUNTIME"] == 2
    assert d["verdict_SANDBOX_ERROR"] == 0


def test_tests_of_one_program_do_not_share_files(sb):
    code = ("import os\nprint(os.path.exists('state'))\nopen('state', 'w').write('1')")
    outs = run_tests(code, [TestCase("", "False\n")] * 2, sb)
    assert [o.verdict for o in outs] == [Verdict.PASS, Verdict.PASS]
