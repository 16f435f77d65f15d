"""Methods r1kit adds to every vLLM worker (vLLM's `worker_extension_cls`), called by name through
`LLM.collective_rpc("r1kit_...", args=...)`: only strings and numbers cross the process boundary, so
this works with vLLM's V1 engine core in its own process (where pickled callables are refused).

This module is imported inside vLLM's worker processes: it must not import anything heavy of r1kit.

`r1kit_load_snapshot(folder)` reloads the weights in place from a safetensors snapshot with vLLM's own
`reload_weights(weights_path=...)` (layer by layer, so backends that repack weights after loading, like
the CPU backend's oneDNN / packed GEMMs, repack them again). One thing vLLM's reload leaves stale on
CPU: an output head tied to the input embedding is never loaded itself (its weight IS the
embedding's), so its packed copy keeps the old values; it is re-packed here.
"""

from __future__ import annotations


def _retie_heads(model) -> int:
    """Re-run the weight post-processing of output heads that share their weight with another module
    (tied embeddings); returns how many were refreshed."""
    head = getattr(model, "lm_head", None)
    method = getattr(head, "quant_method", None)
    weight = getattr(head, "weight", None)
    if head is None or method is None or weight is None:
        return 0
    others = {p.data_ptr() for name, p in model.named_parameters() if not name.startswith("lm_head.")}
    if weight.data_ptr() not in others:
        return 0  # untied: reload_weights loaded and post-processed it like any other layer
    method.process_weights_after_loading(head)
    return 1


class WorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls="r1kit.rollout.vllm_worker.WorkerExtension"`)."""

    def r1kit_load_snapshot(self, folder: str) -> int:
        """Load the safetensors files in `folder` into the running model; returns the heads re-tied."""
        self.model_runner.reload_weights(weights_path=folder)
        return _retie_heads(self.model_runner.get_model())

    def r1kit_weights_checksum(self) -> float:
        """Sum of every parameter (float64): tests compare it before and after a sync."""
        import torch

        with torch.no_grad():
            return float(sum(p.double().sum() for p in self.model_runner.get_model().parameters()))
