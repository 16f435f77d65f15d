"""Tests for r1kit.rewards: accuracy, format, tag_count, soft_overlong, language, registry, scorer."""

import logging
import math
import sys
import threading
import time

import psutil
import pytest

from r1kit.rewards import _worker
from r1kit.rewards import (
    accuracy, extract_answer, extract_answer_lenient, format_reward, get_reward,
    language_mixing_rate, language_reward, list_rewards, make_format_reward, make_language_reward,
    register_reward, soft_overlong, tag_count,
)
from r1kit.rewards.math import MAX_ANSWER_CHARS
from r1kit.rewards.runner import reward_metrics, score_completions


def chat(text):
    return [{"role": "assistant", "content": text}]


def acc(completion, gold):
    return accuracy([""], [completion], solution=[gold])[0]


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("completion, gold, expected", [
    ("<think>6*7</think><answer>42</answer>", "42", 1.0),
    ("<answer>42.0</answer>", "42", 1.0),
    ("\\boxed{42}", "42.0", 1.0),
    ("so the answer is \\boxed{42}.", "\\boxed{42}", 1.0),
    ("<answer>41</answer>", "42", 0.0),
    ("I think it is 42", "42", 0.0),                        # no tag, no box → failed to answer
    ("<answer>42", "42", 0.0),                              # unclosed tag
    ("<answer></answer>", "42", 0.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),                  # nested braces
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", 1.0),
    ("<answer>\\boxed{3}</answer>", "3", 1.0),
    ("<answer>x^2+1</answer>", "1+x^2", 1.0),
    ("<answer>\\{1,2\\}</answer>", "\\{2,1\\}", 1.0),
    ("<answer>1,000</answer>", "1000", 1.0),                # thousands separator
    ("<answer>$1000$</answer>", "1,000", 1.0),
    ("<answer>72 dollars</answer>", "72", 1.0),             # one number with a unit
    ("<answer>5 or 72</answer>", "72", 0.0),                # hedging is not rewarded
    ("<answer>1, 2, 72</answer>", "72", 0.0),
    ("<answer>1</answer> then <answer>2</answer>", "2", 1.0),  # the last answer counts
    ("<answer>1</answer> then <answer>2</answer>", "1", 0.0),
    ("\\boxed{1} no, \\boxed{2}", "2", 1.0),
    ("<answer>" + "1" * 2000 + "</answer>", "1" * 2000, None),  # gold over the length cap
    ("<answer>" + "1" * 2000 + "</answer>", "42", 0.0),          # answer over the length cap
])
def test_accuracy_table(completion, gold, expected):
    assert acc(completion, gold) == expected


@pytest.mark.parametrize("gold", ["", "   ", None, "???", "\\boxed{}"])
def test_unparsable_gold_is_none(gold):
    assert acc("<answer>42</answer>", gold) is None
    assert acc("<answer>???</answer>", gold) is None  # never 1.0, even for a matching string


def test_accuracy_without_solution_column_is_none():
    assert accuracy(["q"], ["<answer>1</answer>"]) == [None]
    assert accuracy(["q"] * 2, ["<answer>1</answer>"] * 2, solution="1") == [1.0, 1.0]  # broadcast
    with pytest.raises(ValueError, match="solution"):
        accuracy(["q"] * 2, ["<answer>1</answer>"] * 2, solution=["1"])


@pytest.mark.parametrize("huge", ["10^{10^{10}}", "9^{9^{9}}", "(10^{10})!", "10^{-10^{10}}",
                                  "10^{10^{10}}-10^{10^{10}}+42", "10^{10^{10^{10^{10}}}}"])
def test_huge_answer_is_wrong_without_being_compared(huge, monkeypatch):
    """The size guard scores an answer with ~10^10 digits 0.0 before math-verify's `verify`, where
    sympy would compare (and so compute) it; an ordinary wrong answer does reach `verify`."""
    import math_verify

    compared = []
    real_verify = math_verify.verify  # r1kit.rewards.math imports it at each call: the spy is used

    def spy(gold, pred, **kw):
        compared.append(pred)
        return real_verify(gold, pred, **kw)

    monkeypatch.setattr(math_verify, "verify", spy)
    assert acc(f"\\boxed{{{huge}}}", "42") == 0.0
    assert compared == []
    assert acc("\\boxed{41}", "42") == 0.0 and len(compared) == 1  # the spy is on the path taken


