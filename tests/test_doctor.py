"""`r1kit doctor` and the live monitor: each pathology planted in a small synthetic run folder is reported,
and nothing else is; a real run that learns (a short `r1kit demo`-style GRPO run on the shipped tiny base
model) gets no finding; the monitor warns once per problem, at the step the doctor names first.

The synthetic runs copy the shape of a healthy demo run's rows (metric names and values of
`r1kit demo`'s 100 steps: reward 0.2 -> 0.7, entropy 0.36 -> 0.11, length 20 -> 60 tokens, a few
zero-spread groups, grad_norm ~0.2, 1300 -> 3000 tokens/s) and of its completions files."""

import json
import logging
import math
import random
from pathlib import Path

import pytest

from r1kit.cli import main as cli_main
from r1kit.diagnose import rules
from r1kit.diagnose.doctor import diagnose_run, doctor, find_runs, main as doctor_main, render
from r1kit.diagnose.monitor import Monitor
from r1kit.diagnose.rules import RULES, Diagnosis, step_ranges

STEPS = 30
GROUP, PROMPTS = 8, 8  # completions per prompt, prompts per step: 64 completions a step, as the demo
CONFIG = {  # the fields of a demo run's r1kit_config.json the rules read, with the demo's values
    "model_name_or_path": "r1kit:tiny-base", "dataset_name": "r1kit:arithmetic", "reward_funcs": ["task_accuracy", "format"],
    "num_generations": GROUP, "per_device_train_batch_size": GROUP * PROMPTS, "gradient_accumulation_steps": 1,
    "max_completion_length": 160, "temperature": 1.0, "beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.28,
    "loss_type": "dapo", "dynamic_sampling": False, "learning_rate": 6e-5, "max_grad_norm": 1.0, "logging_steps": 1,
    "max_reward_failure_fraction": 0.5, "log_completions": True,
}


def healthy_row(t: int, rng: random.Random) -> dict:
    """Step t of a run that learns, in the demo's metric names and ranges (with its step-to-step noise)."""
    p = (t - 1) / (STEPS - 1)  # 0 -> 1 over the run
    acc = min(max(0.25 + 0.4 * p + rng.uniform(-0.1, 0.1), 0.0), 1.0)
    fmt = 0.05 * p
    n = GROUP * PROMPTS
    length = 20 + 35 * p + rng.uniform(-4, 4)
    step_time = 1.0 + 0.3 * p + rng.uniform(-0.1, 0.1)
    return {
        "step": t, "rewards/task_accuracy/mean": acc, "rewards/task_accuracy/std": math.sqrt(acc * (1 - acc) * n / (n - 1)),
        "rewards/format/mean": fmt, "rewards/format/std": 0.1, "reward": acc + fmt, "reward_std": 0.45,
        "completions/mean_length": length, "completions/max_length": int(length * 2.5), "completions/min_length": 4,
        "completions/clipped_ratio": rng.choice([0.0, 0.0, 0.0, 1 / 64]), "completions/language_mixing_rate": 0.03,
        "completions/reflection_rate": 0.05 + 0.2 * p, "frac_reward_zero_std": rng.choice([0.0, 0.0, 0.125, 0.25]),
        "advantages/abs_mean": 0.65, "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0,
        "clip_ratio/region_mean": 0.0, "ratio_mean": 1.0, "entropy": 0.36 - 0.2 * p + rng.uniform(-0.01, 0.01),
        "kl": 0.001 + 0.02 * p, "loss": -0.3 + rng.uniform(-0.2, 0.2), "grad_norm": 0.3 - 0.1 * p + rng.uniform(-0.05, 0.05),
        "learning_rate": 6e-5, "num_tokens": t * 12000, "skipped_steps": 0, "reward_errors/task_accuracy": 0,
        "reward_errors/format": 0, "dynamic_sampling/rounds": 0, "timing_s/generate": 0.45 * step_time,
        "timing_s/train": 0.55 * step_time, "timing_s/step": step_time, "perf/tokens_per_sec": n * length / step_time,
        "sampling/sampling_logp_difference/mean": 2e-7, "sampling/sampling_logp_difference/max": 3e-6,
        "sampling/importance_sampling_ratio/min": 0.999997, "sampling/importance_sampling_ratio/mean": 1.0,
        "sampling/importance_sampling_ratio/max": 1.000003,
    }


