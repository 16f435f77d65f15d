"""`r1kit pipeline --config recipes/r1-tiny.yaml`: DeepSeek-R1's whole recipe, stage by stage.

Stages, in order (each one call of an existing command; `r1kit.pipeline.stages.STAGES`):

  base                evaluate the base model
  r1_zero             R1-Zero control: GRPO from the base model (task_accuracy + format)
  cold_start_data     a few hundred curated, readable chains of thought (r1kit.tiny_world.cold_start)
  cold_start          r1kit sft from the base model on them
  reasoning_rl        r1kit grpo from cold_start: task_accuracy + format + language (reward_weights)
  rejection_sampling  r1kit sample from reasoning_rl, verified by task_accuracy, the paper's filters
  non_reasoning_data  simple non-reasoning prompt/response pairs
  rs_sft              r1kit sft from the BASE model on rejection samples + non-reasoning data (2 epochs)
  reward_model        r1kit rm on r1kit:preferences (helpfulness, scored on the summary)
  all_scenarios_rl    r1kit grpo from rs_sft: task_accuracy + format + rm:<reward_model>?segment=answer
  distill_data        r1kit sample from all_scenarios_rl (verified)
  student_init        the base model truncated to fewer layers (StudentConfig)
  distill             r1kit sft of the student on distill_data
  student_rl          r1kit grpo from the same student init (the paper's RL-only control)

Recipe: PipelineConfig's shared settings, `eval:` (EvalConfig overrides) and `stages: {stage: {key: value}}`
overrides, each checked by that stage's config class (an unknown key is an error naming the stage and the
key; keys the pipeline wires, such as model_name_or_path and output_dir, are refused). Every stage's
config is built and checked before anything runs.

Resuming: each stage writes `output_dir/<stage>/manifest.json` (hashes of its inputs: its resolved config,
the output digests of the stages it reads, the base model's files, r1kit's version; hashes of its outputs;
its metrics; wall time; status). A re-run skips a finished stage whose input digest is unchanged and whose
outputs are intact; otherwise the stage's folder is cleared and the stage re-runs, which changes its output
digest and so re-runs every stage that reads from it, directly or not. Stages on an independent branch
(e.g. the reward model and the student init do not read the cold-start data) are not re-run. An
interrupted stage re-runs from its start. Evaluations have their own digest (eval config + model digest):
changing only `eval:` re-evaluates without retraining. Changes to r1kit's code other than its version are
not detected. Outputs: `pipeline.json` and `report.html` (+ PNG plots) in output_dir.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import shutil
import time
from pathlib import Path

from r1kit.config import ConfigError, from_dict, to_dict
from r1kit.pipeline.config import PipelineConfig, StudentConfig
from r1kit.pipeline.manifest import (digest_of, hash_files, json_sha256, model_digest, normalize_paths,
                                     outputs_intact, read_manifest, write_manifest)
from r1kit.pipeline.stages import BASE, BY_NAME, STAGE_NAMES, STAGES, Ctx, Stage, eval_defaults
from r1kit.utils.io import finite_or_none, write_text_atomic

__all__ = ["PipelineConfig", "StudentConfig", "run_pipeline", "build_configs", "plan_stages", "STAGE_NAMES"]

log = logging.getLogger("r1kit.pipeline")
EVAL_WIRED = ("model", "out")


def plan_stages(cfg: PipelineConfig) -> list[Stage]:
    """The stages to run, in order: all but skip_stages, cut after stop_after (keeping what it needs)."""
    unknown = [n for n in [*cfg.stages, *cfg.skip_stages, *([cfg.stop_after] if cfg.stop_after else [])]
               if n not in BY_NAME]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGE_NAMES)})")
    for name, over in cfg.stages.items():
        if over is not None and not isinstance(over, dict):
            raise ConfigError(f"stages.{name}: must be a mapping of key: value, got {over!r}")
    wanted = [s.name for s in STAGES if s.name not in cfg.skip_stages]
    if cfg.stop_after:
        needed, todo = set(), [cfg.stop_after]
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.add(n)
                todo += BY_NAME[n].deps
        wanted = [n for n in wanted if n in needed or STAGE_NAMES.index(n) <= STAGE_NAMES.index(cfg.stop_after)]
    for n in wanted:
        missing = [d for d in BY_NAME[n].deps if d not in wanted]
        if missing:
            raise ConfigError(f"skip_stages: stage {n!r} reads from {missing[0]!r}, which is skipped")
    return [BY_NAME[n] for n in wanted]


def build_configs(cfg: PipelineConfig, ctx: Ctx, plan: list[Stage]) -> dict:
    """Each planned stage's config (defaults <- recipe overrides <- wired keys), checked by its class."""
    configs = {}
    for stage in plan:
        over = dict(cfg.stages.get(stage.name) or {})
        source = f"stages.{stage.name}"
        if stage.config is None:
            if over:
                raise ConfigError(f"{source}: this stage takes no settings, got {sorted(over)}")
            configs[stage.name] = None
            continue
        wired = ctx.wired(stage)
        clash = sorted(k for k in over if k in wired)
        if clash:
            raise ConfigError(f"{source}: '{clash[0]}' is set by the pipeline for this stage ({wired[clash[0]]!r}); "
                              f"remove it from the recipe")
        data = {**_fill_inputs(stage.defaults(ctx), stage, ctx), **_fill_inputs(over, stage, ctx), **wired}
        names = {f.name for f in dataclasses.fields(stage.config)}
        # a default the class does not have (never for the shipped classes) is dropped, not an error
        data = {k: v for k, v in data.items() if k in names or k in over}
        configs[stage.name] = from_dict(stage.config, data, source)
    return configs


