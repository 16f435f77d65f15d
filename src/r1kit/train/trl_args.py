"""TRL's and open-r1's recipe keys that r1kit's own options did not cover, so their recipes load unchanged.

`GRPOConfig` inherits `TRLGRPOArgs` and `SFTConfig` `TRLSFTArgs`; their `__post_init__` calls `apply_trl_keys()`
last. Every key here is one of (the `trl` metadata of its field, which README's table shows):

* "mapped": TRL's meaning, carried out by an r1kit option or by the code that reads the key (`bf16` -> dtype,
  `use_vllm` -> rollout_engine, `lr_scheduler_kwargs` -> the schedule, `chat_template` -> the tokenizer, ...);
* "warned": r1kit does not do what the key asks (push to the Hub, evaluate during training, Liger kernels...):
  the run goes on, and one warning says what was not done and what to use instead.

A key whose value TRL itself would not act on (per_device_eval_batch_size while evaluation is off) gets one INFO
line. Each warning or INFO line names its keys (log record attribute `trl_keys`); nothing is dropped silently.
Step counts that need the run's length (save_steps as a fraction, the "epoch" strategies) are resolved by
`resolve_steps` when the run starts. The help groups, the hints for TRL keys r1kit does not take and README's
table are in `r1kit.train.trl_table`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields

from r1kit.config import field
from r1kit.models.loading import DTYPES
from r1kit.rollout.base import ALIASES
from r1kit.train.common_config import need
from r1kit.train.trl_table import HELP_GROUPS, help_footer, help_group, unknown_key_hints

log = logging.getLogger("r1kit.trl")

MAPPED, WARNED = "mapped", "warned"
STRATEGIES = ("no", "steps", "epoch")
HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
LOG_LEVELS = ("passive", "debug", "info", "warning", "error", "critical")
ADAMW = ("adamw_torch", "adamw_torch_fused")  # torch.optim.AdamW (multi-tensor, fused)
# The same AdamW update in another precision, memory layout or device: r1kit trains with plain AdamW instead.
ADAMW_VARIANTS = ("adamw_torch_xla", "adamw_torch_npu_fused", "adamw_anyprecision", "adamw_torch_4bit",
                  "adamw_torch_8bit", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit")
# open-r1 rewards that send code to judging services (Piston or Morph workers): r1kit has no such service.
REMOTE_JUDGES = {"ioi_code": "IOI problems", "cf_code": "Codeforces problems"}
OPEN_R1_CALLBACKS = ("push_to_hub_revision",)


def trl(default, kind: str, group: str, help: str):  # noqa: A002
    """A TRL/open-r1 key's field: `kind` mapped or warned; `group` its `--help` heading. Warned keys are not
    offered as "did you mean" suggestions (they do nothing here)."""
    return field(default, help, group=group, suggest=kind != WARNED, meta={"trl": kind})


class Notes:
    """The warnings and INFO lines of one config, each naming its keys; logged once, by `emit`."""

    def __init__(self):
        self.items: list[tuple[int, tuple[str, ...], str]] = []

    def warn(self, keys, text: str) -> None:
        self.items.append((logging.WARNING, tuple(keys), text))

    def info(self, keys, text: str) -> None:
        self.items.append((logging.INFO, tuple(keys), text))

    def emit(self) -> None:
        for level, keys, text in self.items:
            log.log(level, "%s: %s", ", ".join(keys), text, extra={"trl_keys": keys})


@dataclass
class TRLArgs:
    """The keys GRPO and SFT share: TRL's ModelConfig and TrainingArguments, open-r1's script keys."""

    # ---- model ----
    model_revision: str = trl("main", MAPPED, "model", "Hub revision (branch, tag or commit) of model_name_or_path "
                                                       "and its tokenizer (TRL's ModelConfig); a local folder or "
                                                       "r1kit:* model has none: another value than main warns.")
    torch_dtype: str | None = trl(None, MAPPED, "model", "TRL's older name of dtype: sets dtype (whose auto is "
                                                         "float32 on CPU, bfloat16 on GPU).")
    attn_implementation: str | None = trl(None, MAPPED, "model", "Attention kernel given to from_pretrained (eager, "
                                                                 "sdpa, flash_attention_2, ...); flash_attention_* "
                                                                 "without flash-attn or CUDA: a warning, then sdpa.")
    trust_remote_code: bool = trl(False, MAPPED, "model", "Run the model's and tokenizer's own code from the Hub.")
    chat_template: str | None = trl(None, MAPPED, "model", "A Jinja chat template set on the tokenizer and saved "
                                                           "with it (open-r1's key). GRPO: prompts go through it "
                                                           "(template chat).")

    # ---- training / optimisation ----
    bf16: bool | None = trl(None, MAPPED, "training", "true: dtype bfloat16 (if torch_dtype/dtype say another: a "
                                                      "warning, r1kit has no mixed precision); false: float32.")
    fp16: bool | None = trl(None, MAPPED, "training", "true: dtype float16, trained as is, with a warning (TRL keeps "
                                                      "float32 master weights and scales the loss; bf16 is safer).")
    optim: str = trl("adamw_torch_fused", MAPPED, "training", "adamw_torch_fused: AdamW, fused kernel where torch has "
                                                              "one (CPU, CUDA); adamw_torch: AdamW, multi-tensor; "
                                                              "another AdamW (8-bit, paged...): a warning, then "
                                                              "AdamW; another optimizer: an error.")
    lr_scheduler_kwargs: dict | None = trl(None, MAPPED, "training", "The schedule's own options, e.g. {min_lr_rate: "
                                                                     "0.1} for cosine_with_min_lr (transformers' "
                                                                     "get_scheduler).")
    gradient_checkpointing_kwargs: dict | None = trl(None, MAPPED, "training", "r1kit checkpoints non-reentrant, as "
                                                                               "{use_reentrant: false} asks; other "
                                                                               "options: a warning.")
    data_seed: int | None = trl(None, WARNED, "training", "r1kit orders the data with seed: another data_seed warns.")
    use_liger_kernel: bool = trl(False, WARNED, "training", "true: a warning; r1kit runs transformers' own layers "
                                                            "(the same math, more memory).")

    # ---- logging / saving ----
    logging_strategy: str = trl("steps", MAPPED, "logging", "steps: every logging_steps; epoch: at each epoch's end; "
                                                            "no: only the last step (r1kit always logs it).")
    logging_first_step: bool = trl(False, MAPPED, "logging", "Log step 1: r1kit does with logging_steps 1; else a "
                                                             "warning.")
    log_level: str = trl("passive", MAPPED, "logging", f"Level of r1kit's and transformers' loggers on the main "
                                                       f"process: {', '.join(LOG_LEVELS[1:])}; passive leaves them.")
    save_strategy: str = trl("steps", MAPPED, "logging", "steps: every save_steps (a fraction < 1 of the run's steps "
                                                         "allowed); epoch: at each epoch's end; no: only the last "
                                                         "step (r1kit always checkpoints it).")
    save_only_model: bool = trl(False, WARNED, "logging", "true: a warning; r1kit's checkpoints keep the optimizer, "
                                                          "schedule and RNG states so a run resumes exactly.")
    overwrite_output_dir: bool | None = trl(None, MAPPED, "logging", "r1kit writes over output_dir's earlier run (what "
                                                                     "true asks; resume with resume_from_checkpoint); "
                                                                     "false is not checked (INFO line).")
    wandb_entity: str | None = trl(None, MAPPED, "logging", "With report_to wandb: the run's entity (WANDB_ENTITY).")
    wandb_project: str | None = trl(None, MAPPED, "logging", "With report_to wandb: the run's project (WANDB_PROJECT).")
    wandb_run_group: str | None = trl(None, MAPPED, "logging", "With report_to wandb: the run's group "
                                                               "(WANDB_RUN_GROUP).")

    # ---- evaluation: r1kit's trainers do not evaluate; `r1kit eval` does ----
    do_eval: bool | None = trl(None, WARNED, "eval", "true: a warning (not evaluated); use r1kit eval on the model.")
    eval_strategy: str | None = trl(None, WARNED, "eval", "steps/epoch: a warning (not evaluated); no: as r1kit.")
    per_device_eval_batch_size: int | None = trl(None, WARNED, "eval", "Used only while evaluating (see do_eval).")
    dataset_test_split: str | None = trl(None, WARNED, "eval", "Used only while evaluating (see do_eval).")
    benchmarks: list[str] = trl([], WARNED, "eval", "open-r1's benchmarks after training: not run (a warning); use "
                                                    "r1kit eval.")

    # ---- Hugging Face Hub: r1kit does not upload ----
    push_to_hub: bool | None = trl(None, WARNED, "hub", "true: a warning, not pushed; the model stays in output_dir "
                                                        "(upload it with hf upload).")
    hub_model_id: str | None = trl(None, WARNED, "hub", "Used only when pushing (see push_to_hub).")
    hub_strategy: str | None = trl(None, WARNED, "hub", "Used only when pushing (see push_to_hub).")
    hub_always_push: bool | None = trl(None, WARNED, "hub", "Used only when pushing (see push_to_hub).")
    hub_model_revision: str | None = trl(None, WARNED, "hub", "open-r1: the Hub branch to push to (see push_to_hub).")
    callbacks: list[str] = trl([], WARNED, "hub", "open-r1's callbacks: push_to_hub_revision (a warning, not pushed).")

    COERCE_AS = {"save_steps": int | float}  # TRL: a fraction < 1 of the run's steps
    HELP_GROUPS = HELP_GROUPS  # --help: options under TRL's headings (config.describe)
    help_group = staticmethod(help_group)

    # ---- applied in __post_init__ ------------------------------------------------------------------

    def apply_trl_keys(self) -> None:
        """Carry the TRL keys over onto r1kit's options, check them, and log what r1kit does not do."""
        notes = Notes()
        self._dtype(notes)
        self._optimisation(notes)
        self._logging_and_saving(notes)
        self._not_done_here(notes)
        self._command_keys(notes)
        notes.emit()

    def _command_keys(self, notes: Notes) -> None:
        """GRPO's or SFT's own keys (the subclasses)."""

    def loader_options(self) -> dict:
        """The keyword arguments these keys add to `load_model_and_tokenizer`."""
        return dict(revision=self.model_revision, attn_implementation=self.attn_implementation,
                    trust_remote_code=self.trust_remote_code, chat_template=self.chat_template,
                    eos_token=getattr(self, "eos_token", None))

    def _dtype(self, notes: Notes) -> None:
        if self.torch_dtype is not None:
            need(self, self.torch_dtype in DTYPES, "torch_dtype", f"must be one of {list(DTYPES)}")
            need(self, self.dtype in ("auto", self.torch_dtype), "torch_dtype", f"disagrees with dtype "
                 f"{self.dtype!r}; set one of them")
            self.dtype = self.torch_dtype
        need(self, not (self.bf16 and self.fp16), "bf16", "and fp16 cannot both be true")
        key, wanted = ("bf16", "bfloat16") if self.bf16 else ("fp16", "float16") if self.fp16 else (None, None)
        if wanted and self.dtype not in ("auto", wanted):
            notes.warn([key], f"r1kit has no mixed precision: the weights train in {self.dtype} (torch_dtype/dtype); "
                              f"set torch_dtype: {wanted} to train in {wanted}")
        elif wanted:
            self.dtype = wanted
            if key == "fp16":
                notes.warn([key], "the weights train in float16 as they are, without TRL's float32 master weights "
                                  "and loss scaling; bf16 is safer")
        elif self.bf16 is False and not self.fp16 and self.dtype == "auto":
            self.dtype = "float32"

    def _optimisation(self, notes: Notes) -> None:
        need(self, self.optim in ADAMW + ADAMW_VARIANTS, "optim", f"must be an AdamW: {', '.join(ADAMW)} (or a "
             f"variant, trained as plain AdamW with a warning: {', '.join(ADAMW_VARIANTS)}); r1kit trains with AdamW")
        if self.optim in ADAMW_VARIANTS:
            notes.warn(["optim"], f"{self.optim} is not used: training with torch's AdamW (the same update in full "
                                  f"precision, so more optimizer memory)")
        if self.use_liger_kernel:
            notes.warn(["use_liger_kernel"], "Liger kernels are not used: transformers' own layers compute the same "
                                             "loss with more memory (lower per_device_train_batch_size if it does "
                                             "not fit; r1kit plan estimates it)")
        kwargs = self.gradient_checkpointing_kwargs
        if kwargs is not None and not self.gradient_checkpointing:
            notes.info(["gradient_checkpointing_kwargs"], "no effect: gradient_checkpointing is off (as in TRL)")
        elif kwargs is not None and kwargs != {"use_reentrant": False}:
            notes.warn(["gradient_checkpointing_kwargs"], f"{kwargs} not applied: r1kit always checkpoints "
                                                          f"non-reentrant ({{use_reentrant: false}}); the gradients "
                                                          f"are the same")
        if self.data_seed is not None and self.data_seed != self.seed:
            notes.warn(["data_seed"], f"not used: r1kit orders the data with seed ({self.seed}); set seed instead")

    def _logging_and_saving(self, notes: Notes) -> None:
        need(self, self.logging_strategy in STRATEGIES, "logging_strategy", f"must be one of {list(STRATEGIES)}")
        need(self, self.save_strategy in (*STRATEGIES, "best"), "save_strategy", f"must be one of "
             f"{[*STRATEGIES, 'best']}")
        need(self, self.log_level in LOG_LEVELS, "log_level", f"must be one of {list(LOG_LEVELS)}")
        need(self, self.eval_strategy in (None, *STRATEGIES), "eval_strategy", f"must be one of {list(STRATEGIES)}")
        need(self, self.hub_strategy in (None, *HUB_STRATEGIES), "hub_strategy", f"must be one of "
             f"{list(HUB_STRATEGIES)}")
        need(self, self.save_steps >= 0, "save_steps", "must be >= 0")
        need(self, self.save_steps < 1 or self.save_steps == int(self.save_steps), "save_steps",
             "must be an integer, or a fraction < 1 of the run's steps")
        if self.save_steps >= 1 or self.save_steps == 0:
            self.save_steps = int(self.save_steps)
        if self.save_strategy == "best":
            notes.warn(["save_strategy"], "best needs evaluation during training, which r1kit's trainers do not "
                                          "run: checkpoints every save_steps instead")
        by_epoch = [k for k in ("save_strategy", "logging_strategy") if getattr(self, k) == "epoch"]
        if by_epoch and self.max_steps > 0:
            notes.warn(by_epoch, "epoch with max_steps set: r1kit does not know where the epochs end, so only the "
                                 "last step is checkpointed/logged; use steps")
        if self.logging_first_step and self.logging_strategy == "steps" and self.logging_steps > 1:
            notes.warn(["logging_first_step"], f"step 1 is not logged on its own: r1kit logs every logging_steps "
                                               f"({self.logging_steps}) steps; set logging_steps: 1")
        if self.save_only_model:
            notes.warn(["save_only_model"], "checkpoints keep the optimizer, schedule and RNG states anyway, so a run "
                                            "resumes exactly (the final model in output_dir is the model only)")
        if self.overwrite_output_dir is False:
            notes.info(["overwrite_output_dir"], "not checked: r1kit writes over output_dir's earlier run, as "
                                                 "transformers' Trainer does")
        wandb = [k for k in ("wandb_entity", "wandb_project", "wandb_run_group") if getattr(self, k) is not None]
        if wandb and "wandb" not in self.report_to:
            notes.info(wandb, "no effect: report_to has no wandb (as in open-r1)")

    def _not_done_here(self, notes: Notes) -> None:
        """Evaluation and the Hub: keys r1kit's trainers have nothing to do with."""
        evaluates = bool(self.do_eval) or self.eval_strategy not in (None, "no")
        given = [k for k in ("do_eval", "eval_strategy", "per_device_eval_batch_size", "dataset_test_split")
                 if getattr(self, k) is not None]
        if evaluates:
            notes.warn(given, "not evaluated: r1kit's trainers do not evaluate during training; run r1kit eval on "
                              f"{self.output_dir} (or a checkpoint in it) afterwards")
        elif given:
            notes.info(given, "no effect: evaluation is off (as in TRL); r1kit eval evaluates a trained model")
        if self.benchmarks:
            notes.warn(["benchmarks"], f"{self.benchmarks} not run: r1kit does not launch open-r1's benchmark jobs; "
                                       f"evaluate the model with r1kit eval")
        unknown = [c for c in self.callbacks if c not in OPEN_R1_CALLBACKS]
        need(self, not unknown, "callbacks", f"names {unknown}: open-r1's callbacks are {list(OPEN_R1_CALLBACKS)}")
        hub = [k for k in ("push_to_hub", "hub_model_id", "hub_strategy", "hub_always_push", "hub_model_revision")
               if getattr(self, k) is not None] + (["callbacks"] if self.callbacks else [])
        if self.push_to_hub or self.callbacks:
            notes.warn(hub, f"not pushed to the Hugging Face Hub: r1kit does not upload; the model and its "
                            f"checkpoints stay in {self.output_dir} (upload them with hf upload)")
        elif hub:
            notes.info(hub, "no effect: push_to_hub is off (as in TRL)")


