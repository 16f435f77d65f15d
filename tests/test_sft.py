"""SFT: loss on completion tokens only (hand-checked), chat masks, packing, a tiny run, exact resume, bad rows."""

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from r1kit.cli import main as cli_main
from r1kit.data.datasets import DataError
from r1kit.data.sft_data import Example, build_examples, collate, encode_row, load_sft_rows, pack_examples
from r1kit.data.templates import render_prompt
from r1kit.models.tiny import build_tiny
from r1kit.train.checkpoint import list_checkpoints
from r1kit.train.sft import sft_loss, train
from r1kit.train.sft_config import SFTConfig
from r1kit.train.tracking import KNOWN_TRACKERS, read_metrics

TIMING = ("timing_s/", "perf/")



@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


@pytest.fixture(scope="module")
def tiny_chat():
    return build_tiny(chat_template=True)


def pc_rows(n=20):
    return [{"prompt": f"What is {i} + {i + 3}?", "completion": f"<answer> {2 * i + 3} </answer>"} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_loss_on_completion_tokens_only_hand_batch(tiny):
    model, tok = tiny
    # encode_row: prompt rendered with the GRPO template, completion + EOS, loss mask on the completion only
    ex = encode_row({"prompt": "What is 2 + 3?", "completion": " <answer> 5 </answer>"}, tok, kind="prompt_completion",
                    template="r1_zero")
    p_ids = tok(render_prompt("What is 2 + 3?", tok, "r1_zero"), add_special_tokens=True).input_ids
    c_ids = tok(" <answer> 5 </answer>", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert ex.input_ids == p_ids + c_ids
    assert ex.loss_mask == [0] * len(p_ids) + [1] * len(c_ids)

    # a hand-made batch: row 0 = 3 prompt + 2 completion tokens; row 1 = 2 prompt + 4 completion tokens (+ padding)
    a = Example([5, 6, 7, 8, 9], [0, 0, 0, 1, 1])
    b = Example([10, 11, 12, 13, 14, 15], [0, 0, 1, 1, 1, 1])
    batch = collate([[a], [b]], tok.pad_token_id)
    assert batch.loss_mask.tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    loss, stats = sft_loss(model, batch)
    # by hand: log p(token t | tokens < t) for the completion tokens only, token mean over the batch
    with torch.no_grad():
        terms = []
        for ex_, targets in ((a, [3, 4]), (b, [2, 3, 4, 5])):
            logits = model(input_ids=torch.tensor([ex_.input_ids])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            terms += [logp[t - 1, ex_.input_ids[t]].item() for t in targets]
    assert loss.item() == pytest.approx(-sum(terms) / 6, rel=1e-5)
    # which positions carry loss: exactly the completion targets (shifted by one), never prompt or padding
    carried = (stats["token_logps"] != 0) & (batch.loss_mask[:, 1:] > 0)
    assert carried.nonzero().tolist() == [[0, 2], [0, 3], [1, 1], [1, 2], [1, 3], [1, 4]]
    # micro-batches normalised by the whole step's token count sum to the full-batch loss (exact accumulation)
    parts = [sft_loss(model, collate([[e]], tok.pad_token_id), num_items=6)[0].item() for e in (a, b)]
    assert sum(parts) == pytest.approx(loss.item(), rel=1e-5)


def test_messages_loss_on_assistant_turns_only(tiny_chat):
    _, tok = tiny_chat
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"}, {"role": "user", "content": "Sure?"},
                        {"role": "assistant", "content": "Yes, 4."}]}
    ex = encode_row(row, tok, kind="messages", assistant_only_loss=True)
    on = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if m])
    off = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if not m])
    eos = tok.eos_token
    assert on == f"4{eos}\nYes, 4.{eos}\n"  # assistant contents with their end-of-turn marker
    assert "Be brief." in off and "2+2?" in off and "Sure?" in off and "<|assistant|>" in off
    # the pieces concatenate to the template's own rendering of the whole conversation
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(row["messages"], tokenize=False)
    # assistant_only_loss=false (TRL's default) trains on every token (but the first, which nothing predicts)
    assert sum(encode_row(row, tok, kind="messages").loss_mask) == len(ex.input_ids) - 1


