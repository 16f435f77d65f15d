"""vLLM rollouts colocated with the trainer (`rollout_engine: vllm`): a `vllm.LLM` in the training
process's machine, started from a snapshot of the policy and kept in step with it after every update.

It implements the r1kit rollout contract (`r1kit.rollout.base`): `generate` returns `len(prompt_ids) * n`
`Completion`s grouped by prompt, with vLLM's log-probs of the sampled tokens; `update_weights(model)`
makes the engine sample from `model`'s current weights (LoRA deltas merged, base-model names).

Start. The policy is written to a snapshot folder (config, tokenizer, current weights: so a random tiny
model, a GGUF file or a LoRA policy start the same way) and `vllm.LLM` loads it, with r1kit's worker
extension (`r1kit.rollout.vllm_worker`), the model's generation_config ignored (r1kit passes every
sampling parameter) and defaults chosen for the device: on CPU a small share of RAM for the KV cache
(`gpu_memory_utilization` 0.1, there a share of RAM), eager mode (no compilation on a laptop's cores)
and no sleep mode (vLLM's CPU backend has none).

Weight sync, the path taken is logged once (`weight_sync`):
  * "ipc" (CUDA, the default there): vLLM's native weight transfer (`weight_transfer_config` backend
    "ipc": `init_weight_transfer_engine` / `start_weight_update` / `update_weights` /
    `finish_weight_update`), the trainer's tensors shared with the engine through CUDA IPC handles.
  * "snapshot" (CPU, the default there; works on any device): the weights are written to the snapshot
    folder (atomically) and every vLLM worker reloads them in place with vLLM's `reload_weights`
    (`WorkerExtension.r1kit_load_snapshot`: only the folder's path crosses the process boundary).
Then the prefix cache is reset (cached KV blocks were computed with the old weights).

Sleep mode (CUDA): between rollouts the engine sleeps (`sleep(level=1)`: weights offloaded, KV cache
freed) so the trainer gets the memory back; weights are woken alone for a sync, the KV cache only to
generate.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from r1kit.rollout.base import Completion, SamplingParams
from r1kit.rollout.sync import merged_state_dict
from r1kit.rollout.vllm_common import (WORKER_EXTENSION, import_vllm, tied, to_completions, vllm_sampling_kwargs,
                                       write_snapshot, write_weights)

log = logging.getLogger("r1kit.rollout.vllm")

WEIGHT_SYNCS = ("auto", "snapshot", "ipc")
CPU_MEMORY_SHARE = 0.1  # of RAM for vLLM's KV cache on CPU (vLLM's 0.9 default would not fit next to a trainer)


class _MergedWeights:
    """vLLM's `WeightSource` over `merged_state_dict(model)` (built lazily: vLLM is an optional import)."""

    @staticmethod
    def of(model):
        from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

        class Source(WeightSource):
            def metadata(self):
                return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in merged_state_dict(model).items()]

            def __iter__(self):
                yield from merged_state_dict(model).items()

        return Source()