def test_accuracy_in_non_main_thread():
    comps = ["<answer>42</answer>", "<answer>\\frac{1}{2}</answer>", "<answer>7</answer>",
             "\\boxed{10^{10^{10}}}"]
    result, errors = {}, []

    def work():
        try:
            result["r"] = accuracy(None, comps, solution=["42", "0.5", "8", "42"])
        except BaseException as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(20)
    assert not errors and result["r"] == [1.0, 1.0, 0.0, 0.0]


def test_extract_answer():
    assert extract_answer("<answer> 7 </answer>") == "7"
    assert extract_answer("\\boxed{\\frac{a}{b}} and \\boxed{x^{2}}") == "x^{2}"
    assert extract_answer("\\boxed{1} then \\boxed{2") == "1"  # the last box is unbalanced
    assert extract_answer("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"  # escaped braces are literal
    assert extract_answer("<answer>a</answer> \\boxed{b}") == "a"  # the tag wins
    assert extract_answer("no answer 12") is None
    assert extract_answer_lenient("so 1,234.5 apples, then 12 more.") == "12"
    assert extract_answer_lenient("total: 1,234") == "1234"
    assert extract_answer_lenient("<answer>x</answer> 5") == "x"
    assert extract_answer_lenient("nothing") is None


# ----------------------------------------------------------------------------- format / tags
GOOD = "<think>reason</think>\n<answer>42</answer>"


@pytest.mark.parametrize("completion, fmt, tags", [
    (GOOD, 1.0, 1.0),
    ("  <think>r</think><answer>4</answer>\n", 1.0, 1.0),
    ("<think>r</think> trailing <answer>4</answer>", 0.0, 1.0),   # text between the blocks
    ("<think>r</think><answer>4</answer> more", 0.0, 1.0),        # text after the answer
    ("intro <think>r</think><answer>4</answer>", 0.0, 1.0),       # text before
    ("<think>r</think>", 0.0, 0.5),                               # missing answer
    ("<answer>4</answer>", 0.0, 0.5),                             # missing think
    ("<think>r<answer>4</answer></think>", 0.0, 1.0),             # nested
    ("<answer>4</answer><think>r</think>", 0.0, 1.0),             # wrong order
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0, 0.5),  # duplicated
    ("<think>r</think><answer>4</answer><answer>5</answer>", 0.0, 0.5),
    ("<think>r<answer>4</answer>", 0.0, 0.75),
    ("", 0.0, 0.0),
])
def test_format_and_tag_count(completion, fmt, tags):
    assert format_reward(["q"], [completion]) == [fmt]
    assert tag_count(["q"], [completion]) == [tags]
    assert format_reward([[{"role": "user", "content": "q"}]], [chat(completion)]) == [fmt]


def test_prefilled_think():
    prompt = "<|User|>What is 6*7?<|Assistant|><think>\n"
    body = "6*7=42</think>\n<answer>42</answer>"
    assert format_reward([prompt], [body]) == [1.0]
    assert tag_count([prompt], [body]) == [1.0]
    assert format_reward([prompt], ["<think>" + body]) == [1.0]  # repeating <think> is tolerated
    assert format_reward(["plain prompt"], [body]) == [0.0]
    chat_prompt = [{"role": "user", "content": "What is 6*7?"}]  # template pre-fill not visible
    assert format_reward([chat_prompt], [chat(body)]) == [0.0]
    assert make_format_reward(think_prefilled=True)([chat_prompt], [chat(body)]) == [1.0]


