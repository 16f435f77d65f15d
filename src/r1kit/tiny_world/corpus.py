"""Synthetic pretraining corpus for the tiny world.

Like web text, it mixes behaviours for the same kind of question:

- direct answers, correct on easy items but mostly WRONG on hard ones (noisy "forum" answers);
- worked solutions, digit by digit with carries/borrows (or term by term for chains), verbose ones
  that keep a running "so far" result (rarely wrong) and terse ones (more often wrong);
- self-checks ("Wait, let me check ...") that re-compute a step a different way (one operation at a
  time: "7 * 4 = 28, 28 + 2 = 30", or the operands swapped) and either confirm it or catch an error
  and fix it; solutions with a check are the most accurate. Re-checking one operation at a time is
  easier than the step itself, so a model that learns to re-check can really catch its own slips;
- steps written in Russian (Cyrillic), so a script-based detector can measure language mixing;
- rarely, <think>/<answer> tags in assorted contexts, mostly the full R1 format (a few percent of a
  base model's samples under the R1-Zero template), so a format reward is occasionally satisfied.

It never contains the R1-Zero template sentence and never an item whose canonical key is in the test
split (`r1kit.tasks.is_test_key`). Everything is deterministic in the seed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from ..tasks import is_test_key
from ..tasks.arithmetic import PROMPTS, binary_key, evaluate

COLS_EN = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions"]
COLS_RU = ["единицы", "десятки", "сотни", "тысячи", "десятки тысяч", "сотни тысяч", "миллионы"]

FORBIDDEN = (
    "A conversation between User and Assistant",
    "the Assistant solves it",
    "thinks about the reasoning process",
    "reasoning process here",
)


@dataclass
class CorpusMix:
    """Knobs of the corpus mix (probabilities unless said otherwise)."""

    p_dialogue: float = 0.4          # share of "User: ... Assistant: ..." documents
    p_qa: float = 0.2                # share of "Q: ... A: ..." documents
    p_textbook: float = 0.3          # share of "Problem ... Solution." documents (the rest: bare lists)
    p_steps: float = 0.25            # worked solution instead of a direct answer, in dialogues
    p_steps_qa: float = 0.6          # same in Q/A documents
    p_steps_textbook: float = 0.9    # same in textbook documents
    direct_correct_3: float = 0.1    # direct answers correct at 3+ digits (or 4+ term chains)
    direct_correct_2: float = 0.25   # ... at 2 digits (the default difficulty) / 3-term chains
    direct_correct_1: float = 0.95   # ... at 1 digit
    p_terse: float = 0.3             # worked solution is terse (no running result)
    err_verbose: float = 0.06        # per-solution error rate of verbose worked solutions
    err_terse: float = 0.3           # ... of terse ones
    p_check: float = 0.3             # worked solution contains a self-check
    p_check_catches: float = 0.5     # a self-check follows an error it then fixes (else it confirms)
    p_hard_step: float = 0.8         # an error or a self-check falls on a two-operation step (a carry or
                                     # borrow in: "7 * 4 + 2"), when the solution has one
    p_russian: float = 0.12          # worked solution has steps in Russian
    p_tags: float = 0.06             # document uses <think>/<answer> tags somewhere
    p_preface: float = 0.15          # document starts with unrelated preface sentences


# ---------------------------------------------------------------------------------------------
# problems (train split only)


def _num(rng: random.Random, digits: int) -> int:
    return rng.randint(0, 9) if digits <= 1 else rng.randint(10 ** (digits - 1), 10**digits - 1)


def sample_problem(rng: random.Random) -> dict:
    """One problem: kind, operands, canonical key, question text, answer, difficulty level (1-3)."""
    r = rng.random()
    if r < 0.66:  # the default arithmetic task: 2-digit + and -, 2-digit * 1-digit
        digits = 2
    elif r < 0.78:
        digits = 3
    elif r < 0.86:
        digits = 1
    else:
        digits = None
    if digits is not None:
        op = rng.choice("+-*")
        a = _num(rng, digits)
        b = rng.randint(2, 9) if op == "*" else _num(rng, digits)
        if op == "-" and b > a:
            a, b = b, a
        level = 1 if digits == 1 or (op == "*" and digits == 1) else (2 if digits == 2 else 3)
        word = rng.random() < 0.15 and digits in (2, 3)
        p = {"kind": "binary", "a": a, "b": b, "op": op, "key": binary_key(a, op, b),
             "answer": evaluate(a, op, b), "level": level}
        p["question"] = _word_question(rng, a, op, b) if word else rng.choice(PROMPTS).format(e=f"{a} {op} {b}")
        p["word"] = word
        return p
    # chain a + b - c + d (the `chain` task)
    terms = rng.choice([3, 4, 4, 5])
    nums = [_num(rng, 2)]
    ops = []
    total = nums[0]
    for _ in range(terms - 1):
        x = max(1, _num(rng, 1))
        op = "-" if (rng.random() < 0.5 and total - x >= 0) else "+"
        total = total + x if op == "+" else total - x
        nums.append(x)
        ops.append(op)
    expr = str(nums[0]) + "".join(f" {o} {x}" for o, x in zip(ops, nums[1:]))
    return {"kind": "chain", "nums": nums, "ops": ops, "key": expr.replace(" ", ""), "answer": total,
            "level": 2 if terms == 3 else 3, "question": rng.choice(PROMPTS).format(e=expr), "word": False}


def _word_question(rng: random.Random, a: int, op: str, b: int) -> str:
    from ..tasks.word import word_question

    return word_question(rng, a, op, b)


def sample_train_problem(rng: random.Random) -> dict:
    while True:
        p = sample_problem(rng)
        if not is_test_key(p["key"]):
            return p


# ---------------------------------------------------------------------------------------------
# worked solutions


def _digits(x: int, n: int) -> list[int]:
    return [(x // 10**i) % 10 for i in range(n)]


def _column_steps(p: dict) -> list[dict]:
    """Exact column steps for a binary problem: each has the shown expression and its value."""
    a, b, op = p["a"], p["b"], p["op"]
    steps = []
    if op == "+":
        n = max(len(str(a)), len(str(b)))
        da, db, c = _digits(a, n), _digits(b, n), 0
        for i in range(n):
            s = da[i] + db[i] + c
            steps.append({"i": i, "expr": f"{da[i]} + {db[i]}" + (f" + {c}" if c else ""), "value": s,
                          "digit": s % 10, "carry": s // 10, "last": i == n - 1})
            c = s // 10
    elif op == "-":
        n = len(str(a))
        da, db, bw = _digits(a, n), _digits(b, n), 0
        for i in range(n):
            x = da[i] - bw
            if x < db[i]:
                expr = f"1{da[i]} - {db[i]}" + (" - 1" if bw else "") + " (borrow)"
                s, bw_next = 10 + da[i] - bw - db[i], 1
            else:
                expr = f"{da[i]} - {db[i]}" + (" - 1" if bw else "")
                s, bw_next = x - db[i], 0
            steps.append({"i": i, "expr": expr, "value": s, "digit": s, "carry": bw_next, "last": i == n - 1})
            bw = bw_next
    else:  # multi-digit * one digit
        n = len(str(a))
        da, c = _digits(a, n), 0
        for i in range(n):
            s = da[i] * b + c
            steps.append({"i": i, "expr": f"{da[i]} * {b}" + (f" + {c}" if c else ""), "value": s,
                          "digit": s % 10, "carry": s // 10, "last": i == n - 1})
            c = s // 10
    return steps


def _corrupt(rng: random.Random, value: int) -> int:
    bad = value + rng.choice([-1, 1, -10, 10, 2, -2])
    return bad if bad >= 0 and bad != value else value + 1


def _wrong_number(rng: random.Random, x: int) -> int:
    s = list(str(abs(x)))
    r = rng.random()
    if r < 0.5:  # one digit off
        i = rng.randrange(len(s))
        s[i] = str((int(s[i]) + rng.choice([1, 2, 9, 8])) % 10)
        if s[0] == "0" and len(s) > 1:
            s[0] = str(rng.randint(1, 9))
        y = int("".join(s))
    elif r < 0.8:  # a dropped or extra carry
        y = abs(x) + rng.choice([-1, 1]) * 10 ** rng.randrange(max(1, len(s)))
    else:
        y = abs(x) + rng.randint(-30, 30)
    y = abs(y)
    return y if y != abs(x) else abs(x) + 10


def _render_binary_steps(rng: random.Random, p: dict, mix: CorpusMix) -> tuple[list[str], int, bool, bool]:
    """Worked solution for a binary problem. Returns (sentences, final answer, has_check, russian)."""
    steps = _column_steps(p)
    terse = rng.random() < mix.p_terse
    russian = rng.random() < mix.p_russian
    check = rng.random() < mix.p_check
    err_rate = mix.err_terse if terse else mix.err_verbose
    err_at = _pick_step(rng, steps, mix) if rng.random() < (err_rate if not check else mix.p_check_catches) else None
    fix = check and err_at is not None
    confirm_at = _pick_step(rng, steps, mix) if (check and err_at is None) else None
    sofar = ""
    carry_in = 0
    out: list[str] = []
    verb = {"+": "add", "-": "subtract", "*": "multiply"}[p["op"]]
    intro_en = [f"Let's {verb} digit by digit.", "Let me work it out step by step.", "Step by step:",
                "Let's do it column by column.", f"Let me {verb} column by column."]
    intro_ru = ["Решим по шагам.", "Считаем по разрядам.", "Посчитаем столбиком."]
    out.append(rng.choice(intro_ru) if (russian and rng.random() < 0.4) else rng.choice(intro_en))
    for st in steps:
        i = st["i"]
        expr = st["expr"]
        if p["op"] != "-":
            expr = _expr_for(p, i, carry_in)
        true_val = _eval_step(p, st, carry_in)
        val = true_val
        if err_at == i:
            val = _corrupt(rng, true_val)
        ru = russian and rng.random() < 0.6
        out.append(_step_sentence(p, i, expr, val, st["last"], sofar, ru, terse))
        if err_at == i and fix:
            val = true_val
            fixed = _sofar(p, val, st["last"], sofar)
            if ru or (russian and rng.random() < 0.5):
                out.append(f"Подожди, проверим: {recheck(expr)}, а не {_corrupt_shown(out[-1])}. Значит, пока {fixed}.")
            else:
                out.append(f"Wait, let me check: {recheck(expr)}, not {_corrupt_shown(out[-1])}. So far {fixed}."
                           if not terse else f"Wait, let me check: {recheck(expr)}. Fixed.")
        elif confirm_at == i:
            if ru:
                out.append(f"Проверим: {recheck(expr)}. Верно.")
            else:
                out.append(rng.choice([f"Wait, let me check: {recheck(expr)}. Yes.",
                                       f"Let me double-check: {recheck(expr)}. Correct."]))
        sofar = _sofar(p, val, st["last"], sofar)
        carry_in = _carry_out(p, val)
    ans = int(sofar) if sofar else 0
    sym = p["op"]
    if russian and rng.random() < 0.3:
        out.append(f"Итак, {p['a']} {sym} {p['b']} = {ans}.")
    else:
        out.append(rng.choice([f"So {p['a']} {sym} {p['b']} = {ans}.", f"So the answer is {ans}.",
                               f"The answer is {ans}."]))
    return out, ans, check, russian


def _pick_step(rng: random.Random, steps: list[dict], mix: CorpusMix) -> int:
    """The step an error or a self-check falls on: mostly a hard one (two operations), as people slip
    and double-check where a carry or borrow comes in."""
    hard = [st["i"] for st in steps if len(st["expr"].replace("(borrow)", "").split()) == 5]
    return rng.choice(hard) if hard and rng.random() < mix.p_hard_step else rng.randrange(len(steps))


def _expr_for(p: dict, i: int, c: int) -> str:
    n = len(str(max(p["a"], p["b"]))) if p["op"] == "+" else len(str(p["a"]))
    da = _digits(p["a"], n)[i]
    other = _digits(p["b"], n)[i] if p["op"] == "+" else p["b"]
    return f"{da} {p['op']} {other}" + (f" + {c}" if c else "")


def _eval_step(p: dict, st: dict, carry_in: int) -> int:
    if p["op"] == "-":
        return st["value"]  # subtraction errors are not propagated through borrows (kept simple)
    i = st["i"]
    n = len(str(max(p["a"], p["b"]))) if p["op"] == "+" else len(str(p["a"]))
    da = _digits(p["a"], n)[i]
    if p["op"] == "+":
        return da + _digits(p["b"], n)[i] + carry_in
    return da * p["b"] + carry_in


def _carry_out(p: dict, val: int) -> int:
    if p["op"] == "-":
        return 0
    return val // 10


def _sofar(p: dict, val: int, last: bool, sofar: str) -> str:
    if p["op"] == "-":
        s = f"{val % 10}{sofar}"
        if last:
            s = s.lstrip("0") or "0"
        return s
    return f"{val if last else val % 10}{sofar}"


def eval_step(expr: str) -> int:
    """Value of a written step: "7 * 4 + 2", "15 - 7 - 1 (borrow)", "5 + 8" (no other syntax)."""
    toks = expr.replace("(borrow)", "").split()
    value = int(toks[0])
    for op, x in zip(toks[1::2], toks[2::2]):
        value = value * int(x) if op == "*" else value + int(x) if op == "+" else value - int(x)
    return value


def recheck(expr: str) -> str:
    """A step re-computed another way, one operation at a time, ending with "= value":
    "7 * 4 + 2" -> "7 * 4 = 28, 28 + 2 = 30"; "5 + 8" -> "8 + 5 = 13" (operands swapped);
    "15 - 7 (borrow)" -> "15 - 7 = 8"."""
    toks = expr.replace("(borrow)", "").split()
    if len(toks) == 3 and toks[1] in "+*":
        return f"{toks[2]} {toks[1]} {toks[0]} = {eval_step(expr)}"
    parts, value = [], int(toks[0])
    for op, x in zip(toks[1::2], toks[2::2]):
        new = eval_step(f"{value} {op} {x}")
        parts.append(f"{value} {op} {x} = {new}")
        value = new
    return ", ".join(parts)


def _corrupt_shown(sentence: str) -> str:
    import re

    m = re.search(r"= (\d+)", sentence)
    return m.group(1) if m else "?"


def _step_sentence(p: dict, i: int, expr: str, val: int, last: bool, sofar: str, ru: bool, terse: bool) -> str:
    if terse:
        return f"{expr} = {val}."
    col = (COLS_RU if ru else COLS_EN)[min(i, len(COLS_EN) - 1)]
    new = _sofar(p, val, last, sofar)
    if p["op"] == "-" or last:
        carry = ""
    else:
        carry = (", перенос " if ru else ", carry ") + str(val // 10) if val >= 10 else ""
    return f"{col}: {expr} = {val}{carry}, " + ("пока " if ru else "so far ") + f"{new}."


def _render_chain_steps(rng: random.Random, p: dict, mix: CorpusMix) -> tuple[list[str], int, bool, bool]:
    russian = rng.random() < mix.p_russian
    check = rng.random() < mix.p_check
    terse = rng.random() < mix.p_terse
    err_rate = mix.err_terse if terse else mix.err_verbose
    n = len(p["ops"])
    err_at = rng.randrange(n) if rng.random() < (err_rate if not check else mix.p_check_catches) else None
    out = [rng.choice(["Let me go term by term.", "Step by step:", "Let's compute from left to right."]
                      if not (russian and rng.random() < 0.4) else ["Считаем слева направо.", "По шагам:"])]
    total = p["nums"][0]
    for j, (op, x) in enumerate(zip(p["ops"], p["nums"][1:])):
        true = total + x if op == "+" else total - x
        val = _corrupt(rng, true) if err_at == j else true
        ru = russian and rng.random() < 0.6
        out.append(f"{total} {op} {x} = {val}." if not ru else f"{total} {op} {x} = {val}, пока {val}.")
        if err_at == j and check:
            out.append(f"Wait, let me check: {recheck(f'{total} {op} {x}')}, not {val}." if not ru
                       else f"Подожди, проверим: {recheck(f'{total} {op} {x}')}, а не {val}.")
            val = true
        elif check and err_at is None and j == n - 1:
            out.append(f"Wait, let me check: {recheck(f'{total} {op} {x}')}. Yes." if not ru
                       else f"Проверим: {recheck(f'{total} {op} {x}')}. Верно.")
        total = val
    out.append(rng.choice([f"So the answer is {total}.", f"The answer is {total}."]))
    return out, total, check, russian


def worked_solution(rng: random.Random, p: dict, mix: CorpusMix) -> tuple[str, int, dict]:
    if p["kind"] == "chain":
        sents, ans, check, ru = _render_chain_steps(rng, p, mix)
    else:
        sents, ans, check, ru = _render_binary_steps(rng, p, mix)
        if p.get("word"):
            sents.insert(0, f"We need {p['a']} {p['op']} {p['b']}." if not ru else f"Нужно {p['a']} {p['op']} {p['b']}.")
    return " ".join(sents), ans, {"steps": True, "check": check, "russian": ru}


def direct_answer(rng: random.Random, p: dict, mix: CorpusMix) -> tuple[str, int, dict]:
    pc = {1: mix.direct_correct_1, 2: mix.direct_correct_2, 3: mix.direct_correct_3}[p["level"]]
    ans = p["answer"] if rng.random() < pc else _wrong_number(rng, p["answer"])
    if p["kind"] == "binary" and not p.get("word"):
        expr = f"{p['a']} {p['op']} {p['b']}"
    else:
        expr = None
    forms = [f"{ans}", f"{ans}", f"The answer is {ans}.", f"It is {ans}.", f"{ans}."]
    if expr:
        forms.append(f"{expr} = {ans}.")
    return rng.choice(forms), ans, {"steps": False, "check": False, "russian": False}


# ---------------------------------------------------------------------------------------------
# documents

PREFACES = [
    "Posted in the homework help forum.", "Math club notes, week 3.", "From a chat log.",
    "Practice sheet.", "Comment thread:", "Transcript of a tutoring session.", "Quiz time!",
    "Some people answer fast, some work it out.", "Answers below.", "Mental math practice.",
    "The user asked and someone replied.", "Here is a question and an answer.",
    "Reply from a helper bot.", "Old exam questions with answers.", "Arithmetic, part 2.",
    "Заметки с урока математики.", "Вопросы и ответы.",
    "People ask questions here and others reply with an answer.", "The helper tries to solve each problem.",
    "Some replies show the steps, some only give a number, and some are wrong.",
    "Please read the question first and then give the answer.", "This thread is about adding and subtracting.",
    "A student and a tutor talk about numbers.", "Remember to check your work before you reply.",
    "The user writes a question; the helper writes a reply.", "Each answer is written after the question.",
]


def _tag_wrap(rng: random.Random, body: str, ans: int, is_steps: bool) -> str:
    if rng.random() < (0.9 if is_steps else 0.6):
        return f"<think> {body} </think> <answer> {ans} </answer>"
    return rng.choice([f"{body} <answer> {ans} </answer>", f"<answer> {ans} </answer>",
                       f"<think> {body} </think> {ans}"])


def make_document(rng: random.Random, mix: CorpusMix) -> tuple[str, dict]:
    p = sample_train_problem(rng)
    fmt = rng.random()
    if fmt < mix.p_dialogue:
        style, p_steps = "dialogue", mix.p_steps
    elif fmt < mix.p_dialogue + mix.p_qa:
        style, p_steps = "qa", mix.p_steps_qa
    elif fmt < mix.p_dialogue + mix.p_qa + mix.p_textbook:
        style, p_steps = "textbook", mix.p_steps_textbook
    else:
        style, p_steps = "list", 0.0
    if style == "list":
        lines = []
        meta = {"steps": False, "check": False, "russian": False, "tags": False}
        for _ in range(rng.randint(2, 5)):
            q = p if not lines else sample_train_problem(rng)
            if q["kind"] != "binary" or q.get("word"):
                q = dict(q, question=q["question"])
                body, ans, _ = direct_answer(rng, q, mix)
                lines.append(f"{q['question']} {body}")
            else:
                body, ans, _ = direct_answer(rng, dict(q, word=True), mix)
                lines.append(f"{q['a']} {q['op']} {q['b']} = {ans}")
        text = "\n".join(lines)
        return text, dict(meta, style=style, keys=None)
    if rng.random() < p_steps:
        body, ans, meta = worked_solution(rng, p, mix)
    else:
        body, ans, meta = direct_answer(rng, p, mix)
    tags = rng.random() < mix.p_tags
    if tags:
        body = _tag_wrap(rng, body, ans, meta["steps"])
    q = p["question"]
    if style == "dialogue":
        sep = rng.choice([". ", " ", "\n", ". "])
        text = f"User: {q}{sep}Assistant: {body}"
    elif style == "qa":
        if meta["russian"] and rng.random() < 0.5:
            text = f"Вопрос: {q}\nОтвет: {body}"
        else:
            text = rng.choice([f"Q: {q}\nA: {body}", f"Question: {q}\nAnswer: {body}"])
    else:
        text = f"Problem {rng.randint(1, 99)}. {q}\nSolution. {body}"
    if rng.random() < mix.p_preface:
        k = rng.choice([1, 1, 2, 3, 4])
        text = " ".join(rng.sample(PREFACES, k)) + rng.choice(["\n", " ", "\n\n"]) + text
    meta = dict(meta, style=style, tags=tags, correct=ans == p["answer"])
    return text, meta


def generate_corpus(n_docs: int, seed: int = 0, mix: CorpusMix | dict | None = None,
                    return_meta: bool = False):
    """`n_docs` documents (str), deterministic in (n_docs-prefix, seed, mix)."""
    if isinstance(mix, dict) or mix is None:
        mix = CorpusMix(**(mix or {}))
    rng = random.Random(f"r1kit-corpus:{seed}")
    docs, metas = [], []
    for _ in range(n_docs):
        text, meta = make_document(rng, mix)
        docs.append(text)
        metas.append(meta)
    return (docs, metas) if return_meta else docs


def corpus_keys(n_docs: int, seed: int = 0) -> list[str]:
    """Canonical keys of the problems the corpus would contain (replays the same random stream)."""
    keys: list[str] = []
    import r1kit.tiny_world.corpus as c

    orig = c.sample_train_problem

    def spy(rng):
        p = orig(rng)
        keys.append(p["key"])
        return p

    c.sample_train_problem = spy
    try:
        generate_corpus(n_docs, seed)
    finally:
        c.sample_train_problem = orig
    return keys


def corpus_stats(docs: list[str], metas: list[dict]) -> dict:
    n = max(1, len(docs))
    solved = [m for m in metas if m.get("style") != "list"]
    steps = [m for m in solved if m["steps"]]
    direct = [m for m in solved if not m["steps"]]

    def acc(ms):
        return round(sum(m.get("correct", False) for m in ms) / max(1, len(ms)), 4)

    return {
        "documents": len(docs),
        "characters": sum(len(d) for d in docs),
        "frac_worked": round(len(steps) / max(1, len(solved)), 4),
        "acc_worked": acc(steps),
        "acc_worked_with_check": acc([m for m in steps if m["check"]]),
        "acc_worked_no_check": acc([m for m in steps if not m["check"]]),
        "acc_direct": acc(direct),
        "frac_russian": round(sum(m["russian"] for m in metas) / n, 4),
        "frac_tags": round(sum(m.get("tags", False) for m in metas) / n, 4),
        "styles": {s: sum(m["style"] == s for m in metas) for s in ("dialogue", "qa", "textbook", "list")},
        "mix": None,
    }


def mix_dict(mix: CorpusMix) -> dict:
    return asdict(mix)