def _fill_inputs(settings: dict, stage: Stage, ctx: Ctx) -> dict:
    """`{dep}` in the strings of list values (e.g. `rm:{reward_model}?segment=answer` in reward_funcs) -> the
    model folder of `dep`, for each stage `stage` reads from."""
    def fill(v):
        for dep in stage.deps:
            v = v.replace("{" + dep + "}", ctx.model(dep)) if isinstance(v, str) else v
        return v

    return {k: [fill(v) for v in val] if isinstance(val, list) else val for k, val in settings.items()}


def eval_config(cfg: PipelineConfig, ctx: Ctx, stage: str):
    from r1kit.eval.cli_eval import EvalConfig

    clash = [k for k in cfg.eval if k in EVAL_WIRED]
    if clash:
        raise ConfigError(f"eval: '{clash[0]}' is set by the pipeline for each stage; remove it from the recipe")
    return from_dict(EvalConfig, {**eval_defaults(ctx), **cfg.eval, "model": ctx.model(stage),
                                  "out": str(ctx.dir(stage) / "eval")}, "eval")


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run (or resume) the pipeline; returns output_dir (pipeline.json, report.html)."""
    import torch

    from r1kit import __version__

    out = Path(cfg.output_dir)
    ctx = Ctx(cfg, out)
    plan = plan_stages(cfg)
    configs = build_configs(cfg, ctx, plan)
    if cfg.evaluate:
        for stage in plan:
            if stage.evaluated:
                eval_config(cfg, ctx, stage.name)  # checked before anything runs
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".pipeline.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ValueError(f"{out}: another r1kit pipeline is running in this output_dir") from None
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    t_start = time.perf_counter()
    norm = str(cfg.output_dir).rstrip("/")
    base_digest = model_digest(cfg.base_model) if any(s.from_base for s in plan) else None
    digests: dict[str, str] = {}
    records: list[dict] = []
    try:
        for stage in plan:
            records.append(_run_stage(stage, configs[stage.name], ctx, digests, base_digest, norm, __version__))
            _write_summary(cfg, out, records, time.perf_counter() - t_start, plan, report=False)
        _write_summary(cfg, out, records, time.perf_counter() - t_start, plan)
    except BaseException as e:
        records.append({"stage": stage.name, "title": stage.title, "status": "failed", "error": repr(e),
                        "output": str(ctx.dir(stage.name))})
        _write_summary(cfg, out, records, time.perf_counter() - t_start, plan)
        raise
    finally:
        lock.close()
    log.info("pipeline: done in %.0f s -> %s", time.perf_counter() - t_start, out / "report.html")
    return out


def _run_stage(stage: Stage, scfg, ctx: Ctx, digests: dict, base_digest: str | None, norm: str, version: str) -> dict:
    sdir = ctx.dir(stage.name)
    config = normalize_paths(to_dict(scfg), norm) if scfg is not None else {}
    inputs = {"stage": stage.name, "config_sha256": json_sha256(config),
              "upstream": {d: digests[d] for d in stage.deps}, "r1kit": version}
    if stage.from_base:
        inputs["base_model"] = {"name": ctx.cfg.base_model, "digest": base_digest}
    input_sha = json_sha256(inputs)
    m = read_manifest(sdir)
    skipped = bool(m and m.get("status") == "done" and m.get("input_sha256") == input_sha
                   and outputs_intact(sdir, m.get("outputs", {})))
    if skipped:
        log.info("pipeline: %s unchanged, skipped", stage.name)
    else:
        if m is not None and m.get("input_sha256") not in (None, input_sha):
            log.info("pipeline: %s inputs changed, re-running", stage.name)
        if sdir.exists():
            shutil.rmtree(sdir)  # outputs of older inputs or of an interrupted run
        m = {"stage": stage.name, "status": "running", "input_sha256": input_sha, "inputs": inputs,
             "config": config, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_manifest(sdir, m)
        log.info("pipeline: running %s (%s)", stage.name, stage.title)
        t0 = time.perf_counter()
        try:
            metrics = stage.run(scfg, ctx.for_stage(stage))
        except BaseException as e:
            m.update(status="failed", error=repr(e), wall_s=round(time.perf_counter() - t0, 2))
            write_manifest(sdir, m)
            raise
        outputs = hash_files(stage.outputs(sdir), sdir)
        out_digest = digest_of(outputs) if outputs else base_digest if stage.name == BASE else input_sha
        m.update(status="done", outputs=outputs, output_sha256=out_digest, metrics=finite_or_none(metrics),
                 wall_s=round(time.perf_counter() - t0, 2), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_manifest(sdir, m)
    digests[stage.name] = m["output_sha256"]

    record = {"stage": stage.name, "title": stage.title, "status": "skipped" if skipped else "ran",
              "skipped": skipped, "output": ctx.model(stage.name) if stage.model or stage.evaluated
              else str(sdir / "data"), "wall_s": m.get("wall_s"), "metrics": m.get("metrics", {}),
              "eval": None, "eval_skipped": None}
    if stage.evaluated and ctx.cfg.evaluate:
        record.update(_evaluate(stage, ctx, m, sdir, norm))
    return record


def _evaluate(stage: Stage, ctx: Ctx, m: dict, sdir: Path, norm: str) -> dict:
    from r1kit.eval.cli_eval import run_eval

    ecfg = eval_config(ctx.cfg, ctx, stage.name)
    ehash = json_sha256({"config": normalize_paths(to_dict(ecfg), norm), "model": m["output_sha256"]})
    old = m.get("eval") or {}
    results_file = sdir / "eval" / "results.json"
    if old.get("config_sha256") == ehash and results_file.is_file():
        return {"eval": old.get("results"), "eval_skipped": True, "eval_wall_s": old.get("wall_s")}
    log.info("pipeline: evaluating %s (k=%d, %s problems)", stage.name, ecfg.n, ecfg.num_problems)
    t0 = time.perf_counter()
    run_eval(ecfg)
    res = json.loads(results_file.read_text())
    keep = ("pass@1", "pass@1_ci", "cons@k", "pass@k", "k", "num_problems", "mean_response_length",
            "reflection_rate", "language_mixing_rate", "warnings")
    results = {k: res.get(k) for k in keep}
    m["eval"] = {"config_sha256": ehash, "results": results, "wall_s": round(time.perf_counter() - t0, 2)}
    write_manifest(sdir, m)
    return {"eval": results, "eval_skipped": False, "eval_wall_s": m["eval"]["wall_s"]}


def _write_summary(cfg: PipelineConfig, out: Path, records: list[dict], wall: float, plan: list[Stage],
                   report: bool = True) -> None:
    from r1kit.pipeline.report import comparison, write_report

    summary = {"config": to_dict(cfg), "stages": records, "comparison": comparison(records),
               "planned": [s.name for s in plan], "wall_s": round(wall, 2),
               "ran": sum(r["status"] == "ran" for r in records),
               "skipped": sum(r["status"] == "skipped" for r in records)}
    summary = finite_or_none(summary)
    write_text_atomic(out / "pipeline.json", json.dumps(summary, indent=1, default=str) + "\n")
    if not report:
        return
    try:
        write_report(out, summary)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose the run's results
        log.warning("pipeline: report.html not written: %r", e)

