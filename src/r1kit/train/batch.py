"""From rollouts to training tensors, and the log-prob forward pass.

A rollout batch is laid out as `[left-padded prompt | completion, right-padded]`, so every prompt
ends at the same column P and the completion logits are the last T+1 positions of the model's
output (one forward over `logits_to_keep` positions, never the prompt's vocabulary logits).
Position ids start at 0 at each row's first real token, exactly as the rollout engine numbered
them, so the trainer's log-probs of an unchanged policy equal the engine's.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from r1kit.algo.linear_logprobs import FUSED_CHUNK_ELEMENTS, fuse_pays, linear_selective_log_softmax
from r1kit.algo.logprobs import chunk_rows, selective_log_softmax, selective_log_softmax_with_entropy
from r1kit.models.forward_cost import sharing_pays
from r1kit.models.heads import plain_head
from r1kit.models.lean_mlp import lean_mlps
from r1kit.models.loading import cache_kwarg


@dataclass
class Batch:
    input_ids: torch.Tensor       # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]  1 on real prompt and completion tokens
    position_ids: torch.Tensor    # [B, P + T]
    completion_mask: torch.Tensor  # [B, T]     1 on completion tokens that enter the loss
    prompt_len: int               # P
    sampler_logps: torch.Tensor | None = None  # [B, T]  the engine's log-probs of the completion tokens

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def completion_tokens(self) -> torch.Tensor:
        """[B, T] 1 on every real completion token (also of rows masked out of the loss)."""
        return self.attention_mask[:, self.prompt_len:]

    def select(self, idx: slice | torch.Tensor) -> "Batch":
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx],
                     self.completion_mask[idx], self.prompt_len,
                     None if self.sampler_logps is None else self.sampler_logps[idx])

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.completion_mask.to(device), self.prompt_len,
                     None if self.sampler_logps is None else self.sampler_logps.to(device))


def collate(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
            loss_mask: list[bool] | None = None, sampler_logps: list[list[float]] | None = None) -> Batch:
    """Left-pad prompts, right-pad completions; `loss_mask[i]=False` masks row i out of the loss.
    `sampler_logps[i]` (one per completion token, as the engine reported them) become `Batch.sampler_logps`."""
    B = len(prompt_ids)
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(c) for c in completion_ids))
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)  # [B, P+T]
    attn = torch.zeros((B, P + T), dtype=torch.long)  # [B, P+T]
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        attn[i, P - len(p):P] = 1
        if c:
            input_ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, P:P + len(c)] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # [B, P+T]
    completion_mask = attn[:, P:].float()  # [B, T]
    if loss_mask is not None:
        completion_mask = completion_mask * torch.tensor(loss_mask, dtype=torch.float32)[:, None]  # [B, T]
    engine_logps = None
    if sampler_logps is not None:
        engine_logps = torch.zeros((B, T), dtype=torch.float32)  # [B, T]
        for i, lp in enumerate(sampler_logps):
            engine_logps[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return Batch(input_ids, attn, position_ids, completion_mask, P, engine_logps)


def _prompt_groups(ids: torch.Tensor, attn: torch.Tensor):
    """Runs of consecutive rows with the same prompt (GRPO's G completions of one prompt).

    Returns (first row of each run [g], run index of every row [b]), or None when no two
    neighbouring rows share their prompt (nothing to gain from sharing)."""
    same = ((ids[1:] == ids[:-1]) | (attn[1:] == 0)).all(1) & (attn[1:] == attn[:-1]).all(1)  # [b-1]
    if not bool(same.any()):
        return None
    new_run = torch.cat([same.new_ones(1), ~same])  # [b]
    return new_run.nonzero().squeeze(1), new_run.long().cumsum(0) - 1  # [g], [b]


class _ReplaySafeLayer(DynamicLayer):
    """A KV-cache layer whose `update` gives the same result however often it runs: keys/values =
    a fixed prefix (the rows' prompt, or nothing) + the update's own states, never appended across
    calls. Activation checkpointing replays each decoder layer's forward during backward; with a
    growing cache the replay would append the states a second time, so transformers drops the
    cache under checkpointing. With this layer the replay is exact, and prompt sharing keeps
    working with checkpointing on (`_cache_ok_under_checkpointing`)."""

    def __init__(self, prefix: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.prefix = prefix
        if prefix is not None:  # before the first update: the prefix is the "past" (mask sizes)
            self.lazy_initialization(*prefix)
            self.keys, self.values = prefix

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.prefix is None:
            self.keys, self.values = key_states, value_states
        else:
            self.keys = torch.cat([self.prefix[0], key_states], dim=-2)  # [b, kv, P + t, d]
            self.values = torch.cat([self.prefix[1], value_states], dim=-2)  # [b, kv, P + t, d]
        return self.keys, self.values


def _checkpointed_layers(model) -> list | None:
    """The decoder layers that activation checkpointing will replay in this forward: [] when it is off
    (or in eval), None when it is on but not through transformers' `GradientCheckpointingLayer`s that
    can keep a cache (older releases, other mechanisms): prompt sharing is then not safe."""
    on = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) and m.training]
    if not on:
        return []
    layers = [m for m in on if isinstance(m, GradientCheckpointingLayer)]
    if not layers or not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache"):
        return None
    return layers


@contextlib.contextmanager
def _cache_ok_under_checkpointing(layers: list):
    """Let these checkpointed layers keep the (replay-safe) cache during this forward. The flag is
    read when a layer is called; the replay in backward reuses the arguments of that call."""
    saved = [m.__dict__.get("_can_checkpoint_with_cache") for m in layers]
    for m in layers:
        m._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for m, v in zip(layers, saved):
            if v is None:
                del m._can_checkpoint_with_cache
            else:
                m._can_checkpoint_with_cache = v


def _can_share_prompts(model, checkpointed: list | None) -> bool:
    """Prompt sharing runs the model twice per micro-batch (prompt with a KV cache, then completions);
    keep the single plain forward for encoder-decoders and sliding-window attention, and under
    activation checkpointing that would drop the cache (`checkpointed` None: the completions would
    lose their prompt). (FSDP2 models share too: each forward gathers and reshards the weights;
    backward gathers them once more.)"""
    cfg = getattr(model, "config", None)
    return cfg is not None and not getattr(cfg, "is_encoder_decoder", False) and \
        not getattr(cfg, "use_sliding_window", False) and checkpointed is not None


def _prompt_starts(am_prompt: torch.Tensor) -> torch.Tensor:
    """[B] the first live prompt column of each row ([B, P] mask; P for a row with no prompt)."""
    live = am_prompt.bool()  # [B, P]
    return torch.where(live.any(1), live.long().argmax(1), torch.full_like(live[:, 0], live.shape[1], dtype=torch.long))


def _flop_rates(model) -> tuple[float, float]:
    """(FLOPs per token of the decoder's linear layers, FLOPs per attended (query, key) pair): 2 x the
    non-embedding parameters, and 4 x layers x hidden size (q.k and p.v). Only compared between paths."""
    cfg = getattr(model, "config", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    n = sum(p.numel() for p in model.parameters()) - (emb.weight.numel() if emb is not None else 0)
    layers, hidden = getattr(cfg, "num_hidden_layers", 1) or 1, getattr(cfg, "hidden_size", 1) or 1
    return 2.0 * n, 4.0 * layers * hidden


PATHS = ("auto", "shared", "unmasked", "plain")
HEADS = ("auto", "fused", "logits")


def choose_head(model, rows: int, head: str = "auto"):
    """(decoder, lm_head) to take log-probs from the hidden states (`linear_selective_log_softmax`: no
    [rows, V] logits or logit gradient in memory), or None to take them from the model's logits: `head`
    "fused" where `plain_head` allows it, "logits" never, "auto" where `fuse_pays` (big logits)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "logits":
        return None
    parts = plain_head(model)
    if parts is None or (head == "auto" and not fuse_pays(rows, parts[1].weight.shape[0])):
        return None
    return parts


def choose_path(model, am: torch.Tensor, P: int, T: int, groups, checkpointed, path: str = "auto") -> str:
    """Which exact forward runs a micro-batch ([B, P + T] mask, prompt columns first): `path` when it can run
    here, and for "auto" "shared" where `sharing_pays` (models/forward_cost.py), else "unmasked"; "plain"
    (one masked forward over every row) where neither can run."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    starts = _prompt_starts(am[:, :P])  # [B]
    can_share = groups is not None and _can_share_prompts(model, checkpointed)
    can_unmask = P > 0 and bool((starts < P).all()) and \
        not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    if path == "auto" and can_share and can_unmask:
        lin, pair = _flop_rates(model)
        return "shared" if sharing_pays(len(groups[0]), starts, P, T, lin, pair) else "unmasked"
    if path in ("auto", "shared") and can_share:
        return "shared"
    if path in ("auto", "unmasked") and can_unmask:
        return "unmasked"
    return "plain"


def completion_logps(model, batch: Batch, temperature: float = 1.0, with_entropy: bool = False,
                     path: str = "auto", head: str = "auto"):
    """Per-token log-probs of the completion tokens (and optionally entropies), each [B, T].

    Logits are divided by `temperature`, as in sampling, so the ratio pi_theta / pi_old compares
    the same distributions the engine sampled from.

    Work done (the result is the same as one plain forward over [prompt | completion]):
    - the micro-batch is trimmed to its live columns: prompt columns that are padding in every row
      and completion columns past its longest completion are not run (zeros are returned there);
    - the last completion token is never fed (its output predicts nothing we score), so the logits
      are exactly [b, T, V], contiguous: no strided copy before the log-softmax;
    - `path` "auto": one of two exact ways by an estimate of their FLOPs for this micro-batch
      (`choose_path`): "shared" where it saves enough, else "unmasked" (below); "plain" is one masked
      forward over every row;
    - "unmasked": rows of equal prompt length run together with no attention mask, so the attention
      kernel skips the blocks above the diagonal (long completions after short prompts);
    - "shared": rows that repeat the previous row's prompt (a GRPO group) share ONE prompt
      forward: the unique prompts run once with a KV cache, the cache is repeated to the rows, and
      the completions run on top of it. Gradients flow back through the shared cache (summed over
      the group, as in the per-row forward). With G completions per prompt this removes (G-1)/G of
      the prompt tokens from the forward and backward;
    - with gradients on, gated MLPs keep g and u only and recompute the rest in the backward
      (`models.lean_mlp`; same gradients, 2 of 4 [tokens, inter] tensors per layer saved);
    - log-probs and entropy come from one chunked fp32 pass (`selective_log_softmax_with_entropy`); with
      `head` "fused" (or "auto" on big logits, `choose_head`) that pass also runs the LM head on the
      decoder's hidden states chunk by chunk, so the [b, n, V] logits never exist.
    """
    B, P = len(batch), batch.prompt_len
    T = batch.input_ids.shape[1] - P
    attn = batch.attention_mask
    live_prompt = attn[:, :P].any(0)  # [P]
    first = int(live_prompt.long().argmax()) if bool(live_prompt.any()) else P
    Tk = max(1, int(attn[:, P:].sum(1).max()))  # right padding: completions are contiguous from column P
    ids = batch.input_ids[:, first:P + Tk]  # [B, P' + Tk]
    am = attn[:, first:P + Tk]
    pos = batch.position_ids[:, first:P + Tk]
    P2 = P - first
    targets = ids[:, P2:]  # [B, Tk]
    t = temperature if temperature > 0 else 1.0
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 1
    chunk = chunk_rows(vocab)

    fused = choose_head(model, B * Tk, head)
    fused_chunk = chunk_rows(vocab, FUSED_CHUNK_ELEMENTS)

    def forward(keep: int, cache=None, **kw):  # logits [b, n, V] of the last `keep` positions (0: all), or hidden
        module = model if fused is None else fused[0]
        if cache is not None:
            kw[cache_kwarg(module)] = cache
        with lean_mlps(module, torch.is_grad_enabled()):  # gated MLPs keep half their activations for backward
            if fused is None:
                return model(**kw, logits_to_keep=keep).logits
            hidden = module(**kw).last_hidden_state  # [b, L, d]
        return hidden[:, -keep:] if keep else hidden

    def score(logits, index):  # [b, n, V] (or hidden [b, n, d]), [b, n] -> log-probs (and entropies) [b, n]
        if fused is not None:
            w, bias = fused[1].weight, fused[1].bias
            lp, ent = linear_selective_log_softmax(logits, w, index, bias, t, fused_chunk, with_entropy)
            return lp, (ent.detach() if ent is not None else None)
        if with_entropy:
            lp, ent = selective_log_softmax_with_entropy(logits, index, temperature=t, chunk_size=chunk)
            return lp, ent.detach()
        return selective_log_softmax(logits, index, temperature=t, chunk_size=chunk), None

    groups = _prompt_groups(ids[:, :P2], am[:, :P2]) if P2 > 0 and B > 1 else None
    checkpointed = _checkpointed_layers(model)
    chosen = choose_path(model, am, P2, Tk, groups, checkpointed, path)
    if chosen == "shared":
        starts, row_group = groups
        with _cache_ok_under_checkpointing(checkpointed):
            cache = Cache(layer_class_to_replicate=_ReplaySafeLayer)  # filled with the prompts' keys/values
            pout = forward(1, input_ids=ids[starts, :P2], attention_mask=am[starts, :P2],
                           position_ids=pos[starts, :P2], cache=cache, use_cache=True)
            first_logits = pout[:, -1:, :].index_select(0, row_group)  # [B, 1, V] predicts token 0
            lp0, ent0 = score(first_logits, targets[:, :1])
            if Tk > 1:
                # every row gets its prompt's keys/values as a fixed prefix (differentiable: gradients
                # flow back into the one shared prompt forward)
                rows = Cache(layers=[_ReplaySafeLayer((layer.keys.index_select(0, row_group),
                                                       layer.values.index_select(0, row_group)))
                                     for layer in cache.layers])
                out = forward(0, input_ids=ids[:, P2:-1], attention_mask=am[:, :-1], position_ids=pos[:, P2:-1],
                              cache=rows, use_cache=True)
        if Tk > 1:
            lp1, ent1 = score(out, targets[:, 1:])  # [B, Tk-1, V] -> [B, Tk-1]
            logps = torch.cat([lp0, lp1], 1)
            entropy = torch.cat([ent0, ent1], 1) if with_entropy else None
        else:
            logps, entropy = lp0, ent0
    elif chosen == "unmasked":
        # rows with the same prompt length run together with no attention mask at all: their only padding
        # is at the completions' right end, which causal attention keeps out of every scored position, so
        # the attention kernel may skip the blocks above the diagonal (about half its work on long rows)
        parts, order, starts = [], [], _prompt_starts(am[:, :P2])  # [B]
        for start in torch.unique(starts).tolist():
            sel = (starts == start).nonzero().squeeze(1)  # [b] rows whose prompt starts at this column
            out = forward(Tk, input_ids=ids[sel, start:-1], attention_mask=None, position_ids=pos[sel, start:-1],
                          use_cache=False)
            parts.append(score(out, targets[sel]))  # [b, Tk] x 2
            order.append(sel)
        back = torch.argsort(torch.cat(order))  # [B] rows back to the batch's order
        logps = torch.cat([lp for lp, _ in parts])[back]  # [B, Tk]
        entropy = torch.cat([e for _, e in parts])[back] if with_entropy else None
    else:
        out = forward(Tk, input_ids=ids[:, :-1], attention_mask=am[:, :-1], position_ids=pos[:, :-1],
                      use_cache=False)
        logps, entropy = score(out, targets)  # logits [B, Tk, V]: position t predicts token t
    if Tk < T:  # back to the batch's width; the trimmed columns are outside every mask
        logps = torch.nn.functional.pad(logps, (0, T - Tk))
        entropy = torch.nn.functional.pad(entropy, (0, T - Tk)) if entropy is not None else None
    return logps, entropy


@torch.no_grad()
def batched_logps(model, batch: Batch, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """`completion_logps` without gradients, in micro-batches (old and reference log-probs)."""
    was_training = model.training
    model.eval()
    parts = [completion_logps(model, batch.select(slice(i, i + micro_batch_size)), temperature)[0]
             for i in range(0, len(batch), micro_batch_size)]
    model.train(was_training)
    return torch.cat(parts)  # [B, T]


def micro_batches(needs_grad: torch.Tensor, size: int,
                  with_grad: int | None = None) -> list[tuple[slice | torch.Tensor, bool]]:
    """An update's micro-batches of at most `size` rows: (rows, run the backward) pairs covering every row once.

    `needs_grad` [B] marks the rows whose loss has a gradient (GRPO with beta 0: advantage != 0). They run
    first, in order, in as few micro-batches as hold them; the others run after them, forward only (their
    statistics are still wanted). At least one row runs a backward, so every parameter gets its gradient, zero
    or not, as without skipping. Where every process must run as many forward and backward passes (sharded
    weights: each pass is a collective), `with_grad` is the maximum over processes of `grad_batches`: that many
    micro-batches of `size` rows run a backward, filled up with rows without a gradient, then the rest, as many
    micro-batches as without skipping. When every row gets a backward the micro-batches are the plain
    consecutive slices, so nothing changes where nothing is skipped."""
    B = needs_grad.shape[0]
    grad_rows, other = needs_grad.nonzero().squeeze(1), (~needs_grad).nonzero().squeeze(1)  # [n], [B - n]
    if len(grad_rows) == B or (with_grad is not None and with_grad * size >= B):
        return [(slice(s, s + size), True) for s in range(0, B, size)]
    if with_grad is not None:  # the first with_grad x size rows of [grad rows | others] run a backward
        order, cut = torch.cat([grad_rows, other]), with_grad * size  # [B]
        grad_rows, other = order[:cut], order[cut:]
    elif len(grad_rows) == 0:  # one row's backward: zero gradients, not none
        grad_rows, other = other[:1], other[1:]
    return [(grad_rows[s:s + size], True) for s in range(0, len(grad_rows), size)] + \
        [(other[s:s + size], False) for s in range(0, len(other), size)]


def grad_batches(needs_grad: torch.Tensor, size: int) -> int:
    """How many micro-batches of `size` rows the rows marked in `needs_grad` [B] fill (at least 1)."""
    return max(1, math.ceil(int(needs_grad.sum()) / size))
