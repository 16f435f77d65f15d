"""Math accuracy: the final answer is checked with math-verify against the ``solution`` column.

Predicted answer = the content of the last ``<answer>…</answer>``, else of the last ``\\boxed{…}``
(balanced braces). No answer → 0.0 (the model failed to answer); an empty or unparsable gold →
``None`` (cannot score), never 1.0.

Threads: math-verify's timeouts use ``signal.alarm``, which only works in the main thread. On the
main thread we keep its timeouts; elsewhere we call it with ``parsing_timeout=None`` /
``timeout_seconds=None`` and rely on our own guards instead: answers longer than
``MAX_ANSWER_CHARS`` score 0.0, and answers whose exact value would have more than ``MAX_DIGITS``
digits (``10^{10^{10}}``, ``(10^{10})!``) score 0.0 before sympy touches them. For a hard
deadline, run the reward through ``score_completions(..., timeout_s=...)``.
"""

from __future__ import annotations

import logging
import math
import re
import threading

from r1kit.rewards.registry import register_reward
from r1kit.rewards.text import ANSWER_CLOSE, ANSWER_OPEN, column, completion_text

logger = logging.getLogger("r1kit.rewards")

MAX_ANSWER_CHARS = 1000
MAX_DIGITS = 100_000
MV_TIMEOUT_S = 5  # math-verify's own per-call timeout, used on the main thread only

_BRACE_RE = re.compile(r"\\\\|\\[{}]|[{}]")  # escaped braces are literal, not grouping
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_DIGIT_RUN_RE = re.compile(r"\d+(?:[.,]\d+)*")


