"""Every open-r1 GRPO and SFT recipe loads and runs (issue 12): TRL's and open-r1's keys, r1kit's meaning for each.

tests/data/trl_recipes/ holds one recipe per open-r1 recipe (recipes/*/grpo/*.yaml, recipes/*/sft/*.yaml): the
same keys with the same values, texts of our own. Loading one changes only the model, the dataset and the
output folder (and, for the two recipes written for 7 processes, per_device_train_batch_size: one process of
16 x 4 completions is not whole groups of 14, 7 x 16 x 4 is); each TRL key it sets then has its effect
(checked here) or is named by exactly one warning or INFO line. Running one also shortens completions and
max_steps 500, turns vLLM off (not installed here) and gives the tiny model an EOS token of its vocabulary.
"""

from __future__ import annotations

import importlib.machinery
import json
import logging
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from r1kit.cli import main as cli_main
from r1kit.config import ConfigError, describe, load_config
from r1kit.models.loading import ModelLoadError, load_model_and_tokenizer
from r1kit.train.grpo import train as grpo_train
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.optim import make_optimizer
from r1kit.train.sft import train as sft_train
from r1kit.train.sft_config import SFTConfig
from r1kit.train.tracking import read_metrics
from r1kit.train.trl_args import resolve_steps
from r1kit.train.trl_table import HELP_GROUPS, OPEN_R1_KEYS, readme_table, render_markdown

RECIPES = Path(__file__).parent / "data" / "trl_recipes"
README = Path(__file__).parent.parent / "README.md"
COMMANDS = {"grpo": (GRPOConfig, grpo_train), "sft": (SFTConfig, sft_train)}
# recipe -> the local model: r1kit:tiny where the recipe brings its own chat template, else r1kit:tiny-chat
MODELS = {"grpo_r1_distill_math": "r1kit:tiny", "grpo_instruct_math": "r1kit:tiny-chat",
          "grpo_instruct_code": "r1kit:tiny-chat", "grpo_instruct_code_ioi": "r1kit:tiny-chat",
          "grpo_coder_codeforces": "r1kit:tiny-chat", "sft_coder_32b": "r1kit:tiny-chat",
          "sft_coder_7b": "r1kit:tiny-chat", "sft_distill": "r1kit:tiny"}
HUB = {"push_to_hub", "hub_model_id", "hub_strategy"}
EVAL_OFF = {"do_eval", "per_device_eval_batch_size"}
# recipe -> (keys named by a warning, keys named by an INFO line: TRL would not act on them either)
NAMED = {
    "grpo_r1_distill_math": (HUB | {"use_liger_kernel"}, EVAL_OFF),
    "grpo_instruct_math": (HUB, EVAL_OFF),
    "grpo_instruct_code": (HUB, {"do_eval"}),
    "grpo_instruct_code_ioi": (HUB | {"reward_funcs", "code_eval_test_batch_size"}, {"do_eval"}),
    "grpo_coder_codeforces": (HUB | {"hub_model_revision", "callbacks", "benchmarks", "vllm_device", "reward_funcs",
                                     "code_eval_test_batch_size", "code_eval_scoring_mode"},
                              {"do_eval", "eval_strategy", "dataset_test_split"}),
    "sft_coder_32b": (HUB | {"hub_always_push", "optim", "save_only_model", "dataset_num_proc"},
                      EVAL_OFF | {"eval_strategy"}),
    "sft_coder_7b": (HUB | {"use_liger_kernel", "dataset_num_proc"}, EVAL_OFF | {"eval_strategy"}),
    "sft_distill": (HUB | {"use_liger_kernel", "dataset_num_proc"}, EVAL_OFF | {"eval_strategy"}),
}
# TRL keys the recipes set whose effect the tests check instead of a log line (their values ask for what r1kit does)
SILENT = {"model_revision", "torch_dtype", "attn_implementation", "chat_template", "bf16", "lr_scheduler_kwargs",
          "gradient_checkpointing_kwargs", "logging_strategy", "logging_first_step", "log_level", "save_strategy",
          "overwrite_output_dir", "use_vllm", "vllm_gpu_memory_utilization", "code_language", "eos_token",
          "wandb_entity", "wandb_project", "use_liger_kernel"}
GROUPS_OF_14 = {"grpo_instruct_code", "grpo_instruct_code_ioi"}  # written for 7 processes


def recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def command_of(name: str) -> str:
    return name.split("_")[0]


def trl_keys(cls) -> set[str]:
    return {f.name for f in cls.__dataclass_fields__.values() if "trl" in f.metadata}


def write_data(tmp_path: Path, name: str) -> str:
    """A tiny local dataset shaped like the recipe's: prompts in its prompt column (GRPO), or conversations (SFT);
    as many rows as one optimizer step takes, so an epoch is one step."""
    r = recipe(name)
    if command_of(name) == "grpo":
        size = (14 if name in GROUPS_OF_14 else r["per_device_train_batch_size"]) * r["gradient_accumulation_steps"]
        tests = json.dumps({"language": "python", "test_cases": [{"input": "2 3\n", "output": "5\n"}]})
        rows = [{r["dataset_prompt_column"]: f"What is {i} + {i + 1}?", "solution": str(2 * i + 1),
                 "verification_info": tests} for i in range(size // r["num_generations"])]
    else:
        rows = [{"messages": [{"role": "user", "content": f"What is {i} + 2?"},
                              {"role": "assistant", "content": f"<think> {i} + 2 = {i + 2} </think> {i + 2}"}]}
                for i in range(r["per_device_train_batch_size"] * r["gradient_accumulation_steps"])]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def load(tmp_path: Path, name: str, *more: str):
    """The recipe with only model, dataset and output folder local (plus `more` overrides)."""
    cls = COMMANDS[command_of(name)][0]
    return load_config(cls, str(RECIPES / f"{name}.yaml"), [
        "--model_name_or_path", MODELS[name], "--dataset_name", write_data(tmp_path, name),
        "--output_dir", str(tmp_path / "out"), *more])


def named_keys(caplog, level: int | None = None) -> list[str]:
    return [k for r in caplog.records if hasattr(r, "trl_keys") and (level is None or r.levelno == level)
            for k in r.trl_keys]


@pytest.fixture
def fake_wandb(monkeypatch):
    """report_to: wandb without the package or a network: a stand-in that records init and the logged rows."""
    calls = {"init": [], "log": []}
    mod = types.ModuleType("wandb")
    mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    mod.init = lambda **kw: calls["init"].append(dict(kw, env={k: v for k, v in __import__("os").environ.items()
                                                                  if k.startswith("WANDB_")}))
    mod.log = lambda row, step=None: calls["log"].append((step, row))
    mod.finish = lambda: None
    monkeypatch.setitem(sys.modules, "wandb", mod)
    for key in ("WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_GROUP"):
        monkeypatch.setenv(key, "-")
        monkeypatch.delenv(key)  # whatever a test sets is undone after it
    yield calls


@pytest.fixture
def log_levels():
    """log_level changes r1kit's and transformers' levels: put them back."""
    import transformers

    r1kit, hf = logging.getLogger("r1kit").level, transformers.utils.logging.get_verbosity()
    yield
    logging.getLogger("r1kit").setLevel(r1kit)
    transformers.utils.logging.set_verbosity(hf)


# ---- the recipes: every key, loaded and run ----------------------------------------------------------------


def test_the_recipes_use_every_key_of_open_r1s():
    for command, keys in OPEN_R1_KEYS.items():
        used = {k for f in RECIPES.glob(f"{command}_*.yaml") for k in recipe(f.stem)}
        assert used == set(keys), (command, used ^ set(keys))
        fields = COMMANDS[command][0].__dataclass_fields__
        assert set(keys) <= set(fields)  # each one a key of r1kit's config


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recipe_loads_and_each_trl_key_has_its_effect_or_one_line(name, tmp_path, fake_wandb, monkeypatch, caplog):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    caplog.set_level(logging.INFO, logger="r1kit")
    cfg = load(tmp_path, name, *(["--per_device_train_batch_size", "14"] if name in GROUPS_OF_14 else []))
    warned, info = named_keys(caplog, logging.WARNING), named_keys(caplog, logging.INFO)
    assert sorted(warned + info) == sorted(set(warned + info)), "a key named twice"
    assert (set(warned), set(info)) == NAMED[name]
    given = set(recipe(name)) & trl_keys(type(cfg))
    assert given <= set(warned) | set(info) | SILENT, given - set(warned) - set(info) - SILENT
    r = recipe(name)
    assert cfg.dtype == "bfloat16"  # torch_dtype and bf16
    assert cfg.loader_options()["revision"] == "main" and cfg.loader_options()["attn_implementation"] == \
        "flash_attention_2"
    assert cfg.loader_options()["chat_template"] == r.get("chat_template")
    assert cfg.lr_scheduler_kwargs == r.get("lr_scheduler_kwargs")
    if command_of(name) == "grpo":
        assert cfg.template == "chat" and cfg.system_prompt == r["system_prompt"]  # open-r1's conversations
        assert cfg.rollout_engine == "vllm"  # use_vllm (TRL's default mode: colocate)
        assert cfg.rollout_engine_kwargs == ({"gpu_memory_utilization": 0.7} if "vllm_gpu_memory_utilization" in r
                                             else {})
        dropped = {"ioi_code", "cf_code"}
        assert [f.partition("?")[0] for f in cfg.reward_funcs] == [f for f in r["reward_funcs"] if f not in dropped]
        if "code_language" in r:
            assert "code_format?language=cpp" in cfg.reward_funcs
    else:
        assert cfg.loader_options()["eos_token"] == r.get("eos_token")
        assert cfg.max_length == r["max_length"] and cfg.packing is False


def run_overrides(name: str) -> list[str]:
    r, more = recipe(name), ["--max_completion_length", "16"] if command_of(name) == "grpo" else []
    if "use_vllm" in r:
        more += ["--use_vllm", "false"]  # no vLLM on this machine
    if name in GROUPS_OF_14:
        more += ["--per_device_train_batch_size", "14"]
    if "eos_token" in r:
        more += ["--eos_token", "<|endoftext|>"]  # the tiny model's vocabulary has no <|im_end|>
    if r["max_steps"] > 1:
        more += ["--max_steps", "1"]  # not 500
    return more


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recipe_runs(name, tmp_path, fake_wandb, log_levels, caplog):
    caplog.set_level(logging.INFO, logger="r1kit")
    cfg = load(tmp_path, name, *run_overrides(name))
    out = COMMANDS[command_of(name)][1](cfg)
    r, rows = recipe(name), read_metrics(out)
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(r["num_train_epochs"])  # the data: a step an epoch
    assert [row["step"] for row in rows] == list(range(1, steps + 1))  # logging_steps 1, logging_first_step
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{steps}"]  # save_total_limit 1
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert named_keys(caplog, logging.WARNING).count("attn_implementation") == 1  # flash-attn: not on CPU
    if r.get("lr_scheduler_type") == "cosine_with_min_lr" and steps > 1:  # lr_scheduler_kwargs: min_lr_rate 0.1
        assert rows[-1]["learning_rate"] == pytest.approx(0.1 * r["learning_rate"])
    if "chat_template" in r:  # saved with the model
        assert AutoTokenizer.from_pretrained(out).chat_template == r["chat_template"]
    assert logging.getLogger("r1kit").level == logging.INFO  # log_level
    (init,) = fake_wandb["init"]
    assert len(fake_wandb["log"]) == steps
    if "wandb_project" in r:
        assert init["env"] == {"WANDB_ENTITY": r["wandb_entity"], "WANDB_PROJECT": r["wandb_project"]}


# ---- the keys one at a time --------------------------------------------------------------------------------


def sft_cfg(tmp_path, **kw) -> SFTConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"{i} + 1 = {i + 1}"}) + "\n" for i in range(4)))
    base = dict(model_name_or_path="r1kit:tiny", dataset_name=str(data), per_device_train_batch_size=2,
                max_length=32, learning_rate=1e-3, disable_tqdm=True, output_dir=str(tmp_path / "out"))
    return SFTConfig(**{**base, **kw})


