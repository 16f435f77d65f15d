"""Crash-safe checkpoints: written to a temporary folder, fsynced, renamed into place.

Layout of `output_dir/checkpoint-N/`:
  model files       save_pretrained (Hugging Face native: transformers/vLLM load it as is)
  optimizer.pt      optimizer state dict          (loaded with weights_only=True)
  scheduler.pt      LR scheduler state dict       (loaded with weights_only=True)
  rng.pt            torch CPU/CUDA generator states (weights_only=True)
  trainer_state.json  step, data position, Python RNG state, counters, config, data fingerprint;
                      written last, so its presence marks a complete checkpoint
`output_dir/latest` names the newest complete checkpoint; it is replaced atomically (os.replace).
Old checkpoints are deleted only after the new one is committed and the pointer moved.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import torch

from r1kit.utils.io import fsync_dir, write_text_atomic

log = logging.getLogger("r1kit.checkpoint")

STATE_FILE = "trainer_state.json"
POINTER = "latest"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the folder and the reason."""


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def rng_state() -> dict:
    """Every random-number state the loop uses (Python's as JSON-able data, torch's as tensors)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_python_rng_state(state: list) -> None:
    random.setstate((state[0], tuple(state[1]), state[2]))


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a trainer_state.json), oldest first."""
    out = []
    root = Path(output_dir)
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def save_checkpoint(output_dir: str | Path, step: int, *, model, tokenizer, optimizer, scheduler,
                    trainer_state: dict, save_total_limit: int | None = None) -> Path:
    """Write `checkpoint-{step}` atomically, move the `latest` pointer, then rotate old ones."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    state = dict(trainer_state, step=step, python_rng=python_rng_state())
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str))
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step after a resume: swap, never leave a gap
        old = root / f".old-checkpoint-{step}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_dir(root)
    write_text_atomic(root / POINTER, final.name + "\n", fsync=True, tmp_suffix=f".tmp-{os.getpid()}")
    if save_total_limit is not None:
        for n, path in list_checkpoints(root)[:-save_total_limit]:
            if path != final:  # renamed first, so a kill mid-delete never leaves a half checkpoint-N
                trash = root / f".tmp-checkpoint-{n}-deleted"
                shutil.rmtree(trash, ignore_errors=True)
                os.rename(path, trash)
                shutil.rmtree(trash, ignore_errors=True)
    for pattern in (".tmp-checkpoint-*", ".old-checkpoint-*", f".{POINTER}.tmp-*"):  # from runs killed in a save
        for leftover in root.glob(pattern):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
            elif leftover != tmp:
                shutil.rmtree(leftover, ignore_errors=True)
    return final


def find_checkpoint(spec: str, output_dir: str | Path) -> Path:
    """Resolve `resume_from_checkpoint`: a folder, or 'true' for the newest complete one."""
    if spec.lower() not in ("true", "latest"):
        path = Path(spec)
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"{path}: not a complete r1kit checkpoint (no {STATE_FILE})")
        return path
    root = Path(output_dir)
    pointer = root / POINTER
    if pointer.is_file():
        name = pointer.read_text(errors="replace").strip()  # a garbage pointer must not stop the scan
        cand = root / name
        if _CKPT.match(name) and (cand / STATE_FILE).is_file():
            return cand
        log.warning("%s: pointer is damaged or names an incomplete checkpoint (%r); scanning the folder",
                    pointer, name[:80])
    found = list_checkpoints(root)
    if not found:
        raise CheckpointError(f"{root}: resume_from_checkpoint=true but no complete checkpoint is there")
    return found[-1][1]


def load_model_weights(model, ckpt: Path) -> None:
    """Load the weights save_pretrained wrote into the in-memory `model` (full or LoRA)."""
    from safetensors.torch import load_file

    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{ckpt}: no .safetensors weights")
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        return
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if isinstance(getattr(model, "_tied_weights_keys", None), dict):
        tied = set(model._tied_weights_keys)
    real_missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if real_missing or unexpected:
        raise CheckpointError(f"{ckpt}: weights do not match the model (missing {real_missing[:5]}, "
                              f"unexpected {list(unexpected)[:5]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def _load_tensors(path: Path):
    """torch.load with weights_only=True (no arbitrary code from a checkpoint); failures name the file."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # missing, truncated, or holding objects weights_only refuses to build
        raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def load_checkpoint(ckpt: Path, *, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and every RNG; return the trainer state."""
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt / STATE_FILE}: unreadable ({e})") from None
    load_model_weights(model, ckpt)
    optimizer.load_state_dict(_load_tensors(ckpt / "optimizer.pt"))
    scheduler.load_state_dict(_load_tensors(ckpt / "scheduler.pt"))
    rng = _load_tensors(ckpt / "rng.pt")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    set_python_rng_state(state["python_rng"])
    return state


# Options a trainer may change when resuming: they do not change what is trained.
RESUMABLE_CHANGES = frozenset({"max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps",
                               "report_to", "resume_from_checkpoint", "disable_tqdm", "output_dir"})


def check_resume(state: dict, config: dict, fingerprint: str, ckpt: Path, data: str = "dataset (or its template)",
                 also_resumable: frozenset = frozenset()) -> None:
    """Refuse to resume on changed training data or options; the message names what changed."""
    from r1kit.data.datasets import DataError

    if state.get("data_fingerprint") != fingerprint:
        raise DataError(f"{ckpt}: the {data} changed since this checkpoint was written; "
                        f"resume with the same data or start a new output_dir")
    old, free = state.get("config", {}), RESUMABLE_CHANGES | also_resumable
    changed = sorted(k for k in config if k not in free and k in old and old[k] != config[k])
    if changed:
        raise ValueError(f"{ckpt}: options changed since this checkpoint: "
                         + ", ".join(f"{k}: {old[k]!r} -> {config[k]!r}" for k in changed))
