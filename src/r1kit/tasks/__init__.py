"""Procedural tasks with exact verifiers: the "tiny world" and friends.

Contract (see docs/design.md)::

    task = get_task("arithmetic")            # or get_task("add", digits=4), get_task("rg:chain_sum")
    rows = task.dataset("train", n=1000, seed=0)   # list[dict]: prompt, solution, task, difficulty, ...
    task.score(completion_text, rows[0])     # -> 1.0 or 0.0 (exact)

Train/test split by construction
--------------------------------
Every item has a canonical *key* (for ``a + b`` the operands sorted, for Countdown the sorted numbers
and the target, ...). ``split_of(key)`` hashes it (SHA-256, fixed salt) into 1000 buckets; the
lowest ``TEST_BUCKETS`` buckets are the test split. ``dataset("train")`` and the pretraining corpus
only ever emit items whose key is in the train split, and ``dataset("test")`` only test items, so
the splits are disjoint whatever the seeds and sizes. Word problems use the key of their underlying
arithmetic, so "a shop has 457 apples and gets 368 more" is a test item exactly when ``457 + 368`` is.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any, Callable

__all__ = [
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
    "split_of",
    "is_test_key",
    "extract_answer",
    "extract_number",
    "score_number",
    "TEST_BUCKETS",
]

SPLIT_SALT = "r1kit-split-v1"
TEST_BUCKETS = 100  # of 1000: 10 % of the item space is held out


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{SPLIT_SALT}:{key}".encode()).digest()[:8], "big") % 1000


def is_test_key(key: str) -> bool:
    """True when the canonical item `key` belongs to the held-out test split."""
    return _bucket(key) < TEST_BUCKETS


def split_of(key: str) -> str:
    return "test" if is_test_key(key) else "train"


_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# A leading minus is a sign only when not preceded by a digit or ")" (so "457-368" yields 368).
_NUMBER_RE = re.compile(r"(?<![\d).])-?\d+(?:\.\d+)?")
MAX_SCORED_CHARS = 20_000


def extract_answer(text: str) -> str:
    """The last ``<answer>…</answer>`` content if there is one, else the whole text (stripped)."""
    text = text[-MAX_SCORED_CHARS:]
    found = _ANSWER_RE.findall(text)
    return (found[-1] if found else text).strip()


def extract_number(text: str) -> str | None:
    """Lenient numeric answer: the last number in the ``<answer>`` content if present, else in the text.

    Thousands separators ("1,692") are accepted. Returns the number as a string, or None.
    """
    ans = extract_answer(text)
    ans = re.sub(r"(?<=\d),(?=\d{3}\b)", "", ans)
    nums = _NUMBER_RE.findall(ans)
    return nums[-1] if nums else None


def numbers_equal(pred: str | None, gold: str) -> bool:
    from fractions import Fraction

    if pred is None:
        return False
    try:
        return Fraction(pred) == Fraction(gold)
    except (ValueError, ZeroDivisionError):
        return False


def score_number(completion_text: str, row: dict) -> float:
    """The verifier of numeric-answer tasks: 1.0 when the leniently extracted number equals `solution`."""
    return 1.0 if numbers_equal(extract_number(completion_text), row["solution"]) else 0.0


class Task:
    """A procedural task. Subclasses implement `sample(rng)` (one row, with a canonical `key`) and
    `score(completion_text, row)`. `dataset()` handles splits, determinism and de-duplication."""

    name: str = "task"
    difficulty: Any = None

    def sample(self, rng: random.Random) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, completion_text: str, row: dict) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _seed_material(self, split: str, seed: int) -> str:
        return f"{self.name}|{self.difficulty!r}|{split}|{seed}"

    def dataset(self, split: str = "train", n: int = 100, seed: int = 0) -> list[dict]:
        """`n` rows of `split` ("train" or "test"), deterministic in (task, difficulty, split, seed).

        Rows are unique by key while the item space allows it; a very small space (e.g. 1-digit
        problems) is reused rather than looping forever.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        digest = hashlib.sha256(self._seed_material(split, seed).encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        rows: list[dict] = []
        seen: set[str] = set()
        attempts, max_attempts = 0, 200 * n + 1000
        while len(rows) < n:
            attempts += 1
            row = self.sample(rng)
            if split_of(row["key"]) != split:
                continue
            if row["key"] in seen and attempts < max_attempts:
                continue
            if attempts >= 10 * max_attempts and not rows:
                raise RuntimeError(f"task {self.name!r} produced no {split} items")
            seen.add(row["key"])
            rows.append(row)
        return rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, difficulty={self.difficulty!r})"


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(name: str, factory: Callable[..., Task]) -> None:
    _REGISTRY[name] = factory


def list_tasks() -> list[str]:
    """Registered task names (``rg:<name>`` is accepted too when reasoning-gym is installed)."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def get_task(name: str, **kwargs) -> Task:
    """The task called `name`, with difficulty keyword arguments (e.g. ``get_task("add", digits=4)``).

    ``r1kit:NAME`` is accepted as an alias of ``NAME``; ``rg:DATASET`` wraps a reasoning-gym dataset.
    """
    _ensure_builtins()
    if name.startswith("r1kit:"):
        name = name[len("r1kit:"):]
    if name.startswith("rg:"):
        from .rg import ReasoningGymTask

        return ReasoningGymTask(name[3:], **kwargs)
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(_REGISTRY))}, or rg:<dataset>")
    return _REGISTRY[name](**kwargs)


_LOADED = False


def _ensure_builtins() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import arithmetic  # noqa: F401  (registers arithmetic, add, sub, mul, chain)

    for mod in ("countdown", "word"):
        try:
            __import__(f"{__name__}.{mod}")
        except ImportError:  # pragma: no cover - modules land incrementally
            pass
