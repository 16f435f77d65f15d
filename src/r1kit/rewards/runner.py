"""Score a batch of completions with several reward functions; never raises for a bad function.

A function that raises, returns the wrong number of values, or returns non-numbers / NaN / inf
gets its bad values turned into ``None`` (NaN in the tensor), ``errors[name]`` raised by the
number of rows lost, and one warning on the ``r1kit.rewards`` logger naming the function, the
first offending row and the reason. With ``timeout_s`` the deadline is per row: see
:func:`score_completions`; a row that passes it is lost alone, with one warning naming it.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from r1kit.rewards.registry import get_reward, reward_name

logger = logging.getLogger("r1kit.rewards")

MAX_ROW_TIMEOUTS = 3  # rows of one batch that may pass their deadline before the rest is given up


@dataclass
class RewardBatch:
    per_func: torch.Tensor  # [N, F] float32, NaN where a function could not score a row
    total: torch.Tensor  # [N] Σ_f w_f·r_f over the functions that scored the row; NaN if none did
    names: list[str]
    errors: dict[str, int] = field(default_factory=dict)  # rows lost to errors, per function

    def concat(self, other: "RewardBatch") -> "RewardBatch":
        """Rows of `self` then rows of `other` (same functions); error counts add up."""
        errors = {k: self.errors.get(k, 0) + other.errors.get(k, 0) for k in {**self.errors, **other.errors}}
        return RewardBatch(torch.cat([self.per_func, other.per_func]), torch.cat([self.total, other.total]),
                           self.names, errors)

    def select(self, idx: Sequence[int]) -> "RewardBatch":
        """The rows `idx`, in that order (error counts are kept whole: they describe the scoring)."""
        index = torch.as_tensor(list(idx), dtype=torch.long)  # [n]
        return RewardBatch(self.per_func[index], self.total[index], self.names, dict(self.errors))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def reward_names(funcs: Sequence[Callable | str]) -> list[str]:
    """The names `score_completions` reports `funcs` under by default: `registry.reward_name` of each
    (``rm:PATH?segment=full`` -> ``rm_full``), duplicates numbered ``_2``, ``_3``..."""
    return _unique([reward_name(f) for f in funcs])


def _as_float(value: Any) -> tuple[float, str | None]:
    """(value, None) for a usable number or ``None`` (→ NaN); (nan, reason) for a bad one."""
    if value is None:
        return math.nan, None
    if isinstance(value, (str, bytes)):
        return math.nan, f"non-number {value!r:.60}"
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # 0-d tensors / numpy scalars
    if not isinstance(value, numbers.Real):
        return math.nan, f"non-number of type {type(value).__name__}"
    x = float(value)
    if not math.isfinite(x):
        return math.nan, f"non-finite value {x}"
    return x, None


def _check(name: str, out: Any, n: int) -> tuple[list[float], int, str | None]:
    """Validate one function's output → (n floats with NaN, rows lost, log message or None)."""
    if hasattr(out, "tolist") and not isinstance(out, (list, tuple)):
        out = out.tolist()
    if out is None or isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__"):
        return [math.nan] * n, n, f"reward {name!r} returned {type(out).__name__}, not a list (row 0)"
    if len(out) != n:
        return [math.nan] * n, n, f"reward {name!r} returned {len(out)} values for {n} completions (row 0)"
    values, bad, first = [], 0, None
    for i, v in enumerate(out):
        x, reason = _as_float(v)
        if reason is not None:
            bad += 1
            if first is None:
                first = f"reward {name!r}: row {i}: {reason}"
        values.append(x)
    if bad:
        first += f" ({bad} of {n} rows unusable)"
    return values, bad, first


def _score_in_process(fn, name: str, prompts, completions, columns: dict) -> tuple[list[float], int, list[str]]:
    """(n floats with NaN, rows lost, warnings) of one function called here on the whole batch."""
    n = len(completions)
    try:
        out = fn(prompts, completions, **columns)
    except Exception as exc:
        return [math.nan] * n, n, [f"reward {name!r} raised {type(exc).__name__}: {exc} (row 0; whole batch of {n})"]
    values, bad, message = _check(name, out, n)
    return values, bad, [message] if message is not None else []


