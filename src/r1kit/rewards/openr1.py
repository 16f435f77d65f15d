"""open-r1's reward names with open-r1's semantics (``src/open_r1/rewards.py``), written for r1kit.

Registered here: ``reasoning_steps``, ``length``, ``cosine``, ``repetition_penalty``,
``soft_overlong_punishment``, ``code_format``. (``accuracy``, ``format`` and ``tag_count`` are r1kit's
own; ``code`` and ``binary_code`` run in r1kit's sandbox: ``r1kit.rewards.code``.)

open-r1 builds the parametrised ones with factories; here they take the same parameters as
``name?key=value&...`` (``r1kit.rewards.registry``). The plain name has open-r1's recipe defaults
(``GRPOScriptArguments``: what a recipe that names the reward without setting them gets):

* ``cosine?min_value_wrong=0.0&max_value_wrong=-0.5&min_value_correct=0.5&max_value_correct=1.0&max_len=1000``
* ``repetition_penalty?ngram_size=3&max_penalty=-1.0&language=en`` (``zh`` needs ``jieba``)
* ``soft_overlong_punishment?max_completion_len=16384&soft_punish_cache=4096``
* ``code_format?language=python`` (a row's ``language`` column wins, as in open-r1)

Completions are strings or chat messages (their assistant text). ``length`` and ``cosine`` judge
correctness with r1kit's ``accuracy`` check (the last ``<answer>``, else the last ``\\boxed{}``, against
``solution`` under math-verify); a gold that check cannot use counts as correct for ``length`` and
gets 1.0 from ``cosine``, as in open-r1; without a ``solution`` column both return None. Their lengths
are characters, as in open-r1 (``cosine`` does not clip lengths past ``max_len``: open-r1 does not
either). ``soft_overlong_punishment`` counts tokens (``completion_ids``; characters when absent).
"""

from __future__ import annotations

import importlib.util
import math
import re

from r1kit.rewards.format import completion_lengths, overlong_penalty
from r1kit.rewards.math import correctness
from r1kit.rewards.registry import register_reward, register_reward_factory
from r1kit.rewards.text import column, completion_text

# "Step 2:", a numbered item at the very start, "-" / "*" bullets after a newline, transition words
_STEP = re.compile(r"Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,")


@register_reward("reasoning_steps")
def reasoning_steps(prompts, completions, **kwargs) -> list[float | None]:
    """min(1, markers / 3): three or more step markers (``Step 1:``, bullets, ``First,`` ...) score 1.0."""
    return [min(1.0, len(_STEP.findall(completion_text(c))) / 3) for c in completions]


@register_reward("length")
def length_reward(prompts, completions, solution=None, **kwargs) -> list[float | None]:
    """Kimi 1.5's length reward: with L the character length and lo/hi its extremes in the batch,
    λ = 0.5 - (L - lo) / (hi - lo); correct answers get λ, wrong ones min(0, λ); 0.0 for every row
    when all lengths are equal."""
    n = len(completions)
    if solution is None or n == 0:
        return [None] * n
    correct = correctness(completions, solution)
    lengths = [len(completion_text(c)) for c in completions]
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * n
    out: list[float | None] = []
    for length, ok in zip(lengths, correct):
        lam = 0.5 - (length - lo) / (hi - lo)
        out.append(lam if ok is None or ok == 1.0 else min(0.0, lam))
    return out


class CosineScaled:
    """Length-scaled correctness: r = lo + (hi - lo)·(1 + cos(π·L/max_len))/2, L in characters.
    Correct: lo, hi = min_value_correct, max_value_correct (short answers earn most); wrong: lo, hi =
    max_value_wrong, min_value_wrong (a short wrong answer gets min_value_wrong, one of max_len
    characters max_value_wrong). Picklable."""

    __name__ = "cosine"

    def __init__(self, min_value_wrong: float = 0.0, max_value_wrong: float = -0.5, min_value_correct: float = 0.5,
                 max_value_correct: float = 1.0, max_len: int = 1000):
        if max_len <= 0:
            raise ValueError(f"cosine: max_len must be > 0, got {max_len}")
        self.min_value_wrong, self.max_value_wrong = float(min_value_wrong), float(max_value_wrong)
        self.min_value_correct, self.max_value_correct = float(min_value_correct), float(max_value_correct)
        self.max_len = max_len

    def __call__(self, prompts, completions, solution=None, **kwargs) -> list[float | None]:
        if solution is None:
            return [None] * len(completions)
        out: list[float | None] = []
        for completion, ok in zip(completions, correctness(completions, solution)):
            if ok is None:
                out.append(1.0)  # open-r1: an unusable gold is skipped with 1.0
                continue
            cos = math.cos(len(completion_text(completion)) / self.max_len * math.pi)
            lo, hi = ((self.min_value_correct, self.max_value_correct) if ok == 1.0
                      else (self.max_value_wrong, self.min_value_wrong))
            out.append(lo + 0.5 * (hi - lo) * (1.0 + cos))
        return out


