"""Short arithmetic word problems (``word``): one +, - or * step in a small story.

The canonical key is the underlying arithmetic's key (``binary_key``), so a word problem is a test
item exactly when its plain arithmetic is. Difficulty knob: ``digits``.
"""

from __future__ import annotations

import random

from . import Task, register_task, score_number
from .arithmetic import binary_row

NAMES = ["Anna", "Ben", "Mia", "Leo", "Sara", "Tom", "Nina", "Omar"]
THINGS = ["apples", "pens", "stickers", "marbles", "books", "coins", "cards", "shells"]

ADD = [
    "{n} has {a} {t}. {n} gets {b} more {t}. How many {t} does {n} have now?",
    "A shop had {a} {t} and received {b} more. How many {t} does the shop have?",
    "There are {a} {t} in one box and {b} {t} in another. How many {t} are there in total?",
]
SUB = [
    "{n} has {a} {t} and gives away {b}. How many {t} are left?",
    "A shop had {a} {t} and sold {b}. How many {t} are left?",
]
MUL = [
    "There are {a} bags with {b} {t} in each. How many {t} are there?",
    "{n} buys {b} packs of {t}, each with {a} {t}. How many {t} does {n} buy?",
]


def word_question(rng: random.Random, a: int, op: str, b: int) -> str:
    tpl = rng.choice({"+": ADD, "-": SUB, "*": MUL}[op])
    return tpl.format(n=rng.choice(NAMES), t=rng.choice(THINGS), a=a, b=b)


class WordTask(Task):
    def __init__(self, name: str = "word", digits: int = 2, ops: str = "+-*"):
        if not 1 <= digits <= 6:
            raise ValueError(f"digits must be in 1..6, got {digits}")
        if not ops or any(o not in "+-*" for o in ops):
            raise ValueError(f"ops must be a non-empty subset of '+-*', got {ops!r}")
        self.name, self.digits, self.ops = name, digits, ops
        self.difficulty = digits

    def _seed_material(self, split, seed):
        return f"{self.name}|{self.digits}|{self.ops}|{split}|{seed}"

    def sample(self, rng: random.Random) -> dict:
        op = rng.choice(self.ops)
        lo, hi = (10 ** (self.digits - 1) if self.digits > 1 else 1), 10**self.digits - 1
        a = rng.randint(lo, hi)
        b = rng.randint(2, 9) if op == "*" else rng.randint(lo, hi)
        if op == "-" and b > a:
            a, b = b, a
        return binary_row(self.name, word_question(rng, a, op, b), a, op, b, self.digits)

    def score(self, completion_text: str, row: dict) -> float:
        return score_number(completion_text, row)


register_task("word", lambda **kw: WordTask(**kw))
