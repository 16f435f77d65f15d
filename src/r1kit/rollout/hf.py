"""The transformers rollout engine: our own batched decode loop (no `model.generate`).

Pipeline for `generate(prompt_ids, params)`:

1. The unique prompts are left-padded into one batch; position ids start at 0 at each row's first
   real token. The prompts are prefilled ONCE; their last logits are repeated `n` times (rows
   grouped contiguously: prompt 0's n completions first) and, in the fast decoder, their KV cache is
   never copied: the n samples of a prompt read its one cache (shared-prefix attention).
2. Decode loop: sample from the last logits, write the token into a preallocated output buffer,
   feed it back through the model with the KV cache. Everything per step is vectorised on the
   model's device; the host only looks at the batch every `check_every` steps (finish states,
   stop strings, compaction), so there is no per-token `.item()`.
3. Finished rows (EOS, stop string, length) are dropped from the batch and the cache ("compaction")
   once at least `compact_frac` of the current rows have finished; the loop ends when all are done.

Two decoders run the model:

* `_FastDecoder` (Llama-family: llama, qwen2, qwen3, ... without sliding windows): runs the model's
  own submodules (embedding, norms, q/k/v/o projections, MLP, rotary embedding, lm_head) by hand
  with a preallocated KV cache written in place: one prompt part per unique prompt, one completion
  part per row. No per-step mask building, no cache concatenation, no allocation of the growing
  cache, and the prompt's keys/values are read once per prompt per step, not once per sample. Because it calls the modules (not copies of the
  weights) it always sees the current weights and works with wrapped projections (e.g. LoRA).
* `_HFDecoder`: the generic fallback, `model(...)` with a transformers `DynamicCache`, explicit
  attention mask and position ids. Used for any other architecture (or `backend="hf"`).

Sampling (see `_sample`): logp = log_softmax(logits / T) in fp32; the chosen token's log-prob is read
from this UNFILTERED distribution (what the trainer recomputes as old log-probs); then top-k and
top-p filtering; then an exact categorical draw (exponential-race / Gumbel-max trick) with a
`torch.Generator` seeded from `params.seed`. T == 0 is greedy, log-probs then at T = 1.

Determinism: the random stream is consumed per step for the rows still in the batch, so a given
seed reproduces exactly for the same prompts, weights and engine settings (check_every, compact_frac).

Where the time goes (CPU, the 4.3M-param bench model, batch 64, fp32): most of it is the linear
layers' matmuls (compute-bound; at 64 rows a CPU matmul reaches about half of the big-matrix peak;
`bench/bench_rollout.py` prints this floor) and the rest is mostly reading the KV cache in attention
(memory-bound, which the shared prompt cache cuts by up to n times). Python/dispatch overhead is small
(~0.3 ms/step), so on CPU the ratio to `model.generate` is bounded by the linear-layer floor.

Stop strings are searched incrementally in the decoded text: each check decodes only the new tokens
plus a short look-back window (enough tokens to hold the longest stop string), so the total decode
cost is linear in the completion length. The completion is cut right after the token that completed
the stop string.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1kit.rollout.base import Completion, SamplingParams

def _unwrap(model):
    """A peft model -> its transformers model; the LoRA layers stay inside, so calling the modules
    still applies the adapters."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


_PLAIN_RMSNORMS = {"LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm"}


