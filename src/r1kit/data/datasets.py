"""Load prompt/answer datasets from files, folders, procedural tasks or the hub, and validate them.

Every loader returns a `datasets.Dataset` whose prompt column is named `prompt` and whose answer
column is named `solution`; all other columns are kept because reward functions receive them.
Rows are checked before training starts so that a bad row fails with its file, row and field named
instead of as a crash in the middle of a run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

TASK_PREFIX = "r1kit:"
# Rows generated for a procedural task when `num_rows` is not given.
DEFAULT_TASK_ROWS = {"train": 1000, "test": 200}
# How many individual row errors one DataError lists before summarising the rest.
MAX_REPORTED_ERRORS = 5

# The config keys that name the prompt and answer columns: GRPOConfig's and SampleConfig's; a caller whose
# config calls them otherwise (eval's problem_column/solution_column) passes its own as `column_keys`.
COLUMN_KEYS = ("dataset_prompt_column", "dataset_answer_column")

_JSON_SUFFIXES = (".jsonl", ".json")
_PARQUET_SUFFIXES = (".parquet",)


class DataError(ValueError):
    """A dataset cannot be used for training; the message names the source, row and field."""


# ----------------------------------------------------------------------------------------------
# Validation


def type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _prompt_problem(value: Any, field: str) -> str | None:
    """Why `value` is not a usable prompt, or None when it is one."""
    if isinstance(value, str):
        return f"{field!r} is empty" if not value.strip() else None
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            return f"{field!r} is an empty conversation"
        for j, message in enumerate(value):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                return (f"{field!r} message {j} is {type_name(message)}, expected a "
                        "{'role': ..., 'content': ...} message")
            if not isinstance(message["role"], str) or not isinstance(message["content"], str):
                return (f"{field!r} message {j} needs string 'role' and 'content' "
                        f"(got {type_name(message['role'])} and {type_name(message['content'])})")
        if not any(m["content"].strip() for m in value):
            return f"{field!r} conversation has only empty messages"
        return None
    return f"{field!r} is {type_name(value)}, expected str or a list of {{role, content}} messages"


def _answer_problem(value: Any, field: str) -> str | None:
    if isinstance(value, str):
        return None
    return f"{field!r} is {type_name(value)}, expected str"


def _column_names(rows: Any) -> list[str]:
    if hasattr(rows, "column_names"):
        return list(rows.column_names)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


def _column(rows: Any, name: str) -> Iterable[Any]:
    if hasattr(rows, "column_names"):
        return rows[name]
    return (row.get(name) for row in rows)


class RowProblems:
    """Collects per-row problems of a data source; `raise_if_any()` raises one DataError that counts
    them all and lists the first MAX_REPORTED_ERRORS ("row 7 (line 8): ...")."""

    def __init__(self, source: str, line_numbers: Sequence[int] | None = None):
        self.source, self.lines = source, line_numbers
        self.problems: list[str] = []
        self.count = 0

    def add(self, i: int, problem: str) -> None:
        self.count += 1
        if len(self.problems) < MAX_REPORTED_ERRORS:
            where = f"row {i}" if self.lines is None else f"row {i} (line {self.lines[i]})"
            self.problems.append(f"{where}: {problem}")

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        more = f" (and {self.count - len(self.problems)} more)" if self.count > len(self.problems) else ""
        header = f"{self.source}: {self.count} invalid row{'s' if self.count != 1 else ''}{more}"
        raise DataError(header + ":\n  " + "\n  ".join(self.problems))


def validate_rows(
    rows: Any,
    source: str,
    *,
    prompt_column: str = "prompt",
    answer_column: str = "solution",
    line_numbers: Sequence[int] | None = None,
    column_keys: tuple[str, str] = COLUMN_KEYS,
) -> None:
    """Raise `DataError` unless every row has a usable prompt and a string answer.

    `rows` is a `datasets.Dataset` or a list of dicts. Row numbers in messages are 0-based indices
    (`ds[7]` is "row 7"); pass `line_numbers` (1-based, one per row) to also name the file line.
    `column_keys` are the config keys that set the two columns, named when a column is missing.
    """
    if len(rows) == 0:
        raise DataError(f"{source}: the dataset is empty (no rows)")
    columns = _column_names(rows)
    for column, what, key in ((prompt_column, "prompt", column_keys[0]), (answer_column, "answer", column_keys[1])):
        if column not in columns:
            raise DataError(f"{source}: no {what} column {column!r}; available columns: {columns}. "
                            f"Set {key} to the column that holds the {what}s.")
    report = RowProblems(source, line_numbers)
    first_kind: tuple[int, str] | None = None  # (row, "a string" | "a conversation") of the first prompt

    def prompt_check(value: Any, field: str, i: int) -> str | None:
        nonlocal first_kind
        problem = _prompt_problem(value, field)
        if problem is not None:
            return problem
        kind = "a string" if isinstance(value, str) else "a conversation"
        if first_kind is None:
            first_kind = (i, kind)
        elif kind != first_kind[1]:
            return (f"{field!r} is {kind} but row {first_kind[0]}'s is {first_kind[1]}; "
                    "all prompts of a dataset must be strings or all conversations")
        return None

    checks = (
        (prompt_column, prompt_check),
        (answer_column, lambda value, field, i: _answer_problem(value, field)),
    )
    for column, check in checks:
        for i, value in enumerate(_column(rows, column)):
            problem = check(value, column, i)
            if problem is not None:
                report.add(i, problem)
    report.raise_if_any()


# ----------------------------------------------------------------------------------------------
# Readers


def _read_json_lines(path: Path) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type_name(row)}")
            rows.append(row)
            lines.append(lineno)
    return rows, lines


def read_json_file(path: Path) -> tuple[list[dict], list[int] | None]:
    """A `.jsonl` file, or a `.json` file holding either a list of objects or JSON lines."""
    if path.suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # maybe JSON lines with a .json name
        if isinstance(data, list):
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise DataError(f"{path}: item {i}: expected a JSON object, got {type_name(row)}")
            return data, None
        if isinstance(data, dict):
            raise DataError(f"{path}: expected a list of row objects or JSON lines, got one JSON object")
    return _read_json_lines(path)


def _rows_to_dataset(rows: list[dict], source: str):
    from datasets import Dataset

    try:
        return Dataset.from_list(rows)
    except Exception as e:  # arrow type clashes in columns that were not validated
        raise DataError(f"{source}: cannot build a table from the rows ({type(e).__name__}: {e})") from e


def _load_file(path: Path, prompt_column: str, answer_column: str, column_keys: tuple[str, str]):
    source = str(path)
    if path.suffix in _JSON_SUFFIXES:
        rows, lines = read_json_file(path)
        # Validate the raw rows first: arrow cannot even build a column mixing str and int answers.
        validate_rows(rows, source, prompt_column=prompt_column, answer_column=answer_column, line_numbers=lines,
                      column_keys=column_keys)
        return _rows_to_dataset(rows, source)
    if path.suffix in _PARQUET_SUFFIXES:
        from datasets import Dataset

        return Dataset.from_parquet(source)
    raise DataError(f"{source}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")


def split_files(folder: Path, split: str) -> list[Path]:
    """The .jsonl/.json/.parquet files of `folder` whose names start with `split`; a folder whose files
    name no split at all is the train split."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _JSON_SUFFIXES + _PARQUET_SUFFIXES)
    if not files:
        return []
    named = [p for p in files if p.name.startswith(split)]
    if named:
        return named
    known = ("train", "test", "validation", "val", "eval", "dev")
    if any(p.name.startswith(k) for p in files for k in known):
        return []  # the folder is split by file name and this split is not there
    return files if split == "train" else []


