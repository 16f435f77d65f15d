"""`RMConfig`: every option of `r1kit rm` (Bradley-Terry reward model), TRL's RewardConfig names where it has one."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import field, one_of
from r1kit.rewards.reward_model import SEGMENTS, TEMPLATES
from r1kit.train.common_config import LoraArgs, TrainingArgs
from r1kit.train.common_config import need as common_need


@dataclass
class RMConfig(TrainingArgs, LoraArgs):
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

    # ---- optimisation and outputs: TrainingArgs, with the reward model's defaults ----
    center_rewards_coefficient: float = field(0.0, help="Adds coef * mean((r_chosen + r_rejected)^2) to keep rewards "
                                                        "centred at 0 (TRL's option; 0 = off).")
    per_device_train_batch_size: int = field(8, help="Pairs per micro-batch.")
    output_dir: str = field("outputs/rm", help="Where metrics, checkpoints and the reward model go.")
    eval_steps: int = field(0, help="Evaluate on the held-out pairs every this many steps (0 = only at the end).")

    def __post_init__(self):
        TrainingArgs.__post_init__(self)
        LoraArgs.__post_init__(self)

        def need(cond: bool, name: str, msg: str):
            common_need(self, cond, name, msg)

        need(self.segment in SEGMENTS, "segment", f"must be {one_of(SEGMENTS)}")
        need(self.template in TEMPLATES, "template", f"must be {one_of(TEMPLATES)}")
        need(0 <= self.eval_fraction < 1, "eval_fraction", "must be in [0, 1)")
        need(self.max_length >= 8, "max_length", "must be >= 8")
        need(self.eval_steps >= 0, "eval_steps", "must be >= 0")
        need(self.dataset_num_rows is None or self.dataset_num_rows >= 2, "dataset_num_rows", "must be >= 2")
