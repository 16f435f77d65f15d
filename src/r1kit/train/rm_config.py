"""`RMConfig`: every option of `r1kit rm` (Bradley-Terry reward model), TRL's RewardConfig names where it has one."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import field


@dataclass
class RMConfig:
    # ---- model ----
    model_name_or_path: str = field("r1kit:tiny", help="A causal-LM (or sequence-classification) folder, hub id, or "
                                                       "r1kit:tiny; a one-output score head is added on top.")
    dtype: str = field("auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16.")

    # ---- data ----
    dataset_name: str = field("r1kit:preferences", help="A .jsonl/.json/.parquet file (or folder) with prompt, chosen, "
                                                        "rejected columns, or r1kit:preferences (tiny-world pairs).")
    dataset_train_split: str = field("train", help="Split to train on (folders and hub datasets).")
    dataset_num_rows: int | None = field(None, help="Use only the first this many pairs (r1kit:preferences: how many "
                                                    "to generate, default 2000).")
    eval_fraction: float = field(0.1, help="Fraction of the pairs held out for eval_loss/eval_accuracy (0 = none).")
    segment: str = field("answer", help="What of each response the model reads: answer (the summary after </think>, "
                                        "helpfulness) or full (the whole response, harmlessness).")
    template: str = field("auto", help="How prompt + response become text: chat (tokenizer's chat template), plain "
                                       "('User: ...\\nAssistant: ...'), auto (chat if the tokenizer has one).")
    max_length: int = field(512, help="Longest tokenized prompt + response; longer ones are cut from the left.")

    # ---- optimisation ----
    learning_rate: float = field(1e-5, help="Peak learning rate of AdamW.")
    lr_scheduler_type: str = field("linear", help="Any transformers scheduler name (linear, cosine, constant, ...).")
    warmup_ratio: float = field(0.0, help="Fraction of optimizer steps spent warming up.")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm; a non-finite norm skips the step.")
    center_rewards_coefficient: float = field(0.0, help="Adds coef * mean((r_chosen + r_rejected)^2) to keep rewards "
                                                        "centred at 0 (TRL's option; 0 = off).")
    max_steps: int = field(-1, help="Optimizer steps; -1 = from num_train_epochs.")
    num_train_epochs: float = field(1.0, help="Passes over the training pairs, when max_steps is -1.")
    per_device_train_batch_size: int = field(8, help="Pairs per micro-batch.")
    gradient_accumulation_steps: int = field(1, help="Micro-batches per optimizer step.")
    seed: int = field(42, help="Seed for data order, the held-out split and initialisation.")

    # ---- outputs ----
    output_dir: str = field("outputs/rm", help="Where metrics, checkpoints and the reward model go.")
    save_steps: int = field(100, help="Checkpoint every this many steps (0 = only at the end).")
    save_total_limit: int | None = field(None, help="Keep only this many checkpoints.")
    logging_steps: int = field(10, help="Log metrics every this many steps.")
    eval_steps: int = field(0, help="Evaluate on the held-out pairs every this many steps (0 = only at the end).")
    report_to: list[str] = field(["none"], help="none, tensorboard, wandb or trackio.")
    resume_from_checkpoint: str | None = field(None, help="A checkpoint folder, or true for the latest in output_dir.")
    disable_tqdm: bool = field(False, help="Hide the progress bar.")

    def __post_init__(self):
        def need(cond: bool, name: str, msg: str):
            if not cond:
                raise ValueError(f"'{name}' {msg}, got {getattr(self, name)!r}")

        need(self.segment in ("answer", "full"), "segment", "must be answer or full")
        need(self.template in ("auto", "chat", "plain"), "template", "must be auto, chat or plain")
        need(0 <= self.eval_fraction < 1, "eval_fraction", "must be in [0, 1)")
        need(self.max_length >= 8, "max_length", "must be >= 8")
        need(self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be >= 1")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        need(self.learning_rate >= 0, "learning_rate", "must be >= 0")
        need(0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
        need(self.max_steps != 0 and self.max_steps >= -1, "max_steps", "must be positive or -1")
        need(self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        need(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        need(self.save_steps >= 0, "save_steps", "must be >= 0")
        need(self.eval_steps >= 0, "eval_steps", "must be >= 0")
        need(self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        need(self.dataset_num_rows is None or self.dataset_num_rows >= 2, "dataset_num_rows", "must be >= 2")

    @property
    def batch_size(self) -> int:
        """Pairs per optimizer step: micro-batch size x accumulation steps."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps
