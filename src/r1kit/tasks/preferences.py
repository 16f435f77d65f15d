"""Preference pairs for the tiny world's own helpfulness reward model (`r1kit rm`, `r1kit:preferences`).

A procedural data source built on a task's rows, so it lives with the tasks, below the trainer that reads
it. Each pair answers one `r1kit:arithmetic` question (train split only, so evaluation items never leak):
- `chosen`: a correct, readable English response: short worked steps in `<think>`, then a one-line
  summary and the answer: `<think> ... </think> <answer> 12 + 30 = 42, so the answer is 42 </answer>`;
- `rejected`, by `kind` (cycled so every kind is equally common):
  - `wrong`: the same readable shape with a wrong result;
  - `mixed_language`: the right result, but steps and summary drift into Russian;
  - `rambling`: the right result buried in a long, hedging summary that also names wrong numbers;
  - `no_summary`: the chain of thought stops without a summary or answer.
Rows: `prompt`, `chosen`, `rejected`, `kind`, `solution` (jsonl-ready; `r1kit rm` reads them directly).
"""

from __future__ import annotations

import random
from pathlib import Path

from r1kit.tasks import get_task
from r1kit.utils.io import write_jsonl

KINDS = ("wrong", "mixed_language", "rambling", "no_summary")
_OPS = {"+": "plus", "-": "minus", "*": "times"}
_RU_OPS = {"+": "плюс", "-": "минус", "*": "умножить на"}


def _steps(a: int, op: str, b: int, result: int) -> str:
    return f"I need {a} {_OPS[op]} {b}. {a} {op} {b} = {result}. Check: the result is {result}."


def _wrong(rng: random.Random, x: int) -> int:
    return x + rng.choice([-10, -2, -1, 1, 2, 10])


def make_pair(row: dict, kind: str, rng: random.Random) -> dict:
    """One (chosen, rejected) pair for an arithmetic row with `a`, `op`, `b`, `solution`."""
    a, op, b, ans = int(row["a"]), row["op"], int(row["b"]), int(row["solution"])
    summary = f"{a} {op} {b} = {ans}, so the answer is {ans}"
    chosen = f"<think> {_steps(a, op, b, ans)} </think> <answer> {summary} </answer>"
    if kind == "wrong":
        bad = _wrong(rng, ans)
        rejected = f"<think> {_steps(a, op, b, bad)} </think> <answer> {a} {op} {b} = {bad}, so the answer is {bad} </answer>"
    elif kind == "mixed_language":
        rejected = (f"<think> Мне нужно {a} {_RU_OPS[op]} {b}. {a} {op} {b} = {ans}. Проверка: ответ {ans}. </think> "
                    f"<answer> {a} {op} {b} = {ans}, значит ответ {ans} </answer>")
    elif kind == "rambling":
        w1, w2 = _wrong(rng, ans), _wrong(rng, ans)
        rejected = (f"<think> {_steps(a, op, b, ans)} </think> <answer> well, hmm, it could be {w1}, or maybe "
                    f"{w2}, it is hard to say, let me think about it again and again, perhaps {ans}, although "
                    f"{w1} also looks plausible, so the answer might be {ans} </answer>")
    elif kind == "no_summary":
        rejected = f"<think> I need {a} {_OPS[op]} {b}. Let me see, {a} {op} {b} is"
    else:
        raise ValueError(f"unknown rejected kind {kind!r}; use one of {KINDS}")
    return {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "kind": kind,
            "solution": row["solution"]}


def preference_pairs(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, task: str = "arithmetic") -> list[dict]:
    """`n` pairs from the train split of `task` (rows need `a`, `op`, `b`); kinds cycle in order."""
    rows = get_task(task).dataset("train", n, seed)
    rng = random.Random(seed)
    return [make_pair(row, kinds[i % len(kinds)], rng) for i, row in enumerate(rows)]


def write_pairs(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write `n` pairs as JSON lines to `path` (atomically); returns the path."""
    return write_jsonl(Path(path), preference_pairs(n, seed))
