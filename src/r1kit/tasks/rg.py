"""Adapter: any reasoning-gym dataset as an r1kit task.

``get_task("rg:NAME")``, with the dataset's own configuration (difficulty) either in the spec string,
``get_task("rg:basic_arithmetic?min_terms=2&max_terms=2&max_digits=2")``, or as keywords,
``get_task("rg:basic_arithmetic", max_terms=2)``. A recipe names the same spec as its dataset,
``dataset_name: r1kit:rg:chain_sum?max_terms=2&max_digits=2``. Values are read by the type of the
config field (int, float, ``true``/``false``, comma-separated lists: ``operators=+,-``); a key that is
not a field of the dataset's config is an error naming it and the fields. ``seed`` and ``size`` are
the adapter's. The task's ``name`` (and each row's ``task`` column) is the canonical spec, so the
``task_accuracy`` reward rebuilds the same configuration from a row.

Needs the optional extra (``pip install 'r1kit[gym]'``); reasoning_gym is imported lazily.

Items come from ``reasoning_gym.create_dataset(name, size=..., seed=..., **config)``. reasoning-gym draws
item ``i`` of a dataset with seed ``s`` from ``Random(s + i)``, so rounds of drawing use seeds
``SEED_STRIDE`` apart (seeds one apart would repeat all but one item). The train/test split uses the
same hash partition as the built-in tasks, keyed on the question text, so the splits are disjoint and
a question's split does not depend on the configuration. A configuration with a small item space (two
one-digit terms: 200 questions, ~20 of them test) may not hold ``n`` distinct items of a split: the
test split then raises ``ValueError`` naming the dataset and how many it found; the train split
reuses the items it found and logs a warning.

Scoring: reasoning-gym's ``score_answer(answer, entry)`` gives partial credit (for
``basic_arithmetic`` the answer ``28`` to ``2`` scores 0.5). ``score`` — what pass@1, cons@k and the
``task_accuracy`` reward use — is 1.0 only when ``score_answer`` is 1.0, else 0.0; the raw score is
``partial_credit(text, row)``, and the reward ``rg_partial_credit`` (``r1kit.rewards.task``) for
training with it. The answer handed to ``score_answer`` is the last ``<answer>`` content if there is
one; else, when the reference answer is a number, the last number in the completion; else the last
non-empty line.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import random
import traceback
import typing
from urllib.parse import unquote

from . import Task, extract_answer, extract_number, split_of

log = logging.getLogger("r1kit.tasks.rg")

SEED_STRIDE = 2**20          # seeds of successive rounds: item windows [s, s + size) never overlap
MAX_ROUND_SIZE = SEED_STRIDE
MAX_ROUNDS = 200
DRY_ROUNDS = 3               # rounds in a row that add no new item of the split: the space is exhausted
RESERVED = ("seed", "size")  # config fields the adapter sets itself


def _require():
    try:
        import reasoning_gym  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("rg:<dataset> tasks need reasoning-gym: pip install 'r1kit[gym]'") from e
    return reasoning_gym


def _config_fields(config_cls) -> dict[str, tuple[object, object]]:
    """name -> (type hint, default) of a reasoning-gym config dataclass, without the adapter's fields."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # pragma: no cover - unresolvable annotations
        hints = {}
    out = {}
    for f in dataclasses.fields(config_cls):
        if f.name in RESERVED:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out[f.name] = (hints.get(f.name, f.type), default)
    return out


def _convert(text: str, hint, default, where: str):
    """A spec-string value read by its config field's type."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union and len(args) == 1:  # Optional[X]
        if text.strip().lower() in ("none", "null"):
            return None
        hint, origin = args[0], typing.get_origin(args[0])
        args = list(typing.get_args(hint))
    if origin in (list, tuple) or isinstance(default, (list, tuple)):
        item = args[0] if args and args[0] is not Ellipsis else (
            type(default[0]) if isinstance(default, (list, tuple)) and default else str)
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        return tuple(_convert(p, item, None, where) for p in parts)
    if origin is typing.Literal:
        if text not in args:
            raise ValueError(f"{where}: {text!r} is not one of {', '.join(map(repr, args))}")
        return text
    kind = hint if isinstance(hint, type) else type(default) if default is not None else str
    if kind is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"{where}: {text!r} is not true or false")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not {'an int' if kind is int else 'a number'}") from None
    return text


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    return "none" if value is None else str(value)


def parse_spec(spec: str, rg=None) -> tuple[str, dict]:
    """``"NAME?key=value&..."`` -> (dataset name, typed config), checked against the dataset's config."""
    rg = rg or _require()
    name, _, query = spec.partition("?")
    datasets = rg.factory.DATASETS
    if name not in datasets:
        close = difflib.get_close_matches(name, list(datasets), n=5)
        raise KeyError(f"rg:{name}: not a reasoning-gym dataset"
                       + (f" (did you mean {', '.join(close)}?)" if close else "")
                       + f"; {len(datasets)} datasets, e.g. {', '.join(sorted(datasets)[:8])}, ...")
    fields = _config_fields(datasets[name][1])
    config: dict = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        key = unquote(key).strip()
        check_key(name, key, fields)
        if not eq:
            raise ValueError(f"rg:{name}: {key!r} has no value (write {key}=VALUE)")
        config[key] = _convert(unquote(value), *fields[key], where=f"rg:{name}: {key}")
    return name, config


