"""Supervised fine-tuning data: `messages`, `prompt`/`completion` or `text` rows -> token ids + loss masks.

Three row shapes (the first that the columns allow), with TRL's SFTTrainer defaults for what is trained on:
- `messages`: a chat conversation, rendered with the tokenizer's chat template; loss on every token, or
  (`assistant_only_loss`) on the assistant turns only (each turn's text as the template writes it after the
  generation prompt, end-of-turn marker included). Each piece is tokenized on its own, so an assistant turn
  is tokenized exactly as the model would generate it after the rendered conversation so far.
- `prompt`/`completion`: loss on the completion only (`completion_only_loss`, whose default None means
  true for these rows, as in TRL), or on every token (false). A string prompt is used as is (template
  `none`, TRL's behaviour) or goes through `template` (r1_zero, chat, or a custom string with `{prompt}`),
  as in GRPO; a conversation prompt needs the chat template. A string completion gets EOS appended (and,
  after a plain-text prompt, one joining space when neither side has whitespace at the seam: "Assistant:" +
  "<think>…" trains " <think>…", see `_joins_words`); a completion given as assistant messages is rendered
  by the chat template (whose end-of-turn marker ends it). `assistant_only_loss` also applies when the
  prompt or the completion is a conversation.
- `text` (`dataset_text_field`): TRL's language-modeling rows: the text, tokenized with the tokenizer's
  special tokens and EOS appended (unless it ends with it), is trained on all its tokens
  (`completion_only_loss` does not apply, as in TRL; `assistant_only_loss` is an error).
Every row is checked before training: a bad row fails with its source, row (and file line) and field.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from r1kit.data.datasets import (DataError, RowProblems, load_hub, load_saved_split, looks_like_path,
                                 read_json_file, split_files, type_name)
from r1kit.data.templates import is_conversation, plain_messages, render_prompt

# SFT's own template name next to data.templates.TEMPLATES: a string prompt as is (a conversation prompt
# still goes through the chat template)
NO_TEMPLATE = "none"
SFT_TEMPLATES = {NO_TEMPLATE: "as is"}


@dataclass
class Example:
    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token is a training target (predicted from the tokens before it)


# ---- reading rows --------------------------------------------------------------------------------


def _read_table(path: Path) -> tuple[list[dict], list[int] | None]:
    if path.suffix in (".jsonl", ".json"):
        return read_json_file(path)
    if path.suffix == ".parquet":
        from datasets import Dataset

        return Dataset.from_parquet(str(path)).to_list(), None
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")


def load_sft_rows(dataset_name: str, split: str = "train", *, dataset_config: str | None = None,
                  num_rows: int | None = None) -> tuple[list[dict], str, list[int] | None]:
    """Rows of a file, a folder (files named `split*`, or a save_to_disk folder) or a hub dataset.

    Returns (rows, source, line numbers of a JSON-lines file or None). `num_rows` keeps the first rows.
    """
    path = Path(os.path.expanduser(dataset_name))
    lines = None
    if path.is_file():
        rows, lines = _read_table(path)
    elif path.is_dir():
        saved = load_saved_split(path, split)
        if saved is not None:
            rows = saved.to_list()
        else:
            files = split_files(path, split)
            if not files:
                raise DataError(f"{path}: no .jsonl/.json/.parquet files for split {split!r}")
            rows = []
            for f in files:
                rows += _read_table(f)[0]
    elif looks_like_path(dataset_name) or dataset_name.startswith("r1kit:"):
        raise DataError(f"{dataset_name}: no such file or folder (SFT needs messages, prompt/completion or text rows)")
    else:
        rows = load_hub(dataset_name, split, dataset_config).to_list()
    if not rows:
        raise DataError(f"{path}: the dataset is empty (no rows)")
    if num_rows is not None:
        rows, lines = rows[:num_rows], (lines[:num_rows] if lines else lines)
    return rows, str(path if path.exists() else dataset_name), lines


# ---- one row -> tokens ----------------------------------------------------------------------------


def _chat(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _need_chat_template(tokenizer, what: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"the tokenizer has no chat template, which {what} needs; use prompt/completion rows "
                        f"with a string prompt and template r1_zero or none, or a tokenizer with a chat template")


def _messages_problem(messages, field: str) -> str | None:
    if not is_conversation(messages) or len(messages) == 0:
        return f"{field!r} is not a list of {{role, content}} messages"
    if not all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in messages):
        return f"{field!r} needs string 'role' and 'content' in every message"
    return None


def chat_segments(messages: list[dict], tokenizer) -> list[tuple[str, bool, int]]:
    """The rendered conversation as (text, is_assistant_turn, message index) pieces, in order.

    An assistant turn is what the template adds between "conversation so far + generation prompt"
    and "conversation including this turn"; the piece before it (the messages since the last assistant
    turn and the generation prompt) carries that turn's index too, the text after the last turn
    `len(messages)`. Raises ValueError if the template does not render the conversation
    prefix-consistently (e.g. it rewrites earlier turns, as some reasoning templates do).
    """
    segments, done = [], ""
    for j, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _chat(tokenizer, messages[:j], True)
        after = _chat(tokenizer, messages[:j + 1], False)
        if not before.startswith(done) or not after.startswith(before):
            raise ValueError(f"the chat template does not render assistant turn {j} as a continuation of the "
                             f"conversation before it; use prompt/completion rows for this model")
        segments += [(before[len(done):], False, j), (after[len(before):], True, j)]
        done = after
    full = _chat(tokenizer, messages, False)
    if full.startswith(done) and len(full) > len(done):
        segments.append((full[len(done):], False, len(messages)))
    return [(t, a, j) for t, a, j in segments if t]


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special).input_ids


def _joins_words(prompt_text: str, completion: str) -> bool:
    """True when a plain-text prompt and its completion meet without whitespace ("Assistant:" +
    "<think> ..."). The policy continues such a prompt with a space-prefixed token (" <think>"), as
    sampling (GRPO, `r1kit sample`) writes it; training on the unspaced "<think>" instead teaches a
    first token the model never produces after the prompt, and at T > 0 a junk token then leads the
    completion ("ate" + "think>"). So the two are joined like words, with one space; a completion
    that already starts with whitespace (sampled data) is used as is."""
    return bool(prompt_text) and not prompt_text[-1].isspace() and not completion[0].isspace()


def _with_eos(ids: list[int], text: str, tokenizer) -> list[int]:
    """`ids` of `text` with the EOS token appended, unless the text already ends with it."""
    if tokenizer.eos_token_id is None or text.endswith(tokenizer.eos_token or ""):
        return ids
    return ids + [tokenizer.eos_token_id]


def _chat_pieces(messages: list[dict], tokenizer, first_trained: int = 0) -> list[tuple[list[int], bool, bool]]:
    """(token ids, is_assistant, in_completion) pieces of a rendered conversation whose completion starts
    with message `first_trained`: everything after the prompt's rendering with the generation prompt."""
    return [(_ids(tokenizer, t, False), a, j > first_trained or (j == first_trained and a))
            for t, a, j in chat_segments(messages, tokenizer)]


