"""Text helpers shared by the built-in rewards: message → text, chain-of-thought extraction.

Everything here runs in linear time (``str.find``/``rfind`` scans, no backtracking regexes).
"""

from __future__ import annotations

from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def _content_text(content: Any) -> str:
    """A message's ``content``: a string, or a list of parts (``{"type": "text", "text": ...}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or chat messages (``[{"role": "assistant", ...}]``).

    For a list of messages, the contents of the assistant messages are joined (all messages when
    none has the assistant role). ``None`` gives ``""``.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        msgs = [m for m in completion if isinstance(m, dict)]
        chosen = [m for m in msgs if m.get("role") == "assistant"] or msgs
        return "".join(_content_text(m.get("content")) for m in chosen)
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """The text of one prompt: a string, or the content of the last message of a conversation."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        return _content_text(prompt.get("content"))
    if isinstance(prompt, (list, tuple)):
        msgs = [m for m in prompt if isinstance(m, dict)]
        return _content_text(msgs[-1].get("content")) if msgs else ""
    return str(prompt)


def prompt_prefills_think(prompt: Any) -> bool:
    """True when the (rendered) prompt ends with ``<think>``, as R1-distill chat templates do."""
    return prompt_text(prompt).rstrip().endswith(THINK_OPEN)


def think_content(text: str) -> str:
    """The chain of thought: the text between the first ``<think>`` and the ``</think>`` after it.

    No ``<think>`` but a ``</think>`` (the template pre-filled ``<think>``): the text before it.
    ``<think>`` without a close (truncated): everything after it. No tags: the whole text.
    """
    start = text.find(THINK_OPEN)
    if start >= 0:
        body = start + len(THINK_OPEN)
        end = text.find(THINK_CLOSE, body)
        return text[body:] if end < 0 else text[body:end]
    end = text.find(THINK_CLOSE)
    return text if end < 0 else text[:end]


def column(columns: dict, name: str, n: int) -> list | None:
    """A per-row column from ``**kwargs``: a list of length ``n``, a scalar broadcast to ``n``
    rows, or ``None`` when absent. A list of another length raises ``ValueError``."""
    value = columns.get(name)
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"column {name!r} has {len(value)} values for {n} completions")
    return value
