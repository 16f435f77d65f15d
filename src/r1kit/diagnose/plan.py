"""`r1kit plan`: will a GRPO run fit, and how long will a step take? Answered before anything is loaded in
full: the model's config is enough.

    r1kit plan --config recipe.yaml [--devices 8 --device H100 | --device_memory 80GB] [--json]

For the recipe's model, batch, lengths and strategy it predicts the peak memory per device, broken
down into weights, gradients, AdamW state, the reference model, the training micro-batch's activations
(with and without gradient_checkpointing) and logits, the rollout engine's KV cache (or a colocated
vLLM's share), for single-device, DDP, FSDP2 and LoRA runs; the tokens and FLOPs of one step and the
step time they imply at a stated utilisation of the device's peak; and, when the run does not fit,
what to change (micro-batch, checkpointing, FSDP2, LoRA, fewer generations, shorter completions),
most effective first, each with its predicted peak. On CPU the prediction is the process's peak RSS
and the device memory this machine's RAM. The formulas are in `plan_estimate`, their accuracy against
measured runs in bench/RESULTS.md ("Planner accuracy").

The trainer runs the same check at start: `preflight(cfg, world_size, device_memory_bytes)`.
`cfg` is read by attribute (a GRPOConfig, or anything with its fields), so this package stays below
the trainers.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, make_dataclass

from r1kit.config import field as cfg_field
from r1kit.diagnose.plan_estimate import (
    DTYPE_BYTES,
    Estimate,
    Setup,
    estimate,
    with_changes,
)
from r1kit.diagnose.plan_shape import ModelShape, model_shape

__all__ = ["KNOWN_DEVICES", "PlanOptions", "PlanResult", "plan", "preflight", "run_plan", "plan_config_class",
           "parse_bytes", "format_bytes", "setup_from"]


# ---- devices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    memory: int                    # bytes, as the driver reports them
    peak_flops: dict[str, float]   # dense FLOP/s by dtype (vendor data sheets)


_MiB = 2**20
# Memory as nvidia-smi / rocm-smi report it; peaks are the vendors' dense (no sparsity) figures.
KNOWN_DEVICES: dict[str, DeviceSpec] = {
    "H200": DeviceSpec("NVIDIA H200", 143771 * _MiB, {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    "H100": DeviceSpec("NVIDIA H100 SXM 80GB", 81559 * _MiB, {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
    "A100-80GB": DeviceSpec("NVIDIA A100 80GB", 81920 * _MiB, {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}),
    "A100-40GB": DeviceSpec("NVIDIA A100 40GB", 40960 * _MiB, {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}),
    "L40S": DeviceSpec("NVIDIA L40S", 46068 * _MiB, {"bfloat16": 362e12, "float16": 362e12, "float32": 91.6e12}),
    "L4": DeviceSpec("NVIDIA L4", 23034 * _MiB, {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12}),
    "RTX4090": DeviceSpec("NVIDIA GeForce RTX 4090", 24564 * _MiB, {"bfloat16": 165e12, "float16": 165e12, "float32": 82.6e12}),
    "MI300X": DeviceSpec("AMD Instinct MI300X", 196592 * _MiB, {"bfloat16": 1307e12, "float16": 1307e12, "float32": 163e12}),
}


def _known(name: str) -> str | None:
    """The KNOWN_DEVICES key a device name refers to ("h100", "NVIDIA H100 80GB HBM3", "a100" -> A100-80GB)."""
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    for key in KNOWN_DEVICES:
        if re.sub(r"[^a-z0-9]", "", key.lower()) in flat:
            return key
    if "a100" in flat:
        return "A100-40GB" if "40" in flat else "A100-80GB"
    if "4090" in flat:
        return "RTX4090"
    return None


def parse_bytes(text) -> int:
    """"80GB" -> 80e9, "24GiB" -> 24 x 2^30, "512MB", "1.5TB", or a plain number of bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"not a memory size: {text!r} (use e.g. 80GB, 24GiB, 512MB)")
    value, unit, binary = float(m.group(1)), m.group(2), m.group(3)
    power = " kmgt".index(unit) if unit else 0
    return int(value * (1024 if binary else 1000) ** power)


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass
class Target:
    """The device the run is planned for: its kind, memory per device, peak FLOP/s (None: unknown)."""

    kind: str       # cpu | cuda
    name: str
    memory: int
    peak_flops: float | None