def traced_lines(fn, *args, **kw) -> int:
    """Python lines executed by `fn(*args, **kw)` (sys.settrace): a deterministic measure of its work,
    the same on any machine, however busy."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: local)
    try:
        fn(*args, **kw)
    finally:
        sys.settrace(previous)
    return count


def answer_checks(prompts, completions, **kw):
    accuracy(prompts, completions, solution=["42"])
    extract_answer_lenient(completions[0])


# long and adversarial completions, as a function of a repeat count m (300k characters at the sizes below)
LONG = {
    "long_good": lambda m: "<think>" + "step " * m + "</think><answer>\\boxed{42}</answer>",
    "think_opens": lambda m: "<think>" * m,
    "close_open_pairs": lambda m: "</think><answer>" * m,
    "open_boxes": lambda m: "\\boxed{" * m,
    "closed_boxes": lambda m: "\\boxed{1} " * m,
    "open_braces": lambda m: "{" * m,
    "answer_opens": lambda m: "<answer>" * m + "</answer>",
    "number_list": lambda m: "1," * m,
    "han_latin": lambda m: "汉字ab" * m,
}
SIZE_300K = {"long_good": 60000, "think_opens": 40000, "close_open_pairs": 20000, "open_boxes": 40000,
             "closed_boxes": 30000, "open_braces": 300000, "answer_opens": 40000, "number_list": 150000,
             "han_latin": 75000}


@pytest.mark.parametrize("family", list(LONG))
@pytest.mark.parametrize("fn", [format_reward, tag_count, language_reward, answer_checks],
                         ids=["format", "tag_count", "language", "accuracy+lenient"])
def test_linear_work_on_long_completions(fn, family):
    """Work (Python lines run) grows linearly with the completion: for sizes m, 2m, 4m the second
    increase is twice the first (quadratic work would make it 4x). Deterministic, unlike a timing.
    Not counted: the work inside one C call (a str.find/count, a regex scan); the rewards keep to
    linear scans there (module docs: no backtracking regexes), which this test cannot check."""
    make = LONG[family]
    m = SIZE_300K[family] // 12  # 4m: a third of the 300k size, enough for a quadratic term to show
    fn(["q"], [make(4 * m)], solution=["42"])  # warm caches (math-verify, the script table) first
    w1, w2, w4 = (traced_lines(fn, ["q"], [make(k * m)], solution=["42"]) for k in (1, 2, 4))
    assert w4 - w2 <= 2.1 * (w2 - w1) + 100, (w1, w2, w4)


def test_long_completions_score_right_and_parse_only_short_answers(monkeypatch):
    """At 300k characters: the rewards still score (the long good answer is right), and math-verify's
    parser, the costly part, never sees more than a capped answer whatever the completion's length."""
    import math_verify

    parsed = []
    real_parse = math_verify.parse

    def spy(text, **kw):
        parsed.append(len(text))
        return real_parse(text, **kw)

    monkeypatch.setattr(math_verify, "parse", spy)
    for family, make in LONG.items():
        text = make(SIZE_300K[family])
        assert len(text) >= 280000, family
        for fn in (format_reward, tag_count, language_reward):
            (value,) = fn(["q"], [text], solution=["42"])
            assert 0.0 <= value <= 1.0, (fn.__name__, family)
        assert accuracy(["q"], [text], solution=["42"]) == [1.0 if family == "long_good" else 0.0], family
        assert extract_answer_lenient(text) in (None, "1", "\\boxed{42}"), family  # a short answer or none
    long_good = LONG["long_good"](SIZE_300K["long_good"])
    assert format_reward(["q"], [long_good]) == [1.0] and tag_count(["q"], [long_good]) == [1.0]
    assert parsed and max(parsed) <= MAX_ANSWER_CHARS + len("\\boxed{}")


# ----------------------------------------------------------------------------- overlong shaping
def test_soft_overlong():
    fn = soft_overlong(100, 20)
    comps = ["a" * 50, "a" * 80, "a" * 90, "a" * 100, "a" * 150]
    assert fn(None, comps) == [0.0, 0.0, -0.5, -1.0, -1.0]
    ids = [[1] * 10, [1] * 90]  # token counts win over characters
    assert fn(None, ["x" * 500, "x"], completion_ids=ids) == [0.0, -0.5]
    default = get_reward("soft_overlong")
    ids = [[1] * 50, [1] * 70, [1] * 100]  # limit 80, buffer 80 // 4 = 20: ramp from 60 to 80
    assert default(None, ["x"] * 3, completion_ids=ids, max_completion_length=80) == [0.0, -0.5, -1.0]
    assert default(None, ["x"]) == [None]  # no limit known
    with pytest.raises(ValueError):
        soft_overlong(10, 20)