def test_save_steps_fraction_and_epoch_strategies(tmp_path):
    out = sft_train(sft_cfg(tmp_path / "a", max_steps=4, save_steps=0.5, logging_strategy="no"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert [r["step"] for r in read_metrics(out)] == [4]  # logging_strategy no: the last step only
    out = sft_train(sft_cfg(tmp_path / "b", num_train_epochs=3, save_strategy="epoch", logging_strategy="epoch"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert [r["step"] for r in read_metrics(out)] == [2, 4, 6]
    with pytest.raises(ConfigError, match="'save_steps' must be an integer, or a fraction"):
        load_config(SFTConfig, None, ["--dataset_name", "d.jsonl", "--save_steps", "1.5"])
    cfg = load_config(SFTConfig, None, ["--dataset_name", "d.jsonl", "--save_steps", "0.05", "--max_steps", "40"])
    resolve_steps(cfg, 40)
    assert cfg.save_steps == 2  # ceil(40 x 0.05), as TRL rounds


def test_lr_scheduler_kwargs_and_optim():
    from types import SimpleNamespace

    params = [torch.nn.Parameter(torch.zeros(2))]
    cfg = SimpleNamespace(learning_rate=1.0, adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, warmup_ratio=0.1,
                          lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
                          optim="adamw_torch_fused")
    optimizer, scheduler = make_optimizer(params, cfg, 10)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults.get("fused")  # torch's CPU kernel
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1)
    cfg.lr_scheduler_kwargs = '{"min_lr": 0.25}'  # TRL also takes the JSON text
    optimizer, scheduler = make_optimizer(params, cfg, 4)
    for _ in range(4):
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.25)
    cfg.lr_scheduler_kwargs = {"bogus": 1}
    with pytest.raises(ValueError, match="lr_scheduler_kwargs .'bogus': 1."):
        make_optimizer(params, cfg, 4)
    with pytest.raises(ConfigError, match="'optim' must be an AdamW"):
        load_config(SFTConfig, None, ["--dataset_name", "d.jsonl", "--optim", "sgd"])


def test_dtype_keys():
    def dtype(*args):
        return load_config(SFTConfig, None, ["--dataset_name", "d.jsonl", *args]).dtype

    assert dtype("--bf16", "true") == "bfloat16" and dtype("--fp16", "true") == "float16"
    assert dtype("--bf16", "false") == "float32" and dtype("--torch_dtype", "float16") == "float16"
    assert dtype() == "auto"
    with pytest.raises(ConfigError, match="'bf16' and fp16 cannot both be true"):
        dtype("--bf16", "true", "--fp16", "true")
    with pytest.raises(ConfigError, match="'torch_dtype' disagrees with dtype 'float32'"):
        dtype("--torch_dtype", "bfloat16", "--dtype", "float32")


def test_vllm_keys(caplog):
    caplog.set_level(logging.INFO, logger="r1kit")

    def grpo(*args):
        return load_config(GRPOConfig, None, ["--num_generations", "2", *args])

    cfg = grpo("--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "10.0.0.2",
               "--vllm_server_port", "8001", "--vllm_server_timeout", "30", "--vllm_gpu_memory_utilization", "0.5")
    assert cfg.rollout_engine == "vllm-server"
    assert cfg.rollout_engine_kwargs == {"base_url": "http://10.0.0.2:8001", "startup_timeout": 30.0}
    assert named_keys(caplog, logging.WARNING) == ["vllm_gpu_memory_utilization"]  # the server owns its memory
    cfg = grpo("--use_vllm", "true", "--vllm_tensor_parallel_size", "2", "--vllm_enable_sleep_mode", "true",
               "--vllm_server_base_url", "http://h:1")
    assert cfg.rollout_engine == "vllm" and cfg.rollout_engine_kwargs == {"tensor_parallel_size": 2, "sleep": True}
    assert "vllm_server_base_url" in named_keys(caplog, logging.INFO)  # no effect in colocate mode, as in TRL
    assert grpo("--vllm_mode", "server", "--rollout_engine", "vllm").rollout_engine == "vllm-server"
    assert grpo("--vllm_gpu_memory_utilization", "0.5").rollout_engine == "hf"
    with pytest.raises(ConfigError, match="'use_vllm' is false but rollout_engine is 'vllm'"):
        grpo("--use_vllm", "false", "--rollout_engine", "vllm")
    with pytest.raises(ConfigError, match="'rollout_engine_kwargs' sets sleep=False, but a TRL vllm_"):
        grpo("--use_vllm", "true", "--vllm_enable_sleep_mode", "true", "--rollout_engine_kwargs", "{sleep: false}")


def test_reward_and_callback_keys():
    def grpo(*args):
        return load_config(GRPOConfig, None, ["--num_generations", "2", *args])

    with pytest.raises(ConfigError, match="'reward_funcs' has only \\['cf_code'\\], which need open-r1's"):
        grpo("--reward_funcs", "cf_code")
    with pytest.raises(ConfigError, match="'code_language' is not python, but r1kit's code reward runs Python"):
        grpo("--reward_funcs", "code,code_format", "--code_language", "cpp")
    with pytest.raises(ConfigError, match="'callbacks' names \\['my_callback'\\]"):
        grpo("--callbacks", "my_callback")
    with pytest.raises(ConfigError, match="unknown key 'use_peft' .*: set lora_r > 0 to train LoRA"):
        grpo("--use_peft", "true")


def test_loader_options(tmp_path, monkeypatch, caplog):
    model, tok = load_model_and_tokenizer("r1kit:tiny", attn_implementation="eager", chat_template="{{ 'x' }}",
                                          eos_token="<|pad|>")
    assert model.config._attn_implementation == "eager" and tok.chat_template == "{{ 'x' }}"
    assert tok.eos_token == "<|pad|>" and model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|pad|>")
    with pytest.raises(ModelLoadError, match="eos_token '<|im_end|>' is not in the tokenizer's vocabulary"):
        load_model_and_tokenizer("r1kit:tiny", eos_token="<|im_end|>")
    caplog.set_level(logging.WARNING, logger="r1kit")
    model, _ = load_model_and_tokenizer("r1kit:tiny", attn_implementation="flash_attention_2", revision="v2")
    assert model.config._attn_implementation == "sdpa"
    assert sorted(named_keys(caplog)) == ["attn_implementation", "model_revision"]
    # a hub id: the revision and the kernel go to from_pretrained (the loaders are stubbed: no network here)
    import transformers

    seen = {}
    tiny_model, tiny_tok = load_model_and_tokenizer("r1kit:tiny")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name, **kw: seen.setdefault("tokenizer", kw) and tiny_tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda name, **kw: seen.setdefault("model", kw) and tiny_model)
    load_model_and_tokenizer("org/model", revision="v01.00", attn_implementation="eager", trust_remote_code=True)
    assert seen["tokenizer"]["revision"] == seen["model"]["revision"] == "v01.00"
    assert seen["model"]["attn_implementation"] == "eager" and seen["model"]["trust_remote_code"] is True


def test_log_level_and_wandb_env(fake_wandb, log_levels):
    cfg = load_config(SFTConfig, None, ["--dataset_name", "d.jsonl", "--log_level", "warning", "--report_to",
                                        "wandb", "--wandb_project", "p", "--wandb_run_group", "g"])
    resolve_steps(cfg, 10)
    assert logging.getLogger("r1kit").level == logging.WARNING
    import os

    assert os.environ["WANDB_PROJECT"] == "p" and os.environ["WANDB_RUN_GROUP"] == "g"
    assert "WANDB_ENTITY" not in os.environ


# ---- help, hints and README -------------------------------------------------------------------------------


def test_help_groups_options_as_trl_docs_and_names_what_to_use_instead(capsys):
    assert cli_main(["grpo", "--help"]) == 0
    out = capsys.readouterr().out
    at = {title: out.index(f"\n{title}:\n") for _, title in HELP_GROUPS}
    assert list(at.values()) == sorted(at.values())  # model, data, generation, vLLM, GRPO loss, rewards, ...
    for key, group in [("use_vllm", "vLLM"), ("beta", "GRPO loss"), ("bf16", "training / optimisation"),
                       ("push_to_hub", "Hugging Face Hub"), ("learning_rate", "training / optimisation"),
                       ("reward_funcs", "rewards"), ("num_generations", "generation"), ("torch_dtype", "model")]:
        where = out.index(f"  --{key} ")
        assert max((pos, title) for title, pos in at.items() if pos < where)[1].startswith(group), key
    assert "TRL keys r1kit does not take" in out and "  use_peft: set lora_r > 0 to train LoRA" in out
    assert "\nother options:\n" not in "\n" + describe(GRPOConfig)  # every GRPO option has its group


def test_readme_table_is_the_generated_one():
    assert readme_table(README.read_text()) == render_markdown(), \
        "README's TRL table is stale: python -m r1kit.train.trl_table --readme README.md"
    table = render_markdown()
    for key in set(OPEN_R1_KEYS["grpo"]) | set(OPEN_R1_KEYS["sft"]):
        assert f"| **`{key}`** |" in table
