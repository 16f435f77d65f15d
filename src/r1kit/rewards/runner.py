"""Score a batch of completions with several reward functions; never raises for a bad function.

Every function is called as TRL's ``GRPOTrainer`` calls it, keywords only (see ``r1kit.rewards.calling``):
``fn(prompts=, completions=, completion_ids=, trainer_state=, log_extra=, log_metric=, **columns)``;
``async`` functions are awaited, those of one batch concurrently.

A function that raises, returns the wrong number of values, or returns non-numbers / NaN / inf
gets its bad values turned into ``None`` (NaN in the tensor), ``errors[name]`` raised by the
number of rows lost, and one warning on the ``r1kit.rewards`` logger naming the function, the
first offending row and the reason. With ``timeout_s`` the deadline is per row: see
:func:`score_completions`; a row that passes it is lost alone, with one warning naming it. Rows no
function scored (all returned ``None``) get one warning per batch: they get no reward, so they do
not train.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from r1kit.rewards.calling import RewardLog, await_all, passed_columns, reward_kwargs
from r1kit.rewards.registry import get_reward, reward_name

logger = logging.getLogger("r1kit.rewards")

MAX_ROW_TIMEOUTS = 3  # rows of one batch that may pass their deadline before the rest is given up


@dataclass
class RewardBatch:
    per_func: torch.Tensor  # [N, F] float32, NaN where a function could not score a row
    total: torch.Tensor  # [N] Σ_f w_f·r_f over the functions that scored the row; NaN if none did
    names: list[str]
    errors: dict[str, int] = field(default_factory=dict)  # rows lost to errors, per function
    metric_values: dict[str, list[float]] = field(default_factory=dict)  # log_metric(name, value) calls
    extra: dict[str, list] = field(default_factory=dict)  # log_extra(column, values): one value per row  {col: [N]}

    @property
    def logged(self) -> dict[str, float]:
        """The functions' ``log_metric`` values: the mean per name."""
        return {k: sum(v) / len(v) for k, v in self.metric_values.items() if v}

    @property
    def unscored(self) -> int:
        """Rows no function scored (their total is NaN: no reward, advantage 0)."""
        return int(torch.isnan(self.total).sum())

    def concat(self, other: "RewardBatch") -> "RewardBatch":
        """Rows of `self` then rows of `other` (same functions); error counts and logged metric
        values add up; an extra column one side lacks is None on its rows."""
        errors = {k: self.errors.get(k, 0) + other.errors.get(k, 0) for k in {**self.errors, **other.errors}}
        values = {k: self.metric_values.get(k, []) + other.metric_values.get(k, [])
                  for k in {**self.metric_values, **other.metric_values}}
        n, m = len(self.total), len(other.total)
        extra = {k: self.extra.get(k, [None] * n) + other.extra.get(k, [None] * m)
                 for k in {**self.extra, **other.extra}}
        return RewardBatch(torch.cat([self.per_func, other.per_func]), torch.cat([self.total, other.total]),
                           self.names, errors, values, extra)

    def select(self, idx: Sequence[int]) -> "RewardBatch":
        """The rows `idx`, in that order (error counts and logged metric values are kept whole: they
        describe the scoring; extra columns are selected with the rows)."""
        idx = list(idx)
        index = torch.as_tensor(idx, dtype=torch.long)  # [n]
        return RewardBatch(self.per_func[index], self.total[index], self.names, dict(self.errors),
                           {k: list(v) for k, v in self.metric_values.items()},
                           {k: [v[i] for i in idx] for k, v in self.extra.items()})


@dataclass
class _Scored:
    """One function's part of a batch: n floats (NaN where not scored), rows lost, warnings, what it logged."""

    values: list[float]
    lost: int
    messages: list[str]
    log: RewardLog = field(default_factory=RewardLog)
    extra: dict[str, list] = field(default_factory=dict)  # {column: [n]}
    none: set[int] = field(default_factory=set)  # rows the function returned None for (not a failure)


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