# ----------------------------------------------------------------------------- language
def test_language_reward():
    en = "<think>Let x be the sum, so x equals 10.</think><answer>10</answer>"
    mixed = "<think>我们 compute the sum</think><answer>10</answer>"  # 2 Han chars, 3 English words
    r = language_reward(None, [en, mixed, "<think>12 + 30 = 42</think>", chat(mixed)])
    assert r[0] == 1.0 and r[1] == pytest.approx(3 / 5) and r[2] == 1.0 and r[3] == r[1]
    assert language_reward(None, [mixed], language=["zh"]) == [pytest.approx(2 / 5)]
    assert make_language_reward("ru")(None, ["Привет мир and hello"]) == [pytest.approx(2 / 4)]
    assert language_reward(None, ["θ = π/2 so \\frac{a}{b} holds"]) == [1.0]  # math is neutral
    assert language_reward(None, ["Ελληνικά words"], language=["xx-unknown"]) == [None]
    assert language_mixing_rate([en, mixed, chat("Привет world"), "42"]) == pytest.approx(0.5)
    assert language_mixing_rate([]) == 0.0


# ----------------------------------------------------------------------------- registry
@register_reward("test_length_reward")
def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def test_registry():
    assert {"accuracy", "format", "tag_count", "soft_overlong", "language"} <= set(list_rewards())
    assert get_reward("accuracy") is accuracy
    assert get_reward("r1kit.rewards.format:tag_count") is tag_count
    assert get_reward("r1kit.rewards.format.tag_count") is tag_count
    assert get_reward("test_length_reward") is length_reward
    with pytest.raises(ValueError, match="no_such_reward.*accuracy"):
        get_reward("no_such_reward")
    with pytest.raises(ValueError, match="nopkg.mod:fn"):
        get_reward("nopkg.mod:fn")


# ----------------------------------------------------------------------------- scorer
def raises(prompts, completions, **kw):
    raise RuntimeError("boom")


def wrong_length(prompts, completions, **kw):
    return [1.0]


def bad_values(prompts, completions, **kw):
    return [1.0, float("nan"), float("inf"), "0.5"][: len(completions)]


def all_none(prompts, completions, **kw):
    return [None] * len(completions)


def halves(prompts, completions, **kw):
    return [0.5, None, 0.25, None][: len(completions)]


def sleeps_forever(prompts, completions, **kw):
    time.sleep(3600)


def test_scorer_survives_bad_functions(caplog):
    comps = ["<think>a</think><answer>1</answer>", "x", "<answer>2</answer>", "<answer>3</answer>"]
    funcs = ["accuracy", "format", raises, wrong_length, bad_values, all_none, halves]
    weights = [2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 4.0]
    with caplog.at_level(logging.WARNING, logger="r1kit.rewards"):
        b = score_completions(funcs, weights, ["q"] * 4, comps, {"solution": ["1", "1", "9", ""]})
    assert b.names == ["accuracy", "format", "raises", "wrong_length", "bad_values", "all_none", "halves"]
    assert b.per_func.shape == (4, 7) and b.per_func.dtype.is_floating_point
    assert b.errors == {"accuracy": 0, "format": 0, "raises": 4, "wrong_length": 4,
                        "bad_values": 3, "all_none": 0, "halves": 0}
    pf = b.per_func.tolist()
    assert pf[0][:2] == [1.0, 1.0] and pf[1][:2] == [0.0, 0.0] and pf[2][:2] == [0.0, 0.0]
    assert math.isnan(pf[3][0]) and pf[3][1] == 0.0  # empty gold: accuracy cannot score
    expected = [2 * 1 + 0.5 * 1 + 3 * 1.0 + 4 * 0.5, 0.0, 0.0 + 4 * 0.25, 0.0]
    for got, want in zip(b.total.tolist(), expected):
        assert got == pytest.approx(want)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("'raises'" in m and "boom" in m for m in messages) == 1
    assert sum("'wrong_length'" in m and "1 values for 4" in m for m in messages) == 1
    assert sum("'bad_values'" in m and "row 1" in m and "3 of 4" in m for m in messages) == 1
    assert not any("all_none" in m for m in messages)
    m = reward_metrics(b)
    assert m["rewards/halves/mean"] == pytest.approx(0.375)
    assert m["rewards/halves/std"] == pytest.approx(math.sqrt(0.03125))
    assert "rewards/all_none/mean" not in m and "rewards/raises/mean" not in m
    assert m["reward"] == pytest.approx(sum(expected) / 4)


