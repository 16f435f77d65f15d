"""Structure rewards: strict R1 ``format``, ``tag_count`` and DAPO's ``soft_overlong`` shaping.

All of them scan with ``str.find``/``str.count`` (linear time; no backtracking regexes), so a
300k-character completion costs milliseconds.

Pre-filled ``<think>``: chat templates of R1-distilled models end the prompt with ``<think>``, so
the model's completion starts directly with the reasoning. ``format`` and ``tag_count`` detect a
string prompt ending with ``<think>`` and then read the completion as if it started with
``<think>`` (a completion that repeats ``<think>`` anyway is read as is). Conversational prompts
are rendered by the trainer, so the template's pre-fill is not visible here: build the reward
with ``make_format_reward(think_prefilled=True)`` / ``make_tag_count(think_prefilled=True)``.
"""

from __future__ import annotations

from r1kit.rewards.registry import register_reward
from r1kit.rewards.text import (
    ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, column, completion_text,
    prompt_prefills_think,
)

TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def _texts(prompts, completions, think_prefilled: bool | None) -> list[str]:
    """Completion texts, with ``<think>`` put back in front when the prompt pre-filled it."""
    out = []
    for i, completion in enumerate(completions):
        text = completion_text(completion).strip()
        prefilled = think_prefilled
        if prefilled is None:
            prefilled = prompts is not None and i < len(prompts) and prompt_prefills_think(prompts[i])
        if prefilled and not text.startswith(THINK_OPEN):
            text = THINK_OPEN + text
        out.append(text)
    return out


def is_r1_format(text: str) -> bool:
    """``<think>…</think>``, optional whitespace, ``<answer>…</answer>``, nothing else; each tag
    exactly once. ``text`` should already be stripped."""
    if not text.startswith(THINK_OPEN) or not text.endswith(ANSWER_CLOSE):
        return False
    if any(text.count(tag) != 1 for tag in TAGS):
        return False
    think_end = text.find(THINK_CLOSE)
    answer_start = text.find(ANSWER_OPEN)
    # each tag occurs once, the text starts with <think> and ends with </answer>: only the middle
    # two can be out of order, and only whitespace may separate them.
    return think_end < answer_start and text[think_end + len(THINK_CLOSE) : answer_start].strip() == ""


def tag_score(text: str) -> float:
    """0.25 for each of the four tags that occurs exactly once."""
    return sum(0.25 for tag in TAGS if text.count(tag) == 1)


class FormatReward:
    """Strict R1 structure → 1.0, else 0.0. Picklable (for ``score_completions(timeout_s=...)``)."""

    __name__ = "format"

    def __init__(self, think_prefilled: bool | None = None):
        self.think_prefilled = think_prefilled  # None: detect from string prompts

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return [1.0 if is_r1_format(t) else 0.0 for t in _texts(prompts, completions, self.think_prefilled)]


class TagCount:
    """0.25 per tag (``<think>``, ``</think>``, ``<answer>``, ``</answer>``) present exactly once."""

    __name__ = "tag_count"

    def __init__(self, think_prefilled: bool | None = None):
        self.think_prefilled = think_prefilled

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return [tag_score(t) for t in _texts(prompts, completions, self.think_prefilled)]


def make_format_reward(think_prefilled: bool | None = None) -> FormatReward:
    return FormatReward(think_prefilled)


def make_tag_count(think_prefilled: bool | None = None) -> TagCount:
    return TagCount(think_prefilled)


@register_reward("format")
def format_reward(prompts, completions, **kwargs) -> list[float | None]:
    """1.0 for ``<think>…</think> <answer>…</answer>`` and nothing else (pre-fill detected from
    string prompts), else 0.0."""
    return FormatReward()(prompts, completions, **kwargs)


@register_reward("tag_count")
def tag_count(prompts, completions, **kwargs) -> list[float | None]:
    """0.25 per R1 tag present exactly once (pre-fill detected from string prompts)."""
    return TagCount()(prompts, completions, **kwargs)


# ----------------------------------------------------------------------------- overlong shaping
def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO (arXiv 2503.14476) eq. 13: 0 up to ``max_len - buffer``, then a linear ramp down to
    -1 at ``max_len``, and -1 beyond it."""
    start = max_len - buffer
    if length <= start:
        return 0.0
    if length <= max_len:
        return (start - length) / buffer
    return -1.0


def completion_lengths(completions, kwargs) -> list[int]:
    """Token counts from a ``completion_ids`` column when given, else character counts."""
    ids = column(kwargs, "completion_ids", len(completions))
    if ids is not None:
        return [len(x) if x is not None else len(completion_text(c)) for x, c in zip(ids, completions)]
    return [len(completion_text(c)) for c in completions]


class SoftOverlong:
    """DAPO's soft overlong punishment with fixed ``max_len`` and ``buffer`` (same unit as the
    lengths: tokens from ``completion_ids``, else characters). Picklable."""

    __name__ = "soft_overlong"

    def __init__(self, max_len: int, buffer: int | None = None):
        buffer = max(1, max_len // 4) if buffer is None else buffer
        if max_len <= 0 or not 0 < buffer <= max_len:
            raise ValueError(f"soft_overlong needs 0 < buffer <= max_len, got {max_len=}, {buffer=}")
        self.max_len, self.buffer = int(max_len), int(buffer)

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return [overlong_penalty(n, self.max_len, self.buffer) for n in completion_lengths(completions, kwargs)]


def soft_overlong(max_len: int, buffer: int | None = None) -> SoftOverlong:
    """Factory: ``soft_overlong(20480, 4096)`` is DAPO's setting. ``buffer`` defaults to
    ``max_len // 4``."""
    return SoftOverlong(max_len, buffer)


@register_reward("soft_overlong")
def soft_overlong_default(prompts, completions, max_completion_length=None, **kwargs) -> list[float | None]:
    """Registered default: reads ``max_completion_length`` from the keyword arguments (an int, or
    a per-row column) with a buffer of a quarter of it; ``None`` for rows without it."""
    n = len(completions)
    limits = column({"m": max_completion_length}, "m", n) or [None] * n
    lengths = completion_lengths(completions, kwargs)
    out: list[float | None] = []
    for length, limit in zip(lengths, limits):
        if not limit or int(limit) <= 0:
            out.append(None)
        else:
            limit = int(limit)
            out.append(overlong_penalty(length, limit, max(1, limit // 4)))
    return out
