"""`r1kit` command line: `r1kit <command> [--config recipe.yaml] [--key value ...]`.

Every command is a config dataclass plus a function that runs it; flags override the recipe, and
an unknown key is an error that names it. `r1kit <command> --help` lists every option.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from r1kit import __version__
from r1kit.config import ConfigError, describe, load_config, split_config_flag
from r1kit.rollout.base import RolloutError
from r1kit.train.checkpoint import CheckpointError

# command -> (config class, run function, one-line purpose); imported only when used
COMMANDS = {
    "grpo": ("r1kit.train.grpo_config:GRPOConfig", "r1kit.train.grpo:train",
             "GRPO reinforcement learning with rule-based rewards (DeepSeek-R1-Zero)."),
    "pretrain": ("r1kit.tiny_world.pretrain:PretrainConfig", "r1kit.tiny_world.pretrain:run_pretrain",
                 "Pretrain the tiny-world base model from scratch on a synthetic corpus."),
    "demo": ("r1kit.tiny_world.demo:DemoConfig", "r1kit.tiny_world.demo:run_demo",
             "Reproduce R1-Zero's curves on the tiny world, on a laptop CPU, in minutes."),
    "sft": ("r1kit.train.sft_config:SFTConfig", "r1kit.train.sft:train", "Supervised fine-tuning: cold start, rejection-sampling SFT, distillation."),
    "eval": ("r1kit.eval.cli_eval:EvalConfig", "r1kit.eval.cli_eval:run_eval", "pass@1 over k samples, cons@k, pass@k with a bootstrap interval (R1's protocol)."),
    "sample": ("r1kit.train.sample_config:SampleConfig", "r1kit.train.sample:run_sample", "Rejection sampling: k samples per prompt, verified, filtered, deduplicated, decontaminated -> SFT data."),
    "rm": ("r1kit.train.rm_config:RMConfig", "r1kit.train.rm:train", "Train a Bradley-Terry reward model on chosen/rejected pairs (helpfulness/harmlessness)."),
    "plan": ("r1kit.train.grpo_config:GRPOConfig", "r1kit.diagnose.plan:run_plan", "Before a GRPO run: memory per device (weights, gradients, AdamW, activations, KV cache), tokens, FLOPs, step time; what to change when it does not fit."),
    "doctor": ("r1kit.diagnose.doctor:DoctorConfig", "r1kit.diagnose.doctor:run_doctor", "What a run's logs say is wrong (no learning signal, collapse, blow-ups, failing rewards...) and what to try."),
    "report": ("r1kit.diagnose.report:ReportConfig", "r1kit.diagnose.report:run_report", "One self-contained report.html of a run: its curves, sampled completions per step with their rewards, its config."),
    "pipeline": ("r1kit.pipeline:PipelineConfig", "r1kit.pipeline:run_pipeline", "DeepSeek-R1's whole recipe: cold start, reasoning RL, rejection sampling, SFT, RL for all scenarios, distillation."),
    "vllm-serve": ("r1kit.rollout.vllm_server:VLLMServeConfig", "r1kit.rollout.vllm_server:run_serve", "A vLLM generation server for rollout_engine: vllm-server (generate, weight sync over HTTP)."),
}

# Commands that take one bare argument: `r1kit doctor RUN_DIR` is `r1kit doctor --run_dir RUN_DIR`.
POSITIONAL = {"doctor": "run_dir", "report": "run_dir"}
# Commands whose options are another command's config plus their own: `r1kit plan` reads a GRPO recipe.
EXTENDS = {"plan": "r1kit.diagnose.plan:plan_config_class"}

USAGE = f"""r1kit {__version__}: train reasoning language models the way DeepSeek-R1 was trained.

usage: r1kit <command> [--config recipe.yaml] [--key value ...]
       r1kit <command> --help

commands:
""" + "\n".join(f"  {name:<10} {spec[2]}" for name, spec in COMMANDS.items())


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"r1kit: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
        return 2
    if command in POSITIONAL and rest and not rest[0].startswith("-"):
        rest = [f"--{POSITIONAL[command]}", *rest]
    cls_path, run_path, purpose = COMMANDS[command]
    try:
        cls = _load(cls_path)
        if command in EXTENDS:
            cls = _load(EXTENDS[command])(cls)
    except (ImportError, AttributeError) as e:
        print(f"r1kit {command}: not available in this install ({e})", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        first = f"{POSITIONAL[command].upper()} " if command in POSITIONAL else ""
        footer = getattr(cls, "help_footer", None)  # e.g. the TRL keys a trainer does not take, and instead
        print(f"usage: r1kit {command} {first}[--config recipe.yaml] [--key value ...]\n\n{purpose}\n\noptions:\n"
              f"{describe(cls)}" + (f"\n\n{footer()}" if footer else ""))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    try:
        cfg = load_config(cls, *split_config_flag(rest))
    except ConfigError as e:
        print(f"r1kit {command}: {e}", file=sys.stderr)
        return 2
    try:
        result = _load(run_path)(cfg)
    except (ValueError, FileNotFoundError, CheckpointError, RolloutError) as e:
        # User-facing failures (bad data, bad checkpoint, ...) carry a message naming what is wrong.
        if os.environ.get("R1KIT_DEBUG"):
            raise
        print(f"r1kit {command}: error: {e}", file=sys.stderr)
        return 1
    if result is not None:
        print(f"r1kit {command}: done -> {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
