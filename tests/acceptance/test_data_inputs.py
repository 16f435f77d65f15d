"""Acceptance: bad data and models fail before any training, with the file, row and field named.

Each case runs the real CLI (`r1kit grpo --config recipe.yaml`): exit code 1, one error line on
stderr naming what is wrong, and no metrics written (no step ran)."""

from __future__ import annotations

import json

import pytest

from r1kit.cli import main as cli_main
from r1kit.data.datasets import DataError
from r1kit.train.grpo import train
from r1kit.train.tracking import read_metrics

from .conftest import tiny_cfg

GOOD = {"prompt": "What is 2 + 3?", "solution": "5"}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(tmp_path, capsys, **overrides):
    """Run `r1kit grpo` on a tiny recipe (JSON is YAML) and return (exit code, stderr, output_dir)."""
    out = tmp_path / "out"
    recipe = dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=8,
                  num_generations=2, per_device_train_batch_size=4, max_completion_length=4, max_steps=1,
                  save_steps=0, disable_tqdm=True, reward_funcs=["format"], output_dir=str(out))
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    capsys.readouterr()
    rc = cli_main(["grpo", "--config", str(path)])
    return rc, capsys.readouterr().err, out


@pytest.mark.parametrize("bad_row, problem", [
    ({"prompt": "What is 1 + 1?"}, "'solution' is None, expected str"),          # no answer
    ({"prompt": "What is 1 + 1?", "solution": None}, "'solution' is None, expected str"),
    ({"prompt": "What is 1 + 1?", "solution": 2}, "'solution' is int, expected str"),
    ({"prompt": "What is 1 + 1?", "solution": ["2"]}, "'solution' is list, expected str"),
    ({"prompt": "   ", "solution": "2"}, "'prompt' is empty"),
])
def test_bad_rows_are_named(tmp_path, capsys, bad_row, problem):
    data = write_rows(tmp_path / "train.jsonl", [GOOD] * 5 + [bad_row] + [GOOD] * 2)
    rc, err, out = run_cli(tmp_path, capsys, dataset_name=str(data))
    assert rc == 1
    assert f"error: {data}: 1 invalid row:" in err and f"row 5 (line 6): {problem}" in err
    assert not (out / "metrics.jsonl").exists()


def test_over_long_prompt(tmp_path, capsys, caplog):
    """Not an error since TRL's semantics (tests/test_trl_semantics.py): the prompt keeps its last
    max_prompt_length tokens, and one warning counts the rows cut."""
    long = {"prompt": "What is " + " + ".join(["1"] * 300) + "?", "solution": "200"}
    data = write_rows(tmp_path / "train.jsonl", [GOOD] * 3 + [long] * 2 + [GOOD] * 3)
    with caplog.at_level("WARNING", logger="r1kit.grpo"):
        rc, err, out = run_cli(tmp_path, capsys, dataset_name=str(data), max_prompt_length=300)
    assert rc == 0 and len(read_metrics(out)) == 1
    (msg,) = [r.getMessage() for r in caplog.records if "max_prompt_length" in r.getMessage()]
    assert f"{data}: 2 of 8 prompts are longer than max_prompt_length=300 tokens" in msg and "first row 3" in msg


def test_dataset_smaller_than_one_batch(tmp_path, capsys):
    data = write_rows(tmp_path / "train.jsonl", [GOOD])  # one prompt; a step needs 4 / 2 = 2
    rc, err, out = run_cli(tmp_path, capsys, dataset_name=str(data))
    assert rc == 1
    assert f"{data}: 1 prompts, fewer than one batch (2 prompts x 1 process(es))" in err
    assert not (out / "metrics.jsonl").exists()


def test_unknown_reward_name(tmp_path, capsys):
    rc, err, out = run_cli(tmp_path, capsys, reward_funcs=["format", "acuracy"])
    assert rc == 1
    assert "unknown reward 'acuracy'" in err
    assert "Known rewards: accuracy, binary_code, code, code_format, cosine, format" in err
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("conversation", [True, False])
def test_model_without_chat_template(tmp_path, capsys, conversation):
    prompt = [{"role": "user", "content": "What is 2 + 3?"}] if conversation else "What is 2 + 3?"
    data = write_rows(tmp_path / "train.jsonl", [{"prompt": prompt, "solution": "5"}] * 4)
    rc, err, out = run_cli(tmp_path, capsys, dataset_name=str(data), template="chat")
    assert rc == 1
    assert "error: r1kit:tiny: template is 'chat' but this tokenizer has no chat template" in err
    assert not (out / "metrics.jsonl").exists()


def test_chat_template_present_trains(tmp_path):
    """The positive control: the same conversations train with a model that has a chat template."""
    data = write_rows(tmp_path / "train.jsonl", [{"prompt": [{"role": "user", "content": "What is 2 + 3?"}],
                                                  "solution": "5"}] * 4)
    out = train(tiny_cfg(tmp_path, model_name_or_path="r1kit:tiny-chat", dataset_name=str(data), template="chat",
                         reward_funcs=["acceptance.bad_rewards:digits", "format"]))
    assert [r["step"] for r in read_metrics(out)] == [1]
    first = json.loads((out / "completions" / "step-000001.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|user|>\nWhat is 2 + 3?")


def test_data_errors_are_raised_by_train_too(tmp_path):
    data = write_rows(tmp_path / "train.jsonl", [GOOD] * 4 + [{"prompt": "x", "solution": 7}])
    with pytest.raises(DataError, match=r"row 4 \(line 5\): 'solution' is int, expected str"):
        train(tiny_cfg(tmp_path, dataset_name=str(data), dataset_num_rows=None))