def encode_row(row: dict, tokenizer, *, kind: str, template: str = "none", system_prompt: str | None = None,
               messages_column: str = "messages", prompt_column: str = "prompt",
               completion_column: str = "completion", completion_only_loss: bool | None = None,
               assistant_only_loss: bool = False, dataset_text_field: str = "text") -> Example:
    """Token ids and loss mask of one row; ValueError/DataError with the field named if it is unusable.

    The loss mask follows TRL's SFTTrainer: `completion_only_loss` (None: true) keeps prompt/completion rows'
    loss on the completion; `assistant_only_loss` keeps it on assistant turns (conversations only)."""
    if kind == "text":
        if assistant_only_loss:
            raise DataError(f"assistant_only_loss is true but the rows are plain text ({dataset_text_field!r}); "
                            f"it needs conversations (as in TRL): set assistant_only_loss: false")
        text = row.get(dataset_text_field)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{dataset_text_field!r} is {'empty' if isinstance(text, str) else type_name(text)}, "
                             "expected a non-empty string")
        ids = _with_eos(_ids(tokenizer, text, True), text, tokenizer)
        return Example(ids, [0] + [1] * (len(ids) - 1))  # every token but the first is a target
    completion_only = kind == "prompt_completion" and completion_only_loss is not False
    if kind == "messages":
        messages = row.get(messages_column)
        problem = _messages_problem(messages, messages_column)
        if problem:
            raise ValueError(problem)
        if assistant_only_loss and not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise ValueError(f"{messages_column!r} has no non-empty assistant turn to train on (assistant_only_loss)")
        _need_chat_template(tokenizer, "'messages' data")
        messages = plain_messages(messages)
        if system_prompt is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}] + messages
        pieces = _chat_pieces(messages, tokenizer)
    else:
        prompt, completion = row.get(prompt_column), row.get(completion_column)
        if completion is None:
            raise ValueError(f"no {completion_column!r}")
        if isinstance(prompt, str) and not prompt.strip() or prompt is None:
            raise ValueError(f"{prompt_column!r} is missing or empty")
        if assistant_only_loss and isinstance(prompt, str) and isinstance(completion, str):
            raise DataError("assistant_only_loss is true but the prompt/completion rows are strings; it needs "
                            "conversations (as in TRL): set assistant_only_loss: false (completion_only_loss "
                            "keeps the loss on the completion)")
        if isinstance(completion, str):
            if not completion.strip():
                raise ValueError(f"{completion_column!r} is empty")
            # plain text: r1_zero / custom templates, or template none on a string (not chat-rendered)
            plain = template != "chat" and (template != NO_TEMPLATE or isinstance(prompt, str))
            if template == NO_TEMPLATE and isinstance(prompt, str):
                prompt_text = prompt
            else:
                if is_conversation(prompt):
                    _need_chat_template(tokenizer, "a conversation prompt")
                prompt_text = render_prompt(prompt, tokenizer, "chat" if template == NO_TEMPLATE else template,
                                            system_prompt)
            if plain and _joins_words(prompt_text, completion):
                completion = " " + completion  # see _joins_words
            ids = _with_eos(_ids(tokenizer, completion, False), completion, tokenizer)
            pieces = [(_ids(tokenizer, prompt_text, template != "chat"), False, False), (ids, True, True)]
        else:
            problem = _messages_problem(completion, completion_column)
            if problem:
                raise ValueError(problem)
            if not any(m["content"].strip() for m in completion):
                raise ValueError(f"{completion_column!r} is empty")
            _need_chat_template(tokenizer, "a completion given as messages")
            convo = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else plain_messages(prompt)
            if system_prompt is not None and convo[0]["role"] != "system":
                convo = [{"role": "system", "content": system_prompt}] + convo
            completion = plain_messages(completion)
            first = next((i for i, m in enumerate(completion) if m["role"] == "assistant"), 0)
            pieces = _chat_pieces(convo + completion, tokenizer, first_trained=len(convo) + first)
    input_ids = [t for ids, _, _ in pieces for t in ids]
    mask = [int((in_completion or not completion_only) and (assistant or not assistant_only_loss))
            for ids, assistant, in_completion in pieces for _ in ids]
    mask[0] = 0  # the first token has nothing before it to be predicted from
    return Example(input_ids, mask)