def completion_rows(row: dict, none: dict[str, int] | None = None) -> list[dict]:
    """A step's completions/step-N.jsonl rows matching its metrics (the first `none[name]` rows unscored)."""
    n = GROUP * PROMPTS
    right = round(row.get("rewards/task_accuracy/mean", 0.0) * n)
    out = []
    for k in range(n):
        rewards = {"rewards/task_accuracy": float(k < right), "rewards/format": 0.0}
        for name, count in (none or {}).items():
            if k < count:
                rewards[f"rewards/{name}"] = None
        out.append({"row": k // GROUP, "prompt": "User: What is 52 + 80?. Assistant:",
                    "completion": " Step by step: ones: 2 + 0 = 2. tens: 5 + 8 = 13. The answer is 132.",
                    "finish_reason": "eos", "length": int(row.get("completions/mean_length", 20)),
                    "reward": sum(v for v in rewards.values() if v is not None), "advantage": 0.5, **rewards})
    return out


def healthy(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [healthy_row(t, rng) for t in range(1, STEPS + 1)]


def write_run(path: Path, rows: list[dict], config: dict | None = CONFIG, completions: dict[int, list[dict]] | None = None,
              with_completions: bool = True) -> Path:
    """A run folder as a trainer writes it: metrics.jsonl, completions/step-N.jsonl, r1kit_config.json."""
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if config is not None:
        (path / "r1kit_config.json").write_text(json.dumps(config, indent=1))
    if with_completions:
        (path / "completions").mkdir()
        for r in rows:
            comp = (completions or {}).get(r["step"]) or completion_rows(r)
            (path / "completions" / f"step-{r['step']:06d}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comp))
    return path


def found(path: Path) -> dict[str, list]:
    """rule id -> the findings' (metric, steps) of the run at `path`."""
    out: dict[str, list] = {}
    for f in diagnose_run(path).findings:
        out.setdefault(f.rule, []).append((f.metric, f.steps))
    return out


def plant(rows: list[dict], metric: str, fn, start: int = 1) -> list[dict]:
    """rows with `metric` = fn(step, old value) from step `start` on."""
    for r in rows:
        if r["step"] >= start:
            r[metric] = fn(r["step"], r.get(metric))
    return rows


# ---- the synthetic healthy run and each planted pathology ---------------------------------------------


def test_synthetic_healthy_run_has_no_finding(tmp_path):
    for seed in range(5):
        assert found(write_run(tmp_path / f"s{seed}", healthy(seed))) == {}, seed


def test_no_learning_signal(tmp_path):
    # the run that "does nothing": every group all wrong, so every advantage, the loss and the gradient are 0
    rows = healthy()
    for r in rows:
        r.update({"frac_reward_zero_std": 1.0 if r["step"] % 4 else 0.875, "rewards/task_accuracy/mean": 0.0,
                  "rewards/task_accuracy/std": 0.0, "reward": 0.0, "reward_std": 0.0, "advantages/abs_mean": 0.0,
                  "loss": 0.0, "grad_norm": 0.0, "completions/mean_length": 20.0, "entropy": 0.36})
    f = found(write_run(tmp_path / "run", rows))
    assert list(f) == ["no_learning_signal"]
    assert f["no_learning_signal"] == [("frac_reward_zero_std", list(range(1, STEPS + 1)))]
    (finding,) = diagnose_run(tmp_path / "run").findings
    assert finding.severity == "error" and "dynamic_sampling" in finding.advice
    assert "too hard" in finding.message  # accuracy 0: says which way the groups agree


def test_no_learning_signal_with_dynamic_sampling_on_says_so(tmp_path):
    rows = plant(healthy(), "frac_reward_zero_std", lambda t, v: 0.9, start=11)
    (finding,) = diagnose_run(write_run(tmp_path / "run", rows, {**CONFIG, "dynamic_sampling": True})).findings
    assert finding.rule == "no_learning_signal" and finding.steps == list(range(11, STEPS + 1))
    assert "already on" in finding.advice


def test_clipped_completions(tmp_path):
    rows = plant(healthy(), "completions/clipped_ratio", lambda t, v: 0.35, start=16)
    assert found(write_run(tmp_path / "run", rows)) == {
        "clipped_completions": [("completions/clipped_ratio", list(range(16, STEPS + 1)))]}


def test_entropy_collapse(tmp_path):
    rows = plant(healthy(), "entropy", lambda t, v: 0.35 * 0.7 ** (t - 1))  # 0.35 -> 0.0001 by step 30
    f = found(write_run(tmp_path / "run", rows))
    assert list(f) == ["entropy_collapse"]
    (metric, steps), = f["entropy_collapse"]
    assert metric == "entropy" and steps[-1] == STEPS
    # the steps named are those whose own entropy is under a tenth of the first 5 rows' median (0.35 * 0.7^2)
    assert steps == [t for t in range(1, STEPS + 1) if 0.7 ** (t - 1) < 0.1 * 0.7 ** 2] == list(range(10, STEPS + 1))


def test_kl_blowup(tmp_path):
    rows = plant(healthy(), "kl", lambda t, v: 2.5 + 0.1 * t, start=21)
    f = found(write_run(tmp_path / "run", rows, {**CONFIG, "beta": 0.04}))
    assert f == {"kl_blowup": [("kl", list(range(21, STEPS + 1)))]}


def test_kl_jump_under_the_limit_is_a_blowup_too(tmp_path):
    rows = plant(healthy(), "kl", lambda t, v: 0.3, start=21)  # 20x its running median, under 1 nat
    # a jump against the median of the 10 rows before: until half of those rows are the new level
    assert found(write_run(tmp_path / "run", rows, {**CONFIG, "beta": 0.04})) == {"kl_blowup": [("kl", [21, 22, 23, 24, 25])]}


def test_grad_blowup(tmp_path):
    spikes = {20: 6.0, 21: 40.0}
    rows = plant(healthy(), "grad_norm", lambda t, v: spikes.get(t, v))
    assert found(write_run(tmp_path / "run", rows)) == {"grad_blowup": [("grad_norm", [20, 21])]}


def test_skipped_steps(tmp_path):
    rows = healthy()
    for r in rows:  # steps 15 and 16 had an inf gradient norm (logged as null) and were skipped
        r["skipped_steps"] = 0 if r["step"] < 15 else 1 if r["step"] == 15 else 2
        if r["step"] in (15, 16):
            r["grad_norm"] = None
    f = found(write_run(tmp_path / "run", rows))
    assert f == {"skipped_steps": [("skipped_steps", [15, 16])]}


def test_length_explosion(tmp_path):
    rows = healthy()
    for r in rows:  # 20 -> 170 tokens while accuracy stays at 0.3
        r["completions/mean_length"] = 20 + 5 * r["step"]
        r["rewards/task_accuracy/mean"] = r["reward"] = 0.3 + (0.02 if r["step"] % 2 else -0.02)
    f = found(write_run(tmp_path / "run", rows, {**CONFIG, "max_completion_length": 1024}))
    assert list(f) == ["length_explosion"] and f["length_explosion"][0][0] == "completions/mean_length"
    assert f["length_explosion"][0][1][-1] == STEPS


def test_length_explosion_is_not_growth_that_pays(tmp_path):
    rows = plant(healthy(), "completions/mean_length", lambda t, v: 20 + 5 * t)  # accuracy rises 0.25 -> 0.65
    assert found(write_run(tmp_path / "run", rows, {**CONFIG, "max_completion_length": 1024})) == {}


def test_length_collapse(tmp_path):
    rows = plant(healthy(), "completions/mean_length", lambda t, v: max(40 - 3 * t, 4))
    f = found(write_run(tmp_path / "run", rows))
    assert list(f) == ["length_collapse"] and f["length_collapse"][0][1][-1] == STEPS


def test_reward_hacking(tmp_path):
    rows = healthy()
    for r in rows:  # format pays more and more while fewer answers are right
        t = r["step"]
        acc, fmt = 0.4 - 0.01 * t, 0.03 * t
        r.update({"rewards/task_accuracy/mean": acc, "rewards/format/mean": fmt, "reward": acc + fmt})
    f = found(write_run(tmp_path / "run", rows))
    assert list(f) == ["reward_hacking"] and f["reward_hacking"][0][0] == "rewards/task_accuracy/mean"


def test_reward_errors(tmp_path):
    rows, comps = healthy(), {}
    for r in rows:  # from step 6 the accuracy reward raises on 24 of the 64 rows (under the trainer's 0.5 stop)
        lost = 24 if r["step"] >= 6 else 0
        r["reward_errors/task_accuracy"] = 24 * max(r["step"] - 5, 0)
        comps[r["step"]] = completion_rows(r, {"task_accuracy": lost})
    f = found(write_run(tmp_path / "run", rows, completions=comps))
    assert f == {"reward_failures": [("reward_errors/task_accuracy", list(range(6, STEPS + 1)))]}


def test_reward_errors_without_completions_or_every_step_logged(tmp_path):
    rows = healthy()
    for r in rows:
        r["reward_errors/task_accuracy"] = 24 * max(r["step"] - 5, 0)
    every_5th = [r for r in rows if r["step"] % 5 == 0]  # logging_steps 5: the count's increase spans 5 steps
    f = found(write_run(tmp_path / "run", every_5th, {**CONFIG, "logging_steps": 5}, with_completions=False))
    assert list(f) == ["reward_failures"] and f["reward_failures"][0][0] == "reward_errors/task_accuracy"


def test_reward_returns_none(tmp_path):
    rows, comps = healthy(), {}
    for r in rows:  # the format reward cannot score 58 of 64 completions (no error: it returns None)
        comps[r["step"]] = completion_rows(r, {"format": 58})
    f = found(write_run(tmp_path / "run", rows, completions=comps))
    assert f == {"reward_failures": [("rewards/format", list(range(1, STEPS + 1)))]}


def test_reward_scoring_no_row_shows_without_completions(tmp_path):
    rows = healthy()
    for r in rows:  # a function that scored no row has no rewards/<name>/mean in its step's metrics
        if r["step"] > 10:
            del r["rewards/format/mean"], r["rewards/format/std"]
    f = found(write_run(tmp_path / "run", rows, with_completions=False))
    assert f == {"reward_failures": [("rewards/format", list(range(11, STEPS + 1)))]}


def test_sampler_mismatch(tmp_path):
    rows = healthy()
    for r in rows:  # a stale engine from step 12: its log-probs drift away from the trainer's
        if r["step"] >= 12:
            d = 0.02 * (r["step"] - 10)
            r.update({"sampling/sampling_logp_difference/mean": d, "sampling/sampling_logp_difference/max": 20 * d,
                      "sampling/importance_sampling_ratio/min": math.exp(-20 * d),
                      "sampling/importance_sampling_ratio/max": math.exp(20 * d)})
    f = found(write_run(tmp_path / "run", rows))
    # 0.02 * (t - 10) >= 0.05 from step 13; three rows in a row from step 15 on
    assert f == {"sampler_mismatch": [("sampling/sampling_logp_difference/mean", list(range(13, STEPS + 1)))]}


def test_throughput_drop(tmp_path):
    rows = healthy()
    for r in rows:  # from step 20 generation takes 10x as long (another job on the machine, swapping)
        if r["step"] >= 20:
            r["timing_s/generate"] *= 10
            r["timing_s/step"] = r["timing_s/generate"] + r["timing_s/train"]
            r["perf/tokens_per_sec"] = GROUP * PROMPTS * r["completions/mean_length"] / r["timing_s/step"]
    f = found(write_run(tmp_path / "run", rows))
    assert list(f) == ["throughput_drop"] and f["throughput_drop"][0][1][-1] == STEPS
    (finding,) = diagnose_run(tmp_path / "run").findings
    assert "generate" in finding.message


def test_every_rule_is_planted_here():
    planted = {"no_learning_signal", "clipped_completions", "entropy_collapse", "kl_blowup", "grad_blowup",
               "skipped_steps", "length_explosion", "length_collapse", "reward_hacking", "reward_failures",
               "sampler_mismatch", "throughput_drop"}
    assert set(RULES) == planted
    for r in RULES.values():  # each says why it fires
        assert r.check.__doc__ and r.advice and r.severity in rules.SEVERITIES


# ---- missing pieces, other trainers, the command -------------------------------------------------------


def test_tolerates_missing_config_completions_and_a_cut_last_line(tmp_path):
    rows = healthy()
    path = write_run(tmp_path / "run", rows, config=None, with_completions=False)
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "reward": 0.')  # a crash cut the last line
    report = diagnose_run(path)
    assert report.findings == [] and report.steps == list(range(1, STEPS + 1)) and not report.has_config
    # errors without config still need the rows per step: the None side still works from the metrics alone
    plant(rows, "grad_norm", lambda t, v: 30.0 if t == 25 else v)
    assert found(write_run(tmp_path / "run2", rows, config=None, with_completions=False)) == {
        "grad_blowup": [("grad_norm", [25])]}


def test_sft_run(tmp_path):
    rng = random.Random(0)
    rows = [{"step": 5 * t, "loss": 2.0 / t, "mean_token_accuracy": 0.5 + 0.04 * t, "grad_norm": 1.7 / t ** 0.7,
             "learning_rate": 1e-3, "num_tokens": 13000 * t, "num_loss_tokens": 4000, "epoch": 0.1 * t,
             "skipped_steps": 0, "timing_s/step": 0.3, "perf/tokens_per_sec": 12500 + rng.uniform(-1000, 1000)}
            for t in range(1, 13)]
    sft_config = {"model_name_or_path": "r1kit:tiny-base", "packing": False, "per_device_train_batch_size": 16}
    report = diagnose_run(write_run(tmp_path / "sft", rows, sft_config, with_completions=False))
    assert report.kind == "SFT" and report.findings == []
    plant(rows, "perf/tokens_per_sec", lambda t, v: 3000.0, start=40)
    assert found(write_run(tmp_path / "slow", rows, sft_config, with_completions=False)) == {
        "throughput_drop": [("perf/tokens_per_sec", [40, 45, 50, 55, 60])]}


def test_finds_runs_below_a_folder_and_prints_json(tmp_path, capsys):
    write_run(tmp_path / "demo" / "model", healthy())
    rows = plant(healthy(), "completions/clipped_ratio", lambda t, v: 0.5, start=20)
    write_run(tmp_path / "pipe" / "r1_zero" / "model", rows)
    write_run(tmp_path / "pipe" / "cold_start" / "model", healthy(1))
    assert find_runs(tmp_path / "demo") == [tmp_path / "demo" / "model"]
    assert find_runs(tmp_path / "pipe") == [tmp_path / "pipe" / "cold_start" / "model",
                                            tmp_path / "pipe" / "r1_zero" / "model"]
    assert doctor_main([str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "GRPO run, 30 metric rows (1-30), completions of 30 steps" in out
    assert doctor_main([str(tmp_path / "pipe"), "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)
    assert [(f["rule"], f["run"]) for f in listed] == [("clipped_completions", str(tmp_path / "pipe" / "r1_zero" / "model"))]
    assert set(listed[0]) == {"run", "rule", "severity", "title", "message", "metric", "steps", "advice"}
    assert listed[0]["steps"] == list(range(20, STEPS + 1)) and listed[0]["metric"] == "completions/clipped_ratio"
    text = render(doctor(tmp_path / "pipe"))
    assert "1 problem found" in text and "metric: completions/clipped_ratio, steps 20-30" in text
    assert "try: raise max_completion_length" in text
    assert doctor_main([str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert doctor_main([str(tmp_path / "empty")]) == 2 and "no metrics.jsonl" in capsys.readouterr().err


def test_r1kit_doctor_command(tmp_path, capsys):
    write_run(tmp_path / "ok", healthy())
    assert cli_main(["doctor", "--run_dir", str(tmp_path / "ok")]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert cli_main(["doctor", str(tmp_path / "ok")]) == 0  # the bare form, as the README writes it
    assert "no problems found" in capsys.readouterr().out
    write_run(tmp_path / "bad", plant(healthy(), "grad_norm", lambda t, v: 50.0 if t == 12 else v))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["doctor", "--run_dir", str(tmp_path / "bad"), "--json"])
    assert exit_.value.code == 1
    assert [f["rule"] for f in json.loads(capsys.readouterr().out)] == ["grad_blowup"]
    assert cli_main(["doctor", "--run_dir", str(tmp_path / "missing")]) == 1  # FileNotFoundError: an error line


def test_step_ranges():
    assert step_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert step_ranges([]) == "" and step_ranges([5]) == "5"


# ---- the live monitor ----------------------------------------------------------------------------------


def test_monitor_warns_once_per_problem(caplog):
    rows = healthy()
    spikes = {12: 8.0, 13: 30.0, 25: 20.0}  # grad spikes at three steps: one warning, at step 12
    for r in rows:
        r["grad_norm"] = spikes.get(r["step"], r["grad_norm"])
        r["skipped_steps"] = 0 if r["step"] < 18 else 1 if r["step"] < 27 else 2  # skips at steps 18 and 27
        if r["step"] >= 20:
            r["completions/clipped_ratio"] = 0.4
    monitor = Monitor(CONFIG)
    new_by_step = {}
    with caplog.at_level(logging.WARNING, logger="r1kit.doctor"):
        for r in rows:
            new = monitor.observe(r["step"], {k: v for k, v in r.items() if k != "step"}, completion_rows(r))
            if new:
                new_by_step[r["step"]] = [f.rule for f in new]
    # clipped: mean of the last 5 rows reaches 0.2 at step 22 (0.4 x 3 of 5 = 0.24)
    assert new_by_step == {12: ["grad_blowup"], 18: ["skipped_steps"], 22: ["clipped_completions"]}
    warnings = [r for r in caplog.records if r.name == "r1kit.doctor"]
    assert len(warnings) == 3 and all(r.levelno == logging.WARNING for r in warnings)
    assert "Gradient blow-up at step 12" in warnings[0].getMessage() and "try:" in warnings[0].getMessage()
    # the monitor keeps every step that showed each problem; the doctor says the same of the finished run
    later = {f.rule: f.steps for f in monitor.findings()}
    assert later == {"grad_blowup": [12, 13, 25], "skipped_steps": [18, 27], "clipped_completions": list(range(20, 31))}


def test_monitor_and_doctor_agree(tmp_path):
    rows = plant(healthy(), "entropy", lambda t, v: 0.35 * 0.7 ** (t - 1))
    rows = plant(rows, "kl", lambda t, v: 5.0, start=28)
    path = write_run(tmp_path / "run", rows, {**CONFIG, "beta": 0.04})
    monitor = Monitor({**CONFIG, "beta": 0.04})
    for r in rows:
        monitor.observe(r["step"], r, completion_rows(r))
    assert [f.to_dict() for f in monitor.findings()] == [f.to_dict() for f in diagnose_run(path).findings]
    assert [f.rule for f in monitor.findings()] == ["kl_blowup", "entropy_collapse"]  # errors first


def test_monitor_after_a_resume_does_not_warn_again(caplog):
    rows = plant(healthy(), "grad_norm", lambda t, v: 9.0 if t in (8, 24) else v)
    monitor = Monitor(CONFIG)
    with caplog.at_level(logging.WARNING, logger="r1kit.doctor"):
        monitor.replay(rows[:15])  # the session before the resume warned about step 8 already
        assert not caplog.records
        assert [monitor.observe(r["step"], r) for r in rows[15:]] == [[]] * 15  # step 24: the same problem
    assert [(f.rule, f.steps) for f in monitor.findings()] == [("grad_blowup", [8, 24])]


def test_rules_judge_a_row_from_the_rows_before_it_only():
    """What a rule says about row i does not change when later rows arrive (the monitor's promise)."""
    rows = plant(healthy(), "entropy", lambda t, v: 0.35 * 0.7 ** (t - 1))
    full = Diagnosis(CONFIG)
    for r in rows:
        full.add(r["step"], r)
    for cut in (12, 20):
        part = Diagnosis(CONFIG)
        for r in rows[:cut]:
            part.add(r["step"], r)
        for i in range(cut):
            for rule in RULES.values():
                assert repr(rule.check(part.history, i)) == repr(rule.check(full.history, i)), (rule.id, i)


# ---- a real run that learns gets no finding --------------------------------------------------------------


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory):
    """12 GRPO steps of the demo's recipe (tiny-base, arithmetic, 8 prompts x 8, accuracy + format, its
    learning rate and completion budget): enough rows for the early-vs-recent rules to judge."""
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig

    out = tmp_path_factory.mktemp("doctor") / "model"
    cfg = GRPOConfig(model_name_or_path="r1kit:tiny-base", dataset_name="r1kit:arithmetic", dataset_num_rows=400,
                     template="r1_zero", reward_funcs=["task_accuracy", "format"], num_generations=8,
                     per_device_train_batch_size=64, max_steps=12, learning_rate=6e-5, lr_scheduler_type="constant",
                     beta=0.0, loss_type="dapo", epsilon_high=0.28, max_completion_length=160,
                     stop_strings=["</answer>"], temperature=1.0, seed=0, output_dir=str(out), save_steps=0,
                     logging_steps=1, disable_tqdm=True, dtype="float32")
    return train(cfg)


# tokens/s measures the machine as much as the run: another test process on the same 2 cores can halve it
# mid-run, so this check leaves that rule out (test_throughput_drop plants it) and asserts no wall-clock
MACHINE_RULES = {"throughput_drop"}


def test_a_run_that_learns_has_no_finding(learning_run, caplog):
    rows = [json.loads(line) for line in (learning_run / "metrics.jsonl").read_text().splitlines()]
    first, last = (sum(r["reward"] for r in part) / 4 for part in (rows[:4], rows[-4:]))
    assert last > first  # it learns (seed 0: 0.13 -> 0.33)
    report = diagnose_run(learning_run)
    assert report.kind == "GRPO" and report.has_config and report.completion_steps == 12
    assert [f for f in report.findings if f.rule not in MACHINE_RULES] == [], render([report])
    assert len(rows) >= rules.EARLY_ROWS + rules.RECENT_ROWS  # the early-vs-recent rules did judge it
    for key in ("frac_reward_zero_std", "completions/clipped_ratio", "entropy", "grad_norm", "skipped_steps",
                "completions/mean_length", "reward", "rewards/task_accuracy/mean", "reward_errors/task_accuracy",
                "reward_errors/format", "perf/tokens_per_sec", "timing_s/generate"):
        assert all(key in r for r in rows), key  # every metric the rules read was there to read
    monitor = Monitor(json.loads((learning_run / "r1kit_config.json").read_text()))
    with caplog.at_level(logging.WARNING, logger="r1kit.doctor"):
        for r in rows:
            assert [f for f in monitor.observe(r["step"], r) if f.rule not in MACHINE_RULES] == []
    assert [f.rule for f in monitor.findings()] == [f.rule for f in report.findings]
