"""The parent's I/O loop over one started run: read stdout, stderr and the launcher's status
channel, enforce the start-up and wall-clock deadlines and the output cap (by killing the whole
process group), and report what happened as an :class:`~r1kit.sandbox.verdict.Observation`.

It decides nothing about the program: ``r1kit.sandbox.verdict.decide`` does, from the observation.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time

from .base import Limits
from .verdict import STARTUP, WALL, Observation

STATUS_CAP = 65536  # bytes of the status channel kept (the launcher writes two short lines)
AFTER_EXIT_S = 0.25  # once the program's exit is reported, how long to keep reading its pipes


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (bwrap or the launcher), then ``proc`` itself."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.kill()
    except OSError:
        pass


class _Reader:
    """The three pipes of a run and what came through them."""

    def __init__(self, proc: subprocess.Popen, status_r: int, cap: int) -> None:
        self.cap = cap
        self.bufs = {"out": bytearray(), "err": bytearray(), "status": bytearray()}
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
        self.sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "err")
        self.sel.register(status_r, selectors.EVENT_READ, "status")
        self.open = 3
        self.status_r = status_r

    def read(self, timeout: float) -> bool:
        """Read what is ready within ``timeout`` seconds; False when an output went over the cap."""
        for key, _ in self.sel.select(timeout=timeout):
            try:
                chunk = os.read(key.fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.sel.unregister(key.fd)
                self.open -= 1
                continue
            buf = self.bufs[key.data]
            if key.data == "status":
                if len(buf) < STATUS_CAP:
                    buf += chunk
                continue
            buf += chunk[:max(self.cap + 1 - len(buf), 0)]
            if len(buf) > self.cap:
                return False
        return True

    @property
    def ready(self) -> bool:
        return self.bufs["status"].startswith(b"R\n")

    @property
    def exited(self) -> bool:
        """The launcher reported the program's exit (its JSON line is complete)."""
        buf = self.bufs["status"]
        return b"\n{" in buf and buf.endswith(b"\n")

    def drain_status(self) -> None:
        """Whatever the status pipe still holds (the final report may race with the EOFs)."""
        try:
            os.set_blocking(self.status_r, False)
            while len(self.bufs["status"]) < STATUS_CAP:
                c = os.read(self.status_r, STATUS_CAP)
                if not c:
                    break
                self.bufs["status"] += c
        except OSError:
            pass


def supervise(proc: subprocess.Popen, status_r: int, limits: Limits, t0: float) -> Observation:
    """Watch ``proc`` (started at monotonic time ``t0``) until it is over or has to be killed.
    ``status_r`` is the read end of the launcher's status pipe (closed by the caller)."""
    io = _Reader(proc, status_r, limits.max_output_bytes)
    t_ready: float | None = None
    t_done: float | None = None  # the launcher reported the program's exit
    deadline_hit: str | None = None
    overflow = False
    try:
        while io.open and deadline_hit is None and not overflow:
            now = time.monotonic()
            if t_done is not None:
                if now >= t_done + AFTER_EXIT_S:
                    break  # the program is over; whatever still holds our pipes gets swept
                deadline = t_done + AFTER_EXIT_S
            else:
                deadline = (t_ready + limits.timeout) if t_ready is not None else \
                    (t0 + limits.startup_timeout)
                if now >= deadline:
                    deadline_hit = WALL if t_ready is not None else STARTUP
                    break
            overflow = not io.read(min(deadline - now, 0.5))
            if t_ready is None and io.ready:
                t_ready = time.monotonic()
            if t_done is None and io.exited:
                t_done = time.monotonic()
        if deadline_hit is None and not overflow and t_done is None:
            # all pipes closed: the process should be gone or about to be
            rest = (t_ready + limits.timeout if t_ready else t0 + limits.startup_timeout) \
                - time.monotonic()
            try:
                proc.wait(timeout=max(rest, 0.05))
            except subprocess.TimeoutExpired:
                deadline_hit = WALL if t_ready is not None else STARTUP
    finally:
        if deadline_hit is not None or overflow or proc.poll() is None:
            kill(proc)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        io.sel.close()
        proc.stdout.close()
        proc.stderr.close()
        io.drain_status()
    wall = time.monotonic() - (t_ready if t_ready is not None else t0)
    return Observation(status=bytes(io.bufs["status"]), stdout=bytes(io.bufs["out"]),
                       stderr=bytes(io.bufs["err"]), returncode=proc.returncode,
                       deadline=deadline_hit, output_overflow=overflow, wall_time=wall)
