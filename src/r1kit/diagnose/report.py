"""`r1kit report --run_dir RUN_DIR [--out FILE]`: a run folder as one self-contained HTML page.

Reads what every trainer writes into its output_dir (train/tracking.py): `metrics.jsonl`,
`completions/step-N.jsonl` (GRPO) and `r1kit_config.json` (written when the run ends; a run still
going falls back to its latest checkpoint's `trainer_state.json`). Writes one HTML file with no
external reference (no URL, no script): the curves as inline base64 PNGs, only those whose metrics
were logged; every logged metric's first, last, min, max and mean; sampled completions per step (the
best and the worst by total reward, with each reward function's score and the advantage), every
string HTML-escaped because completions are model output; and the run's options as a table.

A folder with runs below it instead of its own `metrics.jsonl` (a demo's or a pipeline's output)
gets one report per run, each written into its run folder.

`line_chart_png` (a line chart as PNG bytes: per-step line, moving mean, min-max band) is the one
plotting helper of the demo's, the pipeline's and this report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import ConfigError, field, load_config
from r1kit.diagnose.doctor import find_runs, read_jsonl, run_kind
from r1kit.utils.io import write_text_atomic

log = logging.getLogger("r1kit.report")


@dataclass
class ReportConfig:
    run_dir: str = field("", help="Run folder (a trainer's output_dir, with metrics.jsonl), or a folder with runs "
                                  "below it (a demo's or a pipeline's output): one report per run, in its folder.")
    out: str = field("", help="HTML file to write (default: RUN_DIR/report.html); for a single run only.")
    completions_per_step: int = field(4, help="Completions shown per step: the best half and the worst half by "
                                              "total reward.")
    max_completion_steps: int = field(200, help="Steps whose completions are shown, at most (evenly spaced, the "
                                                "first and the last included).")
    max_chars: int = field(4000, help="Characters shown of one prompt or completion; the rest is counted.")

    def __post_init__(self):
        if not self.run_dir:
            raise ValueError("'run_dir' must name a run folder: r1kit report --run_dir RUN_DIR")
        for name in ("completions_per_step", "max_completion_steps", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)!r}")


# ---- plotting (shared with tiny_world.report and pipeline.report) ----------------------------------

PALETTE = ("#06c", "#d62", "#2a2", "#a3c", "#c90", "#0aa", "#e48", "#666")


@dataclass
class Series:
    xs: list
    ys: list
    label: str | None = None
    color: str | None = None
    smooth: bool = False  # the per-step line faint and a trailing moving mean over it (from `smooth_from` points)
    smooth_from: int = 20  # fewer points are drawn as they are: a moving mean over a handful only lags
    band: tuple[list, list] | None = None  # (low, high) per x, shaded
    marker: str | None = None  # None: dots when there are few points


def smoothing_window(n: int) -> int:
    return max(3, n // 10)


def moving_mean(ys: list, window: int) -> list:
    """Trailing mean over `window` points (fewer at the start)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y
        if i >= window:
            total -= ys[i - window]
        out.append(total / min(i + 1, window))
    return out


def _plain(text: str) -> str:
    return text.replace("$", r"\$")  # a reward named a$b must not start matplotlib's math mode


