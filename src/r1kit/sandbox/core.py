"""Run one untrusted Python program on one input, in a sandbox, and decide a verdict in the parent.

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

import enum
import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import _seccomp

_PKG_DIR = Path(__file__).resolve().parent
_LAUNCHER_SRC = _PKG_DIR / "_launcher.py"
_HARNESS_SRC = _PKG_DIR / "_harness.py"
_UID_BASE, _UID_SPAN = 0x20000000, 1 << 24  # private uids: 536870912 .. 553648127


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
    nproc: int = 32  # RLIMIT_NPROC (see the module docstring)
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


# --------------------------------------------------------------------------- statistics
class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
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


STATS = _Stats()


def sandbox_stats(reset: bool = False) -> dict:
    """Counters over every run in this process: ``runs``, ``sandbox_errors`` (infrastructure
    failures, scored None), ``verdict_<NAME>`` and ``leftover_killed``, plus
    ``isolation_level``."""
    snap = STATS.snapshot()
    snap["isolation_level"] = isolation_level()
    if reset:
        STATS.reset()
    return snap


# --------------------------------------------------------------------------- probing
@dataclass
class Probe:
    level: str  # "bwrap+seccomp" | "bwrap" | "rlimits" | "none"
    bwrap: str | None = None
    privileged: bool = False  # bwrap run by root without a user namespace, uid dropped inside
    seccomp: bool = False
    drop_uid: bool = False  # the launcher changes to a private uid
    notes: list[str] = field(default_factory=list)


_PROBE: Probe | None = None
_PROBE_LOCK = threading.Lock()


def _python() -> str:
    return sys.executable


def _python_roots() -> list[str]:
    roots = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        if p:
            roots.add(os.path.realpath(p))
            roots.add(os.path.abspath(p))
    exe = os.path.realpath(_python())
    roots.add(os.path.dirname(os.path.dirname(exe)))
    out = []
    for r in sorted(roots):
        if r in ("/", "") or r == "/usr" or r.startswith("/usr/"):
            continue
        if any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots if o not in ("/", "")):
            continue  # covered by a parent root
        out.append(r)
    return out


def _world_can_run_python() -> bool:
    """Can a uid with no rights (other) read the interpreter, its stdlib and site-packages?"""

    def ok(path: str, want: int) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return bool(st.st_mode & want)

    paths = [os.path.realpath(_python())] + _python_roots()
    for p in paths:
        parts = Path(p).parts
        for i in range(1, len(parts)):
            if not ok(str(Path(*parts[:i])), 0o001):
                return False
        if not ok(p, 0o004 if os.path.isfile(p) else 0o005):
            return False
    return True


def _run_probe_program(pb: Probe) -> tuple[bool, str]:
    code = (
        "import os, socket\n"
        "st = open('/proc/self/status').read()\n"
        "sec = [l.split()[1] for l in st.splitlines() if l.startswith('Seccomp:')]\n"
        "try:\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(); inet = 'open'\n"
        "except OSError as e:\n"
        "    inet = 'denied'\n"
        "print(os.getuid(), sec[0] if sec else '?', inet)\n"
    )
    res = _run(pb, code, b"", Limits(timeout=10.0), mode="stdio", fn_name=None, count=False)
    if res.verdict is not Verdict.PASS:
        return False, f"{res.verdict}: {res.detail} {res.stderr[-500:]!r}"
    return True, res.stdout.decode("utf-8", "replace").strip()


def probe(force: bool = False) -> Probe:
    """Find (once, cached) the strongest isolation that actually works on this machine."""
    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is not None and not force:
            return _PROBE
        pb = _probe_uncached()
        _PROBE = pb
        return pb


def _probe_uncached() -> Probe:
    notes: list[str] = []
    if sys.platform != "linux":
        return Probe("none", notes=["not Linux: no rlimit/namespace sandbox"])
    is_root = os.geteuid() == 0
    bw = shutil.which("bwrap")
    if bw and os.environ.get("R1KIT_SANDBOX_NO_BWRAP") != "1":
        for use_seccomp in ((True, False) if _seccomp.supported() else (False,)):
            pb = Probe("bwrap+seccomp" if use_seccomp else "bwrap", bwrap=bw, privileged=is_root,
                       seccomp=use_seccomp, drop_uid=is_root)
            ok, out = _run_probe_program(pb)
            if ok:
                parts = out.split()
                if use_seccomp and (len(parts) < 3 or parts[1] != "2" or parts[2] != "denied"):
                    notes.append(f"seccomp filter not effective ({out!r})")
                    continue
                if is_root and parts and parts[0] == "0":
                    notes.append("bwrap ran but uid 0 was not dropped")
                    break
                pb.notes = notes + [f"probe: {out}"]
                return pb
            notes.append(f"bwrap{'+seccomp' if use_seccomp else ''} failed: {out}")
    else:
        notes.append("bwrap not found (apt-get install -y bubblewrap)" if not bw
                     else "bwrap disabled by R1KIT_SANDBOX_NO_BWRAP=1")
    drop = is_root and _world_can_run_python()
    if is_root and not drop:
        notes.append("running as root but the interpreter is not readable by other uids: "
                     "no uid change without bwrap, RLIMIT_NPROC not enforced")
    pb = Probe("rlimits", drop_uid=drop)
    ok, out = _run_probe_program(pb)
    if ok:
        pb.notes = notes + [f"probe: {out}"]
        return pb
    notes.append(f"rlimits launcher failed: {out}")
    return Probe("none", notes=notes)


def isolation_level() -> str:
    """``"bwrap+seccomp"``, ``"bwrap"``, ``"rlimits"`` or ``"none"`` (probed once, cached)."""
    return probe().level


def require_isolation(allow_unsandboxed: bool = False) -> str:
    """Return the isolation level, or raise SandboxUnavailableError when there is no
    bubblewrap sandbox and ``allow_unsandboxed`` is false (or nothing works at all)."""
    pb = probe()
    if pb.level.startswith("bwrap"):
        return pb.level
    if pb.level == "none":
        raise SandboxUnavailableError("cannot run code at all here: " + "; ".join(pb.notes))
    if not allow_unsandboxed:
        raise SandboxUnavailableError(
            "refusing to run model-written code without a sandbox (isolation level "
            f"{pb.level!r}: {'; '.join(pb.notes)}). Install bubblewrap (apt-get install -y "
            "bubblewrap) where user namespaces work, or set allow_unsandboxed=True to accept "
            "rlimits-only isolation.")
    return pb.level


# --------------------------------------------------------------------------- one run
def _bwrap_argv(pb: Probe, run_dir: str, limits: Limits, seccomp_fd: int | None,
                env: dict[str, str], launcher_args: list[str]) -> list[str]:
    a = [pb.bwrap, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
         "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if not pb.privileged:
        a += ["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
    a += ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(f):
            a += ["--ro-bind", f, f]
    # /tmp first: the Python roots bound below may live under /tmp (a virtualenv in a clone there),
    # and a tmpfs mounted after them would hide them.
    size = str(limits.tmpfs_mb << 20)
    a += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    roots = _python_roots()
    made: set[str] = set()
    for r in roots:  # parents bwrap would create 0700: make them 0755 first
        parts = Path(r).parts
        for i in range(2, len(parts)):
            d = str(Path(*parts[:i]))
            if d not in made and not d.startswith("/usr"):
                made.add(d)
                a += ["--perms", "0755", "--dir", d]
    for r in roots:
        a += ["--ro-bind", r, r]
    a += ["--proc", "/proc", "--dev", "/dev",
          "--perms", "0777", "--size", size, "--tmpfs", "/sandbox",
          "--ro-bind", run_dir, "/r1kit", "--chdir", "/sandbox", "--clearenv"]
    for k, v in env.items():
        a += ["--setenv", k, v]
    a += ["--cap-drop", "ALL"]
    if pb.privileged:
        a += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    if seccomp_fd is not None:
        a += ["--seccomp", str(seccomp_fd)]
    return a + ["--"] + launcher_args


def _proc_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read()
    except OSError:
        return False


def find_leftovers(uid: int | None, marker: str | None) -> list[int]:
    """Pids of processes running as ``uid`` or carrying ``marker`` in their environment."""
    me = os.getpid()
    mk = marker.encode() if marker else None
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        if (uid is not None and _proc_uid(pid) == uid) or (mk and _has_marker(pid, mk)):
            out.append(pid)
    return out


def find_sandbox_processes() -> list[int]:
    """Pids of any process that belongs to some sandbox run of this library: running as one of
    the private uids, or with ``R1KIT_SANDBOX=`` in its environment. Empty when nothing leaked."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        uid = _proc_uid(pid)
        if uid is None:
            continue
        if _UID_BASE <= uid < _UID_BASE + _UID_SPAN or _has_marker(pid, b"R1KIT_SANDBOX=r1kit-"):
            out.append(pid)
    return out


