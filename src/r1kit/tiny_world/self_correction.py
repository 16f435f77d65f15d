"""Self-correction, measured rather than counted: does a re-check change a step, and for the better?

The R1 paper's "aha moment" is a model that stops, re-evaluates a step and fixes it. Counting the phrase
("Wait, let me check") says nothing about whether the re-check does anything: a model can learn to say it
and repeat its wrong value. Here every re-check in a tiny-world response is read against the step it
re-checks, and both are checked against the truth:

    tens: 7 * 4 + 2 = 31, so far 310. Wait, let me check: 7 * 4 = 28, 28 + 2 = 30, not 31. So far 300.
          ^ step "7 * 4 + 2", written value 31 (true 30)   ^ re-check's value 30: changed, a fix

A re-check *changes* the step when its value differs from the step's written value. A change is a
**fix** when the step was wrong and the re-check right, a **break** when the step was right and the
re-check wrong (else: wrong either way). Tied to the final answer (the task's verifier): a fix in a
response whose final answer is right is a wrong answer turned right (the written wrong value would have
carried into the answer); a break in a response whose final answer is wrong is a right answer turned
wrong. Both counts, the accuracy of responses that re-check vs those that do not, and real examples
go into the demo's `summary.json` and report.

Only the tiny world's step syntax is understood (``A op B [op C] = V`` with + - *, "(borrow)"), in
English and Russian; a re-check whose step cannot be found is counted as a re-check but not judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1kit.tiny_world.corpus import eval_step

_NUM = r"\d+"
_EXPR = rf"{_NUM}(?: [-+*] {_NUM})+(?: \(borrow\))?"
STEP = re.compile(rf"({_EXPR}) = ({_NUM})")
CHECK_OPENERS = ("Wait, let me check:", "Let me double-check:", "Подожди, проверим:", "Проверим:")
CHECK = re.compile("(?:" + "|".join(re.escape(o) for o in CHECK_OPENERS) + r")\s*"
                   rf"((?:{_EXPR} = {_NUM}(?:, )?)+)")


@dataclass
class Recheck:
    step: str | None          # the re-checked step's expression ("7 * 4 + 2"), None if not found
    written: int | None       # the value the step wrote
    rechecked: int            # the value the re-check arrived at
    true: int | None          # the step's true value

    @property
    def changed(self) -> bool:
        return self.written is not None and self.rechecked != self.written

    @property
    def kind(self) -> str:
        """'confirm' (same value), 'fix', 'break', 'wrong-to-wrong', or 'unjudged'."""
        if self.step is None:
            return "unjudged"
        if not self.changed:
            return "confirm"
        if self.written != self.true and self.rechecked == self.true:
            return "fix"
        if self.written == self.true:
            return "break"
        return "wrong-to-wrong"


def find_rechecks(text: str) -> list[Recheck]:
    """Every re-check in `text`, paired with the last step written before it (outside re-checks)."""
    checks = list(CHECK.finditer(text))
    inside = [(m.start(), m.end()) for m in checks]
    steps = [m for m in STEP.finditer(text) if not any(a <= m.start() < b for a, b in inside)]
    out = []
    for m in checks:
        value = int(STEP.findall(m.group(1))[-1][1])
        before = [s for s in steps if s.end() <= m.start()]
        if not before:
            out.append(Recheck(None, None, value, None))
            continue
        s = before[-1]
        try:
            true = eval_step(s.group(1))
        except ValueError:
            true = None
        out.append(Recheck(s.group(1), int(s.group(2)), value, true))
    return out


def self_correction_stats(samples: list[dict], n_examples: int = 3) -> dict:
    """Counts over evaluated samples (dicts with 'completion' and 'score' >= 1 for a right answer)."""
    rechecking = right_rechecking = right_other = rechecks = changed = 0
    kinds = {"confirm": 0, "fix": 0, "break": 0, "wrong-to-wrong": 0, "unjudged": 0}
    wrong_to_right = right_to_wrong = 0
    examples = []
    for s in samples:
        found = find_rechecks(s["completion"])
        right = s["score"] >= 1.0
        if not found:
            right_other += right
            continue
        rechecking += 1
        right_rechecking += right
        rechecks += len(found)
        for r in found:
            kinds[r.kind] += 1
            changed += r.changed
        has_fix = any(r.kind == "fix" for r in found)
        has_break = any(r.kind == "break" for r in found)
        wrong_to_right += has_fix and right
        right_to_wrong += has_break and not right
        if has_fix and right and len(examples) < n_examples:
            fix = next(r for r in found if r.kind == "fix")
            examples.append({"completion": s["completion"], "step": fix.step, "written": fix.written,
                             "rechecked": fix.rechecked, "true": fix.true, "answer_right": right})
    n = len(samples)
    return {
        "responses": n,
        "rechecking_responses": rechecking,
        "rechecks": rechecks,
        "rechecks_changing_a_step": changed,
        "recheck_kinds": kinds,
        "wrong_answers_fixed": wrong_to_right,    # a fix, and the final answer is right
        "right_answers_broken": right_to_wrong,   # a break, and the final answer is wrong
        "accuracy_rechecking": right_rechecking / rechecking if rechecking else None,
        "accuracy_not_rechecking": right_other / (n - rechecking) if n > rechecking else None,
        "examples": examples,
    }


__all__ = ["Recheck", "find_rechecks", "self_correction_stats"]