def test_packing_keeps_per_token_losses(tiny):
    model, tok = tiny
    examples, _ = build_examples(pc_rows(6), tok, "mem", max_length=64, template="none")
    packed = pack_examples(examples, 64)
    assert len(packed) < len(examples) and sum(len(r) for r in packed) == len(examples)
    flat_p, flat_u = [], []
    with torch.no_grad():
        for rows, out in ((packed, flat_p), ([[e] for e in examples], flat_u)):
            batch = collate(rows, tok.pad_token_id)
            _, stats = sft_loss(model, batch)
            keep = batch.loss_mask[:, 1:] > 0
            out += stats["token_logps"][keep].tolist()
    # same loss tokens, and the same log-probs: attention does not cross the packed examples' boundaries
    assert len(flat_p) == len(flat_u) == sum(sum(e.loss_mask) for e in examples)
    assert torch.allclose(torch.tensor(flat_p), torch.tensor(flat_u), atol=1e-5)
    batch = collate(packed, tok.pad_token_id)
    assert batch.position_ids[0, :len(examples[0].input_ids) + 1].tolist()[-1] == 0  # restart at example 2


def sft_cfg(tmp_path, data, name="run", **kw) -> SFTConfig:
    base = dict(model_name_or_path="r1kit:tiny", dataset_name=data, template="none", max_length=64,
                per_device_train_batch_size=4, gradient_accumulation_steps=2, learning_rate=3e-3, max_steps=12,
                logging_steps=1, save_steps=4, output_dir=str(tmp_path / name), disable_tqdm=True, seed=3)
    base.update(kw)
    return SFTConfig(**base)


def mean_loss(model, examples, pad_id):
    with torch.no_grad():
        return sft_loss(model, collate([[e] for e in examples], pad_id))[0].item()


def test_tiny_run_lowers_loss_and_saves(tmp_path, tiny):
    data = write_jsonl(tmp_path / "train.jsonl", pc_rows(20))
    out = train(sft_cfg(tmp_path, data, save_total_limit=2, packing=True))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 13))
    for r in rows:
        for key in ("loss", "grad_norm", "learning_rate", "num_tokens", "epoch", "mean_token_accuracy", "timing_s/step"):
            assert key in r and math.isfinite(r[key]), key
    assert rows[-1]["num_tokens"] > rows[0]["num_tokens"] > 0 and rows[-1]["epoch"] > 1
    assert [s for s, _ in list_checkpoints(out)] == [8, 12]
    # the final model loads with plain transformers and fits its training data much better
    model0, tok = tiny
    examples, _ = build_examples(pc_rows(20), tok, "mem", max_length=64, template="none")
    trained = AutoModelForCausalLM.from_pretrained(out)
    before, after = mean_loss(model0, examples, tok.pad_token_id), mean_loss(trained, examples, tok.pad_token_id)
    assert after < before - 1.0, (before, after)


class Crash(Exception):
    pass


def test_resume_equals_straight_run(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "train.jsonl", pc_rows(20))
    straight = train(sft_cfg(tmp_path, data, "straight", max_steps=6, save_steps=3))
    import r1kit.train.skeleton as skeleton

    real_save = skeleton.save_checkpoint

    def save_then_crash(*args, **kw):
        raise Crash(real_save(*args, **kw))

    monkeypatch.setattr(skeleton, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(sft_cfg(tmp_path, data, "resumed", max_steps=6, save_steps=3))
    monkeypatch.setattr(skeleton, "save_checkpoint", real_save)
    resumed = train(sft_cfg(tmp_path, data, "resumed", max_steps=6, save_steps=3, resume_from_checkpoint="true"))

    def clean(rows):
        return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]

    assert [r["step"] for r in read_metrics(resumed)] == list(range(1, 7))
    assert clean(read_metrics(straight)) == clean(read_metrics(resumed))
    a, b = (load_file(str(next(iter(sorted(p.glob("*.safetensors")))))) for p in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="learning_rate"):
        train(sft_cfg(tmp_path, data, "resumed", max_steps=7, learning_rate=1e-4, resume_from_checkpoint="true"))


