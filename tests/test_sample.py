"""`r1kit sample`: rejection sampling keeps only verified samples and drops each filtered kind, counted.

A scripted engine returns crafted completions (no real generation), so every verdict is known.
"""

import json

import pytest

from r1kit.rollout import Completion
from r1kit.train.sample import Decontaminator, has_code_block, has_long_paragraph, model_sha256, run_sample
from r1kit.train.sample_config import SampleConfig

GOOD = "<think> 2 + 3 = 5 </think> <answer> 5 </answer>"
EVAL_PROBLEM = "Compute 417 + 385."
# prompt 0 (solution 5): one sample of every kind, in order; prompt 1 (solution 7): 3 distinct correct
SCRIPT = {
    0: [(GOOD, "eos"),                                                             # kept
        ("<think> 2 + 3 = 6 </think> <answer> 6 </answer>", "eos"),                # unverified
        ("<think> два плюс три = 5 </think> <answer> 5 </answer>", "eos"),         # mixed_language
        ("<think> " + "add the numbers " * 200 + "</think> <answer> 5 </answer>", "eos"),  # long_paragraph
        ("<think> ```python\nprint(2 + 3)\n``` </think> <answer> 5 </answer>", "eos"),     # code_block
        ("<think>  2 + 3 =  5 </think>\n<answer> 5 </answer>", "eos"),                # duplicate of GOOD
        (f"<think> This is like {EVAL_PROBLEM} 2 + 3 = 5 </think> <answer> 5 </answer>", "eos"),  # contaminated
        ("<think> 2 + 3 = 5, so 5 </think> <answer> 5 </answer>", "length")],     # truncated (cut at the end)
    1: [("<think> 3 + 4 = 7 </think> <answer> 7 </answer>", "eos"),
        ("<think> 4 + 3 = 7 </think> <answer> 7 </answer>", "eos"),
        ("<think> 3 plus 4 is 7 </think> <answer> 7 </answer>", "eos"),           # over_max_per_prompt
        ("<think> 3 + 4 = 8 </think> <answer> 8 </answer>", "eos")] * 2,
}


class ScriptedEngine:
    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, params):
        self.calls.append(params)
        out = []
        for i, ids in enumerate(prompt_ids):
            for text, reason in SCRIPT[i][:params.n]:
                out.append(Completion(i, ids, [1] * len(text.split()), [0.0] * len(text.split()), reason, text))
        return out

    def update_weights(self, model):
        pass


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    (d / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "What is 2 + 3?", "solution": "5"}, {"prompt": "What is 3 + 4?", "solution": "7"}]))
    (d / "eval.jsonl").write_text(json.dumps({"problem": EVAL_PROBLEM, "solution": "802"}) + "\n")
    cfg = SampleConfig(dataset_name=str(d / "prompts.jsonl"), num_samples=8, max_paragraph_chars=2000,
                       max_per_prompt=2, decontamination_datasets=[str(d / "eval.jsonl"), "r1kit:arithmetic"],
                       reward_funcs=["accuracy", "format"], output_dir=str(d / "out"),
                       output_format=["jsonl", "parquet"], write_rejected=True)
    engine = ScriptedEngine()
    out = run_sample(cfg, engine=engine)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return out, rows, json.loads((out / "stats.json").read_text()), engine


def test_keeps_only_verified_and_counts_each_filter(sampled):
    out, rows, stats, engine = sampled
    assert engine.calls[0].n == 8 and engine.calls[0].temperature == 0.6
    assert [r["completion"] for r in rows] == [GOOD, SCRIPT[1][0][0], SCRIPT[1][1][0]]
    # prompt 1: c0 c1 kept, c2 over the cap, wrong x2, then c0 c1 again (duplicates), c2 again (over the cap)
    assert stats["dropped"] == {"unverified": 1 + 2, "truncated": 1, "mixed_language": 1, "long_paragraph": 1,
                                "code_block": 1, "contaminated": 1, "duplicate": 1 + 2, "over_max_per_prompt": 2}
    assert stats["kept"] == 3 and stats["num_samples"] == 16 and stats["num_prompts"] == 2
    assert sum(stats["dropped"].values()) + stats["kept"] == stats["num_samples"]
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 13
    assert {r["dropped_by"] for r in rejected} == set(stats["dropped"])
    by = {r["dropped_by"]: r for r in rejected}
    assert by["mixed_language"]["filters"]["one_language"] is False and by["mixed_language"]["filters"]["verified"]
    assert by["duplicate"]["filters"]["unique"] is False


