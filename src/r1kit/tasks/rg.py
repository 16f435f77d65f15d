"""Adapter: any reasoning-gym dataset as an r1kit task (``get_task("rg:<dataset_name>", **config)``).

Needs the optional extra (``pip install 'r1kit[gym]'``); reasoning_gym is imported lazily. Items come
from ``reasoning_gym.create_dataset(name, size=..., seed=..., **config)`` and are scored by that
dataset's own ``score_answer(answer, entry)``; the answer passed to it is the ``<answer>`` content if
present, else the last non-empty line of the completion. The train/test split uses the same hash
partition as the built-in tasks, keyed on the question text, so the splits are disjoint.
"""

from __future__ import annotations

import hashlib
import json
import random

from . import Task, extract_answer, split_of


def _require():
    try:
        import reasoning_gym  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("rg:<dataset> tasks need reasoning-gym: pip install 'r1kit[gym]'") from e
    return reasoning_gym


class ReasoningGymTask(Task):
    def __init__(self, dataset_name: str, difficulty: int = 0, **config):
        self.rg = _require()
        self.dataset_name = dataset_name
        self.name = f"rg:{dataset_name}"
        self.config = config
        self.difficulty = difficulty
        self._scorer = None

    def _make(self, size: int, seed: int):
        return self.rg.create_dataset(self.dataset_name, size=size, seed=seed, **self.config)

    def sample(self, rng: random.Random) -> dict:  # not used: dataset() draws whole batches
        raise NotImplementedError

    def dataset(self, split: str = "train", n: int = 100, seed: int = 0) -> list[dict]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rows: list[dict] = []
        seen: set[str] = set()
        base = int.from_bytes(hashlib.sha256(f"{self.name}|{split}|{seed}".encode()).digest()[:4], "big")
        for round_ in range(50):
            size = max(16, 4 * (n - len(rows)) if split == "test" else 2 * (n - len(rows)))
            ds = self._make(size, (base + round_) % (2**31))
            if self._scorer is None:
                self._scorer = ds
            for entry in ds:
                q = entry["question"]
                key = "rg:" + self.dataset_name + ":" + q
                if key in seen or split_of(key) != split:
                    continue
                seen.add(key)
                rows.append({
                    "prompt": q,
                    "solution": str(entry["answer"]),
                    "task": self.name,
                    "difficulty": self.difficulty,
                    "key": key,
                    "rg_entry": json.dumps({"question": q, "answer": entry["answer"],
                                            "metadata": entry.get("metadata", {})}, default=str),
                })
                if len(rows) == n:
                    return rows
        return rows

    def score(self, completion_text: str, row: dict) -> float:
        if self._scorer is None:
            self._scorer = self._make(1, 0)
        ans = extract_answer(completion_text)
        if "<answer>" not in completion_text:
            lines = [ln.strip() for ln in ans.splitlines() if ln.strip()]
            ans = lines[-1] if lines else ""
        entry = json.loads(row["rg_entry"])
        try:
            return float(self._scorer.score_answer(answer=ans, entry=entry))
        except Exception:
            return 0.0