class _FastDecoder:
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
    Finished rows leave the batch ("compaction"): only `kv_d`, `grp` and `slot` shrink."""

    @staticmethod
    def supports(model) -> bool:
        model = _unwrap(model)
        cfg, inner = model.config, getattr(model, "model", None)
        if cfg.model_type not in {"llama", "qwen2", "qwen3", "mistral"} or inner is None:
            return False
        if not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
            return False
        if getattr(model, "lm_head", None) is None or getattr(cfg, "pretraining_tp", 1) > 1:
            return False
        for layer in inner.layers:
            attn = layer.self_attn
            if getattr(attn, "sliding_window", None) is not None:  # windowed layers: use the fallback
                return False
            if not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")):
                return False
            if not all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp")):
                return False
        return True

    def __init__(self, model, prompts: int, prompt_len: int, new_tokens: int):
        model = _unwrap(model)
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
        # row's prompt (grp) and sample index within it (slot)
        self.n = self.kv_d = self.grp = self.slot = None
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
        norms = [m for layer in self.inner.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]
        self.fused_norm = p.dtype == torch.float32 and all(
            type(m).__name__ in _PLAIN_RMSNORMS and hasattr(m, "variance_epsilon") for m in norms + [self.inner.norm]
        )

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

    def _forward(self, ids, pos, s: int | None, mask=None):
        """Prefill (s None): ids/pos [N, P] -> prompt cache, with `mask` [N, 1, P, P] (True = attend).
        Decode step s: ids/pos [B, 1] -> completion cache column s. Returns the last logits [rows, V]."""
        B, T = ids.shape
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        x = self.inner.embed_tokens(ids)  # [B, T, hidden]
        cq, sq, ck, sk = self.rope_tab[pos].unsqueeze(1).unbind(3)  # each [B, 1, T, D]
        for li, layer in enumerate(self.inner.layers):
            attn = layer.self_attn
            h = self._norm(layer.input_layernorm, x)
            q = attn.q_proj(h).view(B, T, H, D)
            k = attn.k_proj(h).view(B, T, KV, D)
            v = attn.v_proj(h).view(B, T, KV, D).transpose(1, 2)  # [B, KV, T, D]
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
            else:
                kd, vd = self.kv_d[li, 0], self.kv_d[li, 1]  # [B, KV, M, D]
                kd[:, :, s : s + 1] = k
                vd[:, :, s : s + 1] = v
                o = self._attend_shared(q, self.kv_p[li, 0], self.kv_p[li, 1], kd[:, :, : s + 1], vd[:, :, : s + 1])
            x = x + attn.o_proj(o.transpose(1, 2).reshape(B, T, H * D))
            x = x + layer.mlp(self._norm(layer.post_attention_layernorm, x))
        return self.model.lm_head(self._norm(self.inner.norm, x[:, -1])).float()  # [B, V]

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
        self.kv_d = torch.zeros(self.layers, 2, N * n, self.n_kv, self.M, self.head_dim, device=self.device, dtype=self.dtype)

    def select(self, idx):
        self.kv_d = self.kv_d.index_select(2, idx)
        self.grp, self.slot = self.grp.index_select(0, idx), self.slot.index_select(0, idx)

    def step(self, tok, pos, col: int):
        return self._forward(tok[:, None], pos[:, None], col - self.P)


class _HFDecoder:
    """Generic fallback: the model's own forward with a transformers DynamicCache."""

    def __init__(self, model, prompts: int, prompt_len: int, new_tokens: int):
        self.model, self.max_len, self.cache, self.am = model, prompt_len + new_tokens, None, None

    def _call(self, ids, am, pos):
        out = self.model(input_ids=ids, attention_mask=am, position_ids=pos, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def prefill(self, ids, am, pos):
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.am = torch.ones(ids.shape[0], self.max_len, dtype=torch.long, device=ids.device)
        self.am[:, : ids.shape[1]] = am.long()
        return self._call(ids, self.am[:, : ids.shape[1]], pos)

    def repeat(self, n: int):
        if n == 1:
            return
        self.cache.batch_repeat_interleave(n)
        self.am = self.am.repeat_interleave(n, dim=0)

    def select(self, idx):
        self.cache.batch_select_indices(idx)
        self.am = self.am.index_select(0, idx)

    def step(self, tok, pos, col: int):
        return self._call(tok[:, None], self.am[:, : col + 1], pos[:, None])


def _sample(logits, params: SamplingParams, gen):
    """logits [B, V] fp32 -> (token [B], logp of token under softmax(logits/T) before filtering [B])."""
    if params.temperature == 0:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(1, tok[:, None]).squeeze(1)
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    filt = logp
    if 0 < params.top_k < logp.shape[-1]:
        kth = logp.topk(params.top_k, dim=-1).values[:, -1:]
        filt = filt.masked_fill(filt < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_lp, order = filt.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_lp, dim=-1)
        drop = (probs.cumsum(-1) - probs) >= params.top_p  # keep the smallest prefix with mass >= top_p
        filt = filt.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    # exact categorical draw: argmax p_i / E_i with E_i ~ Exp(1) (equivalent to Gumbel-max)
    race = torch.rand(filt.shape, generator=gen, device=filt.device).log_().neg_()  # Exp(1) draws
    tok = (filt - filt.amax(-1, keepdim=True)).exp_().div_(race).argmax(-1)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)


