"""`r1kit doctor RUN_DIR`: what a run's logs say is wrong, in plain words, and what to try.

Reads the run folder a trainer wrote (`r1kit grpo`, `r1kit sft`, `r1kit rm`, or a stage of `r1kit demo` /
`r1kit pipeline`): `metrics.jsonl`, `completions/step-*.jsonl` if logged, and `r1kit_config.json` if the
run finished; any of them may be missing (a run still going, a crashed one, one copied without its
completions) and the rules that need it are skipped. A folder without `metrics.jsonl` is searched for run
folders below it (`runs/demo` holds `model/`; a pipeline's output holds one per stage).

Each finding names its rule, severity, the metric and the steps that show it, and what to try; `--json`
prints them as one JSON list. Exit status: 0 when no problem is found, 1 when one is (so a script or CI
job can stop on it); a folder with no run in it is an error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import field
from r1kit.diagnose.rules import Diagnosis, Finding, completion_stats

METRICS, CONFIG, COMPLETIONS = "metrics.jsonl", "r1kit_config.json", "completions"
_STEP_FILE = re.compile(r"step-(\d+)\.jsonl$")
SEARCH_DEPTH = 3  # how deep below RUN_DIR run folders are looked for


@dataclass
class DoctorConfig:
    run_dir: str = field("", help="A run's output_dir (metrics.jsonl, completions/, r1kit_config.json), or a folder "
                                  "with runs below it (a demo's or a pipeline's output).")
    json: bool = field(False, help="Print the findings as one JSON list instead of text.")


@dataclass
class RunReport:
    """One run folder's findings, and what the doctor could read there."""

    path: Path
    kind: str  # "GRPO", "SFT", "reward model" or "unknown"
    steps: list[int]
    completion_steps: int
    has_config: bool
    findings: list[Finding]

    def text(self) -> str:
        span = f" ({self.steps[0]}-{self.steps[-1]})" if self.steps else ""
        read = [f"{len(self.steps)} metric rows{span}"]
        if self.completion_steps:
            read.append(f"completions of {self.completion_steps} steps")
        if not self.has_config:
            read.append(f"no {CONFIG} (a run that has not finished?)")
        head = f"{self.path}: {self.kind} run, {', '.join(read)}"
        if not self.findings:
            return f"{head}\n  no problems found"
        n = len(self.findings)
        body = "\n\n".join("  " + f.text().replace("\n", "\n  ") for f in self.findings)
        return f"{head}\n  {n} problem{'s' if n > 1 else ''} found:\n\n{body}"


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file; a line cut by a crash (the last one) ends it."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(row, dict):
                rows.append(row)
    return rows


def run_kind(rows: list[dict], config: dict) -> str:
    keys = set().union(*rows) if rows else set()
    if "frac_reward_zero_std" in keys or "num_generations" in config:
        return "GRPO"
    if "mean_token_accuracy" in keys or "packing" in config:
        return "SFT"
    if "margin" in keys:
        return "reward model"
    return "unknown"


def diagnose_run(run_dir: str | Path) -> RunReport:
    """Every rule over the run in `run_dir` (which holds metrics.jsonl), row by row as in training."""
    path = Path(run_dir)
    by_step: dict[int, dict] = {}
    for row in read_jsonl(path / METRICS):
        if isinstance(row.get("step"), int):
            by_step[row["step"]] = row  # a step logged twice (resumed without truncation): the last one
    config = {}
    if (path / CONFIG).is_file():
        try:
            config = json.loads((path / CONFIG).read_text())
        except json.JSONDecodeError:
            config = {}
    files = {}
    if (path / COMPLETIONS).is_dir():
        for f in (path / COMPLETIONS).iterdir():
            m = _STEP_FILE.search(f.name)
            if m:
                files[int(m.group(1))] = f
    diagnosis = Diagnosis(config if isinstance(config, dict) else {})
    steps = sorted(by_step)
    for step in steps:
        completions = completion_stats(read_jsonl(files[step])) if step in files else None
        diagnosis.add(step, by_step[step], completions)
    return RunReport(path, run_kind(list(by_step.values()), config), steps, len(set(files) & set(steps)),
                     (path / CONFIG).is_file(), diagnosis.findings())


def find_runs(path: str | Path) -> list[Path]:
    """`path` itself when it holds metrics.jsonl, else the run folders below it (checkpoints skipped)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if (root / METRICS).is_file():
        return [root]
    found = []
    frontier = [root]
    for _ in range(SEARCH_DEPTH):
        frontier = [d for p in frontier for d in sorted(p.iterdir())
                    if d.is_dir() and not d.name.startswith(("checkpoint-", "."))]
        found += [d for d in frontier if (d / METRICS).is_file()]
        frontier = [d for d in frontier if not (d / METRICS).is_file()]
    if not found:
        raise FileNotFoundError(f"{root}: no {METRICS} here or in the folders below it: is this a run's output_dir?")
    return found


def doctor(run_dir: str | Path) -> list[RunReport]:
    """The reports of every run at or below `run_dir`."""
    return [diagnose_run(p) for p in find_runs(run_dir)]


def render(reports: list[RunReport], as_json: bool = False) -> str:
    """The reports as text, or (as_json) one JSON list of findings, each with its run folder."""
    if as_json:
        return json.dumps([{"run": str(r.path), **f.to_dict()} for r in reports for f in r.findings], indent=1)
    return "\n\n".join(r.text() for r in reports)


def run_doctor(cfg: DoctorConfig) -> None:
    """`r1kit doctor`: print the findings; exit 1 when there are any."""
    if not cfg.run_dir:
        raise ValueError("which run? pass its folder: r1kit doctor --run_dir RUN_DIR")
    reports = doctor(cfg.run_dir)
    print(render(reports, cfg.json))
    if any(r.findings for r in reports):
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    """`python -m r1kit.diagnose.doctor RUN_DIR [--json]`."""
    parser = argparse.ArgumentParser(prog="r1kit doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help=DoctorConfig.__dataclass_fields__["run_dir"].metadata["help"])
    parser.add_argument("--json", action="store_true", help="Print the findings as one JSON list.")
    args = parser.parse_args(argv)
    try:
        reports = doctor(args.run_dir)
    except FileNotFoundError as e:
        print(f"r1kit doctor: error: {e}", file=sys.stderr)
        return 2
    print(render(reports, args.json))
    return 1 if any(r.findings for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
