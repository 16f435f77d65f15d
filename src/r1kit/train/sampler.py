"""A deterministic, resumable prompt sampler: a fresh seeded permutation per epoch.

Its whole state is `(epoch, position)`, so a checkpoint restores the data order exactly, also at
an epoch boundary (the next call simply starts the next epoch's permutation).
"""

from __future__ import annotations

import torch


class PromptSampler:
    def __init__(self, num_rows: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_rows < 1:
            raise ValueError("the dataset has no rows")
        self.num_rows, self.seed = num_rows, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_rows, generator=g).tolist()
        return perm[self.rank::self.world_size]  # each rank its own share of every epoch

    def next(self, k: int) -> list[int]:
        """The next `k` row indices, continuing into the next epoch when this one runs out."""
        out = []
        while len(out) < k:
            if self.position >= len(self._perm):
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            take = self._perm[self.position:self.position + k - len(out)]
            out += take
            self.position += len(take)
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "num_rows": self.num_rows, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["num_rows"] != self.num_rows:
            raise ValueError(f"the checkpoint was trained on {state['num_rows']} rows, this dataset has "
                             f"{self.num_rows}: the dataset changed")
        self.epoch, self.position = state["epoch"], state["position"]
        self._perm = self._permutation(self.epoch)