@dataclass
class TRLGRPOArgs(TRLArgs):
    """TRL GRPOConfig's vLLM keys and open-r1's code-reward keys."""

    UNKNOWN_KEY_HINTS = unknown_key_hints("grpo")
    help_footer = staticmethod(lambda: help_footer("grpo"))

    use_vllm: bool | None = trl(None, MAPPED, "vllm", "true: rollout_engine vllm (vllm_mode colocate, TRL's default "
                                                      "since 1.0) or vllm-server (vllm_mode server).")
    vllm_mode: str | None = trl(None, MAPPED, "vllm", "colocate: rollout_engine vllm; server: vllm-server (start it "
                                                      "with r1kit vllm-serve).")
    vllm_gpu_memory_utilization: float | None = trl(None, MAPPED, "vllm", "colocate: rollout_engine_kwargs."
                                                                          "gpu_memory_utilization.")
    vllm_tensor_parallel_size: int | None = trl(None, MAPPED, "vllm", "colocate: rollout_engine_kwargs."
                                                                      "tensor_parallel_size (given to vllm.LLM).")
    vllm_enable_sleep_mode: bool | None = trl(None, MAPPED, "vllm", "colocate: rollout_engine_kwargs.sleep.")
    vllm_server_base_url: str | None = trl(None, MAPPED, "vllm", "server: rollout_engine_kwargs.base_url.")
    vllm_server_host: str | None = trl(None, MAPPED, "vllm", "server: the host of base_url (TRL's default 0.0.0.0).")
    vllm_server_port: int | None = trl(None, MAPPED, "vllm", "server: the port of base_url (TRL's default 8000).")
    vllm_server_timeout: float | None = trl(None, MAPPED, "vllm", "server: rollout_engine_kwargs.startup_timeout "
                                                                  "(seconds to wait for the server to be up).")
    vllm_device: str | None = trl(None, WARNED, "vllm", "TRL < 0.17's device for vLLM: a warning; a colocated "
                                                        "engine runs on the policy's device, vllm_mode server on "
                                                        "another.")
    code_language: str | None = trl(None, MAPPED, "rewards", "open-r1: the language of code_format (code_format?"
                                                             "language=...); r1kit's code reward runs Python only.")
    code_eval_test_batch_size: int | None = trl(None, WARNED, "rewards", "open-r1's ioi_code/cf_code option (those "
                                                                         "rewards are not computed: see reward_funcs).")
    code_eval_scoring_mode: str | None = trl(None, WARNED, "rewards", "open-r1's ioi_code/cf_code option (those "
                                                                      "rewards are not computed).")

    def _command_keys(self, notes: Notes) -> None:
        if self.template == "r1_zero" and (self.system_prompt is not None or self.chat_template is not None):
            self.template = "chat"  # open-r1 makes each prompt a conversation: [system_prompt,] user
            log.info("template: chat (system_prompt/chat_template given: prompts are conversations, as in open-r1)")
        self._vllm(notes)
        self._rewards(notes)

    def _vllm(self, notes: Notes) -> None:
        need(self, self.vllm_mode in (None, "colocate", "server"), "vllm_mode", "must be colocate or server")
        engine = ALIASES.get(self.rollout_engine, self.rollout_engine)
        need(self, self.use_vllm is not False or engine == "hf", "use_vllm",
             f"is false but rollout_engine is {self.rollout_engine!r}")
        server = self.vllm_mode == "server" or (self.vllm_mode is None and engine == "vllm-server")
        if self.use_vllm or (self.vllm_mode is not None and engine != "hf"):
            engine = self.rollout_engine = "vllm-server" if server else "vllm"
        colocated = {"vllm_gpu_memory_utilization": "gpu_memory_utilization",
                     "vllm_tensor_parallel_size": "tensor_parallel_size", "vllm_enable_sleep_mode": "sleep"}
        served = {"vllm_server_timeout": "startup_timeout"}
        given = [k for k in (*colocated, *served, "vllm_server_base_url", "vllm_server_host", "vllm_server_port")
                 if getattr(self, k) is not None]
        if self.vllm_device is not None:
            notes.warn(["vllm_device"], "not used (TRL < 0.17's key): a colocated engine runs on the policy's device; "
                                        "for vLLM on its own GPU use vllm_mode: server and r1kit vllm-serve")
        if engine == "hf":
            if given or self.vllm_mode is not None:
                notes.info(given + (["vllm_mode"] if self.vllm_mode else []),
                           "no effect: generation uses transformers (use_vllm is not true), as in TRL")
            return
        mine, other = (served, colocated) if server else (colocated, served)
        options = {opt: getattr(self, k) for k, opt in mine.items() if getattr(self, k) is not None}
        if server and (self.vllm_server_base_url or self.vllm_server_host or self.vllm_server_port):
            options["base_url"] = self.vllm_server_base_url or (f"http://{self.vllm_server_host or '0.0.0.0'}:"
                                                                f"{self.vllm_server_port or 8000}")
        for opt, value in options.items():
            old = self.rollout_engine_kwargs.get(opt, value)
            need(self, old == value, "rollout_engine_kwargs", f"sets {opt}={old!r}, but a TRL vllm_* key says {value!r}")
            self.rollout_engine_kwargs[opt] = value
        unused = [k for k in given if k in other or (not server and k.startswith("vllm_server_"))]
        if unused and server:
            notes.warn(unused, "not applied: in vllm_mode server the server owns its GPU memory and parallelism; "
                               "pass them to r1kit vllm-serve (--gpu_memory_utilization, --tensor_parallel_size)")
        elif unused:
            notes.info(unused, "no effect in vllm_mode colocate (as in TRL)")

    def _rewards(self, notes: Notes) -> None:
        judge_keys = [k for k in ("code_eval_test_batch_size", "code_eval_scoring_mode") if getattr(self, k) is not None]
        judged = [i for i, f in enumerate(self.reward_funcs) if f.partition("?")[0] in REMOTE_JUDGES]
        if judged:
            names = [self.reward_funcs[i] for i in judged]
            need(self, len(judged) < len(self.reward_funcs), "reward_funcs", f"has only {names}, which need "
                 "open-r1's code-judging services (Piston or Morph); r1kit's code reward runs Python tests locally")
            keep = [i for i in range(len(self.reward_funcs)) if i not in judged]
            self.reward_funcs = [self.reward_funcs[i] for i in keep]
            if self.reward_weights is not None:
                self.reward_weights = [self.reward_weights[i] for i in keep]
            what = ", ".join(f"{n} ({REMOTE_JUDGES[n.partition('?')[0]]})" for n in names)
            notes.warn(["reward_funcs", *judge_keys], f"{what} not computed: they need open-r1's code-judging "
                                                      f"services (Piston or Morph workers); training on "
                                                      f"{self.reward_funcs} only. r1kit's code reward runs Python "
                                                      f"tests in its own sandbox")
        elif judge_keys:
            notes.info(judge_keys, "no effect: they set open-r1's ioi_code/cf_code rewards, which are not used")
        if self.code_language is not None:
            need(self, self.code_language == "python" or "code" not in self.reward_funcs, "code_language",
                 "is not python, but r1kit's code reward runs Python tests only")
            self.reward_funcs = [f"code_format?language={self.code_language}" if f == "code_format" else f
                                 for f in self.reward_funcs]


