"""`r1kit pipeline`: the whole R1 recipe end to end on r1kit:tiny (a few steps per stage), resuming,
re-running after a changed input, and config errors that name the stage and the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.config import ConfigError, from_dict
from r1kit.pipeline import STAGE_NAMES, PipelineConfig, run_pipeline
from r1kit.pipeline.config import StudentConfig, build_student, student_layers
from r1kit.tiny_world.cold_start import (ColdStartDataConfig, NonReasoningDataConfig, cold_start_rows,
                                         non_reasoning_rows, number_words)

GRPO = {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4}
SFT = {"max_steps": 2, "per_device_train_batch_size": 4}
# r1kit:tiny is random: keep every sample so the SFT stages after sampling have data
SAMPLE = {"dataset_num_rows": 3, "num_samples": 2, "min_reward": 0.0, "drop_truncated": False,
          "min_language_share": None}


def recipe(out: Path, **stage_changes) -> dict:
    stages = {
        "cold_start_data": {"num_examples": 12}, "cold_start": SFT, "r1_zero": GRPO, "reasoning_rl": GRPO,
        "rejection_sampling": SAMPLE, "non_reasoning_data": {"num_examples": 6}, "rs_sft": SFT,
        "reward_model": {"dataset_num_rows": 12, "max_steps": 1, "per_device_train_batch_size": 4},
        "all_scenarios_rl": GRPO, "distill_data": SAMPLE, "student_init": {"num_layers": 1}, "distill": SFT,
        "student_rl": GRPO,
    }
    for name, change in stage_changes.items():
        stages[name] = {**stages[name], **change}
    return {"base_model": "r1kit:tiny", "output_dir": str(out), "max_completion_length": 16, "train_rows": 32,
            "disable_tqdm": True, "num_threads": 1, "eval": {"n": 2, "num_problems": 3}, "stages": stages}


def run(data: dict) -> dict:
    out = run_pipeline(from_dict(PipelineConfig, data, "test recipe"))
    return json.loads((out / "pipeline.json").read_text())


def snapshot(out: Path) -> dict[str, int]:
    """mtime of every manifest and every file of every stage (checkpoints included)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for name in STAGE_NAMES
            for p in (out / name).rglob("*") if p.is_file()}