def test_rows_carry_provenance(sampled):
    _, rows, stats, _ = sampled
    r = rows[0]
    assert r["prompt"] == "What is 2 + 3?" and r["solution"] == "5" and r["template"] == "r1_zero"
    assert r["model"] == "r1kit:tiny" and r["model_sha256"].startswith("state_dict:")
    assert r["model_sha256"] == stats["model_sha256"]
    assert r["sampling"]["n"] == 8 and r["sampling"]["temperature"] == 0.6 and r["sampling"]["top_p"] == 0.95
    assert r["prompt_id"].endswith("prompts.jsonl:train:0") and r["row_index"] == 0 and r["sample_index"] == 0
    assert r["rewards"] == {"accuracy": 1.0, "format": 1.0} and r["reward_total"] == 2.0
    assert all(r["filters"].values()) and set(r["filters"]) == {"verified", "complete", "one_language", "short_paragraphs",
                                                         "no_code_block", "decontaminated", "unique"}
    assert r["finish_reason"] == "eos" and r["num_tokens"] > 0


def test_output_is_sft_data(sampled):
    from r1kit.data.sft_data import build_examples, load_sft_rows
    from r1kit.data.templates import render_prompt
    from r1kit.models.loading import load_model_and_tokenizer

    out, rows, _, _ = sampled
    _, tok = load_model_and_tokenizer("r1kit:tiny")
    for name in ("samples.jsonl", "samples.parquet"):
        raw, source, lines = load_sft_rows(str(out / name))
        examples, kind = build_examples(raw, tok, source, lines, max_length=512, template="r1_zero")
        assert kind == "prompt_completion" and len(examples) == 3
        # the context SFT trains on is the rendered prompt the sample was drawn from
        prompt_ids = tok(render_prompt(rows[0]["prompt"], tok, "r1_zero")).input_ids
        ex = examples[0]
        assert ex.input_ids[:len(prompt_ids)] == prompt_ids and not any(ex.loss_mask[:len(prompt_ids)])
        assert ex.input_ids[-1] == tok.eos_token_id and ex.loss_mask[-1] == 1


def test_decontamination_ngrams():
    long_item = "A train leaves the station at nine and travels sixty miles per hour until it reaches the city"
    d = Decontaminator([long_item, "What is 12 + 30?", "42"], n=13, min_tokens=5)
    words = long_item.split()
    assert d.contaminated("Recall: " + " ".join(words[2:15]) + " so 42.")  # 13 shared words
    assert not d.contaminated("Recall: " + " ".join(words[2:14]) + " so 42.")  # only 12
    assert d.contaminated("so what is 12+30 ? fine")  # a short item matched whole (case, spacing ignored)
    assert not d.contaminated("what is 12 + 31?") and not d.contaminated("the answer is 42")  # "42": too short
    assert len(Decontaminator(["x " * 20], n=5)) == 1  # identical n-grams collapse


def test_filters_and_hash(tmp_path):
    from r1kit.models.loading import load_model_and_tokenizer, save_model

    assert has_code_block("<think> ``` x ``` </think> <answer> 1 </answer>")
    assert not has_code_block("<think> x </think> <answer> ```1``` </answer>")  # only the chain of thought
    assert has_long_paragraph("a" * 11, 10) and not has_long_paragraph("a" * 6 + "\n\n" + "b" * 6, 10)
    model, tok = load_model_and_tokenizer("r1kit:tiny")
    save_model(model, tok, tmp_path)
    h = model_sha256(str(tmp_path), model)
    assert h.startswith("safetensors:") and h == model_sha256(str(tmp_path), None)
    assert model_sha256("r1kit:tiny", model) == model_sha256("r1kit:tiny", model)


def test_config_checks():
    with pytest.raises(ValueError, match="verify_reward"):
        SampleConfig(verify_reward="nope")
    with pytest.raises(ValueError, match="output_format"):
        SampleConfig(output_format=["csv"])
