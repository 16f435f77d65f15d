"""Small file helpers every layer uses: strict-JSON values and atomic writes.

- `finite_or_none(obj)`: NaN/inf floats -> None, recursively through dicts, lists and tuples (JSON has no
  NaN; a missing value is null).
- `write_text_atomic(path, text)`: written to a hidden temporary file next to `path`, then renamed over
  it, so a reader never sees half a file; `fsync=True` also flushes file and folder to disk.
- `write_jsonl(path, rows)`: one JSON object a line, written atomically the same way.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable


def finite_or_none(obj):
    """`obj` with every non-finite float (NaN, +-inf) replaced by None; dicts, lists and tuples are walked
    (tuples come back as lists, as JSON writes them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, *, fsync: bool = False, tmp_suffix: str = ".tmp"):
    """A text file that replaces `path` only when the block ends without an error: it is written as
    `.<name><tmp_suffix>` in the same folder and renamed over `path` (removed on an error)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{tmp_suffix}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False, tmp_suffix: str = ".tmp") -> Path:
    """Write `text` to `path` atomically (see `atomic_open`); returns `path`."""
    with atomic_open(path, fsync=fsync, tmp_suffix=tmp_suffix) as f:
        f.write(text)
    return Path(path)


def write_jsonl(path: str | Path, rows: Iterable[dict], *, mkdir: bool = True) -> Path:
    """Write `rows` as JSON lines (UTF-8, non-ASCII kept, unknown types as str) to `path`, atomically;
    creates the parent folder unless `mkdir=False`. Returns `path`."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path