def resolve_target(device: str = "auto", device_memory=None, peak_flops: float | None = None,
                   dtype: str = "bfloat16") -> Target:
    """`device`: auto (this machine: its first GPU, else the CPU), cpu, cuda, or a KNOWN_DEVICES name."""
    key = _known(device) if device not in ("auto", "cpu", "cuda") else None
    if key is not None:
        spec = KNOWN_DEVICES[key]
        t = Target("cuda", spec.name, spec.memory, spec.peak_flops.get(dtype))
    elif device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            known = _known(props.name)
            t = Target("cuda", props.name, props.total_memory,
                       KNOWN_DEVICES[known].peak_flops.get(dtype) if known else None)
        elif device == "cuda":
            raise ValueError("device cuda: no GPU on this machine; name one to plan for (e.g. --device H100)")
        else:
            t = _cpu_target()
    elif device == "cpu":
        t = _cpu_target()
    else:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or one of {list(KNOWN_DEVICES)}")
    if device_memory is not None:
        t.memory = parse_bytes(device_memory)
    if peak_flops is not None:
        t.peak_flops = float(peak_flops)
    return t


def _cpu_target() -> Target:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # no psutil needed (a dev-only dependency)
    return Target("cpu", "CPU (this machine's RAM)", ram, None)


# ---- the run's numbers, read off its config -------------------------------------------------------


def resolve_dtype(cfg_dtype: str, shape: ModelShape) -> str:
    """What load_model_and_tokenizer loads: an explicit dtype as is; auto: the checkpoint's dtype when its
    config names one (a GGUF or a built model: float32)."""
    if cfg_dtype and cfg_dtype != "auto":
        return cfg_dtype
    return shape.dtype if shape.dtype in DTYPE_BYTES else "float32"


def setup_from(cfg, shape: ModelShape, world_size: int, target: Target) -> Setup:
    """The numbers of a GRPO config (read by attribute, TRL's names) that the formulas need."""
    from r1kit.rollout.base import ALIASES
    from r1kit.utils.dist import resolve_strategy

    get = lambda name, default=None: getattr(cfg, name, default)  # noqa: E731
    mbs = int(get("per_device_train_batch_size", 8))
    engine = ALIASES.get(get("rollout_engine", "hf"), get("rollout_engine", "hf"))
    kw = dict(get("rollout_engine_kwargs", None) or {})
    if engine == "vllm" and kw.get("mode") == "server":
        engine = "vllm-server"
    strategy = "single" if world_size <= 1 else resolve_strategy(get("distributed_strategy", "auto"))[0]
    eos = kw.get("eos_token_ids", None)
    early_stop = not (eos is not None and len(eos) == 0 and not get("stop_strings", None))
    lora_r = int(get("lora_r", 0) or 0)
    return Setup(
        micro_batch=mbs, batch=mbs * int(get("gradient_accumulation_steps", 1)),
        generations=int(get("num_generations", 8)), prompt_len=int(get("max_prompt_length", 512)),
        completion_len=int(get("max_completion_length", 256)),
        dtype=resolve_dtype(get("dtype", "auto"), shape), beta=float(get("beta", 0.0)),
        lora_r=lora_r, lora_targets=get("lora_target_modules", None) or "all-linear",
        lora_dropout=float(get("lora_dropout", 0.0) or 0.0),
        gradient_checkpointing=bool(get("gradient_checkpointing", False)), strategy=strategy,
        world_size=max(1, int(world_size)), engine=engine,
        # the colocated engine's defaults (rollout.vllm_engine): on CPU 10% of RAM and no sleep mode
        vllm_memory_fraction=float(kw.get("gpu_memory_utilization", 0.1 if target.kind == "cpu" else 0.3)),
        vllm_sleep=bool(kw.get("sleep", target.kind != "cpu")),
        iterations=int(get("num_iterations", 1)), top_p=float(get("top_p", 1.0)), top_k=int(get("top_k", 0)),
        early_stop=early_stop, device=target.kind, device_memory=target.memory)


