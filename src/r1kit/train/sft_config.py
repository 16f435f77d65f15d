"""`SFTConfig`: every option of `r1kit sft`, with TRL's SFTConfig names and meanings where TRL has one."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import field

TEMPLATES = ("r1_zero", "chat", "none")


@dataclass
class SFTConfig:
    # ---- model ----
    model_name_or_path: str = field("r1kit:tiny", help="Local folder, hub id, a .gguf file, or r1kit:tiny (a small model built locally).")
    tokenizer_name_or_path: str | None = field(None, help="Tokenizer to use when it differs from the model's.")
    dtype: str = field("auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16.")
    lora_r: int = field(0, help="LoRA rank; 0 trains all weights.")
    lora_alpha: int = field(16, help="LoRA alpha.")
    lora_dropout: float = field(0.0, help="LoRA dropout.")
    lora_target_modules: list[str] | None = field(None, help="Module names LoRA wraps (default: all linear layers).")

    # ---- data ----
    dataset_name: str = field("", help="A .jsonl/.json/.parquet file, a folder of them (or a save_to_disk folder), or a hub id.")
    dataset_config: str | None = field(None, help="Hub dataset configuration name.")
    dataset_train_split: str = field("train", help="Split to train on (folders and hub datasets).")
    dataset_num_rows: int | None = field(None, help="Use only the first this many rows.")
    messages_column: str = field("messages", help="Column of chat conversations (loss on assistant turns); used when present.")
    prompt_column: str = field("prompt", help="Prompt column of prompt/completion data (a string or chat messages).")
    completion_column: str = field("completion", help="Completion column of prompt/completion data (a string or assistant messages).")
    template: str = field("r1_zero", help="How a string prompt becomes text: r1_zero (the paper's Table 1), chat (the tokenizer's chat template) or none (as is).")
    system_prompt: str | None = field(None, help="System message for template: chat.")
    max_length: int = field(1024, help="Longest tokenized example (prompt + completion + EOS); also the packed row length.")
    truncate: bool = field(False, help="Cut examples longer than max_length (from the right) instead of failing on them.")
    packing: bool = field(False, help="Pack several examples into one row of max_length tokens (position ids restart per example).")
    completion_only_loss: bool = field(True, help="Loss on completion (assistant) tokens only; false: on every token.")

    # ---- optimisation ----
    learning_rate: float = field(2e-5, help="Peak learning rate of AdamW.")
    lr_scheduler_type: str = field("linear", help="Any transformers scheduler name (linear, cosine, constant, ...).")
    warmup_ratio: float = field(0.0, help="Fraction of optimizer steps spent warming up.")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    adam_beta1: float = field(0.9, help="AdamW beta1.")
    adam_beta2: float = field(0.999, help="AdamW beta2.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm; a non-finite norm skips the step.")
    max_steps: int = field(-1, help="Optimizer steps; -1 = from num_train_epochs.")
    num_train_epochs: float = field(3.0, help="Passes over the training rows, when max_steps is -1.")
    per_device_train_batch_size: int = field(8, help="Rows (examples, or packed rows) per micro-batch per device.")
    gradient_accumulation_steps: int = field(1, help="Micro-batches per optimizer step.")
    seed: int = field(42, help="Seed for data order and initialisation.")

    # ---- outputs ----
    output_dir: str = field("outputs/sft", help="Where metrics, checkpoints and the final model go.")
    save_steps: int = field(500, help="Checkpoint every this many steps (0 = only at the end).")
    save_total_limit: int | None = field(None, help="Keep only this many checkpoints.")
    logging_steps: int = field(10, help="Log metrics every this many steps.")
    report_to: list[str] = field(["none"], help="none, tensorboard, wandb or trackio.")
    resume_from_checkpoint: str | None = field(None, help="A checkpoint folder, or true for the latest in output_dir.")
    disable_tqdm: bool = field(False, help="Hide the progress bar.")

    def __post_init__(self):
        def need(cond: bool, name: str, msg: str):
            if not cond:
                raise ValueError(f"'{name}' {msg}, got {getattr(self, name)!r}")

        need(bool(self.dataset_name), "dataset_name", "must name a dataset (file, folder or hub id)")
        need(self.template in TEMPLATES or "{prompt}" in self.template, "template",
             f"must be one of {list(TEMPLATES)} or a string containing '{{prompt}}'")
        need(self.max_length >= 2, "max_length", "must be >= 2")
        need(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be >= 1")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        need(self.learning_rate >= 0, "learning_rate", "must be >= 0")
        need(0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
        need(self.max_steps != 0 and self.max_steps >= -1, "max_steps", "must be positive or -1")
        need(self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        need(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        need(self.save_steps >= 0, "save_steps", "must be >= 0")
        need(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        need(self.dataset_num_rows is None or self.dataset_num_rows >= 1, "dataset_num_rows", "must be >= 1")
        need(self.lora_r >= 0, "lora_r", "must be >= 0")

    @property
    def batch_size(self) -> int:
        """Rows per optimizer step on one device: micro-batch size x accumulation steps."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps
