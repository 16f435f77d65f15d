"""Reward functions written the ways TRL and open-r1 users write them, for tests/test_trl_reward_calls.py.

In a real module so that the ``spawn`` reward worker (``score_completions(timeout_s=...)``) can import them
by path (``trl_style_rewards:completions_only``); it inherits the parent's ``sys.path``, which holds
``tests/``. Keep it light (no torch): the worker imports it.
"""

from __future__ import annotations

import asyncio
import re
import time


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[0]["content"]


# ---- TRL-style signatures (keywords only: positional calling broke each of them) ----------------------------

def completions_only(completions, **kwargs):
    """Characters of each completion."""
    return [float(len(_text(c))) for c in completions]


def with_solution(completions, solution, **kwargs):
    """1.0 when the completion is the row's solution."""
    return [1.0 if _text(c).strip() == s else 0.0 for c, s in zip(completions, solution)]


def keyword_only(*, prompts, completions, **kwargs):
    """Characters of the completion plus a hundredth of the prompt's."""
    return [len(_text(c)) + len(p) / 100 for p, c in zip(prompts, completions)]


async def async_length(completions, **kwargs):
    await asyncio.sleep(0)
    return [float(len(_text(c))) for c in completions]


def with_num_parallel(completions, num_parallel=2, **kwargs):
    """open-r1's code reward has this shape: `num_parallel` must keep its default, not get the completions."""
    return [float(len(_text(c)) * num_parallel) for c in completions]


def step_scaled(completions, trainer_state, **kwargs):
    """global_step + max_steps / 100, from the trainer state."""
    return [trainer_state.global_step + trainer_state.max_steps / 100 for _ in completions]


def logging_reward(completions, log_metric, log_extra, **kwargs):
    lengths = [len(_text(c)) for c in completions]
    log_metric("chars/mean", sum(lengths) / len(lengths))
    log_extra("chars", lengths)
    return [1.0] * len(completions)


def never_applies(completions, **kwargs):
    return [None] * len(completions)


def hang_on_marker_logging(completions, log_metric, log_extra, **kwargs):
    """Hangs on a batch holding "HANG"; otherwise logs its row count and texts and scores 1.0."""
    if any(_text(c) == "HANG" for c in completions):
        time.sleep(3600)
    log_metric("rows", float(len(completions)))
    log_extra("text", [_text(c) for c in completions])
    return [1.0] * len(completions)


def argument_names(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
    """Logs the dataset columns it received, and whether completion_ids came; scores 1.0."""
    log_extra("columns", [",".join(sorted(columns))] * len(completions))
    log_extra("has_ids", [completion_ids is not None] * len(completions))
    return [1.0] * len(completions)


# ---- written in the style of open-r1's rewards.py: completions first (messages), **kwargs, a solution column

def exact_answer_reward(completions, solution, **kwargs):
    """1.0 when the <answer> content equals the solution, 0.0 otherwise, None without a solution."""
    contents = [completion[0]["content"] for completion in completions]
    rewards = []
    for content, sol in zip(contents, solution):
        if not sol:
            rewards.append(None)
            continue
        match = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
        rewards.append(1.0 if match and match.group(1).strip() == sol else 0.0)
    return rewards


def think_answer_format_reward(completions, **kwargs):
    pattern = r"^<think>.*?</think>\s*<answer>.*?</answer>$"
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.match(pattern, content, re.DOTALL) else 0.0 for content in contents]


def get_answer_length_penalty(max_chars: int):
    def answer_length_penalty(completions, **kwargs):
        contents = [completion[0]["content"] for completion in completions]
        return [-min(1.0, len(content) / max_chars) for content in contents]

    return answer_length_penalty


answer_length_penalty = get_answer_length_penalty(100)