def _check(name: str, out: Any, n: int) -> tuple[list[float], int, str | None, set[int]]:
    """Validate one function's output → (n floats with NaN, rows lost, log message or None, rows it
    returned None for)."""
    if hasattr(out, "tolist") and not isinstance(out, (list, tuple)):
        out = out.tolist()
    if out is None or isinstance(out, (str, bytes, dict)) or not hasattr(out, "__len__"):
        return [math.nan] * n, n, f"reward {name!r} returned {type(out).__name__}, not a list (row 0)", set()
    if len(out) != n:
        return [math.nan] * n, n, f"reward {name!r} returned {len(out)} values for {n} completions (row 0)", set()
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
    return values, bad, first, {i for i, v in enumerate(out) if v is None}


def _extra_columns(name: str, log: RewardLog, n: int) -> tuple[dict[str, list], list[str]]:
    """The ``log_extra`` columns of one whole-batch call, one value per row (a column of another
    length is cut, or padded with None, with a warning)."""
    out, messages = {}, []
    for col, values in log.extra.items():
        if len(values) != n:
            messages.append(f"reward {name!r}: log_extra({col!r}) got {len(values)} values for {n} completions "
                            f"({'cut' if len(values) > n else 'padded with None'})")
        out[col] = (list(values) + [None] * n)[:n]
    return out, messages


def _problems(name: str, log: RewardLog) -> list[str]:
    """One warning for a function's unusable ``log_metric`` / ``log_extra`` calls, if any."""
    unique = list(dict.fromkeys(log.problems))
    if not unique:
        return []
    more = f" (and {len(log.problems) - 1} more such calls)" if len(log.problems) > 1 else ""
    return [f"reward {name!r}: {unique[0]}{more}"]


def _finish(name: str, out: Any, log: RewardLog, n: int) -> _Scored:
    """A whole-batch call that returned `out`: its checked values and what it logged."""
    values, bad, message, none = _check(name, out, n)
    extra, messages = _extra_columns(name, log, n)
    return _Scored(values, bad, ([message] if message is not None else []) + _problems(name, log) + messages,
                   log, extra, none)


_KEYWORDS_HINT = ("; reward functions are called with keywords only, as TRL calls them: fn(prompts=, completions=, "
                  "completion_ids=, trainer_state=, log_extra=, log_metric=, **columns): name the parameters so, "
                  "and accept **kwargs")


def _failed(name: str, n: int, why: str) -> _Scored:
    """The whole batch lost (what the call logged is dropped with it). A TypeError (most often a
    signature that does not take TRL's keywords) gets a hint."""
    hint = _KEYWORDS_HINT if why.startswith(("raised TypeError", "failed in the worker: TypeError")) else ""
    return _Scored([math.nan] * n, n, [f"reward {name!r} {why}{hint} (row 0; whole batch of {n})"])


def _score_in_process(fns, names, prompts, completions, columns: dict, trainer_state) -> list[_Scored]:
    """Every function called here on the whole batch: in order, then every awaitable they returned
    (``async`` functions) awaited at once."""
    n = len(completions)
    results: list[_Scored | None] = []
    pending = []  # (function index, awaitable, its log)
    for f, (fn, name) in enumerate(zip(fns, names)):
        log = RewardLog()
        try:
            out = fn(**reward_kwargs(prompts, completions, columns, trainer_state, log))
        except Exception as exc:
            results.append(_failed(name, n, f"raised {type(exc).__name__}: {exc}"))
            continue
        if inspect.isawaitable(out):
            pending.append((f, out, log))
            results.append(None)
        else:
            results.append(_finish(name, out, log, n))
    for (f, _, log), (ok, out) in zip(pending, await_all([aw for _, aw, _ in pending])):
        results[f] = _finish(names[f], out, log, n) if ok else _failed(names[f], n,
                                                                        f"raised {type(out).__name__}: {out}")
    return results


