import ast
import types

import pytest

from r1kit.tasks import countdown, extract_number, get_task, is_test_key, list_tasks
from r1kit.tasks.countdown import MAX_EXPR_CHARS, MAX_LITERAL, MAX_NODES, UnsafeExpression, safe_eval, score_equation

BUILTIN = ["arithmetic", "add", "sub", "mul", "chain", "word", "countdown"]


def test_registry():
    assert set(BUILTIN) <= set(list_tasks())
    assert get_task("r1kit:add").name == "add"
    with pytest.raises(KeyError):
        get_task("nope")
    with pytest.raises(ValueError, match="digits"):
        get_task("add", digits=0)


@pytest.mark.parametrize("name", BUILTIN)
def test_rows_deterministic_and_self_consistent(name):
    t = get_task(name)
    a = t.dataset("train", 50, seed=3)
    assert a == t.dataset("train", 50, seed=3)
    assert a != t.dataset("train", 50, seed=4)
    for row in a[:20]:
        assert isinstance(row["prompt"], str) and isinstance(row["solution"], str)
        assert row["task"] == name and "difficulty" in row
        assert t.score(f"<think> ok </think> <answer> {row['solution']} </answer>", row) == 1.0
        assert t.score("<answer> 999999999 </answer>", row) == 0.0
        assert t.score("", row) == 0.0


@pytest.mark.parametrize("name", BUILTIN)
def test_train_test_disjoint(name):
    t = get_task(name)
    train = {r["key"] for r in t.dataset("train", 1500, seed=0)}
    test = {r["key"] for r in t.dataset("test", 200, seed=0)}
    assert train and test and not train & test
    assert all(is_test_key(k) for k in test) and not any(is_test_key(k) for k in train)


def test_word_problem_shares_arithmetic_split():
    w = get_task("word", digits=3).dataset("test", 30)
    assert all(is_test_key(r["key"]) for r in w)
    assert all(r["key"].replace("+", " ").replace("-", " ").replace("*", " ").split()[0].isdigit() for r in w)


@pytest.mark.parametrize("text,ok", [
    ("825", True), ("so 457 + 368 = 825.", True), ("<answer> 825 </answer>", True),
    ("<answer>825</answer> then 3", True), ("The answer is 826.", False), ("<answer> 826 </answer> 825", False),
    ("eight hundred", False), ("825.0", True), ("-825", False), ("1,825", False), ("<answer></answer>", False),
])
def test_arithmetic_verifier_table(text, ok):
    row = {"solution": "825"}
    assert get_task("add").score(text, row) == float(ok)


def test_extract_number_signs():
    assert extract_number("457-368") == "368"
    assert extract_number("so it is -89") == "-89"
    assert extract_number("1,692") == "1692"


ROW = {"numbers": [3, 7, 25, 50], "target": 46}


@pytest.mark.parametrize("text,score", [
    ("<answer> 25 + 3 * 7 </answer>", 1.0),
    ("<answer> (50 - 25) + 3 * 7 </answer>", 1.0),     # 25 + 21 = 46 ... using 50, 25, 3, 7
    ("25 + 3 * 7 = 46", 1.0),                           # last line, left side
    ("46 = 25 + 7 * 3", 1.0),
    ("<answer> 25 + 3 * 7 + 0 </answer>", 0.0),        # 0 not given
    ("<answer> 25 + 7 * 3 - 7 + 7 </answer>", 0.0),    # 7 reused
    ("<answer> 50 - 3 </answer>", 0.0),                 # wrong value
    ("<answer> 9**9**9 </answer>", 0.0),
    ("<answer> __import__('os').system('x') </answer>", 0.0),
    ("<answer> a + b </answer>", 0.0),
    ("<answer> 25 + 3 * 7; 1 </answer>", 0.0),
    ("<answer> -3 + 49 </answer>", 0.0),
    ("<answer> " + "9" * 5000 + " </answer>", 0.0),
    ("<answer> " + "(" * 300 + "25" + ")" * 300 + " </answer>", 0.0),
    ("<answer> 50 / (7 - 7) </answer>", 0.0),
    ("<answer> 25 + 21 </answer>", 0.0),               # 21 not given
    ("no equation at all", 0.0),
    ("", 0.0),
])
def test_countdown_verifier_table(text, score, countdown_work):
    assert get_task("countdown").score(text, ROW) == score
    # cheap by construction, whatever the input: the parser never sees more than MAX_EXPR_CHARS
    # characters, and only + - * / run, fewer than MAX_NODES times, on numbers no larger than the
    # limits allow (at most MAX_NODES literals <= MAX_LITERAL: 21 bits each, with the sign)
    assert all(n <= MAX_EXPR_CHARS for n in countdown_work.parsed), countdown_work.parsed
    assert len(countdown_work.ops) < MAX_NODES
    assert all(bits <= MAX_NODES * (MAX_LITERAL.bit_length() + 1) for bits in countdown_work.ops)


