import json
import os
import re

import pytest

from r1kit.config import ConfigError, load_config
from r1kit.tasks import get_task, is_test_key
from r1kit.tiny_world import TINY_BASE_PATH
from r1kit.tiny_world.corpus import FORBIDDEN, corpus_keys, corpus_stats, generate_corpus
from r1kit.tiny_world.pretrain import PretrainConfig, build_tokenizer, pack_documents, run_pretrain

R1_ZERO_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: What is 457 + 368?. Assistant:"
)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="hidden_size"):
        PretrainConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="corpus_mix"):
        PretrainConfig(corpus_mix={"bogus": 1})
    with pytest.raises(ValueError, match="context_length"):
        PretrainConfig(context_length=4096, max_position_embeddings=1024)


def test_recipe_loads_like_every_command():
    root = os.path.dirname(os.path.dirname(__file__))
    recipe = os.path.join(root, "recipes", "tiny-pretrain.yaml")
    cfg = load_config(PretrainConfig, recipe)
    assert cfg.seed == 0 and cfg.arch == "qwen2"
    # command-line values are coerced to the field types; unknown keys are named
    cfg = load_config(PretrainConfig, recipe, ["--max_steps", "5", "--learning_rate", "1e-3", "--max_minutes", "2"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.max_minutes) == (5, 1e-3, 2.0)
    assert type(cfg.max_steps) is int and type(cfg.max_minutes) is float
    with pytest.raises(ConfigError, match="unknown key 'max_step'"):
        load_config(PretrainConfig, recipe, ["--max_step", "5"])
    with pytest.raises(ConfigError, match="'max_steps' must be an integer"):
        load_config(PretrainConfig, recipe, ["--max_steps", "five"])


def test_corpus_deterministic_clean_and_mixed():
    docs, metas = generate_corpus(3000, seed=0, return_meta=True)
    assert docs == generate_corpus(3000, seed=0)
    assert docs != generate_corpus(3000, seed=1)
    text = "\n".join(docs)
    assert not any(f in text for f in FORBIDDEN)
    assert "A conversation between User and Assistant" not in text
    assert re.search(r"[\u0400-\u04FF]", text)            # second script present
    assert "Wait, let me check" in text and "<answer>" in text and "so far" in text
    s = corpus_stats(docs, metas)
    assert 0.15 < s["frac_worked"] < 0.6
    assert s["acc_worked"] > 0.8 > 0.4 > s["acc_direct"]
    assert s["acc_worked_with_check"] >= s["acc_worked_no_check"]


def test_corpus_has_no_test_item():
    keys = corpus_keys(3000, seed=0)
    assert len(keys) >= 3000 and not any(is_test_key(k) for k in keys)
    text = "\n".join(generate_corpus(3000, seed=0))
    for row in get_task("arithmetic").dataset("test", 300):
        a, op, b = row["a"], row["op"], row["b"]
        pairs = [(a, b), (b, a)] if op in "+*" else [(a, b)]
        for x, y in pairs:
            assert not re.search(rf"(?<!\d){x} \{op} {y}(?!\d)", text), row


def test_tokenizer_splits_digits():
    tok = build_tokenizer(generate_corpus(300, seed=0), vocab_size=300)
    ids = tok("12345 + 678", add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]).strip() for i in ids]
    assert [p for p in pieces if p.isdigit()] == list("12345678")
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>" and tok.padding_side == "left"


def test_pack_documents_keeps_documents_whole():
    blocks, real = pack_documents([[1, 2, 0], [3, 4, 5, 0], [6, 0]], block=5, pad_id=9)
    assert blocks == [[1, 2, 0, 9, 9], [3, 4, 5, 0, 9], [6, 0, 9, 9, 9]] and real == 9


def test_pretrain_smoke(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = PretrainConfig(output_dir=str(tmp_path / "m"), corpus_docs=200, tokenizer_docs=200, vocab_size=300,
                         context_length=128, max_position_embeddings=256, hidden_size=32, num_layers=1,
                         num_heads=2, num_kv_heads=2, intermediate_size=64, batch_size=4, max_steps=3,
                         warmup_steps=1, log_every=1)
    out = run_pretrain(cfg, command="test")
    assert out == cfg.output_dir
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    assert len(lines) == 3 and all(l["loss"] > 0 for l in lines)
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["seed"] == 0 and man["command"] == "test" and man["corpus"]["documents"] == 200
    assert os.path.exists(os.path.join(out, "README.md"))
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    enc = tok(["What is 1 + 2?"], return_tensors="pt")
    gen = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] >= enc["input_ids"].shape[1] + 1


def test_shipped_model_loads_with_plain_transformers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.path.isdir(TINY_BASE_PATH)
    size = sum(os.path.getsize(os.path.join(TINY_BASE_PATH, f)) for f in os.listdir(TINY_BASE_PATH))
    assert size < 20 * 2**20
    tok = AutoTokenizer.from_pretrained(TINY_BASE_PATH)
    model = AutoModelForCausalLM.from_pretrained(TINY_BASE_PATH)
    assert model.config.model_type in ("qwen2", "llama")
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>" and tok.padding_side == "left"
    enc = tok([R1_ZERO_PROMPT], return_tensors="pt")
    torch.manual_seed(0)
    gen = model.generate(**enc, max_new_tokens=8, do_sample=True, temperature=0.6, top_p=0.95,
                         pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    assert os.path.exists(os.path.join(TINY_BASE_PATH, "manifest.json"))
