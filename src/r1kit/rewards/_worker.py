"""A killable worker process for reward deadlines (``score_completions(timeout_s=...)``).

One long-lived worker, started with the ``spawn`` start method (no state inherited from the
trainer: CUDA, threads, locks) and reused across calls while it behaves; a call that passes its
deadline, or a worker that dies, gets the worker (and its process group: anything the reward
started) killed and reaped, and the next call starts a new one. The function and its arguments are
pickled here, so the function must be importable by reference (a module-level function, a
registered reward, an import path, or an instance of a module-level class) and the training script
must guard its entry point with ``if __name__ == "__main__":`` (``spawn`` re-imports ``__main__``).

A :func:`session` loads one function and one batch into the worker once; its calls then run the
whole batch or a single row of it (``row=i``: every per-row argument sliced to ``[i:i+1]``), each
under its own deadline. After a restart the session reloads the new worker by itself.

The run's sandbox policy (``r1kit.sandbox.sandbox_policy``: may code rewards run without
bubblewrap?) is a context variable of the trainer, which a separate process cannot see: the
session reads it when it is opened and sends it with the batch, and the worker runs each call of
that batch inside the same policy (and nothing else: the next batch brings its own).

This module imports nothing heavy, so the worker starts fast; the deadline covers only the call
itself, not the worker's start nor the import of the function's module. The worker runs in its own
process group with one torch/OpenMP thread (it shares the trainer's cores), and exits when the
trainer does, even mid-call (a watchdog thread notices the new parent).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import traceback

from r1kit.rewards.calling import RewardLog, resolve, reward_kwargs
from r1kit.sandbox.policy import sandbox_policy, unsandboxed_allowed

STARTUP_TIMEOUT_S = 120.0  # start-up and import of the function's module (not the deadline)
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _error_text(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else repr(exc)


def row_args(prompts, completions, columns: dict, n: int, i: int):
    """``(prompts, completions, columns)`` of row ``i`` alone: every argument holding one value per
    row (a sequence of length ``n``, not a string or a dict) is sliced to ``[i:i+1]``; others (None,
    per-batch settings) are passed as they are."""

    def cut(v):
        if v is None or isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__") or not hasattr(v, "__getitem__"):
            return v
        try:
            return v[i:i + 1] if len(v) == n else v
        except TypeError:
            return v

    return cut(prompts), cut(completions), {k: cut(v) for k, v in columns.items()}


def _one_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _watch_parent(parent: int) -> None:
    """Kill this worker's process group once the trainer is gone (even if a call never returns)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            with contextlib.suppress(OSError):
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os._exit(1)