# ----------------------------------------------------------------------------- extraction
def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each ``{`` → index of its matching ``}`` (one pass, unmatched ones left out)."""
    pairs, stack = {}, []
    for m in _BRACE_RE.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` whose braces balance, or ``None``. Linear time."""
    pos = text.rfind("\\boxed")
    if pos < 0:
        return None
    pairs = _brace_pairs(text)
    while pos >= 0:
        j = pos + len("\\boxed")
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{" and j in pairs:
            return text[j + 1 : pairs[j]]
        pos = text.rfind("\\boxed", 0, pos)
    return None


def _tagged_answer(text: str) -> str | None:
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    return None if start < 0 else text[start + len(ANSWER_OPEN) : end]


def extract_answer(text: str) -> str | None:
    """The final answer: the content of the last ``<answer>…</answer>``, else of the last
    ``\\boxed{…}``, stripped; ``None`` when there is neither."""
    ans = _tagged_answer(text)
    if ans is None:
        ans = last_boxed(text)
    return None if ans is None else ans.strip()


def extract_answer_lenient(text: str) -> str | None:
    """Like :func:`extract_answer`, then falls back to the last number in the text (thousands
    commas removed); ``None`` when there is no number either."""
    ans = extract_answer(text)
    if ans:
        return ans
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return None if last is None else last.group().replace(",", "")


# ----------------------------------------------------------------------------- size guard
def _int_log10(n: int) -> float:
    n = abs(int(n))
    return 0.0 if n == 0 else (n.bit_length() - 1) * 0.30103


def _log10_size(x, depth: int = 0) -> float:
    """Rough upper estimate of log10|x| (≈ its number of digits) without evaluating x."""
    import sympy

    if depth > 200:
        return math.inf
    if x.is_Integer:
        return _int_log10(x)
    if x.is_Rational:
        return max(_int_log10(x.p), _int_log10(x.q))
    if x.is_Float:
        try:
            v = abs(float(x))
        except (OverflowError, ValueError):
            return math.inf
        return abs(math.log10(v)) if v > 0 and math.isfinite(v) else (0.0 if v == 0 else math.inf)
    if x.is_Atom:  # symbols, pi, E, I, oo: small
        return 1.0
    args = [_log10_size(a, depth + 1) for a in x.args]
    if isinstance(x, sympy.Pow):
        lb, le = args
        exponent = math.inf if le > 300 else 10.0**le
        return exponent * max(lb, 1.0)
    if isinstance(x, (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma,
                      sympy.binomial, sympy.RisingFactorial, sympy.FallingFactorial)):
        n = math.inf if max(args) > 300 else 10.0 ** max(args)
        return n * max(math.log10(n), 1.0) if math.isfinite(n) else math.inf
    if isinstance(x, sympy.Mul):
        return sum(args)
    return max(args, default=0.0) + 1.0


def _too_big(items) -> bool:
    from sympy import Basic, MatrixBase

    for item in items:
        exprs = list(item) if isinstance(item, MatrixBase) else [item]
        for e in exprs:
            if isinstance(e, Basic):
                try:
                    if _log10_size(e) > MAX_DIGITS:
                        return True
                except RecursionError:
                    return True
    return False


# ----------------------------------------------------------------------------- parse / verify
class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeout is off; off the main thread that is by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _mv_parse(s: str) -> list:
    from math_verify import parse

    return parse(s, parsing_timeout=MV_TIMEOUT_S if _on_main_thread() else None)


def _mv_verify(gold: list, pred: list) -> bool:
    from math_verify import verify

    return bool(verify(gold, pred, timeout_seconds=MV_TIMEOUT_S if _on_main_thread() else None))


def _symbolic(items: list) -> list:
    from sympy import Basic, MatrixBase

    return [x for x in items if isinstance(x, (Basic, MatrixBase))]


def _core(answer: str) -> str:
    """An answer with a ``\\boxed{}`` inside (``<answer>\\boxed{3}</answer>``) → the boxed content."""
    if "\\boxed" in answer:
        inner = last_boxed(answer)
        if inner is not None:
            return inner.strip()
    return answer.strip()


def _parse_answer(core: str) -> list:
    """Parse a bare answer: as ``\\boxed{core}`` (so ``x^2+1`` or ``(1,2)`` parse without ``$``),
    else as raw text."""
    res = []
    if core.count("{") == core.count("}"):
        res = _mv_parse("\\boxed{" + core + "}")
    if not _symbolic(res):
        res = _mv_parse(core)
    return res


def _parse_gold(gold: str) -> list | None:
    """Parsed gold, or ``None`` when it is empty, too long, too big or has no parsable expression."""
    core = _core(extract_answer(gold) or gold) if gold else ""
    if not core or len(core) > MAX_ANSWER_CHARS:
        return None
    parsed = _parse_answer(core)
    if not _symbolic(parsed) or _too_big(parsed):
        return None
    return parsed


def _has_free_symbols(items: list) -> bool:
    return any(getattr(x, "free_symbols", None) for x in _symbolic(items))


def score_answer(answer: str | None, gold_parsed: list) -> float:
    """1.0 when the extracted ``answer`` matches the parsed gold, else 0.0."""
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    core = _core(answer)
    if not core:
        return 0.0
    pred = _parse_answer(core)
    if _too_big(pred):
        return 0.0
    if _mv_verify(gold_parsed, pred):
        return 1.0
    # "72 dollars" parses as 72·d·o·l·l·a·r·s; with a numeric gold and a single number in the
    # answer, retry the raw text (math-verify then picks the number). Hedges like "5 or 6" hold
    # two numbers and get no retry.
    if (_has_free_symbols(pred) and not _has_free_symbols(gold_parsed)
            and len(_DIGIT_RUN_RE.findall(core)) == 1):
        raw = _mv_parse(core)
        if _symbolic(raw) and not _too_big(raw) and _mv_verify(gold_parsed, raw):
            return 1.0
    return 0.0


def correctness(completions, solution) -> list[float | None]:
    """Per completion: 1.0 if its final answer (last ``<answer>``, else last ``\\boxed{}``) equals its
    ``solution`` under math-verify, 0.0 if wrong or missing, ``None`` if the gold is unusable or the
    row could not be checked. ``solution``: one per completion, or one for all."""
    n = len(completions)
    golds = column({"solution": solution}, "solution", n)
    if golds is None:
        return [None] * n
    cache: dict[str, list | None] = {}
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        gold = golds[i]
        try:
            key = "" if gold is None else str(gold).strip()
            if key not in cache:
                cache[key] = _parse_gold(key)
            gold_parsed = cache[key]
            if gold_parsed is None:
                out.append(None)
                continue
            out.append(score_answer(extract_answer(completion_text(completion)), gold_parsed))
        except Exception as exc:  # one bad row must not sink the batch
            logger.debug("accuracy: row %d could not be scored: %r", i, exc)
            out.append(None)
    return out


@register_reward("accuracy")
def accuracy(prompts, completions, solution=None, **kwargs) -> list[float | None]:
    """1.0 if the final answer (last ``<answer>``, else last ``\\boxed{}``) equals the ``solution``
    column under math-verify; 0.0 if wrong or missing; ``None`` if the gold is unusable or the
    ``solution`` column is absent."""
    return correctness(completions, solution)
