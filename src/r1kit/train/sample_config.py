"""`SampleConfig`: every option of `r1kit sample` (rejection sampling with the paper's filters)."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import described, field
from r1kit.data.templates import is_template, template_choices, template_help
from r1kit.rollout.base import ENGINES


@dataclass
class SampleConfig:
    # ---- model and data ----
    model_name_or_path: str = field("r1kit:tiny", help="Model folder, hub id, .gguf file or r1kit:tiny to sample from.")
    tokenizer_name_or_path: str | None = field(None, help="Tokenizer to use when it differs from the model's.")
    dtype: str = field("auto", help="auto, float32, bfloat16 or float16.")
    dataset_name: str = field("r1kit:arithmetic", help="Prompts: hub id, local folder, .jsonl/.parquet file, or r1kit:TASK.")
    dataset_config: str | None = field(None, help="Hub dataset configuration name.")
    dataset_split: str = field("train", help="Split to sample prompts from.")
    dataset_prompt_column: str = field("prompt", help="Column holding the prompt (a string or chat messages).")
    dataset_answer_column: str = field("solution", help="Column holding the reference answer.")
    dataset_num_rows: int | None = field(None, help="Use only this many prompts (procedural tasks: how many to generate).")
    template: str = field("r1_zero", help=f"{template_help(custom=True)}; use the same one for r1kit sft.")
    system_prompt: str | None = field(None, help="System message for template: chat.")
    # ---- generation ----
    rollout_engine: str = field("hf", help=f"Rollout backend: {described(ENGINES)}.")
    rollout_engine_kwargs: dict = field({}, help="Options for the engine (see r1kit grpo --help).")
    num_samples: int = field(4, help="Samples per prompt (k).")
    prompts_per_batch: int = field(32, help="Prompts per generation call (each with num_samples samples).")
    max_completion_length: int = field(512, help="Maximum new tokens per sample.")
    temperature: float = field(0.6, help="Sampling temperature (the paper's evaluation setting: 0.6).")
    top_p: float = field(0.95, help="Nucleus sampling threshold.")
    top_k: int = field(0, help="Top-k sampling; 0 disables it.")
    stop_strings: list[str] | None = field(None, help="Generation stops after any of these strings (e.g. </answer>).")
    seed: int = field(0, help="Seed of the procedural prompts and of sampling.")
    # ---- verification ----
    reward_funcs: list[str] = field(["accuracy"], help="Rewards recorded per sample: names, import paths, or rm:PATH?segment=answer.")
    reward_weights: list[float] | None = field(None, help="Weights for the recorded reward_total (default: all 1).")
    verify_reward: str | None = field(None, help="The reward_funcs entry a sample must pass (default: accuracy if listed, else the first); 'total' = the weighted sum.")
    min_reward: float = field(1.0, help="Keep a sample when its verify_reward value is >= this.")
    reward_timeout_s: float | None = field(None, help="Per-row deadline for reward functions, run in a killable worker.")
    # ---- the paper's filters ----
    drop_truncated: bool = field(True, help="Drop samples cut by max_completion_length.")
    language: str = field("en", help="Target language of the chain of thought (code, name or script).")
    min_language_share: float | None = field(1.0, help="Drop a sample whose CoT has a smaller share of target-language words (null: off).")
    max_paragraph_chars: int | None = field(3000, help="Drop a sample with a paragraph longer than this (null: off).")
    filter_code_blocks: bool = field(True, help="Drop a sample whose chain of thought holds a ``` code fence.")
    dedup: bool = field(True, help="Keep one copy of each normalised completion per prompt.")
    max_per_prompt: int | None = field(None, help="Keep at most this many samples per prompt (null: all).")
    decontamination_datasets: list[str] = field([], help="Evaluation sets to decontaminate against: r1kit:TASK (its test split) or local files.")
    decontamination_columns: list[str] = field(["prompt", "problem", "question", "solution", "answer"], help="Their text columns to match.")
    decontamination_ngram: int = field(13, help="n of the shared word-token n-grams that mark a sample contaminated.")
    decontamination_min_tokens: int = field(5, help="Evaluation texts shorter than n tokens are matched whole if they have at least this many.")
    decontamination_num_rows: int = field(200, help="Rows of each r1kit:TASK test split (r1kit eval's default).")
    decontamination_seed: int = field(0, help="Seed of the r1kit:TASK test rows (r1kit eval's default).")
    # ---- outputs ----
    output_dir: str = field("outputs/sample", help="Where samples, stats.json and rejected.jsonl go.")
    output_format: list[str] = field(["jsonl"], help="jsonl and/or parquet.")
    write_rejected: bool = field(False, help="Also write rejected.jsonl (every dropped sample with its verdicts).")

    def __post_init__(self):
        def need(cond: bool, name: str, msg: str):
            if not cond:
                raise ValueError(f"'{name}' {msg}, got {getattr(self, name)!r}")

        need(is_template(self.template, custom=True), "template", f"must be {template_choices(custom=True)}")
        need(self.num_samples >= 1, "num_samples", "must be >= 1")
        need(self.prompts_per_batch >= 1, "prompts_per_batch", "must be >= 1")
        need(self.max_completion_length >= 1, "max_completion_length", "must be >= 1")
        need(len(self.reward_funcs) >= 1, "reward_funcs", "must name at least one reward function")
        need(self.reward_weights is None or len(self.reward_weights) == len(self.reward_funcs), "reward_weights",
             "must have one weight per reward function")
        need(self.verify_reward is None or self.verify_reward in ("total", *self.reward_funcs), "verify_reward",
             f"must be 'total' or one of reward_funcs {self.reward_funcs}")
        need(self.max_per_prompt is None or self.max_per_prompt >= 1, "max_per_prompt", "must be >= 1")
        need(self.decontamination_ngram >= 1, "decontamination_ngram", "must be >= 1")
        need(bool(self.output_format) and set(self.output_format) <= {"jsonl", "parquet"}, "output_format",
             "must list jsonl and/or parquet")