class RepetitionPenalty:
    """N-gram repetition penalty (arXiv 2502.03373, App. C.2): (1 - distinct n-grams / n-grams) ×
    max_penalty over the lower-cased whitespace words (``zh``: jieba's segments); 0.0 for an empty
    text or one shorter than an n-gram. Picklable."""

    __name__ = "repetition_penalty"

    def __init__(self, ngram_size: int = 3, max_penalty: float = -1.0, language: str = "en"):
        if max_penalty > 0:
            raise ValueError(f"repetition_penalty: max_penalty {max_penalty} should not be positive")
        if int(ngram_size) < 1:
            raise ValueError(f"repetition_penalty: ngram_size must be >= 1, got {ngram_size}")
        if language not in ("en", "zh"):
            raise ValueError(f"repetition_penalty: word splitting for language {language!r} is not implemented "
                             f"(en, zh)")
        if language == "zh" and importlib.util.find_spec("jieba") is None:
            raise ValueError("repetition_penalty: language 'zh' needs the jieba package")
        self.ngram_size, self.max_penalty, self.language = int(ngram_size), float(max_penalty), language

    def _words(self, text: str) -> list[str]:
        if self.language == "zh":
            import jieba

            return list(jieba.cut(text))
        return text.lower().split()

    def penalty(self, text: str) -> float:
        words = self._words(text) if text else []
        k = self.ngram_size
        if len(words) < k:
            return 0.0
        grams = [tuple(words[i:i + k]) for i in range(len(words) - k + 1)]
        return (1 - len(set(grams)) / len(grams)) * self.max_penalty

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return [self.penalty(completion_text(c)) for c in completions]


class SoftOverlongPunishment:
    """DAPO's soft overlong punishment (eq. 13) with open-r1's parameters: 0 up to
    ``max_completion_len - soft_punish_cache`` tokens, then linear down to -1 at
    ``max_completion_len``, -1 beyond (``soft_punish_cache=0``: a hard -1 past the limit). Picklable."""

    __name__ = "soft_overlong_punishment"

    def __init__(self, max_completion_len: int = 16384, soft_punish_cache: int = 4096):
        if max_completion_len <= 0 or not 0 <= soft_punish_cache <= max_completion_len:
            raise ValueError(f"soft_overlong_punishment needs 0 <= soft_punish_cache <= max_completion_len, got "
                             f"{max_completion_len=}, {soft_punish_cache=}")
        self.max_completion_len, self.soft_punish_cache = int(max_completion_len), int(soft_punish_cache)

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        return [overlong_penalty(n, self.max_completion_len, self.soft_punish_cache)
                for n in completion_lengths(completions, kwargs)]


_THINK_TO_ANSWER = "\n</think>\n<answer>\n"
_ANSWER_END = "\n</answer>"


def code_format_ok(text: str, language: str) -> bool:
    """open-r1's code format: ``<think>\\n…\\n</think>\\n<answer>\\n…```LANG…```…\\n</answer>`` where
    ``\\n</answer>`` ends a line (text may follow on later lines, as open-r1's multi-line ``$`` lets it).
    A linear scan: each part is found at its first place after the previous one."""
    if not text.startswith("<think>\n"):
        return False
    i = text.find(_THINK_TO_ANSWER, len("<think>\n"))
    if i < 0:
        return False
    opening = "```" + language
    k = text.find(opening, i + len(_THINK_TO_ANSWER))
    close = text.find("```", k + len(opening)) if k >= 0 else -1
    if close < 0:
        return False
    j = text.find(_ANSWER_END, close + 3)
    while j >= 0:
        end = j + len(_ANSWER_END)
        if end == len(text) or text[end] == "\n":
            return True
        j = text.find(_ANSWER_END, j + 1)
    return False


class CodeFormat:
    """1.0 when the completion has open-r1's code format (:func:`code_format_ok`) for the row's
    ``language`` column, else for ``language``; 0.0 otherwise. Picklable."""

    __name__ = "code_format"

    def __init__(self, language: str = "python"):
        self.language = str(language)

    def __call__(self, prompts, completions, language=None, **kwargs) -> list[float | None]:
        n = len(completions)
        languages = column({"language": language}, "language", n) or [self.language] * n
        return [1.0 if code_format_ok(completion_text(c), str(lang or self.language)) else 0.0
                for c, lang in zip(completions, languages)]


for _name, _cls in (("cosine", CosineScaled), ("repetition_penalty", RepetitionPenalty),
                    ("soft_overlong_punishment", SoftOverlongPunishment), ("code_format", CodeFormat)):
    register_reward(_name)(_cls())
    register_reward_factory(_name)(_cls)
