"""`PipelineConfig` (the recipe's top level) and `StudentConfig` (the `student_init` stage)."""

from __future__ import annotations

from dataclasses import dataclass

from r1kit.config import field
from r1kit.data.templates import is_template, template_choices, template_help


@dataclass
class PipelineConfig:
    # ---- shared settings (each stage's defaults are built from these) ----
    base_model: str = field("r1kit:tiny-base", help="The base model every from-base stage starts from (cold start, "
                                                    "rejection-sampling SFT, reward model, student, R1-Zero control).")
    task: str = field("arithmetic", help="Tiny-world task: training prompts (train split) and the held-out evaluation (test split).")
    output_dir: str = field("runs/r1-tiny", help="Each stage writes output_dir/<stage>/ (model/, data/, eval/, manifest.json); "
                                                 "pipeline.json and report.html go here.")
    seed: int = field(0, help="Seed every stage derives its own seed from.")
    template: str = field("r1_zero", help=f"Prompt template for every stage: {template_help()}.")
    max_completion_length: int = field(160, help="Maximum new tokens in GRPO, sampling and evaluation.")
    stop_strings: list[str] = field(["</answer>"], help="Generation stops after any of these (GRPO, sampling, evaluation).")
    train_rows: int = field(2000, help="Training prompts generated from the task's train split for each GRPO stage.")
    dtype: str = field("auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16.")
    num_threads: int = field(0, help="torch CPU threads for the whole run (0 = leave torch's setting).")
    disable_tqdm: bool = field(False, help="Hide the stages' progress bars.")

    # ---- evaluation after each model-producing stage ----
    eval: dict = field({}, help="EvalConfig overrides for every evaluation (n = k samples, num_problems, temperature, ...); "
                                "defaults: n 4, num_problems 100, T 0.6, top-p 0.95 and the shared settings above.")
    evaluate: bool = field(True, help="Evaluate each model-producing stage (false: train only; the report then has no table).")

    # ---- stages ----
    stages: dict = field({}, help="Per-stage overrides: {stage: {key: value}}, each checked by that stage's config "
                                  "class (SFTConfig, GRPOConfig, SampleConfig, RMConfig, ...). Stages: see r1kit.pipeline.STAGE_NAMES.")
    skip_stages: list[str] = field([], help="Stages not to run (only ones no other stage reads from, e.g. r1_zero, student_rl).")
    stop_after: str | None = field(None, help="Stop after this stage (the stages it needs run first).")

    def __post_init__(self):
        if self.max_completion_length < 1:
            raise ValueError(f"'max_completion_length' must be >= 1, got {self.max_completion_length!r}")
        if self.train_rows < 1:
            raise ValueError(f"'train_rows' must be >= 1, got {self.train_rows!r}")
        if self.num_threads < 0:
            raise ValueError(f"'num_threads' must be >= 0, got {self.num_threads!r}")
        if not is_template(self.template):
            raise ValueError(f"'template' must be {template_choices()}, got {self.template!r}")


@dataclass
class StudentConfig:
    """The distillation student: a truncated copy of the base model (fewer decoder layers).

    The paper distils into smaller *pretrained* models (Qwen, Llama). The tiny world has one pretrained
    model, so the student keeps the base model's tokenizer, embeddings, final norm and LM head and a
    subset of its decoder layers (by default evenly spaced, first and last included): a smaller model that
    still starts from pretrained weights, the same start for distillation and for the RL-only control."""

    num_layers: int = field(2, help="Decoder layers the student keeps (fewer than the base model has).")
    layers: list[int] | None = field(None, help="Which base layers to keep, in order (default: num_layers evenly "
                                                "spaced, first and last included).")

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"'num_layers' must be >= 1, got {self.num_layers!r}")
        if self.layers is not None and len(self.layers) != self.num_layers:
            raise ValueError(f"'layers' must list num_layers ({self.num_layers}) layer indices, got {self.layers!r}")


def student_layers(num_base_layers: int, cfg: StudentConfig) -> list[int]:
    """The base layer indices the student keeps."""
    n = cfg.num_layers
    if n >= num_base_layers:
        raise ValueError(f"student_init: num_layers {n} must be smaller than the base model's {num_base_layers} layers")
    if cfg.layers is not None:
        bad = [i for i in cfg.layers if not 0 <= i < num_base_layers]
        if bad or len(set(cfg.layers)) != len(cfg.layers):
            raise ValueError(f"student_init: layers {cfg.layers} must be distinct indices in 0..{num_base_layers - 1}")
        return list(cfg.layers)
    if n == 1:
        return [0]
    return [round(i * (num_base_layers - 1) / (n - 1)) for i in range(n)]


def build_student(base: str, out_dir: str, cfg: StudentConfig, dtype: str = "float32") -> dict:
    """Write the truncated student (save_pretrained + the base tokenizer) to `out_dir`; returns its facts."""
    import copy

    from transformers import AutoModelForCausalLM

    from r1kit.models.loading import load_model_and_tokenizer, save_model

    model, tokenizer = load_model_and_tokenizer(base, dtype=dtype, device="cpu")
    config = copy.deepcopy(model.config)
    n_base = config.num_hidden_layers
    keep = student_layers(n_base, cfg)
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(config)
    state = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if "layers" in parts:
            at = parts.index("layers") + 1
            layer = int(parts[at])
            if layer not in keep:
                continue
            parts[at] = str(keep.index(layer))
        state[".".join(parts)] = tensor
    student.load_state_dict(state, strict=True)
    student.generation_config = copy.deepcopy(model.generation_config)
    save_model(student, tokenizer, out_dir)
    return {"base_layers": n_base, "layers_kept": keep, "num_parameters": sum(p.numel() for p in student.parameters()),
            "base_num_parameters": sum(p.numel() for p in model.parameters())}
