"""The pipeline's report: the paper's tables in miniature, as PNG plots and one HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from r1kit.diagnose.report import Series, line_chart_png

METRICS = [  # (eval key, label)
    ("pass@1", "pass@1"),
    ("cons@k", "cons@k"),
    ("language_mixing_rate", "language-mixing rate"),
    ("mean_response_length", "mean length (tokens)"),
]
ROLES = [("teacher", "all_scenarios_rl"), ("student (init, untrained)", "student_init"),
         ("distilled student (SFT on teacher samples)", "distill"), ("RL-only student (GRPO)", "student_rl")]


def comparison(records: list[dict]) -> dict:
    """Teacher vs distilled student vs RL-only student (the paper's Table 6 in miniature)."""
    by = {r["stage"]: r for r in records}
    out = {}
    for role, stage in ROLES:
        ev = (by.get(stage) or {}).get("eval")
        if ev:
            out[stage] = {"role": role, **{k: ev.get(k) for k, _ in METRICS}}
    if "distill" in out and "student_rl" in out and None not in (out["distill"]["pass@1"], out["student_rl"]["pass@1"]):
        out["distilled_beats_rl_only"] = out["distill"]["pass@1"] > out["student_rl"]["pass@1"]
    lang = language_consistency(by)
    if lang:
        out["language_consistency"] = lang
    return out


def language_consistency(by: dict) -> dict | None:
    """Cold start + the language reward (reasoning_rl) against the R1-Zero control (paper §2.3.2,
    §4: readable, single-language chains of thought at a small cost in accuracy): each side's pass@1
    and language-mixing rate, the pass@1 difference in points, and the issue's two checks (mixing
    under 2%, at most 3 points of pass@1 lost)."""
    zero, lang = ((by.get(s) or {}).get("eval") for s in ("r1_zero", "reasoning_rl"))
    if not zero or not lang or None in (zero.get("pass@1"), lang.get("pass@1"), lang.get("language_mixing_rate")):
        return None
    delta = round(100 * (lang["pass@1"] - zero["pass@1"]), 2)
    return {"r1_zero": {k: zero.get(k) for k in ("pass@1", "language_mixing_rate")},
            "reasoning_rl": {k: lang.get(k) for k in ("pass@1", "language_mixing_rate")},
            "pass@1_delta_points": delta, "mixing_under_2pct": lang["language_mixing_rate"] < 0.02,
            "within_3_points": delta >= -3.0}


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _bars(path: Path, names: list[str], panels: list[tuple[str, list, list | None]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.2 + 1.3 * rows + 0.12 * len(names) * rows), dpi=100,
                             squeeze=False)
    for ax, (label, vals, err) in zip(axes.flat, panels):
        ys = [v if v is not None else 0.0 for v in vals]
        ax.barh(range(len(names)), ys, color="#4a8", xerr=err, ecolor="#333", capsize=2)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
        if "length" not in label and all(v is None or 0 <= v <= 1 for v in vals):
            ax.set_xlim(0, 1.1)  # rates
        ax.grid(axis="x", alpha=0.3)
        for i, v in enumerate(vals):  # the label sits past the error bar, not on it
            x = ys[i] + (err[1][i] if err is not None else 0.0)
            ax.text(x, i, f" {v:.3g}" if v is not None else " –", va="center", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ci_err(evals: list[dict]) -> list | None:
    lo, hi = [], []
    for e in evals:
        p, ci = e.get("pass@1"), e.get("pass@1_ci")
        if p is None or not ci or None in ci:
            lo.append(0.0)
            hi.append(0.0)
        else:
            lo.append(max(0.0, p - ci[0]))
            hi.append(max(0.0, ci[1] - p))
    return [lo, hi]


def _curves(path: Path, out: Path, stages: list[str]) -> bool:
    series = []
    for stage in stages:
        f = out / stage / "model" / "metrics.jsonl"
        if not f.is_file():
            continue
        pts = [(r["step"], r["reward"]) for r in map(json.loads, f.read_text().splitlines())
               if isinstance(r.get("reward"), (int, float))]
        if pts:
            series.append(Series([p[0] for p in pts], [p[1] for p in pts], label=stage, marker="."))
    if series:
        path.write_bytes(line_chart_png(series, "Training reward of the RL stages (weights differ by stage)",
                                        "mean total reward", xlabel="GRPO step", size=(6, 3.4)))
    return bool(series)


def write_report(out: Path, summary: dict) -> Path:
    records = summary["stages"]
    evaluated = [r for r in records if r.get("eval")]
    figures = []
    if evaluated:
        names = [r["stage"] for r in evaluated]
        evals = [r["eval"] for r in evaluated]
        k = evals[0].get("k")
        panels = [(label.replace("cons@k", f"cons@{k}"), [e.get(key) for e in evals],
                   _ci_err(evals) if key == "pass@1" else None) for key, label in METRICS]
        _bars(out / "stages.png", names, panels, "Per stage, held-out set (pass@1 with its bootstrap 95% interval)")
        figures.append(("stages.png", "Per-stage evaluation"))
    comp = {s: v for s, v in summary.get("comparison", {}).items() if isinstance(v, dict) and "role" in v}
    if comp:
        names = [v["role"].split(" (")[0] for v in comp.values()]
        panels = [(label, [v.get(key) for v in comp.values()], None) for key, label in METRICS]
        _bars(out / "distillation.png", names, panels, "Teacher vs distilled student vs RL-only student")
        figures.append(("distillation.png", "Distillation vs RL on the small model"))
    if _curves(out / "rl_curves.png", out, ["r1_zero", "reasoning_rl", "all_scenarios_rl", "student_rl"]):
        figures.append(("rl_curves.png", "RL training reward"))

    k = evaluated[0]["eval"].get("k") if evaluated else "k"
    head = "".join(f"<th>{h}</th>" for h in ["stage", "what", "pass@1 [95% CI]", f"cons@{k}", "language mixing",
                                              "mean length", "stage wall (s)", "run"])
    rows = []
    for r in records:
        e = r.get("eval") or {}
        ci = e.get("pass@1_ci") or [None, None]
        p1 = f"{_fmt(e.get('pass@1'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if e else "–"
        run = r.get("status", "")
        if r.get("eval_skipped") is not None:
            run += ", eval " + ("cached" if r["eval_skipped"] else "ran")
        rows.append(f"<tr><td>{html.escape(r['stage'])}</td><td>{html.escape(r.get('title', ''))}</td><td>{p1}</td>"
                    f"<td>{_fmt(e.get('cons@k'))}</td><td>{_fmt(e.get('language_mixing_rate'))}</td>"
                    f"<td>{_fmt(e.get('mean_response_length'), 1)}</td><td>{_fmt(r.get('wall_s'), 1)}</td>"
                    f"<td>{html.escape(run)}</td></tr>")
    comp_rows = "".join(
        f"<tr><td>{html.escape(v['role'])}</td><td>{html.escape(s)}</td>"
        + "".join(f"<td>{_fmt(v.get(key), 1 if key == 'mean_response_length' else 3)}</td>" for key, _ in METRICS)
        + "</tr>" for s, v in comp.items())
    verdict = summary.get("comparison", {}).get("distilled_beats_rl_only")
    verdict_line = "" if verdict is None else (
        f"<p>Distilled student {'beats' if verdict else 'does <b>not</b> beat'} the RL-only student on pass@1 "
        f"(the paper's finding is that it does).</p>")
    lang = summary.get("comparison", {}).get("language_consistency")
    if lang:
        z, r = lang["r1_zero"], lang["reasoning_rl"]
        verdict_line += (
            f"<h2>Language consistency</h2><p>Cold start + the language reward (reasoning_rl): pass@1 {_fmt(r['pass@1'])}, "
            f"language mixing {_fmt(r['language_mixing_rate'])}; R1-Zero control: pass@1 {_fmt(z['pass@1'])}, mixing "
            f"{_fmt(z['language_mixing_rate'])}. Difference {lang['pass@1_delta_points']:+.1f} points of pass@1 "
            f"(target: at most 3 lost: {'met' if lang['within_3_points'] else '<b>not met</b>'}); mixing under 2%: "
            f"{'met' if lang['mixing_under_2pct'] else '<b>not met</b>'}.</p>")
    data_rows = "".join(
        f"<tr><td>{html.escape(r['stage'])}</td><td><code>{html.escape(json.dumps(r.get('metrics', {}), default=str))}"
        f"</code></td></tr>" for r in records if r.get("metrics"))
    warnings = sorted({w for r in evaluated for w in (r["eval"].get("warnings") or [])})
    figs = "".join(f"<h3>{html.escape(t)}</h3><img src='{f}' alt='{html.escape(t)}'>" for f, t in figures)
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>r1kit pipeline</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}
th{{background:#f3f3f3}}code{{font-size:11px}}img{{max-width:100%}}</style></head><body>
<h1>DeepSeek-R1's recipe in miniature</h1>
<p>Base model <code>{html.escape(str(summary['config'].get('base_model')))}</code>, task
<code>{html.escape(str(summary['config'].get('task')))}</code>; held-out test split, k = {k} samples per problem at
the paper's T = 0.6, top-p 0.95. Stages run: {summary.get('ran')}, skipped (unchanged): {summary.get('skipped')};
wall time of this invocation {_fmt(summary.get('wall_s'), 0)} s.</p>
<h2>Per stage</h2><table><tr>{head}</tr>{''.join(rows)}</table>
<h2>Teacher vs distilled student vs RL-only student</h2>
<table><tr><th>model</th><th>stage</th>{''.join(f'<th>{l}</th>' for _, l in METRICS)}</tr>{comp_rows}</table>
{verdict_line}
{figs}
<h2>Stage metrics (training summaries, data counts)</h2><table>{data_rows}</table>
{'<h3>Evaluation warnings</h3><ul>' + ''.join(f'<li>{html.escape(w)}</li>' for w in warnings) + '</ul>' if warnings else ''}
</body></html>
"""
    (out / "report.html").write_text(page)
    return out / "report.html"
