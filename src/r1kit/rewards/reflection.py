"""Reflection: how often responses re-evaluate a step, the R1-Zero "aha moment" behaviour (paper §2.2.4).

A text metric next to `language.language_mixing_rate`: the GRPO loop logs it per step
(`completions/reflection_rate`) and `r1kit eval` reports it (`reflection_rate`).
"""

from __future__ import annotations

import re

# Phrases of re-evaluation, matched case-insensitively.
REFLECTION_PHRASES = ("wait", "let me check", "let me verify", "double-check", "double check", "re-check",
                      "recheck", "let me re-", "verify:", "check:", "проверим", "проверка")
_REFLECTION_RE = re.compile("|".join(re.escape(p) for p in REFLECTION_PHRASES), re.IGNORECASE)


def has_reflection(text: str) -> bool:
    """True when `text` holds at least one re-evaluation phrase ("wait", "let me check", ...)."""
    return _REFLECTION_RE.search(text) is not None


def reflection_rate(texts: list[str]) -> float:
    """Fraction of responses with at least one re-evaluation phrase ("wait", "let me check", ...)."""
    return sum(has_reflection(t) for t in texts) / len(texts) if texts else 0.0
