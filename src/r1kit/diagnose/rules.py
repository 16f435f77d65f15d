"""The doctor's rules: what a run's curves say is wrong, in plain words, and what to try.

Every rule is a pure function `rule(h: History, i: int) -> Hit | list[Hit] | None` that judges row `i`
of a run's metrics (`metrics.jsonl` rows, in step order) from the rows up to and including `i`, the
completions' summaries up to that step and the run's config (`r1kit_config.json` as a dict): it never
looks ahead, so the same rules run after a run (`r1kit doctor`, over every row) and during it
(`diagnose.monitor.Monitor`, on each new row) and reach the same verdicts. A rule reads a bounded window
of rows (the first `EARLY_ROWS` of the run, the last few before `i`), so each call costs the same at
step 10 and at step 10,000.

`Diagnosis` feeds rows one at a time through every rule and merges the hits of one rule on one metric
into one `Finding` (rule id, severity, message, metric, the steps that show it, advice); its `add`
returns the findings seen for the first time. Thresholds are named constants next to their rule, each
with the reason for its value. They were set against healthy runs: `r1kit demo`'s 100 steps get no
finding (tests/test_doctor.py runs a short one), nor do the tiny pipeline's stages, except the RL-only
student (no learning signal: it solves almost nothing, the paper's control) and a stage slowed by other
jobs on the machine (throughput).
"""

from __future__ import annotations

import json
import math
import statistics
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Callable, Iterable

SEVERITIES = ("error", "warning")  # error: the run is wasting its compute or is broken; warning: look at it

# The windows most rules compare: the run's first rows (where it started) and the last rows up to the
# row being judged (where it is now). Five rows smooth out one unlucky batch (a step's accuracy over 64
# completions moves by +-0.15 in the demo) while a real change still shows within a few steps.
EARLY_ROWS = 5
RECENT_ROWS = 5

ACCURACY_METRICS = ("rewards/accuracy/mean", "rewards/task_accuracy/mean")  # rewards that mean "solved"


# ---- what the rules read -----------------------------------------------------------------------------


@dataclass
class CompletionStats:
    """One step's `completions/step-N.jsonl` in brief: how many rows, and per reward function how many
    rows it gave no score (None: it could not score the row, or it failed on it)."""

    rows: int
    none: dict[str, int] = field(default_factory=dict)


def completion_stats(rows: Iterable[dict]) -> CompletionStats:
    """The summary of one step's completion rows (each with `rewards/<name>` keys, null for None)."""
    n, none = 0, {}
    for row in rows:
        n += 1
        for key, value in row.items():
            if key.startswith("rewards/"):
                name = key[len("rewards/"):]
                none[name] = none.get(name, 0) + (value is None or _number(value) is None)
    return CompletionStats(n, none)


