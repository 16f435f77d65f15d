"""Reward models: `r1kit rm` (Bradley-Terry) learns tiny-world preferences; the `rm:` reward scores a segment."""

import json

import pytest

from r1kit.rewards import get_reward, score_completions
from r1kit.rewards.reward_model import answer_segment, make_reward_model_reward, reward_from_spec
from r1kit.tasks.preferences import KINDS, make_pair, preference_pairs, write_pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from r1kit.cli import main

    d = tmp_path_factory.mktemp("rm")
    pairs = write_pairs(d / "pairs.jsonl", 240, seed=0)
    out = d / "rm"
    rc = main(["rm", "--dataset_name", str(pairs), "--output_dir", str(out), "--max_steps", "20",
               "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", "--eval_fraction", "0.1",
               "--save_steps", "10", "--logging_steps", "5", "--disable_tqdm", "true", "--seed", "0"])
    assert rc == 0
    return out


def test_preference_pairs():
    rows = preference_pairs(8, seed=1)
    assert [r["kind"] for r in rows] == list(KINDS) * 2
    for r in rows:
        assert r["chosen"] != r["rejected"] and r["solution"] in r["chosen"]
        assert answer_segment(r["chosen"]).startswith("<answer>")
    pair = make_pair({"prompt": "What is 2 + 3?", "a": 2, "op": "+", "b": 3, "solution": "5"}, "no_summary",
                     __import__("random").Random(0))
    assert answer_segment(pair["rejected"]) == ""


def test_answer_segment():
    assert answer_segment("<think> a </think> <answer> 5 </answer>") == "<answer> 5 </answer>"
    assert answer_segment("reasoning </think> The answer is 5.") == "The answer is 5."  # pre-filled <think>
    assert answer_segment("<answer> 5 </answer>") == "5"
    assert answer_segment("just 5") == "just 5"
    assert answer_segment("<think> cut off before the end") == ""


def test_rm_training_beats_chance_on_held_out_pairs(trained):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert {"loss", "accuracy", "margin", "eval_accuracy", "eval_loss", "eval_margin"} <= set(rows[-1])
    assert (trained / "checkpoint-10" / "trainer_state.json").is_file() and (trained / "latest").is_file()
    meta = json.loads((trained / "r1kit_rm.json").read_text())
    assert meta["segment"] == "answer" and meta["template"] == "plain"

    held_out = preference_pairs(64, seed=99)  # new pairs (other wrong numbers, other items)
    fn = get_reward(f"rm:{trained}?batch_size=32")
    prompts = [r["prompt"] for r in held_out]
    chosen, rejected = fn(prompts, [r["chosen"] for r in held_out]), fn(prompts, [r["rejected"] for r in held_out])
    acc = sum(c > r for c, r in zip(chosen, rejected)) / len(held_out)
    assert acc >= 0.7, acc  # chance is 0.5; mixed-language, rambling and missing summaries are learnable
    assert all(isinstance(x, float) for x in chosen) and len(chosen) == 64


def test_segment_answer_vs_full(trained):
    a = "<think> 2 + 3 = 5, easy. </think> <answer> 2 + 3 = 5, so the answer is 5 </answer>"
    b = "<think> два плюс три, hmm, maybe 6, or 4, no: 5. </think> <answer> 2 + 3 = 5, so the answer is 5 </answer>"
    prompts = ["What is 2 + 3?"] * 2
    ans = make_reward_model_reward(str(trained), segment="answer")([*prompts], [a, b])
    full = make_reward_model_reward(str(trained), segment="full")(prompts, [a, b])
    assert ans[0] == pytest.approx(ans[1], abs=1e-5)  # same summary -> same helpfulness score
    assert abs(full[0] - full[1]) > 1e-3  # the whole response differs
    assert len(ans) == len(full) == 2 and all(isinstance(x, float) for x in ans + full)
    # chat-message completions score like strings; the spec is resolved once and cached
    msgs = [[{"role": "assistant", "content": a}]]
    spec = f"rm:{trained}?segment=full"
    assert get_reward(spec) is get_reward(spec)
    assert get_reward(spec)(prompts[:1], msgs)[0] == pytest.approx(full[0], abs=1e-5)
    batch = score_completions([spec, "accuracy"], None, prompts, [a, b], {"solution": ["5", "5"]})
    assert batch.per_func.shape == (2, 2) and not batch.errors.get(batch.names[0])


def test_spec_errors():
    with pytest.raises(ValueError, match="unknown option"):
        reward_from_spec("some/model?segmnt=answer")
    with pytest.raises(ValueError, match="segment"):
        reward_from_spec("some/model?segment=middle")
    with pytest.raises(ValueError, match="no model path"):
        get_reward("rm:?segment=answer")