def test_bad_rows_are_named(tmp_path, tiny, tiny_chat, capsys):
    _, tok = tiny
    rows = pc_rows(4)
    rows[1] = {"prompt": "x"}
    rows[2]["completion"] = "  "
    with pytest.raises(DataError) as e:
        build_examples(rows, tok, "d.jsonl", [1, 2, 3, 4], max_length=64, template="none")
    msg = str(e.value)
    assert "d.jsonl: 2 invalid rows" in msg and "row 1 (line 2): no 'completion'" in msg
    assert "row 2 (line 3): 'completion' is empty" in msg
    long = [{"prompt": "p", "completion": "1 2 3 4 5 6 7 8 9 " * 10}]
    with pytest.raises(DataError, match=r"row 0: \d+ tokens, over max_length=16 .*truncate: true"):
        build_examples(long, tok, "d", max_length=16, template="none")
    (ex,), _ = build_examples(long, tok, "d", max_length=16, template="none", truncate=True)
    assert len(ex.input_ids) == 16 and sum(ex.loss_mask) > 0
    msgs = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    with pytest.raises(DataError, match="no chat template"):
        build_examples(msgs, tok, "d", max_length=64)
    with pytest.raises(DataError, match="no non-empty assistant turn"):
        build_examples([{"messages": [{"role": "user", "content": "hi"}]}], tiny_chat[1], "d", max_length=64,
                       assistant_only_loss=True)
    with pytest.raises(DataError, match=r"'messages' column \(messages_column\), 'prompt' and 'completion' columns "
                                        r"\(prompt_column, completion_column\) or a 'text' column \(dataset_text_field\)"):
        build_examples([{"body": "x"}], tok, "d", max_length=64)
    # through the CLI: a bad file fails before training with exit code 1 and the row named
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    assert cli_main(["sft", "--dataset_name", bad, "--template", "none", "--output_dir", str(tmp_path / "o")]) == 1
    assert "row 1 (line 2)" in capsys.readouterr().err


def test_recipes_load():
    from pathlib import Path

    from r1kit.config import load_config

    recipes = sorted((Path(__file__).parent.parent / "recipes").glob("sft-*.yaml"))
    assert recipes
    for path in recipes:
        # report_to's trackers must be installed to load a recipe (tests/test_rough_edges.py); here: known ones
        assert set(yaml.safe_load(path.read_text()).get("report_to", [])) <= set(KNOWN_TRACKERS)
        cfg = load_config(SFTConfig, str(path), ["--report_to", "none"])
        # the loss stays where the recipe meant it: completions (prompt/completion data, TRL's default) or
        # assistant turns (messages data: TRL trains on every token unless assistant_only_loss)
        assert cfg.completion_only_loss in (True, None) and cfg.dataset_name
        assert cfg.assistant_only_loss == ("distill" in path.name)


def test_plain_template_joins_prompt_and_completion_like_words(tiny):
    _, tok = tiny
    # "...Assistant:" + "<think> ..." is trained as the policy would sample it: " <think> ..." (one
    # space-prefixed token), not an unspaced "<" the model never emits after the prompt
    prompt_text = render_prompt("What is 2 + 3?", tok, "r1_zero")
    assert prompt_text.endswith("Assistant:")
    spaced = tok(" <think> 5 </think>", add_special_tokens=False).input_ids + [tok.eos_token_id]
    for completion in ("<think> 5 </think>", " <think> 5 </think>"):  # written data / sampled data
        ex = encode_row({"prompt": "What is 2 + 3?", "completion": completion}, tok, kind="prompt_completion",
                        template="r1_zero")
        assert [t for t, m in zip(ex.input_ids, ex.loss_mask) if m] == spaced
    # a prompt already ending in whitespace gets nothing added; nor does a chat-rendered prompt
    ex = encode_row({"prompt": "Q: 2 + 3 =\n", "completion": "5"}, tok, kind="prompt_completion", template="none")
    assert [t for t, m in zip(ex.input_ids, ex.loss_mask) if m] == tok("5", add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_sft_reads_save_to_disk_folders(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = pc_rows(3)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    assert load_sft_rows(str(tmp_path / "one"))[0] == rows
    assert load_sft_rows(str(tmp_path / "dict"))[0] == rows
    with pytest.raises(DataError, match="no split 'test'; available splits: \\['train'\\]"):
        load_sft_rows(str(tmp_path / "dict"), split="test")