def _number(value) -> float | None:
    """`value` as a finite float, or None (a string, a bool, null, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class History:
    """A run's metric rows so far, one series per metric (finite numbers only, so a metric logged as null
    is simply absent from that row), the completions' summaries by step, and the run's config."""

    def __init__(self, config: dict | None = None):
        self.config = dict(config or {})
        self.steps: list[int] = []  # row -> step
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # metric -> (row indices, values)
        self.completions: dict[int, CompletionStats] = {}

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, metrics: dict, completions: CompletionStats | Iterable[dict] | None = None) -> int:
        """Append one row (the metrics logged at `step`); returns its index."""
        i = len(self.steps)
        self.steps.append(int(step))
        for key, value in metrics.items():
            x = _number(value)
            if x is not None and key != "step":
                rows, values = self._series.setdefault(key, ([], []))
                rows.append(i)
                values.append(x)
        if completions is not None:
            self.completions[int(step)] = (completions if isinstance(completions, CompletionStats)
                                           else completion_stats(completions))
        return i

    def names(self, prefix: str = "") -> list[str]:
        return [k for k in self._series if k.startswith(prefix)]

    def count(self, name: str, i: int) -> int:
        """How many rows up to row `i` have `name`."""
        return bisect_right(self._series[name][0], i) if name in self._series else 0

    def value(self, name: str, i: int) -> float | None:
        """`name` at row `i` exactly, or None when that row lacks it."""
        if name not in self._series:
            return None
        rows, values = self._series[name]
        k = bisect_right(rows, i) - 1
        return values[k] if k >= 0 and rows[k] == i else None

    def last(self, name: str, i: int, n: int) -> list[tuple[int, float]]:
        """The last `n` (step, value) pairs of `name` at rows up to `i` (fewer when fewer exist)."""
        if name not in self._series:
            return []
        rows, values = self._series[name]
        end = bisect_right(rows, i)
        return [(self.steps[r], v) for r, v in zip(rows[max(end - n, 0):end], values[max(end - n, 0):end])]

    def first(self, name: str, n: int) -> list[tuple[int, float]]:
        """The first `n` (step, value) pairs of `name`."""
        if name not in self._series:
            return []
        rows, values = self._series[name]
        return [(self.steps[r], v) for r, v in zip(rows[:n], values[:n])]

    def before(self, name: str, i: int) -> tuple[int, float] | None:
        """The last (step, value) of `name` at a row before `i`."""
        prev = self.last(name, i - 1, 1) if i > 0 else []
        return prev[0] if prev else None


@dataclass
class Hit:
    """What one rule saw at one row: the message (plain words, with the numbers), the metric, the steps
    that show it, and advice when it depends on the run (else the rule's own)."""

    message: str
    metric: str
    steps: list[int]
    advice: str | None = None


@dataclass
class Finding:
    """One problem in a run: which rule, how bad, what it means, which metric at which steps, what to try."""

    rule: str
    severity: str
    title: str
    message: str
    metric: str
    steps: list[int]
    advice: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "title": self.title, "message": self.message,
                "metric": self.metric, "steps": list(self.steps), "advice": self.advice}

    def text(self) -> str:
        """The finding as a few readable lines."""
        return (f"[{self.severity}] {self.title} ({self.rule})\n  {self.message}\n"
                f"  metric: {self.metric}, steps {step_ranges(self.steps)}\n  try: {self.advice}")


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    advice: str
    check: Callable[[History, int], "Hit | list[Hit] | None"]
    settings: tuple[str, ...] = ()  # the config keys the advice is about: their values in this run are shown


def this_run(config: dict, keys: Iterable[str]) -> str:
    """`" (this run: learning_rate 6e-05, beta 0.0)"` for the `keys` the config has; "" for none."""
    shown = [f"{k} {json.dumps(config[k])}" for k in keys if k in config]
    return f" (this run: {', '.join(shown)})" if shown else ""


RULES: dict[str, Rule] = {}  # id -> rule, in the order they are defined below


def rule(id: str, title: str, severity: str, advice: str, settings: tuple[str, ...] = ()):  # noqa: A002
    """Register the decorated function as the rule `id` (its docstring says why it fires)."""
    assert severity in SEVERITIES, severity

    def register(fn):
        RULES[id] = Rule(id, title, severity, advice, fn, settings)
        return fn

    return register


# ---- helpers -----------------------------------------------------------------------------------------


def step_ranges(steps: Iterable[int]) -> str:
    """`[1, 2, 3, 7, 9, 10]` -> `"1-3, 7, 9-10"`."""
    out: list[str] = []
    run: list[int] = []
    for s in sorted(set(steps)):
        if run and s != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(s)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def _values(pairs: list[tuple[int, float]]) -> list[float]:
    return [v for _, v in pairs]


def _steps(pairs: list[tuple[int, float]]) -> list[int]:
    return [s for s, _ in pairs]


def _past(pairs: list[tuple[int, float]], limit: float) -> list[int]:
    """The steps whose own value is at or above `limit` (the rows of a window that show the problem)."""
    return [s for s, v in pairs if v >= limit]


def _under(pairs: list[tuple[int, float]], limit: float) -> list[int]:
    """The steps whose own value is below `limit`."""
    return [s for s, v in pairs if v < limit]


def _mean(pairs: list[tuple[int, float]]) -> float:
    return sum(_values(pairs)) / len(pairs)


def _median(pairs: list[tuple[int, float]]) -> float:
    return statistics.median(_values(pairs))


def _jump(h: History, name: str, i: int, n: int) -> tuple[float, int] | None:
    """(median, count) of the last `n` values of `name` before row i, when row i has it, at least EARLY_ROWS
    rows come before and that median is positive (what a row's jump is measured against); else None."""
    prev = h.last(name, i - 1, n) if i > 0 else []
    if h.value(name, i) is None or len(prev) < EARLY_ROWS or _median(prev) <= 0:
        return None
    return _median(prev), len(prev)


