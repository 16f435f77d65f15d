"""The fast decoder: a Llama-family model run by hand with a shared-prefix static KV cache.

It runs the model's own submodules (embedding, norms, q/k/v/o projections, optional q/k norms,
MLP, rotary embedding, lm_head) with a preallocated KV cache written in place: one prompt part per
unique prompt, one completion part per row. No per-step mask building, no cache concatenation, no
allocation of the growing cache, and the prompt's keys/values are read once per prompt per step,
not once per sample. Because it calls the modules (not copies of the weights) it always sees the
current weights and works with wrapped projections (e.g. LoRA).

It depends on transformers internals (module and attribute names), so `FastDecoder.supports` checks
every one of them and the engine falls back to `HFDecoder` for anything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1kit.models.heads import unhooked
from r1kit.rollout import packed_linear

# The architectures the fast decoder runs, and where each one's attention reads a sliding window:
# "layer" (attn.sliding_window, per layer type), "config" (config.sliding_window, every layer) or
# None (no sliding windows). A window that covers the whole run (prompt + new tokens) masks
# nothing, so the plain causal attention here is exact; a narrower one needs the fallback.
SUPPORTED_ARCHITECTURES = {"llama": None, "qwen2": "layer", "qwen3": "layer", "mistral": "config"}

# norms whose forward is exactly F.rms_norm(x, weight, variance_epsilon) in fp32
_PLAIN_RMSNORMS = {"LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm"}
# MLPs whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x))
_PLAIN_MLPS = {"LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP"}


def _qkv(attn):  # an attention block's q, k, v projections, in the order _forward unpacks them
    return attn.q_proj, attn.k_proj, attn.v_proj


def _each(mods):  # callables that read the same input -> one callable returning their outputs, in order
    return lambda x: tuple(m(x) for m in mods)


def unwrap(model):
    """A peft model -> its transformers model; the LoRA layers stay inside, so calling the modules
    still applies the adapters."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _sliding_window(cfg, attn):
    where = SUPPORTED_ARCHITECTURES[cfg.model_type]
    if where == "layer":
        return getattr(attn, "sliding_window", None)
    return getattr(cfg, "sliding_window", None) if where == "config" else None