def _score_in_worker(fn, name: str, prompts, completions, columns: dict, timeout_s: float, batch_deadline_s: float,
                     max_row_timeouts: int) -> tuple[list[float], int, list[str]]:
    """(n floats with NaN, rows lost, warnings) of one function run in the killable worker: the
    whole batch under ``batch_deadline_s``; if it passes that (or kills its worker), row by row."""
    from r1kit.rewards._worker import NotPicklable, session

    n = len(completions)
    whole = f"(row 0; whole batch of {n})"
    try:
        with session(fn, prompts, completions, columns) as s:
            kind, payload = s.call(batch_deadline_s)
            if kind == "ok":
                values, bad, message = _check(name, payload, n)
                return values, bad, [message] if message is not None else []
            if kind in ("err", "broken"):
                return [math.nan] * n, n, [f"reward {name!r} failed in the worker: {payload} {whole}"]
            why = (f"passed its batch deadline of {batch_deadline_s:g} s" if kind == "timeout" else payload)
            logger.info("reward %r: %s (%d rows); worker killed, scoring the rows one at a time", name, why, n)
            return _score_rows(s, name, n, timeout_s, max_row_timeouts)
    except NotPicklable as exc:
        return [math.nan] * n, n, [f"reward {name!r} {exc} {whole}"]


def _score_rows(s, name: str, n: int, timeout_s: float, max_row_timeouts: int) -> tuple[list[float], int, list[str]]:
    """Isolation: each row alone in the worker under ``timeout_s``. A row that passes its deadline or
    kills the worker → NaN and one warning naming it (the worker is restarted for the next row);
    after ``max_row_timeouts`` of those the remaining rows are given up (one warning). Other bad
    rows (raised, not one value, non-number / NaN / inf) → NaN and one summary warning."""
    values, lost, messages = [math.nan] * n, 0, []
    hung, bad, first_bad = 0, 0, None
    for i in range(n):
        if hung >= max(max_row_timeouts, 0):
            rest = n - i
            lost += rest
            messages.append(f"reward {name!r}: rows {i}..{n - 1} not scored ({rest} rows): gave up after "
                            f"{hung} rows passed their {timeout_s:g} s deadline or killed the worker")
            break
        kind, payload = s.call(timeout_s, row=i)
        reason = None
        if kind == "broken":  # no worker to run the rest in: give it up rather than retry each row
            lost += n - i
            messages.append(f"reward {name!r}: rows {i}..{n - 1} not scored ({n - i} rows): {payload}")
            break
        if kind in ("timeout", "died"):
            hung += 1
            lost += 1
            messages.append(f"reward {name!r}: row {i}: passed its {timeout_s:g} s deadline; worker killed"
                            if kind == "timeout" else f"reward {name!r}: row {i}: {payload}")
            continue
        if kind == "err":
            reason = f"raised {payload}"
        elif payload is None or len(payload) != 1:
            reason = f"returned {'None' if payload is None else len(payload)} values for 1 completion"
        else:
            values[i], reason = _as_float(payload[0])
        if reason is not None:
            values[i] = math.nan
            bad += 1
            lost += 1
            first_bad = first_bad or f"reward {name!r}: row {i}: {reason}"
    if bad:
        messages.append(f"{first_bad} ({bad} of {n} rows unusable, scored one at a time)")
    return values, lost, messages


