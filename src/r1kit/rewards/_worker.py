"""A killable worker process for reward deadlines (``score_completions(timeout_s=...)``).

One long-lived worker, started with the ``spawn`` start method (no state inherited from the
trainer: CUDA, threads, locks) and reused across calls; a call that passes its deadline gets the
worker killed and the next call starts a new one. The function and its arguments are pickled
here, so the function must be importable by reference (a module-level function, a registered
reward, an import path, or an instance of a module-level class) and the training script must
guard its entry point with ``if __name__ == "__main__":`` (``spawn`` re-imports ``__main__``).

This module imports nothing heavy, so the worker starts fast; the deadline covers only the call
itself, not the worker's start nor the import of the function's module.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import pickle
import threading
import traceback

STARTUP_TIMEOUT_S = 120.0  # start-up and import of the function's module (not the deadline)


def _error_text(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else repr(exc)


def _serve(conn) -> None:
    """Worker main loop: ("load", fn_bytes) → remember fn; ("call", args_bytes) → run it."""
    fn = None
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
                fn = pickle.loads(payload)
                reply = ("ok", None)
            else:
                prompts, completions, columns = pickle.loads(payload)
                out = fn(prompts, completions, **columns)
                if hasattr(out, "tolist"):
                    out = out.tolist()
                reply = ("ok", out if isinstance(out, list) else (list(out) if out is not None else None))
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
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="r1kit-reward-worker")
        self.proc.start()
        child.close()
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError("reward worker did not start")
        self.conn.recv()  # ("ready", None)

    def _reply(self, wait_s: float):
        if not self.conn.poll(wait_s):
            return None
        return pickle.loads(self.conn.recv_bytes())

    def kill(self) -> None:
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


_lock = threading.Lock()
_worker: _Worker | None = None


def run_with_deadline(fn, prompts, completions, columns: dict, timeout_s: float):
    """Run ``fn(prompts, completions, **columns)`` in the worker.

    Returns ``("ok", values)``, ``("err", reason)`` or ``("timeout", None)``; never raises for a
    failing function (a worker that dies or times out is killed and replaced on the next call).
    """
    global _worker
    try:
        fn_bytes = pickle.dumps(fn)
        args_bytes = pickle.dumps((prompts, completions, dict(columns)))
    except Exception as exc:
        return "err", f"cannot be sent to the worker process (not picklable): {_error_text(exc)}"
    with _lock:
        try:
            if _worker is None or not _worker.proc.is_alive():
                _worker = _Worker()
            _worker.conn.send(("load", fn_bytes))
            reply = _worker._reply(STARTUP_TIMEOUT_S)
            if reply is None or reply[0] != "ok":
                reason = "loading it in the worker timed out" if reply is None else reply[1]
                if reply is None:
                    _worker.kill()
                    _worker = None
                return "err", f"could not be loaded in the worker: {reason}"
            _worker.conn.send(("call", args_bytes))
            reply = _worker._reply(timeout_s)
            if reply is None:
                _worker.kill()
                _worker = None
                return "timeout", None
            return reply
        except (EOFError, OSError, RuntimeError, pickle.PickleError) as exc:
            if _worker is not None:
                _worker.kill()
                _worker = None
            return "err", f"worker process failed: {_error_text(exc)}"


def shutdown() -> None:
    """Stop the worker (also registered with ``atexit``)."""
    global _worker
    with _lock:
        if _worker is not None:
            _worker.stop()
            _worker = None


atexit.register(shutdown)