@dataclass
class TRLSFTArgs(TRLArgs):
    """TRL SFTConfig's keys."""

    UNKNOWN_KEY_HINTS = unknown_key_hints("sft")
    help_footer = staticmethod(lambda: help_footer("sft"))

    eos_token: str | None = trl(None, MAPPED, "data", "The tokenizer's EOS token: ends each example and stops "
                                                      "generation (it must be in the vocabulary).")
    dataset_num_proc: int | None = trl(None, WARNED, "data", "A warning: r1kit tokenizes in one process (the "
                                                             "examples are the same).")
    max_seq_length: int | None = trl(None, MAPPED, "data", "TRL's older name of max_length: sets it.")

    def _command_keys(self, notes: Notes) -> None:
        if self.max_seq_length is not None:
            need(self, self.max_seq_length >= 2, "max_seq_length", "must be >= 2")
            default = next(f.default for f in fields(self) if f.name == "max_length")
            need(self, self.max_length in (default, self.max_seq_length), "max_seq_length",
                 f"disagrees with max_length {self.max_length}; set one of them")
            self.max_length = self.max_seq_length
        if self.dataset_num_proc is not None:
            notes.warn(["dataset_num_proc"], "not used: r1kit tokenizes in one process (the examples are the same)")


# ---- when the run starts ---------------------------------------------------------------------------