def line_chart_png(series: list[Series], title: str, ylabel: str, xlabel: str = "step",
                   size: tuple[float, float] = (5.6, 3.2), dpi: int = 100) -> bytes:
    """One line chart as PNG bytes (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=size, dpi=dpi)
    ax = fig.subplots()
    single = len(series) == 1
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        label = _plain(s.label) if s.label else None
        if s.band is not None:
            ax.fill_between(s.xs, s.band[0], s.band[1], color=color, alpha=0.15, lw=0,
                            label="min-max" if single else f"{label} min-max")
        if s.smooth and len(s.ys) >= s.smooth_from:
            w = smoothing_window(len(s.ys))
            ax.plot(s.xs, s.ys, color=color, lw=1, alpha=0.35, label="per step" if single else None)
            ax.plot(s.xs, moving_mean(s.ys, w), color=color, lw=2,
                    label=f"moving mean ({w})" if single else label)
        else:
            marker = s.marker if s.marker is not None else ("o" if len(s.xs) < 30 else None)
            ax.plot(s.xs, s.ys, color=color, lw=1.4, marker=marker, ms=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # whole steps, round ticks
    ax.yaxis.get_major_formatter().set_useOffset(False)  # 5.6869, not "+5.686" over 0.0009
    ax.set_title(_plain(title), fontsize=10)
    ax.set_xlabel(_plain(xlabel))
    ax.set_ylabel(_plain(ylabel))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---- reading a run folder ----------------------------------------------------------------------------

_REWARD_MEAN = re.compile(r"^rewards/(.+)/mean$")
_STEP_FILE = re.compile(r"^step-(\d+)\.jsonl$")


def is_accuracy_like(name: str) -> bool:
    """A reward that scores correctness: `accuracy`, `task_accuracy`, `code` (tests passed), or any
    reward whose name says accuracy / correct."""
    low = name.lower()
    return "accuracy" in low or "correct" in low or low.rsplit(".", 1)[-1] == "code"


@dataclass
class Run:
    dir: Path
    metrics: list[dict]
    config: dict | None
    config_source: str  # where the options were read from
    completion_files: list[tuple[int, Path]]  # (step, file), by step

    @property
    def kind(self) -> str:
        return run_kind(self.metrics, self.config or {})  # the doctor's, so both name a run alike

    def series(self, key: str) -> tuple[list, list]:
        """(steps, values) where `key` was logged as a finite number."""
        pts = [(m["step"], m[key]) for m in self.metrics if _number(m.get(key)) and "step" in m]
        return [p[0] for p in pts], [p[1] for p in pts]

    def reward_names(self) -> list[str]:
        names: dict[str, None] = {}
        for m in self.metrics:
            for k in m:
                hit = _REWARD_MEAN.match(k)
                if hit:
                    names.setdefault(hit.group(1))
        return list(names)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_run(run_dir: str | Path) -> Run:
    d = Path(run_dir)
    metrics_path = d / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{d}: no metrics.jsonl (not a run folder)")
    metrics = read_jsonl(metrics_path)
    config, source = None, "not found: r1kit_config.json is written when a run ends, and no checkpoint has one"
    if (d / "r1kit_config.json").is_file():
        config = _json_object(d / "r1kit_config.json")
        source = "r1kit_config.json" if config is not None else "unreadable: r1kit_config.json is not a JSON object"
    else:
        ckpts = sorted(d.glob("checkpoint-*/trainer_state.json"), key=lambda p: _int_suffix(p.parent.name))
        state = _json_object(ckpts[-1]) if ckpts else None
        if state and isinstance(state.get("config"), dict):
            config = state["config"]
            source = f"{ckpts[-1].parent.name}/trainer_state.json (the run has not ended: no r1kit_config.json yet)"
    files = []
    for p in (d / "completions").glob("step-*.jsonl"):
        hit = _STEP_FILE.search(p.name)
        if hit:
            files.append((int(hit.group(1)), p))
    return Run(d, metrics, config, source, sorted(files))


def _json_object(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _int_suffix(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


# ---- the curves ------------------------------------------------------------------------------------------

@dataclass
class Curve:
    id: str
    title: str
    ylabel: str
    series: list[Series]
    caption: str


def _one(run: Run, key: str, label: str | None = None, smooth: bool = True) -> list[Series]:
    xs, ys = run.series(key)
    return [Series(xs, ys, label=label, smooth=smooth)] if xs else []


def _many(run: Run, keys_labels: list[tuple[str, str]], smooth: bool = True) -> list[Series]:
    return [s for key, label in keys_labels for s in _one(run, key, label, smooth)]


def _length(run: Run) -> list[Series]:
    pts = [(m["step"], m["completions/mean_length"], m.get("completions/min_length"), m.get("completions/max_length"))
           for m in run.metrics if _number(m.get("completions/mean_length")) and "step" in m]
    if not pts:
        return []
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    band = None
    if all(_number(p[2]) and _number(p[3]) for p in pts):
        band = ([p[2] for p in pts], [p[3] for p in pts])
    return [Series(xs, ys, label="mean", smooth=True, band=band)]


def curves(run: Run) -> list[Curve]:
    """The plots for the metrics this run logged, most looked-at first."""
    rewards = run.reward_names()
    per_func = [(f"rewards/{n}/mean", n) for n in rewards]
    if len(rewards) != 1:
        per_func.append(("reward", "total (weighted)"))
    accuracy = [(f"rewards/{n}/mean", n) for n in rewards if is_accuracy_like(n)]
    specs = [
        ("reward", "Reward per reward function (mean per step)", "reward", _many(run, per_func),
         "Each reward function's mean over the step's completions; the total is their weighted sum."),
        ("accuracy", "Accuracy (accuracy-like rewards)", "mean score", _many(run, accuracy),
         "The rewards that score correctness. A total reward that rises while this falls is format hacking."),
        ("heldout", "Held-out pass@1", "pass@1", _one(run, "eval/pass@1", smooth=False),
         "Evaluations during training on held-out problems."),
        ("length", "Completion length (tokens)", "tokens", _length(run),
         "Mean completion length, shaded from the shortest to the longest completion of the step."),
        ("clipped_ratio", "Completions cut at max_completion_length", "fraction",
         _one(run, "completions/clipped_ratio"),
         "Share of completions that hit the length limit before ending: high means the limit is too short."),
        ("zero_std", "Groups with zero reward spread (frac_reward_zero_std)", "fraction",
         _one(run, "frac_reward_zero_std"),
         "Share of prompt groups in which every completion got the same reward: they carry no learning signal."),
        ("entropy", "Token entropy", "nats", _one(run, "entropy"),
         "Mean entropy of the policy over completion tokens; a fall towards 0 is entropy collapse."),
        ("kl", "KL to the reference model", "KL", _one(run, "kl"),
         "Estimated KL divergence from the reference policy (logged when beta > 0)."),
        ("loss", "Loss", "loss", _one(run, "loss"), "The training loss per optimizer step."),
        ("mean_token_accuracy", "Token accuracy", "fraction", _one(run, "mean_token_accuracy"),
         "Share of target tokens the model predicts exactly (argmax)."),
        ("rm_accuracy", "Preference accuracy", "fraction", _one(run, "accuracy"),
         "Share of pairs in which the chosen response scores above the rejected one."),
        ("rm_rewards", "Reward of chosen vs rejected", "reward",
         _many(run, [("rewards/chosen", "chosen"), ("rewards/rejected", "rejected")]),
         "Mean reward-model score of the chosen and of the rejected responses."),
        ("margin", "Reward margin", "margin", _one(run, "margin"), "Mean chosen minus rejected score."),
        ("grad_norm", "Gradient norm (before clipping)", "norm", _one(run, "grad_norm"),
         "Global gradient norm per optimizer step; spikes come before instabilities."),
        ("policy_clip", "Policy ratio clipped", "fraction of tokens",
         _many(run, [("clip_ratio/region_mean", "clipped (any side)"), ("clip_ratio/low_mean", "low"),
                     ("clip_ratio/high_mean", "high")]),
         "Share of tokens whose importance ratio was clipped in the policy loss."),
        ("sampler_drift", "Sampler vs trainer log-prob difference", "|log p difference|",
         _many(run, [("sampling/sampling_logp_difference/mean", "mean"),
                     ("sampling/sampling_logp_difference/max", "max")]),
         "How far the rollout engine's log-probs are from the trainer's: large means the sampler drifted."),
        ("text_rates", "Reflection and language mixing", "rate",
         _many(run, [("completions/reflection_rate", "reflection"),
                     ("completions/language_mixing_rate", "language mixing")]),
         "Share of completions that re-check a step, and that mix a second script."),
        ("learning_rate", "Learning rate", "learning rate", _one(run, "learning_rate", smooth=False),
         "The schedule's learning rate per step."),
        ("tokens_per_sec", "Throughput (perf/tokens_per_sec)", "tokens / s", _one(run, "perf/tokens_per_sec"),
         "Tokens processed per second of step time."),
    ]
    return [Curve(i, t, y, s, c) for i, t, y, s, c in specs if s]


# ---- the page --------------------------------------------------------------------------------------------

def esc(value) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, default=str), quote=True)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return esc(v)
    if isinstance(v, int) or (float(v).is_integer() and abs(v) < 1e15):
        return f"{int(v)}"
    return f"{v:.4g}"


def _clip(text, limit: int) -> str:
    text = text if isinstance(text, str) else json.dumps(text, default=str)
    if len(text) <= limit:
        return esc(text)
    return f"{esc(text[:limit])}<span class='more'>… ({len(text) - limit} more characters)</span>"


def _plots_html(run: Run) -> str:
    items = []
    for c in curves(run):
        png = base64.b64encode(line_chart_png(c.series, c.title, c.ylabel)).decode()
        items.append(f"<figure class='plot' id='plot-{c.id}'><img alt='{esc(c.title)}' "
                     f"src='data:image/png;base64,{png}'><figcaption>{esc(c.caption)}</figcaption></figure>")
    return "<div class='plots'>" + "".join(items) + "</div>" if items else "<p>No curve: no numeric metric logged.</p>"


def _metrics_table(run: Run) -> str:
    keys: dict[str, None] = {}
    for m in run.metrics:
        for k in m:
            if k != "step":
                keys.setdefault(k)
    rows = []
    for k in keys:
        _, ys = run.series(k)
        if ys:
            cells = [ys[0], ys[-1], min(ys), max(ys), sum(ys) / len(ys)]
        else:  # text or never finite: the last value logged
            last = next((m[k] for m in reversed(run.metrics) if m.get(k) is not None), None)
            cells = [None, last, None, None, None]
        rows.append(f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in cells) + "</tr>")
    return ("<table class='num'><tr><th>metric</th><th>first</th><th>last</th><th>min</th><th>max</th><th>mean</th></tr>"
            + "".join(rows) + "</table>")


def _headline(run: Run) -> str:
    """Start (mean of the first tenth of the steps) and end (the last tenth) of the key numbers."""
    keys = ["reward"] + [f"rewards/{n}/mean" for n in run.reward_names()] + [
        "completions/mean_length", "frac_reward_zero_std", "entropy", "loss", "mean_token_accuracy", "accuracy"]
    rows = []
    for k in dict.fromkeys(keys):
        _, ys = run.series(k)
        if len(ys) >= 2:
            n = max(1, len(ys) // 10)
            rows.append(f"<tr><td>{esc(k)}</td><td>{_fmt(sum(ys[:n]) / n)}</td><td>{_fmt(sum(ys[-n:]) / n)}</td></tr>")
    if not rows:
        return ""
    return ("<table class='num'><tr><th>metric</th><th>start (first tenth of steps)</th><th>end (last tenth)</th></tr>"
            + "".join(rows) + "</table>")


def _reward_key(row: dict) -> float:
    r = row.get("reward")
    return r if _number(r) else -math.inf  # a completion no function could score sorts last


def pick_completions(rows: list[dict], k: int) -> list[tuple[str, dict]]:
    """The best ceil(k/2) and the worst floor(k/2) by total reward (all when there are at most k)."""
    ranked = sorted(rows, key=_reward_key, reverse=True)
    if len(ranked) <= k:
        return [(f"#{i + 1}", r) for i, r in enumerate(ranked)]
    best = (k + 1) // 2
    worst = ranked[len(ranked) - (k - best):] if k - best else []
    return [(f"best {i + 1}", r) for i, r in enumerate(ranked[:best])] + [
        (f"worst {len(worst) - i}", r) for i, r in enumerate(worst)]


def spread(n: int, m: int) -> list[int]:
    """At most `m` indices into range(n), evenly spaced, the first and the last included."""
    if n <= m:
        return list(range(n))
    if m == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (m - 1)) for i in range(m)})


def _card(tag: str, row: dict, max_chars: int) -> str:
    parts = [f"<b>{esc(tag)}</b>", f"reward {_fmt(row.get('reward'))}"]
    parts += [f"{esc(k[len('rewards/'):])} {_fmt(v)}" for k, v in row.items() if k.startswith("rewards/")]
    if _number(row.get("advantage")):
        parts.append(f"advantage {row['advantage']:+.3f}")
    if row.get("length") is not None:
        parts.append(f"{_fmt(row['length'])} tokens")
    if row.get("finish_reason"):
        parts.append(esc(row["finish_reason"]))
    prompt = row.get("prompt", "")
    prompt_text = prompt if isinstance(prompt, str) else json.dumps(prompt, default=str)
    tail = prompt_text[-120:].replace("\n", " ")
    return (f"<div class='card'><div class='meta'>{' · '.join(parts)}</div>"
            f"<details class='prompt'><summary>prompt: {'…' if len(prompt_text) > 120 else ''}{esc(tail)}</summary>"
            f"<pre>{_clip(prompt_text, max_chars)}</pre></details>"
            f"<pre class='completion'>{_clip(row.get('completion', ''), max_chars)}</pre></div>")


def _completions_html(run: Run, per_step: int, max_steps: int, max_chars: int) -> str:
    files = run.completion_files
    if not files:
        return "<p>No completions logged (completions/step-N.jsonl is written by GRPO runs with log_completions).</p>"
    chosen = [files[i] for i in spread(len(files), max_steps)]
    steps = []
    for step, path in chosen:
        rows = read_jsonl(path)
        rewards = [r["reward"] for r in rows if _number(r.get("reward"))]
        steps.append((step, rows, sum(rewards) / len(rewards) if rewards else None))
    means = [s[2] for s in steps if s[2] is not None]
    lo, hi = (min(means), max(means)) if means else (0.0, 0.0)

    def hue(mean):
        if mean is None:
            return "background:#eee"
        t = (mean - lo) / (hi - lo) if hi > lo else 1.0
        return f"background:hsl({round(120 * t)},60%,82%)"

    index = "".join(f"<a href='#step-{s}' style='{hue(m)}' title='mean reward {_fmt(m)}'>{s}</a>"
                    for s, _, m in steps)
    sections = []
    for i, (step, rows, mean) in reversed(list(enumerate(steps))):  # the newest first, and open
        shown = pick_completions(rows, per_step)
        lengths = [r["length"] for r in rows if _number(r.get("length"))]
        head = [f"step {step}", f"{len(rows)} completions", f"mean reward {_fmt(mean)}"]
        if lengths:
            head.append(f"mean length {sum(lengths) / len(lengths):.1f}")
        head.append(f"showing {len(shown)}")
        cards = "".join(_card(tag, row, max_chars) for tag, row in shown) or "<p>(empty)</p>"
        sections.append(f"<details class='step'{' open' if i == len(steps) - 1 else ''}><summary>"
                        f"{' · '.join(head)}</summary><div class='cards' id='step-{step}'>{cards}</div></details>")
    note = (f"Showing {len(steps)} of {len(files)} logged steps (evenly spaced). " if len(steps) < len(files) else "")
    return (f"<p>{note}Per step: the {(per_step + 1) // 2} best and {per_step // 2} worst completions by total "
            f"reward, the newest step first and open. Pick a step (colour: its mean reward, red low, green high).</p>"
            f"<nav class='steps'>{index}</nav>{''.join(sections)}")


def _config_html(run: Run) -> str:
    if run.config is None:
        return f"<p>Run options {esc(run.config_source)}.</p>"
    rows = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(v if isinstance(v, str) else json.dumps(v, default=str))}"
                   f"</code></td></tr>" for k, v in run.config.items())
    return f"<p>From <code>{esc(run.config_source)}</code>.</p><table class='config'>{rows}</table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}
nav.top a{margin-right:1em}h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:10px}
figure.plot{margin:0;border:1px solid #eee;padding:4px}figure.plot img{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#555;padding:2px 4px}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}
th{background:#f3f3f3}table.num td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
table.config td:first-child{white-space:nowrap}code{font-size:12px;word-break:break-all}
nav.steps{display:flex;flex-wrap:wrap;gap:3px;margin:.5em 0 1em}
nav.steps a{font-size:11px;min-width:2.6em;text-align:center;padding:2px 0;border-radius:3px;color:#222;text-decoration:none}
nav.steps a:hover{outline:1px solid #333}details.step{border:1px solid #ddd;margin:2px 0;padding:1px 8px}
details.step>summary{cursor:pointer;font-size:13px;padding:2px 0}details.step[open]>summary{font-weight:600}.cards{scroll-margin-top:2.5em}
details.step:has(.cards:target){outline:2px solid #06c}
.card{border-top:1px dashed #ccc;padding:6px 0}.meta{font-size:13px;margin-bottom:3px}
details.prompt summary{font-size:12px;color:#666;cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:6px;margin:3px 0;font-size:12px}
pre.completion{background:#f3f7ff}.more{color:#a00;font-style:italic}"""


