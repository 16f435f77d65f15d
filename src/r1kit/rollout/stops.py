"""Stop strings, searched incrementally in each row's decoded text.

Each check decodes only the new tokens plus a short look-back window (enough tokens to hold the
longest stop string), so the total decode cost is linear in the completion length. The completion
is cut right after the token that completed the stop string (it keeps the stop string).
"""

from __future__ import annotations

import torch


class StopScanner:
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
