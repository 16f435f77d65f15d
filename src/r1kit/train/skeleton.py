"""The skeleton every trainer shares (GRPO, SFT, reward model), so a fix lands once.

A trainer writes only what is its own (data, the loss, its metrics) and calls these in order::

    run = TrainRun(cfg, "sft")                       # runtime + strategy, seeds, output folder
    model, tokenizer = load(...)                     # the trainer's own loader, on run.device
    model = run.prepare_model(model)                 # train mode, checkpointing, rank 0's weights everywhere (fsdp2: sharded)
    run.start(model, tokenizer, num_rows=..., total_steps=..., fingerprint=..., data="dataset")
                                                     # AdamW + schedule, data order, resume checks, tracking
    for step in run.steps():                         # optimizer updates (TRL's global steps)
        rows = run.sampler.next(cfg.batch_size)      # this rank's rows
        ... forward / backward ...
        grad_norm = run.update(step)                 # average over ranks, clip, AdamW (skips non-finite)
        run.end_step(step, metrics)                  # log, progress bar, checkpoint cadence
    run.finish(extra_files)                          # the final save_pretrained folder

Collectives happen inside these calls on every rank; only file writes are the main process's, and
they are decided here, so no trainer branches on rank. A trainer whose data outlives one step (GRPO:
a generation batch makes several optimizer updates) sets `run.in_flight` to a function returning what a
resume needs; every checkpoint carries it (`IN_FLIGHT_FILE`, one part per rank) and
`run.resumed_in_flight()` returns it.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from r1kit.config import to_dict
from r1kit.diagnose.monitor import Monitor
from r1kit.models.loading import enable_activation_checkpointing, save_model
from r1kit.train.checkpoint import (STATE_FILE, CheckpointError, _load_tensors, check_resume, find_checkpoint,
                                    load_checkpoint, save_checkpoint)
from r1kit.train.optim import apply_update, make_optimizer
from r1kit.train.sampler import PromptSampler
from r1kit.train.tracking import Tracker, read_metrics
from r1kit.train.trl_args import resolve_steps
from r1kit.train.trl_semantics import notice_default_differences
from r1kit.utils.dist import Runtime
from r1kit.utils.threads import CpuThreads

log = logging.getLogger("r1kit.train")

IN_FLIGHT_FILE = "in_flight.pt"  # a checkpoint's data in flight (GRPO: the generation batch being trained on)


@dataclass
class TrainState:
    """The counters a checkpoint carries besides weights, optimizer, schedule and RNG states."""

    step: int = 0  # last completed step
    num_tokens: int = 0  # prompt + completion (or input) tokens seen, all ranks
    skipped_steps: int = 0  # optimizer updates skipped for a non-finite gradient norm
    sampler: dict = field(default_factory=dict)  # PromptSampler.state_dict()
    reward_errors: dict[str, int] = field(default_factory=dict)  # GRPO: rows each reward function failed on

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "TrainState":
        """The counters out of a checkpoint's trainer_state.json (which also holds config and RNG)."""
        return cls(**{k: saved[k] for k in cls.__dataclass_fields__ if k in saved})


class TrainRun:
    """One training run's shared machinery: runtime, model preparation, optimizer, resume, tracking,
    checkpoints and the final save. `cfg` is any config with TrainingArgs' fields."""

    def __init__(self, cfg, name: str, also_resumable: frozenset = frozenset()):
        self.cfg, self.name, self.also_resumable = cfg, name, also_resumable
        self.rt = Runtime.create(strategy=cfg.distributed_strategy)
        torch.manual_seed(cfg.seed + self.rt.rank)
        random.seed(cfg.seed + self.rt.rank)
        self.out = Path(cfg.output_dir)
        self.state = TrainState()
        self._full_is_current = True  # the fsdp2 full copy holds the latest weights
        self.in_flight: Callable[[], dict] | None = None  # this rank's data a resume after a checkpoint needs
        self.resumed_from: Path | None = None
        # CPU runs: torch's threads follow the free cores (utils/threads.py); GPU runs leave torch alone
        self.threads = CpuThreads(getattr(cfg, "cpu_threads", 0)) if self.device.type == "cpu" else None
        if self.rt.is_main:
            notice_default_differences(name, cfg)  # once per option: r1kit's default where TRL's differs

    @property
    def device(self) -> torch.device:
        return self.rt.device

    # ---- set-up ------------------------------------------------------------------------------------

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Train mode, activation checkpointing if asked, then data parallel (rank 0's weights on every
        rank, LoRA adapters included; fsdp2: sharded). Build anything that must copy the unsharded model
        (a reference model) before this call."""
        model.train()
        if self.cfg.gradient_checkpointing:
            enable_activation_checkpointing(model)
        self.model = self.rt.prepare_model(model)
        return self.model

    def start(self, tokenizer, *, num_rows: int, total_steps: int, fingerprint: str, data: str,
              shared_order: bool = False) -> None:
        """Optimizer and schedule (over `total_steps` optimizer updates), this rank's data order, resume (when
        asked), tracking, progress bar. Each rank draws its own share of every epoch's row order, or
        (`shared_order`) every rank the same rows (GRPO groups that span processes)."""
        cfg = self.cfg
        resolve_steps(cfg, total_steps)  # TRL's save_steps fraction, epoch strategies, log_level (trl_args.py)
        self.tokenizer, self.total_steps, self.fingerprint = tokenizer, total_steps, fingerprint
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = make_optimizer(self.params, cfg, total_steps)
        rank, world = (0, 1) if shared_order else (self.rt.rank, self.rt.world_size)
        self.sampler = PromptSampler(num_rows, cfg.seed, rank, world)
        if cfg.resume_from_checkpoint:
            self.rt.check_resumable()
            ckpt = find_checkpoint(cfg.resume_from_checkpoint, self.out)
            saved = load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
            check_resume(saved, to_dict(cfg), fingerprint, ckpt, data, self.also_resumable)
            self.state = TrainState.from_checkpoint(saved)
            self.sampler.load_state_dict(self.state.sampler)
            self._full_is_current = False
            self.resumed_from = ckpt
            log.info("%s: resumed from %s at step %d", self.name, ckpt, self.state.step)
        self.state.sampler = self.sampler.state_dict()
        self.tracker = Tracker(str(self.out), cfg.report_to, to_dict(cfg), enabled=self.rt.is_main,
                               resume_step=self.state.step if cfg.resume_from_checkpoint else None)
        # `r1kit doctor`'s rules, live: one warning the first time each problem shows (main process)
        self.monitor = Monitor(to_dict(cfg) | {"world_size": self.rt.world_size}) if self.rt.is_main else None
        if self.monitor is not None and cfg.resume_from_checkpoint and (self.out / "metrics.jsonl").is_file():
            self.monitor.replay(read_metrics(str(self.out)))  # the rows before the resume, without re-warning
        self.bar = tqdm(total=total_steps, initial=self.state.step, disable=cfg.disable_tqdm or not self.rt.is_main,
                        desc=self.name, dynamic_ncols=True)

    def steps(self) -> Iterator[int]:
        """The steps (optimizer updates) still to run: 1..total_steps, or from the resumed step on. Before each,
        a CPU run re-chooses its thread count from the cores other processes leave free."""
        for step in range(self.state.step + 1, self.total_steps + 1):
            if self.threads is not None:
                self.threads.adapt()
            yield step

    def resumed_in_flight(self) -> dict | None:
        """This rank's `in_flight` data of the checkpoint the run resumed from, or None (no resume, or the
        checkpoint was written with nothing in flight)."""
        if self.resumed_from is None or not (self.resumed_from / IN_FLIGHT_FILE).is_file():
            return None
        parts = _load_tensors(self.resumed_from / IN_FLIGHT_FILE)["ranks"]
        if len(parts) != self.rt.world_size:
            raise CheckpointError(f"{self.resumed_from}: written by {len(parts)} process(es) with data in flight; "
                                 f"resume it with as many (now {self.rt.world_size})")
        return parts[self.rt.rank]

    # ---- each step ----------------------------------------------------------------------------------

    def update(self, step: int) -> float:
        """After the micro-batches' backward passes: average gradients over ranks, clip the global norm,
        AdamW + schedule (an update with a non-finite norm is skipped and counted). Returns the norm."""
        self.rt.all_reduce_grads(self.model)
        grad_norm = self.rt.clip_grad_norm(self.params, self.cfg.max_grad_norm)
        if not apply_update(self.optimizer, self.scheduler, grad_norm, step):
            self.state.skipped_steps += 1
        self._full_is_current = False
        return grad_norm

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def full_model(self) -> torch.nn.Module:
        """The model with full, current weights (fsdp2: gathered into the rollout copy, a collective every
        rank must call; otherwise the model itself)."""
        if not self._full_is_current:
            self.rt.gather_full(self.model)
            self._full_is_current = True
        return self.rt.unwrap(self.model)

    def sync_engine(self, engine) -> None:
        """The rollout engine samples from the current weights from now on (every rank calls this)."""
        engine.update_weights(self.full_model())

    def end_step(self, step: int, metrics: dict, postfix: dict, force_log: bool = False,
                 completions: list[dict] | None = None) -> None:
        """Log `metrics` every `logging_steps`, at the last step and when `force_log`, and check them with
        the doctor's rules (with the step's logged `completions`, if any); show `postfix` on the progress
        bar; record the data position; checkpoint every `save_steps` and at the last step."""
        cfg = self.cfg
        if step % cfg.logging_steps == 0 or step == self.total_steps or force_log:
            self.tracker.log(step, metrics)
            if self.monitor is not None:
                self.monitor.observe(step, metrics, completions)
        self.bar.set_postfix(postfix)
        self.bar.update(1)
        self.state.step = step
        self.state.sampler = self.sampler.state_dict()
        if (cfg.save_steps > 0 and step % cfg.save_steps == 0) or step == self.total_steps:
            self.checkpoint(step)

    def checkpoint(self, step: int) -> Path:
        """Write `checkpoint-{step}` (main process) after gathering full weights (every process), with every
        rank's `in_flight` data when there is some."""
        full = self.full_model()
        path = self.out / f"checkpoint-{step}"
        tokenizer = self.tokenizer
        if self.in_flight is not None:  # every rank has some or none: the gather is collective
            parts = self.rt.gather_objects(self.in_flight())
            tokenizer = _SavesAlso(self.tokenizer, {IN_FLIGHT_FILE: {"step": step, "ranks": parts}})
        if self.rt.is_main:
            save_checkpoint(self.out, step, model=full, tokenizer=tokenizer, optimizer=self.optimizer,
                            scheduler=self.scheduler, save_total_limit=self.cfg.save_total_limit,
                            trainer_state=dict(asdict(self.state), config=to_dict(self.cfg),
                                               data_fingerprint=self.fingerprint))
        self.rt.barrier()
        return path

    def checkpoint_last_completed(self, step: int) -> str:
        """Before stopping during `step`: make sure the last completed step is checkpointed; say where."""
        done = step - 1
        missing = self.rt.is_main and done > 0 and not (self.out / f"checkpoint-{done}" / STATE_FILE).is_file()
        if self.rt.max(float(missing)):  # the main process decides; every rank joins the gather
            self.checkpoint(done)
        return f"{self.out / f'checkpoint-{done}'} holds step {done}" if done > 0 else \
            "no step had completed, so there was nothing to checkpoint"

    # ---- the end ------------------------------------------------------------------------------------

    def finish(self, extra_files: dict[str, dict] | None = None) -> Path:
        """Close the trackers; save the final model (save_pretrained), `r1kit_config.json` and any
        `extra_files` (name -> JSON object) into output_dir. Returns output_dir."""
        self.bar.close()
        self.tracker.close()
        if self.threads is not None:
            self.threads.restore()
        full = self.full_model()
        if self.rt.is_main:
            save_model(full, self.tokenizer, self.out)
            files = {"r1kit_config.json": to_dict(self.cfg), **(extra_files or {})}
            for name, obj in files.items():
                (self.out / name).write_text(json.dumps(obj, indent=1))
        self.rt.barrier()
        return self.out


class _SavesAlso:
    """The tokenizer as `save_checkpoint` saves it, writing `files` (name -> object for torch.save) into the
    same temporary folder: they are fsynced and committed by the checkpoint's one atomic rename."""

    def __init__(self, tokenizer, files: dict[str, object]):
        self.tokenizer, self.files = tokenizer, files

    def save_pretrained(self, folder) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        for name, obj in self.files.items():
            torch.save(obj, Path(folder) / name)