def build_examples(rows: list[dict], tokenizer, source: str, lines: list[int] | None = None, *,
                   max_length: int, truncate: bool = False, **encode_kw) -> tuple[list[Example], str]:
    """Encode every row; returns (examples, kind). Raises DataError listing the first bad rows."""
    columns = {k for r in rows[:100] for k in r}
    mc, pc, cc, tc = (encode_kw.get(k, d) for k, d in (
        ("messages_column", "messages"), ("prompt_column", "prompt"), ("completion_column", "completion"),
        ("dataset_text_field", "text")))
    if mc in columns:
        kind = "messages"
    elif pc in columns and cc in columns:
        kind = "prompt_completion"
    elif tc in columns:
        kind = "text"
    else:
        raise DataError(f"{source}: SFT rows need a {mc!r} column (messages_column), {pc!r} and {cc!r} columns "
                        f"(prompt_column, completion_column) or a {tc!r} column (dataset_text_field); found "
                        f"columns {sorted(columns)}; set the key that names your column")
    examples, report = [], RowProblems(source, lines)
    for i, row in enumerate(rows):
        try:
            ex = encode_row(row, tokenizer, kind=kind, **encode_kw)
            if len(ex.input_ids) > max_length:
                if not truncate:
                    raise ValueError(f"{len(ex.input_ids)} tokens, over max_length={max_length} "
                                     f"(raise max_length, or set truncate: true to cut it)")
                ex = Example(ex.input_ids[:max_length], ex.loss_mask[:max_length])
                if not any(ex.loss_mask):
                    raise ValueError(f"no loss token left within max_length={max_length} after truncation")
            examples.append(ex)
        except DataError:
            raise
        except (ValueError, TypeError) as e:
            report.add(i, str(e))
    report.raise_if_any()
    return examples, kind


# ---- rows of the training batch -------------------------------------------------------------------


def pack_examples(examples: list[Example], max_length: int) -> list[list[Example]]:
    """Greedy packing in order: consecutive examples share a row while they fit in `max_length` tokens."""
    rows, cur, used = [], [], 0
    for ex in examples:
        if cur and used + len(ex.input_ids) > max_length:
            rows.append(cur)
            cur, used = [], 0
        cur.append(ex)
        used += len(ex.input_ids)
    if cur:
        rows.append(cur)
    return rows


@dataclass
class SFTBatch:
    input_ids: torch.Tensor     # [B, L]  right-padded
    position_ids: torch.Tensor  # [B, L]  restart at 0 at each example (and in the padding)
    loss_mask: torch.Tensor     # [B, L]  1 where the token is a training target
    num_examples: int

    def to(self, device) -> "SFTBatch":
        return SFTBatch(self.input_ids.to(device), self.position_ids.to(device), self.loss_mask.to(device),
                        self.num_examples)


def collate(rows: list[list[Example]], pad_id: int) -> SFTBatch:
    """Rows of (one or several packed) examples -> right-padded tensors."""
    L = max(sum(len(e.input_ids) for e in row) for row in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)  # [B, L]
    pos = torch.zeros((len(rows), L), dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(rows), L), dtype=torch.float32)  # [B, L]
    for i, row in enumerate(rows):
        s = 0
        for e in row:
            n = len(e.input_ids)
            ids[i, s:s + n] = torch.tensor(e.input_ids)
            pos[i, s:s + n] = torch.arange(n)
            mask[i, s:s + n] = torch.tensor(e.loss_mask, dtype=torch.float32)
            s += n
        pos[i, s:] = torch.arange(L - s)  # padding: a segment of its own that nothing real attends to
    return SFTBatch(ids, pos, mask, sum(len(r) for r in rows))


def fingerprint(examples: list[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(repr((e.input_ids, e.loss_mask)).encode())
    return h.hexdigest()[:16]
