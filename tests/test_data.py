"""Dataset loading/validation and prompt templates (no network)."""

from __future__ import annotations

import json

import pytest

from r1kit.data import DataError, R1_ZERO_TEMPLATE, load_dataset_rows, prompt_ends_with_think, render_prompt, validate_rows
from r1kit.models.tiny import build_tokenizer

ROWS = [
    {"question": "What is 2 + 3?", "answer": "5", "level": 1},
    {"question": "What is 7 * 6?", "answer": "42", "level": 2},
    {"question": "What is 9 - 4?", "answer": "5", "level": 1},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def simple_rows(n=3):
    return [{"prompt": f"What is {i} + 1?", "solution": str(i + 1), "id": i} for i in range(n)]


# ---------------------------------------------------------------------------------------------- loading


def test_jsonl_renames_and_keeps_extra_columns(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", ROWS)
    ds = load_dataset_rows(str(path), prompt_column="question", answer_column="answer")
    assert set(ds.column_names) == {"prompt", "solution", "level"}
    assert len(ds) == 3
    assert ds[0]["prompt"] == "What is 2 + 3?"
    assert ds[1]["solution"] == "42"
    assert ds[1]["level"] == 2
    assert ds[2]["prompt"] == "What is 9 - 4?"


def test_conversation_prompts(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{i} + 1?"}],
             "solution": str(i + 1)} for i in range(3)]
    ds = load_dataset_rows(str(write_jsonl(tmp_path / "chat.jsonl", rows)), prompt_column="messages")
    assert ds[2]["prompt"] == rows[2]["messages"]
    assert ds.column_names == ["prompt", "solution"]


def test_mixed_prompt_kinds_are_reported(tmp_path):
    rows = simple_rows(3)
    rows[2]["prompt"] = [{"role": "user", "content": "Hi"}]
    with pytest.raises(DataError, match="row 2 \\(line 3\\): 'prompt' is a conversation but row 0's is a string"):
        load_dataset_rows(str(write_jsonl(tmp_path / "mixed.jsonl", rows)))


def test_json_array_file_and_num_rows(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(simple_rows(5)), encoding="utf-8")
    ds = load_dataset_rows(str(path), num_rows=2)
    assert ds["solution"] == ["1", "2"]
    assert ds["id"] == [0, 1]


def test_parquet_file(tmp_path):
    from datasets import Dataset

    path = tmp_path / "rows.parquet"
    Dataset.from_list([{"q": r["prompt"], "a": r["solution"], "id": r["id"]} for r in simple_rows(4)]).to_parquet(str(path))
    ds = load_dataset_rows(str(path), prompt_column="q", answer_column="a")
    assert ds.column_names == ["prompt", "solution", "id"]
    assert ds[3]["prompt"] == "What is 3 + 1?" and ds[3]["solution"] == "4"


def test_save_to_disk_folder_and_dataset_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(simple_rows(3)).save_to_disk(str(tmp_path / "single"))
    assert load_dataset_rows(str(tmp_path / "single"))["solution"] == ["1", "2", "3"]

    DatasetDict({"train": Dataset.from_list(simple_rows(3)), "test": Dataset.from_list(simple_rows(1))}).save_to_disk(
        str(tmp_path / "dd"))
    assert len(load_dataset_rows(str(tmp_path / "dd"), split="test")) == 1
    with pytest.raises(DataError, match="no split 'validation'.*train"):
        load_dataset_rows(str(tmp_path / "dd"), split="validation")


def test_folder_of_files_split_by_name(tmp_path):
    write_jsonl(tmp_path / "train-0.jsonl", simple_rows(2))
    write_jsonl(tmp_path / "train-1.jsonl", simple_rows(3))
    write_jsonl(tmp_path / "test.jsonl", simple_rows(1))
    assert len(load_dataset_rows(str(tmp_path))) == 5
    assert len(load_dataset_rows(str(tmp_path), split="test")) == 1
    with pytest.raises(DataError, match="no data files for split 'validation'"):
        load_dataset_rows(str(tmp_path), split="validation")


def test_folder_of_unsplit_files_is_train(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", simple_rows(2))
    write_jsonl(tmp_path / "b.jsonl", simple_rows(2))
    assert len(load_dataset_rows(str(tmp_path))) == 4


def test_missing_path_is_named(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="nope.jsonl: no such file"):
        load_dataset_rows(missing)


def test_procedural_task():
    tasks = pytest.importorskip("r1kit.tasks")
    if not hasattr(tasks, "get_task"):
        pytest.skip("r1kit.tasks.get_task not written yet")
    names = getattr(tasks, "TASKS", None) or getattr(tasks, "list_tasks", lambda: ["arithmetic"])()
    name = sorted(names)[0]
    ds = load_dataset_rows(f"r1kit:{name}", num_rows=8, seed=3)
    assert len(ds) == 8
    assert {"prompt", "solution"} <= set(ds.column_names)
    assert all(isinstance(p, str) and p for p in ds["prompt"])
    assert load_dataset_rows(f"r1kit:{name}", num_rows=8, seed=3)["prompt"] == ds["prompt"]


def test_unknown_task_is_a_data_error():
    pytest.importorskip("r1kit.tasks")
    with pytest.raises(DataError, match="r1kit:no-such-task"):
        load_dataset_rows("r1kit:no-such-task", num_rows=2)


# ---------------------------------------------------------------------------------------------- validation


def bad_file(tmp_path, bad_row, index=7, name="bad.jsonl"):
    rows = simple_rows(10)
    rows[index] = bad_row
    return str(write_jsonl(tmp_path / name, rows))


@pytest.mark.parametrize(
    "bad_row, expected",
    [
        ({"prompt": "What?", "solution": 7}, "row 7 (line 8): 'solution' is int, expected str"),
        ({"prompt": "What?", "solution": None}, "row 7 (line 8): 'solution' is None, expected str"),
        ({"prompt": "What?"}, "row 7 (line 8): 'solution' is None, expected str"),
        ({"prompt": "   ", "solution": "1"}, "row 7 (line 8): 'prompt' is empty"),
        ({"prompt": 12, "solution": "1"}, "row 7 (line 8): 'prompt' is int, expected str or a list"),
        ({"prompt": [{"role": "user"}], "solution": "1"}, "row 7 (line 8): 'prompt' message 0 is dict"),
        ({"prompt": [], "solution": "1"}, "row 7 (line 8): 'prompt' is an empty conversation"),
    ],
)
def test_row_errors_name_file_row_and_field(tmp_path, bad_row, expected):
    path = bad_file(tmp_path, bad_row)
    with pytest.raises(DataError) as info:
        load_dataset_rows(path)
    message = str(info.value)
    assert "bad.jsonl" in message
    assert expected in message


def test_missing_columns_list_available(tmp_path):
    path = str(write_jsonl(tmp_path / "cols.jsonl", ROWS))
    with pytest.raises(DataError) as info:
        load_dataset_rows(path)  # default columns prompt/solution are not there
    assert "cols.jsonl" in str(info.value)
    assert "no prompt column 'prompt'" in str(info.value)
    assert "'question'" in str(info.value) and "'answer'" in str(info.value)
    with pytest.raises(DataError, match="cols.jsonl: no answer column 'solution'"):
        load_dataset_rows(path, prompt_column="question")


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.jsonl: the dataset is empty"):
        load_dataset_rows(str(path))


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "solution": "1"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(DataError, match="broken.jsonl: line 2: invalid JSON"):
        load_dataset_rows(str(path))


def test_parquet_int_answers_are_reported(tmp_path):
    from datasets import Dataset

    path = tmp_path / "ints.parquet"
    Dataset.from_list([{"prompt": "q", "solution": i} for i in range(8)]).to_parquet(str(path))
    with pytest.raises(DataError) as info:
        load_dataset_rows(str(path))
    message = str(info.value)
    assert "ints.parquet: 8 invalid rows (and 3 more)" in message
    assert "row 0: 'solution' is int, expected str" in message


def test_rename_conflict(tmp_path):
    path = write_jsonl(tmp_path / "both.jsonl", [{"prompt": "a", "question": "b", "solution": "1"}])
    with pytest.raises(DataError, match="both.jsonl: cannot rename 'question' to 'prompt'"):
        load_dataset_rows(str(path), prompt_column="question")


def test_validate_rows_on_a_dataset():
    from datasets import Dataset

    ds = Dataset.from_list(simple_rows(3))
    validate_rows(ds, "mem")  # no error
    bad = Dataset.from_list([{"prompt": "a", "solution": "1"}, {"prompt": "", "solution": "2"}])
    with pytest.raises(DataError, match="mem: 1 invalid row:\n  row 1: 'prompt' is empty"):
        validate_rows(bad, "mem")


# ---------------------------------------------------------------------------------------------- templates

PAPER_TEXT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: What is {1, 2} + 3?. Assistant:"
)


def test_r1_zero_exact_text():
    assert render_prompt("What is {1, 2} + 3?", None, "r1_zero") == PAPER_TEXT
    assert R1_ZERO_TEMPLATE.endswith("User: {prompt}. Assistant:")
    conversation = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "What is {1, 2} + 3?"},
    ]
    assert render_prompt(conversation, None, "r1_zero") == PAPER_TEXT