@dataclass
class Level:
    """A metric's level at the start of the run and now: the two windows and their medians."""

    early: list[tuple[int, float]]
    recent: list[tuple[int, float]]

    @property
    def before(self) -> float:
        return _median(self.early)

    @property
    def now(self) -> float:
        return _median(self.recent)

    def under(self, limit: float) -> list[int]:
        return _under(self.recent, limit)


def _level(h: History, name: str, i: int) -> Level | None:
    """`name`'s run's first EARLY_ROWS values and its last RECENT_ROWS up to row i, when row i has it and
    the two windows do not overlap; else None."""
    if h.value(name, i) is None or h.count(name, i) < EARLY_ROWS + RECENT_ROWS:
        return None
    return Level(h.first(name, EARLY_ROWS), h.last(name, i, RECENT_ROWS))


def _fell(h: History, name: str, i: int, ratio: float) -> Level | None:
    """`name`'s level when its recent median is under `ratio` x its early median; else None."""
    level = _level(h, name, i)
    return level if level is not None and level.now < ratio * level.before else None


def _recent(h: History, name: str, i: int, n: int = RECENT_ROWS) -> list[tuple[int, float]] | None:
    """The last `n` values of `name` up to row i, when row i has it and there are `n`; else None."""
    if h.value(name, i) is None:
        return None
    pairs = h.last(name, i, n)
    return pairs if len(pairs) == n else None


def accuracy_metric(h: History) -> str | None:
    """The logged reward that means "solved" (`accuracy` or `task_accuracy`), if the run has one."""
    return next((m for m in ACCURACY_METRICS if h.names(m)), None)


def _cfg(h: History, key: str, default=None):
    value = h.config.get(key)
    return default if value is None else value


# ---- the rules ---------------------------------------------------------------------------------------

ZERO_SPREAD_LIMIT = 0.75  # mean frac_reward_zero_std over RECENT_ROWS rows: three groups in four teach nothing
SOLVED_NONE, SOLVED_ALL = 0.05, 0.95  # accuracy at or below / above which the groups are all wrong / all right


@rule("no_learning_signal", "No learning signal", "error",
      "dynamic_sampling: true (DAPO: drop groups whose rewards all agree and refill the batch); easier or "
      "mixed-difficulty prompts; more num_generations per prompt, or a higher temperature, so a group's "
      "completions differ; read a few completions/ rows next to their rewards to check the reward can score them.",
      settings=("dynamic_sampling", "num_generations", "temperature"))
def no_learning_signal(h: History, i: int) -> Hit | None:
    """GRPO learns from the reward spread inside each group of completions: a group whose completions all
    got the same reward has advantage 0 and adds nothing to the gradient. When most groups are like that
    for several steps the run "does nothing" (loss near 0, flat curves), whether every answer is wrong
    (too hard, or a reward that never matches the output format) or every answer is right (too easy).
    Healthy runs stay well below: the demo's mean over 5 steps is at most 0.2."""
    metric = "frac_reward_zero_std"
    w = _recent(h, metric, i)
    if w is None or _mean(w) < ZERO_SPREAD_LIMIT:
        return None
    why = ""
    acc_name = accuracy_metric(h)
    acc = h.last(acc_name, i, RECENT_ROWS) if acc_name else []
    if acc:
        level = _mean(acc)
        if level <= SOLVED_NONE:
            why = (f" Almost no completion is right ({acc_name.split('/')[1]} {level:.2f}): the prompts are too hard "
                   f"for this model, or the reward never matches the way it writes its answers.")
        elif level >= SOLVED_ALL:
            why = f" Almost every completion is right ({acc_name.split('/')[1]} {level:.2f}): the prompts are too easy."
    advice = None
    if h.config.get("dynamic_sampling"):
        advice = ("dynamic_sampling is already on, and its refills are not finding groups with a spread: easier or "
                  "mixed-difficulty prompts, more num_generations, a higher temperature; check the reward on a few "
                  "completions/ rows.")
    return Hit(f"On average {_mean(w):.0%} of the groups gave every completion the same reward over steps "
               f"{step_ranges(_steps(w))} (frac_reward_zero_std, limit {ZERO_SPREAD_LIMIT}): those groups have zero "
               f"advantage and teach the model nothing.{why}", metric, _past(w, ZERO_SPREAD_LIMIT), advice)


