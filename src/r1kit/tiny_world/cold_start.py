"""Curated SFT data for the tiny world's R1 pipeline (`r1kit pipeline`).

- `cold_start_rows`: DeepSeek-R1's cold-start data in miniature (§2.3.1): readable, correct, English
  chains of thought in the R1 output format, each closed by a short summary:
  `<think> ones: 7 + 5 = 12, carry 1, so far 2. ... </think> <answer> so the answer is 82, as 47 + 35 = 82 </answer>`.
  The worked solutions come from the pretraining corpus generator (`corpus.worked_solution`) with a clean
  mix: verbose steps with a running result, no errors, no Russian, occasional self-checks that confirm
  a step ("Wait, let me check ... Yes."). Problems are the task's TRAIN split rows (never evaluation
  items). Every row is verified before it is kept: the task's verifier scores it 1, the `format` reward
  scores it 1, and its chain of thought is all target-language words; failures are dropped and counted.
- `non_reasoning_rows`: the paper's non-reasoning data (§2.3.3) in miniature: simple prompts (greetings,
  thanks, short facts about numbers, number words) with a short reply and no chain of thought
  (`<think> </think> <answer> Hello! ... </answer>`, the paper gives no CoT for simple queries).

Both return `prompt`/`completion` rows that `r1kit sft` reads (with `template: r1_zero`, as GRPO uses).
`cold_start_data` and `non_reasoning_data` are the same as the pipeline's data generators:
`(config, task) -> (rows, summary)`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from r1kit.config import field

_CHAIN = re.compile(r"(\d+(?:\s*[-+]\s*\d+)+)")


@dataclass
class ColdStartDataConfig:
    task: str | None = field(None, help="Task whose train split gives the problems (default: the pipeline's task).")
    num_examples: int = field(400, help="Chains of thought to write (the paper: thousands; the tiny world: a few hundred).")
    seed: int = field(0, help="Seed of the problems and of the wording.")
    p_check: float = field(0.3, help="Share of solutions with a self-check that confirms a step (reflection).")
    p_terse: float = field(0.0, help="Share of terse solutions (no running result); 0 keeps every step readable.")

    def __post_init__(self):
        if self.num_examples < 1:
            raise ValueError(f"'num_examples' must be >= 1, got {self.num_examples!r}")
        for name in ("p_check", "p_terse"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"'{name}' must be in [0, 1], got {getattr(self, name)!r}")


@dataclass
class NonReasoningDataConfig:
    num_examples: int = field(120, help="Simple non-reasoning prompt/response pairs (the paper: ~200k next to ~600k reasoning).")
    seed: int = field(0, help="Seed of the prompts and wording.")

    def __post_init__(self):
        if self.num_examples < 1:
            raise ValueError(f"'num_examples' must be >= 1, got {self.num_examples!r}")


def _problem(row: dict) -> dict | None:
    """The corpus generator's problem dict for a task row (binary a op b, or a +/- chain), else None."""
    if all(k in row for k in ("a", "op", "b")) and row.get("task") != "chain":
        a, op, b = int(row["a"]), str(row["op"]), int(row["b"])
        if op in "+-*" and (op != "*" or 0 <= b <= 9):  # the corpus writes column steps for * one digit
            return {"kind": "binary", "a": a, "b": b, "op": op, "word": False}
        return None
    m = _CHAIN.search(str(row.get("prompt", "")))
    if not m:
        return None
    toks = re.findall(r"\d+|[-+]", m.group(1))
    return {"kind": "chain", "nums": [int(t) for t in toks[0::2]], "ops": toks[1::2], "word": False}


def _summary(p: dict, ans: int) -> str:
    expr = (f"{p['a']} {p['op']} {p['b']}" if p["kind"] == "binary"
            else str(p["nums"][0]) + "".join(f" {o} {x}" for o, x in zip(p["ops"], p["nums"][1:])))
    # the answer first, copied from the chain of thought's last sentence, then the equation: a small model
    # that starts with "47 + 35 =" answers it afresh (a direct answer, mostly wrong) instead of copying
    return f"so the answer is {ans}, as {expr} = {ans}"


