"""Acceptance: completions a policy can produce that break naive rewards or loops. Empty, EOS
only, truncated, `\\boxed{10^{10^{10}}}`, 300k characters: every built-in reward returns a number
or None, never raises, hands math-verify only short answers and never compares the power tower, and
the GRPO loop trains on a batch of them with every row counted. (That the rewards' work grows
linearly with the length is measured, in Python lines run, in tests/test_rewards.py.)"""

from __future__ import annotations

import json
import math

import pytest

from r1kit.rewards import score_completions
from r1kit.rewards.math import MAX_ANSWER_CHARS
from r1kit.train.grpo import train
from r1kit.train.tracking import read_metrics

from .conftest import safetensors_of, tiny_cfg

TOWER = "\\boxed{10^{10^{10}}}"
HUGE = 300_000
ADVERSARIAL = {
    "empty": "",
    "eos_only": "<|endoftext|>",  # an engine that keeps special tokens in the text
    "truncated": "<think> 12 + 30 = 4",
    "tower": f"<think> a big one </think> <answer> {TOWER} </answer>",
    "tower_bare": TOWER,
    "300k_letters": "a" * HUGE,
    "300k_digits_answer": "<answer> " + "9" * HUGE + " </answer>",
    "300k_tags": "<think>" * (HUGE // 7),
    "300k_open_boxes": "\\boxed{" * (HUGE // 7),
    "300k_well_formed": "<think> " + "1 + 1 = 2. " * (HUGE // 11) + "</think> <answer> 5 </answer>",
}
BUILTINS = ["accuracy", "format", "tag_count", "language", "soft_overlong"]


@pytest.fixture
def math_verify_calls(monkeypatch):
    """Every text math-verify is asked to parse, and every pair it is asked to compare (r1kit's
    accuracy imports `parse` and `verify` at each call, so these spies are the ones it uses)."""
    import math_verify

    calls = {"parse": [], "verify": []}
    parse, verify = math_verify.parse, math_verify.verify

    def parse_spy(text, **kw):
        calls["parse"].append(text)
        return parse(text, **kw)

    def verify_spy(gold, pred, **kw):
        calls["verify"].append((gold, pred))
        return verify(gold, pred, **kw)

    monkeypatch.setattr(math_verify, "parse", parse_spy)
    monkeypatch.setattr(math_verify, "verify", verify_spy)
    return calls


@pytest.mark.parametrize("conversational", [False, True])
def test_every_builtin_reward_scores_adversarial_completions(conversational, math_verify_calls):
    texts = list(ADVERSARIAL.values())
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    n = len(texts)
    columns = {"solution": ["5"] * n, "completion_ids": [[7] * min(len(t), 8) for t in texts],
               "max_completion_length": [8] * n}
    batch = score_completions(BUILTINS, None, ["What is 2 + 3?"] * n, completions, columns)
    # the costly symbolic parser only ever sees a short answer, never the 300k-character text
    assert max(len(t) for t in math_verify_calls["parse"]) <= MAX_ANSWER_CHARS + len("\\boxed{}")
    # and the power tower is never compared (where sympy would compute its 10^10 digits)
    assert math_verify_calls["verify"] and not any(TOWER[7:-1] in str(pred) for _, pred in math_verify_calls["verify"])
    assert batch.errors == {name: 0 for name in BUILTINS}
    values = batch.per_func  # [n, F], NaN = None (cannot score)
    finite = values[~values.isnan()]
    assert ((finite >= -1) & (finite <= 1)).all()
    acc = dict(zip(ADVERSARIAL, values[:, 0].tolist()))
    assert acc["300k_well_formed"] == 1.0  # long, but right: it still counts
    assert all(acc[k] == 0.0 for k in ADVERSARIAL if k != "300k_well_formed")
    fmt = dict(zip(ADVERSARIAL, values[:, 1].tolist()))
    assert fmt["tower"] == 1.0 and fmt["300k_well_formed"] == 1.0 and fmt["300k_tags"] == 0.0


def test_power_tower_is_never_evaluated(math_verify_calls):
    """10^(10^10) has 10^10 digits: comparing it must not try to compute it, as the answer or as
    the gold one (an unparsable/too big gold answer cannot score, so it is None, not 1.0)."""
    batch = score_completions(["accuracy"], None, ["q"] * 3, [TOWER, TOWER, "\\boxed{10000000000}"],
                              {"solution": ["10^{10^{10}}", "10000000000", "10^{10}"]})
    first, second, third = batch.per_func[:, 0].tolist()
    assert math.isnan(first) and second == 0.0 and third == 1.0
    assert batch.errors == {"accuracy": 0}
    # the tower is parsed (unevaluated) and then refused by the size guard: math-verify compares
    # only the third row's small pair, 10^10 with 10000000000
    assert any("10^{10^{10}}" in t for t in math_verify_calls["parse"])
    assert [str(pred) for _, pred in math_verify_calls["verify"]] == ["[10000000000, '10000000000']"]


def script(k: int):
    """8 completions per step (4 prompts x 2): one of each kind, as (ids, text, finish_reason)."""
    kinds = [([], "", "stop"),                                                   # empty
             ([0], "", "eos"),                                                   # EOS only (id 0)
             ([40, 41, 42, 43, 44, 45], ADVERSARIAL["truncated"], "length"),    # truncated
             ([50, 51, 0], ADVERSARIAL["tower"], "eos"),
             ([60] * 6, ADVERSARIAL["300k_digits_answer"], "length"),           # 300k chars
             ([61] * 6, ADVERSARIAL["300k_well_formed"], "length"),
             ([70, 71, 0], "<think> 2 + 3 = 5 </think> <answer> 5 </answer>", "eos"),
             ([72, 0], "<answer> 6 </answer>", "eos")]
    return kinds[k]


def test_the_loop_trains_on_adversarial_completions(tmp_path, scripted_engine):
    engine = scripted_engine(script)
    out = train(tiny_cfg(tmp_path, reward_funcs=["accuracy", "format", "tag_count", "acceptance.bad_rewards:digits"],
                         gradient_accumulation_steps=2, max_steps=2, beta=0.04, save_steps=1))
    assert engine.calls == 2  # one rollout per step: no row was retried or re-generated
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert None not in r.values()  # nothing became NaN or inf
        assert r["completions/min_length"] == 0 and r["completions/max_length"] == 6
        assert r["completions/clipped_ratio"] == 3 / 8
        assert all(r[f"reward_errors/{n}"] == 0 for n in ("accuracy", "format", "tag_count", "digits"))
        assert r["frac_reward_zero_std"] < 1 and math.isfinite(r["loss"]) and r["grad_norm"] > 0
    logged = [json.loads(line) for line in (out / "completions" / "step-000002.jsonl").read_text().splitlines()]
    assert len(logged) == 8 and len(logged[4]["completion"]) == len(ADVERSARIAL["300k_digits_answer"])
    assert logged[0]["completion"] == "" and logged[0]["length"] == 0
    assert all(v.isfinite().all() for v in safetensors_of(out).values())
