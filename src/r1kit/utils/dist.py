"""Device and rank details, in one place, so the training loops never branch on rank.

A `Runtime` knows the device, this process's rank and the world size (from torchrun/accelerate's
environment variables), and offers the few collective operations the loops need. With one process
every collective is the identity, so the same loop runs unchanged on a laptop and on many GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def create(cls, device: str | None = None) -> "Runtime":
        """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun or accelerate) and join the group."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(device=dev, rank=rank, world_size=world, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: list) -> list:
        """This rank's contiguous share of `items` (len must divide evenly)."""
        if not self.distributed:
            return items
        per = len(items) // self.world_size
        return items[self.rank * per:(self.rank + 1) * per]

    def all_reduce_grads(self, model: torch.nn.Module) -> None:
        """Average gradients over ranks (the data-parallel step); identity with one process."""
        if not self.distributed:
            return
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def sum(self, value: float) -> float:
        """Sum a Python number over ranks."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def gather_objects(self, obj) -> list:
        """A list with every rank's `obj` (rank order)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