CLIPPED_LIMIT = 0.2  # mean clipped_ratio over RECENT_ROWS rows; the demo and the pipeline stay under 0.04


@rule("clipped_completions", "Completions cut at the length limit", "warning",
      "raise max_completion_length; mask_truncated_completions: true keeps cut completions out of the loss "
      "(DAPO); the soft_overlong reward teaches the model to finish within the budget; look in completions/ "
      "(finish_reason \"length\") for answers that loop or repeat.",
      settings=("max_completion_length", "mask_truncated_completions"))
def clipped_completions(h: History, i: int) -> Hit | None:
    """A completion cut at max_completion_length usually never reaches its answer, so it is scored as wrong
    whatever its reasoning was: the model is penalised for thinking longer, and the length curve is capped
    by the budget rather than by what the task needs."""
    metric = "completions/clipped_ratio"
    w = _recent(h, metric, i)
    if w is None or _mean(w) < CLIPPED_LIMIT:
        return None
    limit = h.config.get("max_completion_length")
    at = f" ({limit} tokens)" if limit else ""
    return Hit(f"{_mean(w):.0%} of the completions were cut at max_completion_length{at} over steps "
               f"{step_ranges(_steps(w))} (limit {CLIPPED_LIMIT:.0%}): a cut completion rarely reaches its answer, "
               f"so it scores as wrong however good its reasoning was.", metric, _past(w, CLIPPED_LIMIT))


ENTROPY_COLLAPSE_RATIO = 0.1  # recent median below a tenth of the early one; the demo falls to ~0.3 of it
ENTROPY_NEAR_ZERO = 0.01  # nats per token: sampling is practically deterministic


@rule("entropy_collapse", "Entropy collapse", "warning",
      "clip-higher (epsilon_high above epsilon, e.g. 0.28, as DAPO); a lower learning_rate; a higher "
      "temperature; a KL penalty (beta > 0) keeps the policy near its start; dynamic_sampling once groups "
      "stop differing.",
      settings=("epsilon", "epsilon_high", "temperature", "learning_rate", "beta"))
def entropy_collapse(h: History, i: int) -> Hit | None:
    """The policy's per-token entropy falling to near zero means it samples the same completion again and
    again: groups stop differing, exploration stops, and rewards plateau (DAPO's and verl's entropy
    collapse). Some fall is normal as a model gets sure of itself (the demo goes 0.32 -> 0.11), so the
    rule wants a fall by a large factor, or to practically deterministic sampling."""
    metric = "entropy"
    e = _level(h, metric, i)
    if e is None:
        return None
    limit = max(ENTROPY_COLLAPSE_RATIO * e.before, ENTROPY_NEAR_ZERO if e.before > ENTROPY_NEAR_ZERO else 0.0)
    if e.now >= limit:
        return None
    return Hit(f"The entropy of the policy fell from {e.before:.3g} (median of steps {step_ranges(_steps(e.early))}) "
               f"to {e.now:.3g} nats per token (steps {step_ranges(_steps(e.recent))}): the model samples nearly "
               f"the same completion every time, so its groups stop differing and it stops exploring.",
               metric, e.under(limit))


KL_LIMIT = 1.0  # nats per token from the reference: far past what a healthy KL-regularised run reaches
KL_SPIKE_FACTOR = 10.0  # a row's KL over the median of the KL_HISTORY_ROWS before it
KL_SPIKE_FLOOR = 0.1  # ... and above this, so growth from ~0 at the start is not a "spike"
KL_HISTORY_ROWS = 10


@rule("kl_blowup", "KL blow-up", "error",
      "a lower learning_rate; fewer num_iterations (mu) per batch; a smaller epsilon / epsilon_high; a larger "
      "beta if the policy should stay near the reference; look at the completions of the steps named for "
      "degenerate text.",
      settings=("learning_rate", "num_iterations", "epsilon", "epsilon_high", "beta"))
