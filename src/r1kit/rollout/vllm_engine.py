"""vLLM rollout backends: colocated (`vllm.LLM` in the training process) and server (HTTP client).

Both implement the r1kit rollout contract (`r1kit.rollout.base`): `generate` returns
`len(prompt_ids) * n` `Completion`s grouped by prompt, and `update_weights(model)` makes the engine
sample from the trained weights. vLLM is imported lazily; without it `make_engine("vllm", ...)`
says to `pip install r1kit[vllm]`.

Colocated mode (`VLLMEngine`)
    `vllm.LLM(model=..., enable_sleep_mode=True, ...)` on the trainer's GPU. Between rollouts the
    engine sleeps (`LLM.sleep(level=1)`: weights offloaded to CPU, KV cache freed) so training gets
    the memory back; `update_weights` wakes the weights only (`wake_up(tags=["weights"])`, so the
    KV cache is not allocated while the new weights arrive), loads `merged_state_dict(model)` (LoRA
    deltas merged, base-model names) through the vLLM model's own `load_weights(iterable of (name,
    tensor))`, and resets the prefix cache (cached KV blocks were computed with the old weights).
    `generate` wakes the KV cache, generates, and puts the engine back to sleep.
    Weight loading path, tried in order (vLLM references: the V1 worker's `apply_model`
    ("Apply a function on the model inside this worker",
    https://docs.vllm.ai/api/vllm/v1/worker/worker_base.html) and sleep mode levels/tags
    (https://docs.vllm.ai/en/latest/features/sleep_mode/)):
      1. in-process model: `llm.llm_engine.model_executor.driver_worker.worker.model_runner.model`
         (V1 with VLLM_ENABLE_V1_MULTIPROCESSING=0) or `...driver_worker.model_runner.model` (V0);
      2. otherwise `llm.apply_model(fn)` / `llm.collective_rpc("apply_model", args=(fn,))`, which runs
         `fn(model)` in every worker (the weights travel pickled with `fn`).

Sampling parameters -> `vllm.SamplingParams`: n, temperature, top_p, top_k (0 -> -1, "off"),
max_tokens, stop (+ include_stop_str_in_output=True: the completion keeps the stop string), one
seed per prompt (seed + prompt index, so two prompts never share a random stream), logprobs=0 (only
the sampled token's log-prob), skip_special_tokens=True.

Log-probs. r1kit's contract is log p(token) under softmax(logits / T) BEFORE top-k/top-p. vLLM's
V1 sampler returns, per its `logprobs_mode` engine option: `raw_logprobs` (default) = log-softmax of
the raw logits (T = 1, no filtering); `processed_logprobs` = after temperature AND top-k/top-p. This
engine asks for `processed_logprobs`, which equals the contract whenever top_k = 0 and top_p = 1 (the
GRPO defaults); with filtering on, the returned values are of the filtered distribution (and older
vLLM without `logprobs_mode` returns raw ones). The trainer recomputes old log-probs itself, so this
only matters to callers that read `Completion.logprobs`.

Server mode (`VLLMServerEngine`) speaks a small JSON protocol over HTTP:
    GET  /health/                  -> 200 when ready
    POST /generate/                {"prompt_ids": [[int]], "n", "temperature", "top_p", "top_k",
                                    "max_tokens", "stop", "seed", "logprobs": 0}
                                   -> {"completion_ids": [[int]] (prompt-major, n per prompt),
                                       "logprobs": [[float]], "finish_reasons": ["eos"|"stop"|"length"]}
    POST /update_weights/          body: safetensors bytes of (part of) the merged state dict
    POST /reset_prefix_cache/
Every request has a connect timeout and a read timeout (a stalled server is an error, never a hang),
is retried with exponential backoff on connection errors, timeouts and 5xx answers, and raises
`VLLMServerError` naming the URL, the attempts and the last cause once the retries are spent.
Weights travel over HTTP in chunks (fine for small models; a large model wants an NCCL transfer,
which is not implemented here).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from r1kit.rollout.base import Completion, RolloutError, SamplingParams
from r1kit.rollout.sync import merged_state_dict

log = logging.getLogger("r1kit.rollout.vllm")

INSTALL_HINT = "the vLLM rollout engine needs vllm: pip install 'r1kit[vllm]' (a CUDA GPU is required)"


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return vllm


# ---- parameter mapping and output conversion (shared, pure) -------------------------------------


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


# ---- colocated ----------------------------------------------------------------------------------


def _load_weights_fn(weights):
    """A picklable callable for `apply_model`: load `weights` (list of (name, tensor)) into a model."""
    import functools

    return functools.partial(_apply_load, weights)


def _apply_load(weights, model):
    model.load_weights(weights)


def _in_process_model(llm):
    """The vLLM nn.Module when it lives in this process, else None."""
    executor = getattr(getattr(llm, "llm_engine", None), "model_executor", None)
    worker = getattr(executor, "driver_worker", None)
    for path in (("worker", "model_runner", "model"), ("model_runner", "model")):
        obj = worker
        for attr in path:
            obj = getattr(obj, attr, None)
        if obj is not None and hasattr(obj, "load_weights"):
            return obj
    return None


class VLLMEngine:
    """Colocated vLLM. `llm` may be passed in (tests, custom construction); otherwise it is built
    from `model_path` (the policy's base weights as a folder or hub id) with sleep mode on."""

    def __init__(self, model, tokenizer, *, model_path: str | None = None, llm=None, sleep: bool = True,
                 gpu_memory_utilization: float = 0.3, max_model_len: int | None = None, dtype: str = "auto",
                 logprobs_mode: str = "processed_logprobs", seed: int = 0, **llm_kwargs):
        self.tokenizer, self.sleep_between = tokenizer, sleep
        if llm is None:
            vllm = import_vllm()
            path = model_path or getattr(getattr(model, "config", None), "_name_or_path", None)
            if not path:
                raise ValueError("VLLMEngine needs model_path (a folder or hub id holding the base weights)")
            kw = dict(model=path, enable_sleep_mode=sleep, gpu_memory_utilization=gpu_memory_utilization,
                      dtype=dtype, seed=seed, logprobs_mode=logprobs_mode, **llm_kwargs)
            if max_model_len is not None:
                kw["max_model_len"] = max_model_len
            try:
                llm = vllm.LLM(**kw)
            except TypeError as e:  # vLLM without logprobs_mode: raw log-probs (see the module doc)
                if "logprobs_mode" not in str(e):
                    raise
                kw.pop("logprobs_mode")
                log.warning("this vLLM has no logprobs_mode; Completion.logprobs are raw (temperature 1)")
                llm = vllm.LLM(**kw)
        self.llm = llm
        self._asleep: set[str] = set()
        self._sp_cls = None
        self.update_weights(model)

    # sleep / wake ------------------------------------------------------------------------------
    def _sleep(self) -> None:
        if self.sleep_between and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def _wake(self, tags: list[str]) -> None:
        todo = [t for t in tags if t in self._asleep]
        if not todo:
            return
        try:
            self.llm.wake_up(tags=todo)
            self._asleep -= set(todo)
        except TypeError:  # older vLLM: no tags, wakes everything
            self.llm.wake_up()
            self._asleep.clear()

    # contract ----------------------------------------------------------------------------------
    def update_weights(self, model) -> None:
        """Load `model`'s weights (LoRA merged, base-model names) into vLLM, then drop cached prefixes."""
        self._wake(["weights"])
        weights = list(merged_state_dict(model).items())
        target = _in_process_model(self.llm)
        if target is not None:
            target.load_weights(weights)
        elif hasattr(self.llm, "apply_model"):
            self.llm.apply_model(_load_weights_fn(weights))
        else:
            self.llm.collective_rpc("apply_model", args=(_load_weights_fn(weights),))
        if hasattr(self.llm, "reset_prefix_cache"):
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


# ---- server -------------------------------------------------------------------------------------


class VLLMServerError(RolloutError):
    """The vLLM server did not answer usefully (refused, stalled past the read timeout, died, 4xx/5xx)."""


@dataclass
class _Answer:
    status: int
    body: bytes


class VLLMServerEngine:
    """HTTP client of a vLLM generation server (protocol in the module doc)."""

    def __init__(self, model, tokenizer, *, base_url: str = "http://127.0.0.1:8000", connect_timeout: float = 5.0,
                 read_timeout: float = 600.0, retries: int = 3, backoff: float = 1.0,
                 startup_timeout: float = 240.0, sync_weights: bool = True, chunk_bytes: int = 256 * 2**20):
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"base_url must look like http://HOST:PORT, got {base_url!r}")
        self.base_url, self.host, self.port = base_url.rstrip("/"), u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.tokenizer = tokenizer
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.retries, self.backoff, self.chunk_bytes = retries, backoff, chunk_bytes
        self.sync_weights = sync_weights
        self.wait_until_ready(startup_timeout)
        if sync_weights and model is not None:
            self.update_weights(model)

    # transport ---------------------------------------------------------------------------------
    def _once(self, method: str, path: str, body: bytes | None, headers: dict, read_timeout: float) -> _Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()
            conn.sock.settimeout(read_timeout)  # from now on: the read (and send) timeout
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            return _Answer(resp.status, resp.read())
        finally:
            conn.close()

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
                read_timeout: float | None = None, retries: int | None = None) -> bytes:
        """One HTTP request with retries and backoff; the answer's body, or `VLLMServerError`."""
        retries = self.retries if retries is None else retries
        headers = {"Content-Type": content_type} if body is not None else {}
        url, last = f"{self.base_url}{path}", None
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                ans = self._once(method, path, body, headers, self.read_timeout if read_timeout is None else read_timeout)
            except (socket.timeout, TimeoutError) as e:
                last = f"no answer within the read timeout ({e or 'timed out'}): the server stalled"
            except ConnectionRefusedError as e:
                last = f"connection refused ({e}): is the server running?"
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e} (the server closed the connection or died)"
            else:
                if ans.status < 400:
                    return ans.body
                last = f"HTTP {ans.status}: {ans.body[:300].decode(errors='replace')}"
                if ans.status < 500:
                    break  # a client error does not get better by retrying
            log.warning("vLLM server %s %s: %s (attempt %d of %d)", method, url, last, attempt + 1, retries + 1)
        raise VLLMServerError(f"vLLM server {method} {url} failed after {attempt + 1} attempt(s): {last}")

    def wait_until_ready(self, timeout: float) -> None:
        """Poll GET /health/ until it answers 200, or raise `VLLMServerError` after `timeout` seconds."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            try:
                self.request("GET", "/health/", read_timeout=min(self.read_timeout, 10.0), retries=0)
                return
            except VLLMServerError as e:
                last = e
            if time.monotonic() >= deadline:
                raise VLLMServerError(f"vLLM server at {self.base_url} not ready after {timeout:g} s: {last}")
            time.sleep(min(self.backoff, max(0.0, deadline - time.monotonic())) or 0.05)

    # contract ----------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        if not prompt_ids:
            return []
        payload = {"prompt_ids": [list(p) for p in prompt_ids], "n": params.n, "temperature": params.temperature,
                   "top_p": params.top_p, "top_k": params.top_k if params.top_k > 0 else -1,
                   "max_tokens": params.max_new_tokens, "stop": list(params.stop), "seed": params.seed,
                   "logprobs": 0}
        raw = self.request("POST", "/generate/", json.dumps(payload).encode())
        try:
            ans = json.loads(raw)
            ids, lps = ans["completion_ids"], ans.get("logprobs")
            reasons = ans.get("finish_reasons") or ["length"] * len(ids)
        except (ValueError, KeyError, TypeError) as e:
            raise VLLMServerError(f"vLLM server {self.base_url}/generate/ answered something unreadable: "
                                  f"{raw[:200]!r} ({e})") from e
        if len(ids) != len(prompt_ids) * params.n:
            raise VLLMServerError(f"vLLM server returned {len(ids)} completions for {len(prompt_ids)} prompts x "
                                  f"n={params.n}")
        return [Completion(prompt_index=k // params.n, prompt_ids=list(prompt_ids[k // params.n]),
                           completion_ids=list(c), logprobs=[float(x) for x in lps[k]] if lps else [float("nan")] * len(c),
                           finish_reason=reasons[k], text=self.tokenizer.decode(c, skip_special_tokens=True))
                for k, c in enumerate(ids)]

    def update_weights(self, model) -> None:
        """Send `merged_state_dict(model)` as safetensors chunks, then reset the server's prefix cache."""
        if not self.sync_weights:
            return
        from safetensors.torch import save

        chunk, size = {}, 0
        for name, t in merged_state_dict(model).items():
            chunk[name] = t.detach().cpu().clone()  # own storage: tied weights share one
            size += t.numel() * t.element_size()
            if size >= self.chunk_bytes:
                self.request("POST", "/update_weights/", save(chunk), "application/octet-stream")
                chunk, size = {}, 0
        if chunk:
            self.request("POST", "/update_weights/", save(chunk), "application/octet-stream")
        self.request("POST", "/reset_prefix_cache/", b"{}")


def make_vllm_engine(model, tokenizer, mode: str = "colocate", **kw):
    """`make_engine("vllm", ...)`: mode "colocate" (vllm.LLM in process) or "server" (HTTP client)."""
    if mode == "server":
        return VLLMServerEngine(model, tokenizer, **kw)
    if mode != "colocate":
        raise ValueError(f"vllm mode must be 'colocate' or 'server', got {mode!r}")
    if kw.get("llm") is None:
        import_vllm()  # fail early with the install hint
    return VLLMEngine(model, tokenizer, **kw)
