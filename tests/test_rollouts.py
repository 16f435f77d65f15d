"""GRPO's rollout containers and dynamic sampling (train/rollouts.py), with hand-built groups."""

import math

import torch

from r1kit.rewards import RewardBatch
from r1kit.rollout import Completion, SamplingParams
from r1kit.train.rollouts import PromptSet, Rewarder, Rollouts, generate_rollouts, refill
from r1kit.train.sampler import PromptSampler


def completion(prompt_index: int, text: str) -> Completion:
    return Completion(prompt_index=prompt_index, prompt_ids=[1], completion_ids=[2, 3], logprobs=[0.0, 0.0],
                      finish_reason="eos", text=text)


def rollouts(rows: list[int], rewards: list[float]) -> Rollouts:
    """Groups of 2: completions 2g and 2g+1 answer rows[2g] (== rows[2g+1])."""
    total = torch.tensor(rewards)  # [N]
    return Rollouts([completion(i // 2, f"r{r}-{i}") for i, r in enumerate(rows)], rows,
                    RewardBatch(total[:, None].clone(), total, ["f"], {"f": 1}))


def test_refill_keeps_varied_groups_first_in_order_then_tops_up():
    # first round: row 10's group agrees (zero std), row 11's varies; the extra round: row 12 varies, 13 agrees
    roll = rollouts([10, 10, 11, 11], [1.0, 1.0, 0.0, 1.0])
    extra = rollouts([12, 12, 13, 13], [0.5, 0.0, 0.0, 0.0])
    out = refill(roll, extra, num_prompts=2, group_size=2)
    assert out.rows == [11, 11, 12, 12]  # the two varied groups, in their order
    assert out.rewards.total.tolist() == [0.0, 1.0, 0.5, 0.0]
    assert out.rewards.per_func[:, 0].tolist() == out.rewards.total.tolist()
    assert [c.text for c in out.completions] == ["r11-2", "r11-3", "r12-0", "r12-1"]
    assert out.rewards.errors == {"f": 2}  # both rounds' scoring errors are still counted
    # only one varied group: it comes first, topped up with the first zero-std group (row 10)
    out = refill(roll, rollouts([13, 13, 14, 14], [0.0, 0.0, 1.0, 1.0]), num_prompts=2, group_size=2)
    assert out.rows == [11, 11, 10, 10]


def script_reward(prompts, completions, **columns):
    """Rewards written in the completion text: "a/b" scores a on the first sample and b on the second."""
    return [float(c) for c in completions]


class RowEngine:
    """Completions whose text is the reward the test wants for (row, sample): rows < 4 agree, others vary."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, params):
        self.calls.append([ids[0] for ids in prompt_ids])
        return [Completion(i, list(ids), [7], [0.0], "eos", "1" if ids[0] < 4 else str(j))
                for i, ids in enumerate(prompt_ids) for j in range(params.n)]


def test_dynamic_sampling_replaces_groups_without_signal():
    rows = 8
    prompts = PromptSet(prompts=[f"p{i}" for i in range(rows)], texts=[f"p{i}" for i in range(rows)],
                        prompt_ids=[[i] for i in range(rows)], columns={"solution": ["x"] * rows},
                        conversational=False, fingerprint="f")
    rewarder = Rewarder(["test_rollouts:script_reward"], [1.0])
    sampling = SamplingParams(n=2)

    def run(dynamic: bool, rounds: int):
        engine, sampler = RowEngine(), PromptSampler(rows, seed=0)
        order = PromptSampler(rows, seed=0).next(rows)  # the rows the sampler will hand out, in order
        roll, frac_zero, made = generate_rollouts(engine, sampling, sampler, 4, prompts, rewarder, dynamic, rounds)
        return order, engine, roll, frac_zero, made

    order, engine, roll, frac_zero, made = run(dynamic=False, rounds=3)
    first = order[:4]
    assert made == 0 and engine.calls == [first] and sorted(set(roll.rows)) == sorted(first)
    assert math.isclose(frac_zero, sum(r < 4 for r in first) / 4)

    order, engine, roll, frac_zero, made = run(dynamic=True, rounds=3)
    assert made == 1 and engine.calls == [order[:4], order[4:]]  # one extra round had enough varied groups
    assert sorted(set(roll.rows)) == [4, 5, 6, 7]  # every row >= 4 varies, every row < 4 agrees
    assert not any(r < 4 for r in roll.rows) and len(roll.completions) == 8
    assert math.isclose(frac_zero, sum(r < 4 for r in first) / 4)  # reported for the first round

    _, engine, roll, _, made = run(dynamic=True, rounds=0)  # no extra round allowed
    assert made == 0 and len(engine.calls) == 1
