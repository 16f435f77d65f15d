"""Reward functions for tests/test_sandbox_policy.py, in a real module so that the ``spawn``
reward worker (``score_completions(timeout_s=...)``) can import them by path
(``sandbox_policy_rewards:policy_flag``); it inherits the parent's ``sys.path``, which holds
``tests/``."""

from __future__ import annotations

from r1kit.sandbox import isolation, requires_sandbox, unsandboxed_allowed


@requires_sandbox
def policy_flag(prompts, completions, **columns):
    """1.0 per row when the caller's sandbox policy allows unsandboxed code, else 0.0."""
    return [float(unsandboxed_allowed())] * len(completions)


def plain(prompts, completions, **columns):
    return [0.0] * len(completions)



def code_without_bwrap(prompts, completions, **columns):
    """The real ``code`` reward, on a machine where bubblewrap does not work: the probe is forced
    to the rlimits fallback for this call (and put back after it)."""
    from r1kit.rewards.code import code_reward

    saved = isolation._PROBE
    pb = isolation.probe_uncached(use_bwrap=False)
    if pb.level != "rlimits":
        raise RuntimeError(f"rlimits fallback unavailable here: {pb.notes}")
    isolation._PROBE = pb
    try:
        return code_reward(prompts, completions, **columns)
    finally:
        isolation._PROBE = saved