@pytest.fixture
def countdown_work(monkeypatch):
    """What the countdown verifier does: the length of every text it hands to `ast.parse` and the
    size in bits of the operands of every arithmetic operation. An operator other than + - * / is
    refused before it runs (`9**9**9` would never return)."""
    work = types.SimpleNamespace(parsed=[], ops=[])

    class Ast:  # the `ast` module as countdown sees it, with parse recorded
        def __getattr__(self, name):
            return getattr(ast, name)

        @staticmethod
        def parse(source, *args, **kw):
            work.parsed.append(len(source))
            return ast.parse(source, *args, **kw)

    def bits(x):
        return max(x.numerator.bit_length(), x.denominator.bit_length())

    class Ops(dict):  # countdown._OPS as the evaluator looks its operators up
        def __getitem__(self, op):
            assert op in (ast.Add, ast.Sub, ast.Mult, ast.Div), f"the verifier evaluated {op.__name__}"
            fn = dict.__getitem__(self, op)

            def recorded(a, b):
                work.ops.append(max(bits(a), bits(b)))
                return fn(a, b)

            return recorded

    monkeypatch.setattr(countdown, "ast", Ast())
    monkeypatch.setattr(countdown, "_OPS", Ops(countdown._OPS))
    return work


def test_countdown_work_is_recorded(countdown_work):
    """The recorder sees the work of an ordinary expression (so an empty record above means none)."""
    assert get_task("countdown").score("<answer> (50 - 25) + 3 * 7 </answer>", ROW) == 1.0
    # 50 - 25 (50: 6 bits), 3 * 7 (7: 3 bits), 25 + 21 (5 bits each)
    assert countdown_work.parsed == [len("(50 - 25) + 3 * 7")] and countdown_work.ops == [6, 3, 5]


def test_countdown_exact_fractions_and_division():
    assert score_equation("(3 + 7 / 7) * 25 / 2", [3, 7, 7, 25, 2], 50) == 1.0
    assert score_equation("7 / 2 * 2", [7, 2, 2], 7) == 1.0
    for bad in ["2 ** 3", "f(2)", "[1]", "1 if 1 else 2", "1 < 2", "True + 1", "1.5 + 2", "x"]:
        with pytest.raises(UnsafeExpression):
            safe_eval(bad)


def test_countdown_rows_are_solvable_by_their_solution():
    t = get_task("countdown", count=5)
    for row in t.dataset("test", 30):
        assert t.score(f"<answer> {row['solution']} </answer>", row) == 1.0


def test_reasoning_gym_adapter():
    pytest.importorskip("reasoning_gym")
    t = get_task("rg:chain_sum")
    train, test = t.dataset("train", 20), t.dataset("test", 5)
    assert not {r["key"] for r in train} & {r["key"] for r in test}
    row = test[0]
    assert t.score(f"<answer>{row['solution']}</answer>", row) == 1.0
    assert t.score("<answer>definitely wrong</answer>", row) < 1.0