class VLLMEngine:
    """Colocated vLLM. `llm` may be passed in (tests, custom construction: then its weights are synced
    through `weight_sync`, default "snapshot"); otherwise it is started from a snapshot of `model`."""

    def __init__(self, model, tokenizer, *, llm=None, weight_sync: str = "auto", sleep: bool | None = None,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 enforce_eager: bool | None = None, snapshot_dir: str | None = None, seed: int = 0, **llm_kwargs):
        if weight_sync not in WEIGHT_SYNCS:
            raise ValueError(f"rollout_engine_kwargs.weight_sync must be one of {WEIGHT_SYNCS}, got {weight_sync!r}")
        device = next(model.parameters()).device if model is not None else torch.device("cpu")
        on_cuda = device.type == "cuda"
        self.tokenizer, self._tied = tokenizer, model is not None and tied(model)
        self.weight_sync = ("ipc" if on_cuda and llm is None else "snapshot") if weight_sync == "auto" else weight_sync
        if self.weight_sync == "ipc" and not on_cuda:
            raise ValueError("weight_sync 'ipc' needs the policy on a CUDA device; use 'snapshot' on CPU")
        self.sleep_between = on_cuda if sleep is None else sleep
        if not on_cuda and llm is None:
            if self.sleep_between or sleep is None:
                log.info("vLLM sleep mode is off: vLLM's CPU backend does not support it")
            self.sleep_between = False
        elif self.sleep_between:
            log.info("vLLM sleep mode is on: between rollouts its weights and KV cache leave the GPU")
        self.snapshot = Path(snapshot_dir) if snapshot_dir else Path(tempfile.mkdtemp(prefix="r1kit-vllm-"))
        if not snapshot_dir:
            atexit.register(shutil.rmtree, self.snapshot, True)
        self._sender = None
        if llm is None:
            write_snapshot(model, tokenizer, self.snapshot)
            llm = self._start(model, on_cuda, gpu_memory_utilization, max_model_len, enforce_eager, seed, llm_kwargs)
        self.llm = llm
        self._asleep: set[str] = set()
        self._sp_cls = None
        log.info("vLLM weight sync: %s", {"ipc": "vLLM's native weight transfer over CUDA IPC",
                                         "snapshot": f"safetensors snapshot reloaded in place ({self.snapshot})"}
                 [self.weight_sync])
        if self.weight_sync == "snapshot" and model is not None:
            self.update_weights(model)  # a given llm may hold other weights; a started one: a no-op reload
        self._sleep()

    def _start(self, model, on_cuda: bool, memory: float | None, max_model_len: int | None, eager: bool | None,
               seed: int, extra: dict):
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        llm = start_llm(self.snapshot, on_cuda=on_cuda, dtype=dtype, gpu_memory_utilization=memory,
                        max_model_len=max_model_len, enforce_eager=eager, seed=seed, sleep=self.sleep_between,
                        ipc=self.weight_sync == "ipc", **extra)
        if self.weight_sync == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

            self._sender = IPCTrainerWeightTransferEngine.trainer_init(IPCTrainerInitInfo(rank=0), client=llm,
                                                                       source=_MergedWeights.of(model))
        return llm

    # sleep / wake ------------------------------------------------------------------------------
    def _sleep(self) -> None:
        if self.sleep_between and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def _wake(self, tags: list[str]) -> None:
        todo = [t for t in tags if t in self._asleep]
        if todo:
            self.llm.wake_up(tags=todo)
            self._asleep -= set(todo)

    # contract ----------------------------------------------------------------------------------
    def update_weights(self, model) -> None:
        """Make vLLM sample from `model`'s current weights (see the module doc for the two paths)."""
        if self.weight_sync == "snapshot":
            return self.load_weights(merged_state_dict(model))
        self._wake(["weights"])
        self._sender.send_weights()
        self.llm.reset_prefix_cache()

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """The snapshot path: write `weights` (base-model names, every weight) to the snapshot folder and
        reload them in every vLLM worker, then reset the prefix cache (`r1kit vllm-serve` calls this too)."""
        self._wake(["weights"])
        write_weights(weights, self.snapshot, self._tied)
        self.llm.collective_rpc("r1kit_load_snapshot", args=(str(self.snapshot),))
        self.llm.reset_prefix_cache()

    def _sampling_params(self, params: SamplingParams, i: int):
        if self._sp_cls is None:
            self._sp_cls = import_vllm().SamplingParams
        return self._sp_cls(**vllm_sampling_kwargs(params, i))

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        if not prompt_ids:
            return []
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("empty prompt: every prompt needs at least one token")
        self._wake(["weights", "kv_cache"])
        try:
            outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids],
                                     [self._sampling_params(params, i) for i in range(len(prompt_ids))],
                                     use_tqdm=False)
        finally:
            self._sleep()
        return to_completions(prompt_ids, outs, params.n)


def start_llm(folder, *, on_cuda: bool, dtype: str = "auto", gpu_memory_utilization: float | None = None,
              max_model_len: int | None = None, enforce_eager: bool | None = None, seed: int = 0,
              sleep: bool = False, ipc: bool = False, **extra):
    """The one way r1kit starts a `vllm.LLM` (the colocated engine and `r1kit vllm-serve`): the model in
    `folder`, r1kit's worker extension, processed log-probs, the model's generation_config ignored, the
    device's defaults (module doc); `extra` goes to `vllm.LLM` as is and wins."""
    vllm = import_vllm()
    kw = dict(model=str(folder), dtype=dtype, seed=seed,
              gpu_memory_utilization=gpu_memory_utilization if gpu_memory_utilization is not None else
              (0.3 if on_cuda else CPU_MEMORY_SHARE),
              enforce_eager=(not on_cuda) if enforce_eager is None else enforce_eager, enable_sleep_mode=sleep,
              logprobs_mode="processed_logprobs", generation_config="vllm", worker_extension_cls=WORKER_EXTENSION)
    if max_model_len is not None:
        kw["max_model_len"] = max_model_len
    if ipc:
        kw["weight_transfer_config"] = {"backend": "ipc"}
    kw.update(extra)
    return vllm.LLM(**kw)


def make_vllm_engine(model, tokenizer, mode: str = "colocate", **kw):
    """`make_engine("vllm", ...)`: mode "colocate" (vllm.LLM here) or "server" (client of `r1kit vllm-serve`)."""
    if mode == "server":
        from r1kit.rollout.vllm_client import VLLMServerEngine

        return VLLMServerEngine(model, tokenizer, **kw)
    if mode != "colocate":
        raise ValueError(f"vllm mode must be 'colocate' or 'server', got {mode!r}")
    if kw.get("llm") is None:
        import_vllm()  # fail early with the install hint
    return VLLMEngine(model, tokenizer, **kw)
