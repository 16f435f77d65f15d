"""`SFTConfig`: every option of `r1kit sft`, with TRL's SFTConfig names and meanings where TRL has one."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import field
from r1kit.data.sft_data import SFT_TEMPLATES
from r1kit.data.templates import is_template, template_choices, template_help
from r1kit.train.common_config import ModelArgs, TrainingArgs
from r1kit.train.common_config import need as common_need
from r1kit.train.trl_args import TRLSFTArgs


@dataclass
class SFTConfig(TRLSFTArgs, TrainingArgs, ModelArgs):
    # ---- data ----
    dataset_name: str = field("", help="A .jsonl/.json/.parquet file, a folder of them (or a save_to_disk folder), or a hub id.")
    dataset_config: str | None = field(None, help="Hub dataset configuration name.")
    dataset_train_split: str = field("train", help="Split to train on (folders and hub datasets).")
    dataset_num_rows: int | None = field(None, help="Use only the first this many rows.")
    messages_column: str = field("messages", help="Column of chat conversations (loss on assistant turns); used when present.")
    prompt_column: str = field("prompt", help="Prompt column of prompt/completion data (a string or chat messages).")
    completion_column: str = field("completion", help="Completion column of prompt/completion data (a string or assistant messages).")
    dataset_text_field: str = field("text", help="Column of plain-text (language modeling) data, trained on all its tokens; "
                                                 "used when neither messages nor prompt/completion columns are there.")
    template: str = field("none", help=f"How a string prompt becomes text: {template_help(extra=SFT_TEMPLATES, custom=True)}. "
                                       "Default none: as is, as TRL does (a conversation prompt goes through the "
                                       "chat template either way).")
    system_prompt: str | None = field(None, help="System message for template: chat.")
    max_length: int = field(1024, help="Longest tokenized example (prompt + completion + EOS); also the packed row length.")
    truncate: bool = field(False, help="Cut examples longer than max_length (from the right) instead of failing on them.")
    packing: bool = field(False, help="Pack several examples into one row of max_length tokens (position ids restart per example).")
    completion_only_loss: bool | None = field(None, help="prompt/completion rows: loss on the completion tokens only "
                                                         "(true) or on every token (false); null = true for them, as "
                                                         "in TRL. No effect on messages and text rows.")
    assistant_only_loss: bool = field(False, help="Conversations (messages rows, or conversation prompts/completions): "
                                                  "loss on the assistant turns only; false (TRL's default): on every "
                                                  "token.")

    # ---- optimisation and outputs: TrainingArgs, with SFT's defaults ----
    learning_rate: float = field(2e-5, help="Peak learning rate of AdamW.")
    max_steps: int = field(-1, help="Optimizer steps; -1 = from num_train_epochs.")
    num_train_epochs: float = field(3.0, help="Passes over the training rows, when max_steps is -1.")
    per_device_train_batch_size: int = field(8, help="Rows (examples, or packed rows) per micro-batch per device.")
    output_dir: str = field("outputs/sft", help="Where metrics, checkpoints and the final model go.")
    save_steps: int = field(500, help="Checkpoint every this many steps (0 = only at the end).")

    def __post_init__(self):
        ModelArgs.__post_init__(self)
        TrainingArgs.__post_init__(self)

        def need(cond: bool, name: str, msg: str):
            common_need(self, cond, name, msg)

        need(bool(self.dataset_name), "dataset_name", "must name a dataset (file, folder or hub id)")
        need(is_template(self.template, extra=SFT_TEMPLATES, custom=True), "template",
             f"must be {template_choices(extra=SFT_TEMPLATES, custom=True)}")
        need(self.max_length >= 2, "max_length", "must be >= 2")
        need(self.dataset_num_rows is None or self.dataset_num_rows >= 1, "dataset_num_rows", "must be >= 1")
        self.apply_trl_keys()  # last: TRL/open-r1 keys onto r1kit's options, warnings (trl_args.py)