def test_scorer_total_nan_when_nothing_scores():
    b = score_completions([all_none, raises], [1.0, 1.0], None, [chat("a"), chat("b")], {})
    assert all(math.isnan(x) for x in b.total.tolist())
    assert reward_metrics(b) == {}
    b = score_completions(["format"], None, ["q"], [chat(GOOD)], None, names=["fmt"])
    assert b.names == ["fmt"] and b.total.tolist() == [1.0]
    b = score_completions(["r1kit.rewards.format:tag_count", tag_count], [1.0, 2.0], None, [GOOD], {})
    assert b.names == ["tag_count", "tag_count_2"] and b.total.tolist() == [3.0]


def worker_children() -> list[psutil.Process]:
    """This process's children, less multiprocessing's resource tracker (one per interpreter)."""
    return [p for p in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())]


def test_scorer_timeout_kills_sleeper(caplog):
    comps = [GOOD, "x"]
    with caplog.at_level(logging.INFO, logger="r1kit.rewards"):
        b = score_completions(["format", sleeps_forever, lambda p, c, **k: [1.0] * len(c)],
                              None, ["q", "q"], comps, {}, names=["format", "sleeper", "lam"],
                              timeout_s=1.0)
    assert b.per_func[:, 0].tolist() == [1.0, 0.0]  # computed in the worker
    assert all(math.isnan(x) for x in b.per_func[:, 1:].flatten().tolist())
    assert b.errors == {"format": 0, "sleeper": 2, "lam": 2}
    messages = [r.getMessage() for r in caplog.records]
    # the deadline's mechanism, step by step: the whole batch passed its deadline (2 rows x 1 s), then
    # each row alone passed its own, and each time the worker running it was killed
    assert any("'sleeper'" in m and "batch deadline of 2 s" in m and "worker killed" in m for m in messages)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings[:2] == ["reward 'sleeper': row 0: passed its 1 s deadline; worker killed",
                            "reward 'sleeper': row 1: passed its 1 s deadline; worker killed"]
    assert len(warnings) == 3 and warnings[2].startswith("reward 'lam' cannot be sent to the worker process "
                                                         "(not picklable)")
    # the killed workers are gone (reaped, no zombie): no worker is kept after one that hung
    assert _worker.worker_pid() is None and worker_children() == []
    # the killed worker is replaced on the next call
    b = score_completions(["format"], None, ["q"], [GOOD], {}, timeout_s=5.0)
    assert b.per_func.tolist() == [[1.0]]
    assert [p.pid for p in worker_children()] == [_worker.worker_pid()]


def test_task_accuracy_uses_the_task_verifier():
    from r1kit.rewards import get_reward

    fn = get_reward("task_accuracy")
    completions = ["so it is 72.", "<answer>71</answer> then 72", "no number", [{"role": "assistant", "content": "72"}]]
    # arithmetic extracts leniently: the <answer> content wins over later numbers; else the last number
    assert fn(None, completions, task=["arithmetic"] * 4, solution=["72"] * 4) == [1.0, 0.0, 0.0, 1.0]
    # countdown checks the equation against its own columns (numbers, target)
    got = fn(None, ["<answer>(3 + 5) * 2</answer>", "<answer>3 * 5 + 2</answer>"], task=["countdown"] * 2,
             numbers=[[3, 5, 2]] * 2, target=[16] * 2, solution=["(3 + 5) * 2"] * 2)
    assert got == [1.0, 0.0]
    assert fn(None, ["72"], solution=["72"]) == [None]  # no task column: cannot score