# ---- advice: what to change when it does not fit --------------------------------------------------


@dataclass
class Advice:
    change: str                 # what to set, in the recipe's names
    peak_memory_bytes: int      # the predicted peak per device after the change
    fits: bool
    settings: dict = field(default_factory=dict)  # the recipe keys and their new values
    to_fit: dict | None = None  # a knob with many values: the smallest change that fits (change, settings, peak)


@dataclass
class _Change:
    change: str
    setup: Setup
    settings: dict


def _micro_batch(u: Setup, k: int) -> _Change:
    acc = u.batch // k
    return _Change(f"per_device_train_batch_size: {k}, gradient_accumulation_steps: {acc} (same {u.batch} completions "
                   f"per step)", with_changes(u, micro_batch=k),
                   {"per_device_train_batch_size": k, "gradient_accumulation_steps": acc})


def _completions(u: Setup, M: int) -> _Change:
    return _Change(f"max_completion_length: {M}", with_changes(u, completion_len=M), {"max_completion_length": M})


def _generations(u: Setup, G: int) -> _Change | None:
    """G completions per prompt, the same prompts per step: the batch shrinks by G / generations, through the
    accumulation steps first, then the micro-batch."""
    acc, f = u.batch // u.micro_batch, u.generations // G
    if acc % f == 0:
        v, keys = with_changes(u, generations=G, batch=u.batch // f), {"gradient_accumulation_steps": acc // f}
    elif u.micro_batch % f == 0:
        v = with_changes(u, generations=G, batch=u.batch // f, micro_batch=u.micro_batch // f)
        keys = {"per_device_train_batch_size": u.micro_batch // f}
    else:
        return None
    keys = {"num_generations": G, **keys}
    return _Change(f"num_generations: {G} (same prompts per step: " + ", ".join(f"{k}: {x}" for k, x in keys.items()
                                                                          if k != "num_generations") + ")", v, keys)


def _knobs(m: ModelShape, u: Setup) -> list[tuple[_Change, list[_Change]]]:
    """Each way to need less memory: (the change at a standard strength, stronger versions of it). Standard:
    checkpointing, FSDP2, LoRA r=16, no reference model as they are; micro-batch, generations and
    completion length halved (stronger: halved again, down to 1, 2 and 16)."""
    out: list[tuple[_Change, list[_Change]]] = []
    if not u.gradient_checkpointing:
        out.append((_Change("gradient_checkpointing: true", with_changes(u, gradient_checkpointing=True),
                            {"gradient_checkpointing": True}), []))
    sizes = [k for k in range(u.micro_batch // 2, 0, -1) if u.batch % k == 0]
    if sizes:
        out.append((_micro_batch(u, sizes[0]), [_micro_batch(u, k) for k in sizes[1:]]))
    if u.world_size > 1 and u.strategy != "fsdp2":
        out.append((_Change(f"distributed_strategy: fsdp2 (shards gradients and AdamW state over {u.world_size} "
                            "devices)", with_changes(u, strategy="fsdp2"), {"distributed_strategy": "fsdp2"}), []))
    if u.lora_r == 0:
        out.append((_Change("lora_r: 16 (LoRA adapters only: no full gradients or AdamW state"
                            + ("; the base weights are the reference model)" if u.beta > 0 else ")"),
                            with_changes(u, lora_r=16), {"lora_r": 16}), []))
    gens = [c for G in (u.generations // 2 ** i for i in range(1, 8)) if G >= 2 and u.generations % G == 0
            for c in [_generations(u, G)] if c is not None]
    if gens:
        out.append((gens[0], gens[1:]))
    lengths = [M for M in (u.completion_len // 2 ** i for i in range(1, 12)) if M >= 16]
    if lengths:
        out.append((_completions(u, lengths[0]), [_completions(u, M) for M in lengths[1:]]))
    if u.beta > 0 and u.lora_r == 0:
        out.append((_Change("beta: 0 (no reference model)", with_changes(u, beta=0.0), {"beta": 0.0}), []))
    if u.engine == "vllm" and u.device != "cpu" and u.device_memory:
        need = m.params * u.s + 2 * m.layers * m.kv_heads * m.head_dim * u.s * u.batch * (
            u.prompt_len + u.completion_len) + 2**30
        frac = math.ceil(100 * need / u.device_memory) / 100
        if frac < u.vllm_memory_fraction:
            out.append((_Change(f"rollout_engine_kwargs: {{gpu_memory_utilization: {frac:g}}} (vLLM's weights and one "
                                "batch's KV cache)", with_changes(u, vllm_memory_fraction=frac),
                                {"rollout_engine_kwargs": {"gpu_memory_utilization": frac}}), []))
    return out


def advise(m: ModelShape, u: Setup, budget: int) -> list[Advice]:
    """Every change that lowers the peak, the one that lowers it most first. A knob with many values
    (micro-batch, generations, completion length) is rated at half its value, and also names the smallest
    change of it that fits, when one does. When no change fits alone, a last line applies them together
    (greedily, the most effective first) until the run fits."""
    now = estimate(m, u).peak
    rated = []
    for first, stronger in _knobs(m, u):
        peak = estimate(m, first.setup).peak
        if peak >= now:
            continue
        a = Advice(first.change, peak, peak <= budget, first.settings)
        if not a.fits:
            enough = next(((c, p) for c in stronger for p in [estimate(m, c.setup).peak] if p <= budget), None)
            if enough is not None:
                a.to_fit = {"change": enough[0].change, "settings": enough[0].settings, "peak_memory_bytes": enough[1]}
        rated.append(a)
    rated.sort(key=lambda a: a.peak_memory_bytes)
    if rated and not any(a.fits for a in rated):
        together = _together(m, u, budget)
        if together is not None:
            rated.append(together)
    return rated


def _together(m: ModelShape, u: Setup, budget: int) -> Advice | None:
    """Several changes at once: first those that keep the algorithm (checkpointing, FSDP2, then the largest
    micro-batch that fits, else 1), then, while it still does not fit, the most effective of the others
    (LoRA, fewer generations, shorter completions, no reference model), one at a time."""
    v, keys = u, {}

    def take(c: _Change) -> None:
        nonlocal v
        v = c.setup
        keys.update(c.settings)

    for c, _ in _knobs(m, v):
        if c.settings.keys() & {"gradient_checkpointing", "distributed_strategy"}:
            take(c)
    sizes = [k for k in range(v.micro_batch - 1, 0, -1) if v.batch % k == 0]
    if sizes and estimate(m, v).peak > budget:
        take(next((c for c in map(lambda k: _micro_batch(v, k), sizes) if estimate(m, c.setup).peak <= budget),
                  _micro_batch(v, sizes[-1])))
    while estimate(m, v).peak > budget:
        options = [(estimate(m, c.setup).peak, c) for c, _ in _knobs(m, v)
                   if not c.settings.keys() & {"gradient_checkpointing", "distributed_strategy",
                                               "per_device_train_batch_size"} or "num_generations" in c.settings]
        best = min(options, key=lambda t: t[0], default=None)
        if best is None or best[0] >= estimate(m, v).peak:
            break
        take(best[1])
    if len(keys) < 2 or v == u:
        return None
    peak = estimate(m, v).peak
    text = ", ".join(f"{k}: {json.dumps(x) if isinstance(x, dict) else str(x).lower() if isinstance(x, bool) else x}"
                     for k, x in keys.items())
    return Advice("together: " + text, peak, peak <= budget, keys)


# ---- the plan -------------------------------------------------------------------------------------


@dataclass
class PlanResult:
    """A run's plan: does it fit, the estimate behind that, and what to change when it does not."""

    fits: bool
    peak_memory_bytes: int
    device_memory_bytes: int
    model: ModelShape
    setup: Setup
    target: Target
    estimate: Estimate
    advice: list[Advice]
    utilization: float = 0.4

    @property
    def step_time_s(self) -> float | None:
        if not self.target.peak_flops:
            return None
        return self.estimate.flops["total"] / (self.utilization * self.target.peak_flops)

    @property
    def advice_text(self) -> str:
        """What to change, one line per option (empty when the run fits)."""
        if self.fits:
            return ""
        head = (f"predicted peak {format_bytes(self.peak_memory_bytes)} per device > "
                f"{format_bytes(self.device_memory_bytes)} available ({self.target.name})")
        if not self.advice:
            return head + "; no single change lowers it: use more or larger devices"
        lines = []
        for i, a in enumerate(self.advice, 1):
            line = f"  {i}. {a.change} -> peak {format_bytes(a.peak_memory_bytes)}"
            if not a.fits:
                line += " (still too much" + (f"; {a.to_fit['change'].split(' (')[0]} fits: peak "
                                              f"{format_bytes(a.to_fit['peak_memory_bytes'])})" if a.to_fit else ")")
            lines.append(line)
        return head + "; what to change, most effective first:\n" + "\n".join(lines)

    def to_json(self) -> dict:
        e, u, m = self.estimate, self.setup, self.model
        return {
            "fits": self.fits, "peak_memory_bytes": self.peak_memory_bytes,
            "device_memory_bytes": self.device_memory_bytes, "peak_phase": e.peak_phase,
            "device": {"kind": self.target.kind, "name": self.target.name, "count": u.world_size,
                       "peak_flops": self.target.peak_flops},
            "model": {"name": m.name, "model_type": m.model_type, "params": m.params,
                      "trainable_params": e.trainable_params, "layers": m.layers, "hidden": m.hidden,
                      "vocab": m.vocab, "dtype": u.dtype},
            "setup": {k: v for k, v in asdict(u).items() if k not in ("device", "device_memory")},
            "memory_bytes": e.components, "phases_bytes": e.phases, "activations_bytes": e.activations,
            "tokens_per_step": e.tokens, "flops_per_step_per_device": e.flops,
            "utilization": self.utilization, "step_time_s": self.step_time_s,
            "advice": [asdict(a) for a in self.advice], "notes": e.notes,
        }

    def to_text(self) -> str:
        e, u, m = self.estimate, self.setup, self.model
        mode = f"LoRA r={u.lora_r}" if u.lora_r else "full fine-tuning"
        lines = [f"model      {m.name}: {m.model_type}, {m.params / 1e6:.1f}M parameters, {u.dtype}, {mode} "
                 f"({e.trainable_params / 1e6:.2f}M trainable)",
                 f"devices    {u.world_size} x {self.target.name}, {format_bytes(self.device_memory_bytes)} each; "
                 f"strategy {u.strategy}; rollout engine {u.engine}",
                 f"batch      {u.batch} completions per device per step ({max(1, u.batch // u.generations)} prompts x "
                 f"{u.generations}), micro-batch {u.micro_batch}; prompt <= {u.prompt_len}, completion <= "
                 f"{u.completion_len} tokens (the worst case)",
                 "", f"memory per device at the peak ({e.peak_phase}):"]
        for name, value in e.components.items():
            if value:
                lines.append(f"  {name:<28}{format_bytes(value):>12}")
        act = e.activations
        lines.append(f"  {'(activations + logits: ' + format_bytes(act['without_checkpointing']) + ' without, '}"
                     f"{format_bytes(act['with_checkpointing'])} with gradient_checkpointing)")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines += [f"  {'peak':<28}{format_bytes(self.peak_memory_bytes):>12}  of {format_bytes(self.device_memory_bytes)}:"
                  f" {verdict} ({100 * self.peak_memory_bytes / max(1, self.device_memory_bytes):.0f}%)",
                  "phases     " + ", ".join(f"{k} {format_bytes(v)}" for k, v in e.phases.items())]
        t = e.tokens
        lines += ["", f"tokens per step   {t['total']:,} ({t['prompts']} prompts x {u.prompt_len} + {t['completions']} "
                      f"completions x {u.completion_len}, all devices)",
                  "FLOPs per step    " + ", ".join(f"{k} {v:.3g}" for k, v in e.flops.items()) + " (per device)"]
        if self.step_time_s is not None:
            lines.append(f"step time         ~{self.step_time_s:.3g} s at {100 * self.utilization:.0f}% of "
                         f"{self.target.peak_flops / 1e12:.4g} TFLOP/s ({u.dtype})")
        else:
            lines.append("step time         unknown peak FLOP/s for this device: pass --peak_flops")
        lines += [f"note: {n}" for n in e.notes]
        if not self.fits:
            lines += ["", self.advice_text]
        elif self.advice and self.peak_memory_bytes > 0.9 * self.device_memory_bytes:
            lines += ["", "close to the limit; options: " + "; ".join(a.change.split(" (")[0] for a in self.advice[:3])]
        return "\n".join(lines)


def plan(cfg, world_size: int = 1, device: str = "auto", device_memory=None, peak_flops: float | None = None,
         utilization: float = 0.4, shape: ModelShape | None = None) -> PlanResult:
    """Plan the GRPO run `cfg` (read by attribute) on `world_size` devices of kind `device`."""
    if shape is None:
        shape = model_shape(cfg.model_name_or_path)
    target = resolve_target(device, device_memory, peak_flops, resolve_dtype(getattr(cfg, "dtype", "auto"), shape))
    u = setup_from(cfg, shape, world_size, target)
    e = estimate(shape, u)
    fits = e.peak <= target.memory
    advice = advise(shape, u, target.memory) if not fits or e.peak > 0.9 * target.memory else []
    return PlanResult(fits, e.peak, target.memory, shape, u, target, e, advice, utilization)


def preflight(cfg, world_size: int = 1, device_memory_bytes: int | None = None, device: str = "auto") -> PlanResult:
    """The check a trainer runs before loading anything: `result.fits`, and `result.advice_text` to stop with
    when it does not. `device_memory_bytes` None: the device's own (a GPU's memory, or this machine's RAM)."""
    return plan(cfg, world_size=world_size, device=device, device_memory=device_memory_bytes)


# ---- `r1kit plan` ---------------------------------------------------------------------------------


@dataclass
class PlanOptions:
    devices: int = cfg_field(1, help="Devices (processes) the run uses: the data-parallel world size.")
    device: str = cfg_field("auto", help=f"auto (this machine: its first GPU, else the CPU), cpu, cuda, or a device to "
                                         f"plan for: {', '.join(KNOWN_DEVICES)}.")
    device_memory: str | None = cfg_field(None, help="Memory per device, e.g. 80GB or 24GiB (default: the device's; "
                                                      "CPU: this machine's RAM).")
    peak_flops: float | None = cfg_field(None, help="Peak FLOP/s of one device for the step time (default: the "
                                                    "device table; CPU: none, so no step time).")
    utilization: float = cfg_field(0.4, help="Fraction of the peak FLOP/s a step reaches, for the step time.")
    json: bool = cfg_field(False, help="Print one JSON object (the predicted peak per device in peak_memory_bytes).")


def plan_config_class(recipe_cls: type) -> type:
    """`r1kit plan`'s options: the recipe's config class (its fields and defaults, e.g. GRPOConfig) plus
    PlanOptions. The CLI, above both, passes the recipe class in; this package never imports it."""
    names = {f.name for f in fields(recipe_cls)}
    clash = names & {f.name for f in fields(PlanOptions)}
    if clash:
        raise TypeError(f"{recipe_cls.__name__} already has {sorted(clash)}")
    return make_dataclass("PlanConfig", [], bases=(recipe_cls, PlanOptions))


def run_plan(cfg) -> None:
    """`r1kit plan`: print the plan of the recipe `cfg` (with PlanOptions' fields) as text or JSON."""
    opt = lambda name: getattr(cfg, name, next(f.default for f in fields(PlanOptions) if f.name == name))  # noqa: E731
    result = plan(cfg, world_size=opt("devices"), device=opt("device"), device_memory=opt("device_memory"),
                  peak_flops=opt("peak_flops"), utilization=opt("utilization"))
    print(json.dumps(result.to_json(), indent=1) if opt("json") else result.to_text())
    return None