def load_saved_split(folder: Path, split: str):
    """`split` of a `save_to_disk` folder (a Dataset or a DatasetDict), or None for any other folder."""
    if not ((folder / "dataset_info.json").exists() or (folder / "dataset_dict.json").exists()):
        return None
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(folder))
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(f"{folder}: no split {split!r}; available splits: {list(ds)}")
        ds = ds[split]
    return ds


def _load_folder(folder: Path, split: str, prompt_column: str, answer_column: str, column_keys: tuple[str, str]):
    from datasets import concatenate_datasets

    saved = load_saved_split(folder, split)
    if saved is not None:
        return saved
    files = split_files(folder, split)
    if not files:
        raise DataError(
            f"{folder}: no data files for split {split!r} (looked for .jsonl/.json/.parquet files, "
            f"named '{split}*' when the folder is split by file name), and not a save_to_disk folder"
        )
    parts = [_load_file(p, prompt_column, answer_column, column_keys) for p in files]
    if len(parts) == 1:
        return parts[0]
    try:
        return concatenate_datasets(parts)
    except Exception as e:
        raise DataError(f"{folder}: the files {[p.name for p in files]} have different columns or types: {e}") from e


def _load_task(task_name: str, split: str, num_rows: int | None, seed: int):
    from datasets import Dataset

    try:
        from r1kit.tasks import get_task
    except ImportError as e:
        raise DataError(f"r1kit:{task_name}: procedural tasks are unavailable ({e})") from e
    try:
        task = get_task(task_name)
    except KeyError as e:
        raise DataError(f"r1kit:{task_name}: unknown task ({e})") from e
    except (ImportError, ValueError, TypeError) as e:
        raise DataError(f"r1kit:{task_name}: cannot create the task ({type(e).__name__}: {e})") from e
    n = num_rows if num_rows is not None else DEFAULT_TASK_ROWS.get(split, DEFAULT_TASK_ROWS["test"])
    return Dataset.from_list(task.dataset(split, n, seed))


