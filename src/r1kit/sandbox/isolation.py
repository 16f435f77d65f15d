"""Which isolation works on this machine: tried once (cached), strongest first.

``bwrap+seccomp`` > ``bwrap`` > ``rlimits`` (the launcher alone: rlimits and, as root, a private
uid) > ``none``. Each candidate is accepted only after a probe program actually ran under it and
showed the isolation it promises (seccomp mode 2 and no AF_INET socket; no uid 0 as root).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

from . import _seccomp
from .base import Limits, Probe, SandboxUnavailableError, Verdict
from .bwrap import python, python_roots
from .run import run

_PROBE: Probe | None = None
_PROBE_LOCK = threading.Lock()

_PROBE_PROGRAM = (
    "import os, socket\n"
    "st = open('/proc/self/status').read()\n"
    "sec = [l.split()[1] for l in st.splitlines() if l.startswith('Seccomp:')]\n"
    "try:\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(); inet = 'open'\n"
    "except OSError as e:\n"
    "    inet = 'denied'\n"
    "print(os.getuid(), sec[0] if sec else '?', inet)\n"
)


def _world_can_run_python() -> bool:
    """Can a uid with no rights (other) read the interpreter, its stdlib and site-packages?"""

    def ok(path: str, want: int) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return bool(st.st_mode & want)

    paths = [os.path.realpath(python())] + python_roots()
    for p in paths:
        parts = Path(p).parts
        for i in range(1, len(parts)):
            if not ok(str(Path(*parts[:i])), 0o001):
                return False
        if not ok(p, 0o004 if os.path.isfile(p) else 0o005):
            return False
    return True


def _try(pb: Probe) -> tuple[bool, str]:
    """(True, "uid seccomp-mode inet") when the probe program ran under ``pb``, else (False, why)."""
    res = run(pb, _PROBE_PROGRAM, b"", Limits(timeout=10.0), count=False)
    if res.verdict is not Verdict.PASS:
        return False, f"{res.verdict}: {res.detail} {res.stderr[-500:]!r}"
    return True, res.stdout.decode("utf-8", "replace").strip()


def probe(force: bool = False) -> Probe:
    """Find (once, cached) the strongest isolation that actually works on this machine."""
    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is not None and not force:
            return _PROBE
        pb = probe_uncached()
        _PROBE = pb
        return pb


def probe_uncached(use_bwrap: bool = True) -> Probe:
    """Try the candidates now (nothing cached). ``use_bwrap=False`` skips bubblewrap, to check
    the fallback on a machine that has it."""
    notes: list[str] = []
    if sys.platform != "linux":
        return Probe("none", notes=["not Linux: no rlimit/namespace sandbox"])
    is_root = os.geteuid() == 0
    bw = shutil.which("bwrap")
    if bw and use_bwrap:
        for use_seccomp in ((True, False) if _seccomp.supported() else (False,)):
            pb = Probe("bwrap+seccomp" if use_seccomp else "bwrap", bwrap=bw, privileged=is_root,
                       seccomp=use_seccomp, drop_uid=is_root)
            ok, out = _try(pb)
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
                     else "bwrap not tried (use_bwrap=False)")
    drop = is_root and _world_can_run_python()
    if is_root and not drop:
        notes.append("running as root but the interpreter is not readable by other uids: "
                     "no uid change without bwrap, RLIMIT_NPROC not enforced")
    pb = Probe("rlimits", drop_uid=drop)
    ok, out = _try(pb)
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
