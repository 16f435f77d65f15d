"""The planner's formulas: memory per device, tokens and FLOPs of one GRPO step, from a `ModelShape` and
a `Setup` (the run's numbers). Arithmetic only (nothing is allocated): every term below says which r1kit
code holds the memory, so a change there can be mirrored here.

Notation: s bytes per parameter/activation element (dtype), N parameters, N_t trainable ones, L layers,
d hidden, I MLP width, H / KV query / key-value heads of size hd, V vocabulary; per device: B
completions per step (micro-batch b x accumulation), G completions per prompt, P prompt tokens
(max_prompt_length: the worst case), M completion tokens (max_completion_length).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from r1kit.algo.linear_logprobs import FUSED_CHUNK_ELEMENTS, fuse_pays  # the fused head (train.batch)
from r1kit.algo.logprobs import CHUNK_ELEMENTS  # fp32 values per chunk of the chunked log-softmax
from r1kit.diagnose.plan_shape import DTYPE_BYTES, ModelShape
from r1kit.models.forward_cost import sharing_pays
from r1kit.models.heads import PLAIN_HEAD_MODEL_TYPES
from r1kit.rollout.fast_decoder import SUPPORTED_ARCHITECTURES as FAST_DECODER_TYPES  # the hf engine's fast path
from r1kit.rollout.hf import PACK_MIN_TOKENS

# Peak RSS of a CPU GRPO process besides the model, optimizer, activations and rollout buffers it
# holds: Python, torch, transformers, datasets, the reward functions' imports, the tokenizer, the
# prompts, glibc's arenas. Calibrated by bench/bench_plan.py: its smallest tiny-model rows peak at 580 MB
# RSS with 45-65 MB of predicted tensors (bench/RESULTS.md, "Planner accuracy").
CPU_BASELINE_BYTES = 510 * 10**6
# CPU only: glibc's heap keeps blocks freed in one step that the next step's differently ordered allocations
# cannot reuse, so peak RSS exceeds the live tensors. This share of the memory a phase allocates and frees
# (gradients, activations, logits; rollout buffers) is added to it, chosen so that bench/bench_plan.py's
# first 14 rows centre on 1. Measured there: 0-100% of that memory, 150-160% with LoRA and checkpointing
# together (those runs are under-predicted by up to a third; bench/RESULTS.md).
CPU_HEAP_RETENTION = 0.4
# A CUDA process's memory outside PyTorch's allocator (the CUDA context, cuBLAS workspaces): an assumed
# 512 MiB, not measured by r1kit's benchmarks (no GPU was available to calibrate it).
CUDA_RUNTIME_BYTES = 512 * 2**20


@dataclass
class Setup:
    """The run's numbers that memory and FLOPs depend on (read off a GRPO config by `setup_from`)."""

    micro_batch: int            # b: completions per micro-batch per device
    batch: int                  # B: completions per step per device (generated at once)
    generations: int            # G
    prompt_len: int             # P
    completion_len: int         # M
    dtype: str = "float32"
    beta: float = 0.0
    lora_r: int = 0
    lora_targets: object = "all-linear"
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    strategy: str = "single"    # single | ddp | fsdp2
    world_size: int = 1
    engine: str = "hf"          # hf | vllm (colocated) | vllm-server
    vllm_memory_fraction: float = 0.3  # colocated vLLM: gpu_memory_utilization
    vllm_sleep: bool = True     # colocated vLLM sleeps (weights to CPU, KV cache freed) outside generation
    iterations: int = 1         # mu
    top_p: float = 1.0
    top_k: int = 0
    early_stop: bool = True     # completions can finish before M (EOS / stop strings): the cache is compacted
    device: str = "cpu"         # cpu | cuda
    device_memory: int = 0      # bytes per device

    @property
    def s(self) -> int:
        return DTYPE_BYTES[self.dtype]