def _sweep(uid: int | None, marker: str, grace: float = 1.0) -> int:
    """Make sure no process of the run remains; returns how many had to be killed here.

    Processes of a killed pid namespace take a moment to exit: give them ``grace`` seconds to
    disappear on their own before killing (and counting) them."""
    end = time.monotonic() + grace
    pids = find_leftovers(uid, marker)
    while pids and time.monotonic() < end:
        time.sleep(0.01)
        pids = find_leftovers(uid, marker)
    killed = 0
    for _ in range(50):
        if not pids:
            return killed
        if uid is not None and os.geteuid() == 0:
            # kill(-1) as that uid reaches all of its processes at once (fork bombs included)
            try:
                subprocess.run(["kill", "-9", "-1"], user=uid, group=uid, extra_groups=[],
                               env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=10, close_fds=True)
            except (OSError, subprocess.SubprocessError):
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.01)
        pids = find_leftovers(uid, marker)
    return killed


def _prepare_dir(code: str, pb: Probe) -> str:
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


def _count_own_processes() -> int:
    me = os.getuid()
    return sum(1 for n in os.listdir("/proc") if n.isdigit() and _proc_uid(int(n)) == me)


def _run(pb: Probe, code: str, stdin: bytes, limits: Limits, mode: str, fn_name: str | None,
         count: bool = True, run_dir: str | None = None) -> RunResult:
    own_dir = run_dir is None
    uid = (_UID_BASE + secrets.randbelow(_UID_SPAN)) if pb.drop_uid else None
    if own_dir:
        run_dir = _prepare_dir(code, pb)
    marker = "r1kit-" + secrets.token_hex(12)
    try:
        res = _run_in_dir(pb, run_dir, stdin, limits, mode, fn_name, uid, marker)
    except Exception as e:  # noqa: BLE001 - our failure (disk full, fd limit...), not the program's
        res = RunResult(Verdict.SANDBOX_ERROR, detail=f"sandbox failure: {e!r}")
    finally:
        leftovers = _sweep(uid, marker)
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


