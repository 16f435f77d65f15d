"""One untrusted Python program on one input: prepare its files, start it under the isolation a
:class:`~r1kit.sandbox.base.Probe` describes, supervise it, decide the verdict, sweep leftovers.

Process tree of one run (bubblewrap available, the usual case)::

    trainer --subprocess(start_new_session, clean env, no preexec_fn)--> bwrap (own process group)
      bwrap: new pid/net/ipc/uts/cgroup namespaces (+ user namespace when not root),
             read-only /usr and Python, private /proc, /dev, size-capped tmpfs /tmp and /sandbox,
             --die-with-parent, --new-session, all capabilities dropped, seccomp filter
        pid 1: bwrap's init        -- when it dies the kernel kills the whole namespace
          pid 2: python -I _launcher.py  -- drops to a random unprivileged uid, sets rlimits
            pid 3: python -I program.py   -- the model's code

Without bubblewrap the same launcher runs directly (isolation level ``"rlimits"``); that is only
allowed with ``allow_unsandboxed=True``.

Leftovers: the wall-clock deadline kills the whole process group (``os.killpg(SIGKILL)``); with
bubblewrap the pid namespace dies with its init, so a ``setsid`` + double fork cannot survive.
After every run the parent also sweeps: every process running as the run's private uid (or, when
no uid could be dropped, carrying the run's marker in its environment) is SIGKILLed and counted
(``sandbox_stats()["leftover_killed"]``).

RLIMIT_NPROC caveat: the kernel never applies it to uid 0, whatever its capabilities. That is why
the launcher changes to a private uid when it starts as root (each run gets its own random uid, so
the count is per run). Inside a user namespace (bwrap as non-root) the count is per namespace.
Without bubblewrap and without a uid change (non-root, or a Python the private uid cannot read)
NPROC is set to the caller's current process count plus the limit: best effort only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import _seccomp
from .base import STATS, Limits, Probe, RunResult, Verdict
from .bwrap import bwrap_argv, python
from .reaper import MARKER_PREFIX, MARKER_VAR, UID_BASE, UID_SPAN, count_own_processes, sweep
from .supervise import supervise
from .verdict import decide

_PKG_DIR = Path(__file__).resolve().parent
_LAUNCHER_SRC = _PKG_DIR / "_launcher.py"
_HARNESS_SRC = _PKG_DIR / "_harness.py"


def prepare_dir(code: str, pb: Probe) -> str:
    """A fresh folder with the launcher, the harness, the program (and the seccomp filter)."""
    d = tempfile.mkdtemp(prefix="r1kit-sbx-")
    os.chmod(d, 0o755)
    shutil.copyfile(_LAUNCHER_SRC, os.path.join(d, "launcher.py"))
    shutil.copyfile(_HARNESS_SRC, os.path.join(d, "harness.py"))
    with open(os.path.join(d, "program.py"), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(code)
    if pb.seccomp:
        with open(os.path.join(d, "seccomp.bpf"), "wb") as f:
            f.write(_seccomp.build_filter())
    for n in os.listdir(d):
        os.chmod(os.path.join(d, n), 0o644)
    return d


def run(pb: Probe, code: str, stdin: bytes, limits: Limits, fn_name: str | None = None, *,
        count: bool = True, run_dir: str | None = None) -> RunResult:
    """Run ``code`` once (as a function-call test of ``fn_name`` when given, else on ``stdin``).
    ``run_dir``: a folder from :func:`prepare_dir` shared by several runs of one program.
    ``count``: add the verdict to ``sandbox_stats()`` here (False: the caller records it)."""
    own_dir = run_dir is None
    uid = (UID_BASE + secrets.randbelow(UID_SPAN)) if pb.drop_uid else None
    if own_dir:
        run_dir = prepare_dir(code, pb)
    marker = MARKER_PREFIX + secrets.token_hex(12)
    try:
        res = _run_in_dir(pb, run_dir, stdin, limits, fn_name, uid, marker)
    except Exception as e:  # noqa: BLE001 - our failure (disk full, fd limit...), not the program's
        res = RunResult(Verdict.SANDBOX_ERROR, detail=f"sandbox failure: {e!r}")
    finally:
        leftovers = sweep(uid, marker)
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif not pb.bwrap:
            shutil.rmtree(os.path.join(run_dir, f"work-{marker}"), ignore_errors=True)
    res.leftovers = leftovers
    if leftovers:
        res.detail = (res.detail + f" [{leftovers} leftover processes killed]").strip()
    if count:
        STATS.add(res.verdict, leftovers)
    return res


def _launcher_config(pb: Probe, inside: str, cwd: str, limits: Limits, fn_name: str | None,
                     uid: int | None, marker: str, stdin_name: str) -> tuple[dict, dict[str, str]]:
    """(the launcher's JSON config without its status fd, the program's environment).
    ``inside``: where the run's folder appears to the program; ``cwd``: its working folder."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cwd, "TMPDIR": "/tmp" if pb.bwrap else cwd,
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", MARKER_VAR: marker}
    argv = [python(), "-I", "-X", "utf8"]
    if fn_name:
        argv += [f"{inside}/harness.py", f"{inside}/program.py", str(fn_name)]
    else:
        argv += [f"{inside}/program.py"]
    rl = limits.rlimits()
    if uid is None and not pb.bwrap and os.geteuid() != 0:
        n = limits.nproc + count_own_processes() + 16
        rl["RLIMIT_NPROC"] = (n, n)
    elif uid is None and not pb.bwrap:
        rl.pop("RLIMIT_NPROC")  # ignored for uid 0 anyway
    cfg = {"status_fd": -1, "uid": uid, "rlimits": rl, "cwd": cwd, "argv": argv,
           "env": env, "stdin": f"{inside}/{stdin_name}"}
    return cfg, env