class FastDecoder:
    """Hand-run Llama-family decoder with a shared-prefix static KV cache.

    The cache has two parts: the prompts' keys/values, stored ONCE per unique prompt
    (`kv_p` [L, 2, N, KV, P, D], left-padded; pad columns carry -inf in `bias_p` [N, P]), and the
    completions' keys/values (`kv_d` [L, 2, B, KV, M, D], written in place at column s of decode
    step s). Row r of the batch (a completion) belongs to prompt `grp[r]` as its `slot[r]`-th sample.

    A decode step's attention (`_attend_shared`) scores each row's query against its prompt's keys
    as one matmul per prompt (the prompt's n samples' queries stacked: [n * G, D] x [D, P]) and
    against its own completion keys, then takes one softmax over both parts. So the prompt cache is
    read once per prompt instead of once per sample: with R1 prompts of a few hundred tokens and n = 8
    samples that is most of the memory traffic of attention, and the prompt is never copied n times.
    Finished rows leave the batch ("compaction"): only `kv_d`, `grp` and `slot` shrink.

    Where prompts are short next to the completions (`private_cache`), sharing saves little and its
    gathers cost more than it saves, so `repeat` copies each prompt's keys/values into its rows'
    caches once (`kv_d` [L, 2, B, KV, P + M, D], pad columns -inf in `bias_d` [B, P]) and a step's
    attention is two plain matmuls and a softmax (`_attend_private`): per layer and step on 2 threads,
    tiny model 8 x 8 rows, 24-token prompts, 512 cached completion tokens 4.65 -> 3.82 ms; SmolLM2, 2 x 4
    rows, 13-token prompts, 32 tokens 257 -> 61 us. `cache` (HFEngine's `kv_cache`): "shared" (the default),
    "private", or "auto" (private where `private_cache` says so). Auto is not the default: with it the demo
    (EOS, compaction, evaluation batches) took 234 s instead of 211 s, though the no-EOS bench cells ran
    0.95-0.97x.

    `pack` (HFEngine's `pack_weights`): after the prefill, `repeat` swaps the plain linear layers, the plain
    MLPs and the head for oneDNN-packed snapshots of their weights (`packed_linear`), so the decode steps'
    few-row matmuls skip the BLAS's per-call repacking (SmolLM2, 8 rows: 1.28-1.43x faster generation); q/k/v
    and gate/up run as one matmul each over their stacked weights (`PackedFused`: 4 calls per layer, not 7)."""

    CACHES = ("shared", "private", "auto")

    @staticmethod
    def supports(model, max_len: int | None = None) -> bool:
        """Whether this decoder runs `model` exactly, for runs of up to `max_len` tokens (prompt +
        new tokens; None: any length, so no sliding window at all)."""
        model = unwrap(model)
        cfg, inner = model.config, getattr(model, "model", None)
        if cfg.model_type not in SUPPORTED_ARCHITECTURES or inner is None:
            return False
        if not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
            return False
        if getattr(model, "lm_head", None) is None or getattr(cfg, "pretraining_tp", 1) > 1:
            return False
        for layer in inner.layers:
            attn = layer.self_attn
            window = _sliding_window(cfg, attn)
            if window is not None and (max_len is None or window < max_len):
                return False
            if not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")):
                return False
            if not all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp")):
                return False
        return True

    def __init__(self, model, prompts: int, prompt_len: int, new_tokens: int, cache: str = "shared",
                 pack: bool = False):
        if cache not in self.CACHES:
            raise ValueError(f"cache must be one of {self.CACHES}, got {cache!r}")
        self.cache, self.pack = cache, pack
        model = unwrap(model)
        self.model, self.inner = model, model.model
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.P, self.M = prompt_len, new_tokens
        self.layers = len(self.inner.layers)
        self.kv_p = torch.zeros(self.layers, 2, prompts, self.n_kv, prompt_len, self.head_dim, device=p.device, dtype=p.dtype)
        self.bias_p = torch.zeros(prompts, prompt_len, device=p.device, dtype=p.dtype)  # 0 / -inf per key column
        # set by repeat(), once the samples per prompt are known: n, the completion cache, and each
        # row's prompt (grp) and sample index within it (slot); for a private cache, each row's pad bias
        self.n = self.kv_d = self.grp = self.slot = self.bias_d = None
        self.private = False
        # rotary tables for every position, computed once by the model's own rotary module; the
        # rotate-half sign is folded into sin and the attention scale into q's tables, so applying
        # RoPE is mul + roll + addcmul and the scores need no extra scaling
        dummy = torch.zeros(1, device=p.device, dtype=p.dtype)
        cos, sin = self.inner.rotary_emb(dummy, torch.arange(prompt_len + new_tokens, device=p.device)[None])
        cos, sin, half = cos[0], sin[0], self.head_dim // 2
        sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        scale = self.inner.layers[0].self_attn.scaling
        self.scale_folded = all(layer.self_attn.scaling == scale for layer in self.inner.layers)
        qs = scale if self.scale_folded else 1.0
        self.rope_tab = torch.stack((cos * qs, sin * qs, cos, sin), dim=1)  # [P + M, 4, D]
        self.head_transposed = p.device.type == "cpu" and type(model.lm_head) is torch.nn.Linear and \
            unhooked(model.lm_head)
        norms = [m for layer in self.inner.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]
        self.fused_norm = p.dtype == torch.float32 and all(
            type(m).__name__ in _PLAIN_RMSNORMS and hasattr(m, "variance_epsilon") for m in norms + [self.inner.norm]
        )
        # each layer's q/k/v projections (one callable: h -> (q, k, v)), o projection and MLP: the modules
        # themselves, until repeat() packs the plain ones for the decode steps (packed_linear; `pack`)
        self.proj = [(_each(_qkv(layer.self_attn)), layer.self_attn.o_proj, layer.mlp) for layer in self.inner.layers]
        self.head_packed = None

    def _pack(self, rows: int):
        """Replace the plain linears (and plain MLPs' three) by oneDNN-packed copies for `rows` rows; q/k/v
        (and gate/up) as one fused matmul where all of them are packable."""
        pk, fused = packed_linear.pack, packed_linear.PackedFused
        for li, layer in enumerate(self.inner.layers):
            a, m = layer.self_attn, layer.mlp
            qkv = _qkv(a)
            plain_mlp = type(m).__name__ in _PLAIN_MLPS and unhooked(m) and \
                fused.fusable((m.gate_proj, m.up_proj)) and packed_linear.packable(m.down_proj)
            self.proj[li] = (fused(qkv, rows) if fused.fusable(qkv) else _each([pk(x, rows) for x in qkv]),
                             pk(a.o_proj, rows), packed_linear.PackedMLP(m, rows) if plain_mlp else m)
        if packed_linear.packable(self.model.lm_head):
            self.head_packed = packed_linear.PackedLinear(self.model.lm_head, rows)

    def _norm(self, mod, x):
        if self.fused_norm:  # one kernel instead of seven; same formula as the module in fp32
            return F.rms_norm(x, (x.shape[-1],), mod.weight, mod.variance_epsilon)
        return mod(x)

    @staticmethod
    def _rope(x, cos, sin):  # x*cos + rotate_half(x)*sin, with rotate_half's sign already in `sin`
        return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)

    def _attend_shared(self, q, kp, vp, kd, vd):
        """One pre-scaled query per row against its prompt's cache and its own completion cache.

        q [B, H, 1, D]; kp, vp [N, KV, P, D] (shared per prompt); kd, vd [B, KV, s, D]. Grouped-query
        heads are folded into the query axis (head h reads kv head h // G, as in transformers), so no
        K/V expansion is materialised. Returns [B, H, 1, D]."""
        B, H, _, D = q.shape
        N, KV, P, _ = kp.shape
        G, n = H // KV, self.n
        grp, slot = self.grp, self.slot
        qr = q.reshape(B, KV, G, D)  # [B, KV, G, D]
        qg = q.new_zeros(N, n, KV, G, D)  # queries stacked per prompt; empty slots stay 0
        qg[grp, slot] = qr  # [N, n, KV, G, D]
        qg = qg.permute(0, 2, 1, 3, 4).reshape(N, KV, n * G, D)  # [N, KV, n*G, D]
        s_p = torch.matmul(qg, kp.transpose(-1, -2)).add_(self.bias_p[:, None, None])  # [N, KV, n*G, P]
        s_p = s_p.view(N, KV, n, G, P)[grp, :, slot]  # [B, KV, G, P]  (this row's slot of its prompt)
        s_d = torch.matmul(qr, kd.transpose(-1, -2))  # [B, KV, G, s]
        probs = torch.softmax(torch.cat((s_p, s_d), dim=-1), dim=-1)  # [B, KV, G, P + s]
        p_p, p_d = probs.split((P, kd.shape[2]), dim=-1)  # [B, KV, G, P], [B, KV, G, s]
        pg = probs.new_zeros(N, n, KV, G, P)
        pg[grp, slot] = p_p  # [N, n, KV, G, P]
        pg = pg.permute(0, 2, 1, 3, 4).reshape(N, KV, n * G, P)  # [N, KV, n*G, P]
        o_p = torch.matmul(pg, vp).view(N, KV, n, G, D)[grp, :, slot]  # [B, KV, G, D]
        o = torch.matmul(p_d, vd).add_(o_p)  # [B, KV, G, D]
        return o.reshape(B, H, 1, D)

    @staticmethod
    def private_cache(prompts: int, n: int, prompt_len: int, new_tokens: int) -> bool:
        """Whether copying the prompts' cache into every row beats sharing it: when the copies' extra reads
        per step, (n - 1) x prompts x P keys, are at most the completion cache's average, B x M / 2 (the
        shared path's gathers and concatenations cost about that much)."""
        return (n - 1) * prompts * prompt_len <= prompts * n * new_tokens / 2

    def _attend_private(self, q, k, v):
        """Queries q [B, H, 1, D] against each row's own cache k, v [B, KV, P + s + 1, D] (prompt columns
        first, pads -inf in bias_d). Returns [B, H, 1, D]."""
        B, H, _, D = q.shape
        KV, P = k.shape[1], self.P
        qr = q.reshape(B, KV, H // KV, D)  # [B, KV, G, D]
        scores = torch.matmul(qr, k.transpose(-1, -2))  # [B, KV, G, P + s + 1]
        scores[..., :P] += self.bias_d[:, None, None]  # [B, KV, G, P]
        o = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, KV, G, D]
        return o.reshape(B, H, 1, D)

    def _forward(self, ids, pos, s: int | None, mask=None):
        """Prefill (s None): ids/pos [N, P] -> prompt cache, with `mask` [N, 1, P, P] (True = attend).
        Decode step s: ids/pos [B, 1] -> completion cache column s. Returns the last logits [rows, V]."""
        B, T = ids.shape
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        x = self.inner.embed_tokens(ids)  # [B, T, hidden]
        cq, sq, ck, sk = self.rope_tab[pos].unsqueeze(1).unbind(3)  # each [B, 1, T, D]
        for li, layer in enumerate(self.inner.layers):
            attn, (qkv, o_proj, mlp) = layer.self_attn, self.proj[li]
            q, k, v = qkv(self._norm(layer.input_layernorm, x))  # [B, T, H*D], [B, T, KV*D] x 2
            q = q.view(B, T, H, D)
            k = k.view(B, T, KV, D)
            v = v.view(B, T, KV, D).transpose(1, 2)  # [B, KV, T, D]
            if getattr(attn, "q_norm", None) is not None:  # qwen3-style per-head norms
                q, k = attn.q_norm(q), attn.k_norm(k)
            q = self._rope(q.transpose(1, 2), cq, sq)  # [B, H, T, D]
            k = self._rope(k.transpose(1, 2), ck, sk)  # [B, KV, T, D]
            if not self.scale_folded:
                q = q * attn.scaling
            if s is None:
                kc, vc = self.kv_p[li, 0], self.kv_p[li, 1]  # [N, KV, P, D]
                kc.copy_(k)
                vc.copy_(v)
                o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, scale=1.0, enable_gqa=KV != H)
            elif self.private:
                kd, vd = self.kv_d[li, 0], self.kv_d[li, 1]  # [B, KV, P + M, D]
                c = self.P + s
                kd[:, :, c : c + 1] = k
                vd[:, :, c : c + 1] = v
                o = self._attend_private(q, kd[:, :, : c + 1], vd[:, :, : c + 1])
            else:
                kd, vd = self.kv_d[li, 0], self.kv_d[li, 1]  # [B, KV, M, D]
                kd[:, :, s : s + 1] = k
                vd[:, :, s : s + 1] = v
                o = self._attend_shared(q, self.kv_p[li, 0], self.kv_p[li, 1], kd[:, :, : s + 1], vd[:, :, : s + 1])
            x = x + o_proj(o.transpose(1, 2).reshape(B, T, H * D))
            x = x + mlp(self._norm(layer.post_attention_layernorm, x))
        return self._head(self._norm(self.inner.norm, x[:, -1])).float()  # [B, V]

    def _head(self, h):
        """The LM head on the last hidden states h [B, hidden] -> logits [B, V].

        On CPU a plain `nn.Linear` head runs as W @ h^T: with a few rows and a large vocabulary the
        BLAS then splits the [V, hidden] weight between threads, where F.linear's h @ W^T was 1.5-2x
        slower (SmolLM2's 49152 x 576 head, 2 threads: 8 rows 16.8 -> 8.5 ms, 64 rows 40 -> 28 ms).
        Same products, summed in another order (differences at fp32 rounding)."""
        if self.head_packed is not None:
            return self.head_packed(h)
        head = self.model.lm_head
        if not self.head_transposed or h.shape[0] < 2:
            return head(h)
        out = torch.mm(head.weight, h.t())  # [V, B]
        if head.bias is not None:
            out += head.bias[:, None]  # [V, B]
        return out.t().contiguous()  # [B, V]

    def prefill(self, ids, am, pos):
        T = ids.shape[1]
        self.bias_p.masked_fill_(~am, float("-inf"))
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        mask = causal & am[:, None, :]
        mask |= torch.eye(T, dtype=torch.bool, device=ids.device)  # pad queries see themselves: no NaN rows
        return self._forward(ids, pos, None, mask[:, None])

    def repeat(self, n: int):
        """n samples per prompt: rows grouped by prompt (prompt 0's n samples first)."""
        N = self.kv_p.shape[2]
        self.n = n
        self.grp = torch.arange(N, device=self.device).repeat_interleave(n)  # [B]
        self.slot = torch.arange(n, device=self.device).repeat(N)  # [B]
        self.private = self.cache == "private" or (self.cache == "auto" and self.private_cache(N, n, self.P, self.M))
        if self.pack:  # the prefill ran on the modules (many rows); the decode steps run packed
            self._pack(N * n)
        if self.private:  # each row's cache starts with a copy of its prompt's
            self.kv_d = torch.empty(self.layers, 2, N * n, self.n_kv, self.P + self.M, self.head_dim,
                                    device=self.device, dtype=self.dtype)
            self.kv_d[..., : self.P, :] = self.kv_p.repeat_interleave(n, dim=2)  # [L, 2, B, KV, P, D]
            self.bias_d = self.bias_p.repeat_interleave(n, dim=0)  # [B, P]
            self.kv_p = None
        else:
            self.kv_d = torch.zeros(self.layers, 2, N * n, self.n_kv, self.M, self.head_dim, device=self.device,
                                    dtype=self.dtype)

    def select(self, idx):
        self.kv_d = self.kv_d.index_select(2, idx)
        if self.private:
            self.bias_d = self.bias_d.index_select(0, idx)
        self.grp, self.slot = self.grp.index_select(0, idx), self.slot.index_select(0, idx)

    def step(self, tok, pos, col: int):
        return self._forward(tok[:, None], pos[:, None], col - self.P)