def check_key(name: str, key: str, fields: dict) -> None:
    if key in fields:
        return
    why = "is set by r1kit (the split and the number of rows)" if key in RESERVED else "is not a config field"
    raise ValueError(f"rg:{name}: {key!r} {why}; {name}'s config fields are: {', '.join(fields) or '(none)'}")


class ReasoningGymTask(Task):
    def __init__(self, dataset_name: str, **config):
        self.rg = _require()
        name, spec_config = parse_spec(dataset_name, self.rg)
        fields = _config_fields(self.rg.factory.DATASETS[name][1])
        for key, value in config.items():
            check_key(name, key, fields)
            if key in spec_config and spec_config[key] != value:
                raise ValueError(f"rg:{name}: {key} is given twice ({spec_config[key]!r} in the spec, {value!r} "
                                 f"as a keyword)")
            spec_config[key] = tuple(value) if isinstance(value, list) else value
        self.dataset_name = name
        self.config = spec_config
        query = "&".join(f"{k}={_format(v)}" for k, v in sorted(spec_config.items()))
        self.difficulty = query
        self.name = f"rg:{name}" + (f"?{query}" if query else "")
        self._scorer = self._make(1, 0)  # validates the configuration now, not at the first draw

    def _make(self, size: int, seed: int):
        try:
            return self.rg.create_dataset(self.dataset_name, size=size, seed=seed, **self.config)
        except (AssertionError, TypeError, ValueError) as e:
            why = str(e) or (traceback.extract_tb(e.__traceback__)[-1].line or type(e).__name__)  # a bare assert
            raise ValueError(f"{self.name}: reasoning-gym rejects this configuration: {why}") from e

    def sample(self, rng: random.Random) -> dict:  # not used: dataset() draws whole batches
        raise NotImplementedError

    def _row(self, entry: dict, key: str) -> dict:
        q = entry["question"]
        return {
            "prompt": q,
            "solution": str(entry["answer"]),
            "task": self.name,
            "difficulty": self.difficulty,
            "key": key,
            "rg_entry": json.dumps({"question": q, "answer": entry["answer"],
                                    "metadata": entry.get("metadata", {})}, default=str),
        }

    def dataset(self, split: str = "train", n: int = 100, seed: int = 0) -> list[dict]:
        """`n` distinct rows of `split`, deterministic in (spec, split, seed); see the module docstring
        for a configuration whose item space is too small."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rows: list[dict] = []
        seen: set[str] = set()
        base = int.from_bytes(hashlib.sha256(f"{self.name}|{split}|{seed}".encode()).digest()[:4], "big")
        drawn = dry = round_ = 0
        while len(rows) < n and dry < DRY_ROUNDS and round_ < MAX_ROUNDS:
            need = n - len(rows)
            size = min(MAX_ROUND_SIZE, max(64, (12 if split == "test" else 2) * need))  # test: ~10 % of items
            ds = self._make(size, (base + round_ * SEED_STRIDE) % (2**31))
            round_ += 1
            drawn += size
            before = len(rows)
            for entry in ds:
                key = "rg:" + self.dataset_name + ":" + entry["question"]
                if key in seen or split_of(key) != split:
                    continue
                seen.add(key)
                rows.append(self._row(entry, key))
                if len(rows) == n:
                    return rows
            dry = dry + 1 if len(rows) == before else 0
        found = len(rows)
        msg = (f"{self.name}: asked for {n} {split} problems, found only {found} distinct ones in {drawn} "
               f"generated items (the {split} split holds ~{'10' if split == 'test' else '90'}% of the "
               f"dataset's questions): widen the configuration (more digits, terms, ...) or ask for fewer")
        if split == "test" or not rows:
            raise ValueError(msg)
        log.warning("%s; the train split reuses them", msg)
        return [rows[i % found] for i in range(n)]

    def answer_text(self, completion_text: str, row: dict) -> str:
        """What is handed to reasoning-gym's ``score_answer`` (see the module docstring)."""
        if "<answer>" in completion_text:
            return extract_answer(completion_text)
        if _is_number(row["solution"]):
            return extract_number(completion_text) or ""
        lines = [ln.strip() for ln in completion_text.splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def partial_credit(self, completion_text: str, row: dict) -> float:
        """reasoning-gym's own score in [0, 1], partial credit included."""
        entry = json.loads(row["rg_entry"])
        try:
            return float(self._scorer.score_answer(answer=self.answer_text(completion_text, row), entry=entry))
        except Exception:
            return 0.0

    def score(self, completion_text: str, row: dict) -> float:
        """1.0 when reasoning-gym scores the answer fully right, else 0.0 (partial credit is not accuracy)."""
        return 1.0 if self.partial_credit(completion_text, row) >= 1.0 else 0.0


def _is_number(text: str) -> bool:
    try:
        float(str(text).replace(",", ""))
        return True
    except ValueError:
        return False
