"""Options shared by r1kit's trainers (GRPO, SFT, reward model), with TRL's names and meanings.

A trainer's config inherits these blocks and redeclares a field only to change its default
(e.g. GRPO's learning rate is 1e-6, SFT's 2e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import field, one_of
from r1kit.train.tracking import KNOWN_TRACKERS, check_trackers
from r1kit.utils.dist import STRATEGIES


def need(cfg, cond: bool, name: str, msg: str) -> None:
    """Raise a ValueError naming the field when `cond` is false."""
    if not cond:
        raise ValueError(f"'{name}' {msg}, got {getattr(cfg, name)!r}")


@dataclass
class LoraArgs:
    lora_r: int = field(0, help="LoRA rank; 0 trains all weights.")
    lora_alpha: int = field(16, help="LoRA alpha.")
    lora_dropout: float = field(0.0, help="LoRA dropout.")
    lora_target_modules: list[str] | None = field(None, help="Module names LoRA wraps (default: all linear layers).")

    def __post_init__(self):
        need(self, self.lora_r >= 0, "lora_r", "must be >= 0")

    def lora(self) -> dict | None:
        """The LoRA options for `load_model_and_tokenizer`, or None when training all weights."""
        if self.lora_r == 0:
            return None
        return dict(r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout,
                    target_modules=self.lora_target_modules or "all-linear")


@dataclass
class ModelArgs(LoraArgs):
    model_name_or_path: str = field("r1kit:tiny", help="Local folder, hub id, a .gguf file, r1kit:tiny-base (the shipped "
                                                       "tiny-world model) or r1kit:tiny (a random model built locally).")
    tokenizer_name_or_path: str | None = field(None, help="Tokenizer to use when it differs from the model's.")
    dtype: str = field("auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16.")


@dataclass
class TrainingArgs:
    # ---- optimisation ----
    learning_rate: float = field(1e-5, help="Peak learning rate of AdamW.")
    lr_scheduler_type: str = field("linear", help="Any transformers scheduler name (linear, cosine, constant, ...).")
    warmup_ratio: float = field(0.0, help="Fraction of optimizer steps spent warming up.")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    adam_beta1: float = field(0.9, help="AdamW beta1.")
    adam_beta2: float = field(0.999, help="AdamW beta2.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm; a non-finite norm skips the step.")
    max_steps: int = field(-1, help="Training steps; -1 = from num_train_epochs.")
    num_train_epochs: float = field(1.0, help="Passes over the training rows, when max_steps is -1.")
    per_device_train_batch_size: int = field(8, help="Rows per micro-batch per device.")
    gradient_accumulation_steps: int = field(1, help="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = field(False, help="Recompute each decoder layer's activations in backward instead "
                                                     "of storing them: much less memory for about one extra forward.")
    seed: int = field(42, help="Seed for data order, sampling and initialisation.")
    cpu_threads: int = field(0, help="torch CPU threads when training on the CPU; 0 = adapt before every step to the "
                                     "cores other processes leave free (all of them on an idle machine; at most "
                                     "torch's thread count at the start).")
    distributed_strategy: str = field("auto", help=f"Multi-process data parallel: {one_of(STRATEGIES)} (auto: fsdp2 "
                                                   "when accelerate launch says FSDP/ZeRO-2/3, else ddp).")

    # ---- outputs ----
    output_dir: str = field("outputs/run", help="Where metrics, checkpoints and the final model go.")
    save_steps: int = field(100, help="Checkpoint every this many steps (0 = only at the end).")
    save_total_limit: int | None = field(None, help="Keep only this many checkpoints.")
    logging_steps: int = field(10, help="Log metrics every this many steps.")
    report_to: list[str] = field(["none"], help=f"{one_of(KNOWN_TRACKERS)}.")
    resume_from_checkpoint: str | None = field(None, help="A checkpoint folder, or true for the latest in output_dir.")
    disable_tqdm: bool = field(False, help="Hide the progress bar.")

    def __post_init__(self):
        need(self, self.per_device_train_batch_size >= 1, "per_device_train_batch_size", "must be >= 1")
        need(self, self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be >= 1")
        need(self, self.learning_rate >= 0, "learning_rate", "must be >= 0")
        need(self, 0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
        need(self, self.max_steps != 0 and self.max_steps >= -1, "max_steps", "must be positive or -1")
        need(self, self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        need(self, self.cpu_threads >= 0, "cpu_threads", "must be >= 0 (0 = adapt to the free cores)")
        need(self, self.logging_steps >= 1, "logging_steps", "must be >= 1")
        need(self, self.save_steps >= 0, "save_steps", "must be >= 0")
        need(self, self.save_total_limit is None or self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        need(self, self.distributed_strategy in STRATEGIES, "distributed_strategy", f"must be one of {list(STRATEGIES)}")
        need(self, set(self.report_to) <= set(KNOWN_TRACKERS), "report_to", f"must list trackers of {list(KNOWN_TRACKERS)}")
        check_trackers(self.report_to)  # a tracker whose package is missing fails here, before the run

    @property
    def batch_size(self) -> int:
        """Rows per optimizer step on one device: micro-batch size x accumulation steps."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps
