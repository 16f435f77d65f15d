"""Metrics and completion logs: `metrics.jsonl`, `completions/`, and `report_to` trackers.

Only the main process writes; on other ranks every method is a no-op, so the loop never branches
on rank. On resume, lines logged after the checkpoint's step are dropped so the file reads as one
uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

from r1kit.utils.io import finite_or_none

KNOWN_TRACKERS = ("none", "tensorboard", "wandb", "trackio")
# The package (import and pip name) each tracker needs; tensorboard is written by torch.utils.tensorboard.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_trackers(report_to: list[str]) -> None:
    """Raise a ValueError naming `report_to`, the tracker and the pip command for each tracker of
    `report_to` whose package is not installed (checked without importing it), so a run fails at set-up
    instead of with an import error."""
    missing = [r for r in dict.fromkeys(report_to) if r in TRACKER_PACKAGES
               and importlib.util.find_spec(TRACKER_PACKAGES[r]) is None]
    if missing:
        names = " and ".join(missing)
        raise ValueError(f"'report_to' is {list(report_to)} but {names} {'is' if len(missing) == 1 else 'are'} not "
                         f"installed: pip install {' '.join(TRACKER_PACKAGES[m] for m in missing)} (or leave {names} "
                         f"out of report_to)")


class Tracker:
    def __init__(self, output_dir: str, report_to: list[str], config: dict, enabled: bool = True,
                 resume_step: int | None = None, run_name: str | None = None):
        unknown = [r for r in report_to if r not in KNOWN_TRACKERS]
        if unknown:
            raise ValueError(f"'report_to' has unknown tracker(s) {unknown}; choose from {list(KNOWN_TRACKERS)}")
        check_trackers(report_to)
        self.enabled = enabled
        self.dir = Path(output_dir)
        self.backends = []
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "completions").mkdir(exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        for name in report_to:
            try:
                self._start(name, config, run_name)
            except ImportError as e:  # installed, but it (or a dependency of it) does not import
                raise ValueError(f"'report_to' {name}: the {TRACKER_PACKAGES[name]} package does not import "
                                 f"({type(e).__name__}: {e}); reinstall it: pip install -U "
                                 f"{TRACKER_PACKAGES[name]}") from e

    def _start(self, name: str, config: dict, run_name: str | None) -> None:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.backends.append(("tensorboard", SummaryWriter(log_dir=str(self.dir / "runs"))))
        elif name == "wandb":
            import wandb

            wandb.init(config=config, name=run_name, dir=str(self.dir))
            self.backends.append(("wandb", wandb))
        elif name == "trackio":
            import trackio

            trackio.init(project="r1kit", name=run_name, config=config)
            self.backends.append(("trackio", trackio))

    def _truncate_after(self, step: int | None) -> None:
        if step is None or not self.metrics_path.exists():
            if step is None and self.metrics_path.exists():
                self.metrics_path.unlink()  # a fresh run starts a fresh log
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                break  # a line cut by a crash ends the valid log
        self.metrics_path.write_text("".join(k + "\n" for k in keep))

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: finite_or_none(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for name, backend in self.backends:
            finite = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            if name == "tensorboard":
                for k, v in finite.items():
                    backend.add_scalar(k, v, step)
            else:
                backend.log(finite, step=step)

    def log_completions(self, step: int, rows: list[dict]) -> None:
        if not self.enabled:
            return
        path = self.dir / "completions" / f"step-{step:06d}.jsonl"
        with open(path, "w") as f:
            for row in rows:
                f.write(json.dumps({k: finite_or_none(v) for k, v in row.items()}, default=str) + "\n")

    def close(self) -> None:
        for name, backend in self.backends:
            if name == "tensorboard":
                backend.close()
            else:
                backend.finish()


def read_metrics(output_dir: str) -> list[dict]:
    """All rows of `output_dir/metrics.jsonl`."""
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