def kl_blowup(h: History, i: int) -> Hit | None:
    """The KL to the reference model grows slowly in a healthy run (its penalty, beta, holds it); a jump by
    an order of magnitude, or a per-token KL beyond a nat, means the policy has moved far from where it
    started in a few updates, usually into degenerate text, and the KL penalty now dominates the loss."""
    metric, step = "kl", h.steps[i]
    kl = h.value(metric, i)
    if kl is not None and kl >= KL_LIMIT:
        return Hit(f"The KL to the reference model reached {kl:.3g} nats per token at step {step} (limit {KL_LIMIT}): "
                   f"the policy has moved far from where it started.", metric, [step])
    jump = _jump(h, metric, i, KL_HISTORY_ROWS)
    if jump is None or kl < KL_SPIKE_FLOOR or kl <= KL_SPIKE_FACTOR * jump[0]:
        return None
    return Hit(f"The KL to the reference model jumped to {kl:.3g} at step {step}, {kl / jump[0]:.0f}x its median over "
               f"the {jump[1]} rows before ({jump[0]:.3g}).", metric, [step])


GRAD_SPIKE_FACTOR = 10.0  # a row's grad_norm over the median of the GRAD_HISTORY_ROWS before it (demo: < 2.5x)
GRAD_HISTORY_ROWS = 10


@rule("grad_blowup", "Gradient blow-up", "warning",
      "a lower learning_rate, or a warm-up (warmup_ratio); keep max_grad_norm clipping on (it bounds the "
      "update, not the cause); check the batch of the steps named (a reward with a huge value, a degenerate "
      "completion).",
      settings=("learning_rate", "warmup_ratio", "max_grad_norm"))
def grad_blowup(h: History, i: int) -> Hit | None:
    """grad_norm (before clipping) moves slowly in a healthy run; a jump by an order of magnitude over its
    running median is an unstable update: the learning rate is too high for this point of training, or a
    few rows carry extreme advantages or log-probs. Clipping bounds the update but not the cause."""
    metric, step = "grad_norm", h.steps[i]
    jump = _jump(h, metric, i, GRAD_HISTORY_ROWS)
    g = h.value(metric, i)
    if jump is None or g <= GRAD_SPIKE_FACTOR * jump[0]:
        return None
    return Hit(f"grad_norm jumped to {g:.3g} at step {step}, {g / jump[0]:.0f}x its median over the {jump[1]} rows "
               f"before ({jump[0]:.3g}; limit {GRAD_SPIKE_FACTOR:g}x).", metric, [step])


@rule("skipped_steps", "Skipped non-finite updates", "warning",
      "a lower learning_rate; dtype bfloat16 or float32 rather than float16; check the rewards of the steps "
      "named for inf or huge values; a warm-up (warmup_ratio).",
      settings=("learning_rate", "dtype", "warmup_ratio"))
def skipped_steps(h: History, i: int) -> Hit | None:
    """An update whose gradient norm is NaN or inf is skipped (and counted in skipped_steps) rather than
    applied, so one bad batch cannot destroy the weights; but every skip is a step of compute spent for
    nothing, and skips that recur mean the loss itself overflows."""
    metric = "skipped_steps"
    now = h.value(metric, i)
    if now is None:
        return None
    prev = h.before(metric, i)
    before = prev[1] if prev else 0.0
    if now <= before:
        return None
    step = h.steps[i]
    return Hit(f"{int(now - before)} update(s) up to step {step} had a NaN or inf gradient norm and were skipped "
               f"({int(now)} in the run so far): the model was not trained on those batches.", metric, [step])


LENGTH_GROWTH_FACTOR = 3.0  # recent median length over the early one (the demo grows 2.5x, with accuracy)
LENGTH_GAIN_MIN = 0.05  # accuracy (or reward) gain that makes longer completions worth it
LENGTH_COLLAPSE_RATIO = 1 / 3  # recent median length under a third of the early one


@rule("length_explosion", "Length explosion", "warning",
      "look in completions/ for repetition or rambling; the soft_overlong reward or a lower "
      "max_completion_length; loss_type dapo or dr_grpo (grpo's per-sequence average favours long wrong "
      "answers); a lower temperature.",
      settings=("max_completion_length", "loss_type", "temperature"))
def length_explosion(h: History, i: int) -> Hit | None:
    """R1-Zero's completions grow as the model learns to reason (the paper's Figure 3; the demo 2.5x), and
    accuracy grows with them. Completions that grow several-fold while accuracy does not are padding:
    repetition loops, rambling, or a loss that rewards length itself."""
    metric, name = "completions/mean_length", accuracy_metric(h) or "reward"
    n, acc = _level(h, metric, i), _level(h, name, i)
    if n is None or acc is None or n.before <= 0:
        return None
    if n.now < LENGTH_GROWTH_FACTOR * n.before or acc.now - acc.before >= LENGTH_GAIN_MIN:
        return None
    return Hit(f"The mean completion length grew from {n.before:.0f} to {n.now:.0f} tokens ({n.now / n.before:.1f}x) "
               f"while {name} did not improve ({acc.before:.2f} -> {acc.now:.2f}): the model writes more without "
               f"getting better.", metric, _past(n.recent, LENGTH_GROWTH_FACTOR * n.before))


