"""Client of a vLLM generation server (`rollout_engine: vllm-server`): `r1kit vllm-serve` answers it
(`r1kit.rollout.vllm_server`, whose doc has the protocol in full).

Protocol (JSON over HTTP):
    GET  /health/                 -> 200 when ready
    POST /generate/               {"prompt_ids": [[int]], "n", "temperature", "top_p", "top_k" (-1: off),
                                   "max_tokens", "stop", "seed", "logprobs": 0}
                                  -> {"completion_ids": [[int]] (prompt-major, n per prompt),
                                      "logprobs": [[float]], "finish_reasons": ["eos"|"stop"|"length"]}
    Weight sync, one atomic update (the names of vLLM's weight transfer):
    POST /start_weight_update/, then POST /update_weights/ once per chunk (body: safetensors bytes of part
    of the merged state dict, `chunk_bytes` at most), then POST /finish_weight_update/ (the server reloads
    every weight at once and resets its prefix cache).
Every request has a connect timeout and a read timeout (a stalled server is an error, never a hang),
is retried with exponential backoff on connection errors, timeouts and 5xx answers (a 4xx answer is
not: it names what is wrong), and raises `VLLMServerError` naming the URL, the attempts and the last
cause once the retries are spent. /finish_weight_update/ is not retried: a lost answer would make its
retry meet a closed update; the next sync starts a new one.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from r1kit.rollout.base import Completion, RolloutError, SamplingParams
from r1kit.rollout.sync import merged_state_dict

log = logging.getLogger("r1kit.rollout.vllm")


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
        """Send `merged_state_dict(model)` as one weight update: start, safetensors chunks, finish."""
        if not self.sync_weights:
            return
        from safetensors.torch import save

        t0 = time.perf_counter()
        self.request("POST", "/start_weight_update/", b"{}")
        chunk, size, total = {}, 0, 0
        for name, t in merged_state_dict(model).items():
            chunk[name] = t.detach().cpu().clone()  # own storage: tied weights share one
            size += t.numel() * t.element_size()
            if size >= self.chunk_bytes:
                total += self._send_chunk(save(chunk))
                chunk, size = {}, 0
        if chunk:
            total += self._send_chunk(save(chunk))
        raw = self.request("POST", "/finish_weight_update/", b"{}", retries=0)
        try:
            server_s = float(json.loads(raw).get("seconds", float("nan")))
        except (ValueError, AttributeError):
            server_s = float("nan")
        log.info("vLLM server %s: weights synced (%.1f MB in %.2f s; the server's reload %.2f s)", self.base_url,
                 total / 2**20, time.perf_counter() - t0, server_s)

    def _send_chunk(self, data: bytes) -> int:
        self.request("POST", "/update_weights/", data, "application/octet-stream")
        return len(data)

    def reset_prefix_cache(self) -> None:
        """Drop the server's cached prefixes (a weight update does this itself)."""
        self.request("POST", "/reset_prefix_cache/", b"{}")