def _run_in_dir(pb: Probe, run_dir: str, stdin: bytes, limits: Limits, mode: str,
                fn_name: str | None, uid: int | None, marker: str) -> RunResult:
    inside = "/r1kit" if pb.bwrap else run_dir
    cwd = "/sandbox" if pb.bwrap else os.path.join(run_dir, f"work-{marker}")
    if not pb.bwrap:  # the program's writable folder lives on the host: fresh for every run
        os.mkdir(cwd, 0o700)
        if uid is not None:
            os.chown(cwd, uid, uid)
    tmp = "/tmp" if pb.bwrap else cwd
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cwd, "TMPDIR": tmp,
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "R1KIT_SANDBOX": marker}
    py = _python()
    if mode == "fn":
        argv = [py, "-I", "-X", "utf8", f"{inside}/harness.py", f"{inside}/program.py",
                str(fn_name)]
    else:
        argv = [py, "-I", "-X", "utf8", f"{inside}/program.py"]
    rl = limits.rlimits()
    if uid is None and not pb.bwrap and os.geteuid() != 0:
        n = limits.nproc + _count_own_processes() + 16
        rl["RLIMIT_NPROC"] = (n, n)
    elif uid is None and not pb.bwrap:
        rl.pop("RLIMIT_NPROC")  # ignored for uid 0 anyway
    # one stdin file per run: several tests of one program may share run_dir
    stdin_name = f"stdin-{marker}.txt"
    with open(os.path.join(run_dir, stdin_name), "wb") as f:
        f.write(stdin)
    os.chmod(os.path.join(run_dir, stdin_name), 0o644)
    cfg = {"status_fd": -1, "uid": uid, "rlimits": rl, "cwd": cwd, "argv": argv,
           "env": env, "stdin": f"{inside}/{stdin_name}"}
    launcher = [py, "-I", "-X", "utf8", f"{inside}/launcher.py", json.dumps(cfg)]

    status_r, status_w = os.pipe()
    sec_fd = None
    fds_to_close = [status_r, status_w]
    try:
        pass_fds = [status_w]
        if pb.seccomp:
            sec_fd = os.open(os.path.join(run_dir, "seccomp.bpf"), os.O_RDONLY)
            fds_to_close.append(sec_fd)
            pass_fds.append(sec_fd)
        cfg["status_fd"] = status_w
        launcher[-1] = json.dumps(cfg)
        if pb.bwrap:
            argv0 = _bwrap_argv(pb, run_dir, limits, sec_fd, env, launcher)
            popen_env = {"PATH": "/usr/bin:/bin"}
            popen_cwd = "/"
        else:
            argv0 = launcher
            popen_env = env
            popen_cwd = cwd
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
        return _supervise(proc, status_r, limits, t0, mode)
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


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.kill()
    except OSError:
        pass