class HFEngine:
    """RolloutEngine over a transformers causal LM that it shares with the trainer.

    backend: "auto" (fast hand-run decoder when the architecture supports it, else the generic one),
    "fast" or "hf". check_every: host looks at finish states every this many steps (default 1 on CPU,
    where a sync is free, 8 on accelerators). compact_frac: drop finished rows from the batch and the
    cache once this fraction of the current rows has finished. eos_token_ids: override the EOS ids
    (default: the model's generation_config, else the tokenizer's); `()` disables EOS (benchmarks).
    """

    def __init__(self, model, tokenizer, backend: str = "auto", check_every: int | None = None,
                 compact_frac: float = 0.25, eos_token_ids=None):
        if backend not in ("auto", "fast", "hf"):
            raise ValueError(f"backend must be auto|fast|hf, got {backend!r}")
        self.model, self.tokenizer, self.backend = model, tokenizer, backend
        self.check_every, self.compact_frac = check_every, compact_frac
        eos = eos_token_ids
        if eos is None and getattr(model, "generation_config", None) is not None:
            eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = sorted({eos} if isinstance(eos, int) else set(eos or ()))
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    def update_weights(self, model) -> None:
        """This engine shares the policy module and reads its weights at every step, so there is
        nothing to copy: keep the reference (in case a different module object is passed). An engine
        owning its own copy (eval copy, vLLM) would load `model.state_dict()` here instead."""
        self.model = model

    def _decoder_cls(self):
        fast = _FastDecoder.supports(self.model)
        if self.backend == "fast" and not fast:
            raise ValueError(f"backend='fast' does not support model_type {self.model.config.model_type!r}")
        return _FastDecoder if (fast and self.backend != "hf") else _HFDecoder

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        if not prompt_ids:
            return []
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("empty prompt: every prompt needs at least one token")
        model, was_training = self.model, self.model.training
        model.eval()
        try:
            with torch.inference_mode():
                rows = self._run([list(p) for p in prompt_ids], params)
        finally:
            model.train(was_training)
        texts = self.tokenizer.batch_decode([r[0] for r in rows], skip_special_tokens=True)
        n = params.n
        return [
            Completion(prompt_index=i // n, prompt_ids=list(prompt_ids[i // n]), completion_ids=ids,
                       logprobs=lps, finish_reason=reason, text=text)
            for i, ((ids, lps, reason), text) in enumerate(zip(rows, texts))
        ]

    # -- the decode loop ---------------------------------------------------------------------------

    def _run(self, prompts, params: SamplingParams):
        dev = next(self.model.parameters()).device
        N, n, M = len(prompts), params.n, params.max_new_tokens
        B, P = N * n, max(len(p) for p in prompts)
        ids = torch.full((N, P), self.pad_id, dtype=torch.long)
        am = torch.zeros(N, P, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
            am[i, P - len(p):] = True
        ids, am = ids.to(dev), am.to(dev)
        pos = (am.long().cumsum(1) - 1).clamp_(min=0)

        gen = torch.Generator(device=dev)
        if params.seed is not None:  # same seed + inputs + weights + engine settings -> same output
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        check_every = self.check_every or (1 if dev.type == "cpu" else 8)
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=dev)

        dec = self._decoder_cls()(self.model, N, P, M)
        logits = dec.prefill(ids, am, pos)  # prefill the unique prompts once ...
        dec.repeat(n)  # ... and share their cache among the n samples
        if n > 1:
            logits = logits.repeat_interleave(n, dim=0)
        cur_pos = am.sum(1).repeat_interleave(n)  # position of the next token fed

        out_tok = torch.empty(B, M, dtype=torch.long, device=dev)
        out_lp = torch.empty(B, M, dtype=torch.float32, device=dev)
        alive = torch.ones(B, dtype=torch.bool, device=dev)
        length = torch.full((B,), M, dtype=torch.long, device=dev)  # valid tokens per row
        reason = torch.zeros(B, dtype=torch.long, device=dev)  # 0 length, 1 eos, 2 stop
        row_ids = list(range(B))  # current row -> output index
        results: list = [None] * B
        stopper = _StopScanner(self.tokenizer, params.stop, B) if params.stop else None
        scan_rows = list(range(B))  # rows alive at the last check (need a stop-string scan)
        c0 = 0  # first step not yet checked on the host

        for s in range(M):
            tok, lp = _sample(logits, params, gen)
            out_tok[:, s] = tok
            out_lp[:, s] = lp
            if eos.numel():
                hit = alive & torch.isin(tok, eos)
                length = torch.where(hit, s + 1, length)
                reason = torch.where(hit, 1, reason)
                alive &= ~hit
            last = s == M - 1
            if not (last or (s + 1) % check_every == 0):
                logits = dec.step(tok, cur_pos, P + s)
                cur_pos += 1
                continue
            if stopper is not None and scan_rows:
                stops = stopper.scan(scan_rows, [row_ids[r] for r in scan_rows], out_tok, length, c0, s + 1)
                if stops:
                    r_idx = torch.tensor([r for r, _ in stops], device=dev)
                    length[r_idx] = torch.tensor([j for _, j in stops], device=dev)
                    reason[r_idx] = 2
                    alive[r_idx] = False
            c0 = s + 1
            alive_h = alive.tolist()
            n_alive = sum(alive_h)
            if n_alive == 0 or last:
                break
            if len(alive_h) - n_alive >= max(1, self.compact_frac * len(alive_h)):
                keep = [r for r, a in enumerate(alive_h) if a]
                self._flush([r for r, a in enumerate(alive_h) if not a], row_ids, out_tok, out_lp, length, reason, results)
                keep_t = torch.tensor(keep, device=dev)
                out_tok, out_lp = out_tok.index_select(0, keep_t), out_lp.index_select(0, keep_t)
                length, reason = length.index_select(0, keep_t), reason.index_select(0, keep_t)
                alive, tok, cur_pos = alive.index_select(0, keep_t), tok.index_select(0, keep_t), cur_pos.index_select(0, keep_t)
                dec.select(keep_t)
                row_ids = [row_ids[r] for r in keep]
                alive_h = [True] * len(keep)
            scan_rows = [r for r, a in enumerate(alive_h) if a]
            logits = dec.step(tok, cur_pos, P + s)
            cur_pos += 1
        self._flush(list(range(len(row_ids))), row_ids, out_tok, out_lp, length, reason, results)
        return results

    @staticmethod
    def _flush(rows, row_ids, out_tok, out_lp, length, reason, results):
        if not rows:
            return
        idx = torch.tensor(rows, device=out_tok.device)
        toks, lps = out_tok.index_select(0, idx).tolist(), out_lp.index_select(0, idx).tolist()
        lens, reasons = length.index_select(0, idx).tolist(), reason.index_select(0, idx).tolist()
        names = ("length", "eos", "stop")
        for r, t, lp, ln, rs in zip(rows, toks, lps, lens, reasons):
            results[row_ids[r]] = (t[:ln], lp[:ln], names[rs])


