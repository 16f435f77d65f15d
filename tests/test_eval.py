"""`r1kit eval`: pass@k against hand values, majority vote, results.json on a tiny model, a jsonl file task."""

import itertools
import json
import math

import pytest

import r1kit.rollout
from r1kit.cli import main as cli_main
from r1kit.eval import bootstrap_ci, majority_vote, pass_at_k
from r1kit.eval.cli_eval import EvalConfig, run_eval, sample_size_warnings
from r1kit.rollout import Completion

KEYS = ["pass@1", "pass@1_ci", "cons@k", "pass@k", "k", "num_problems", "mean_response_length",
        "reflection_rate", "language_mixing_rate", "model", "sampling"]



def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2) = 0.7
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k: every k-subset holds a correct sample
    assert pass_at_k(4, 4, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    # against the definition: the share of k-subsets of the n samples with at least one correct one
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(200, 13, 100) == pytest.approx(1 - math.comb(187, 100) / math.comb(200, 100))
    for bad in ((5, 6, 1), (5, 2, 0), (3, 1, 4)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_majority_vote_and_interval():
    assert majority_vote(["3", "5", "5", None, "3", "5"]) == "5"
    assert majority_vote(["3", "5", "5", "3"]) == "3"  # tie: the answer seen first
    assert majority_vote([None, ""]) is None
    lo, hi = bootstrap_ci([0.0, 1.0, 0.5, 1.0, 0.0, 0.25])
    assert 0.0 <= lo < sum([0.0, 1.0, 0.5, 1.0, 0.0, 0.25]) / 6 < hi <= 1.0
    assert bootstrap_ci([0.5] * 10) == [0.5, 0.5]
    assert len(sample_size_warnings(2, 1000)) == 1 and "k=2" in sample_size_warnings(2, 1000)[0]
    assert sample_size_warnings(8, 200) == [] and len(sample_size_warnings(4, 10)) == 1


def test_eval_tiny_model_on_task_writes_results(tmp_path):
    out = tmp_path / "ev"
    argv = ["eval", "--model", "r1kit:tiny", "--task", "arithmetic", "--n", "4", "--num_problems", "3",
            "--out", str(out), "--max_completion_length", "8"]
    assert cli_main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    for key in KEYS:
        assert key in res, key
    for key in ("pass@1", "cons@k", "pass@k", "mean_response_length", "reflection_rate", "language_mixing_rate"):
        assert isinstance(res[key], (int, float)) and math.isfinite(res[key]), key
    assert res["k"] == 4 and res["num_problems"] == 3 and len(res["pass@1_ci"]) == 2
    assert res["sampling"]["temperature"] == 0.6 and res["sampling"]["top_p"] == 0.95
    assert res["warnings"]  # 12 samples: too few, and it says so
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and {"problem", "completion", "answer", "score", "solution"} <= set(samples[0])
    assert cli_main(["eval", "--model", "r1kit:tiny", "--task", "no_such_task", "--out", str(out)]) == 1


class ScriptedEngine:
    """Answers problem i with the i-th script (a list of k completion texts)."""

    def __init__(self, scripts):
        self.scripts = scripts

    def generate(self, prompt_ids, params):
        return [Completion(i, p, [1] * len(t), [0.0] * len(t), "eos", t)
                for i, p in enumerate(prompt_ids) for t in self.scripts[i][:params.n]]

    def update_weights(self, model):
        pass


def test_jsonl_file_task_scored_by_math_verify(tmp_path, monkeypatch):
    data = tmp_path / "problems.jsonl"
    rows = [{"problem": "What is 6 * 7?", "solution": "42"},
            {"problem": "Half of 1?", "solution": "\\frac{1}{2}"},
            {"problem": "Unscorable", "solution": ""}]  # no parsable gold: left out, not scored 0 or 1
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scripts = [["<answer>42</answer>", "<answer> 42 </answer>", "<answer>41</answer>", "\\boxed{42}"],
               ["<answer>0.5</answer>", "<answer>3</answer>", "<answer>3</answer>", "<answer>3</answer>"]]
    monkeypatch.setattr(r1kit.rollout, "make_engine", lambda name, model, tok, **kw: ScriptedEngine(scripts))
    out = run_eval(EvalConfig(model="r1kit:tiny", task=str(data), n=4, out=str(tmp_path / "ev")))
    res = json.loads((out / "results.json").read_text())
    assert res["num_problems"] == 2
    assert res["pass@1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert res["cons@k"] == pytest.approx((1 + 0) / 2)  # votes: "42" (right), "3" (wrong)
    assert res["pass@k"] == pytest.approx(1.0)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["score"] for s in samples] == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_presets_need_their_package(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'lighteval\[math\]'"):
        run_eval(EvalConfig(model="some/model", task="aime24", out=str(tmp_path)))
    with pytest.raises(ValueError, match="lm-eval"):
        run_eval(EvalConfig(model="some/model", task="gsm8k", out=str(tmp_path)))
