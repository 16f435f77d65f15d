"""Reward-model rewards for DeepSeek-R1's "RL for all scenarios" (§2.3.4).

`make_reward_model_reward(path, segment=...)` wraps any `AutoModelForSequenceClassification` with one
output (`num_labels=1`, e.g. what `r1kit rm` trains) as a reward with TRL's signature:
`fn(prompts, completions, **columns) -> list[float]`, one scalar per completion.

Segments (the paper scores helpfulness on the final summary only, harmlessness on the whole response):
- `answer`: the summary after the chain of thought: the text after the last `</think>`; without one,
  the last `<answer>` content; without either, the whole completion. A chain of thought cut before
  `</think>` has no summary: its segment is the empty string (the model scores an empty answer).
- `full`: the whole completion.

The model reads `rm_text(prompt, segment)`: the tokenizer's chat template with a user and an assistant
turn when it has one (`template: chat`), else `"User: {prompt}\\nAssistant: {response}"` (`plain`);
`auto` picks by the tokenizer. `r1kit rm` trains on exactly this text and stores its `segment` and
`template` in `r1kit_rm.json` next to the weights; those are the defaults when scoring with that model.

Naming it in a recipe (`reward_funcs`), resolved by `get_reward` through a prefix hook:

    rm:PATH[?segment=answer|full&batch_size=8&max_length=1024&device=cpu&template=auto&dtype=auto]

e.g. `rm:runs/rm-helpful?segment=answer` (helpfulness) and `rm:runs/rm-harmless?segment=full`.
PATH is a model folder or a hub id. One reward object is built per spec string and loads its model on
first use (so building it is cheap and it pickles without weights). From Python,
`helpful = make_reward_model_reward(...)` in a module of yours can also be named as `mymodule:helpful`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import parse_qsl

from r1kit.rewards.text import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, completion_text, prompt_text

SEGMENTS = ("answer", "full")
TEMPLATES = ("auto", "chat", "plain")
META_FILE = "r1kit_rm.json"  # written by `r1kit rm`: {"segment": ..., "template": ...}


def answer_segment(text: str) -> str:
    """The final summary/answer of a completion (see the module docstring)."""
    end = text.rfind(THINK_CLOSE)
    if end >= 0:
        return text[end + len(THINK_CLOSE):].strip()
    if text.find("<think>") >= 0:
        return ""  # the chain of thought never closed: no summary was written
    close = text.rfind(ANSWER_CLOSE)
    start = text.rfind(ANSWER_OPEN, 0, close if close >= 0 else len(text))
    if start >= 0:
        return text[start + len(ANSWER_OPEN):close if close >= 0 else len(text)].strip()
    return text.strip()


def segment_text(completion, segment: str) -> str:
    """The part of `completion` (a string or assistant messages) a reward model with `segment` reads."""
    if segment not in SEGMENTS:
        raise ValueError(f"segment must be one of {SEGMENTS}, got {segment!r}")
    text = completion_text(completion)
    return answer_segment(text) if segment == "answer" else text.strip()


def resolve_template(template: str, tokenizer) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return template


def rm_text(prompt, response: str, tokenizer, template: str = "plain") -> str:
    """The text a reward model scores: the prompt and one response (`template`: chat or plain)."""
    if template == "chat":
        convo = ([dict(m) for m in prompt] if isinstance(prompt, (list, tuple))
                 else [{"role": "user", "content": prompt_text(prompt)}])
        return tokenizer.apply_chat_template(convo + [{"role": "assistant", "content": response}], tokenize=False)
    return f"User: {prompt_text(prompt)}\nAssistant: {response}"


def prepare_reward_tokenizer(model, tokenizer, max_length: int) -> None:
    """Pad token (EOS if none), set in the model config too (batched scoring needs it to find each
    row's last token); pad on the right (positions stay 0..n-1 for every row); truncate from the left
    so the end of the response is always seen."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the reward model's tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    tokenizer.model_max_length = max_length


def score_texts(model, tokenizer, texts: list[str], batch_size: int, max_length: int):
    """One scalar per text: the classification head's output at the last real token. Returns a [N] tensor."""
    import torch

    device = next(model.parameters()).device
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(texts[s:s + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, add_special_tokens=False).to(device)
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits  # [b, 1]
        out.append(logits[:, 0].float())
    return torch.cat(out) if out else torch.zeros(0)


class RewardModelReward:
    """A TRL-signature reward around a sequence-classification model; loads the model on first call.

    Picklable (the weights are dropped and reloaded in the receiving process)."""

    def __init__(self, path: str, segment: str | None = None, batch_size: int = 8, max_length: int = 1024,
                 device: str | None = None, template: str | None = None, dtype: str = "auto"):
        meta = {}
        if (Path(path) / META_FILE).is_file():
            meta = json.loads((Path(path) / META_FILE).read_text())
        self.path = str(path)
        self.segment = segment or meta.get("segment", "answer")
        self.template = template or meta.get("template", "auto")
        if self.segment not in SEGMENTS:
            raise ValueError(f"reward model {path}: segment must be one of {SEGMENTS}, got {self.segment!r}")
        if self.template not in TEMPLATES:
            raise ValueError(f"reward model {path}: template must be one of {TEMPLATES}, got {self.template!r}")
        if int(batch_size) < 1 or int(max_length) < 1:
            raise ValueError(f"reward model {path}: batch_size and max_length must be >= 1")
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.device, self.dtype = device, dtype
        self.__name__ = f"rm_{self.segment}"
        self._model = self._tokenizer = None
        self._lock = threading.Lock()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_model", "_tokenizer", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _model=None, _tokenizer=None, _lock=threading.Lock())

    def load(self):
        with self._lock:
            if self._model is None:
                self._model, self._tokenizer = load_reward_model(self.path, self.device, self.dtype)
                prepare_reward_tokenizer(self._model, self._tokenizer, self.max_length)
        return self._model, self._tokenizer

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        import torch

        model, tokenizer = self.load()
        template = resolve_template(self.template, tokenizer)
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        texts = [rm_text(p, segment_text(c, self.segment), tokenizer, template) for p, c in zip(prompts, completions)]
        with torch.no_grad():
            return score_texts(model, tokenizer, texts, self.batch_size, self.max_length).tolist()


def load_reward_model(path: str, device: str | None = None, dtype: str = "auto"):
    """(model in eval mode, tokenizer) of a one-output sequence-classification model folder or hub id."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if device is None:
        from r1kit.utils.dist import default_device  # here: importing the rewards must not import torch

        device = default_device()
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch_dtype)
    except (OSError, ValueError) as e:
        raise ValueError(f"reward model {path}: cannot be loaded as a sequence-classification model ({e})") from e
    if model.config.num_labels != 1:
        raise ValueError(f"reward model {path}: has {model.config.num_labels} outputs, a reward model needs 1")
    return model.to(device).eval(), tokenizer


def make_reward_model_reward(path: str, segment: str | None = "answer", batch_size: int = 8,
                             max_length: int = 1024, device: str | None = None, template: str | None = None,
                             dtype: str = "auto") -> RewardModelReward:
    """A reward scoring `segment` ("answer": the final summary, "full": the whole response) with the
    reward model at `path`; `segment=None` / `template=None` take the model's r1kit_rm.json values."""
    return RewardModelReward(path, segment, batch_size, max_length, device, template, dtype)


_OPTIONS = {"segment": str, "batch_size": int, "max_length": int, "device": str, "template": str, "dtype": str}


def _parse_spec(rest: str) -> tuple[str, list[tuple[str, str]]]:
    """`PATH?key=value&...` (what follows `rm:`) -> (PATH, [(key, value), ...]) as written."""
    path, _, query = rest.partition("?")
    return path, parse_qsl(query, keep_blank_values=True)


def spec_name(rest: str) -> str:
    """The metric name of `rm:PATH?segment=SEG` (`rest` is what follows `rm:`): `rm_SEG` (default rm_answer)."""
    return f"rm_{dict(_parse_spec(rest)[1]).get('segment', 'answer')}"


def reward_from_spec(rest: str) -> RewardModelReward:
    """`get_reward` hook for `rm:PATH?key=value&...` (`rest` is what follows `rm:`)."""
    path, pairs = _parse_spec(rest)
    if not path.strip():
        raise ValueError(f"reward 'rm:{rest}': no model path; use rm:PATH?segment=answer")
    options = {}
    for key, value in pairs:
        if key not in _OPTIONS:
            raise ValueError(f"reward 'rm:{rest}': unknown option {key!r}; known: {sorted(_OPTIONS)}")
        try:
            options[key] = _OPTIONS[key](value)
        except ValueError:
            raise ValueError(f"reward 'rm:{rest}': option {key!r} must be an integer, got {value!r}") from None
    options.setdefault("segment", None)  # the model's r1kit_rm.json, else "answer"
    return make_reward_model_reward(path.strip(), **options)
