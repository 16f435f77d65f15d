"""For people coming from TRL / open-r1: how `r1kit grpo --help` and `r1kit sft --help` group their options
(in TRL's documentation order), what to use instead of the TRL keys r1kit does not take, and README's table
"Coming from TRL / open-r1", rendered from the configs' fields so it cannot go stale (tests/test_trl_recipes.py
compares them).

    python -m r1kit.train.trl_table --markdown          # print the table
    python -m r1kit.train.trl_table --readme README.md  # rewrite the table between README's markers
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

# --help headings, in TRL's documentation order (model, data, generation, vLLM, training, logging), then
# what r1kit's trainers do not do. Options of no group come last, under "other options".
HELP_GROUPS = (
    ("model", "model (TRL's ModelConfig)"),
    ("data", "data"),
    ("generation", "generation"),
    ("vllm", "vLLM"),
    ("loss", "GRPO loss"),
    ("rewards", "rewards"),
    ("training", "training / optimisation"),
    ("logging", "logging / saving"),
    ("eval", "evaluation (r1kit's trainers do not evaluate; r1kit eval does)"),
    ("hub", "Hugging Face Hub (r1kit does not upload)"),
)

# r1kit's own options (the TRL keys' fields carry their group themselves)
_GROUP_OF = {name: group for group, names in {
    "model": "model_name_or_path tokenizer_name_or_path dtype use_peft load_in_4bit load_in_8bit use_dora "
             "model_init_kwargs chat_template_path",
    "data": "template system_prompt messages_column prompt_column completion_column max_length truncate packing "
            "completion_only_loss assistant_only_loss padding_free",
    "generation": "rollout_engine rollout_engine_kwargs num_generations steps_per_generation generation_batch_size "
                  "max_prompt_length max_completion_length temperature top_p top_k stop_strings async_generation "
                  "max_staleness generation_kwargs min_p repetition_penalty",
    "loss": "beta kl_estimator epsilon epsilon_high loss_type importance_sampling_level sapo_temperature_pos "
            "sapo_temperature_neg scale_rewards num_iterations mask_truncated_completions dynamic_sampling "
            "max_resample_rounds skip_zero_advantage_backward sync_ref_model",
    "rewards": "allow_unsandboxed max_reward_failure_fraction",
    "training": "learning_rate lr_scheduler_type warmup_ratio weight_decay adam_beta1 adam_beta2 max_grad_norm "
                "max_steps num_train_epochs per_device_train_batch_size gradient_accumulation_steps "
                "gradient_checkpointing seed cpu_threads distributed_strategy warmup_steps torch_compile",
    "logging": "output_dir save_steps save_total_limit logging_steps report_to resume_from_checkpoint disable_tqdm "
               "log_completions num_completions_to_print",
    "eval": "eval_steps",
}.items() for name in names.split()}  # (and the TRL keys r1kit does not take, for README's table)
_PREFIXES = (("vllm_importance_sampling", "loss"), ("vllm_", "vllm"), ("dataset_", "data"), ("lora_", "model"),
             ("reward", "rewards"), ("hub_", "hub"), ("wandb_", "logging"))


def help_group(name: str) -> str | None:
    """The --help group of an r1kit option without `field(group=...)`."""
    return _GROUP_OF.get(name) or next((g for prefix, g in _PREFIXES if name.startswith(prefix)), None)


# TRL keys r1kit does not take (still an unknown-key error): the commands they belong to, and what to use instead.
NOT_TAKEN = {
    "use_peft": ("grpo sft", "set lora_r > 0 to train LoRA"),
    "load_in_4bit": ("grpo sft", "no bitsandbytes quantization here; train LoRA (lora_r) on a bfloat16 model"),
    "load_in_8bit": ("grpo sft", "no bitsandbytes quantization here; train LoRA (lora_r) on a bfloat16 model"),
    "use_dora": ("grpo sft", "plain LoRA only (lora_r, lora_alpha)"),
    "model_init_kwargs": ("grpo sft", "use dtype, attn_implementation, model_revision, trust_remote_code"),
    "warmup_steps": ("grpo sft", "use warmup_ratio (a fraction of the optimizer steps)"),
    "eval_steps": ("grpo sft", "the trainers do not evaluate; run r1kit eval on a checkpoint"),
    "hub_token": ("grpo sft", "r1kit does not push to the Hub"),
    "hub_private_repo": ("grpo sft", "r1kit does not push to the Hub"),
    "torch_compile": ("grpo sft", "r1kit runs the model uncompiled"),
    "generation_kwargs": ("grpo", "use temperature, top_p, top_k, stop_strings; vLLM's own options go in "
                                  "rollout_engine_kwargs"),
    "min_p": ("grpo", "use top_p or top_k"),
    "repetition_penalty": ("grpo", "sampling has none; the repetition_penalty reward (open-r1's) penalises repeats"),
    "vllm_model_impl": ("grpo", "use rollout_engine_kwargs: {model_impl: ...} (given to vllm.LLM)"),
    "vllm_max_model_length": ("grpo", "use rollout_engine_kwargs: {max_model_len: N}"),
    "num_completions_to_print": ("grpo", "log_completions writes every completion to output_dir/completions/"),
    "sync_ref_model": ("grpo", "the reference model stays the initial policy"),
    "chat_template_path": ("sft", "use chat_template (the Jinja text itself)"),
    "padding_free": ("sft", "use packing (position ids restart at each example)"),
}


def unknown_key_hints(command: str) -> dict[str, str]:
    """What an unknown-key error adds for a TRL key `command` does not take."""
    return {k: f"a TRL key r1kit does not take: {instead}" for k, (cmds, instead) in NOT_TAKEN.items()
            if command in cmds.split()}


def help_footer(command: str) -> str:
    """The end of `r1kit <command> --help`: the TRL keys it does not take, and what to use instead."""
    lines = [f"  {k}: {instead}" for k, (cmds, instead) in NOT_TAKEN.items() if command in cmds.split()]
    return "TRL keys r1kit does not take (an error), and what to use instead:\n" + "\n".join(lines)


# Every key of open-r1's recipes/*/grpo/*.yaml and recipes/*/sft/*.yaml (huggingface/open-r1 at 1416fa0c).
OPEN_R1_KEYS = {
    "grpo": """attn_implementation benchmarks beta bf16 callbacks chat_template code_eval_scoring_mode
        code_eval_test_batch_size code_language dataset_config dataset_name dataset_prompt_column dataset_test_split
        dataset_train_split do_eval eval_strategy gradient_accumulation_steps gradient_checkpointing
        gradient_checkpointing_kwargs hub_model_id hub_model_revision hub_strategy learning_rate log_completions
        log_level logging_first_step logging_steps logging_strategy loss_type lr_scheduler_kwargs lr_scheduler_type
        mask_truncated_completions max_completion_length max_grad_norm max_prompt_length max_steps model_name_or_path
        model_revision num_generations num_train_epochs output_dir overwrite_output_dir per_device_eval_batch_size
        per_device_train_batch_size push_to_hub report_to reward_funcs reward_weights save_steps save_strategy
        save_total_limit scale_rewards seed system_prompt temperature torch_dtype use_liger_kernel use_vllm
        vllm_device vllm_gpu_memory_utilization wandb_entity wandb_project warmup_ratio""".split(),
    "sft": """attn_implementation bf16 chat_template dataset_config dataset_name dataset_num_proc do_eval eos_token
        eval_strategy gradient_accumulation_steps gradient_checkpointing gradient_checkpointing_kwargs hub_always_push
        hub_model_id hub_strategy learning_rate log_level logging_steps logging_strategy lr_scheduler_kwargs
        lr_scheduler_type max_grad_norm max_length max_steps model_name_or_path model_revision num_train_epochs optim
        output_dir overwrite_output_dir packing per_device_eval_batch_size per_device_train_batch_size push_to_hub
        report_to save_only_model save_strategy save_total_limit seed torch_dtype use_liger_kernel
        warmup_ratio""".split(),
}

SAME = "r1kit's own option, TRL's name and meaning"
# r1kit's own options that also do something for TRL's / open-r1's recipes
SAME_AND = {
    "system_prompt": "with template r1_zero (GRPO's default), the template becomes chat: each prompt is a "
                     "conversation [system, user], as open-r1 makes it",
    "reward_funcs": "open-r1's ioi_code and cf_code (Piston/Morph code judges) are dropped, with a warning",
    "save_steps": "a fraction < 1 is that share of the run's steps, as in TRL",
}


def table_rows() -> list[tuple[str, str, str, str, str]]:
    """(group, key, commands, kind, what r1kit does) for every TRL/open-r1 key r1kit takes, or that open-r1's
    recipes use, or that `NOT_TAKEN` names; in --help group order, then by key. Kinds: same (r1kit's own
    option), mapped (TRL's meaning, carried out by r1kit), warned (accepted; a warning when it asks for what
    r1kit does not do), not taken (an unknown-key error saying what to use instead)."""
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.sft_config import SFTConfig

    configs = {"grpo": {f.name: f for f in dataclasses.fields(GRPOConfig)},
               "sft": {f.name: f for f in dataclasses.fields(SFTConfig)}}
    trl_keys = {name for fs in configs.values() for name, f in fs.items() if "trl" in f.metadata}
    keys = trl_keys | {k for ks in OPEN_R1_KEYS.values() for k in ks} | set(NOT_TAKEN)
    rows = []
    for key in keys:
        commands = [c for c, fs in configs.items() if key in fs]
        f = configs[commands[0]][key] if commands else None
        if f is None:
            cmds, instead = NOT_TAKEN.get(key, ("", "(none)"))
            rows.append((help_group(key) or "", key, ", ".join(cmds.split()), "not taken", instead))
        elif "trl" in f.metadata:
            rows.append((f.metadata["group"], key, ", ".join(commands), f.metadata["trl"], f.metadata["help"]))
        else:
            rows.append((f.metadata.get("group") or help_group(key) or "", key, ", ".join(commands), "same",
                         f"{SAME}; {SAME_AND[key]}" if key in SAME_AND else SAME))
    order = {g: i for i, (g, _) in enumerate(HELP_GROUPS)}
    return sorted(rows, key=lambda r: (order.get(r[0], len(order)), r[1]))


def render_markdown() -> str:
    """README's table: one row per key; keys of open-r1's recipes in bold."""
    in_recipes = {k for ks in OPEN_R1_KEYS.values() for k in ks}
    titles = {g: t.split(" (")[0] for g, t in HELP_GROUPS}
    lines = ["| group | TRL / open-r1 key | commands | kind | what r1kit does |", "| --- | --- | --- | --- | --- |"]
    for group, key, commands, kind, text in table_rows():
        name = f"**`{key}`**" if key in in_recipes else f"`{key}`"
        lines.append(f"| {titles.get(group, 'other')} | {name} | {commands} | {kind} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- trl-table:begin (python -m r1kit.train.trl_table --readme README.md) -->", "<!-- trl-table:end -->"


def readme_table(text: str) -> str:
    """The table between README's markers."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r1kit.train.trl_table", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print README's table")
    parser.add_argument("--readme", help="rewrite the table in this README, between its markers")
    args = parser.parse_args(argv)
    table = render_markdown()
    if args.readme:
        path = Path(args.readme)
        text = path.read_text()
        readme_table(text)  # the markers are there
        before, rest = text.split(BEGIN, 1)
        path.write_text(f"{before}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")
    if args.markdown or not args.readme:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