@rule("length_collapse", "Length collapse", "warning",
      "look in completions/ for empty or near-empty answers and what they score (a format reward that pays "
      "for an empty <answer> tag); a lower learning_rate; the entropy advice if entropy fell too; loss_type "
      "dapo or dr_grpo rather than grpo.",
      settings=("learning_rate", "loss_type"))
def length_collapse(h: History, i: int) -> Hit | None:
    """Completions shrinking to a fraction of their starting length usually mean the model found that a
    short (often empty) answer is rewarded as well as, or punished less than, an attempt: it stops
    reasoning. (grpo's per-sequence loss average also pushes wrong answers to be long and right ones short.)"""
    metric = "completions/mean_length"
    n = _fell(h, metric, i, LENGTH_COLLAPSE_RATIO)
    if n is None:
        return None
    return Hit(f"The mean completion length fell from {n.before:.0f} to {n.now:.0f} tokens "
               f"(steps {step_ranges(_steps(n.recent))}): the model stopped writing out its reasoning.",
               metric, n.under(LENGTH_COLLAPSE_RATIO * n.before))


REWARD_RISE_MIN = 0.1  # total reward up by at least this (early vs recent medians) ...
ACCURACY_DROP_MIN = 0.1  # ... while accuracy falls by at least this: both beyond the demo's 5-row noise


@rule("reward_hacking", "Reward up, accuracy down (reward hacking)", "error",
      "lower the weight of the other reward functions (reward_weights), or pay them only with a right answer; "
      "read the completions/ rows with a high total reward and a zero accuracy to see what is being rewarded.",
      settings=("reward_funcs", "reward_weights"))
def reward_hacking(h: History, i: int) -> Hit | None:
    """When the total reward rises while its accuracy part falls, the model is being paid by the other
    functions (format, tags, length, a reward model) for something other than solving the task: format
    hacking. The curve users watch, the total reward, hides it."""
    acc_name = accuracy_metric(h)
    if acc_name is None:
        return None
    total, acc = _level(h, "reward", i), _level(h, acc_name, i)
    if total is None or acc is None:
        return None
    if total.now - total.before < REWARD_RISE_MIN or acc.before - acc.now < ACCURACY_DROP_MIN:
        return None
    return Hit(f"The total reward rose from {total.before:.2f} to {total.now:.2f} while {acc_name} fell from "
               f"{acc.before:.2f} to {acc.now:.2f} (steps {step_ranges(_steps(acc.recent))}): the other reward "
               f"functions pay for something that is not a right answer.", acc_name,
               acc.under(acc.before - ACCURACY_DROP_MIN + 1e-12))


REWARD_ERROR_LIMIT = 0.2  # rows a function failed on (raised, NaN, deadline): errors are never by design
REWARD_NONE_LIMIT = 0.8  # rows it gave no score: None can be by design (mixed data), nearly all is not
REWARD_FAILURE_ROWS = 3  # rows the fractions are averaged over


def _rows_per_step(h: History, step: int, i: int) -> float | None:
    """How many completions the reward functions scored at row i's step, for all processes: the batch
    (per_device_train_batch_size x gradient_accumulation_steps x processes) x (1 + dynamic-sampling
    rounds). Processes: config `world_size` when given, else the completions file's rows / the batch."""
    batch = _cfg(h, "per_device_train_batch_size", 0) * _cfg(h, "gradient_accumulation_steps", 1)
    if not batch:
        return None
    world = h.config.get("world_size")
    if not world:
        logged = h.completions.get(step) or next(iter(h.completions.values()), None)
        world = max(round(logged.rows / batch), 1) if logged and logged.rows else 1
    return batch * world * (1 + (h.value("dynamic_sampling/rounds", i) or 0))