class _StopScanner:
    """Incremental stop-string search over each row's decoded text (look-back window, linear cost)."""

    def __init__(self, tokenizer, stops, rows: int):
        self.tokenizer, self.stops = tokenizer, tuple(stops)
        # each token decodes to >= 1 byte, so a stop string spans at most len(bytes) tokens; +4 covers
        # a multi-byte character split at the window's start
        self.window = max(len(s.encode("utf-8")) for s in self.stops) + 4
        self.hist: list[list[int]] = [[] for _ in range(rows)]  # tokens per output row (host copy)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            self._decode = lambda seqs: backend.decode_batch(seqs, skip_special_tokens=True)
        else:
            self._decode = lambda seqs: [tokenizer.decode(q, skip_special_tokens=True) for q in seqs]

    def _hit(self, text: str) -> bool:
        return any(s in text for s in self.stops)

    def scan(self, rows, outs, out_tok, length, c0: int, c1: int):
        """Scan steps [c0, c1) of current `rows` (output indices `outs`); return [(row, new_length)]."""
        idx = torch.tensor(rows, device=out_tok.device)
        new = out_tok.index_select(0, idx)[:, c0:c1].tolist()
        lens = length.index_select(0, idx).tolist()
        W, windows, spans = self.window, [], []
        for o, toks, ln in zip(outs, new, lens):
            end = min(c1, ln)
            h = self.hist[o]
            h.extend(toks[: max(0, end - c0)])
            windows.append(h[max(0, c0 - W): end])
            spans.append(end)
        found = []
        for r, o, text, end in zip(rows, outs, self._decode(windows), spans):
            if end <= c0 or not self._hit(text):
                continue
            h = self.hist[o]
            for j in range(c0, end):  # exact token that completes the stop string (rare path)
                if self._hit(self._decode([h[max(0, j + 1 - W): j + 1]])[0]):
                    found.append((r, j + 1))
                    break
        return found
