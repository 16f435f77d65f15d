"""Countdown-style puzzle (``countdown``): reach the target from the given numbers with + - * / and
parentheses, using EACH GIVEN NUMBER AT MOST ONCE (the classic game rule; a number that appears twice
in the list may be used twice). Difficulty knob: ``count`` (how many numbers are given).

The verifier takes the ``<answer>`` content if present, else the last line of the completion; it drops
a trailing ``= target`` part, parses what is left with ``ast`` and accepts only number literals, the
four binary operators and parentheses (no names, no calls, no ``**``, no unary minus), within size
limits (length, node count, literal size). It evaluates with exact ``Fraction`` arithmetic, so
``9**9**9``, ``__import__('os')``, huge literals or deep nesting all score 0.0 in microseconds.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from fractions import Fraction

from . import Task, extract_answer, register_task

MAX_EXPR_CHARS = 200
MAX_NODES = 64
MAX_LITERAL = 10**6
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


class UnsafeExpression(ValueError):
    pass


def safe_eval(expr: str) -> tuple[Fraction, list[int]]:
    """Evaluate an arithmetic expression exactly. Returns (value, the integer literals used).

    Raises UnsafeExpression (or ZeroDivisionError) for anything outside the allowed grammar.
    """
    if len(expr) > MAX_EXPR_CHARS:
        raise UnsafeExpression("expression too long")
    expr = expr.replace("×", "*").replace("÷", "/").replace("−", "-")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise UnsafeExpression(f"unparsable: {e}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise UnsafeExpression("expression too large")
    for node in nodes:
        if isinstance(node, (ast.Expression, ast.BinOp)) or type(node) in _OPS:
            continue
        if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value <= MAX_LITERAL:
            continue
        raise UnsafeExpression(f"disallowed element {type(node).__name__}")
    used: list[int] = []

    def ev(node) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            used.append(node.value)
            return Fraction(node.value)
        return _OPS[type(node.op)](ev(node.left), ev(node.right))

    return ev(tree), used


def _candidate_expression(text: str) -> str:
    ans = extract_answer(text)
    lines = [ln.strip() for ln in ans.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    expr = lines[-1]
    if "=" in expr:  # "3 * 7 + 25 = 46" -> left side; "46 = 3 * 7 + 25" -> the side with operators
        parts = [p.strip() for p in expr.split("=")]
        ops = [p for p in parts if any(c in p for c in "+-*/")]
        expr = ops[0] if ops else parts[0]
    return expr.rstrip(".").strip()


def score_equation(expr: str, numbers: list[int], target: int) -> float:
    try:
        value, used = safe_eval(expr)
    except (UnsafeExpression, ZeroDivisionError):
        return 0.0
    if Counter(used) - Counter(numbers):  # a number not given, or used more often than given
        return 0.0
    return 1.0 if value == target else 0.0


class CountdownTask(Task):
    def __init__(self, name: str = "countdown", count: int = 4, max_number: int = 50, min_target: int = 10,
                 max_target: int = 200):
        if not 2 <= count <= 6:
            raise ValueError(f"count must be in 2..6, got {count}")
        if not 2 <= max_number <= 1000:
            raise ValueError(f"max_number must be in 2..1000, got {max_number}")
        self.name, self.count, self.max_number = name, count, max_number
        self.min_target, self.max_target = min_target, max_target
        self.difficulty = count

    def _seed_material(self, split, seed):
        return f"{self.name}|{self.count}|{self.max_number}|{self.min_target}|{self.max_target}|{split}|{seed}"

    def sample(self, rng: random.Random) -> dict:
        while True:
            nums = [rng.randint(1, self.max_number) for _ in range(self.count)]
            k = rng.randint(2, self.count)
            pick = rng.sample(nums, k)
            expr = str(pick[0])
            value = Fraction(pick[0])
            for x in pick[1:]:
                op = rng.choice("+-*/")
                if op == "/" and (x == 0 or (value / x).denominator != 1):
                    op = "+"
                if op == "-" and value - x < 0:
                    op = "+"
                new = _OPS[{"+": ast.Add, "-": ast.Sub, "*": ast.Mult, "/": ast.Div}[op]](value, Fraction(x))
                expr = f"({expr}) {op} {x}" if op in "*/" and any(c in expr for c in "+-") else f"{expr} {op} {x}"
                value = new
            if value.denominator == 1 and self.min_target <= value <= self.max_target:
                break
        target = int(value)
        shown = ", ".join(map(str, nums))
        return {
            "prompt": f"Using the numbers {shown}, make {target}. You may use + - * / and parentheses, "
                      "and each number at most once. Give the equation.",
            "solution": expr,
            "task": self.name,
            "difficulty": self.count,
            "key": "cd:" + ",".join(map(str, sorted(nums))) + f"->{target}",
            "numbers": nums,
            "target": target,
        }

    def score(self, completion_text: str, row: dict) -> float:
        return score_equation(_candidate_expression(completion_text), list(row["numbers"]), int(row["target"]))


register_task("countdown", lambda **kw: CountdownTask(**kw))
