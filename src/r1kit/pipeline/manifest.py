"""Stage manifests: what a stage read (hashed), what it wrote (hashed), so a re-run can skip it.

`output_dir/<stage>/manifest.json`:
  stage, status ("running" | "done" | "failed"), input_sha256 (one digest of all inputs), inputs
  (config_sha256, the upstream stages' output digests, the base model's digest, r1kit's version),
  config (the resolved config the command ran with), outputs ({relative path: sha256, size}),
  output_sha256, metrics (a summary), wall_s, started/finished times, error (when failed),
  eval ({config_sha256, results, wall_s}).
A finished stage is skipped when its input digest is unchanged and its recorded outputs are still on disk
with their recorded sizes (a file whose size or mtime differs is re-hashed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from r1kit.utils.io import write_text_atomic

MANIFEST = "manifest.json"
# files of a model folder that are not part of the model (logs, paths) and never hashed
_NOT_MODEL = {"metrics.jsonl", "r1kit_config.json"}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def normalize_paths(obj, output_dir: str):
    """`obj` with the pipeline's output_dir prefix in strings written as $OUT (hashes do not depend on it)."""
    if isinstance(obj, str):
        return obj.replace(output_dir, "$OUT") if output_dir else obj
    if isinstance(obj, dict):
        return {k: normalize_paths(v, output_dir) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [normalize_paths(v, output_dir) for v in obj]
    return obj


def model_files(folder: str | Path) -> list[Path]:
    """The top-level files of a saved model folder (weights, configs, tokenizer), not logs or checkpoints."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_MODEL)


def hash_files(files: list[Path], root: Path) -> dict[str, dict]:
    out = {}
    for f in files:
        st = f.stat()
        out[str(f.relative_to(root))] = {"sha256": file_sha256(f), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return out


def digest_of(outputs: dict[str, dict]) -> str:
    return json_sha256({k: v["sha256"] for k, v in outputs.items()})


def model_digest(name_or_path: str) -> str:
    """Digest of a model given by name: its files when it is a folder (or a shipped model), else the name."""
    from r1kit.models.loading import shipped_model_path

    folder = shipped_model_path(name_or_path)  # None unless a shipped model (r1kit:tiny-base)
    path = Path(folder or os.path.expanduser(name_or_path))
    if path.is_dir():
        return "files:" + digest_of(hash_files(model_files(path), path))
    if path.is_file():
        return "file:" + file_sha256(path)
    return "name:" + name_or_path  # a built-in (r1kit:tiny is built from a fixed seed) or a hub id


def read_manifest(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_manifest(stage_dir: Path, manifest: dict) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stage_dir / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")


def outputs_intact(stage_dir: Path, outputs: dict[str, dict]) -> bool:
    """Every recorded output still exists with its recorded content (re-hashed only when size/mtime moved)."""
    for rel, rec in outputs.items():
        p = stage_dir / rel
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_size != rec["size"]:
            return False
        if st.st_mtime_ns != rec.get("mtime_ns") and file_sha256(p) != rec["sha256"]:
            return False
    return True