@dataclass
class Estimate:
    """What one device holds, by component and by phase of a step, plus tokens and FLOPs."""

    components: dict[str, int]           # bytes held at the peak phase, by what holds them
    phases: dict[str, int]               # peak bytes of each phase (the process baseline included)
    peak_phase: str
    peak: int
    activations: dict[str, int]          # training micro-batch activations, with and without checkpointing
    trainable_params: int
    tokens: dict[str, int]               # per step, all devices
    flops: dict[str, float]              # per step per device
    notes: list[str] = field(default_factory=list)


def groups_in(b: int, G: int) -> int:
    """Prompts a micro-batch of b consecutive completions touches (groups of G, slices at multiples of b)."""
    if G <= 1:
        return b
    if b % G == 0 or G % b == 0:
        return max(1, -(-b // G))
    return -(-b // G) + 1


def layer_saved(m: ModelShape, s: int, rows: int, q: int, keys: int, extra_per_token: int = 0,
                mlp_kept: int = 4) -> int:
    """Bytes one decoder layer keeps for backward (transformers' Llama/Qwen2 layer with sdpa and a mask),
    for `rows` x `q` query tokens attending to `keys` keys, as traced with saved_tensors_hooks: per query
    token 7 d (two RMSNorms: input, normalised, scaled; o_proj's input) + H hd (the attention output) +
    `mlp_kept` I (4: gate, SiLU, up, their product; 2 under models.lean_mlp: gate, up) + `extra_per_token`
    bytes (LoRA dropout); per key the K and V expanded to H heads (repeat_kv: a masked sdpa does not take
    grouped heads); the float mask [q, keys]; the fp32 logsumexp."""
    per_token = 7 * m.hidden + m.heads * m.head_dim + mlp_kept * m.intermediate
    if m.model_type == "qwen3":  # q_norm / k_norm keep their inputs and outputs
        per_token += 2 * (m.heads + m.kv_heads) * m.head_dim
    return (s * rows * q * per_token + rows * q * extra_per_token + s * 2 * rows * keys * m.heads * m.head_dim
            + s * rows * q * keys + 4 * rows * m.heads * q)


def mlp_kept(m: ModelShape, u: "Setup") -> int:
    """[token, I] tensors an MLP keeps for backward in the training forward: 2 where models.lean_mlp runs it
    (a lean-capable family, no gradient checkpointing, its down projection neither LoRA-wrapped nor an FSDP2
    shard), else 4."""
    if not m.lean_mlp or u.strategy == "fsdp2" or u.gradient_checkpointing:
        return 4
    down_wrapped = u.lora_r > 0 and any(n.split(".")[-1] == "down_proj" for n, _, _ in m.wrapped(u.lora_targets))
    return 4 if down_wrapped else 2


def lora_dropout_bytes(m: ModelShape, u: "Setup") -> int:
    """Bytes per token per layer that LoRA dropout keeps (lora_dropout > 0; traced: 6.5-7.8 d + I more per
    token with every linear layer wrapped): each wrapped linear layer's dropped input (its in_features, in
    the model's dtype) and the dropout mask (1 byte per element)."""
    if u.lora_r <= 0 or u.lora_dropout <= 0 or m.layers == 0:
        return 0
    return sum(i for _, i, _ in m.wrapped(u.lora_targets)) // m.layers * (u.s + 1)


def chunk_bytes(m: ModelShape, rows: int) -> int:
    """One fp32 chunk of the chunked log-softmax (r1kit.algo.logprobs): min(rows, 2^24 / V) x V x 4."""
    return min(rows, max(1, CHUNK_ELEMENTS // m.vocab)) * m.vocab * 4


def head_bytes(m: ModelShape, u: "Setup", rows: int) -> tuple[int, int]:
    """(logits, scratch) bytes of the log-probs of `rows` rows (train.batch.completion_logps): the logits
    [rows, V] in the model's dtype and two fp32 chunks of the chunked log-softmax; or, where the trainer fuses
    the head into the log-softmax (`plain_head` families, no FSDP2 hooks, `fuse_pays`), no logits and one
    fp32 [C, V] chunk, plus in backward the head gradient's fp32 accumulator where it is not the dtype."""
    if m.model_type in PLAIN_HEAD_MODEL_TYPES and u.strategy != "fsdp2" and fuse_pays(rows, m.vocab):
        chunk = min(rows, max(1, FUSED_CHUNK_ELEMENTS // m.vocab)) * m.vocab * 4
        return 0, chunk + (m.embedding * (4 - u.s) if u.lora_r == 0 else 0)
    return rows * m.vocab * u.s, 2 * chunk_bytes(m, rows)


def shares_prompts(m: ModelShape, u: "Setup") -> bool:
    """Whether the trainer's "auto" path shares each group's prompt in a micro-batch (`sharing_pays`: at the
    worst case, every prompt P tokens and every completion M)."""
    b, G = u.micro_batch, u.generations
    if G <= 1 or b <= 1:
        return False
    lin, pair = 2.0 * (m.params - m.embedding), 4.0 * m.layers * m.hidden
    return sharing_pays(groups_in(b, G), torch.zeros(b, dtype=torch.long), u.prompt_len, u.completion_len, lin, pair)


def training_activations(m: ModelShape, u: Setup, checkpointing: bool, grads: int = 0,
                         grads_present: bool = False) -> dict[str, int]:
    """Peak bytes of one training micro-batch's forward + backward (train.batch.completion_logps), with the
    `grads` bytes of parameter gradients: already there (`grads_present`: a later micro-batch of the step)
    or allocated during this backward (the first: AdamW's update leaves none).

    Held: the saved activations (`layer_saved` per layer and segment, the final norm's), the per-row prompt
    prefix and each layer's K/V that the prompt-shared forward's cache holds (for multi-head attention K/V
    are the very tensors sdpa saves; with grouped heads sdpa saves expanded copies, so the cache's are
    extra), the logits [b, T, V] and, in backward, their gradient plus the log-softmax's fp32 chunks (a
    fused head: no logits, one chunk; `head_bytes`).
    Backward runs the completions' layers first, freeing each layer's activations as it allocates its
    gradients; it ends with the embedding's dense [V, d] gradient, summed into the tied LM head's (one more
    [V, d] tensor), while the prompt forward's activations are still held. With prompt sharing the layers run
    twice, so a later micro-batch holds a second set of gradients until the prompt's pass (measured:
    bench/RESULTS.md, "Planner accuracy"). Under checkpointing each layer
    keeps only its input (and the cache) and recomputes its activations in backward, one layer at a time."""
    s, b, P, T, L = u.s, u.micro_batch, u.prompt_len, u.completion_len, m.layers
    kv = 2 * m.kv_heads * m.head_dim * s  # K + V bytes per token per layer, un-expanded
    share = shares_prompts(m, u)
    g = groups_in(b, u.generations) if share else b
    grouped = m.kv_heads < m.heads
    lf, k = lora_dropout_bytes(m, u), mlp_kept(m, u)
    if share:  # each group's prompt runs once (g rows x P), the completions on top (b rows x T, keys P + T)
        seg = [(g, P, P), (b, T, P + T)]
        tokens = g * P + b * T
        cache = L * kv * (b * P + (g * P + b * (P + T) if grouped or checkpointing else 0))
        prompt_saved = L * layer_saved(m, s, g, P, P, lf, k) + 3 * m.hidden * s * g * P
        prompt_held = L * m.hidden * s * g * P + 2 * layer_saved(m, s, g, P, P, lf, k)
    else:  # one plain forward over [prompt | completion]
        seg = [(b, P + T, P + T)]
        tokens = b * (P + T)
        cache = L * kv * b * (P + T) if grouped or checkpointing else 0
        prompt_saved = prompt_held = 0
    one_layer = max(layer_saved(m, s, *x, lf, k) for x in seg)
    logits, chunks = head_bytes(m, u, b * T)
    E = m.embedding * s if u.lora_r == 0 else 0  # the LM head's / embedding's weight gradient (LoRA: frozen)
    end_extra = 2 * E if m.tied else E  # the embedding's dense gradient (+ its sum into the tied head's)
    head_sum = E if grads_present else 0  # accumulating into an existing gradient: one more temporary
    if checkpointing:
        held = L * m.hidden * s * tokens + cache
        forward = held + one_layer + logits + chunks
        start = held + 2 * logits + chunks + E + head_sum
        layers = held + 2 * one_layer
        ending = cache + prompt_held + end_extra
        saved = held
    else:
        saved = L * sum(layer_saved(m, s, *x, lf, k) for x in seg) + 3 * m.hidden * s * tokens
        forward = saved + cache + logits + chunks
        start = saved + 2 * logits + chunks + E + head_sum
        layers = saved
        ending = prompt_saved + end_extra
    if grads_present:
        # the layers run twice (prompt, then completions on top): autograd holds each parameter's gradient
        # from the completions' pass until the prompt's pass adds its own, a second set beside .grad
        buffered = grads if share else 0
        total = grads + max(forward, start, layers, buffered + ending)
    else:  # gradients appear as activations go (first held in that buffer), the embedding's last
        total = max(forward, start, layers + E, grads + ending)
    return {"total": total, "saved": saved, "logits": 2 * logits + chunks}


def inference_activations(m: ModelShape, u: Setup) -> int:
    """Peak bytes of a no-grad log-prob forward of one micro-batch (old or reference log-probs): one layer's
    tensors at a time, the cache of every layer (prefix + K/V per row), the logits, the chunks."""
    s, b, P, T, L = u.s, u.micro_batch, u.prompt_len, u.completion_len, m.layers
    kv = 2 * m.kv_heads * m.head_dim * s
    share = shares_prompts(m, u)
    g = groups_in(b, u.generations) if share else b
    if share:
        layer = max(layer_saved(m, s, g, P, P), layer_saved(m, s, b, T, P + T))
        cache = L * kv * (g * P + b * P + b * (P + T))
    else:
        layer, cache = layer_saved(m, s, b, P + T, P + T), 0
    return layer + cache + sum(head_bytes(m, u, b * T))


def rollout_memory(m: ModelShape, u: Setup) -> dict[str, int]:
    """The hf engine's buffers for one generate call of B completions (rollout.hf, fast_decoder): the
    KV cache (fast decoder: each prompt's keys/values once + one completion part per row, preallocated
    for M tokens; other architectures: a DynamicCache per row holding prompt + completion, grown by
    torch.cat), the compaction copy when rows can finish early, and the largest transient of a prefill or
    decode step (attention scores, the [B, V] logits and the sampler's fp32 copies), and on CPU the fast
    decoder's packed copy of the weights it multiplies by (rollout.packed_linear: every linear and the LM
    head in fp32; under LoRA the wrapped linears are not packed, the head still is)."""
    s, B, G, P, M, L = u.s, u.batch, u.generations, u.prompt_len, u.completion_len, m.layers
    N = max(1, B // G)
    kv = 2 * m.kv_heads * m.head_dim * s
    if m.model_type in FAST_DECODER_TYPES:
        cache = L * kv * (N * P + B * M)
        compaction = int(0.75 * L * kv * B * M) if u.early_stop else 0
    else:
        cache = L * kv * B * (P + M)
        compaction = kv * B * (P + M)  # one layer's cache being concatenated
    prefill = N * P * (4 * m.hidden + 3 * m.intermediate) * s + N * P * P * (1 + s)
    sampler_copies = 5 + (7.5 if u.top_p < 1.0 else 0) + (1 if u.top_k > 0 else 0)
    decode = 6 * B * m.heads * (P + M) * s + B * m.vocab * (s + int(4 * sampler_copies))
    rows = B * M * 12  # sampled ids (int64) + log-probs (fp32)
    packed = 0
    if m.model_type in FAST_DECODER_TYPES and u.device == "cpu" and u.dtype == "float32" and M >= PACK_MIN_TOKENS:
        packed = (m.embedding + (0 if u.lora_r > 0 else m.body)) * s
    return {"kv_cache": cache + compaction, "transient": max(prefill, decode) + rows, "packed": packed}


def estimate(m: ModelShape, u: Setup) -> Estimate:
    """Memory per device by component and phase, tokens and FLOPs of one step."""
    s, W = u.s, u.world_size
    lora = u.lora_r > 0
    n_lora = m.lora_params(u.lora_r, u.lora_targets) if lora else 0
    n_train = n_lora if lora else m.params
    fsdp = u.strategy == "fsdp2" and W > 1
    shard = W if fsdp else 1
    cpu = u.device == "cpu"
    notes: list[str] = []

    weights = (m.params + n_lora) * s // shard
    full_copy = m.params * s if fsdp else 0  # fsdp2: the full, unsharded rollout/checkpoint copy (utils.dist)
    grads = n_train * s // shard
    optimizer = 2 * n_train * s // shard  # AdamW's exp_avg and exp_avg_sq, like the parameter (torch.optim.AdamW)
    reference = m.params * s if (u.beta > 0 and not lora) else 0  # a frozen deepcopy, never sharded
    gathered = (m.embedding * (1 if m.tied else 2) + 3 * m.largest_layer) * s if fsdp else 0
    bucket = 2 * 25 * 2**20 if (W > 1 and not fsdp) else 0  # ddp: the flattened all-reduce bucket
    # AdamW's step: on CPU one parameter at a time (sqrt and division temporaries of the largest trainable
    # tensor: the embedding; LoRA's are tiny), on GPUs foreach (one temporary of every trainable tensor)
    adam_temp = (0 if lora else 2 * m.embedding * s) if cpu else n_train * s // shard
    baseline = CPU_BASELINE_BYTES if cpu else CUDA_RUNTIME_BYTES

    later = u.batch > u.micro_batch  # a later micro-batch of the step finds the gradients there
    act = {k: max(training_activations(m, u, u.gradient_checkpointing, grads, False)[k],
                  training_activations(m, u, u.gradient_checkpointing, grads, later)[k] if later else 0)
           for k in ("total", "saved", "logits")}
    act_other = max(training_activations(m, u, not u.gradient_checkpointing, grads, x)["total"] for x in {False, later})
    roll = {"kv_cache": 0, "transient": 0, "packed": 0}
    vllm = 0
    if u.engine == "hf":
        roll = rollout_memory(m, u)
    elif u.engine == "vllm":
        vllm = int(u.vllm_memory_fraction * u.device_memory)  # on CPU: its worker's share of RAM, weights included
        kv_tokens = (vllm - m.params * s - 2**30) // max(1, 2 * m.kv_heads * m.head_dim * s * m.layers)
        need = u.batch * (u.prompt_len + u.completion_len)
        if kv_tokens < need:
            notes.append(f"colocated vLLM: gpu_memory_utilization {u.vllm_memory_fraction:g} leaves room for about "
                         f"{max(0, kv_tokens):,} KV tokens, fewer than one batch needs ({need:,}): it will run "
                         f"fewer sequences at once (slower)")
    static = {"runtime": baseline, "weights": weights, "full weights copy (fsdp2)": full_copy,
              "reference model": reference, "optimizer": optimizer}
    idle_vllm = {} if u.vllm_sleep else {"vllm": vllm}  # a colocated vLLM that does not sleep holds its share
    parts = {  # phase -> what it holds on top of `static`; the last entry of each is freed after the phase
        "load": {"load copy": load_transient(m, u)},
        "generation": {"vllm": vllm, "rollout packed weights": roll["packed"], "rollout KV cache": roll["kv_cache"],
                       "rollout buffers": roll["transient"]},
        "training": {**idle_vllm, "fsdp2 gathered units": gathered, "ddp bucket": bucket, "gradients": grads,
                     "logits": act["logits"], "activations": act["total"] - act["logits"] - grads},
        "optimizer step": {**idle_vllm, "gradients": grads, "optimizer temporaries": adam_temp},
    }
    if u.iterations > 1 or u.beta > 0:
        parts["old/reference log-probs"] = {**idle_vllm, "fsdp2 gathered units": gathered,
                                            "log-prob forward": inference_activations(m, u)}
    if u.device == "cpu":
        # glibc keeps freed heap blocks that the next allocations cannot reuse: RSS grows past the live
        # tensors by a share of what each phase allocates and frees (CPU_HEAP_RETENTION, measured)
        for name, held in parts.items():
            churn = sum(v for k, v in held.items() if k not in ("vllm", "fsdp2 gathered units", "ddp bucket"))
            held["allocator retention (CPU)"] = int(CPU_HEAP_RETENTION * churn)
    phases = {name: sum(static.values()) + sum(held.values()) for name, held in parts.items()}
    peak_phase = max(phases, key=phases.get)
    every = [k for held in [static, *parts.values()] for k in held]
    components = {k: {**static, **parts[peak_phase]}.get(k, 0) for k in dict.fromkeys(every)}
    return Estimate(components=components, phases=phases, peak_phase=peak_phase, peak=phases[peak_phase],
                    activations={"with_checkpointing": (act["total"] if u.gradient_checkpointing else act_other) - grads,
                                 "without_checkpointing": (act_other if u.gradient_checkpointing else act["total"]) - grads},
                    trainable_params=n_train, tokens=step_tokens(u), flops=step_flops(m, u), notes=notes)


def load_transient(m: ModelShape, u: Setup) -> int:
    """Extra bytes while the weights load on CPU: a GGUF file is read and dequantised into a full state dict
    before the model takes it (one more copy of the weights plus the file); safetensors are memory-mapped
    (the file's pages count while they are copied); built models (r1kit:tiny) nothing."""
    if u.device != "cpu":
        return 0
    if m.source == "gguf":
        return m.params * u.s + m.file_bytes
    if m.source == "folder":
        return m.file_bytes
    return 0


def step_tokens(u: Setup) -> dict[str, int]:
    """Tokens of one step over all devices, at the worst case (every prompt P, every completion M)."""
    B, G, W = u.batch, u.generations, u.world_size
    prompts = max(1, B // G) * W
    return {"prompts": prompts, "completions": B * W, "prompt_tokens": prompts * u.prompt_len,
            "completion_tokens": B * W * u.completion_len,
            "total": prompts * u.prompt_len + B * W * u.completion_len}


def step_flops(m: ModelShape, u: Setup) -> dict[str, float]:
    """FLOPs of one step on one device: 2 x (matmul parameters) per token forward, backward twice that
    (LoRA: once, no weight gradients of the frozen base), plus attention (2 x 2 x H hd per key per token) and
    the LM head (2 V d per scored position). Generation: the unique prompts once + every new token;
    training: the prompt-shared forward per micro-batch where sharing pays (else the unmasked one), mu passes,
    +1 forward under checkpointing; old / reference log-probs: one forward each when used."""
    B, G, b, P, M = u.batch, u.generations, u.micro_batch, u.prompt_len, u.completion_len
    att = 4 * m.layers * m.heads * m.head_dim  # per token per key
    head = 2 * m.vocab * m.hidden
    body = 2 * m.body
    N = max(1, B // G)
    gen = N * P * (body + att * P / 2) + N * head + B * M * (body + head + att * (P + M / 2))
    micro = max(1, B // b)
    share = shares_prompts(m, u)
    g = groups_in(b, G) if share else b
    if share:
        fwd_mb = g * P * (body + att * P / 2) + b * M * (body + head + att * (P + M / 2))
    else:
        fwd_mb = b * (P + M) * (body + att * (P + M) / 2) + b * M * head
    fwd = micro * fwd_mb
    bwd_factor = 1.0 if u.lora_r > 0 else 2.0
    train = u.iterations * fwd * (1 + bwd_factor + (1 if u.gradient_checkpointing else 0))
    extra = fwd * ((1 if u.iterations > 1 else 0) + (1 if u.beta > 0 else 0))
    return {"generation": gen, "training": train, "log-prob forwards": extra, "total": gen + train + extra}


def with_changes(u: Setup, **changes) -> Setup:
    return replace(u, **changes)
