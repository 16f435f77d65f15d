"""The generic decoder: the model's own forward with a transformers `DynamicCache`.

Used for every architecture the fast decoder does not run (or with `backend="hf"`). Same interface
as `FastDecoder`: `prefill(ids, am, pos)` -> last logits of the unique prompts; `repeat(n)` shares
them among n samples per prompt; `step(tok, pos, col)` feeds one token per row at cache column
`col`; `select(idx)` keeps only rows `idx` of the batch (compaction).
"""

from __future__ import annotations

import torch

from r1kit.models.loading import cache_kwarg


class HFDecoder:
    """Generic fallback: the model's own forward with a transformers DynamicCache."""

    def __init__(self, model, prompts: int, prompt_len: int, new_tokens: int):
        self.model, self.max_len, self.cache, self.am = model, prompt_len + new_tokens, None, None
        self.cache_kw = cache_kwarg(model)  # "cache" or "past_key_values", as its forward names it

    def _call(self, ids, am, pos):
        out = self.model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=True,
                         **{self.cache_kw: self.cache})
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else out.past_key_values
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