def test_r1_zero_rejects_system_prompt_and_userless_conversation():
    with pytest.raises(ValueError, match="system_prompt is only used with template 'chat'"):
        render_prompt("q", None, "r1_zero", system_prompt="be nice")
    with pytest.raises(ValueError, match="no 'user' message"):
        render_prompt([{"role": "system", "content": "x"}], None, "r1_zero")


def test_chat_template_with_system_prompt():
    tok = build_tokenizer(chat_template=True)
    text = render_prompt("What is 2 + 2?", tok, "chat", system_prompt="Think first.")
    assert text == "<|system|>\nThink first.<|endoftext|>\n<|user|>\nWhat is 2 + 2?<|endoftext|>\n<|assistant|>\n"
    plain = render_prompt("What is 2 + 2?", tok, "chat")
    assert plain == "<|user|>\nWhat is 2 + 2?<|endoftext|>\n<|assistant|>\n"
    conversation = [{"role": "system", "content": "Own."}, {"role": "user", "content": "Hi"}]
    text = render_prompt(conversation, tok, "chat", system_prompt="Think first.")
    assert text == "<|system|>\nOwn.<|endoftext|>\n<|user|>\nHi<|endoftext|>\n<|assistant|>\n"


def test_chat_conversation_from_arrow_drops_none_fields():
    tok = build_tokenizer(chat_template=True)
    messages = [{"role": "user", "content": "Hi", "name": None}]
    assert render_prompt(messages, tok, "chat") == "<|user|>\nHi<|endoftext|>\n<|assistant|>\n"


def test_chat_without_template():
    tok = build_tokenizer(chat_template=False)
    assert render_prompt("What is 2 + 2?", tok, "chat") == "What is 2 + 2?"
    with pytest.raises(ValueError, match="tokenizer has no chat template; use template: r1_zero or a tokenizer with one"):
        render_prompt([{"role": "user", "content": "Hi"}], tok, "chat")


def test_custom_and_unknown_templates():
    assert render_prompt("2+2", None, "Q: {prompt}\nA:") == "Q: 2+2\nA:"
    with pytest.raises(ValueError, match="unknown template 'zero'"):
        render_prompt("2+2", None, "zero")
    with pytest.raises(TypeError):
        render_prompt(3, None, "r1_zero")


def test_prompt_ends_with_think():
    assert prompt_ends_with_think("<|Assistant|><think>\n")
    assert not prompt_ends_with_think(render_prompt("q", None, "r1_zero"))