def cold_start_rows(cfg: ColdStartDataConfig, task: str = "arithmetic") -> tuple[list[dict], dict]:
    """(rows, stats): `cfg.num_examples` verified rows when the train split allows, and counts."""
    from r1kit.rewards.format import is_r1_format
    from r1kit.rewards.language import chain_of_thought, language_share, target_scripts
    from r1kit.tasks import get_task
    from r1kit.tiny_world.corpus import CorpusMix, worked_solution

    name = cfg.task or task
    t = get_task(name)
    mix = CorpusMix(p_terse=cfg.p_terse, err_verbose=0.0, err_terse=0.0, p_check=cfg.p_check,
                    p_check_catches=0.0, p_russian=0.0)
    rng = random.Random(cfg.seed)
    en = target_scripts("en")
    rows, stats = [], {"unsupported": 0, "unverified": 0, "bad_format": 0, "mixed_language": 0}
    # 2x the rows requested: a few may be unsupported or fail a check
    for row in t.dataset("train", 2 * cfg.num_examples, cfg.seed):
        if len(rows) >= cfg.num_examples:
            break
        p = _problem(row)
        if p is None:
            stats["unsupported"] += 1
            continue
        body, ans, meta = worked_solution(rng, p, mix)
        completion = f"<think> {body} </think> <answer> {_summary(p, ans)} </answer>"
        if t.score(completion, row) != 1.0:
            stats["unverified"] += 1
        elif not is_r1_format(completion):
            stats["bad_format"] += 1
        elif language_share(chain_of_thought(completion), en) < 1.0:
            stats["mixed_language"] += 1
        else:
            rows.append({"prompt": row["prompt"], "completion": completion, "solution": row["solution"],
                         "task": name, "self_check": bool(meta.get("check"))})
    if not rows:
        raise ValueError(f"cold start: no verified chain of thought could be written for task {name!r} "
                         f"(the generator handles binary + - * (one-digit multiplier) and +/- chains); {stats}")
    stats.update(kept=len(rows), task=name)
    return rows, stats


def cold_start_data(cfg: ColdStartDataConfig, task: str) -> tuple[list[dict], dict]:
    """The pipeline's cold-start data: (rows, their counts and the share with a self-check)."""
    rows, stats = cold_start_rows(cfg, task=task)
    return rows, {**stats, "self_check_share": sum(r["self_check"] for r in rows) / len(rows)}


# ---- non-reasoning data ------------------------------------------------------------------------

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_NAMES = ["Anna", "Ben", "Chen", "Dana", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jade", "Kofi", "Lena"]


def number_words(n: int) -> str:
    """English words for 0 <= n <= 999 ("three hundred forty-two")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    rest = n % 100
    return f"{_ONES[n // 100]} hundred" + ("" if rest == 0 else " " + number_words(rest))


def _non_reasoning_pair(rng: random.Random, kind: str) -> tuple[str, str]:
    name = rng.choice(_NAMES)
    n = rng.randint(2, 998)
    if kind == "greeting":
        hi = rng.choice(["Hello!", "Hi!", "Hey there!", "Good morning!", f"Hi, I am {name}."])
        return hi, rng.choice(["Hello! How can I help you today?", "Hi! What would you like to work on?",
                               f"Hello{', ' + name if name in hi else ''}! Ask me anything about numbers."])
    if kind == "thanks":
        return (rng.choice(["Thank you!", "Thanks a lot.", "Thanks, that helped."]),
                rng.choice(["You are welcome!", "Glad I could help.", "Any time. Good luck!"]))
    if kind == "words":
        return rng.choice([f"Write {n} in words.", f"How do you say {n} in English words?"]), \
            f"{n} is written as {number_words(n)}."
    if kind == "parity":
        return rng.choice([f"Is {n} even or odd?", f"Is {n} an even number?"]), \
            f"{n} is {'even' if n % 2 == 0 else 'odd'}."
    if kind == "next":
        return rng.choice([f"What number comes after {n}?", f"Which number follows {n}?"]), \
            f"The number after {n} is {n + 1}."
    if kind == "digits":
        return f"How many digits does {n} have?", f"{n} has {len(str(n))} digits."
    if kind == "about":
        return rng.choice(["Who are you?", "What can you do?", "What are you good at?"]), \
            rng.choice(["I am a small assistant. I can solve arithmetic problems and explain the steps.",
                        "I answer questions about numbers and work out sums, differences and products."])
    raise ValueError(f"unknown non-reasoning kind {kind!r}")


NON_REASONING_KINDS = ("greeting", "thanks", "words", "parity", "next", "digits", "about")


def non_reasoning_rows(cfg: NonReasoningDataConfig) -> list[dict]:
    """`cfg.num_examples` simple prompt/response rows; kinds cycle so each is about equally common."""
    rng = random.Random(cfg.seed)
    rows, seen = [], set()
    i = 0
    while len(rows) < cfg.num_examples and i < 50 * cfg.num_examples:
        kind = NON_REASONING_KINDS[i % len(NON_REASONING_KINDS)]
        i += 1
        prompt, reply = _non_reasoning_pair(rng, kind)
        if (prompt, reply) in seen and kind not in ("greeting", "thanks", "about"):
            continue
        seen.add((prompt, reply))
        rows.append({"prompt": prompt, "completion": f"<think> </think> <answer> {reply} </answer>", "kind": kind})
    return rows


def non_reasoning_data(cfg: NonReasoningDataConfig, task: str) -> tuple[list[dict], dict]:
    """The pipeline's non-reasoning data: (rows, their count); the same whatever the task."""
    rows = non_reasoning_rows(cfg)
    return rows, {"rows": len(rows)}
