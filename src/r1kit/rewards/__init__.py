"""Rule-based rewards, called as TRL calls them, keywords only: ``fn(prompts=, completions=,
completion_ids=, trainer_state=, log_extra=, log_metric=, **columns) -> list[float | None]``
(``async def`` too; see ``calling``).

``None`` means "cannot score this row" (excluded from the weighted total), not 0. Built-ins
(registry names): ``accuracy``, ``format``, ``tag_count``, ``soft_overlong``, ``language``, ``code``,
``task_accuracy``, and open-r1's ``reasoning_steps``, ``length``, ``cosine``, ``repetition_penalty``,
``soft_overlong_punishment``, ``binary_code``, ``code_format`` (parametrised as ``name?key=value``).
Text metrics: ``language_mixing_rate``, ``reflection_rate``.
Use ``get_reward(name_or_import_path)`` and ``score_completions(...)``.

Attributes are loaded lazily (PEP 562) so that a reward worker process, or a user who only needs
the registry, does not import torch, sympy and math-verify up front.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "register_reward": "registry", "get_reward": "registry", "list_rewards": "registry", "reward_name": "registry",
    "register_reward_factory": "registry", "TrainerState": "calling", "RewardLog": "calling",
    "completion_text": "text", "prompt_text": "text", "think_content": "text",
    "accuracy": "math", "correctness": "math", "extract_answer": "math", "extract_answer_lenient": "math",
    "last_boxed": "math",
    "format_reward": "format", "tag_count": "format", "soft_overlong": "format",
    "make_format_reward": "format", "make_tag_count": "format", "overlong_penalty": "format",
    "language_reward": "language", "make_language_reward": "language",
    "language_mixing_rate": "language", "language_share": "language",
    "reasoning_steps": "openr1", "length_reward": "openr1", "CosineScaled": "openr1",
    "RepetitionPenalty": "openr1", "SoftOverlongPunishment": "openr1", "CodeFormat": "openr1",
    "reflection_rate": "reflection", "has_reflection": "reflection",
    "RewardBatch": "runner", "score_completions": "runner", "reward_metrics": "runner", "reward_names": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'r1kit.rewards' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"r1kit.rewards.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
