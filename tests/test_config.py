"""Config loading: YAML + overrides, type coercion, unknown keys and bad values named."""

import pytest

from r1kit.config import ConfigError, load_config, parse_overrides
from r1kit.train.grpo_config import GRPOConfig


def write(tmp_path, text):
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "learning_rate: 1e-5\nnum_generations: 4\nper_device_train_batch_size: 8\n"
                           "reward_funcs: [accuracy, format]\nreward_weights: [1, 0.5]\n")
    cfg = load_config(GRPOConfig, path, ["--beta", "0.04", "--loss_type=grpo", "--mask_truncated_completions"])
    # YAML 1.1 reads "1e-5" as a string; the float annotation coerces it.
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)
    assert cfg.num_generations == 4 and cfg.beta == 0.04 and cfg.loss_type == "grpo"
    assert cfg.mask_truncated_completions is True
    assert cfg.reward_funcs == ["accuracy", "format"] and cfg.reward_weights == [1.0, 0.5]


def test_list_override_forms():
    cfg = load_config(GRPOConfig, None, ["--reward_funcs", "accuracy,format", "--stop_strings", "[</answer>]"])
    assert cfg.reward_funcs == ["accuracy", "format"]
    assert cfg.stop_strings == ["</answer>"]


def test_unknown_key_names_it_and_suggests(tmp_path):
    path = write(tmp_path, "num_generation: 4\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: unknown key 'num_generation'.*num_generations"):
        load_config(GRPOConfig, path)
    with pytest.raises(ConfigError, match=r"command line: unknown key 'lr'"):
        load_config(GRPOConfig, None, ["--lr", "1"])


def test_bad_values_named(tmp_path):
    with pytest.raises(ConfigError, match="'num_generations' must be an integer"):
        load_config(GRPOConfig, None, ["--num_generations", "four"])
    with pytest.raises(ConfigError, match="'loss_type' must be one of"):
        load_config(GRPOConfig, None, ["--loss_type", "ppo"])
    with pytest.raises(ConfigError, match=r"'num_generations' \(4\) must divide the generation batch"):
        load_config(GRPOConfig, None, ["--per_device_train_batch_size", "6", "--num_generations", "4"])
    with pytest.raises(ConfigError, match="one weight per reward function"):
        load_config(GRPOConfig, None, ["--reward_weights", "[1.0]"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(GRPOConfig, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(GRPOConfig, write(tmp_path, "- a\n- b\n"))


def test_scale_rewards_accepts_trl_booleans():
    assert load_config(GRPOConfig, None, ["--scale_rewards", "false"]).scale_rewards == "none"
    assert load_config(GRPOConfig, None, ["--scale_rewards", "true"]).scale_rewards == "group"


def test_parse_overrides_rejects_positional():
    with pytest.raises(ConfigError, match="expected --key value"):
        parse_overrides(["beta", "1"])