def _supervise(proc: subprocess.Popen, status_r: int, limits: Limits, t0: float,
               mode: str) -> RunResult:
    cap = limits.max_output_bytes
    bufs = {"out": bytearray(), "err": bytearray(), "status": bytearray()}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "err")
    sel.register(status_r, selectors.EVENT_READ, "status")
    open_count = 3
    t_ready: float | None = None
    t_done: float | None = None  # the launcher reported the program's exit
    killed: str | None = None
    try:
        while open_count and killed is None:
            now = time.monotonic()
            if t_done is not None and now >= t_done + 0.25:
                break  # the program is over; whatever still holds our pipes gets swept
            deadline = (t_ready + limits.timeout) if t_ready is not None else \
                (t0 + limits.startup_timeout)
            if t_done is not None:
                deadline = t_done + 0.25
            elif now >= deadline:
                killed = "timeout" if t_ready is not None else "startup"
                break
            for key, _ in sel.select(timeout=min(deadline - now, 0.5)):
                name = key.data
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(key.fd)
                    open_count -= 1
                    continue
                buf = bufs[name]
                if name == "status":
                    if len(buf) < 65536:
                        buf += chunk
                    if t_ready is None and buf.startswith(b"R\n"):
                        t_ready = time.monotonic()
                    if t_done is None and b"\n{" in buf and buf.endswith(b"\n"):
                        t_done = time.monotonic()
                    continue
                room = cap + 1 - len(buf)
                buf += chunk[:max(room, 0)]
                if len(buf) > cap:
                    killed = "output"
                    break
        if killed is None and t_done is None:
            # all pipes closed: the process should be gone or about to be
            rest = (t_ready + limits.timeout if t_ready else t0 + limits.startup_timeout) \
                - time.monotonic()
            try:
                proc.wait(timeout=max(rest, 0.05))
            except subprocess.TimeoutExpired:
                killed = "timeout" if t_ready is not None else "startup"
    finally:
        if killed is not None or proc.poll() is None:
            _kill(proc)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        # drain whatever the status pipe still has (the final report may race with EOFs)
        try:
            os.set_blocking(status_r, False)
            while len(bufs["status"]) < 65536:
                c = os.read(status_r, 65536)
                if not c:
                    break
                bufs["status"] += c
        except OSError:
            pass
    wall = time.monotonic() - (t_ready if t_ready is not None else t0)
    if t_ready is None and bufs["status"].startswith(b"R\n"):
        t_ready = t0
    out, err = bytes(bufs["out"]), bytes(bufs["err"])
    res = RunResult(Verdict.SANDBOX_ERROR, stdout=out, stderr=err, wall_time=wall)
    status = bytes(bufs["status"])
    if killed == "output":
        res.verdict, res.detail = Verdict.OUTPUT_LIMIT, f"more than {cap} bytes of output"
        return res
    if t_ready is None:
        res.verdict = Verdict.SANDBOX_ERROR
        res.detail = ("sandbox did not start in time" if killed == "startup" else
                      "sandbox failed to start: " + status.decode("utf-8", "replace").strip()
                      + " | exit " + str(proc.returncode) + " | "
                      + err[-400:].decode("utf-8", "replace"))
        return res
    if killed == "timeout":
        res.verdict, res.detail = Verdict.TIMEOUT, f"wall-clock limit {limits.timeout}s"
        return res
    report = None
    for line in status.splitlines()[1:]:
        if line.startswith(b"{"):
            try:
                report = json.loads(line)
            except ValueError:
                report = None
    if report is None:
        res.verdict = Verdict.RUNTIME
        res.detail = "the program's supervisor was killed (by the program?)"
        return res
    res.exit_code, res.signal, res.cpu_time = report["exit"], report["signal"], report["cpu"]
    cpu_limit = limits.rlimits()["RLIMIT_CPU"][0]
    tail = err[-4096:]
    if res.signal in (signal.SIGXCPU, signal.SIGKILL) and (res.cpu_time or 0) >= cpu_limit - 0.1:
        res.verdict, res.detail = Verdict.TIMEOUT, f"CPU limit {cpu_limit}s"
    elif res.exit_code != 0:
        if b"MemoryError" in tail or b"Cannot allocate memory" in tail:
            res.verdict, res.detail = Verdict.MEMORY, f"memory limit {limits.memory_mb} MB"
        else:
            res.verdict = Verdict.RUNTIME
            res.detail = (f"killed by signal {res.signal}" if res.signal is not None
                          else f"exit code {res.exit_code}")
    else:
        res.verdict = Verdict.PASS  # the program ran to completion; the caller compares output
    return res


# --------------------------------------------------------------------------- public runner
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
        return _run(probe(), code, stdin, self.limits, "fn" if fn_name else "stdio", fn_name,
                    run_dir=run_dir, count=count)

    @staticmethod
    def record(verdict: Verdict, leftovers: int = 0) -> None:
        STATS.add(verdict, leftovers)

    def program_dir(self, code: str) -> "_ProgramDir":
        """A prepared folder to run several tests of one program without re-copying files."""
        self.check()
        return _ProgramDir(code, probe())


class _ProgramDir:
    def __init__(self, code: str, pb: Probe) -> None:
        self.path = _prepare_dir(code, pb)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
