"""The transformers rollout engine: our own batched decode loop (no `model.generate`).

Pipeline for `generate(prompt_ids, params)`:

1. The unique prompts are left-padded into one batch; position ids start at 0 at each row's first
   real token. The prompts are prefilled ONCE; their last logits are repeated `n` times (rows
   grouped contiguously: prompt 0's n completions first) and, in the fast decoder, the n samples of
   a prompt read its one KV cache (shared-prefix attention); `kv_cache="private"` (or "auto") gives
   each row a copy of it once, where the prompt is short next to the completions.
2. Decode loop: sample from the last logits (`sampling.sample`), write the token into the rows'
   preallocated output buffer (`rows.Rows`), feed it back through the model with the KV cache.
   Everything per step is vectorised on the model's device; the host only looks at the batch every
   `check_every` steps (finish states, stop strings via `stops.StopScanner`, compaction), so there
   is no per-token `.item()`.
3. Finished rows (EOS, stop string, length) are dropped from the batch and the cache ("compaction":
   `Rows.select` and the decoder's `select`) once at least `compact_frac` of the current rows have
   finished; the loop ends when all are done.

Two decoders run the model: `fast_decoder.FastDecoder` (Llama-family architectures, listed there,
run by hand with a shared-prefix static KV cache) and `hf_decoder.HFDecoder` (the model's own
forward; any other architecture, or `backend="hf"`).

Determinism: the random stream is consumed per step for the rows still in the batch, so a given
seed reproduces exactly for the same prompts, weights and engine settings (check_every, compact_frac,
pack_weights).

Where the time goes (CPU, fp32): most of it is the linear layers' matmuls. With the few rows of a decode
step, the BLAS behind F.linear repacks every weight on every call, so the fast decoder multiplies by
copies packed once per call in oneDNN's layout (`packed_linear`, `pack_weights`): SmolLM2-135M, 8 rows,
1.28-1.43x faster generation; the 4.3M bench model, 64 rows, 1.2-1.35x. The rest is attention over the KV
cache (memory-bound, which the shared prompt cache cuts by up to n times), norms, RoPE and sampling.
"""

from __future__ import annotations

import torch

from r1kit.rollout.base import Completion, SamplingParams
from r1kit.rollout import packed_linear
from r1kit.rollout.fast_decoder import FastDecoder
from r1kit.rollout.hf_decoder import HFDecoder
from r1kit.rollout.rows import Rows
from r1kit.rollout.sampling import make_generator, sample
from r1kit.rollout.stops import StopScanner


# packing the weights costs about one pass over them (SmolLM2-135M: 0.33 s); from this many decode
# steps on, the faster steps repay it
PACK_MIN_TOKENS = 16


