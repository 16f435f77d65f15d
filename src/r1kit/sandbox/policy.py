"""Two declarations about running model-written code, read by the trainer and the code reward.

* :func:`requires_sandbox` marks a reward function as one that runs untrusted code, so the trainer
  checks for a working sandbox before training (:func:`needs_sandbox` reads the mark). Built-in
  ``code`` rewards carry it; a user's own reward can too::

      @requires_sandbox
      def my_reward(prompts, completions, **columns): ...

* :func:`sandbox_policy` is the run's opt-out: inside ``with sandbox_policy(allow_unsandboxed=True):``
  rewards that were not told otherwise accept rlimits-only isolation when bubblewrap does not work.
  It is a context variable: it ends (the previous value comes back) when the ``with`` block does,
  it is per thread / task, and a reward worker process gets it explicitly with each batch
  (``r1kit.rewards._worker``). Outside any scope it is False.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)

_allow_unsandboxed_var: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "r1kit_allow_unsandboxed", default=False)


def requires_sandbox(fn: F) -> F:
    """Decorator: declare that ``fn`` runs model-written code (sets ``fn.requires_sandbox``)."""
    fn.requires_sandbox = True
    return fn


def needs_sandbox(fn) -> bool:
    """Does this reward declare that it runs untrusted code? Looks through ``functools.partial``
    and ``functools.wraps`` wrappers."""
    seen = 0
    while fn is not None and seen < 16:
        if getattr(fn, "requires_sandbox", False) is True:
            return True
        fn = getattr(fn, "func", None) or getattr(fn, "__wrapped__", None)
        seen += 1
    return False


def unsandboxed_allowed() -> bool:
    """The current scope's setting (False outside any :func:`sandbox_policy`)."""
    return _allow_unsandboxed_var.get()


@contextlib.contextmanager
def sandbox_policy(allow_unsandboxed: bool) -> Iterator[None]:
    """``with sandbox_policy(allow_unsandboxed=cfg.allow_unsandboxed):`` around a run; the previous
    setting is restored when the block ends, even on an exception."""
    token = _allow_unsandboxed_var.set(bool(allow_unsandboxed))
    try:
        yield
    finally:
        _allow_unsandboxed_var.reset(token)