def build_report(run: Run, completions_per_step: int = 4, max_completion_steps: int = 200,
                 max_chars: int = 4000) -> str:
    cfg = run.config or {}
    steps = [m["step"] for m in run.metrics if isinstance(m.get("step"), int)]
    facts = [f"<b>{esc(run.kind)}</b> run", f"folder <code>{esc(str(run.dir.resolve()))}</code>",
             f"{len(run.metrics)} logged steps" + (f" ({steps[0]}–{steps[-1]})" if steps else "")]
    for key, label in (("model_name_or_path", "model"), ("dataset_name", "data"), ("reward_funcs", "rewards"),
                       ("max_steps", "max_steps")):
        if cfg.get(key) not in (None, "", [], -1):
            v = cfg[key]
            facts.append(f"{label} <code>{esc(', '.join(map(str, v)) if isinstance(v, list) else str(v))}</code>")
    name = "/".join(run.dir.resolve().parts[-2:])  # "demo/model" says more than "model"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>r1kit report: {esc(name)}</title>
<style>{CSS}</style></head><body>
<h1>r1kit report: {esc(name)}</h1>
<p>{' · '.join(facts)}</p>
<nav class="top"><a href="#curves">Curves</a><a href="#metrics">All metrics</a><a href="#completions">Completions</a><a href="#config">Config</a></nav>
{_headline(run)}
<h2 id="curves">Curves</h2>
{_plots_html(run)}
<h2 id="metrics">All metrics</h2>
<details><summary>Every logged metric: first, last, min, max and mean over the steps</summary>{_metrics_table(run)}</details>
<h2 id="completions">Completions</h2>
{_completions_html(run, completions_per_step, max_completion_steps, max_chars)}
<h2 id="config">Config</h2>
{_config_html(run)}
</body></html>
"""


def write_run_report(run_dir: str | Path, out: str | Path | None = None, **kw) -> Path:
    """`run_dir/report.html` (or `out`) for one run folder."""
    run = load_run(run_dir)
    path = Path(out) if out else run.dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, build_report(run, **kw))
    log.info("report for %s (%s, %d steps) -> %s", run.dir, run.kind, len(run.metrics), path)
    return path


def run_report(cfg: ReportConfig) -> str:
    """The CLI command: one report, or one per run found below a folder that is not itself a run."""
    root = Path(cfg.run_dir)
    kw = dict(completions_per_step=cfg.completions_per_step, max_completion_steps=cfg.max_completion_steps,
              max_chars=cfg.max_chars)
    if (root / "metrics.jsonl").is_file():
        return str(write_run_report(root, cfg.out or None, **kw))
    runs = find_runs(root)  # the run folders below, or an error that says there is none
    if cfg.out:
        raise ValueError(f"{root} holds {len(runs)} runs ({', '.join(str(r) for r in runs)}); 'out' names one "
                         f"file: pass one of them as run_dir, or leave out 'out' for a report in each")
    return ", ".join(str(write_run_report(r, **kw)) for r in runs)


def main(argv: list[str] | None = None) -> int:
    """`python -m r1kit.diagnose.report RUN_DIR [--out FILE] [--key value ...]` (RUN_DIR may come first)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("--"):
        argv = ["--run_dir", argv[0], *argv[1:]]
    try:
        print(run_report(load_config(ReportConfig, None, argv)))
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"r1kit report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