def _left_pad(prompts: list[list[int]], pad_id: int, device):
    """Prompts -> ids [N, P] left-padded with `pad_id`, attention mask [N, P] (bool) on `device`."""
    N, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((N, P), pad_id, dtype=torch.long)
    am = torch.zeros(N, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        am[i, P - len(p):] = True
    return ids.to(device), am.to(device)


class HFEngine:
    """RolloutEngine over a transformers causal LM that it shares with the trainer.

    backend: "auto" (fast hand-run decoder when the architecture supports it, else the generic one),
    "fast" or "hf". check_every: host looks at finish states every this many steps (default 1 on CPU,
    where a sync is free, 8 on accelerators). compact_frac: drop finished rows from the batch and the
    cache once this fraction of the current rows has finished. eos_token_ids: override the EOS ids
    (default: the model's generation_config, else the tokenizer's); `()` disables EOS (benchmarks).
    kv_cache: the fast decoder's cache layout, "shared" (each prompt's keys/values once), "private" (a
    copy per row) or "auto" (private where prompts are short next to the completions; FastDecoder).
    pack_weights: the fast decoder's decode steps multiply by oneDNN-packed copies of the plain linear
    weights (`packed_linear`); None (default): on CPU, for calls of at least PACK_MIN_TOKENS new tokens.
    """

    def __init__(self, model, tokenizer, backend: str = "auto", check_every: int | None = None,
                 compact_frac: float = 0.25, eos_token_ids=None, kv_cache: str = "shared",
                 pack_weights: bool | None = None):
        if backend not in ("auto", "fast", "hf"):
            raise ValueError(f"backend must be auto|fast|hf, got {backend!r}")
        if kv_cache not in FastDecoder.CACHES:
            raise ValueError(f"kv_cache must be one of {'|'.join(FastDecoder.CACHES)}, got {kv_cache!r}")
        self.model, self.tokenizer, self.backend, self.kv_cache = model, tokenizer, backend, kv_cache
        self.check_every, self.compact_frac = check_every, compact_frac
        if pack_weights and not packed_linear.available():
            raise ValueError("pack_weights=True needs a torch build with oneDNN (torch.backends.mkldnn)")
        self.pack_weights = pack_weights
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

    def _pack(self, dev, new_tokens: int) -> bool:
        """Whether the fast decoder's decode steps run on packed weight copies (packed_linear)."""
        if self.pack_weights is not None:
            return self.pack_weights
        return dev.type == "cpu" and new_tokens >= PACK_MIN_TOKENS and packed_linear.available()

    def _decoder_cls(self, max_len: int):
        fast = FastDecoder.supports(self.model, max_len)
        if self.backend == "fast" and not fast:
            raise ValueError(f"backend='fast' does not support model_type {self.model.config.model_type!r} for a "
                             f"{max_len}-token run (see FastDecoder.supports: architectures, sliding windows)")
        return FastDecoder if (fast and self.backend != "hf") else HFDecoder

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
        ids, am = _left_pad(prompts, self.pad_id, dev)
        P = ids.shape[1]
        pos = (am.long().cumsum(1) - 1).clamp_(min=0)
        gen = make_generator(params.seed, dev)
        check_every = self.check_every or (1 if dev.type == "cpu" else 8)
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=dev)

        cls = self._decoder_cls(P + M)
        if cls is FastDecoder:
            dec = cls(self.model, N, P, M, cache=self.kv_cache, pack=self._pack(dev, M))
        else:
            dec = cls(self.model, N, P, M)
        logits = dec.prefill(ids, am, pos)  # prefill the unique prompts once ...
        dec.repeat(n)  # ... and share their cache among the n samples
        if n > 1:
            logits = logits.repeat_interleave(n, dim=0)
        rows = Rows.start(am.sum(1).repeat_interleave(n), M)  # the next token is fed after the prompt
        results: list = [None] * len(rows)
        stopper = StopScanner(self.tokenizer, params.stop, len(rows)) if params.stop else None
        scan = list(range(len(rows)))  # rows alive at the last check (need a stop-string scan)
        c0 = 0  # first step not yet checked on the host

        for s in range(M):
            tok, lp = sample(logits, params, gen)
            rows.record(s, tok, lp, eos)
            last = s == M - 1
            if last or (s + 1) % check_every == 0:  # the host looks at the batch
                if stopper is not None and scan:
                    rows.stop(stopper.scan(scan, [rows.out[r] for r in scan], rows.tokens, rows.length, c0, s + 1))
                c0 = s + 1
                alive = rows.alive.tolist()
                if last or not any(alive):
                    break
                if len(alive) - sum(alive) >= max(1, self.compact_frac * len(alive)):
                    keep = [r for r, a in enumerate(alive) if a]
                    rows.emit([r for r, a in enumerate(alive) if not a], results)
                    rows = rows.select(keep)
                    dec.select(torch.tensor(keep, device=dev))
                    alive = [True] * len(keep)
                scan = [r for r, a in enumerate(alive) if a]
            logits = dec.step(rows.tokens[:, s], rows.pos, P + s)
            rows.pos += 1
        rows.emit(list(range(len(rows))), results)
        return results
