"""Who needs the sandbox and whether code may run without it: a reward declares
``requires_sandbox``; the run's ``sandbox_policy(allow_unsandboxed=...)`` is a scope that ends
with the run, in this process and in the reward worker process; nothing goes through the
environment."""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
from pathlib import Path

import pytest

# the spawn worker imports `sandbox_policy_rewards` too: it copies this sys.path
TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from r1kit.rewards import get_reward, score_completions  # noqa: E402
from r1kit.rewards.code import code_reward, make_code_reward  # noqa: E402
from r1kit.sandbox import (  # noqa: E402
    SandboxUnavailableError, isolation, needs_sandbox, requires_sandbox, sandbox_policy,
    unsandboxed_allowed,
)
from sandbox_policy_rewards import plain, policy_flag  # noqa: E402

FLAG = "sandbox_policy_rewards:policy_flag"
INFO = {"test_cases": [{"input": "abc\n", "output": "cba\n"}]}
GOLD = "```python\nprint(input()[::-1])\n```"


@pytest.fixture
def no_bwrap():
    """This process's probe forced to the rlimits fallback (bubblewrap 'does not work here')."""
    pb = isolation.probe_uncached(use_bwrap=False)
    if pb.level != "rlimits":
        pytest.skip(f"rlimits fallback unavailable: {pb.notes}")
    saved = isolation._PROBE
    isolation._PROBE = pb
    yield pb
    isolation._PROBE = saved


# ------------------------------------------------------------------ the declaration
def test_rewards_declare_that_they_need_the_sandbox():
    assert needs_sandbox(code_reward) and needs_sandbox(get_reward("code"))
    assert needs_sandbox(get_reward("r1kit.rewards.code:code_reward"))
    assert needs_sandbox(make_code_reward(all_or_nothing=True))  # every reward built there
    assert needs_sandbox(policy_flag)  # a user's own reward, with the decorator
    assert needs_sandbox(functools.partial(policy_flag))
    assert needs_sandbox(functools.wraps(policy_flag)(lambda p, c, **k: policy_flag(p, c)))
    for name in ("format", "accuracy", "task_accuracy"):
        assert not needs_sandbox(get_reward(name))
    assert not needs_sandbox(plain) and not needs_sandbox(None)

    class Scorer:  # an instance of a class that declares it
        requires_sandbox = True

        def __call__(self, prompts, completions, **columns):
            return [0.0] * len(completions)

    assert needs_sandbox(Scorer())

    def mine(prompts, completions, **columns):
        return [0.0] * len(completions)

    assert not needs_sandbox(mine)
    assert requires_sandbox(mine) is mine and needs_sandbox(mine)


def test_trainer_check_reads_the_declaration(no_bwrap):
    from r1kit.train.grpo import sandbox_check

    before = dict(os.environ)
    assert sandbox_check(["format", "task_accuracy"], allow_unsandboxed=False) is None
    for funcs in (["format", "code"], ["format", FLAG]):  # built-in, and a user's declared reward
        with pytest.raises(SandboxUnavailableError):
            sandbox_check(funcs, allow_unsandboxed=False)
        assert sandbox_check(funcs, allow_unsandboxed=True) == "rlimits"
    assert dict(os.environ) == before  # nothing set for later runs
    assert unsandboxed_allowed() is False


# ------------------------------------------------------------------ the scope
def test_policy_is_restored_when_the_scope_ends():
    assert unsandboxed_allowed() is False
    with sandbox_policy(allow_unsandboxed=True):
        assert unsandboxed_allowed() is True
        with sandbox_policy(allow_unsandboxed=False):
            assert unsandboxed_allowed() is False
        assert unsandboxed_allowed() is True
    assert unsandboxed_allowed() is False
    with pytest.raises(KeyError):
        with sandbox_policy(allow_unsandboxed=True):
            raise KeyError("a run that crashes")
    assert unsandboxed_allowed() is False
    assert "R1KIT_ALLOW_UNSANDBOXED" not in os.environ


def test_policy_belongs_to_the_run_not_to_other_threads():
    seen = []
    with sandbox_policy(allow_unsandboxed=True):
        t = threading.Thread(target=lambda: seen.append(unsandboxed_allowed()))
        t.start()
        t.join()
    assert seen == [False]  # another thread's run is not opted out by this one


def test_code_reward_follows_the_runs_policy(no_bwrap):
    args = (["p"] * 3, [GOLD] * 3)
    cols = {"verification_info": [INFO] * 3}
    reward = make_code_reward(max_workers=3)  # scored in pool threads: the policy still applies
    with pytest.raises(SandboxUnavailableError):
        reward(*args, **cols)
    with sandbox_policy(allow_unsandboxed=True):
        assert reward(*args, **cols) == [1.0] * 3
        # an explicit argument wins over the scope, both ways
        with pytest.raises(SandboxUnavailableError):
            make_code_reward(allow_unsandboxed=False)(*args, **cols)
    assert make_code_reward(allow_unsandboxed=True)(*args, **cols) == [1.0] * 3
    with pytest.raises(SandboxUnavailableError):  # the run is over: refused again
        reward(*args, **cols)


# ------------------------------------------------------------------ the reward worker process
def test_worker_process_gets_the_policy_of_each_batch():
    def flags():
        b = score_completions([FLAG], None, ["p"] * 2, ["a", "b"], timeout_s=60)
        return b.per_func[:, 0].tolist()

    assert flags() == [0.0, 0.0]
    with sandbox_policy(allow_unsandboxed=True):
        assert flags() == [1.0, 1.0]
    assert flags() == [0.0, 0.0]  # the same (reused) worker: the scope ended there too


def test_code_reward_in_the_worker_honours_the_policy(no_bwrap):
    """The worker forces the same fallback for itself (sandbox_policy_rewards.code_without_bwrap)."""
    def score():
        b = score_completions(["sandbox_policy_rewards:code_without_bwrap"], None, ["p"], [GOLD],
                              {"verification_info": [INFO]}, timeout_s=60)
        return b.per_func[0, 0].item(), b.errors["code_without_bwrap"]

    value, errors = score()
    assert math.isnan(value) and errors == 1  # refused in the worker: no opt-out for this batch
    with sandbox_policy(allow_unsandboxed=True):
        assert score() == (1.0, 0)
    value, errors = score()
    assert math.isnan(value) and errors == 1


@pytest.mark.parametrize("allow", [True, False])
def test_grpo_run_scopes_the_policy_to_itself(tmp_path, allow):
    """`allow_unsandboxed` reaches the run's sandboxed rewards (in-process and in the reward worker) and
    is gone when the run ends: the next run, and this process, see the default again."""
    from r1kit.sandbox import unsandboxed_allowed
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.tracking import read_metrics

    def run(timeout, name):
        return train(GRPOConfig(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=8,
                                num_generations=2, per_device_train_batch_size=4, max_completion_length=4,
                                max_steps=1, save_steps=0, reward_funcs=[FLAG], allow_unsandboxed=allow,
                                reward_timeout_s=timeout, disable_tqdm=True, output_dir=str(tmp_path / name)))

    if not allow and not isolation.probe().level.startswith("bwrap"):
        # no working bubblewrap here: a run that may not go unsandboxed is refused before it starts
        with pytest.raises(SandboxUnavailableError, match="allow_unsandboxed"):
            run(None, "refused")
        assert unsandboxed_allowed() is False
        return
    for timeout in (None, 30.0):  # None: scored in this process; a number: in the killable worker process
        out = run(timeout, f"run-{timeout}")
        assert read_metrics(out)[0]["rewards/policy_flag/mean"] == float(allow)
        assert unsandboxed_allowed() is False
