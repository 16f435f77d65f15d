"""Self-correction measured against the truth (tiny_world/self_correction.py) and the corpus re-checks."""

import pytest

from r1kit.tiny_world.corpus import eval_step, generate_corpus, recheck
from r1kit.tiny_world.self_correction import find_rechecks, self_correction_stats

FIX = "tens: 7 * 4 + 2 = 31, so far 310. Wait, let me check: 7 * 4 = 28, 28 + 2 = 30, not 31. So far 300."
PARROT = "tens: 7 * 4 + 2 = 31, so far 310. Wait, let me check: 7 * 4 + 2 = 31, not 31. So far 310."
BREAK = "ones: 6 + 7 = 13, carry 1, so far 3. Wait, let me check: 7 + 6 = 12, not 13. So far 2."
CONFIRM = ("ones: 10 - 8 (borrow) = 2, so far 2. tens: 4 - 3 - 1 = 0, so far 2. "
           "Let me double-check: 4 - 3 = 1, 1 - 1 = 0. Correct. The answer is 2.")


def test_eval_step_and_recheck():
    assert eval_step("7 * 4 + 2") == 30 and eval_step("15 - 7 - 1 (borrow)") == 7 and eval_step("5 + 8") == 13
    # one operation at a time, or operands swapped for a single + / *
    assert recheck("7 * 4 + 2") == "7 * 4 = 28, 28 + 2 = 30"
    assert recheck("5 + 8") == "8 + 5 = 13" and recheck("6 * 3") == "3 * 6 = 18"
    assert recheck("12 - 5 - 1 (borrow)") == "12 - 5 = 7, 7 - 1 = 6" and recheck("9 - 4") == "9 - 4 = 5"


def test_rechecks_are_judged_against_the_step_and_the_truth():
    (fix,) = find_rechecks(FIX)
    assert (fix.step, fix.written, fix.rechecked, fix.true, fix.kind) == ("7 * 4 + 2", 31, 30, 30, "fix")
    (parrot,) = find_rechecks(PARROT)  # the example: the re-check repeats the wrong value
    assert not parrot.changed and parrot.kind == "confirm" and parrot.true == 30
    (brk,) = find_rechecks(BREAK)      # 6 + 7 = 13 was right; the re-check made it 12
    assert brk.changed and brk.kind == "break"
    (ok,) = find_rechecks(CONFIRM)     # pairs with the last step before it, "4 - 3 - 1 = 0"
    assert (ok.step, ok.written, ok.rechecked, ok.kind) == ("4 - 3 - 1", 0, 0, "confirm")
    assert find_rechecks("Wait, let me check: 2 + 2 = 4.")[0].kind == "unjudged"  # no step before it
    assert find_rechecks("The answer is 42.") == []


def test_stats_count_fixes_breaks_and_accuracy():
    samples = [{"completion": FIX, "score": 1.0},      # a fix, answer right: a wrong answer fixed
               {"completion": FIX, "score": 0.0},      # a fix, but a later slip: not counted as fixed
               {"completion": BREAK, "score": 0.0},    # a break, answer wrong: a right answer broken
               {"completion": PARROT, "score": 0.0},
               {"completion": "42", "score": 1.0}, {"completion": "41", "score": 0.0}]
    s = self_correction_stats(samples)
    assert s["responses"] == 6 and s["rechecking_responses"] == 4 and s["rechecks"] == 4
    assert s["rechecks_changing_a_step"] == 3  # FIX, FIX, BREAK; PARROT repeats its value
    assert s["recheck_kinds"] == {"confirm": 1, "fix": 2, "break": 1, "wrong-to-wrong": 0, "unjudged": 0}
    assert s["wrong_answers_fixed"] == 1 and s["right_answers_broken"] == 1
    assert s["accuracy_rechecking"] == pytest.approx(1 / 4) and s["accuracy_not_rechecking"] == pytest.approx(1 / 2)
    assert [e["completion"] for e in s["examples"]] == [FIX] and s["examples"][0]["true"] == 30


def test_corpus_rechecks_are_right_and_fix_the_errors_they_catch():
    docs = generate_corpus(2000, seed=0)
    found = [r for d in docs for r in find_rechecks(d)]
    judged = [r for r in found if r.kind != "unjudged"]
    assert len(judged) > 100
    assert all(r.rechecked == r.true for r in judged)        # a corpus re-check is always right
    kinds = {k: sum(r.kind == k for r in judged) for k in ("fix", "confirm", "break", "wrong-to-wrong")}
    assert kinds["fix"] > 20 and kinds["confirm"] > 20 and kinds["break"] == kinds["wrong-to-wrong"] == 0


def test_corpus_slips_and_rechecks_fall_on_two_operation_steps():
    from r1kit.tiny_world.self_correction import STEP

    def two_ops(expr):
        return len(expr.replace("(borrow)", "").split()) == 5

    docs = generate_corpus(2000, seed=0)
    steps = [m.group(1) for d in docs for m in STEP.finditer(d)]
    checked = [r.step for d in docs for r in find_rechecks(d) if r.step]
    share_steps = sum(map(two_ops, steps)) / len(steps)
    share_checked = sum(map(two_ops, checked)) / len(checked)
    assert share_checked > 1.5 * share_steps  # p_hard_step: people double-check where a carry comes in
