"""How many CPU threads torch uses, re-chosen at every step from the cores other processes leave free.

Why: torch's CPU kernels split each op over its threads and wait for all of them at the op's end. With
as many threads as cores and one other busy process, one of our threads is regularly descheduled and
every op waits a scheduler time slice for it: on the 2-core machine a rollout that ran at 7,057 tokens/s
on one thread fell to 280 tokens/s on two next to `python -c "while True: pass"`. Using the cores that
are free avoids the wait: with one busy neighbour, one thread on the free core.

`CpuThreads.adapt()` (called by the trainer skeleton before each step) measures, since its previous call,
the CPU time the machine's processes used on the cores this process may run on (`/proc/stat`) minus
this process's own and its children's (`/proc/self/stat`, live descendants from `/proc/*/stat`), and
sets ``torch.set_num_threads(free cores)``: cores minus the others' use rounded half up, at least 1 and
at most ``max_threads``. On an idle machine that is every core (torch's default, unchanged speed); when
the neighbour stops, the next step takes the core back. Without `/proc` (not Linux) nothing changes.
"""

from __future__ import annotations

import logging
import os
import time

import torch

log = logging.getLogger("r1kit.threads")

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MIN_WINDOW_S = 0.2  # shorter windows (a few 10 ms clock ticks) are too coarse: keep the last decision


def _cores() -> list[int]:
    """The CPU ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _busy_ticks(cores: list[int]) -> int | None:
    """Busy clock ticks (everything but idle and iowait) summed over `cores`, from /proc/stat."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    want, total = {f"cpu{c}" for c in cores}, 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in want:
            v = [int(x) for x in parts[1:]]
            total += sum(v[:8]) - v[3] - v[4]  # user nice system idle iowait irq softirq steal
    return total


def _proc_ticks(pid: str | int) -> tuple[int, int, int] | None:
    """(utime + stime, cutime + cstime, parent pid) of a process, from /proc/PID/stat."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = text[text.rindex(")") + 2:].split()  # fields from the 3rd on (the name may hold spaces)
    return int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[1])


def _own_ticks() -> int:
    """CPU ticks used by this process, its finished children and its live descendants."""
    me = _proc_ticks("self")
    if me is None:
        return 0
    total = me[0] + me[1]
    children: dict[int, list[tuple[int, int]]] = {}  # parent pid -> [(pid, ticks)]
    for name in os.listdir("/proc"):
        if name.isdigit():
            t = _proc_ticks(name)
            if t is not None:
                children.setdefault(t[2], []).append((int(name), t[0]))
    todo = [os.getpid()]
    while todo:
        for pid, ticks in children.get(todo.pop(), []):
            total += ticks
            todo.append(pid)
    return total


class CpuThreads:
    """torch's CPU thread count, adapted to the free cores at each `adapt()` call (`fixed` > 0: always that)."""

    def __init__(self, fixed: int = 0, max_threads: int | None = None):
        self.cores = _cores()
        self.fixed = fixed
        self.initial = torch.get_num_threads()  # the user's (or torch's default) setting, restored at the end
        self.max_threads = max_threads or min(len(self.cores), self.initial)
        self._last = None
        if fixed > 0:
            torch.set_num_threads(fixed)
        elif _busy_ticks(self.cores) is None:
            self.fixed = torch.get_num_threads()  # no /proc: keep torch's choice
        else:
            self._last = self._sample()  # the first window: from here (model loading, ...) to the first step

    def _sample(self) -> tuple[float, int, int]:
        return time.monotonic(), _busy_ticks(self.cores) or 0, _own_ticks()

    def others_busy(self) -> float | None:
        """Cores' worth of CPU that other processes used since the window started (then a new window starts);
        None while the window is too short to tell (it goes on)."""
        now = self._sample()
        t0, busy0, own0 = self._last
        elapsed = now[0] - t0
        if elapsed < _MIN_WINDOW_S:
            return None
        self._last = now
        return max(0.0, ((now[1] - busy0) - (now[2] - own0)) / _HZ / elapsed)

    def adapt(self) -> int:
        """Set and return the thread count for the next stretch of work."""
        if self.fixed > 0:
            n = self.fixed
        elif (others := self.others_busy()) is None:
            n = torch.get_num_threads()
        else:
            n = max(1, min(self.max_threads, len(self.cores) - int(others + 0.5)))
            if n != torch.get_num_threads():
                log.info("CPU threads %d -> %d (other processes busy on %.1f of %d cores)",
                         torch.get_num_threads(), n, others, len(self.cores))
                torch.set_num_threads(n)
        return n

    def restore(self) -> None:
        """Back to the thread count this process had before (the next run starts from the user's setting)."""
        torch.set_num_threads(self.initial)
