"""Device, rank and sharding details, in one place, so the training loops never branch on rank.

A `Runtime` knows the device, this process's rank and the world size (from the environment
variables torchrun and `accelerate launch` both set: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), the data-parallel strategy, and offers the few collective operations the loops need.
With one process every collective is the identity, so the same loop runs unchanged on a laptop and
on many GPUs.

Strategies (`distributed_strategy` in the config, or picked up from an `accelerate launch` config):

* ``ddp`` — every rank holds the whole model; gradients are averaged with bucketed all-reduces
  after the last micro-batch of an optimizer step (what DDP does, without hooks: the model is not
  wrapped, so engines and checkpoints see the plain module). Rank 0's initial weights are
  broadcast, so a randomly initialised LoRA adapter starts identical on every rank.
* ``fsdp2`` — `torch.distributed.fsdp.fully_shard` on every decoder layer and on the root
  (ZeRO-3-like: parameters, gradients and optimizer state sharded; FSDP2 reduce-scatters and
  averages gradients itself). ``fsdp2_reshard_after_forward=False`` keeps each layer's gathered
  parameters from forward to backward (ZeRO-2-like). The rollout engine cannot read sharded
  parameters, so the runtime keeps a full, unsharded *rollout copy* (made before sharding) and
  `gather_full` gathers the trained weights into it (the trainer skeleton does so before each engine
  sync and each save); checkpoints save that copy.
* DeepSpeed ZeRO-2/3 (`accelerate launch` with a DeepSpeed config): r1kit's loop does not run the
  DeepSpeed engine. The ZeRO stage is mapped onto the torch-native strategy with the same sharding
  (stage 3 -> fsdp2; stage 2 -> fsdp2 without resharding after forward; 0/1 -> ddp) and a warning
  says so. NVMe offload has no equivalent and is refused.

``auto`` (the default): fsdp2/ZeRO when `accelerate launch` says so, else ddp.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

log = logging.getLogger("r1kit.dist")

STRATEGIES = ("auto", "ddp", "fsdp2")
_BUCKET_BYTES = 25 * 2**20  # gradient all-reduce bucket size (DDP's default)


def default_device() -> str:
    """The device a single-process command uses when none is named: the first GPU, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def resolve_strategy(strategy: str = "auto") -> tuple[str, dict]:
    """(strategy, options) from the configured name and `accelerate launch`'s environment.

    An explicit ``ddp``/``fsdp2`` wins over the launcher. Options: ``reshard_after_forward`` and
    ``offload`` (CPU offload of parameters/gradients/optimizer step) for fsdp2."""
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed_strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    opts = {"reshard_after_forward": True, "offload": False}
    if strategy != "auto":
        return strategy, opts
    if _env_true("ACCELERATE_USE_FSDP"):
        version = os.environ.get("FSDP_VERSION", "1")
        if version != "2":
            raise ValueError(f"accelerate FSDP config has fsdp_version {version}; r1kit supports FSDP2 only: "
                             f"set fsdp_version: 2 (see recipes/accelerate_configs/fsdp2.yaml)")
        opts["reshard_after_forward"] = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in (
            "false", "shard_grad_op", "2")
        opts["offload"] = _env_true("FSDP_OFFLOAD_PARAMS")
        return "fsdp2", opts
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2") or 2)
        offload = {os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower(),
                   os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none").lower()}
        if "nvme" in offload:
            raise ValueError("DeepSpeed NVMe offload has no equivalent in r1kit's torch-native sharding; "
                             "use offload to cpu or none")
        opts["offload"] = "cpu" in offload
        mapped = "fsdp2" if stage >= 2 else "ddp"
        opts["reshard_after_forward"] = stage >= 3
        log.warning("DeepSpeed ZeRO-%d config: r1kit runs it as torch-native %s%s (same sharding of parameters, "
                    "gradients and optimizer state; the DeepSpeed engine itself is not used)", stage, mapped,
                    "" if stage != 2 else " without resharding after forward")
        return mapped, opts
    return "ddp", opts


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "ddp"
    options: dict = field(default_factory=dict)
    _rollout_copy: torch.nn.Module | None = field(default=None, repr=False)

    @classmethod
    def create(cls, device: str | None = None, strategy: str = "auto") -> "Runtime":
        """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun or accelerate) and join the group."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        strategy, options = resolve_strategy(strategy)
        if device is None:
            use_cpu = _env_true("ACCELERATE_USE_CPU")
            device = f"cuda:{local_rank}" if default_device() == "cuda" and not use_cpu else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(device=dev, rank=rank, world_size=world, local_rank=local_rank, strategy=strategy,
                   options=options)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def sharded(self) -> bool:
        return self.distributed and self.strategy == "fsdp2"

    def shard(self, items: list) -> list:
        """This rank's contiguous share of `items` (len must divide evenly)."""
        if not self.distributed:
            return items
        if len(items) % self.world_size:
            raise ValueError(f"{len(items)} items do not split evenly over {self.world_size} processes")
        per = len(items) // self.world_size
        return items[self.rank * per:(self.rank + 1) * per]

    # ---- the model -----------------------------------------------------------------------------

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Make `model` data parallel: rank 0's weights everywhere; with fsdp2 also shard it.

        Call once after building the model (and the reference model) and before the optimizer."""
        if not self.distributed:
            return model
        self.broadcast_params(model)
        if self.strategy != "fsdp2":
            return model
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        self._rollout_copy = copy.deepcopy(model)  # full weights for the rollout engine and checkpoints
        for p in self._rollout_copy.parameters():
            p.requires_grad_(False)
        kw = {"reshard_after_forward": self.options.get("reshard_after_forward", True)}
        if self.options.get("offload"):
            kw["offload_policy"] = CPUOffloadPolicy()
        for layer in _decoder_layers(model):
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
        return model

    def check_resumable(self) -> None:
        """fsdp2 checkpoints hold the full weights but rank 0's optimizer shard only: refuse to resume."""
        if self.sharded:
            raise NotImplementedError("resuming an fsdp2 run is not supported yet (its checkpoints hold full "
                                      "weights but only rank 0's optimizer shard); resume with ddp or start "
                                      "from the checkpoint's weights as a new run")

    def broadcast_params(self, model: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if not self.distributed:
            return
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)

    def rollout_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module a rollout engine should read: `model` itself, or (fsdp2) the full rollout copy."""
        return self._rollout_copy if self._rollout_copy is not None else model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """A module with full weights to save; with fsdp2 the rollout copy, current after `gather_full`."""
        return self.rollout_model(model)

    def gather_full(self, model: torch.nn.Module) -> None:
        """fsdp2: gather every trained parameter (a collective, one tensor at a time) into the full
        rollout copy, which `unwrap` then returns; a no-op for an unsharded model."""
        if self._rollout_copy is None:
            return
        with torch.no_grad():
            dst = dict(self._rollout_copy.named_parameters())
            for name, p in model.named_parameters():
                full = p.full_tensor() if hasattr(p, "full_tensor") else p
                dst[name].copy_(full.to(dst[name].device))

    # ---- gradients -----------------------------------------------------------------------------

    def all_reduce_grads(self, model: torch.nn.Module) -> None:
        """Average gradients over ranks (the data-parallel step); identity with one process and with
        fsdp2 (which reduce-scatters and averages gradients during backward)."""
        if not self.distributed:
            return
        if self.strategy == "fsdp2":
            from torch.distributed.fsdp import FSDPModule

            if not isinstance(model, FSDPModule):  # each rank would silently train its own copy
                raise RuntimeError("fsdp2: the model was not sharded; call Runtime.prepare_model (the trainer "
                                   "skeleton's prepare_model) before training")
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bucket: list[torch.Tensor] = []
        size = 0
        for g in grads + [None]:
            if bucket and (g is None or size + g.numel() * g.element_size() > _BUCKET_BYTES
                           or g.dtype != bucket[0].dtype or g.device != bucket[0].device):
                flat = torch.cat([b.reshape(-1) for b in bucket])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                flat.div_(self.world_size)
                off = 0
                for b in bucket:
                    b.copy_(flat[off:off + b.numel()].view_as(b))
                    off += b.numel()
                bucket, size = [], 0
            if g is not None:
                bucket.append(g)
                size += g.numel() * g.element_size()

    def clip_grad_norm(self, params, max_norm: float) -> float:
        """Clip the global gradient norm (over all ranks' shards with fsdp2); returns the norm before."""
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm.item())

    # ---- numbers and objects -------------------------------------------------------------------

    def _reduce(self, value: float, op) -> float:
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return float(t.item())

    def sum(self, value: float) -> float:
        """Sum a Python number over ranks."""
        return self._reduce(value, dist.ReduceOp.SUM)

    def mean(self, value: float) -> float:
        """Mean of a Python number over ranks (for per-rank values over equally many items)."""
        return self.sum(value) / self.world_size

    def max(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.MAX)

    def min(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.MIN)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's `t` (same shape on every rank) concatenated along dim 0, in rank order."""
        if not self.distributed:
            return t
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out)

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


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks (each becomes one FSDP2 unit): the largest ModuleList."""
    best: list[torch.nn.Module] = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > len(best):
            best = list(mod)
    return best
