"""Multi-digit arithmetic: ``add``, ``sub``, ``mul``, the mixed ``arithmetic`` and ``chain`` (a + b - c ...).

Difficulty knobs: ``digits`` (digits of the first operand, and of the second for + and -),
``digits_b`` (digits of the second operand of *), ``terms`` (for ``chain``). The verifier takes the
last number of the ``<answer>`` content if present, else the last number of the completion, and
compares it exactly with the solution.
"""

from __future__ import annotations

import random

from . import Task, register_task, score_number

PROMPTS = ("What is {e}?", "Compute {e}.", "Calculate {e}.")


def _operand(rng: random.Random, digits: int) -> int:
    if digits <= 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def binary_key(a: int, op: str, b: int) -> str:
    """Canonical key of ``a op b``: commutative operations sort their operands."""
    if op in "+*":
        a, b = sorted((a, b))
    return f"{a}{op}{b}"


def evaluate(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def binary_row(task: str, prompt: str, a: int, op: str, b: int, difficulty: int) -> dict:
    """The row of a task asking ``a op b``: its exact solution, and the key and operands that the
    split and the tiny-world corpus read."""
    return {"prompt": prompt, "solution": str(evaluate(a, op, b)), "task": task, "difficulty": difficulty,
            "key": binary_key(a, op, b), "a": a, "b": b, "op": op}


class ArithmeticTask(Task):
    def __init__(self, name: str = "arithmetic", ops: str = "+-*", digits: int = 2, digits_b: int | None = None,
                 min_digits: int | None = None):
        if not ops or any(o not in "+-*" for o in ops):
            raise ValueError(f"ops must be a non-empty subset of '+-*', got {ops!r}")
        if not 1 <= digits <= 12:
            raise ValueError(f"digits must be in 1..12, got {digits}")
        if min_digits is not None and not 1 <= min_digits <= digits:
            raise ValueError(f"min_digits must be in 1..digits, got {min_digits}")
        self.name, self.ops, self.digits = name, ops, digits
        self.min_digits = min_digits or digits
        self.digits_b = digits_b if digits_b is not None else (1 if ops == "+-*" else digits)
        if not 1 <= self.digits_b <= 12:
            raise ValueError(f"digits_b must be in 1..12, got {self.digits_b}")
        self.difficulty = digits

    def _seed_material(self, split, seed):
        return f"{self.name}|{self.ops}|{self.digits}|{self.min_digits}|{self.digits_b}|{split}|{seed}"

    def sample(self, rng: random.Random) -> dict:
        op = rng.choice(self.ops)
        d = rng.randint(self.min_digits, self.digits)
        a = _operand(rng, d)
        b = _operand(rng, self.digits_b if op == "*" else d)
        if op == "*" and self.digits_b == 1:
            b = rng.randint(2, 9)
        if op == "-" and b > a:
            a, b = b, a
        return binary_row(self.name, rng.choice(PROMPTS).format(e=f"{a} {op} {b}"), a, op, b, d)

    def score(self, completion_text: str, row: dict) -> float:
        return score_number(completion_text, row)


class ChainTask(Task):
    """``a + b - c + d`` with small operands: a direct answer needs all terms at once, a worked one
    only needs one small step at a time."""

    def __init__(self, name: str = "chain", terms: int = 4, digits: int = 1, first_digits: int = 2):
        if not 2 <= terms <= 12:
            raise ValueError(f"terms must be in 2..12, got {terms}")
        if not 1 <= digits <= 6 or not 1 <= first_digits <= 6:
            raise ValueError("digits and first_digits must be in 1..6")
        self.name, self.terms, self.digits, self.first_digits = name, terms, digits, first_digits
        self.difficulty = terms

    def _seed_material(self, split, seed):
        return f"{self.name}|{self.terms}|{self.digits}|{self.first_digits}|{split}|{seed}"

    def sample(self, rng: random.Random) -> dict:
        nums = [_operand(rng, self.first_digits)]
        ops = []
        total = nums[0]
        for _ in range(self.terms - 1):
            x = max(1, _operand(rng, self.digits))
            op = "-" if (rng.random() < 0.5 and total - x >= 0) else "+"
            total = total + x if op == "+" else total - x
            nums.append(x)
            ops.append(op)
        expr = str(nums[0]) + "".join(f" {o} {x}" for o, x in zip(ops, nums[1:]))
        return {
            "prompt": rng.choice(PROMPTS).format(e=expr),
            "solution": str(total),
            "task": self.name,
            "difficulty": self.terms,
            "key": expr.replace(" ", ""),
            "a": nums[0],
            "b": nums[1],
            "op": ops[0],
        }

    def score(self, completion_text: str, row: dict) -> float:
        return score_number(completion_text, row)


register_task("arithmetic", lambda **kw: ArithmeticTask(**{"name": "arithmetic", **kw}))
register_task("add", lambda **kw: ArithmeticTask(**{"name": "add", "ops": "+", "digits": 3, **kw}))
register_task("sub", lambda **kw: ArithmeticTask(**{"name": "sub", "ops": "-", "digits": 3, **kw}))
register_task("mul", lambda **kw: ArithmeticTask(**{"name": "mul", "ops": "*", "digits": 2, "digits_b": 2, **kw}))
register_task("chain", lambda **kw: ChainTask(**{"name": "chain", **kw}))
