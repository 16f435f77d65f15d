"""The decode loop's per-row state: one object, compacted as a whole.

Row r of the current batch is completion `out[r]` of the `generate` call (its prompt is
`out[r] // n`). Every per-row field has the batch on its first axis, so `select(keep)` compacts all
of them with the same rows; adding a field here is enough for compaction to carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

FINISH_REASONS = ("length", "eos", "stop")  # the codes in `Rows.reason`
_EOS, _STOP = FINISH_REASONS.index("eos"), FINISH_REASONS.index("stop")


@dataclass
class Rows:
    out: list[int]  # row -> output index (host list)
    tokens: torch.Tensor  # [B, M] sampled tokens, column s written at step s
    logprobs: torch.Tensor  # [B, M] fp32, their log-probs (see sampling.sample)
    length: torch.Tensor  # [B] valid tokens per row (M until the row finishes)
    reason: torch.Tensor  # [B] index into FINISH_REASONS
    alive: torch.Tensor  # [B] bool, not finished
    pos: torch.Tensor  # [B] position id of the next token fed to the model

    @classmethod
    def start(cls, pos: torch.Tensor, new_tokens: int) -> Rows:
        """All B = len(pos) rows alive, nothing generated; `pos` [B] is each row's next position."""
        B, M, dev = pos.shape[0], new_tokens, pos.device
        return cls(
            out=list(range(B)),
            tokens=torch.empty(B, M, dtype=torch.long, device=dev),
            logprobs=torch.empty(B, M, dtype=torch.float32, device=dev),
            length=torch.full((B,), M, dtype=torch.long, device=dev),
            reason=torch.zeros(B, dtype=torch.long, device=dev),
            alive=torch.ones(B, dtype=torch.bool, device=dev),
            pos=pos,
        )

    def __len__(self) -> int:
        return len(self.out)

    def record(self, s: int, tok, lp, eos) -> None:
        """Write step s's tokens/log-probs; rows that sampled an EOS id (`eos` [E]) finish at s + 1."""
        self.tokens[:, s] = tok
        self.logprobs[:, s] = lp
        if eos.numel():
            hit = self.alive & torch.isin(tok, eos)
            self.length = torch.where(hit, s + 1, self.length)
            self.reason = torch.where(hit, _EOS, self.reason)
            self.alive &= ~hit

    def stop(self, found: list[tuple[int, int]]) -> None:
        """Finish rows on a stop string: `found` holds (row, new length) pairs."""
        if not found:
            return
        dev = self.length.device
        idx = torch.tensor([r for r, _ in found], device=dev)
        self.length[idx] = torch.tensor([j for _, j in found], device=dev)
        self.reason[idx] = _STOP
        self.alive[idx] = False

    def select(self, keep: list[int]) -> Rows:
        """The rows `keep` (current row indices, in that order), every field compacted alike."""
        idx = torch.tensor(keep, device=self.tokens.device)
        return Rows(**{f.name: self._pick(getattr(self, f.name), keep, idx) for f in fields(self)})

    @staticmethod
    def _pick(value, keep, idx):
        return value.index_select(0, idx) if isinstance(value, torch.Tensor) else [value[r] for r in keep]

    def emit(self, rows: list[int], results: list) -> None:
        """Store finished `rows` as results[out] = (token ids, log-probs, finish reason)."""
        if not rows:
            return
        idx = torch.tensor(rows, device=self.tokens.device)
        toks, lps = self.tokens.index_select(0, idx).tolist(), self.logprobs.index_select(0, idx).tolist()
        lens, reasons = self.length.index_select(0, idx).tolist(), self.reason.index_select(0, idx).tolist()
        for r, t, lp, ln, rs in zip(rows, toks, lps, lens, reasons):
            results[self.out[r]] = (t[:ln], lp[:ln], FINISH_REASONS[rs])