def _failure_fractions(h: History, name: str, i: int) -> tuple[float | None, float | None]:
    """(fraction of rows lost to errors, fraction given no score) by reward `name` at row i; None when unknown.

    Errors: `reward_errors/<name>` is a running count, so this row's share is its increase since the row
    before over the rows scored in between. None: from the step's completions when logged; a row without
    `rewards/<name>/mean` means the function scored no row at all."""
    step = h.steps[i]
    errors = None
    count = h.value(f"reward_errors/{name}", i)
    per_step = _rows_per_step(h, step, i)
    if count is not None and per_step:
        prev = h.before(f"reward_errors/{name}", i)
        lost, steps = (count - prev[1], step - prev[0]) if prev else (count, step)
        errors = min(lost / (per_step * max(steps, 1)), 1.0)
    none = None
    logged = h.completions.get(step)
    if logged and logged.rows and name in logged.none:
        none = logged.none[name] / logged.rows
    elif count is not None:
        none = 0.0 if h.value(f"rewards/{name}/mean", i) is not None else 1.0
    return errors, none


def _reward_names(h: History) -> list[str]:
    """The run's reward functions: those with an error count, and those in the first completions logged."""
    names = [k.split("/", 1)[1] for k in h.names("reward_errors/")]
    first = next(iter(h.completions.values()), None)
    return names + [n for n in (first.none if first else {}) if n not in names]


@rule("reward_failures", "Reward function fails or returns None", "error",
      "read the r1kit.rewards warnings in the training log (they name the first bad row and the reason); call "
      "the function on a few completions/ rows by hand; check the dataset has the columns it needs (solution, "
      "tests); for a timeout raise reward_timeout_s. None is right only for rows a function cannot judge.",
      settings=("reward_funcs", "reward_timeout_s", "max_reward_failure_fraction"))
def reward_failures(h: History, i: int) -> list[Hit]:
    """A reward function that raises, returns NaN or times out loses its rows (counted in
    reward_errors/<name>); one that returns None says it cannot score a row. Either way those rows are
    scored by the other functions alone, or not at all: if it is the accuracy reward, the run trains on
    format only. The trainer stops past max_reward_failure_fraction of a step's rows; this catches the
    steady losses under it, and the Nones it does not count."""
    if i + 1 < REWARD_FAILURE_ROWS:
        return []
    rows = range(i + 1 - REWARD_FAILURE_ROWS, i + 1)
    hits = []
    for name in _reward_names(h):
        errors, nones = zip(*(_failure_fractions(h, name, j) for j in rows))
        for shares, limit, metric, what in (
                (errors, REWARD_ERROR_LIMIT, f"reward_errors/{name}",
                 "failed (raised, returned NaN/inf, or passed its deadline) on {share:.0%} of the rows"),
                (nones, REWARD_NONE_LIMIT, f"rewards/{name}", "gave no score (None) to {share:.0%} of the completions")):
            if None in shares or sum(shares) / len(shares) < limit:
                continue
            steps = [h.steps[j] for j, x in zip(rows, shares) if x >= limit]
            why = ("those rows are scored without it" if metric.startswith("reward_errors/") else
                   "it cannot judge what the model writes, so it does not steer the run")
            hits.append(Hit(f"The reward function {name!r} {what.format(share=sum(shares) / len(shares))} over steps "
                            f"{step_ranges(h.steps[j] for j in rows)} (limit {limit:.0%}): {why}.", metric, steps))
            break  # failing rows are None in the completions too: one finding per function
    return hits


SAMPLER_LOGP_DIFF_LIMIT = 0.05  # mean |log p_trainer - log p_sampler| per token; a synced engine is ~1e-6
SAMPLER_ROWS = 3  # ... above the limit in each of this many rows in a row: a gap that stays


@rule("sampler_mismatch", "Sampler and trainer disagree", "error",
      "check that the rollout engine gets the new weights every step (a stale engine is the usual cause: "
      "vLLM weight sync, LoRA merging); use the same dtype and temperature in the engine and the trainer; "
      "a constant small gap is precision (bf16 sampler), a growing one is stale weights.",
      settings=("rollout_engine", "dtype", "temperature"))
