"""The demo's report: PNG plots of the R1-Zero curves and one self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from r1kit.diagnose.report import Series, line_chart_png

PLOTS = [  # (file, metrics key, title, y label)
    ("reward.png", "reward", "Training reward", "mean reward"),
    ("format.png", "rewards/format/mean", "Training responses in the R1 format", "format reward"),
    ("length.png", "completions/mean_length", "Mean response length (cf. R1 paper, Figure 3)", "tokens"),
    ("reflection.png", "completions/reflection_rate", "Responses with re-evaluation phrases", "rate"),
    ("language.png", "completions/language_mixing_rate", "Responses mixing a second script", "rate"),
]


def _plot(path: Path, xs, ys, title: str, ylabel: str, smooth: bool = True) -> None:
    series = Series(xs, ys, smooth=smooth, smooth_from=5, marker=None if smooth else "o")
    path.write_bytes(line_chart_png([series], title, ylabel, xlabel="GRPO step", size=(5.5, 3.2), dpi=110))


SC_ROWS = [("responses that re-check a step", "rechecking_responses"), ("re-checks", "rechecks"),
           ("re-checks that change the step's value", "rechecks_changing_a_step"),
           ("wrong answers fixed (a wrong step corrected, final answer right)", "wrong_answers_fixed"),
           ("right answers broken (a right step changed, final answer wrong)", "right_answers_broken"),
           ("accuracy of responses that re-check", "accuracy_rechecking"),
           ("accuracy of responses that do not", "accuracy_not_rechecking")]


def _self_correction_html(sc: dict | None) -> str:
    """The "aha moment" table in miniature: what the held-out re-checks did, before and after."""
    if not sc:
        return ""

    def cell(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{cell(sc['before'][k])}</td><td>{cell(sc['after'][k])}</td></tr>"
                   for label, k in SC_ROWS)
    examples = "".join(
        f"<li>step <code>{html.escape(e['step'])}</code> written as {e['written']}, re-checked to {e['rechecked']} "
        f"(true {e['true']}); final answer right<pre>{html.escape(e['completion'])}</pre></li>"
        for e in sc["after"]["examples"])
    return (f"<h2>Self-correction (held-out)</h2><p>Each re-check is compared with the step it re-checks "
            f"and with the truth (<code>r1kit.tiny_world.self_correction</code>).</p>"
            f"<table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>"
            f"<h3>Re-checks that fixed a step, after training</h3><ol>{examples or '<li>none</li>'}</ol>")


def write_report(out: Path, summary: dict, metrics: list[dict], before_samples: list[dict],
                 after_samples: list[dict]) -> Path:
    """Write the PNG plots and `report.html` into `out`."""
    figures = []
    curve = summary.get("eval_curve", [])
    if curve:
        _plot(out / "heldout.png", [c["step"] for c in curve], [c["pass@1"] for c in curve],
              "Held-out pass@1 (T=0.6, top-p 0.95)", "pass@1", smooth=False)
        figures.append("heldout.png")
        if all("format_rate" in c for c in curve):
            _plot(out / "heldout_format.png", [c["step"] for c in curve], [c["format_rate"] for c in curve],
                  "Held-out responses in the R1 format", "format rate", smooth=False)
            figures.append("heldout_format.png")
    for name, key, title, ylabel in PLOTS:
        pts = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        if pts:
            _plot(out / name, [p[0] for p in pts], [p[1] for p in pts], title, ylabel)
            figures.append(name)

    b, a = summary["before"], summary["after"]
    rows = "".join(
        f"<tr><td>{label}</td><td>{b[key]:.3f}</td><td>{a[key]:.3f}</td></tr>"
        for label, key in [("pass@1", "pass@1"), (f"cons@{summary['k']}", "cons@k"), ("format rate", "format_rate"),
                           ("mean response length (tokens)", "mean_response_length"),
                           ("reflection rate", "reflection_rate"), ("language-mixing rate", "language_mixing_rate")])
    trends = "".join(
        f"<li><code>{html.escape(k)}</code>: {v['first_quarter']:.3f} in the first quarter of training, "
        f"{v['last_quarter']:.3f} in the last: <b>{'rose' if v['rose'] else 'did not rise'}</b></li>"
        for k, v in summary.get("trends", {}).items())
    imgs = "".join(f'<img src="{f}" alt="{f}">' for f in figures)

    def examples(samples, title):
        items = "".join(f"<li>score {s['score']:.0f}, {s['length']} tokens<pre>{html.escape(s['completion'])}</pre></li>"
                        for s in samples[:3])
        return f"<h3>{title}</h3><ol>{items}</ol>"

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>r1kit demo</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
td:first-child{{text-align:left}}img{{width:540px;margin:4px}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:6px}}</style>
</head><body><h1>r1kit demo: R1-Zero on the tiny world</h1>
<p>Pure RL (GRPO) from the base model <code>{html.escape(str(summary['model']))}</code> on the task
<code>{html.escape(summary['task'])}</code>: {summary['steps']} steps, {summary['wall_seconds']:.0f} s in all.
Held-out: {summary['num_problems']} problems, {summary['k']} samples each at temperature 0.6, top-p 0.95.</p>
<table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>
<h2>What changed during training</h2><ul>{trends}</ul>
{_self_correction_html(summary.get("self_correction"))}
<h2>Curves</h2>{imgs}
<h2>Samples</h2>{examples(before_samples, "Base model")}{examples(after_samples, "After GRPO")}
<h2>Raw numbers</h2><pre>{html.escape(json.dumps(summary, indent=1))}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
