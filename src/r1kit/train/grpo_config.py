"""`GRPOConfig`: every option of `r1kit grpo`, with TRL's names and meanings where TRL has one."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from r1kit.algo import AGGREGATIONS, IS_LEVELS, IS_MODES, KL_ESTIMATORS, SCALES
from r1kit.config import described, field, one_of
from r1kit.data.templates import is_template, template_choices, template_help
from r1kit.rollout.base import ALIASES, ENGINES
from r1kit.train.common_config import ModelArgs, TrainingArgs
from r1kit.train.common_config import need as common_need
from r1kit.train.trl_args import TRLGRPOArgs
from r1kit.train.trl_semantics import generation_plan

log = logging.getLogger("r1kit.grpo")


@dataclass
class GRPOConfig(TRLGRPOArgs, TrainingArgs, ModelArgs):
    # ---- data ----
    dataset_name: str = field("r1kit:arithmetic", help="Hub id, local folder, .jsonl/.parquet file, or r1kit:TASK.")
    dataset_config: str | None = field(None, help="Hub dataset configuration name.")
    dataset_train_split: str = field("train", help="Split to train on.")
    dataset_prompt_column: str = field("prompt", help="Column holding the prompt (a string or chat messages).")
    dataset_answer_column: str = field("solution", help="Column holding the reference answer.")
    dataset_num_rows: int | None = field(None, help="Use only this many rows (procedural tasks: how many to generate).")
    template: str = field("r1_zero", help=f"{template_help()}.")
    system_prompt: str | None = field(None, help="System message for template: chat.")

    # ---- rewards ----
    reward_funcs: list[str] = field(["accuracy", "format"], help="Reward function names or dotted import paths.")
    reward_weights: list[float] | None = field(None, help="One weight per reward function (default: all 1).")
    allow_unsandboxed: bool = field(False, help="Let the code reward run model-written code without bubblewrap isolation.")
    reward_timeout_s: float | None = field(None, help="Per-row deadline (seconds) for reward functions, run in a killable worker: a row past it scores None.")
    max_reward_failure_fraction: float | None = field(0.5, help="Stop the run (after checkpointing the last completed step) when a reward function fails (raises, NaN/inf, wrong length, deadline) on more than this fraction of a step's rows; null never stops.")

    # ---- generation ----
    rollout_engine: str = field("hf", help=f"Rollout backend: {described(ENGINES)}.")
    rollout_engine_kwargs: dict = field({}, help="Options for the engine, e.g. {gpu_memory_utilization: 0.3, "
                                              "weight_sync: snapshot} for vllm (any other key goes to vllm.LLM) or "
                                              "{base_url: http://127.0.0.1:8000, read_timeout: 600} for vllm-server.")
    num_generations: int = field(8, help="Completions per prompt (the group size G, >= 2). As in TRL, the generation "
                                         "batch over all processes must hold whole groups (a group may span processes).")
    steps_per_generation: int | None = field(None, help="Micro-batches of per_device_train_batch_size completions per "
                                                        "device in one generation batch (TRL's meaning; default "
                                                        "gradient_accumulation_steps). Each generation batch makes "
                                                        "num_iterations x steps_per_generation / "
                                                        "gradient_accumulation_steps optimizer updates. Not with "
                                                        "generation_batch_size.")
    generation_batch_size: int | None = field(None, help="Completions per generation batch over all processes (TRL's "
                                                         "meaning): per_device_train_batch_size x processes x "
                                                         "steps_per_generation. Not with steps_per_generation.")
    max_prompt_length: int = field(512, help="Prompts longer than this (in tokens, after the template) keep their last "
                                             "max_prompt_length tokens (cut from the left, as TRL <= 0.25 did), with a "
                                             "warning that counts them.")
    max_completion_length: int = field(256, help="Maximum new tokens per completion.")
    temperature: float = field(1.0, help="Sampling temperature (also divides the logits in the loss).")
    top_p: float = field(1.0, help="Nucleus sampling threshold.")
    top_k: int = field(0, help="Top-k sampling; 0 disables it.")
    stop_strings: list[str] | None = field(None, help="Generation stops after any of these strings (e.g. </answer>).")

    # ---- GRPO ----
    beta: float = field(0.0, help="KL coefficient against the reference model (0 = no reference model).")
    kl_estimator: str = field("k3", help=f"KL estimator: {described(KL_ESTIMATORS)}.")
    epsilon: float = field(0.2, help="Lower clipping range of the ratio.")
    epsilon_high: float | None = field(None, help="Upper clipping range (DAPO's clip-higher); default: epsilon.")
    loss_type: str = field("dapo", help=f"The policy loss (its per-token objective and aggregation): {described(AGGREGATIONS)}.")
    importance_sampling_level: str = field("token", help=f"Ratio per token, or per sequence (GSPO): {one_of(IS_LEVELS)}.")
    sapo_temperature_pos: float = field(1.0, help="loss_type sapo: the soft gate's temperature for positive advantages.")
    sapo_temperature_neg: float = field(1.05, help="loss_type sapo: the soft gate's temperature for negative advantages.")
    scale_rewards: str = field("group", help=f"Advantage scaling: {described(SCALES)}; true/false mean group/none.")
    num_iterations: int = field(1, help="Passes over each generation batch (the paper's mu), each making "
                                        "steps_per_generation / gradient_accumulation_steps optimizer updates.")
    mask_truncated_completions: bool = field(False, help="Exclude completions cut by max_completion_length from the loss.")
    dynamic_sampling: bool = field(False, help="DAPO: drop groups whose rewards all agree and refill the batch.")
    max_resample_rounds: int = field(4, help="Dynamic sampling: at most this many extra generation rounds per step.")
    skip_zero_advantage_backward: bool = field(True, help="Completions whose advantage is exactly 0 (a group whose "
                                               "rewards all agree) run forward only, for the logged statistics: with "
                                               "beta 0 their loss and its gradient are exactly 0, so the update is the "
                                               "same without their backward pass. Not with beta > 0 (the KL term has a "
                                               "gradient) or loss_type bnpo (its micro-batch token means count them).")

    # ---- sampler/trainer mismatch and async generation ----
    async_generation: bool = field(False, help="Generate the next step's batch while this step trains (one step "
                                               "off-policy, as verl and prime-rl do; TRL's AsyncGRPOTrainer), corrected "
                                               "by vllm_importance_sampling_*. Not with dynamic_sampling.")
    max_staleness: int = field(1, help="async_generation: a batch may be sampled by weights at most this many "
                                       "syncs old (r1kit generates one batch ahead, so its batches are 1 sync old).")
    vllm_importance_sampling_correction: bool = field(True, help="Weight each token's loss by pi_trainer/pi_sampler "
                                                                 "(truncated or masked, vllm_importance_sampling_mode) "
                                                                 "when the rollouts come from an engine holding its own "
                                                                 "weights (vllm, vllm-server) or from async_generation.")
    vllm_importance_sampling_mode: str = field("sequence_mask", help=f"{one_of(IS_MODES)}: truncate the ratio at the "
                                                                     "clip bounds, or drop what falls outside them.")
    vllm_importance_sampling_clip_max: float | None = field(3.0, help="Upper bound C_max of the importance ratio.")
    vllm_importance_sampling_clip_min: float | None = field(None, help="Lower bound C_min of the importance ratio.")
    vllm_importance_sampling_cap: float | None = field(None, help="TRL's older name of vllm_importance_sampling_clip_max "
                                                                  "(when set, it is used as clip_max).")

    # ---- optimisation and outputs: TrainingArgs, with GRPO's defaults ----
    learning_rate: float = field(1e-6, help="Peak learning rate of AdamW.")
    adam_beta2: float = field(0.99, help="AdamW beta2.")
    max_steps: int = field(-1, help="Optimizer updates (TRL's steps; a generation batch makes num_iterations x "
                                    "steps_per_generation / gradient_accumulation_steps of them); -1 = from "
                                    "num_train_epochs.")
    num_train_epochs: float = field(1.0, help="Passes over the prompts, when max_steps is -1.")
    per_device_train_batch_size: int = field(8, help="Completions per micro-batch per device (TRL's meaning).")
    output_dir: str = field("outputs/grpo", help="Where metrics, completions, checkpoints and the model go.")
    logging_steps: int = field(1, help="Log metrics every this many optimizer updates.")
    log_completions: bool = field(True, help="Write prompts, completions, rewards and advantages per step.")

    def __post_init__(self):
        ModelArgs.__post_init__(self)
        TrainingArgs.__post_init__(self)

        def need(cond: bool, name: str, msg: str):
            common_need(self, cond, name, msg)

        need(self.loss_type in AGGREGATIONS, "loss_type", f"must be one of {list(AGGREGATIONS)}")
        need(self.importance_sampling_level in IS_LEVELS, "importance_sampling_level", f"must be {one_of(IS_LEVELS)}")
        need(self.sapo_temperature_pos > 0, "sapo_temperature_pos", "must be > 0")
        need(self.sapo_temperature_neg > 0, "sapo_temperature_neg", "must be > 0")
        need(self.vllm_importance_sampling_mode in IS_MODES, "vllm_importance_sampling_mode", f"must be {one_of(IS_MODES)}")
        if self.vllm_importance_sampling_cap is not None:
            self.vllm_importance_sampling_clip_max = self.vllm_importance_sampling_cap
        lo, hi = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        need(lo is None or hi is None or lo < hi, "vllm_importance_sampling_clip_min",
             f"must be below vllm_importance_sampling_clip_max ({hi})")
        need(not self.vllm_importance_sampling_mode.endswith("_truncate") or lo is not None or hi is not None,
             "vllm_importance_sampling_mode", "truncates the ratio, so it needs vllm_importance_sampling_clip_max "
             "or _clip_min")
        need(self.max_staleness >= 1, "max_staleness", "must be >= 1 (r1kit's async generation runs one batch ahead)")
        need(not (self.async_generation and self.dynamic_sampling), "async_generation",
             "cannot be combined with dynamic_sampling (its extra rounds need the current batch's rewards)")
        if self.loss_type == "cispo" and self.epsilon_high is None:
            log.warning("loss_type cispo caps the importance weight at epsilon_high, which is unset: the cap is "
                        "epsilon=%g (TRL does the same; CISPO's authors use a cap of about 5)", self.epsilon)
        if isinstance(self.scale_rewards, bool) or self.scale_rewards in ("true", "false", "True", "False"):
            self.scale_rewards = "group" if str(self.scale_rewards).lower() == "true" else "none"
        need(self.scale_rewards in SCALES, "scale_rewards", f"must be one of {list(SCALES)} (or true/false)")
        need(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", f"must be {one_of(KL_ESTIMATORS)}")
        need(is_template(self.template), "template", f"must be {template_choices()}")
        need(self.rollout_engine in ENGINES or self.rollout_engine in ALIASES, "rollout_engine",
             f"must be {one_of(ENGINES)}")
        need(self.num_iterations >= 1, "num_iterations", "must be >= 1")
        need(self.max_completion_length >= 1, "max_completion_length", "must be >= 1")
        need(self.max_prompt_length >= 1, "max_prompt_length", "must be >= 1")
        need(self.temperature >= 0, "temperature", "must be >= 0")
        need(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(self.beta >= 0, "beta", "must be >= 0")
        need(self.epsilon >= 0, "epsilon", "must be >= 0")
        need(self.max_reward_failure_fraction is None or 0 <= self.max_reward_failure_fraction <= 1,
             "max_reward_failure_fraction", "must be in [0, 1] or null")
        need(len(self.reward_funcs) >= 1, "reward_funcs", "must name at least one reward function")
        need(
            self.reward_weights is None or len(self.reward_weights) == len(self.reward_funcs),
            "reward_weights", f"must have one weight per reward function ({len(self.reward_funcs)})",
        )
        generation_plan(self)  # num_generations, steps_per_generation, generation_batch_size: TRL's checks
        self.apply_trl_keys()  # last: TRL/open-r1 keys onto r1kit's options, warnings (trl_args.py)
