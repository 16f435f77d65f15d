"""A reward module written for TRL runs unchanged in r1kit's GRPO loop: trainer_state counts optimizer
updates as TRL's does, log_metric values join the step's metrics, log_extra columns the completions log."""

import json

from r1kit.train.grpo import train
from r1kit.train.grpo_config import GRPOConfig

SEEN: list[tuple[int, int]] = []


def digits_with_logging(completions, trainer_state, log_metric, log_extra, **kwargs):
    SEEN.append((trainer_state.global_step, trainer_state.max_steps))
    scores = [sum(ch.isdigit() for ch in c) / 10 for c in completions]
    log_metric("digits/any", sum(s > 0 for s in scores) / len(scores))
    log_extra("digit_count", [round(s * 10) for s in scores])
    return scores


def test_trl_style_reward_sees_trl_steps_and_logs(tmp_path):
    SEEN.clear()
    out = train(GRPOConfig(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=16,
                           num_generations=4, per_device_train_batch_size=8, max_completion_length=8, max_steps=6,
                           num_iterations=2, reward_funcs=["test_grpo_trl_rewards:digits_with_logging"],
                           output_dir=str(tmp_path / "run"), save_steps=0, disable_tqdm=True))
    # steps are optimizer updates, as TRL's global_step: mu = 2 per generation batch, so 6 steps = 3 batches
    assert SEEN == [(0, 6), (2, 6), (4, 6)]
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert all(0.0 <= r["digits/any"] <= 1.0 for r in rows)
    logged = [json.loads(line) for line in open(out / "completions" / "step-000001.jsonl")]
    assert all(r["digit_count"] == sum(ch.isdigit() for ch in r["completion"]) for r in logged)