def _score_in_worker(fn, name: str, prompts, completions, columns: dict, trainer_state, timeout_s: float,
                     batch_deadline_s: float, max_row_timeouts: int) -> _Scored:
    """One function run in the killable worker: the whole batch under ``batch_deadline_s``; if it
    passes that (or kills its worker), row by row."""
    from r1kit.rewards._worker import NotPicklable, session

    n = len(completions)
    try:
        with session(fn, prompts, completions, columns, trainer_state) as s:
            kind, payload = s.call(batch_deadline_s)
            if kind == "ok":
                out, log = payload
                return _finish(name, out, log, n)
            if kind in ("err", "broken"):
                return _failed(name, n, f"failed in the worker: {payload}")
            why = (f"passed its batch deadline of {batch_deadline_s:g} s" if kind == "timeout" else payload)
            logger.info("reward %r: %s (%d rows); worker killed, scoring the rows one at a time", name, why, n)
            return _score_rows(s, name, n, timeout_s, max_row_timeouts)
    except NotPicklable as exc:
        return _failed(name, n, str(exc))


def _score_rows(s, name: str, n: int, timeout_s: float, max_row_timeouts: int) -> _Scored:
    """Isolation: each row alone in the worker under ``timeout_s``. A row that passes its deadline or
    kills the worker → NaN and one warning naming it (the worker is restarted for the next row);
    after ``max_row_timeouts`` of those the remaining rows are given up (one warning). Other bad
    rows (raised, not one value, non-number / NaN / inf) → NaN and one summary warning. What the
    rows that returned logged is kept (``log_extra``: each row's one value in its place)."""
    values, lost, messages = [math.nan] * n, 0, []
    log, extra, none = RewardLog(), {}, set()
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
        else:
            out, row_log = payload
            log.merge(row_log)
            for col, vals in row_log.extra.items():
                extra.setdefault(col, [None] * n)[i] = vals[0] if len(vals) == 1 else None
                if len(vals) != 1:
                    log.problems.append(f"log_extra({col!r}) got {len(vals)} values for 1 completion")
            if out is None or len(out) != 1:
                reason = f"returned {'None' if out is None else len(out)} values for 1 completion"
            else:
                values[i], reason = _as_float(out[0])
                if out[0] is None:
                    none.add(i)
        if reason is not None:
            values[i] = math.nan
            bad += 1
            lost += 1
            first_bad = first_bad or f"reward {name!r}: row {i}: {reason}"
    if bad:
        messages.append(f"{first_bad} ({bad} of {n} rows unusable, scored one at a time)")
    return _Scored(values, lost, messages + _problems(name, log), log, extra, none)


_WARNED_COLUMNS: set[str] = set()


def _warn_left_out(columns: dict) -> None:
    """Once per column name: a dataset column named like an argument r1kit supplies is not passed."""
    _, left_out = passed_columns(columns)
    new = [k for k in left_out if k not in _WARNED_COLUMNS]
    if new:
        _WARNED_COLUMNS.update(new)
        logger.warning("dataset column(s) %s not passed to the reward functions: r1kit passes arguments of "
                       "those names itself (as TRL does); rename the column(s) to pass them", ", ".join(new))


