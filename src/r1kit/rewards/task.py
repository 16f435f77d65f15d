"""`task_accuracy`: score completions with a procedural task's own exact verifier.

Rows of `r1kit:TASK` datasets carry a `task` column (and the task's other columns); the verifier is
`r1kit.tasks.get_task(task).score(text, row)`. For arithmetic tasks it extracts answers leniently
(the `<answer>` content if present, else the last number), so it rewards being right, while the
`format` reward separately rewards the R1 tags. Rows without a `task` column cannot be scored (None).
"""

from __future__ import annotations

from r1kit.rewards.registry import register_reward
from r1kit.rewards.text import completion_text


@register_reward("task_accuracy")
def task_accuracy(prompts, completions, task=None, **columns) -> list[float | None]:
    from r1kit.tasks import get_task

    if task is None:
        return [None] * len(completions)
    names = [task] * len(completions) if isinstance(task, str) else list(task)
    lists = {k: v for k, v in columns.items() if isinstance(v, list) and len(v) == len(completions)}
    verifiers: dict = {}
    out: list[float | None] = []
    for i, (name, completion) in enumerate(zip(names, completions)):
        if not name:
            out.append(None)
            continue
        if name not in verifiers:
            verifiers[name] = get_task(name)
        row = {k: v[i] for k, v in lists.items()}
        row["task"] = name
        out.append(float(verifiers[name].score(completion_text(completion), row)))
    return out
