"""Issue 12's rough edges: each is a one-line error that names the key, file or row (or, for SFT text
rows, now works): a missing tracker package, a command-line value that is not YAML, a missing dataset
column, far-fetched "did you mean" suggestions, and TRL's language-modeling `text` rows."""

import json
import sys

import pytest
import torch

from r1kit.cli import main as cli_main
from r1kit.config import ConfigError, close_keys, load_config
from r1kit.data.datasets import DataError, load_dataset_rows
from r1kit.data.sft_data import build_examples, encode_row
from r1kit.models.tiny import build_tiny
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.sample_config import SampleConfig
from r1kit.train.sft import train
from r1kit.train.sft_config import SFTConfig
from r1kit.train.tracking import Tracker, read_metrics


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def one_line_error(capsys, argv) -> str:
    """Run the CLI, expect a failure, return its error: one line, no traceback (log lines aside)."""
    assert cli_main(argv) != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("r1kit ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- 1. report_to names a tracker whose package is not installed ---------------------------------


@pytest.mark.parametrize("tracker", ["wandb", "tensorboard", "trackio"])
def test_missing_tracker_package_fails_at_config(tmp_path, capsys, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # find_spec -> None and `import` fails: not installed
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1", "solution": "2"}])
    out = tmp_path / "run"
    err = one_line_error(capsys, ["grpo", "--dataset_name", data, "--report_to", tracker, "--output_dir", str(out)])
    assert "'report_to'" in err and f"{tracker} is not installed" in err and f"pip install {tracker}" in err
    assert err.startswith("r1kit grpo: command line:")  # at config time ...
    assert not out.exists()  # ... before anything of the run is written
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"report_to: [none, {tracker}]\ndataset_name: {data}\n")
    with pytest.raises(ConfigError, match=rf"r\.yaml: 'report_to' is \['none', '{tracker}'\] but {tracker} is not "
                                          rf"installed: pip install {tracker}"):
        load_config(SFTConfig, str(recipe))
    # the tracker set-up of the Python API says the same, before it creates any file
    with pytest.raises(ValueError, match=f"'report_to'.*pip install {tracker}"):
        Tracker(str(out), [tracker], {})
    assert not out.exists()


def test_installed_tracker_that_does_not_import_is_named(tmp_path, monkeypatch):
    def broken(self, name, config, run_name):
        raise ImportError("libfoo.so: cannot open shared object file")

    monkeypatch.setattr(Tracker, "_start", broken)
    monkeypatch.setattr("r1kit.train.tracking.check_trackers", lambda report_to: None)  # as if installed
    with pytest.raises(ValueError, match=r"'report_to' wandb: the wandb package does not import \(ImportError: "
                                         r"libfoo.so.*pip install -U wandb"):
        Tracker(str(tmp_path / "run"), ["wandb"], {})


# ---- 2. a command-line value starting with { or [ that is not YAML --------------------------------


def test_brace_value_is_text_for_strings_and_a_named_error_otherwise(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1", "completion": "2"}])
    # a str option takes the text as typed: a custom template is not YAML (neither valid nor invalid)
    for text in ("{prompt} =>", "{prompt}", "[{prompt}]"):
        assert load_config(SFTConfig, None, ["--dataset_name", data, "--template", text]).template == text
    cfg = load_config(SFTConfig, None, ["--dataset_name", data, "--system_prompt", "[be brief"])
    assert cfg.system_prompt == "[be brief"
    # GRPO has no custom templates: a one-line error naming the key, not a YAML traceback
    err = one_line_error(capsys, ["grpo", "--dataset_name", data, "--template", "{prompt} =>"])
    assert "'template' must be" in err and "'{prompt} =>'" in err
    # list and dict options still read YAML; bad YAML names the flag and what was expected
    cfg = load_config(GRPOConfig, None, ["--dataset_name", data, "--reward_funcs", "[format, accuracy]",
                                         "--reward_weights", "[0.5, 1]", "--rollout_engine_kwargs", "{a: 1}"])
    assert cfg.reward_weights == [0.5, 1.0] and cfg.rollout_engine_kwargs == {"a": 1}
    err = one_line_error(capsys, ["grpo", "--dataset_name", data, "--reward_weights", "[0.5, 1"])
    assert "--reward_weights '[0.5, 1' is not valid YAML" in err and "expected a list" in err
    err = one_line_error(capsys, ["grpo", "--dataset_name", data, "--rollout_engine_kwargs", "{a: [1}"])
    assert "--rollout_engine_kwargs '{a: [1}' is not valid YAML" in err and "expected a mapping" in err
    # the same value as a (quoted) string in a recipe names the key and the file
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"dataset_name: {data}\nreward_weights: '[0.5, 1'\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: 'reward_weights' '\[0\.5, 1' is not valid YAML"):
        load_config(GRPOConfig, str(recipe))


# ---- 3. a missing column names the key of the running command -------------------------------------


def test_missing_column_names_the_commands_key(tmp_path, capsys):
    data = write_jsonl(tmp_path / "q.jsonl", [{"question": "1+1", "answer": "2"}])
    for config in (GRPOConfig, SampleConfig):  # GRPO's and sample's key
        names = {f for f in config.__dataclass_fields__}
        assert {"dataset_prompt_column", "dataset_answer_column"} <= names and "prompt_column" not in names
    with pytest.raises(DataError) as info:
        load_dataset_rows(data)
    msg = str(info.value)
    assert "q.jsonl: no prompt column 'prompt'; available columns: ['question', 'answer']" in msg
    assert "Set dataset_prompt_column" in msg and "Set prompt_column" not in msg
    with pytest.raises(DataError, match="no answer column 'solution'.*Set dataset_answer_column"):
        load_dataset_rows(data, prompt_column="question")
    with pytest.raises(DataError, match="dataset_prompt_column and dataset_answer_column are both 'question'"):
        load_dataset_rows(data, prompt_column="question", answer_column="question")
    # a caller whose config names the columns otherwise passes its keys
    with pytest.raises(DataError, match="Set problem_column"):
        load_dataset_rows(data, column_keys=("problem_column", "solution_column"))
    # through the command line: one line, the file and the key
    err = one_line_error(capsys, ["grpo", "--dataset_name", data, "--output_dir", str(tmp_path / "run")])
    assert "q.jsonl: no prompt column 'prompt'" in err and "Set dataset_prompt_column" in err
    # SFT's keys (messages_column, prompt_column, completion_column, dataset_text_field) are named by SFT
    _, tok = build_tiny()
    with pytest.raises(DataError) as info:
        build_examples([{"question": "1+1", "answer": "2"}], tok, "q.jsonl", max_length=64)
    msg = str(info.value)
    for key in ("messages_column", "prompt_column", "completion_column", "dataset_text_field"):
        assert key in msg and key in SFTConfig.__dataclass_fields__
    assert msg.startswith("q.jsonl:") and "['answer', 'question']" in msg


# ---- 4. "did you mean" only when the key is really close ------------------------------------------


@pytest.mark.parametrize("key, suggestion", [
    ("lerning_rate", "'learning_rate'"),                       # a typo
    ("num_generation", "'num_generations'"),
    ("temprature", "'temperature'"),
    ("maxsteps", "'max_steps'"),
    ("per_device_batch_size", "'per_device_train_batch_size'"),  # a word left out
    ("prompt_column", "'dataset_prompt_column'"),                # a short form (SFT's name in GRPO)
    ("beta1", "'adam_beta1'"),
    ("epochs", "'num_train_epochs'"),
    ("max_length", "'max_prompt_length' or 'max_completion_length'"),
    # (hub_strategy, eval_strategy, save_strategy, push_to_hub, bf16 ... are TRL keys r1kit now knows)
    ("hub_private_repo", None),
    ("hub_token", None),
    ("torch_compile", None),
    ("save_safetensors", None),
    ("eval_steps", None),                                        # not max_steps/save_steps
    ("tf32", None),
    ("lr", None),
])
def test_did_you_mean_only_when_close(key, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(GRPOConfig, None, [f"--{key}", "1", "--dataset_name", "x.jsonl"])
    msg = str(info.value)
    assert msg.startswith(f"command line: unknown key '{key}' for GRPOConfig")
    if suggestion is None:
        assert "did you mean" not in msg
    else:
        assert msg.endswith(f"(did you mean {suggestion}?)")


def test_close_keys_rules():
    names = ["learning_rate", "distributed_strategy", "save_steps", "max_steps"]
    assert close_keys("learning_rat", names) == ["learning_rate"]
    assert close_keys("hub_strategy", names) == []
    assert close_keys("strategy", names) == ["distributed_strategy"]  # all its words are that key's
    assert close_keys("steps", names) == ["max_steps", "save_steps"]  # both have its words: best first
    assert close_keys("anything", []) == []


# ---- 5. SFT on TRL's language-modeling rows: a text column, loss on all tokens --------------------


def test_sft_text_rows_train_on_all_tokens(tmp_path, capsys):
    model0, tok = build_tiny()
    texts = ["The quick brown fox jumps over the lazy dog.", "1 + 1 = 2", "Reasoning is a skill."]
    data = write_jsonl(tmp_path / "lm.jsonl", [{"text": t} for t in texts])
    ids = [tok(t).input_ids + [tok.eos_token_id] for t in texts]  # TRL: the text + EOS, special tokens on
    ex = encode_row({"text": texts[0]}, tok, kind="text")
    assert ex.input_ids == ids[0] and ex.loss_mask == [0] + [1] * (len(ids[0]) - 1)
    # EOS is not doubled; completion_only_loss does not apply to text rows
    ex = encode_row({"text": texts[1] + tok.eos_token}, tok, kind="text", completion_only_loss=True)
    assert ex.input_ids == ids[1]

    out = train(SFTConfig(model_name_or_path="r1kit:tiny", dataset_name=data, max_length=64, max_steps=1,
                          per_device_train_batch_size=3, logging_steps=1, save_steps=0, disable_tqdm=True,
                          output_dir=str(tmp_path / "run")))
    (row,) = read_metrics(out)
    # every token of every text is a target except each text's first (nothing before it predicts it)
    assert row["num_loss_tokens"] == sum(len(i) - 1 for i in ids)
    # the step's loss is the token mean of -log p over all of them, by hand with the same initial model
    with torch.no_grad():
        terms = []
        for i in ids:
            logp = torch.log_softmax(model0(input_ids=torch.tensor([i])).logits[0].double(), -1)
            terms += [logp[t - 1, i[t]].item() for t in range(1, len(i))]
    assert row["loss"] == pytest.approx(-sum(terms) / len(terms), rel=1e-4)

    # another column name with dataset_text_field (TRL's name), from the command line
    other = write_jsonl(tmp_path / "body.jsonl", [{"body": t} for t in texts])
    assert cli_main(["sft", "--dataset_name", other, "--dataset_text_field", "body", "--max_steps", "1",
                     "--per_device_train_batch_size", "3", "--output_dir", str(tmp_path / "run2"), "--disable_tqdm", "true"]) == 0
    assert read_metrics(str(tmp_path / "run2"))[0]["num_loss_tokens"] == sum(len(i) - 1 for i in ids)
    # a bad text row is named by file, row, line and column
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"text": " "}, {"text": 3}])
    capsys.readouterr()
    assert cli_main(["sft", "--dataset_name", bad, "--output_dir", str(tmp_path / "run3")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl: 2 invalid rows" in err
    assert "row 1 (line 2): 'text' is empty" in err and "row 2 (line 3): 'text' is int" in err
