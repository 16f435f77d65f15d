"""Reward functions are called as TRL's GRPOTrainer calls them (keywords only, async awaited, trainer_state,
log_metric, log_extra), in-process and in the killable worker; open-r1's reward names score as open-r1's do."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # the spawn worker imports `trl_style_rewards` too: it copies this sys.path
    sys.path.insert(0, TESTS_DIR)

from r1kit.rewards import TrainerState, get_reward, list_rewards, reward_metrics, reward_name  # noqa: E402
from r1kit.rewards import score_completions  # noqa: E402
from r1kit.rollout import Completion  # noqa: E402
from r1kit.sandbox import isolation_level, needs_sandbox, sandbox_policy  # noqa: E402
from r1kit.train.rollouts import PromptSet, Rewarder  # noqa: E402

M = "trl_style_rewards:"
PROMPTS = ["p1", "prompt22"]
COMPS = ["a", "bbb"]


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def column(batch, name: str) -> list[float]:
    return batch.per_func[:, batch.names.index(name)].tolist()


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.INFO, logger="r1kit.rewards")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ---- the signatures positional calling broke ---------------------------------------------------------------

@pytest.mark.parametrize("timeout_s", [None, 5.0], ids=["in_process", "worker"])
def test_trl_signatures_score_the_completions(timeout_s, warnings):
    funcs = [M + n for n in ("completions_only", "with_solution", "keyword_only", "async_length",
                             "with_num_parallel", "step_scaled")]
    b = score_completions(funcs, None, PROMPTS, COMPS, {"solution": ["a", "x"]}, timeout_s=timeout_s,
                          trainer_state=TrainerState(global_step=7, max_steps=50))
    assert column(b, "completions_only") == [1.0, 3.0]  # len("a"), len("bbb"): not the prompts' 2 and 8
    assert column(b, "with_solution") == [1.0, 0.0]  # "a" == "a"; "bbb" != "x"
    assert column(b, "keyword_only") == pytest.approx([1.02, 3.08])  # 1 + 2/100, 3 + 8/100
    assert column(b, "async_length") == [1.0, 3.0]  # awaited, not "returned coroutine"
    assert column(b, "with_num_parallel") == [2.0, 6.0]  # num_parallel kept its default 2
    assert column(b, "step_scaled") == pytest.approx([7.5, 7.5])  # 7 + 50/100
    assert all(v == 0 for v in b.errors.values()) and warnings() == []


def test_trainer_state_defaults_to_step_zero():
    b = score_completions([M + "step_scaled"], None, PROMPTS, COMPS)
    assert b.per_func[:, 0].tolist() == [0.0, 0.0]


def test_every_trl_keyword_and_the_dataset_columns_arrive(warnings):
    cols = {"solution": ["a", "b"], "completion_ids": [[1], [2, 3]], "prompt": ["x", "y"],
            "completion": ["x", "y"], "prompts": ["x", "y"], "level": [1, 2]}
    b = score_completions([M + "argument_names"], None, PROMPTS, COMPS, cols)
    assert b.per_func[:, 0].tolist() == [1.0, 1.0]
    # prompt / completion are left out as TRL does; "prompts" is r1kit's own argument: left out, with a warning
    assert b.extra == {"columns": ["level,solution"] * 2, "has_ids": [True, True]}
    assert any("column(s) prompts not passed" in w for w in warnings())


# ---- async ---------------------------------------------------------------------------------------------------

def test_async_functions_of_a_batch_run_concurrently():
    events: dict[str, asyncio.Event] = {}

    async def ping(completions, **kw):  # each waits for the other: only a concurrent run gets past it
        events["ping"].set()
        await asyncio.wait_for(events["pong"].wait(), 10)
        return [1.0] * len(completions)

    async def pong(completions, **kw):
        events["pong"].set()
        await asyncio.wait_for(events["ping"].wait(), 10)
        return [2.0] * len(completions)

    async def fails(completions, **kw):
        raise ConnectionError("judge is down")

    events.update(ping=asyncio.Event(), pong=asyncio.Event())
    b = score_completions([ping, M + "completions_only", pong, fails], None, PROMPTS, COMPS)
    assert b.per_func.tolist()[0][:3] == [1.0, 1.0, 2.0] and b.per_func.tolist()[1][:3] == [1.0, 3.0, 2.0]
    assert b.errors["fails"] == 2 and all(math.isnan(x) for x in b.per_func[:, 3].tolist())


def test_async_works_inside_a_running_event_loop_and_sees_the_sandbox_policy():
    from r1kit.sandbox import unsandboxed_allowed

    async def allowed(completions, **kw):
        return [float(unsandboxed_allowed())] * len(completions)

    async def main():  # the caller is itself async (a notebook, an async script)
        return score_completions([M + "async_length", allowed], None, PROMPTS, COMPS)

    with sandbox_policy(allow_unsandboxed=True):
        b = asyncio.run(main())
    assert b.per_func.tolist() == [[1.0, 1.0], [3.0, 1.0]]  # the policy's context reached the coroutine


# ---- log_metric / log_extra ------------------------------------------------------------------------------------

@pytest.mark.parametrize("timeout_s", [None, 5.0], ids=["in_process", "worker"])
def test_logged_metrics_and_extra_columns_come_back(timeout_s):
    b = score_completions([M + "logging_reward"], None, PROMPTS, COMPS, timeout_s=timeout_s)
    assert b.metric_values == {"chars/mean": [2.0]} and b.logged == {"chars/mean": 2.0}  # (1 + 3) / 2
    assert b.extra == {"chars": [1, 3]}
    assert reward_metrics(b)["chars/mean"] == 2.0  # the step's metrics, under the name given (as TRL)
    # a second batch: values pool (the step's mean), extra columns follow their rows
    both = b.concat(score_completions([M + "logging_reward"], None, ["q"], ["cccccc"]))
    assert both.metric_values == {"chars/mean": [2.0, 6.0]} and reward_metrics(both)["chars/mean"] == 4.0
    assert both.extra == {"chars": [1, 3, 6]} and both.select([2, 0]).extra == {"chars": [6, 1]}


def test_bad_log_calls_are_dropped_with_a_warning(warnings):
    def sloppy(completions, log_metric, log_extra, **kw):
        log_metric("ok", 1)
        log_metric("bad", "high")
        log_extra("short", [1])
        return [0.0] * len(completions)

    b = score_completions([sloppy], None, PROMPTS, COMPS)
    assert b.logged == {"ok": 1.0} and b.extra == {"short": [1, None]}
    w = warnings()
    assert any("log_metric('bad'" in m for m in w) and any("log_extra('short') got 1 values for 2" in m for m in w)


def test_worker_rows_scored_alone_keep_their_logs(warnings):
    b = score_completions([M + "hang_on_marker_logging"], None, None, ["a", "HANG", "ccc"], timeout_s=0.5)
    v = b.per_func[:, 0].tolist()
    assert v[0] == 1.0 and math.isnan(v[1]) and v[2] == 1.0
    assert b.metric_values == {"rows": [1.0, 1.0]}  # the two rows that returned, one call each
    assert b.extra == {"text": ["a", None, "ccc"]}


# ---- rows no function scores -----------------------------------------------------------------------------------

@pytest.mark.parametrize("timeout_s", [None, 5.0], ids=["in_process", "worker"])
def test_rows_where_every_function_returns_none_warn_once(timeout_s, warnings):
    # row 0: exact "4" -> accuracy scores it; row 1: empty gold -> accuracy None, never_applies None
    b = score_completions([M + "never_applies", "accuracy"], None, PROMPTS, ["<answer>4</answer>", "x"],
                          {"solution": ["4", ""]}, timeout_s=timeout_s)
    assert b.total.tolist()[0] == 1.0 and math.isnan(b.total.tolist()[1]) and b.unscored == 1
    (w,) = warnings()
    assert "returned None for 1 of 2 rows" in w and "First such row 1" in w and "do not train" in w
    b = score_completions([M + "never_applies"], None, PROMPTS, COMPS, timeout_s=timeout_s)
    assert b.unscored == 2 and sum("returned None for 2 of 2 rows" in m for m in warnings()) == 1


# ---- open-r1's style, by dotted path ------------------------------------------------------------------------

@pytest.mark.parametrize("timeout_s", [None, 5.0], ids=["in_process", "worker"])
def test_open_r1_style_functions_by_import_path(timeout_s, warnings):
    comps = [chat("<think>2+2</think> <answer>4</answer>"), chat("<answer>5</answer>"), chat("<think>hm</think>")]
    funcs = ["trl_style_rewards.exact_answer_reward", "trl_style_rewards:think_answer_format_reward",
             "trl_style_rewards.answer_length_penalty"]
    b = score_completions(funcs, [1.0, 0.5, 1.0], [[{"role": "user", "content": "2+2?"}]] * 3, comps,
                          {"solution": ["4", "4", ""]}, timeout_s=timeout_s)
    assert b.names == ["exact_answer_reward", "think_answer_format_reward", "answer_length_penalty"]
    acc, fmt, pen = (column(b, n) for n in b.names)
    assert acc[:2] == [1.0, 0.0] and math.isnan(acc[2])  # empty solution: None, as open-r1 does
    assert fmt == [1.0, 0.0, 0.0]
    if timeout_s is None:
        assert pen == pytest.approx([-0.37, -0.18, -0.17])  # -len/100: 37, 18 and 17 characters
        assert b.total.tolist() == pytest.approx([1.0 + 0.5 - 0.37, 0.0 - 0.18, -0.17])
        assert warnings() == []
    else:  # the factory's product is a closure: it cannot be pickled for the worker (reported, as before)
        assert all(math.isnan(x) for x in pen) and b.errors["answer_length_penalty"] == 3
        assert b.total.tolist() == pytest.approx([1.0 + 0.5, 0.0, 0.0])  # row 2: format 0.0
        assert [w for w in warnings() if "not picklable" in w and "answer_length_penalty" in w]


def test_rewarder_passes_trainer_state_and_messages():
    rows = 2
    prompts = PromptSet(prompts=[[{"role": "user", "content": f"q{i}"}] for i in range(rows)], texts=["q0", "q1"],
                        prompt_ids=[[0], [1]], columns={"solution": ["4", "5"]}, conversational=True,
                        fingerprint="f")
    comps = [Completion(0, [0], [5, 6], [0.0, 0.0], "eos", "<answer>4</answer>"),
             Completion(1, [1], [7], [0.0], "eos", "<answer>4</answer>")]
    rewarder = Rewarder([M + "step_scaled", "trl_style_rewards.exact_answer_reward", M + "argument_names"],
                        [1.0, 1.0, 1.0])
    rewarder.trainer_state = TrainerState(global_step=3, max_steps=10)
    b = rewarder.score(prompts, comps, [0, 1])
    assert column(b, "step_scaled") == pytest.approx([3.1, 3.1])  # 3 + 10/100
    assert column(b, "exact_answer_reward") == [1.0, 0.0]  # messages: completion[0]["content"] works
    assert b.extra["has_ids"] == [True, True]
    b = rewarder.score(prompts, comps, [0, 1], trainer_state=TrainerState(global_step=9))
    assert column(b, "step_scaled") == [9.0, 9.0]  # the argument wins over the attribute


# ---- open-r1's reward names ------------------------------------------------------------------------------------

def scores(spec: str, completions, **columns) -> list:
    return get_reward(spec)(prompts=None, completions=completions, **columns)


def test_open_r1_names_are_registered():
    names = {"accuracy", "format", "tag_count", "reasoning_steps", "length", "cosine", "repetition_penalty",
             "soft_overlong_punishment", "code", "binary_code", "code_format"}
    assert names <= set(list_rewards())
    assert reward_name("cosine?max_len=10&min_value_wrong=-0.5") == "cosine"
    assert get_reward("cosine?max_len=10") is get_reward("cosine?max_len=10")  # built once per spec
    with pytest.raises(ValueError, match="max_len"):
        get_reward("cosine?max_length=10")  # unknown parameter: the error lists the known ones
    with pytest.raises(ValueError, match="should not be positive"):
        get_reward("repetition_penalty?max_penalty=1")


def test_reasoning_steps():
    comps = ["Step 1: a\nStep 2: b\nStep 3: c",  # 3 markers -> min(1, 3/3) = 1
             "First, x. Next, y.",  # 2 -> 2/3
             "1. a\n2. b",  # "1." at the very start only (no multi-line ^) -> 1/3
             "- a\n- b\n* c",  # "\n-" and "\n*" (the first "-" has no newline before it) -> 2/3
             "no steps"]
    assert scores("reasoning_steps", comps) == pytest.approx([1.0, 2 / 3, 1 / 3, 2 / 3, 0.0])


def test_length():
    comps = ["<answer>4</answer>",  # 18 chars, correct: λ = 0.5 - 0/20 = 0.5
             "x" * 10 + "<answer>5</answer>",  # 28, wrong: λ = 0.5 - 10/20 = 0 -> min(0, 0) = 0
             "y" * 20 + "<answer>4</answer>",  # 38, correct: λ = 0.5 - 20/20 = -0.5
             "<answer>7</answer>"]  # 18, wrong: λ = 0.5 -> min(0, 0.5) = 0
    assert scores("length", comps, solution=["4"] * 4) == pytest.approx([0.5, 0.0, -0.5, 0.0])
    assert scores("length", ["<answer>1</answer>"] * 2, solution=["1", "2"]) == [0.0, 0.0]  # equal lengths
    assert scores("length", ["a", "bb"]) == [None, None]  # no solution column


def test_cosine():
    # max_len 36: an 18-char answer is at progress 0.5 (cos = 0), a 36-char one at 1 (cos = -1)
    comps = ["<answer>4</answer>",  # correct: 0.5 + 0.5 * (1.0 - 0.5) * (1 + 0) = 0.75
             "z" * 18 + "<answer>4</answer>",  # correct: 0.5 + 0.25 * 0 = 0.5
             "<answer>5</answer>",  # wrong: lo, hi = -0.5, 0.0 -> -0.5 + 0.5 * 0.5 * 1 = -0.25
             "z" * 18 + "<answer>5</answer>",  # wrong at max_len: -0.5
             "<answer>5</answer>"]  # empty gold: skipped with 1.0, as open-r1 does
    got = scores("cosine?max_len=36", comps, solution=["4", "4", "4", "4", ""])
    assert got == pytest.approx([0.75, 0.5, -0.25, -0.5, 1.0])
    # defaults (max_len 1000): 18 chars -> 0.5 + 0.25 * (1 + cos(0.018 pi))
    assert scores("cosine", ["<answer>4</answer>"], solution=["4"]) == pytest.approx(
        [0.5 + 0.25 * (1 + math.cos(0.018 * math.pi))])
    got = scores("cosine?max_len=36&min_value_wrong=-1&max_value_wrong=-0.5", [comps[2]], solution=["4"])
    assert got == pytest.approx([-0.75])  # lo, hi = -0.5, -1.0: -0.5 + 0.5 * (-0.5) * 1


def test_repetition_penalty():
    comps = ["a b c a b c",  # trigrams abc, bca, cab, abc: 1 - 3/4 = 0.25 -> -0.25
             "A b",  # fewer words than n -> 0
             "",  # empty -> 0
             "x y z w",  # 2 distinct trigrams -> 0
             [{"role": "assistant", "content": "a b c a b c"}]]  # messages: their text
    assert scores("repetition_penalty", comps) == pytest.approx([-0.25, 0.0, 0.0, 0.0, -0.25])
    # unigrams, max -0.5: "The the THE" is 3 x "the": (1 - 1/3) * -0.5
    assert scores("repetition_penalty?ngram_size=1&max_penalty=-0.5", ["The the THE"]) == pytest.approx([-1 / 3])


def test_soft_overlong_punishment():
    spec = "soft_overlong_punishment?max_completion_len=10&soft_punish_cache=4"
    ids = [[0] * 6, [0] * 8, [0] * 10, [0] * 11]
    # up to 10 - 4 = 6 tokens: 0; 8: (6 - 8) / 4 = -0.5; 10: (6 - 10) / 4 = -1; beyond: -1
    assert scores(spec, ["x"] * 4, completion_ids=ids) == [0.0, -0.5, -1.0, -1.0]
    assert scores("soft_overlong_punishment?max_completion_len=10&soft_punish_cache=0", ["x"] * 2,
                  completion_ids=[[0] * 10, [0] * 11]) == [0.0, -1.0]  # no cache: a hard limit
    assert scores("soft_overlong_punishment", ["x"], completion_ids=[[0] * 12288]) == [0.0]  # 16384 - 4096
    assert scores(spec, ["1234567"]) == [-0.25]  # no completion_ids: 7 characters, (6 - 7) / 4


def test_code_format():
    good = "<think>\nplan\n</think>\n<answer>\n```python\nprint(1)\n```\n</answer>"
    comps = [good,  # 1
             good.replace("<think>\n", "<think>"),  # no newline after <think>: 0
             good + "\nlater lines",  # "\n</answer>" still ends a line: 1
             good + " tail",  # text after </answer> on its line: 0
             good.replace("```python\nprint(1)\n```", "print(1)"),  # no fence: 0
             "<think>\n\n</think>\n<answer>\n```python``` \n</answer>"]  # empty parts are fine: 1
    assert scores("code_format", comps) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    cpp = good.replace("python", "cpp")
    assert scores("code_format", [cpp, cpp], language=["cpp", None]) == [1.0, 0.0]  # the row's language wins
    assert scores("code_format?language=cpp", [cpp]) == [1.0]


@pytest.mark.skipif(isolation_level() == "none", reason="cannot run code here")
def test_code_and_binary_code_run_in_the_sandbox():
    info = {"language": "python", "test_cases": [{"input": "1\n", "output": "2\n"},
                                                 {"input": "2\n", "output": "3\n"}]}
    right = "```python\nprint(int(input()) + 1)\n```"
    half = "```python\nn = int(input())\nprint(2 if n == 1 else 0)\n```"
    assert needs_sandbox(get_reward("code")) and needs_sandbox(get_reward("binary_code"))
    with sandbox_policy(allow_unsandboxed=True):  # bubblewrap when it works; the rlimits fallback otherwise
        comps, cols = [right, half, right], {"verification_info": [info, info, None]}
        assert scores("code", comps, **cols) == [1.0, 0.5, None]  # 2/2, 1/2, no tests: cannot score
        assert scores("binary_code", comps, **cols) == [1.0, 0.0, None]  # over 0.99 passed -> 1


def test_a_positional_only_signature_gets_a_hint(warnings):
    b = score_completions([lambda p, c: [1.0] * len(c)], None, PROMPTS, COMPS, names=["old_style"])
    assert b.errors == {"old_style": 2}
    (w,) = warnings()
    assert "raised TypeError" in w and "called with keywords only, as TRL calls them" in w