def load_hub(name: str, split: str, dataset_config: str | None):
    """A Hugging Face Hub dataset split (or DataError naming it)."""
    from datasets import load_dataset

    try:
        return load_dataset(name, dataset_config, split=split)
    except FileNotFoundError as e:
        raise DataError(f"{name}: not a local file or folder, and not found on the hub ({e})") from e


# ----------------------------------------------------------------------------------------------
# Entry point


def looks_like_path(name: str) -> bool:
    """True for names meant as local files/folders (so a missing one is not looked up on the Hub)."""
    return (
        name.startswith((".", "/", "~"))
        or name.endswith(_JSON_SUFFIXES + _PARQUET_SUFFIXES)
        or name.count("/") > 1
        or "\\" in name
    )


def load_dataset_rows(
    dataset_name: str,
    split: str = "train",
    *,
    prompt_column: str = "prompt",
    answer_column: str = "solution",
    dataset_config: str | None = None,
    num_rows: int | None = None,
    seed: int = 0,
    column_keys: tuple[str, str] = COLUMN_KEYS,
):
    """Load a dataset as a `datasets.Dataset` with `prompt` and `solution` columns plus the others.

    `dataset_name` is a `.jsonl`/`.json`/`.parquet` file, a folder (a `save_to_disk` output or a
    folder of such files; files named `train*`/`test*` select the split), `r1kit:TASK` (a
    procedural task; `num_rows` rows generated with `seed`), or a hub id. A single file is the whole
    dataset: `split` does not apply to it. `num_rows` keeps the first rows (no shuffling; the
    trainer shuffles). Raises `DataError` naming the source, row and field of any bad row, and for a
    missing column the config key that sets it (`column_keys`: the prompt's and the answer's).
    """
    if dataset_name.startswith(TASK_PREFIX):
        source = dataset_name
        ds = _load_task(dataset_name[len(TASK_PREFIX):], split, num_rows, seed)
        prompt_column, answer_column = "prompt", "solution"  # the task contract fixes the names
    else:
        path = Path(os.path.expanduser(dataset_name))
        source = str(path)
        if path.is_file():
            ds = _load_file(path, prompt_column, answer_column, column_keys)
        elif path.is_dir():
            ds = _load_folder(path, split, prompt_column, answer_column, column_keys)
        elif looks_like_path(dataset_name):
            raise DataError(f"{dataset_name}: no such file or folder")
        else:
            source = dataset_name
            ds = load_hub(dataset_name, split, dataset_config)

    if num_rows is not None:
        if num_rows <= 0:
            raise DataError(f"{source}: num_rows must be positive, got {num_rows}")
        ds = ds.select(range(min(num_rows, len(ds))))
    validate_rows(ds, source, prompt_column=prompt_column, answer_column=answer_column, column_keys=column_keys)
    return _rename_columns(ds, source, prompt_column, answer_column, column_keys)


def _rename_columns(ds, source: str, prompt_column: str, answer_column: str, column_keys: tuple[str, str]):
    if prompt_column == answer_column:
        raise DataError(f"{source}: {column_keys[0]} and {column_keys[1]} are both {prompt_column!r}")
    mapping = {old: new for old, new in ((prompt_column, "prompt"), (answer_column, "solution")) if old != new}
    for old, new in mapping.items():
        if new in ds.column_names and new not in mapping:
            raise DataError(
                f"{source}: cannot rename {old!r} to {new!r}: a {new!r} column already exists; "
                f"rename or drop it, or set {column_keys[0] if new == 'prompt' else column_keys[1]} to {new!r}"
            )
    return ds.rename_columns(mapping) if mapping else ds
