"""Generation behind one interface (see docs/design.md): `make_engine("hf", model, tokenizer)`."""

from r1kit.rollout.base import Completion, RolloutEngine, RolloutError, SamplingParams, make_engine

__all__ = ["Completion", "RolloutEngine", "RolloutError", "SamplingParams", "make_engine", "HFEngine"]


def __getattr__(name):  # lazy: importing the contract must not import transformers
    if name == "HFEngine":
        from r1kit.rollout.hf import HFEngine

        return HFEngine
    raise AttributeError(name)