def _warn_unscored(scored: list[_Scored], names: list[str], prompts, completions, columns: dict) -> None:
    """TRL's warning, once per batch: rows for which every function returned None (rows lost to
    failures have had their own warnings)."""
    n = len(completions)
    empty = [i for i in range(n) if scored and all(i in r.none for r in scored)]
    k = len(empty)
    if not k:
        return
    i = empty[0]
    row = {c: v[i] for c, v in columns.items()
           if c != "completion_ids" and isinstance(v, (list, tuple)) and len(v) == n}
    prompt = prompts[i] if prompts is not None and i < len(prompts) else None
    logger.warning("all reward functions (%s) returned None for %d of %d rows: those rows get no "
                   "reward, so their advantage is 0 and they do not train. First such row %d: prompt %.200r, "
                   "completion %.200r, columns %.300r. Make sure at least one reward function returns a number "
                   "for every row", ", ".join(names), k, n, i, prompt, completions[i], row)


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
    trainer_state: Any = None,
) -> RewardBatch:
    """Call each reward function as TRL does and collect a :class:`RewardBatch`:
    ``fn(prompts=prompts, completions=completions, completion_ids=columns.get("completion_ids"),
    trainer_state=trainer_state, log_extra=..., log_metric=..., **columns)`` (see
    ``r1kit.rewards.calling``). ``trainer_state``: what the functions receive as ``trainer_state``
    (default: a ``TrainerState()`` at step 0). What they log comes back on the batch:
    ``metric_values`` / ``logged`` (``log_metric``) and ``extra`` (``log_extra``, one value per row).
    ``async`` functions are awaited (in-process: all of the batch's at once).

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
    batch loses the whole batch, as in-process. On this path the functions, the batch and
    ``trainer_state`` must be picklable: registered rewards, import paths, module-level functions
    and instances of module-level classes are; lambdas and closures are not (they are reported as
    errors). The functions run one after the other there (async ones too); what they log comes
    back with their rewards. ``None`` (default): called in-process, no deadline.
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
    _warn_left_out(columns)

    if timeout_s is None:
        scored = _score_in_process(fns, names, prompts, completions, columns, trainer_state)
    else:
        deadline = batch_timeout_s if batch_timeout_s is not None else timeout_s * max(n, 1)
        scored = [_score_in_worker(fn, name, prompts, completions, columns, trainer_state, float(timeout_s),
                                   float(deadline), max_row_timeouts) for fn, name in zip(fns, names)]
    per_func = torch.full((n, n_f), math.nan, dtype=torch.float32)
    errors = {name: 0 for name in names}
    metric_values: dict[str, list[float]] = {}
    extra: dict[str, list] = {}
    for f, (name, r) in enumerate(zip(names, scored)):
        errors[name] += r.lost
        for message in r.messages:
            logger.warning(message)
        if n:
            per_func[:, f] = torch.tensor(r.values, dtype=torch.float32)
        for k, v in r.log.metrics.items():
            metric_values.setdefault(k, []).extend(v)
        for k, v in r.extra.items():  # a column two functions log: the later one's values win, None aside
            old = extra.get(k, [None] * n)
            extra[k] = [b if b is not None else a for a, b in zip(old, v)]
    _warn_unscored(scored, names, prompts, completions, columns)

    w = torch.tensor(weights, dtype=torch.float32)
    total = (torch.nan_to_num(per_func, nan=0.0) * w).sum(dim=1)
    total[torch.isnan(per_func).all(dim=1)] = math.nan
    return RewardBatch(per_func=per_func, total=total, names=names, errors=errors, metric_values=metric_values,
                       extra=extra)


def _mean_std(x: torch.Tensor) -> tuple[float, float] | None:
    x = x[~torch.isnan(x)]
    if x.numel() == 0:
        return None
    return x.mean().item(), (x.std().item() if x.numel() > 1 else 0.0)


def reward_metrics(batch: RewardBatch) -> dict[str, float]:
    """TRL-named metrics: ``rewards/<name>/mean``, ``rewards/<name>/std`` (over the rows the
    function scored; a function that scored no row is omitted, never NaN), ``reward`` and
    ``reward_std`` (of ``total`` over the rows with a total; omitted when no row has one).
    Standard deviations are unbiased (as ``torch.std``), 0.0 for a single value. Then, as TRL logs
    them, the functions' ``log_metric`` names as given, each the mean of its values (over every
    value of the batch, all processes' when `batch` is their concatenation); a name that clashes
    with one of the names above is left out."""
    metrics: dict[str, float] = {}
    for f, name in enumerate(batch.names):
        stats = _mean_std(batch.per_func[:, f])
        if stats is not None:
            metrics[f"rewards/{name}/mean"], metrics[f"rewards/{name}/std"] = stats
    stats = _mean_std(batch.total)
    if stats is not None:
        metrics["reward"], metrics["reward_std"] = stats
    return {**batch.logged, **metrics}
