"""The reasoning-gym adapter (rg:NAME): exact-match accuracy vs partial credit, n rows or a loud error,
and the dataset's own configuration from the spec string. Values checked by hand in the comments."""

import itertools
import json
import re
from types import SimpleNamespace

import pytest

pytest.importorskip("reasoning_gym")

from r1kit.data.datasets import load_dataset_rows  # noqa: E402
from r1kit.eval.runner import evaluate  # noqa: E402
from r1kit.rewards import get_reward  # noqa: E402
from r1kit.tasks import get_task, split_of  # noqa: E402

SMALL = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1"


def _row(task, answer):
    """A row of `task` whose reference answer is `answer` (the question is irrelevant to scoring)."""
    row = dict(task.dataset("test", 1)[0])
    entry = json.loads(row["rg_entry"])
    entry["answer"] = answer
    row["rg_entry"], row["solution"] = json.dumps(entry), answer
    return row


def test_partial_credit_is_not_accuracy():
    t = get_task("rg:basic_arithmetic")
    two, one = _row(t, "2"), _row(t, "1")
    # reasoning-gym's base score_answer: the gold string inside the answer scores len(gold) / len(answer)
    assert t.partial_credit("<answer>28</answer>", two) == 0.5
    assert t.partial_credit("<answer>1397</answer>", one) == 0.25
    assert t.score("<answer>28</answer>", two) == 0.0 and t.score("<answer>1397</answer>", one) == 0.0
    assert t.score("<answer>2</answer>", two) == 1.0 and t.partial_credit("<answer>2</answer>", two) == 1.0
    # no tags and a numeric gold: the last number is the answer ("so 3 - 1 = 2." -> "2")
    assert t.score("3 - 1 = 2, so the answer is 2.", two) == 1.0
    assert t.score("The answer is 28.", two) == 0.0


def test_task_accuracy_is_exact_and_rg_partial_credit_is_its_own_reward():
    spec = "rg:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=+"
    ds = load_dataset_rows("r1kit:" + spec, "train", num_rows=4)
    rows = ds.to_list()
    gold = rows[0]["solution"]
    comps = [f"<answer>{gold}</answer>", f"<answer>{gold}0</answer>"]  # right; gold inside a longer string
    cols = {k: [rows[0][k]] * 2 for k in rows[0]}
    acc = get_reward("task_accuracy")(prompts=["p", "p"], completions=comps, **cols)
    part = get_reward("rg_partial_credit")(prompts=["p", "p"], completions=comps, **cols)
    assert acc == [1.0, 0.0]
    assert part == [1.0, pytest.approx(len(gold) / (len(gold) + 1))]
    chat = [[{"role": "assistant", "content": c}] for c in comps]  # conversational completions, as TRL passes them
    assert get_reward("rg_partial_credit")(prompts=["p", "p"], completions=chat, **cols) == part
    # rows of other tasks are not scored by the rg reward
    assert get_reward("rg_partial_credit")(prompts=["p"], completions=["1"], task=["arithmetic"]) == [None]


