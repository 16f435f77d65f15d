"""Finding and killing what a run left behind, from ``/proc``.

A run's processes are recognised by the run's private uid (when the launcher dropped to one) or
by the run's marker in their environment (``R1KIT_SANDBOX=r1kit-<hex>``, set for every run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

UID_BASE, UID_SPAN = 0x20000000, 1 << 24  # private uids: 536870912 .. 553648127
MARKER_VAR = "R1KIT_SANDBOX"  # environment variable holding the run's marker
MARKER_PREFIX = "r1kit-"


def proc_uid(pid: int) -> int | None:
    """The real uid of ``pid`` (None when it is gone or unreadable)."""
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


def _other_pids():
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            yield int(name)


def find_leftovers(uid: int | None, marker: str | None) -> list[int]:
    """Pids of processes running as ``uid`` or carrying ``marker`` in their environment."""
    mk = marker.encode() if marker else None
    return [pid for pid in _other_pids()
            if (uid is not None and proc_uid(pid) == uid) or (mk and _has_marker(pid, mk))]


def find_sandbox_processes() -> list[int]:
    """Pids of any process that belongs to some sandbox run of this library: running as one of
    the private uids, or with ``R1KIT_SANDBOX=`` in its environment. Empty when nothing leaked."""
    any_marker = f"{MARKER_VAR}={MARKER_PREFIX}".encode()
    out = []
    for pid in _other_pids():
        uid = proc_uid(pid)
        if uid is None:
            continue
        if UID_BASE <= uid < UID_BASE + UID_SPAN or _has_marker(pid, any_marker):
            out.append(pid)
    return out


def count_own_processes() -> int:
    """Processes running as this process's uid (this one included)."""
    me = os.getuid()
    return sum(1 for n in os.listdir("/proc") if n.isdigit() and proc_uid(int(n)) == me)


def sweep(uid: int | None, marker: str, grace: float = 1.0) -> int:
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