def all_numbers_finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(all_numbers_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(all_numbers_finite(v) for v in obj)
    return True


def test_end_to_end_resume_and_rerun_after_change(tmp_path):
    out = tmp_path / "run"
    first = run(recipe(out))
    stages = {r["stage"]: r for r in first["stages"]}
    assert list(stages) == STAGE_NAMES
    assert all(r["status"] == "ran" for r in stages.values())
    evaluated = [n for n, r in stages.items() if r["eval"]]
    assert set(evaluated) == {"base", "r1_zero", "cold_start", "reasoning_rl", "rs_sft", "all_scenarios_rl",
                              "student_init", "distill", "student_rl"}
    for name in evaluated:
        ev = stages[name]["eval"]
        for key in ("pass@1", "cons@k", "language_mixing_rate", "mean_response_length"):
            assert isinstance(ev[key], float) and math.isfinite(ev[key]), (name, key, ev[key])
        assert ev["k"] == 2 and ev["num_problems"] == 3
    assert all_numbers_finite(first)
    assert set(first["comparison"]) >= {"all_scenarios_rl", "distill", "student_rl", "language_consistency"}
    lang = first["comparison"]["language_consistency"]  # reasoning_rl (cold start + language reward) vs R1-Zero
    z, r = stages["r1_zero"]["eval"], stages["reasoning_rl"]["eval"]
    assert lang["pass@1_delta_points"] == pytest.approx(100 * (r["pass@1"] - z["pass@1"]), abs=0.01)
    assert lang["within_3_points"] == (lang["pass@1_delta_points"] >= -3)
    assert lang["mixing_under_2pct"] == (r["language_mixing_rate"] < 0.02)
    html = (out / "report.html").read_text()
    assert "Teacher vs distilled student vs RL-only student" in html and "language mixing" in html
    assert "Language consistency" in html
    for png in ("stages.png", "distillation.png", "rl_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # manifests: status, input/output hashes, config, metrics, wall time
    m = json.loads((out / "cold_start" / "manifest.json").read_text())
    assert m["status"] == "done" and len(m["input_sha256"]) == 64
    assert "cold_start_data" in m["inputs"]["upstream"] and m["inputs"]["base_model"]["name"] == "r1kit:tiny"
    assert any(k.endswith(".safetensors") for k in m["outputs"]) and m["config"]["max_steps"] == 2
    assert m["eval"]["results"]["k"] == 2 and m["wall_s"] >= 0
    sft_data = (out / "rs_sft" / "data" / "train.jsonl").read_text().splitlines()
    assert {json.loads(r)["source"] for r in sft_data} == {"reasoning", "non_reasoning"}
    rm = json.loads((out / "all_scenarios_rl" / "manifest.json").read_text())
    assert any(f.startswith("rm:") and f.endswith("reward_model/model?segment=answer")
               for f in rm["config"]["reward_funcs"])

    # resumed: everything skipped, nothing in the stage folders touched
    before = snapshot(out)
    second = run(recipe(out))
    assert all(r["status"] == "skipped" and r["skipped"] for r in second["stages"])
    assert all(r["eval_skipped"] in (True, None) for r in second["stages"])
    assert snapshot(out) == before
    assert second["stages"][2]["eval"] == first["stages"][2]["eval"]

    # a changed cold-start setting: that stage and everything downstream re-run, nothing else
    third = run(recipe(out, cold_start_data={"num_examples": 10}))
    status = {r["stage"]: r["status"] for r in third["stages"]}
    downstream = {"cold_start_data", "cold_start", "reasoning_rl", "rejection_sampling", "rs_sft",
                  "all_scenarios_rl", "distill_data", "distill"}
    assert {n for n, s in status.items() if s == "ran"} == downstream
    after = snapshot(out)
    for name in set(STAGE_NAMES) - downstream:  # upstream / independent stages: untouched
        assert {k: v for k, v in after.items() if k.startswith(name + "/")} == \
               {k: v for k, v in before.items() if k.startswith(name + "/")}
    assert len((out / "cold_start_data" / "data" / "cold_start.jsonl").read_text().splitlines()) == 10

    # changing only the evaluation re-evaluates without retraining
    data = recipe(out, cold_start_data={"num_examples": 10})
    data["eval"] = {"n": 1, "num_problems": 2}
    data["stop_after"] = "cold_start"
    fourth = run(data)
    assert [r["stage"] for r in fourth["stages"]] == ["base", "r1_zero", "cold_start_data", "cold_start"]
    assert all(r["status"] == "skipped" for r in fourth["stages"])
    assert fourth["stages"][3]["eval_skipped"] is False and fourth["stages"][3]["eval"]["k"] == 1


def test_config_errors_name_the_stage_and_key(tmp_path, capsys):
    bad = recipe(tmp_path / "x", cold_start={"lerning_rate": 1e-3})
    with pytest.raises(ConfigError, match=r"stages\.cold_start: unknown key 'lerning_rate' for SFTConfig "
                                          r"\(did you mean 'learning_rate'\?\)"):
        run(bad)
    assert not (tmp_path / "x").exists()  # checked before anything runs
    with pytest.raises(ConfigError, match="stages.student_rl: unknown key 'num_generation'"):
        run(recipe(tmp_path / "x", student_rl={"num_generation": 4}))
    with pytest.raises(ConfigError, match="stages.cold_start_data: unknown key 'examples'"):
        run(recipe(tmp_path / "x", cold_start_data={"examples": 4}))
    with pytest.raises(ConfigError, match="'output_dir' is set by the pipeline"):
        run(recipe(tmp_path / "x", distill={"output_dir": "elsewhere"}))
    data = recipe(tmp_path / "x")
    data["stages"]["cold_strat"] = {}
    with pytest.raises(ConfigError, match="unknown stage 'cold_strat'"):
        run(data)
    data = recipe(tmp_path / "x")
    data["skip_stages"] = ["reward_model"]
    with pytest.raises(ConfigError, match="'all_scenarios_rl' reads from 'reward_model'"):
        run(data)
    data = recipe(tmp_path / "x")
    data["eval"]["nn"] = 3
    with pytest.raises(ConfigError, match="eval: unknown key 'nn' for EvalConfig"):
        run(data)
    # through the command line: exit code 2 and the message
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe(tmp_path / "x", rs_sft={"epochs": 2})))
    assert main(["pipeline", "--config", str(path)]) == 1  # found when the stages are built: a run error
    assert "stages.rs_sft: unknown key 'epochs' for SFTConfig" in capsys.readouterr().err


