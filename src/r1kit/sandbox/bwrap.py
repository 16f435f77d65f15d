"""The bubblewrap command line of one run, and the host folders the interpreter needs.

What the program sees inside: read-only ``/usr`` and the interpreter's own folders, a private
``/proc`` and ``/dev``, size-capped tmpfs ``/tmp`` and ``/sandbox`` (its working folder), the run's
files read-only at ``/r1kit``, a clean environment, no network, new pid/ipc/uts/cgroup namespaces
(+ a user namespace when not root), all capabilities dropped and, when available, the seccomp
filter. ``--die-with-parent`` and ``--new-session`` tie it to the trainer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .base import Limits, Probe


def python() -> str:
    """The interpreter that runs the launcher and the program (the trainer's own)."""
    return sys.executable


def python_roots() -> list[str]:
    """The host folders outside /usr that hold the interpreter, its stdlib and site-packages
    (outermost only: a root inside another is covered by it)."""
    roots = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        if p:
            roots.add(os.path.realpath(p))
            roots.add(os.path.abspath(p))
    exe = os.path.realpath(python())
    roots.add(os.path.dirname(os.path.dirname(exe)))
    out = []
    for r in sorted(roots):
        if r in ("/", "") or r == "/usr" or r.startswith("/usr/"):
            continue
        if any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots if o not in ("/", "")):
            continue  # covered by a parent root
        out.append(r)
    return out


def bwrap_argv(pb: Probe, run_dir: str, limits: Limits, seccomp_fd: int | None,
               env: dict[str, str], launcher_args: list[str]) -> list[str]:
    """``bwrap ... -- launcher_args``: ``run_dir`` appears read-only at ``/r1kit``; ``env`` is the
    whole environment inside; ``seccomp_fd`` (inherited by bwrap) holds the filter, if any."""
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
    roots = python_roots()
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
