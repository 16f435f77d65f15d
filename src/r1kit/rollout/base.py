"""The rollout contract: sampling parameters, completions, the engine protocol and `make_engine`.

Every engine returns `len(prompt_ids) * params.n` completions, grouped contiguously: prompt 0's `n`
completions first, then prompt 1's, and so on (the layout GRPO's group advantages expect).

`Completion.logprobs[i]` is log p(completion_ids[i]) under softmax(logits / temperature) of the
sampling policy, computed BEFORE top-k / top-p filtering. These are the trainer's "old" log-probs: the
trainer recomputes the same quantity with a full forward pass (temperature-scaled), so filtering must
not leak into them. With temperature == 0 (greedy) the log-probs are taken at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class SamplingParams:
    n: int = 1  # completions per prompt
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop: tuple[str, ...] = ()  # stop strings; the completion keeps the stop string
    seed: int | None = None  # same seed + same inputs + same weights -> same completions

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(s for s in self.stop if s)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class Completion:
    prompt_index: int  # index into the prompt list
    prompt_ids: list[int]
    completion_ids: list[int]  # includes EOS when the model emitted it
    logprobs: list[float]  # log p(token) under softmax(logits / temperature), before top-k/top-p
    finish_reason: str  # "eos" | "stop" | "length"
    text: str  # decoded completion (special tokens skipped)


@runtime_checkable
class RolloutEngine(Protocol):
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        """len(prompt_ids) * n completions, grouped: prompt 0's n completions first, and so on."""
        ...

    def update_weights(self, model) -> None:
        """Make the engine sample from `model`'s current weights. An engine holding its own copy
        loads `r1kit.rollout.sync.merged_state_dict(model)` (LoRA merged, base-model names)."""
        ...


class RolloutError(RuntimeError):
    """The rollout engine cannot generate (a server that refuses, stalls or died); the trainer
    checkpoints the last completed step and stops with this message."""


def _hf(model, tokenizer, **kw) -> RolloutEngine:
    """transformers, CPU/GPU"""
    from r1kit.rollout.hf import HFEngine

    return HFEngine(model, tokenizer, **kw)


def _vllm(model, tokenizer, **kw) -> RolloutEngine:
    """vLLM colocated with the trainer"""
    from r1kit.rollout.vllm_engine import make_vllm_engine  # kw: mode="colocate"|"server"

    return make_vllm_engine(model, tokenizer, **kw)


def _vllm_server(model, tokenizer, **kw) -> RolloutEngine:
    """a vLLM server over HTTP"""
    from r1kit.rollout.vllm_engine import make_vllm_engine

    return make_vllm_engine(model, tokenizer, mode="server", **kw)


# rollout_engine name -> factory (the first docstring line says what it is: help texts read it)
ENGINES = {"hf": _hf, "vllm": _vllm, "vllm-server": _vllm_server}
ALIASES = {"transformers": "hf"}


def make_engine(name: str, model, tokenizer, **kw) -> RolloutEngine:
    """Build a rollout engine by name (`ENGINES`). `"hf"`: the transformers backend (CPU/GPU, shares `model`)."""
    factory = ENGINES.get(ALIASES.get(name, name))
    if factory is None:
        raise ValueError(f"unknown rollout engine {name!r}; expected one of {', '.join(map(repr, ENGINES))}")
    return factory(model, tokenizer, **kw)