def _run_in_dir(pb: Probe, run_dir: str, stdin: bytes, limits: Limits, fn_name: str | None,
                uid: int | None, marker: str) -> RunResult:
    inside = "/r1kit" if pb.bwrap else run_dir
    cwd = "/sandbox" if pb.bwrap else os.path.join(run_dir, f"work-{marker}")
    if not pb.bwrap:  # the program's writable folder lives on the host: fresh for every run
        os.mkdir(cwd, 0o700)
        if uid is not None:
            os.chown(cwd, uid, uid)
    # one stdin file per run: several tests of one program may share run_dir
    stdin_name = f"stdin-{marker}.txt"
    with open(os.path.join(run_dir, stdin_name), "wb") as f:
        f.write(stdin)
    os.chmod(os.path.join(run_dir, stdin_name), 0o644)
    cfg, env = _launcher_config(pb, inside, cwd, limits, fn_name, uid, marker, stdin_name)

    status_r, status_w = os.pipe()
    fds_to_close = [status_r, status_w]
    try:
        pass_fds = [status_w]
        sec_fd = None
        if pb.seccomp:
            sec_fd = os.open(os.path.join(run_dir, "seccomp.bpf"), os.O_RDONLY)
            fds_to_close.append(sec_fd)
            pass_fds.append(sec_fd)
        cfg["status_fd"] = status_w
        launcher = [python(), "-I", "-X", "utf8", f"{inside}/launcher.py", json.dumps(cfg)]
        if pb.bwrap:
            argv0 = bwrap_argv(pb, run_dir, limits, sec_fd, env, launcher)
            popen_env, popen_cwd = {"PATH": "/usr/bin:/bin"}, "/"
        else:
            argv0, popen_env, popen_cwd = launcher, env, cwd
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv0, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=pass_fds, env=popen_env, cwd=popen_cwd, start_new_session=True,
                close_fds=True)
        except OSError as e:
            return RunResult(Verdict.SANDBOX_ERROR, detail=f"could not start the sandbox: {e!r}")
        os.close(status_w)
        fds_to_close.remove(status_w)
        obs = supervise(proc, status_r, limits, t0)
    finally:
        try:
            os.unlink(os.path.join(run_dir, stdin_name))
        except OSError:
            pass
        for fd in fds_to_close:
            try:
                os.close(fd)
            except OSError:
                pass
    d = decide(obs, limits)
    return RunResult(d.verdict, stdout=obs.stdout, stderr=obs.stderr, exit_code=d.exit_code,
                     signal=d.signal, wall_time=obs.wall_time, cpu_time=d.cpu_time, detail=d.detail)