def score_completions(
    funcs: Sequence[Callable | str],
    weights: Sequence[float] | None,
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    columns: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
    timeout_s: float | None = None,
    *,
    batch_timeout_s: float | None = None,
    max_row_timeouts: int = MAX_ROW_TIMEOUTS,
) -> RewardBatch:
    """Call each reward ``fn(prompts, completions, **columns)`` and collect a :class:`RewardBatch`.

    ``funcs``: callables, registry names or import paths (resolved with ``get_reward``; an
    unknown name is a configuration error and raises ``ValueError``). ``weights``: one per
    function (``None`` = all 1.0). ``names`` default to the names given / the functions'
    ``__name__`` (duplicates get ``_2``, ``_3``…).

    ``timeout_s``: when set, a per-row deadline, each function running in a separate worker
    process (``spawn``) that is killed when it passes it. The whole batch is tried first under
    ``batch_timeout_s`` (default ``timeout_s`` × rows, so a function within its per-row budget is
    never killed); if that passes (or the worker dies), the rows are scored one at a time, each
    under ``timeout_s``, in a fresh worker: a row that passes its deadline becomes ``None`` (one
    warning naming the function and the row; the worker is killed and restarted for the next row).
    After ``max_row_timeouts`` such rows the rest of the batch is given up (``None``, one warning),
    so a function that hangs on every row costs about ``batch_timeout_s + max_row_timeouts ×
    timeout_s`` plus worker restarts, not rows × ``timeout_s``. A function that raises on the whole
    batch loses the whole batch, as in-process. On this path the functions and the batch must be
    picklable: registered rewards, import paths, module-level functions and instances of
    module-level classes are; lambdas and closures are not (they are reported as errors). ``None``
    (default): called in-process, no deadline.
    """
    funcs = list(funcs)
    fns = [get_reward(f) for f in funcs]
    n_f, n = len(fns), len(completions)
    weights = [1.0] * n_f if weights is None else [float(w) for w in weights]
    if len(weights) != n_f:
        raise ValueError(f"{len(weights)} weights for {n_f} reward functions")
    names = _unique(list(names)) if names is not None else reward_names(funcs)
    if len(names) != n_f:
        raise ValueError(f"{len(names)} names for {n_f} reward functions")
    columns = dict(columns or {})

    per_func = torch.full((n, n_f), math.nan, dtype=torch.float32)
    errors = {name: 0 for name in names}
    for f, (fn, name) in enumerate(zip(fns, names)):
        if timeout_s is None:
            values, lost, messages = _score_in_process(fn, name, prompts, completions, columns)
        else:
            deadline = batch_timeout_s if batch_timeout_s is not None else timeout_s * max(n, 1)
            values, lost, messages = _score_in_worker(fn, name, prompts, completions, columns, float(timeout_s),
                                                      float(deadline), max_row_timeouts)
        errors[name] += lost
        for message in messages:
            logger.warning(message)
        if n:
            per_func[:, f] = torch.tensor(values, dtype=torch.float32)

    w = torch.tensor(weights, dtype=torch.float32)
    scored = ~torch.isnan(per_func)
    total = (torch.nan_to_num(per_func, nan=0.0) * w).sum(dim=1)
    total[~scored.any(dim=1)] = math.nan
    return RewardBatch(per_func=per_func, total=total, names=names, errors=errors)


def _mean_std(x: torch.Tensor) -> tuple[float, float] | None:
    x = x[~torch.isnan(x)]
    if x.numel() == 0:
        return None
    return x.mean().item(), (x.std().item() if x.numel() > 1 else 0.0)


def reward_metrics(batch: RewardBatch) -> dict[str, float]:
    """TRL-named metrics: ``rewards/<name>/mean``, ``rewards/<name>/std`` (over the rows the
    function scored; a function that scored no row is omitted, never NaN), ``reward`` and
    ``reward_std`` (of ``total`` over the rows with a total; omitted when no row has one).
    Standard deviations are unbiased (as ``torch.std``), 0.0 for a single value."""
    metrics: dict[str, float] = {}
    for f, name in enumerate(batch.names):
        stats = _mean_std(batch.per_func[:, f])
        if stats is not None:
            metrics[f"rewards/{name}/mean"], metrics[f"rewards/{name}/std"] = stats
    stats = _mean_std(batch.total)
    if stats is not None:
        metrics["reward"], metrics["reward_std"] = stats
    return metrics
