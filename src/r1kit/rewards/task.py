"""`task_accuracy`: score completions with a procedural task's own exact verifier.

Rows of `r1kit:TASK` datasets carry a `task` column (and the task's other columns); the verifier is
`r1kit.tasks.get_task(task).score(text, row)`. For arithmetic tasks it extracts answers leniently
(the `<answer>` content if present, else the last number), so it rewards being right, while the
`format` reward separately rewards the R1 tags. Rows without a `task` column cannot be scored (None).
`rg_partial_credit`: the same rows scored by a task's partial credit (reasoning-gym tasks).
"""

from __future__ import annotations

from r1kit.rewards.registry import register_reward
from r1kit.rewards.text import completion_text


def _per_task(completions, task, columns: dict, verdict) -> list[float | None]:
    """`verdict(task_object, text, row)` for each completion, its row rebuilt from the list columns; None
    for rows without a task."""
    from r1kit.tasks import get_task

    if task is None:
        return [None] * len(completions)
    names = [task] * len(completions) if isinstance(task, str) else list(task)
    lists = {k: v for k, v in columns.items() if isinstance(v, list) and len(v) == len(completions)}
    tasks: dict = {}
    out: list[float | None] = []
    for i, (name, completion) in enumerate(zip(names, completions)):
        if not name:
            out.append(None)
            continue
        if name not in tasks:
            tasks[name] = get_task(name)
        row = {k: v[i] for k, v in lists.items()}
        row["task"] = name
        out.append(verdict(tasks[name], completion_text(completion), row))
    return out


@register_reward("task_accuracy")
def task_accuracy(prompts, completions, task=None, **columns) -> list[float | None]:
    return _per_task(completions, task, columns, lambda t, text, row: float(t.score(text, row)))


@register_reward("rg_partial_credit")
def rg_partial_credit(prompts, completions, task=None, **columns) -> list[float | None]:
    """A task's partial credit in [0, 1] (reasoning-gym's own `score_answer`, for `rg:NAME` rows), where
    `task_accuracy` gives 1.0 only for a fully right answer; None for tasks without partial credit."""
    def verdict(t, text, row):
        return t.partial_credit(text, row) if hasattr(t, "partial_credit") else None

    return _per_task(completions, task, columns, verdict)
