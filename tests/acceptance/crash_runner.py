"""A process that runs tiny GRPO jobs for test_checkpoints.py, so they can be killed with SIGKILL.

It imports torch, transformers and r1kit once (seconds), then forks one child per job read from
stdin, so every job is a real process to `kill -9` without paying the imports again. Nothing has
run in torch before a fork, so forking is safe here.

Protocol, one JSON line per job on stdin: {"cfg": {GRPOConfig fields}, "stall": PHASE | null,
"stall_step": N}. For each job it prints "pid <child pid>" and, when the child ends (or is
killed), "exit <wait status>". With a stall, the child writes "<output_dir>.stalled" when it
reaches PHASE of the save of checkpoint-N, then sleeps until killed. Phases:
  write    tmp folder half written (weights and optimizer, no rng.pt or trainer_state.json)
  rename   tmp folder complete and fsynced, not yet renamed to checkpoint-N
  pointer  checkpoint-N renamed into place, the new pointer written to a tmp file, `latest` still
           naming the previous checkpoint
  rotate   `latest` moved, an old checkpoint half deleted by save_total_limit
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

import r1kit.train.checkpoint as ck
import r1kit.train.grpo as grpo
import r1kit.train.skeleton as skeleton
from r1kit.train.grpo_config import GRPOConfig


def install_stall(out: str, phase: str, stall_step: int) -> None:
    saving = {"step": None}

    def stall():
        if saving["step"] == stall_step:
            Path(out + ".stalled").write_text(phase)
            while True:
                time.sleep(60)

    def wrap(obj, name, before=None, after=None):
        real = getattr(obj, name)

        def wrapper(*args, **kw):
            if before:
                before(*args, **kw)
            result = real(*args, **kw)
            if after:
                after(*args, **kw)
            return result

        setattr(obj, name, wrapper)

    def note_step(root, step, **kw):
        saving["step"] = step

    wrap(skeleton, "save_checkpoint", before=note_step)
    if phase == "write":
        wrap(ck, "rng_state", before=lambda: stall())
    elif phase == "rename":
        wrap(ck, "_fsync_tree", after=lambda path: stall())
    elif phase == "pointer":  # the new pointer is in its tmp file, not yet os.replace'd over `latest`
        wrap(os, "replace", before=lambda src, dst: stall() if Path(dst).name == ck.POINTER else None)
    elif phase == "rotate":
        def half_delete(path, *a, **kw):
            path = Path(path)
            if path.name.endswith("-deleted") and path.is_dir():
                next(iter(sorted(path.glob("*.safetensors")))).unlink()
                stall()
        wrap(shutil, "rmtree", before=half_delete)
    else:
        raise ValueError(phase)


def run_job(job: dict) -> None:
    torch.set_num_threads(1)
    out = job["cfg"]["output_dir"]
    if job.get("stall"):
        install_stall(out, job["stall"], job["stall_step"])
    grpo.train(GRPOConfig(**job["cfg"]))


def main() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in iter(sys.stdin.readline, ""):
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.dup2(2, 1)  # stdout is this protocol's channel: the job's prints go to stderr
            code = 0
            try:
                run_job(job)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exit {status}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