def sampler_mismatch(h: History, i: int) -> Hit | None:
    """GRPO's update assumes the completions were sampled from the policy being trained. When the rollout
    engine (vLLM, another process) computes log-probs that differ from the trainer's for the same tokens,
    the engine samples from another policy (stale weights, a broken sync, another precision) and the
    importance ratios the loss clips are wrong: training is silently off-policy (verl #2996)."""
    metric = "sampling/sampling_logp_difference/mean"
    w = _recent(h, metric, i, SAMPLER_ROWS)
    if w is None or min(_values(w)) < SAMPLER_LOGP_DIFF_LIMIT:
        return None
    extra = []
    biggest = h.value("sampling/sampling_logp_difference/max", i)
    if biggest is not None:
        extra.append(f"largest per token {biggest:.3g}")
    lo, hi = (h.value(f"sampling/importance_sampling_ratio/{k}", i) for k in ("min", "max"))
    if lo is not None and hi is not None:
        extra.append(f"importance ratio {lo:.3g} to {hi:.3g}")
    more = f" ({'; '.join(extra)} at step {h.steps[i]})" if extra else ""
    return Hit(f"The rollout engine's log-probs differ from the trainer's by {_mean(w):.3g} per token on average over "
               f"steps {step_ranges(_steps(w))} (limit {SAMPLER_LOGP_DIFF_LIMIT}){more}: the completions come from "
               f"another policy than the one being trained.", metric, _past(w, SAMPLER_LOGP_DIFF_LIMIT))


THROUGHPUT_DROP_RATIO = 0.5  # recent median tokens/s under half the early one (the demo only speeds up)


@rule("throughput_drop", "Throughput dropped", "warning",
      "look for another process on the same device or CPU, or memory pressure (swapping; vLLM preempting "
      "sequences when its KV cache is full: raise gpu_memory_utilization or lower the batch); the timing_s/* "
      "metrics say which phase slowed; a slow reward function shows in timing_s/generate.",
      settings=("rollout_engine", "per_device_train_batch_size"))
def throughput_drop(h: History, i: int) -> Hit | None:
    """Tokens per second should hold steady or rise once a run is warm. A fall to a fraction of the early
    level means the same work now takes much longer: contention for the device or CPU, memory pressure,
    a reward function or engine that slows down; the run costs more without learning more."""
    metric = "perf/tokens_per_sec"
    tps = _fell(h, metric, i, THROUGHPUT_DROP_RATIO)
    if tps is None:
        return None
    phases = [(phase, _level(h, f"timing_s/{phase}", i)) for phase in ("generate", "train")]
    slower = ", ".join(f"{phase} {t.now / t.before:.1f}x" for phase, t in phases if t is not None and t.before > 0)
    slower = f"; time per phase against the start: {slower}" if slower else ""
    return Hit(f"Throughput fell from {tps.before:.0f} to {tps.now:.0f} tokens/s (steps {step_ranges(_steps(tps.recent))}, "
               f"{tps.now / tps.before:.0%} of the early level{slower}).", metric,
               tps.under(THROUGHPUT_DROP_RATIO * tps.before))


# ---- running the rules -------------------------------------------------------------------------------


class Diagnosis:
    """Every rule over a run's rows, fed one at a time: the doctor feeds a finished run, the monitor a
    running one. A rule's hits on one metric merge into one finding (the first hit's message, every step
    that showed it)."""

    def __init__(self, config: dict | None = None, rules: Iterable[Rule] | None = None):
        self.history = History(config)
        self.rules = list(RULES.values() if rules is None else rules)
        self._found: dict[tuple[str, str], tuple[Rule, Hit, set[int]]] = {}

    def add(self, step: int, metrics: dict, completions=None) -> list[Finding]:
        """Judge the row logged at `step`; returns the findings seen for the first time."""
        i = self.history.add(step, metrics, completions)
        new = []
        for r in self.rules:
            hits = r.check(self.history, i) or []
            for hit in ([hits] if isinstance(hits, Hit) else hits):
                key = (r.id, hit.metric)
                if key in self._found:
                    self._found[key][2].update(hit.steps)
                else:
                    self._found[key] = (r, hit, set(hit.steps))
                    new.append(self._finding(key))
        return new

    def _finding(self, key) -> Finding:
        r, hit, steps = self._found[key]
        advice = (hit.advice or r.advice) + this_run(self.history.config, r.settings)
        return Finding(r.id, r.severity, r.title, hit.message, hit.metric, sorted(steps), advice)

    def findings(self) -> list[Finding]:
        """All findings so far: errors first, then by the first step that showed each."""
        out = [self._finding(key) for key in self._found]
        return sorted(out, key=lambda f: (SEVERITIES.index(f.severity), f.steps[0] if f.steps else 0))
