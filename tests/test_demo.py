"""`r1kit demo` end to end on the shipped tiny-world model: a few steps, small k (the full run is a benchmark)."""

import json
import math

from r1kit.cli import main as cli_main


def test_short_demo_writes_summary_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli_main(["demo", "--out", str(out), "--steps", "2", "--prompts_per_step", "2", "--num_generations", "4",
                     "--eval_problems", "6", "--k", "2", "--eval_every", "1", "--eval_every_problems", "3",
                     "--max_completion_length", "48", "--num_threads", "1", "--disable_tqdm", "true"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for side in ("before", "after"):
        for key in ("pass@1", "cons@k", "mean_response_length", "reflection_rate", "language_mixing_rate"):
            value = summary[side][key]
            assert isinstance(value, float) and math.isfinite(value), (side, key, value)
        assert 0.0 <= summary[side]["pass@1"] <= 1.0
    assert summary["steps"] == 2 and summary["k"] == 2 and summary["wall_seconds"] > 0
    assert [c["step"] for c in summary["eval_curve"]] == [0, 1, 2]
    html = (out / "report.html").read_text()
    for png in ("heldout.png", "reward.png", "length.png", "reflection.png", "language.png"):
        assert (out / png).stat().st_size > 1000 and png in html
    assert "pass@1" in capsys.readouterr().out  # the summary table is printed
