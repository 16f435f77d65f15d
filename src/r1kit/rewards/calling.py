"""How r1kit calls a reward function: TRL's ``GRPOTrainer`` convention, keywords only.

    fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=..., log_metric=...,
       **dataset_columns) -> list[float | None]

So ``def f(completions, **kwargs)``, ``def f(completions, solution, **kwargs)``, ``def f(*, prompts,
completions, **kwargs)`` and open-r1's ``def f(completions, num_parallel=2, **kwargs)`` all receive what
their parameter names say. Dataset columns named like one of those arguments (or ``prompt`` /
``completion``, which TRL leaves out too) are not passed.

* ``trainer_state``: a :class:`TrainerState` (the fields of ``transformers.TrainerState`` that r1kit
  knows: ``global_step``, ``max_steps``, ``epoch``...), for shaping a reward over training.
* ``log_metric(name, value)``: a scalar for this step's metrics (the mean of the step's values per name).
* ``log_extra(column, values)``: one value per completion, a column of the completions log.
* ``async def`` functions (or callables returning an awaitable) are awaited; the awaitables of one batch
  run concurrently on one event loop kept in a daemon thread for the process's life (as TRL does, so a
  client created on that loop stays usable across steps), in the caller's context variables (the
  run's sandbox policy included).

This module imports nothing heavy: the reward worker process uses it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any

# the arguments r1kit supplies itself; a dataset column of one of these names is not passed
RESERVED = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
DROPPED_COLUMNS = ("prompt", "completion")  # TRL does not pass these dataset columns either


@dataclass
class TrainerState:
    """The ``trainer_state`` a reward function receives: the fields of ``transformers.TrainerState``
    that r1kit knows. ``global_step``: optimizer updates done before this batch was scored (0 while
    scoring the first step's completions); ``max_steps``: the run's optimizer updates in all;
    ``epoch``: passes over the training prompts so far (fractional)."""

    global_step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    num_train_epochs: float = 0.0
    num_input_tokens_seen: int = 0
    is_world_process_zero: bool = True
    is_local_process_zero: bool = True


class RewardLog:
    """What one call of one reward function logged: ``metrics`` {name: [values]} from ``log_metric``,
    ``extra`` {column: [values]} from ``log_extra``, and ``problems`` (unusable calls, for a warning).
    Picklable: the reward worker sends it back with the rewards."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = {}
        self.extra: dict[str, list] = {}
        self.problems: list[str] = []

    def log_metric(self, name: str, value: float) -> None:
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()  # 0-d tensors / numpy scalars
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            self.problems.append(f"log_metric({name!r}, {value!r:.40}): not a finite number, dropped")
            return
        self.metrics.setdefault(str(name), []).append(float(value))

    def log_extra(self, column: str, values) -> None:
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            self.problems.append(f"log_extra({column!r}, ...): values must be a list (one per completion), dropped")
            return
        self.extra.setdefault(str(column), []).extend(list(values))

    def merge(self, other: "RewardLog") -> None:
        """Add `other`'s metric values and problems (extra columns are placed by the caller)."""
        for name, values in other.metrics.items():
            self.metrics.setdefault(name, []).extend(values)
        self.problems += other.problems


def passed_columns(columns: dict) -> tuple[dict, list[str]]:
    """(the dataset columns passed as keywords, the names left out because r1kit supplies them)."""
    kept = {k: v for k, v in columns.items() if k not in RESERVED and k not in DROPPED_COLUMNS}
    left_out = [k for k in columns if k in RESERVED and k != "completion_ids"]  # completion_ids: r1kit's own
    return kept, left_out


def reward_kwargs(prompts, completions, columns: dict, trainer_state, log: RewardLog) -> dict:
    """The keyword arguments of one call (``columns["completion_ids"]`` becomes ``completion_ids``)."""
    kept, _ = passed_columns(columns)
    return {"prompts": prompts, "completions": completions, "completion_ids": columns.get("completion_ids"),
            "trainer_state": trainer_state if trainer_state is not None else TrainerState(),
            "log_extra": log.log_extra, "log_metric": log.log_metric, **kept}


# ---- async reward functions ------------------------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _event_loop() -> asyncio.AbstractEventLoop:
    """The process's reward event loop, running in a daemon thread (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True, name="r1kit-reward-loop").start()
            _loop = loop
        return _loop


async def _settle(awaitable) -> tuple[bool, Any]:
    try:
        return True, await awaitable
    except Exception as exc:  # noqa: BLE001 - reported as that function's failure
        return False, exc


def await_all(awaitables: list) -> list[tuple[bool, Any]]:
    """Await `awaitables` concurrently on the reward loop, in the caller's context variables:
    [(True, result) | (False, exception)] in order."""
    if not awaitables:
        return []
    done: concurrent.futures.Future = concurrent.futures.Future()

    async def gather():
        return await asyncio.gather(*(_settle(a) for a in awaitables))

    def finish(task: asyncio.Future) -> None:
        if task.cancelled():
            done.set_exception(asyncio.CancelledError())
        elif task.exception() is not None:
            done.set_exception(task.exception())
        else:
            done.set_result(task.result())

    def start():  # runs in the caller's context, so the task (which copies it) does too
        asyncio.ensure_future(gather()).add_done_callback(finish)

    _event_loop().call_soon_threadsafe(start, context=contextvars.copy_context())
    return done.result()


def resolve(out):
    """A call's result, awaited when it is awaitable (raises what the awaitable raised)."""
    if inspect.isawaitable(out):
        ok, value = await_all([out])[0]
        if not ok:
            raise value
        return value
    return out