def resolve_steps(cfg, total_steps: int) -> None:
    """Called by `TrainRun.start` before anything reads them: TRL's save_steps fraction and the epoch/no
    strategies become r1kit's step counts (save_steps 0 = the last step only); log_level and wandb_* apply."""
    if not isinstance(cfg, TRLArgs):
        return
    per_epoch = max(1, math.ceil(total_steps / cfg.num_train_epochs)) if cfg.max_steps <= 0 else 0
    cfg.save_steps = _every(cfg.save_strategy, cfg.save_steps, total_steps, per_epoch)
    cfg.logging_steps = _every(cfg.logging_strategy, cfg.logging_steps, total_steps, per_epoch) or total_steps
    if cfg.log_level != "passive" and int(os.environ.get("RANK", "0")) == 0:
        import transformers

        level = getattr(logging, cfg.log_level.upper())
        logging.getLogger("r1kit").setLevel(level)
        transformers.utils.logging.set_verbosity(level)
    if "wandb" in cfg.report_to:
        for key in ("wandb_entity", "wandb_project", "wandb_run_group"):
            if getattr(cfg, key) is not None:
                os.environ[key.upper()] = getattr(cfg, key)


def _every(strategy: str, steps: float, total_steps: int, per_epoch: int) -> int:
    if strategy == "no":
        return 0
    if strategy == "epoch":
        return per_epoch
    return math.ceil(total_steps * steps) if 0 < steps < 1 else int(steps)