def test_stages_declare_what_they_read(tmp_path):
    """Dependencies, base-model reads and wired keys follow from each stage's declared inputs; every input is
    an earlier stage; a `{stage}` placeholder in defaults or the recipe is that input's model folder."""
    from r1kit.pipeline import build_configs, plan_stages
    from r1kit.pipeline.stages import BY_NAME, STAGES, Ctx

    for i, stage in enumerate(STAGES):
        assert all(STAGE_NAMES.index(d) < i for d in stage.deps), stage.name
    assert BY_NAME["rs_sft"].deps == ("rejection_sampling", "non_reasoning_data") and BY_NAME["rs_sft"].from_base
    assert BY_NAME["all_scenarios_rl"].deps == ("rs_sft", "reward_model") and not BY_NAME["all_scenarios_rl"].from_base
    assert BY_NAME["student_init"].deps == () and BY_NAME["student_init"].from_base
    cfg = from_dict(PipelineConfig, recipe(tmp_path, distill_data={"reward_funcs": ["task_accuracy", "rm:{rs_sft}"]}))
    ctx = Ctx(cfg, tmp_path)
    configs = build_configs(cfg, ctx, plan_stages(cfg))
    assert configs["all_scenarios_rl"].reward_funcs[2] == f"rm:{tmp_path}/reward_model/model?segment=answer"
    assert configs["distill_data"].reward_funcs[1] == "rm:{rs_sft}"  # not an input of distill_data: left as is
    assert configs["rs_sft"].dataset_name == str(tmp_path / "rs_sft" / "data" / "train.jsonl")
    assert configs["rejection_sampling"].output_dir == str(tmp_path / "rejection_sampling" / "data")
    assert configs["cold_start"].resume_from_checkpoint is None


def test_cold_start_and_non_reasoning_data():
    from r1kit.rewards.format import is_r1_format
    from r1kit.rewards.language import language_mixing_rate
    from r1kit.tasks import get_task

    rows, stats = cold_start_rows(ColdStartDataConfig(num_examples=60, p_check=0.5))
    assert len(rows) == 60 and stats["kept"] == 60
    task = get_task("arithmetic")
    for r in rows:
        assert is_r1_format(r["completion"]) and task.score(r["completion"], r) == 1.0
        assert "so the answer is" in r["completion"].split("<answer>")[1]  # a short summary
    assert language_mixing_rate([r["completion"] for r in rows]) == 0.0
    assert any(r["self_check"] for r in rows) and any("Wait, let me check" in r["completion"] for r in rows)
    test_prompts = {r["prompt"] for r in task.dataset("test", 200, 0)}
    assert not test_prompts & {r["prompt"] for r in rows}
    chain, _ = cold_start_rows(ColdStartDataConfig(num_examples=10), task="chain")
    assert all(get_task("chain").score(r["completion"], r) == 1.0 for r in chain)

    general = non_reasoning_rows(NonReasoningDataConfig(num_examples=30))
    assert len(general) == 30 and len({r["kind"] for r in general}) >= 7
    assert all(is_r1_format(r["completion"]) and r["completion"].startswith("<think> </think>") for r in general)
    assert number_words(342) == "three hundred forty-two" and number_words(70) == "seventy"


def test_student_is_a_truncated_copy(tmp_path):
    import torch

    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.models.tiny import build_tiny

    assert student_layers(4, StudentConfig(num_layers=2)) == [0, 3]
    assert student_layers(6, StudentConfig(num_layers=3)) == [0, 2, 5]
    with pytest.raises(ValueError, match="smaller than the base model's 2 layers"):
        student_layers(2, StudentConfig(num_layers=2))
    build_tiny(str(tmp_path / "base"), num_layers=3)
    facts = build_student(str(tmp_path / "base"), str(tmp_path / "student"), StudentConfig(num_layers=2))
    assert facts["layers_kept"] == [0, 2] and facts["num_parameters"] < facts["base_num_parameters"]
    base, _ = load_model_and_tokenizer(str(tmp_path / "base"), dtype="float32")
    student, tok = load_model_and_tokenizer(str(tmp_path / "student"), dtype="float32")
    assert student.config.num_hidden_layers == 2
    b, s = base.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.1.mlp.up_proj.weight"], b["model.layers.2.mlp.up_proj.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    ids = tok("What is 2 + 3?", return_tensors="pt").input_ids
    assert torch.isfinite(student(ids).logits).all()
