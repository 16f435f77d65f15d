"""`r1kit vllm-serve`: a vLLM generation server for `rollout_engine: vllm-server` (the client is
`r1kit.rollout.vllm_client.VLLMServerEngine`).

    r1kit vllm-serve --model PATH [--port 8000] [--host 127.0.0.1] [--dtype auto] [--gpu_memory_utilization F]
                     [--max_model_len N] [--tensor_parallel_size N] [--vllm_kwargs '{...}']

PATH is a model folder (config.json, tokenizer, weights: a trainer's checkpoint or output_dir, a Hub
snapshot) or `r1kit:tiny-base`. The server holds one `vllm.LLM`, started the way the colocated engine
starts it (`r1kit.rollout.vllm_engine.start_llm`: r1kit's worker extension, processed log-probs, the
device's defaults), and answers one request at a time on it. It prints one line when it answers:
`r1kit vllm-serve: ready at http://HOST:PORT (model PATH)`; --port 0 takes a free port (the line says which).

Protocol (JSON over HTTP/1.0, one request per connection; errors are {"error": "..."}):
    GET  /health/                 -> 200 {"status": "ok", "model", "weight_update": "idle"|"open"}
    POST /generate/               {"prompt_ids": [[int]] (required), "n": 1, "temperature": 1.0, "top_p": 1.0,
                                   "top_k": -1 (off), "max_tokens": 16, "stop": [str], "seed": int|null,
                                   "logprobs": 0}
                                  -> {"completion_ids": [[int]] (prompt-major, n per prompt),
                                      "logprobs": [[float]] (the sampled tokens'), "finish_reasons":
                                      ["eos"|"stop"|"length"], "texts": [str]}
    POST /start_weight_update/    opens a weight update (an unfinished one is discarded)
    POST /update_weights/         body: safetensors bytes (application/octet-stream), some of the merged
                                  state dict's tensors under the base model's names; held until finish
    POST /finish_weight_update/   checks the names and shapes against the served model's checkpoint,
                                  writes them as one safetensors snapshot, reloads every vLLM worker from
                                  it (`WorkerExtension.r1kit_load_snapshot`), resets the prefix cache
                                  -> {"tensors", "bytes", "seconds"}
    POST /reset_prefix_cache/
An update is atomic: generation never sees half of one (it runs under the same lock as the reload), and
a /generate/ while one is open is refused with 409. Bad JSON, a missing or mistyped field, unknown or
missing weight names -> 400 naming them; /update_weights/ or /finish_weight_update/ with no update open
-> 409; unknown route -> 404, a known one with the wrong method -> 405; the engine failing -> 500. The
port is opened once the model is loaded (until then connections are refused: the client polls /health/).
Each sync is logged (tensors, bytes, seconds). SIGINT / SIGTERM stop the server.

Use with GRPO: start the server on the trainer's model (and dtype: `--dtype auto` is the trainers' auto,
float32 on CPU and bfloat16 on GPU, not vLLM's, which downcasts float32), then train with
`rollout_engine: vllm-server` and `rollout_engine_kwargs: {base_url: http://HOST:PORT}`; the trainer sends
its weights at start and after every update. A server that dies mid-run stops the run with an error naming
its URL after the last completed step is checkpointed; start the server again (same URL) and rerun with
`resume_from_checkpoint: true`: the trained weights are sent before the first new step.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from r1kit.config import field
from r1kit.rollout.base import SamplingParams

log = logging.getLogger("r1kit.rollout.vllm_server")


DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class VLLMServeConfig:
    model: str = field("", help="The model to serve: a folder (config.json, tokenizer, safetensors weights; the "
                                "trainer's model_name_or_path or a checkpoint) or r1kit:tiny-base.")
    host: str = field("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; the protocol has no "
                                        "authentication, so only on a trusted network).")
    port: int = field(8000, help="Port to listen on; 0 takes a free one (the ready line names it).")
    dtype: str = field("auto", help="Weight dtype in vLLM: float32, bfloat16, float16, or auto (float32 on CPU, "
                                    "bfloat16 on GPU: the trainers' auto). Use the trainer's dtype, so that sampler "
                                    "and trainer log-probs agree.")
    gpu_memory_utilization: float | None = field(None, help="Share of GPU memory for weights and KV cache "
                                                            "(default 0.9: the server has the GPU to itself); on CPU "
                                                            "the share of RAM for the KV cache (default 0.1).")
    max_model_len: int | None = field(None, help="Longest prompt + completion in tokens (default: the model's).")
    tensor_parallel_size: int = field(1, help="GPUs (or CPU processes) to split the model over.")
    enforce_eager: bool | None = field(None, help="No CUDA graphs / compilation (default: true on CPU only).")
    seed: int = field(0, help="vLLM's seed (requests carry their own seeds).")
    vllm_kwargs: dict = field({}, help="More vllm.LLM options, e.g. {enable_prefix_caching: false}.")
    snapshot_dir: str | None = field(None, help="Where synced weights are written for vLLM to reload "
                                                "(default: a temporary folder, removed at exit).")

    def __post_init__(self):
        if not self.model:
            raise ValueError("vllm-serve needs --model (a model folder or r1kit:tiny-base)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")


class RequestError(Exception):
    """An HTTP error answer: `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---- the model's folder and its checkpoint's names --------------------------------------------------


def model_folder(name: str) -> Path:
    """The folder vLLM loads `name` from (a shipped r1kit model resolves to its folder in the package)."""
    from r1kit.models.loading import shipped_model_path

    if name.startswith("r1kit:"):
        path = shipped_model_path(name)
        if path is None:
            raise ValueError(f"{name}: vllm-serve serves model folders; built-in random models have none "
                             f"(r1kit:tiny-base is shipped; or save a model with save_pretrained)")
        return Path(path)
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{name}: not a model folder (no config.json there)")
    return folder


def checkpoint_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Name -> shape of every tensor in the folder's safetensors files (headers only), or None without any."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    shapes = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                shapes[k] = tuple(st.get_slice(k).get_shape())
    return shapes


def ties_embeddings(folder: Path) -> bool:
    return bool(json.loads((folder / "config.json").read_text()).get("tie_word_embeddings", False))


def check_weights(weights: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]] | None,
                  tied: bool) -> dict[str, torch.Tensor]:
    """The update as the served model takes it (a tied output head dropped: the embedding is it), or a
    400 naming unknown names, missing names and wrong shapes."""
    if tied and (shapes is None or "lm_head.weight" not in shapes):
        weights.pop("lm_head.weight", None)
    if not weights:
        raise RequestError(400, "the weight update holds no tensors: POST /update_weights/ with safetensors bytes "
                                "before /finish_weight_update/")
    if shapes is None:
        return weights  # a checkpoint with no safetensors (.bin, Hub id): vLLM's loader checks the names

    def some(names):
        names = sorted(names)
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    problems = []
    if unknown := weights.keys() - shapes.keys():
        problems.append(f"{len(unknown)} name(s) the model does not have: {some(unknown)}")
    if missing := shapes.keys() - weights.keys():
        problems.append(f"{len(missing)} weight(s) missing (an update carries every weight): {some(missing)}")
    if wrong := [f"{k} {tuple(weights[k].shape)} (model: {shapes[k]})" for k in sorted(weights.keys() & shapes.keys())
                 if tuple(weights[k].shape) != shapes[k]]:
        problems.append(f"{len(wrong)} wrong shape(s): {some(wrong)}")
    if problems:
        raise RequestError(400, "weight update refused: " + "; ".join(problems))
    return weights


# ---- /generate/ -----------------------------------------------------------------------------------

# field -> (accepted types, default, what it is)
GENERATE_FIELDS = {
    "prompt_ids": (list, None, "a list of prompts, each a non-empty list of token ids"),
    "n": (int, 1, "completions per prompt"),
    "temperature": ((int, float), 1.0, "a number >= 0"),
    "top_p": ((int, float), 1.0, "a number in (0, 1]"),
    "top_k": (int, -1, "an int, -1 or 0 for off"),
    "max_tokens": (int, 16, "new tokens per completion"),
    "stop": (list, [], "a list of stop strings"),
    "seed": ((int, type(None)), None, "an int or null"),
    "logprobs": (int, 0, "0: the sampled token's log-prob"),
}


def parse_generate(body: bytes) -> tuple[list[list[int]], SamplingParams]:
    """A /generate/ body as (prompt_ids, SamplingParams), or a 400 naming the field that is wrong."""
    req = read_json(body)
    if unknown := sorted(req.keys() - GENERATE_FIELDS.keys()):
        raise RequestError(400, f"unknown field(s) {unknown}; /generate/ takes {sorted(GENERATE_FIELDS)}")
    if "prompt_ids" not in req:
        raise RequestError(400, f"missing field 'prompt_ids' ({GENERATE_FIELDS['prompt_ids'][2]})")
    args = {}
    for key, (types_, default, what) in GENERATE_FIELDS.items():
        value = req.get(key, default)
        if isinstance(value, bool) or not isinstance(value, types_):
            raise RequestError(400, f"field '{key}' must be {what}, got {value!r:.100}")
        args[key] = value
    prompts = args["prompt_ids"]
    if not all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                  for t in p) for p in prompts):
        raise RequestError(400, f"field 'prompt_ids' must be {GENERATE_FIELDS['prompt_ids'][2]} (ints >= 0)")
    if not all(isinstance(s, str) for s in args["stop"]):
        raise RequestError(400, "field 'stop' must be a list of strings")
    if args["logprobs"] != 0:
        raise RequestError(400, "field 'logprobs' must be 0 (the sampled token's log-prob is all the server returns)")
    try:
        params = SamplingParams(n=args["n"], max_new_tokens=args["max_tokens"], temperature=float(args["temperature"]),
                                top_p=float(args["top_p"]), top_k=max(args["top_k"], 0), stop=tuple(args["stop"]),
                                seed=args["seed"])
    except ValueError as e:  # its messages name the parameter
        raise RequestError(400, f"bad sampling parameter: {e}") from None
    return prompts, params


def read_json(body: bytes) -> dict:
    try:
        req = json.loads(body or b"{}")
    except ValueError as e:
        raise RequestError(400, f"the body is not JSON ({e})") from None
    if not isinstance(req, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(req).__name__}")
    return req


# ---- the server --------------------------------------------------------------------------------------


class VLLMServer:
    """One `vllm.LLM` behind the routes of the module doc. `engine` is a `VLLMEngine` over it."""

    ROUTES = {("GET", "/health/"): "health", ("POST", "/generate/"): "generate",
              ("POST", "/start_weight_update/"): "start_update", ("POST", "/update_weights/"): "receive",
              ("POST", "/finish_weight_update/"): "finish_update", ("POST", "/reset_prefix_cache/"): "reset"}

    def __init__(self, cfg: VLLMServeConfig, engine=None):
        self.cfg, self.engine = cfg, engine
        self.folder = model_folder(cfg.model)
        self.shapes, self.tied = checkpoint_shapes(self.folder), ties_embeddings(self.folder)
        self.engine_lock = threading.Lock()  # vLLM serves one call at a time: generate, reload, reset
        self.update_lock = threading.Lock()  # guards the open weight update below
        self.update: dict[str, torch.Tensor] | None = None
        self.update_bytes, self.update_t0, self.syncs = 0, 0.0, 0

    def load(self) -> None:
        """Start vLLM (the colocated engine's way) and wrap it in a `VLLMEngine` for generate and reload."""
        from r1kit.rollout.vllm_engine import VLLMEngine, start_llm

        cfg = self.cfg
        on_cuda = torch.cuda.is_available()
        memory = cfg.gpu_memory_utilization if cfg.gpu_memory_utilization is not None else (0.9 if on_cuda else None)
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_cuda else "float32")  # not vLLM's auto:
        # it downcasts a float32 checkpoint to bfloat16 even on CPU, where r1kit trains in float32
        llm = start_llm(self.folder, on_cuda=on_cuda, dtype=dtype, gpu_memory_utilization=memory,
                        max_model_len=cfg.max_model_len, enforce_eager=cfg.enforce_eager, seed=cfg.seed,
                        tensor_parallel_size=cfg.tensor_parallel_size, **cfg.vllm_kwargs)
        self.engine = VLLMEngine(None, None, llm=llm, weight_sync="snapshot", sleep=False,
                                 snapshot_dir=cfg.snapshot_dir)

    # routes (each returns a JSON-able answer or raises RequestError) ----------------------------------
    def health(self, body: bytes) -> dict:
        return {"status": "ok", "model": self.cfg.model, "weight_update": "idle" if self.update is None else "open"}

    def generate(self, body: bytes) -> dict:
        prompts, params = parse_generate(body)
        if self.update is not None:
            raise RequestError(409, "a weight update is in progress (started, not finished): generate after "
                                    "POST /finish_weight_update/")
        with self.engine_lock:
            try:
                comps = self.engine.generate(prompts, params)
            except Exception as e:  # vLLM's input checks (too long a prompt...) are the client's error: 400
                if isinstance(e, ValueError) or any(c.__name__ == "VLLMClientError" for c in type(e).__mro__):
                    raise RequestError(400, f"vLLM refused the request: {e}") from None
                raise
        return {"completion_ids": [c.completion_ids for c in comps], "logprobs": [c.logprobs for c in comps],
                "finish_reasons": [c.finish_reason for c in comps], "texts": [c.text for c in comps]}

    def start_update(self, body: bytes) -> dict:
        with self.update_lock:
            if self.update is not None:
                log.warning("discarding an unfinished weight update (%d tensors received)", len(self.update))
            self.update, self.update_bytes, self.update_t0 = {}, 0, time.perf_counter()
        return {"weight_update": "open"}

    def receive(self, body: bytes) -> dict:
        from safetensors.torch import load

        try:
            tensors = load(body)
        except Exception as e:  # safetensors raises its own error types
            raise RequestError(400, f"the body is not safetensors bytes ({type(e).__name__}: {e})") from None
        with self.update_lock:
            if self.update is None:
                raise RequestError(409, "no weight update is open: POST /start_weight_update/ first")
            self.update.update(tensors)
            self.update_bytes += len(body)
            return {"tensors": len(self.update), "bytes": self.update_bytes}

    def finish_update(self, body: bytes) -> dict:
        with self.update_lock:
            if self.update is None:
                raise RequestError(409, "no weight update is open: POST /start_weight_update/ first")
            weights, nbytes, t0 = self.update, self.update_bytes, self.update_t0
            self.update = None  # closed whatever happens next: a refused update is started again
        weights = check_weights(weights, self.shapes, self.tied)
        t_load = time.perf_counter()
        with self.engine_lock:
            self.engine.load_weights(weights)  # snapshot written, every worker reloaded, prefix cache reset
        t_end = time.perf_counter()
        self.syncs += 1
        log.info("weight sync %d: %d tensors, %.1f MB, %.2f s (received in %.2f s, reloaded in %.2f s)", self.syncs,
                 len(weights), nbytes / 2**20, t_end - t0, t_load - t0, t_end - t_load)
        return {"tensors": len(weights), "bytes": nbytes, "seconds": round(t_end - t0, 4)}

    def reset(self, body: bytes) -> dict:
        with self.engine_lock:
            self.engine.llm.reset_prefix_cache()
        return {}

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON answer) for one request."""
        route = path.split("?", 1)[0].rstrip("/") + "/"
        name = self.ROUTES.get((method, route))
        if name is None:
            known = ", ".join(f"{m} {p}" for m, p in self.ROUTES)
            if any(p == route for _, p in self.ROUTES):
                return 405, {"error": f"{method} {route}: wrong method; routes: {known}"}
            return 404, {"error": f"no route {method} {route}; routes: {known}"}
        try:
            return 200, getattr(self, name)(body)
        except RequestError as e:
            log.warning("%s %s: %d %s", method, route, e.status, e)
            return e.status, {"error": str(e)}
        except Exception as e:  # the engine failed: say so, keep serving
            log.exception("%s %s failed", method, route)
            return 500, {"error": f"{type(e).__name__}: {e}"}


def make_handler(server: VLLMServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.debug("%s %s", self.address_string(), fmt % args)

        def _serve(self, method: str) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                status, ans = 400, {"error": "bad Content-Length header"}
            else:
                status, ans = server.answer(method, self.path, self.rfile.read(length) if length > 0 else b"")
            data = json.dumps(ans).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

    return Handler


def listen(host: str, port: int, handler=None) -> ThreadingHTTPServer:
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e}") from None


def run_serve(cfg: VLLMServeConfig) -> None:
    """`r1kit vllm-serve`: load the model, then answer the protocol until SIGINT/SIGTERM."""
    server = VLLMServer(cfg)
    listen(cfg.host, cfg.port).server_close()  # a taken port fails now, not after loading the model
    log.info("loading %s (%s) into vLLM", cfg.model, server.folder)  # the ready line follows
    t0 = time.perf_counter()
    server.load()  # before the socket exists: vLLM forks its engine process, which must not inherit it
    httpd = listen(cfg.host, cfg.port, make_handler(server))
    httpd.daemon_threads = True
    host, port = httpd.server_address[:2]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=httpd.serve_forever, name="r1kit-vllm-serve", daemon=True)
    thread.start()
    log.info("model %s loaded in %.1f s; serving http://%s:%d", cfg.model, time.perf_counter() - t0, host, port)
    print(f"r1kit vllm-serve: ready at http://{host}:{port} (model {cfg.model})", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        httpd.shutdown()
        httpd.server_close()
