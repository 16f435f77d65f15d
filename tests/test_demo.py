"""`r1kit demo` end to end on the shipped tiny-world model, shortened (the full run is a benchmark):
10 GRPO steps of 8 prompts x 8 completions at the demo's own learning rate, 20 held-out problems x 4.

The run is deterministic for a seed, and this small one already learns: held-out pass@1 rose in each
of seeds 0, 1, 2 (0.150 -> 0.388, 0.125 -> 0.425, 0.125 -> 0.388), and so did the training reward
and the response length (first vs last quarter of training)."""

import contextlib
import io
import json
import math

import pytest

from r1kit.cli import main as cli_main
from r1kit.tasks import extract_number, get_task

STEPS, EVAL_EVERY, K, PROBLEMS, SUB = 10, 5, 4, 20, 10
BEHAVIOUR = ("pass@1", "format_rate", "pass@1_ci", "cons@k", "pass@k", "mean_response_length", "reflection_rate",
             "language_mixing_rate")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli_main(["demo", "--out", str(out), "--seed", "0", "--steps", str(STEPS), "--prompts_per_step", "8",
                         "--num_generations", "8", "--eval_problems", str(PROBLEMS), "--k", str(K),
                         "--eval_every", str(EVAL_EVERY), "--eval_every_problems", str(SUB),
                         "--max_completion_length", "48", "--num_threads", "1", "--disable_tqdm", "true"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(line) for line in (out / "model" / "metrics.jsonl").read_text().splitlines()]
    return out, summary, metrics, printed.getvalue()


def test_demo_learns(demo):
    _, summary, metrics, _ = demo
    before, after = summary["before"], summary["after"]
    assert after["pass@1"] > before["pass@1"]  # seed 0: 12 of 80 samples right before, 31 after
    assert after["cons@k"] >= before["cons@k"]
    trends = summary["trends"]
    assert trends["reward"]["rose"] and trends["reward"]["last_quarter"] > trends["reward"]["first_quarter"]
    assert trends["completions/mean_length"]["rose"]  # Figure 3 in miniature: the answers get longer
    assert after["mean_response_length"] > before["mean_response_length"]
    # the trend is the mean training reward of the first vs the last quarter of the steps (2 of 10)
    rewards = [m["reward"] for m in metrics]
    assert trends["reward"]["first_quarter"] == pytest.approx(sum(rewards[:2]) / 2)
    assert trends["reward"]["last_quarter"] == pytest.approx(sum(rewards[-2:]) / 2)


def test_demo_summary_and_curves(demo):
    out, summary, metrics, printed = demo
    assert summary["steps"] == STEPS and summary["k"] == K and summary["num_problems"] == PROBLEMS
    assert summary["seed"] == 0 and summary["task"] == "arithmetic" and summary["model"] == "r1kit:tiny-base"
    for side in ("before", "after"):
        assert set(summary[side]) == set(BEHAVIOUR)
        for key in BEHAVIOUR:
            value = summary[side][key]
            assert all(math.isfinite(v) and 0 <= v for v in (value if key == "pass@1_ci" else [value])), (side, key)
        lo, hi = summary[side]["pass@1_ci"]
        assert 0.0 <= lo <= summary[side]["pass@1"] <= hi <= 1.0
        assert summary[side]["pass@1"] <= summary[side]["pass@k"]
        # pass@1 is a mean over PROBLEMS x K samples: a whole number of right samples
        assert summary[side]["pass@1"] * PROBLEMS * K == pytest.approx(round(summary[side]["pass@1"] * PROBLEMS * K))
    # one training-metrics row per step; the held-out curve at step 0 and every EVAL_EVERY steps
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    curve = summary["eval_curve"]
    assert [c["step"] for c in curve] == [0, 5, 10]
    assert [m["eval/pass@1"] for m in metrics if "eval/pass@1" in m] == [c["pass@1"] for c in curve[1:]]
    assert all(0.0 <= c["pass@1"] <= 1.0 for c in curve)
    # the report: every curve, and the before/after table with the summary's own numbers
    html = (out / "report.html").read_text()
    for png in ("heldout.png", "heldout_format.png", "format.png", "reward.png", "length.png", "reflection.png",
                "language.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f'src="{png}"' in html
    b, a = summary["before"], summary["after"]
    assert f"<tr><td>pass@1</td><td>{b['pass@1']:.3f}</td><td>{a['pass@1']:.3f}</td></tr>" in html
    assert f"<tr><td>cons@{K}</td><td>{b['cons@k']:.3f}</td><td>{a['cons@k']:.3f}</td></tr>" in html
    assert f"<tr><td>format rate</td><td>{b['format_rate']:.3f}</td><td>{a['format_rate']:.3f}</td></tr>" in html
    assert all(0.0 <= c["format_rate"] <= 1.0 for c in curve)
    assert [m["eval/format_rate"] for m in metrics if "eval/format_rate" in m] == [c["format_rate"] for c in curve[1:]]
    # self-correction counts before and after, consistent with each other and in the report
    for side in ("before", "after"):
        sc = summary["self_correction"][side]
        assert sc["responses"] == PROBLEMS * K and sc["rechecking_responses"] <= sc["responses"]
        assert sc["rechecks_changing_a_step"] <= sc["rechecks"] and sum(sc["recheck_kinds"].values()) == sc["rechecks"]
        assert sc["wrong_answers_fixed"] <= sc["recheck_kinds"]["fix"]
        assert sc["right_answers_broken"] <= sc["recheck_kinds"]["break"]
    assert "Self-correction (held-out)" in html
    # the table printed at the end carries the same numbers
    assert f"{b['pass@1']:>10.3f}{a['pass@1']:>10.3f}" in printed


def test_demo_samples_are_scored_completions(demo):
    out, _, _, _ = demo
    rows = get_task("arithmetic").dataset("test", PROBLEMS, seed=0)  # the demo's held-out problems
    samples = [json.loads(line) for line in (out / "samples_after.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * K  # the first 4 problems' samples
    assert [s["problem"] for s in samples] == [p for p in range(4) for _ in range(K)]
    task = get_task("arithmetic")
    for s in samples:
        assert s["completion"].strip() and s["length"] > 0 and s["finish_reason"] in ("eos", "stop", "length")
        assert s["answer"] == extract_number(s["completion"])
        assert s["score"] == task.score(s["completion"], rows[s["problem"]])  # the task's own verifier
    assert any(s["score"] == 1.0 for s in samples)  # the trained model gets some right
    from r1kit.tiny_world.demo import format_rate
    from r1kit.rewards.format import is_r1_format
    assert format_rate(samples) == sum(is_r1_format(s["completion"].strip()) for s in samples) / len(samples)
