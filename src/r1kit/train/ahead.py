"""Where each GRPO step's rollouts come from: generated now (synchronous), or one batch ahead, in a
background thread, while the previous step trains (`async_generation`).

Asynchronous generation overlaps the engine's work with the trainer's: while step k trains on its
batch, the engine (still holding the weights of step k-1) generates and scores step k+1's batch. The
engine's weights are synced only once that generation has finished, so every batch after the first is
sampled by weights exactly one sync old (staleness 1, verl's and prime-rl's default; TRL's
AsyncGRPOTrainer bounds it with `max_staleness`). The loss corrects for it with the engine's log-probs
(`vllm_importance_sampling_*`: truncated or masked importance weights, `r1kit.algo.sampler_correction`).

The look-ahead draws its prompts from a copy of the run's prompt sampler, and the step that trains on
them draws the same rows from the run's own sampler: a checkpoint after step k records the data
position of step k, so a resumed run regenerates the batch that was in flight (with the checkpoint's
weights) instead of skipping it.

An engine that shares the trainer's module (the HF engine) cannot generate while that module trains:
with `async_generation` it gets a copy of the policy (`RolloutCopy`), kept current at every sync.
"""

from __future__ import annotations

import contextvars
import copy
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

import torch


class RolloutCopy:
    """The policy's weights in a module of their own, for an engine that reads its model directly."""

    def __init__(self, model: torch.nn.Module):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def load_from(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for mine, theirs in zip(self.module.state_dict().values(), model.state_dict().values()):
                mine.copy_(theirs)


class CopyingEngine:
    """An engine over a `RolloutCopy`: `update_weights(model)` copies the trainer's weights into it."""

    def __init__(self, engine, rollout_copy: RolloutCopy):
        self.engine, self.copy = engine, rollout_copy

    def generate(self, prompt_ids, params):
        return self.engine.generate(prompt_ids, params)

    def update_weights(self, model) -> None:
        self.copy.load_from(model)
        self.engine.update_weights(self.copy.module)


class Ahead:
    """Each step's (rollouts, generation info): `make(step, sampler, sampling)` (which draws `num_prompts`
    rows from `sampler`) runs now, or (`ahead`) in a background thread one step early. `settle()` waits for a generation in flight; call it before
    syncing the engine's weights (the engine must not change weights mid-generation)."""

    def __init__(self, make: Callable, sampling, num_prompts: int, total_steps: int, ahead: bool):
        self.make, self.sampling, self.num_prompts = make, sampling, num_prompts
        self.total_steps, self.ahead = total_steps, ahead
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="r1kit-rollouts") if ahead else None
        self.pending: tuple[int, Future] | None = None

    def _submit(self, step: int, sampler) -> None:
        ctx = contextvars.copy_context()  # the run's sandbox policy and other context reach the thread
        peek = copy.deepcopy(sampler)  # draws step's rows without moving the run's data position
        self.pending = (step, self.pool.submit(ctx.run, self.make, step, peek, replace(self.sampling)))

    def get(self, step: int, sampler):
        """Step `step`'s rollouts: (Rollouts, Generation, staleness in syncs)."""
        if not self.ahead:
            roll, gen = self.make(step, sampler, self.sampling)
            return roll, gen, 0
        if self.pending is None or self.pending[0] != step:
            self._submit(step, sampler)  # the first step (or the first after a resume): nothing in flight
            stale = 0
        else:
            stale = 1
        roll, gen = self.pending[1].result()
        self.pending = None
        sampler.next(self.num_prompts)  # the rows the look-ahead drew: the run's data position moves on
        if step < self.total_steps:
            self._submit(step + 1, sampler)  # generated with the current weights while this step trains
        return roll, gen, stale

    def settle(self) -> None:
        """Wait for the generation in flight (its exceptions surface at `get`)."""
        if self.pending is not None:
            self.pending[1].exception()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
