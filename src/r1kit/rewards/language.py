"""Language consistency (DeepSeek-R1 §2.3.2): the share of chain-of-thought words written in the
target language.

Languages are told apart by Unicode script, so "en" means "Latin-script words" (French passes as
English; Chinese, Cyrillic, Greek… do not). Rules:

* the chain of thought is the ``<think>`` content, else the whole completion;
* a word is a run of letters of one script (digits, symbols and punctuation are neutral);
* Han, Hiragana and Katakana are written without spaces: each character counts as one word;
* neutral too: one-letter words in alphabetic scripts (math variables ``x``, ``θ``, ``π``) and
  LaTeX command names (``\\frac``, ``\\alpha``);
* no counted word → 1.0 (nothing is mixed).
"""

from __future__ import annotations

import re
import unicodedata

from r1kit.rewards.registry import register_reward
from r1kit.rewards.text import (
    ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, column, completion_text, think_content,
)

TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

_LETTER_RUN = re.compile(r"[^\W\d_]+")
_PER_CHAR_SCRIPTS = frozenset({"HAN", "HIRAGANA", "KATAKANA"})
_NAME_ALIASES = {"CJK": "HAN"}
_WIDTH_PREFIXES = ("FULLWIDTH", "HALFWIDTH")
_NEUTRAL_PREFIXES = frozenset({"MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER", "MODIFIER",
                               "COMBINING", "PLANCK", "ANGSTROM", "KELVIN", "OHM", "INFORMATION"})

_LATIN_LANGS = ("en af ca cs cy da de es et eu fi fr ga gl hr hu id is it lt lv ms mt nl no nb nn "
                "pl pt ro sk sl sq sv sw tl tr vi yo zu").split()
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {code: frozenset({"LATIN"}) for code in _LATIN_LANGS}
LANGUAGE_SCRIPTS.update({
    "zh": frozenset({"HAN"}), "ja": frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    "ko": frozenset({"HANGUL", "HAN"}), "el": frozenset({"GREEK"}), "he": frozenset({"HEBREW"}),
    "hi": frozenset({"DEVANAGARI"}), "mr": frozenset({"DEVANAGARI"}), "ne": frozenset({"DEVANAGARI"}),
    "bn": frozenset({"BENGALI"}), "ta": frozenset({"TAMIL"}), "te": frozenset({"TELUGU"}),
    "th": frozenset({"THAI"}), "hy": frozenset({"ARMENIAN"}), "ka": frozenset({"GEORGIAN"}),
    "am": frozenset({"ETHIOPIC"}),
})
LANGUAGE_SCRIPTS.update({c: frozenset({"CYRILLIC"}) for c in "ru uk bg sr be kk mk mn ky tg".split()})
LANGUAGE_SCRIPTS.update({c: frozenset({"ARABIC"}) for c in "ar fa ur ps ug".split()})
_FULL_NAMES = {"english": "en", "chinese": "zh", "japanese": "ja", "korean": "ko", "russian": "ru",
               "french": "fr", "german": "de", "spanish": "es", "arabic": "ar", "greek": "el"}


def target_scripts(target: str) -> frozenset[str]:
    """Scripts of a language code (``"en"``, ``"zh-CN"``, ``"ru"``…), a full name (``"english"``)
    or a script name (``"latin"``, ``"cyrillic"``, ``"han"``). Unknown → ``ValueError``."""
    key = str(target).strip().lower().replace("_", "-")
    key = _FULL_NAMES.get(key, key)
    base = key.split("-")[0]
    if base in LANGUAGE_SCRIPTS:
        return LANGUAGE_SCRIPTS[base]
    script = key.upper()
    if script in {s for v in LANGUAGE_SCRIPTS.values() for s in v}:
        return frozenset({script})
    raise ValueError(f"unknown target language {target!r}; known codes: {', '.join(sorted(LANGUAGE_SCRIPTS))}")


_SCRIPT_CACHE: dict[str, str | None] = {}


def char_script(ch: str) -> str | None:
    """Unicode script of a letter ("LATIN", "HAN", "CYRILLIC"…), ``None`` for neutral letters."""
    if ch.isascii():
        return "LATIN" if ch.isalpha() else None
    script = _SCRIPT_CACHE.get(ch, "")
    if script != "":
        return script
    words = unicodedata.name(ch, "").split()
    if words and words[0] in _WIDTH_PREFIXES:
        words = words[1:]
    script = None
    if words and words[0] not in _NEUTRAL_PREFIXES:
        script = _NAME_ALIASES.get(words[0], words[0])
    _SCRIPT_CACHE[ch] = script
    return script


def word_scripts(text: str):
    """Yield the script of each counted word of ``text`` (see the module rules)."""
    for m in _LETTER_RUN.finditer(text):
        run = m.group()
        if m.start() > 0 and text[m.start() - 1] == "\\":
            continue  # LaTeX command name
        if run.isascii():
            if len(run) > 1:
                yield "LATIN"
            continue
        pieces: list[list] = []  # [script, length] of same-script stretches of the run
        for ch in run:
            script = char_script(ch)
            if pieces and pieces[-1][0] == script:
                pieces[-1][1] += 1
            else:
                pieces.append([script, 1])
        for script, length in pieces:
            if script in _PER_CHAR_SCRIPTS:
                yield from [script] * length
            elif script is not None and length > 1:
                yield script


def chain_of_thought(completion) -> str:
    """The ``<think>`` content of a completion (else all of it), with any R1 tags blanked out."""
    text = think_content(completion_text(completion))
    for tag in TAGS:
        text = text.replace(tag, " ")
    return text


def language_share(text: str, scripts: frozenset[str]) -> float:
    """Share of counted words of ``text`` written in ``scripts``; 1.0 when there is none."""
    total = hits = 0
    for script in word_scripts(text):
        total += 1
        hits += script in scripts
    return 1.0 if total == 0 else hits / total


class LanguageReward:
    """Share of target-language words in the chain of thought. The target is the row's
    ``language`` column when present, else ``default``. Picklable."""

    __name__ = "language"

    def __init__(self, default: str = "en"):
        target_scripts(default)  # validate early
        self.default = default

    def __call__(self, prompts, completions, language=None, **kwargs) -> list[float | None]:
        n = len(completions)
        targets = column({"language": language}, "language", n) or [None] * n
        out: list[float | None] = []
        for completion, target in zip(completions, targets):
            try:
                scripts = target_scripts(target or self.default)
            except ValueError:
                out.append(None)  # cannot score an unknown language
                continue
            out.append(language_share(chain_of_thought(completion), scripts))
        return out


def make_language_reward(target: str = "en") -> LanguageReward:
    return LanguageReward(target)


@register_reward("language")
def language_reward(prompts, completions, **kwargs) -> list[float | None]:
    """Share of target-language words in the CoT (``language`` column, default ``"en"``)."""
    return LanguageReward()(prompts, completions, **kwargs)


def language_mixing_rate(texts, target: str = "en") -> float:
    """Fraction of texts (strings or chat messages) whose chain of thought holds at least one
    counted word outside the target language's scripts; 0.0 for no texts."""
    scripts = target_scripts(target)
    texts = list(texts)
    if not texts:
        return 0.0
    mixed = sum(
        any(s not in scripts for s in word_scripts(chain_of_thought(t))) for t in texts
    )
    return mixed / len(texts)
