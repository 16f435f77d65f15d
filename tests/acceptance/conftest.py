"""Shared pieces of the acceptance suite: fast tiny GRPO configs, a scripted rollout engine.

Every GRPO run here uses the tiny random model (`r1kit:tiny`), a few 1-2 step configs and
max_completion_length <= 8, so a run takes well under a second (tests/conftest.py sets one
torch thread: on a busy 2-core machine the thread pool made a tiny step ~40x slower).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from r1kit.rollout.base import Completion
from r1kit.train.grpo_config import GRPOConfig

# `acceptance.bad_rewards:fn` must import in the parent and in spawn workers (they copy sys.path),
# whatever import mode pytest uses.
TESTS_DIR = str(Path(__file__).resolve().parents[1])
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


def tiny_cfg(tmp_path: Path, name: str = "run", **kw) -> GRPOConfig:
    """A GRPO config that trains the tiny model for one step in well under a second."""
    base = dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=8,
                num_generations=2, per_device_train_batch_size=4, max_completion_length=6,
                max_prompt_length=256, learning_rate=1e-3, max_steps=1, save_steps=0,
                reward_funcs=["acceptance.bad_rewards:digits"], output_dir=str(tmp_path / name),
                disable_tqdm=True, seed=3)
    base.update(kw)
    return GRPOConfig(**base)


class ScriptedEngine:
    """A rollout engine whose completions are crafted by the test: `script(k)` gives the k-th
    completion of a generate call as (completion_ids, text, finish_reason)."""

    def __init__(self, script):
        self.script = script
        self.calls = 0

    def generate(self, prompt_ids, params):
        self.calls += 1
        out = []
        for p, ids in enumerate(prompt_ids):
            for _ in range(params.n):
                cids, text, finish = self.script(len(out))
                out.append(Completion(prompt_index=p, prompt_ids=list(ids), completion_ids=list(cids),
                                      logprobs=[0.0] * len(cids), finish_reason=finish, text=text))
        return out

    def update_weights(self, model) -> None:
        pass


@pytest.fixture
def scripted_engine(monkeypatch):
    """`scripted_engine(script)` makes the GRPO loop sample from a ScriptedEngine."""
    import r1kit.train.grpo as grpo

    def install(script) -> ScriptedEngine:
        engine = ScriptedEngine(script)
        monkeypatch.setattr(grpo, "make_engine", lambda name, model, tokenizer, **kw: engine)
        return engine

    return install


def safetensors_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(iter(sorted(Path(folder).glob("*.safetensors"))))))


@functools.cache
def initial_tiny_weights() -> dict:
    from r1kit.models.tiny import build_tiny

    return build_tiny()[0].state_dict()  # built deterministically (seed 0)