def _serve(conn, parent: int) -> None:
    """Worker main loop: ("load", (fn_bytes, args_bytes, allow_unsandboxed)) → remember them;
    ("call", row) → call the function as TRL does (``r1kit.rewards.calling``) on the whole batch
    (row None) or row ``row``, under that sandbox policy, awaiting an async one; reply
    ("ok", (values, RewardLog)). Every message gets one reply."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: a kill reaches whatever the reward started
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="r1kit-parent-watch").start()
    fn = args = None
    allow_unsandboxed = False
    conn.send(("ready", None))
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if kind == "stop":
            return
        try:
            if kind == "load":
                fn_bytes, args_bytes, allow_unsandboxed = payload
                fn, args = pickle.loads(fn_bytes), pickle.loads(args_bytes)
                _one_thread()
                reply = ("ok", None)
            else:
                prompts, completions, columns, trainer_state = args
                if payload is not None:
                    prompts, completions, columns = row_args(prompts, completions, columns, len(completions), payload)
                log = RewardLog()
                with sandbox_policy(allow_unsandboxed):
                    out = resolve(fn(**reward_kwargs(prompts, completions, columns, trainer_state, log)))
                _one_thread()
                if hasattr(out, "tolist"):
                    out = out.tolist()
                out = out if isinstance(out, list) else (list(out) if out is not None else None)
                reply = ("ok", (out, log))
            data = pickle.dumps(reply)
        except Exception as exc:
            data = pickle.dumps(("err", _error_text(exc)))
        try:
            conn.send_bytes(data)
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, os.getpid()), daemon=True, name="r1kit-reward-worker")
        self.proc.start()
        child.close()
        self.loaded = None  # the session whose function and batch the worker holds
        try:
            ready = self.conn.poll(STARTUP_TIMEOUT_S) and self.conn.recv()
        except (EOFError, OSError):
            ready = None
        if not ready:
            self.kill()
            raise RuntimeError("reward worker did not start")

    def reply(self, wait_s: float):
        """The next reply; None when none came within ``wait_s``. EOFError when the worker died."""
        if not self.conn.poll(max(wait_s, 0.0)):
            return None
        return pickle.loads(self.conn.recv_bytes())

    def kill(self) -> None:
        """Kill the worker and its process group; reap it."""
        pid = self.proc.pid
        if pid is not None:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:  # the group is the worker's own (not ours: set at start-up)
                    os.killpg(pid, signal.SIGKILL)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(("stop", None))
            self.proc.join(2)
        except (OSError, ValueError):
            pass
        self.kill()


_lock = threading.RLock()
_worker: _Worker | None = None


def _drop_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker = None


class NotPicklable(Exception):
    """The function or the batch cannot be sent to the worker process."""


class Session:
    """One function and one batch in the worker; see :func:`session`."""

    def __init__(self, fn_bytes: bytes, args_bytes: bytes, allow_unsandboxed: bool = False):
        self._load = ("load", (fn_bytes, args_bytes, bool(allow_unsandboxed)))
        self.restarts = 0  # workers started for this session after a kill

    def call(self, deadline_s: float, row: int | None = None):
        """Run the whole batch (``row=None``) or one row under ``deadline_s`` seconds.

        Returns ``("ok", (values, RewardLog))``, ``("err", reason)`` (the function raised), ``("broken", reason)``
        (the worker could not start or load the function), ``("timeout", None)`` (worker killed) or
        ``("died", reason)`` (the worker exited during the call); never raises for a failing function.
        """
        global _worker
        try:
            if _worker is None or not _worker.proc.is_alive():
                _drop_worker()
                _worker = _Worker()
            if _worker.loaded is not self:
                _worker.conn.send(self._load)
                reply = _worker.reply(STARTUP_TIMEOUT_S)
                if reply is None or reply[0] != "ok":
                    if reply is None:
                        _drop_worker()
                    return "broken", f"could not be loaded in the worker: {'loading it timed out' if reply is None else reply[1]}"
                _worker.loaded = self
            _worker.conn.send(("call", row))
            reply = _worker.reply(deadline_s)
            if reply is None:
                _drop_worker()
                self.restarts += 1
                return "timeout", None
            return reply
        except (EOFError, OSError) as exc:  # the worker died: a crash of the function, or killed
            code = None
            if _worker is not None:
                _worker.proc.join(1)  # it is exiting: let it finish, to report its exit code
                code = _worker.proc.exitcode
            _drop_worker()
            self.restarts += 1
            return "died", (f"worker process died (exit code {code})" if code is not None
                           else f"worker process died: {_error_text(exc)}")
        except (RuntimeError, pickle.PickleError) as exc:
            _drop_worker()
            return "broken", f"worker process failed: {_error_text(exc)}"


@contextlib.contextmanager
def session(fn, prompts, completions, columns: dict, trainer_state=None):
    """Hold the worker for one function and one batch: ``with session(...) as s: s.call(deadline)``.
    ``s.call`` returns ``("ok", (values, RewardLog))`` when the function returned.

    Raises :class:`NotPicklable` (before taking the worker) when the function or batch cannot be
    pickled. Calls from several threads are serialised (one worker).
    """
    try:
        fn_bytes = pickle.dumps(fn)
        args_bytes = pickle.dumps((prompts, list(completions), dict(columns), trainer_state))
    except Exception as exc:
        raise NotPicklable(f"cannot be sent to the worker process (not picklable): {_error_text(exc)}") from exc
    with _lock:
        yield Session(fn_bytes, args_bytes, unsandboxed_allowed())


def worker_pid() -> int | None:
    """The pid of the idle worker kept for the next call, if any (for tests and diagnostics)."""
    with _lock:
        return _worker.proc.pid if _worker is not None and _worker.proc.is_alive() else None


def shutdown() -> None:
    """Stop the worker (also registered with ``atexit``)."""
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None


atexit.register(shutdown)
