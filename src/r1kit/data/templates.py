"""Turn a dataset prompt into the text the policy model continues.

Two templates, registered in `TEMPLATES` (name -> render function; every config reads its names there):
- `r1_zero`: the DeepSeek-R1-Zero prompt (paper, Table 1) around the question, ending with
  "Assistant:". No chat template is involved, so it works with base models.
- `chat`: the tokenizer's own chat template with the generation prompt added, for instruct models.
A custom template string containing `{prompt}` is also accepted where a command allows it
(`is_template(name, custom=True)`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from r1kit.config import described, one_of

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>. User: {prompt}. Assistant:"
)

NO_CHAT_TEMPLATE_MESSAGE = (
    "tokenizer has no chat template; use template: r1_zero or a tokenizer with one "
    "(the prompt is a conversation, which needs a chat template to become text)"
)


def is_conversation(prompt: Any) -> bool:
    """True for a list of {role, content} messages."""
    return isinstance(prompt, (list, tuple)) and all(
        isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt
    )


def _last_user_content(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise ValueError("the conversation has no 'user' message to place in the r1_zero template")


def _has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The messages as plain dicts, without the None fields Arrow adds."""
    # Arrow turns lists of dicts into dicts with every key seen in the column (missing ones None);
    # drop those None extras so chat templates do not see e.g. a "name": None field.
    return [{k: v for k, v in m.items() if v is not None or k in ("role", "content")} for m in messages]


def render_prompt(prompt: str | Sequence[Mapping[str, Any]], tokenizer=None, template: str = "r1_zero",
                  system_prompt: str | None = None) -> str:
    """Render a dataset prompt (a string or a conversation) as the text the model continues.

    - `r1_zero`: the string, or the last user message of a conversation, put into
      `R1_ZERO_TEMPLATE`. `tokenizer` may be None. `system_prompt` is not allowed (the template is
      the instruction).
    - `chat`: `tokenizer.apply_chat_template(..., add_generation_prompt=True)`; a string prompt
      becomes one user message, preceded by a system message when `system_prompt` is given (a
      conversation keeps its own system message if it has one). A string prompt with a tokenizer
      without a chat template is returned as is; a conversation then raises ValueError.
    - any other string containing `{prompt}`: a custom template filled like `r1_zero`.
    """
    conversation = is_conversation(prompt)
    if not conversation and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string or a list of {{role, content}} messages, got {type(prompt).__name__}")
    if template in TEMPLATES:
        return TEMPLATES[template](prompt, tokenizer, system_prompt, conversation)
    if "{prompt}" in template:
        return _fill(template, "custom", prompt, system_prompt, conversation)
    raise ValueError(f"unknown template {template!r}; use one of {tuple(TEMPLATES)} or a string containing '{{prompt}}'")


def _fill(template_text: str, name: str, prompt, system_prompt: str | None, conversation: bool) -> str:
    """A text template: the question (a string, or a conversation's last user message) at `{prompt}`."""
    if system_prompt is not None:
        raise ValueError(
            f"system_prompt is only used with template 'chat'; the {name} "
            "template is itself the instruction (put extra text into a custom template instead)"
        )
    question = _last_user_content(prompt) if conversation else prompt
    # str.replace, not str.format: questions often contain braces (sets, LaTeX, code).
    return template_text.replace("{prompt}", question)


def _render_r1_zero(prompt, tokenizer, system_prompt: str | None, conversation: bool) -> str:
    """the paper's Table 1 template"""
    return _fill(R1_ZERO_TEMPLATE, "r1_zero", prompt, system_prompt, conversation)


def _render_chat(prompt, tokenizer, system_prompt: str | None, conversation: bool) -> str:
    """the tokenizer's chat template"""
    if tokenizer is None:
        raise ValueError("template 'chat' needs a tokenizer")
    if not _has_chat_template(tokenizer):
        if conversation:
            raise ValueError(NO_CHAT_TEMPLATE_MESSAGE)
        if system_prompt is not None:
            raise ValueError(
                "tokenizer has no chat template, so system_prompt cannot be applied; "
                "use template: r1_zero or a tokenizer with a chat template"
            )
        return prompt  # a plain-text prompt for a tokenizer without chat template is used as is
    messages = plain_messages(prompt) if conversation else [{"role": "user", "content": prompt}]
    if system_prompt is not None and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}] + messages
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # some versions return a list for batched input
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


# template name -> render(prompt, tokenizer, system_prompt, conversation) -> text; the docstring says what it is
TEMPLATES: dict[str, Callable[..., str]] = {"r1_zero": _render_r1_zero, "chat": _render_chat}
CUSTOM_TEMPLATE = "a string containing {prompt}"


def is_template(name: str, *, extra: Sequence[str] = (), custom: bool = False) -> bool:
    """True for a registered template, one of `extra` (a command's own), or (`custom`) a `{prompt}` string."""
    return name in TEMPLATES or name in extra or (custom and isinstance(name, str) and "{prompt}" in name)


def template_choices(*, extra: Sequence[str] = (), custom: bool = False) -> str:
    """What a template option may be, for error messages: "r1_zero or chat" (+ `extra`, + custom strings)."""
    return one_of([*TEMPLATES, *extra] + ([CUSTOM_TEMPLATE] if custom else []))


def template_help(*, extra: Mapping[str, str] | None = None, custom: bool = False) -> str:
    """The templates with what each one is, for help texts: "r1_zero (the paper's Table 1 template) or chat
    (the tokenizer's chat template)"; `extra`: a command's own names and meanings."""
    more = [f"{name} ({meaning})" for name, meaning in (extra or {}).items()]
    return described(TEMPLATES, more + ([CUSTOM_TEMPLATE] if custom else []))


def tokenize_prompts(prompts: Sequence, tokenizer, template: str = "r1_zero",
                     system_prompt: str | None = None) -> tuple[list[str], list[list[int]]]:
    """(rendered texts, token ids) of dataset prompts under `template`, as every command feeds them to a
    rollout engine: a chat template writes its own special tokens; a plain-text template gets the
    tokenizer's (e.g. BOS)."""
    texts = [render_prompt(p, tokenizer, template, system_prompt) for p in prompts]
    return texts, tokenizer(texts, add_special_tokens=template != "chat").input_ids


def prompt_ends_with_think(text: str) -> bool:
    """True when the rendered prompt already opens a `<think>` block (R1-distill chat templates do).

    Format rewards must then not require the completion to start with `<think>`: the trainer can
    prepend "<think>" to completions before scoring them.
    """
    return text.rstrip().endswith("<think>")