class _Engine:
    """Returns fixed completions, k per prompt, in order."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompt_ids, params):
        return [SimpleNamespace(text=self.texts[i * params.n + j], prompt_index=i, completion_ids=[0],
                                finish_reason="stop") for i in range(len(prompt_ids)) for j in range(params.n)]


def test_eval_metrics_count_only_fully_right_samples():
    """A verifier returning partial credit (0.5) must not raise pass@1: 1 right of 4 is 0.25, not
    (1 + 0.5 + 0.5 + 0) / 4 = 0.5; pass@4 >= pass@1; the majority answer "28" is wrong, so cons@4 = 0."""
    row = {"solution": "2"}

    def score(text, row):
        return {"2": 1.0, "28": 0.5}.get(text, 0.0)

    res = evaluate(_Engine(["28", "28", "2", "7"]), [[1]], [row], score, lambda s: s, k=4)
    assert res.pass_at_1 == 0.25 and res.pass_at_k == 1.0 and res.cons_at_k == 0.0
    res = evaluate(_Engine(["28", "28", "28", "7"]), [[1]], [row], score, lambda s: s, k=4)
    assert res.pass_at_1 == 0.0 and res.pass_at_k == 0.0


def test_rows_are_distinct_and_as_many_as_asked():
    import reasoning_gym

    # why a naive adapter found 17 of 40: item i of seed s is drawn from Random(s + i), so seed s + 1 repeats seed s
    a, b = (reasoning_gym.create_dataset("basic_arithmetic", size=3, seed=s) for s in (7, 8))
    assert a[1]["question"] == b[0]["question"] and a[2]["question"] == b[1]["question"]
    t = get_task("rg:basic_arithmetic")
    for split, n in (("test", 40), ("train", 300)):
        rows = t.dataset(split, n)
        assert len(rows) == n and len({r["key"] for r in rows}) == n
        assert all(split_of(r["key"]) == split for r in rows)
    assert t.dataset("test", 40) == t.dataset("test", 40)  # deterministic
    assert t.dataset("test", 40, seed=1) != t.dataset("test", 40)


def test_a_small_item_space_fails_loudly_on_test_and_reuses_on_train(caplog):
    # two one-digit terms, + or -: 10 * 10 * 2 = 200 questions; count the test ones by hand
    fmt = "State the final answer to the following arithmetic problem: {} {} {} ="
    space = [fmt.format(a, op, b) for a, op, b in itertools.product(range(10), "+-", range(10))]
    n_test = sum(split_of("rg:chain_sum:" + q) == "test" for q in space)
    t = get_task(SMALL)
    rows = t.dataset("test", n_test)
    assert len({r["key"] for r in rows}) == n_test and {r["prompt"] for r in rows} <= set(space)
    with pytest.raises(ValueError, match=rf"rg:chain_sum.*asked for {n_test + 1} test problems, found only {n_test}"):
        t.dataset("test", n_test + 1)
    with caplog.at_level("WARNING", logger="r1kit.tasks.rg"):
        train = t.dataset("train", 250)
    assert len(train) == 250 and len({r["key"] for r in train}) == 200 - n_test
    assert f"found only {200 - n_test}" in caplog.text and "reuses" in caplog.text


def test_config_from_the_spec_string():
    t = get_task("rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=2&operators=+,-")
    assert t.config == {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ("+", "-")}
    # the canonical name (sorted keys) is what rows carry, and it rebuilds the same task
    assert t.name == "rg:basic_arithmetic?max_digits=2&max_terms=2&min_digits=1&min_terms=2&operators=+,-"
    assert get_task(t.name).config == t.config
    assert get_task("rg:basic_arithmetic", min_terms=2, max_terms=2, max_digits=2, operators=["+", "-"]).config == {
        "min_terms": 2, "max_terms": 2, "max_digits": 2, "operators": ("+", "-")}
    for row in t.dataset("test", 30):
        nums = re.findall(r"\d+", row["prompt"])
        assert len(nums) == 2 and all(len(x) <= 2 for x in nums), row["prompt"]
        assert "*" not in row["prompt"] and "/" not in row["prompt"]
        assert row["task"] == t.name and t.score(f"<answer>{row['solution']}</answer>", row) == 1.0
    legs = get_task("rg:leg_counting?min_animals=1&max_animals=2&max_instances=3")
    for row in legs.dataset("test", 20):
        listed = row["prompt"].split("if you have ")[1].rstrip("?\n").split(", ")
        assert 1 <= len(listed) <= 2 and all(1 <= int(x.split()[0]) <= 3 for x in listed), row["prompt"]
    # a config field named like r1kit's difficulty goes to reasoning-gym (which takes only 1.0 for this one)
    assert get_task("rg:gsm_symbolic?difficulty=1.0").config == {"difficulty": 1.0}
    with pytest.raises(ValueError, match=r"rejects this configuration: assert 1.0 <= self.difficulty"):
        get_task("rg:gsm_symbolic?difficulty=0.5")


def test_config_errors_name_the_key_and_the_fields():
    fields = "min_terms, max_terms, min_digits, max_digits, allow_negation"
    with pytest.raises(ValueError, match=f"'bogus' is not a config field; chain_sum's config fields are: {fields}"):
        get_task("rg:chain_sum?bogus=1")
    with pytest.raises(ValueError, match="'size' is set by r1kit"):
        get_task("rg:chain_sum?size=3")
    with pytest.raises(ValueError, match="max_digits: 'x' is not an int"):
        get_task("rg:chain_sum?max_digits=x")
    with pytest.raises(ValueError, match="allow_negation: 'maybe' is not true or false"):
        get_task("rg:chain_sum?allow_negation=maybe")
    with pytest.raises(ValueError, match="reasoning-gym rejects this configuration"):
        get_task("rg:chain_sum?min_terms=5&max_terms=2")
    with pytest.raises(ValueError, match="given twice"):
        get_task("rg:chain_sum?max_terms=2", max_terms=3)
    with pytest.raises(KeyError, match="did you mean chain_sum"):
        get_task("rg:chain_sums")


def test_eval_cli_on_rg_delivers_the_problems_and_consistent_metrics(tmp_path):
    """The issue's command: pass@k is never below pass@1 now, num_problems is honoured, and the partial
    credit is reported under its own name."""
    from r1kit.eval.cli_eval import EvalConfig, run_eval

    out = run_eval(EvalConfig(model="r1kit:tiny-base", task="rg:basic_arithmetic", n=2, num_problems=40,
                              max_completion_length=48, out=str(tmp_path / "ev")))
    res = json.loads((out / "results.json").read_text())
    assert res["num_problems"] == 40 and res["pass@k"] >= res["pass@1"]
    assert res["partial_credit"] >= res["pass@1"]
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 80 and {s["score"] for s in samples} <= {0.0, 1.0}
