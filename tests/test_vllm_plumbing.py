"""The vLLM backends without vLLM: a fake `vllm` module / `LLM` object for the colocated engine, a
tiny HTTP server on 127.0.0.1 for the server client, and merged LoRA weights (`merged_state_dict`).

`r1kit vllm-serve`'s HTTP layer (`VLLMServer`: routes, validation, atomic weight updates) is tested here
over a fake engine; tests/vllm_real/test_vllm_server.py runs the real server. Not tested here (no GPU, no
vllm): a real `vllm.LLM`, real sleep/wake memory behaviour, vLLM's own `load_weights` name mapping."""

import json
import socket
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from r1kit.models.loading import lora_config
from r1kit.models.tiny import build_tiny
from r1kit.rollout import SamplingParams, make_engine
from r1kit.rollout.sync import merged_state_dict
from r1kit.rollout.vllm_client import VLLMServerEngine, VLLMServerError
from r1kit.rollout.base import Completion
from r1kit.rollout.vllm_common import vllm_sampling_kwargs, write_snapshot
from r1kit.rollout.vllm_engine import VLLMEngine
from r1kit.rollout.vllm_server import VLLMServeConfig, VLLMServer, make_handler


@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


def lora_model(seed=1):
    from peft import get_peft_model

    model, _ = build_tiny()
    peft_model = get_peft_model(model, lora_config({"r": 4, "alpha": 8, "dropout": 0.0}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft initialises B to zero; make the adapter do something
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return peft_model


# ---- merged LoRA weights ------------------------------------------------------------------------


def test_merged_state_dict_matches_peft_logits_and_leaves_model_alone():
    peft_model = lora_model().eval()
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    merged = merged_state_dict(peft_model)
    plain, _ = build_tiny()
    assert set(merged) == set(plain.state_dict())  # the base model's names, no lora_* tensors
    plain.load_state_dict(merged, strict=True)
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = peft_model(input_ids=ids).logits, plain.eval()(input_ids=ids).logits
        base = build_tiny()[0].eval()(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (base - want).abs().max() > 1e-2  # the adapter matters, so the check above means something
    after = peft_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing merged in place
    assert not any(getattr(m, "merged", False) for m in peft_model.modules())


def test_merged_state_dict_of_plain_model_is_its_state_dict(tiny):
    sd = merged_state_dict(tiny[0])
    assert sd.keys() == tiny[0].state_dict().keys()


# ---- colocated engine with a fake vLLM ----------------------------------------------------------


class FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class Out:  # vllm.outputs.CompletionOutput's fields we read
    def __init__(self, index, token_ids, text, finish_reason, stop_reason, lps):
        self.index, self.token_ids, self.text = index, token_ids, text
        self.finish_reason, self.stop_reason = finish_reason, stop_reason
        self.logprobs = [{t: types.SimpleNamespace(logprob=lp)} for t, lp in zip(token_ids, lps)]


class FakeLLM:
    """The calls r1kit makes on `vllm.LLM`; the worker extension's snapshot load reads the folder it is given."""

    def __init__(self):
        self.calls, self.loaded = [], []

    def collective_rpc(self, method, args=()):
        from safetensors.torch import load_file

        assert method == "r1kit_load_snapshot"
        self.calls.append(("collective_rpc", method))
        self.loaded.append(load_file(f"{args[0]}/model.safetensors"))
        return [0]

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ())))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.calls.append(("generate", [p["prompt_token_ids"] for p in prompts], [s.kw for s in sampling_params]))
        outs = []
        for i, p in enumerate(prompts):
            n = sampling_params[i].kw["n"]
            # out of index order on purpose: the engine must put completion 0 first
            cands = [Out(j, [100 + 10 * i + j, 2], f"p{i}c{j}", "stop", None, [-0.5, -0.25]) for j in range(n)]
            cands[0] = Out(0, [7, 8, 9], "ab</answer>", "stop", "</answer>", [-1.0, -2.0, -3.0])
            if n > 1:
                cands[-1] = Out(n - 1, [5] * 4, "long", "length", None, [-0.1] * 4)
            outs.append(types.SimpleNamespace(outputs=list(reversed(cands))))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.SamplingParams = FakeSamplingParams
    mod.LLM = lambda **kw: (_ for _ in ()).throw(AssertionError("tests pass llm=..."))
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


def test_missing_vllm_names_the_extra(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(ImportError, match=r"pip install 'r1kit\[vllm\]'"):
        make_engine("vllm", tiny[0], tiny[1])


def test_sampling_params_mapping():
    p = SamplingParams(n=4, max_new_tokens=32, temperature=0.7, top_p=0.9, top_k=0, stop=("</answer>",), seed=11)
    kw = vllm_sampling_kwargs(p, prompt_index=3)
    assert kw == dict(n=4, temperature=0.7, top_p=0.9, top_k=-1, max_tokens=32, stop=["</answer>"],
                      include_stop_str_in_output=True, seed=14, logprobs=0, skip_special_tokens=True)
    assert vllm_sampling_kwargs(SamplingParams(top_k=5))["top_k"] == 5
    assert vllm_sampling_kwargs(SamplingParams(seed=None))["seed"] is None


def test_colocated_generate_converts_groups_and_sleeps(fake_vllm, tiny):
    llm = FakeLLM()
    eng = make_engine("vllm", tiny[0], tiny[1], llm=llm, sleep=True)
    assert isinstance(eng, VLLMEngine) and len(llm.loaded) == 1  # weights synced at start
    prompts = [[1, 2, 3], [4, 5]]
    comps = eng.generate(prompts, SamplingParams(n=3, max_new_tokens=4, stop=("</answer>",), seed=5))
    gen = [c for c in llm.calls if c[0] == "generate"][0]
    assert gen[1] == prompts and [kw["seed"] for kw in gen[2]] == [5, 6]
    assert [c.prompt_index for c in comps] == [0, 0, 0, 1, 1, 1]  # grouped, prompt-major
    assert [c.completion_ids for c in comps[:3]] == [[7, 8, 9], [101, 2], [5, 5, 5, 5]]  # index order
    assert [c.finish_reason for c in comps[:3]] == ["stop", "eos", "length"]
    assert comps[0].logprobs == [-1.0, -2.0, -3.0] and comps[0].text == "ab</answer>"
    assert comps[4].prompt_ids == [4, 5] and comps[4].completion_ids == [111, 2]
    assert llm.calls[-1] == ("sleep", 1)  # back to sleep after generating: training gets the memory
    # the next weight sync wakes the weights only, loads, drops cached prefixes; then generate wakes the cache
    llm.calls.clear()
    eng.update_weights(tiny[0])
    eng.generate([[1]], SamplingParams(n=1))
    names = [c[0] if c[0] != "wake_up" else ("wake_up", c[1]) for c in llm.calls]
    assert names == [("wake_up", ("weights",)), "collective_rpc", "reset_prefix_cache", ("wake_up", ("kv_cache",)),
                     "generate", "sleep"]


def test_update_weights_loads_merged_lora_weights(fake_vllm, tiny):
    peft_model = lora_model()
    llm = FakeLLM()
    eng = VLLMEngine(peft_model, tiny[1], llm=llm)
    eng.update_weights(peft_model)
    loaded, want = llm.loaded[-1], merged_state_dict(peft_model)
    # the snapshot holds base-model names with the LoRA deltas merged; the tied head is the embedding's
    assert loaded.keys() == want.keys() - {"lm_head.weight"} if tied_head(peft_model) else loaded.keys() == want.keys()
    assert loaded.keys() <= build_tiny()[0].state_dict().keys()
    assert all(torch.equal(loaded[k], want[k]) for k in loaded)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(loaded[q], peft_model.get_base_model().state_dict()[q.replace("q_proj.", "q_proj.base_layer.")])


def tied_head(model) -> bool:
    from r1kit.rollout.vllm_common import tied

    return tied(model)


# ---- server mode against a fake HTTP server ------------------------------------------------------


class FakeServer:
    """Answers every route (200, {} but /generate/'s); `mode` decides how it misbehaves."""

    def __init__(self):
        self.mode, self.log, self.fail_first = "ok", [], 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                owner.log.append(("GET", self.path))
                self._send(200, {"status": "ok"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.log.append(("POST", self.path, len(body)))
                if owner.mode == "stall":
                    time.sleep(1.0)
                    return
                if owner.mode == "die":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if owner.fail_first > 0:
                    owner.fail_first -= 1
                    return self._send(503, {"error": "warming up"})
                if self.path == "/generate/":
                    req = json.loads(body)
                    n = req["n"]
                    ids = [[10 + i, 11 + j] for i in range(len(req["prompt_ids"])) for j in range(n)]
                    return self._send(200, {"completion_ids": ids, "logprobs": [[-0.5, -0.5]] * len(ids),
                                            "finish_reasons": ["length"] * len(ids)})
                self._send(200, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


FAST = dict(connect_timeout=0.5, read_timeout=0.3, retries=2, backoff=0.01, startup_timeout=2.0)


def test_server_generate_and_weight_sync(server, tiny):
    eng = make_engine("vllm-server", tiny[0], tiny[1], base_url=server.url, **FAST)
    assert isinstance(eng, VLLMServerEngine)
    posts = [e[1] for e in server.log if e[0] == "POST"]
    assert posts == ["/start_weight_update/", "/update_weights/", "/finish_weight_update/"]  # weights sent at start
    comps = eng.generate([[1, 2], [3]], SamplingParams(n=2, max_new_tokens=2))
    assert [c.prompt_index for c in comps] == [0, 0, 1, 1]
    assert [c.completion_ids for c in comps] == [[10, 11], [10, 12], [11, 11], [11, 12]]
    assert comps[2].prompt_ids == [3] and comps[0].logprobs == [-0.5, -0.5] and comps[0].finish_reason == "length"
    server.fail_first = 2  # two 503s, then fine: retried with backoff
    assert len(eng.generate([[1]], SamplingParams(n=1))) == 1


class FakeClock:
    """`time` as r1kit.rollout.vllm_engine sees it: `sleep` records the wait and moves `monotonic` on
    at once, so backoff and start-up deadlines are checked by what was waited, not by a stopwatch.
    (Socket timeouts stay real: they are the sockets' own.)"""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    import r1kit.rollout.vllm_client as vllm_engine

    c = FakeClock()
    monkeypatch.setattr(vllm_engine, "time", c)
    return c


def test_server_stall_is_a_timeout_error(server, tiny, clock):
    eng = VLLMServerEngine(None, tiny[1], base_url=server.url, **FAST)
    server.mode = "stall"
    clock.sleeps.clear()
    with pytest.raises(VLLMServerError, match=r"after 3 attempt\(s\): no answer within the read timeout.*stalled"):
        eng.generate([[1]], SamplingParams(n=1))
    # retries=2: three requests reached the server, each given up at the read timeout, with
    # exponential backoff between them (backoff * 2^(attempt-1)); nothing more was tried
    assert [e[1] for e in server.log if e[0] == "POST"] == ["/generate/"] * 3
    assert clock.sleeps == [0.01, 0.02]


def test_server_dying_mid_request_is_an_error(server, tiny):
    eng = VLLMServerEngine(None, tiny[1], base_url=server.url, **FAST)
    server.mode = "die"
    with pytest.raises(VLLMServerError, match="closed the connection or died"):
        eng.generate([[1]], SamplingParams(n=1))


def test_server_refusing_is_an_error(tiny, clock, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    with caplog.at_level("WARNING", logger="r1kit.rollout"):
        with pytest.raises(VLLMServerError, match=r"not ready after 0.5 s.*refused"):
            VLLMServerEngine(None, tiny[1], base_url=f"http://127.0.0.1:{port}",
                             **{**FAST, "startup_timeout": 0.5, "backoff": 0.2})
    # polled /health/ until the start-up deadline: waits of one backoff (0.2 s), the last one cut to
    # what was left of the 0.5 s, so 0.5 s waited in all, and one refused poll before each wait and after
    assert clock.sleeps[:2] == [0.2, 0.2] and sum(clock.sleeps) == pytest.approx(0.5)
    assert all(0 < s <= 0.2 for s in clock.sleeps)
    refused = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(refused) == len(clock.sleeps) + 1 and all("GET" in m and "/health/" in m for m in refused)


# ---- r1kit vllm-serve's HTTP layer over a fake engine -----------------------------------------------


class FakeEngine:
    """What `VLLMServer` calls on its `VLLMEngine`: generate, load_weights, llm.reset_prefix_cache."""

    def __init__(self):
        self.loaded, self.params, self.resets = [], [], 0
        self.llm = types.SimpleNamespace(reset_prefix_cache=self._reset)

    def _reset(self):
        self.resets += 1

    def generate(self, prompt_ids, params):
        self.params.append(params)
        return [Completion(i, list(p), [10 + i, 11 + j], [-0.5, -0.25], "length", f"t{i}{j}")
                for i, p in enumerate(prompt_ids) for j in range(params.n)]

    def load_weights(self, weights):
        self.loaded.append(weights)


@pytest.fixture
def serve(tmp_path, tiny):
    """A `VLLMServer` (fake engine) behind a real HTTP server on 127.0.0.1: (server, url, post)."""
    srv = VLLMServer(VLLMServeConfig(model=str(write_snapshot(tiny[0], tiny[1], tmp_path / "model"))),
                     engine=FakeEngine())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(srv))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"

    def post(path, body=b"", method="POST"):
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=5)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        ans = resp.status, json.loads(resp.read())
        conn.close()
        return ans

    yield srv, url, post
    httpd.shutdown()
    httpd.server_close()


def test_serve_generate_and_chunked_weight_update(serve, tiny):
    srv, url, post = serve
    # chunks of at most ~64 KiB: the tiny model's weights travel in several, applied as one update
    eng = VLLMServerEngine(tiny[0], tiny[1], base_url=url, **{**FAST, "chunk_bytes": 2**16})
    assert len(srv.engine.loaded) == 1 and srv.syncs == 1
    want = merged_state_dict(tiny[0])
    got = srv.engine.loaded[0]
    assert got.keys() == want.keys() - {"lm_head.weight"}  # tied head: the embedding is it
    assert all(torch.equal(got[k], want[k]) for k in got)
    comps = eng.generate([[1, 2], [3]], SamplingParams(n=2, max_new_tokens=5, temperature=0.5, top_k=7, seed=3,
                                                       stop=("</answer>",)))
    p = srv.engine.params[-1]
    assert (p.n, p.max_new_tokens, p.temperature, p.top_k, p.seed, p.stop) == (2, 5, 0.5, 7, 3, ("</answer>",))
    assert [c.completion_ids for c in comps] == [[10, 11], [10, 12], [11, 11], [11, 12]]
    assert comps[3].prompt_ids == [3] and comps[3].logprobs == [-0.5, -0.25] and comps[3].finish_reason == "length"
    assert post("/health/", method="GET") == (200, {"status": "ok", "model": srv.cfg.model, "weight_update": "idle"})
    assert post("/reset_prefix_cache/") == (200, {}) and srv.engine.resets == 1


def test_serve_bad_requests_name_the_problem(serve):
    srv, url, post = serve
    cases = [("/generate/", b"{not json", 400, "not JSON"),
             ("/generate/", b"[1]", 400, "JSON object"),
             ("/generate/", b"{}", 400, "missing field 'prompt_ids'"),
             ("/generate/", b'{"prompt_ids": [[]]}', 400, "field 'prompt_ids' must be"),
             ("/generate/", b'{"prompt_ids": [[1]], "n": "2"}', 400, "field 'n' must be"),
             ("/generate/", b'{"prompt_ids": [[1]], "n": 0}', 400, "n must be >= 1"),
             ("/generate/", b'{"prompt_ids": [[1]], "temprature": 1}', 400, "unknown field(s) ['temprature']"),
             ("/update_weights/", b"", 400, "not safetensors"),
             ("/no_such_route/", b"{}", 404, "no route POST /no_such_route/"),
             ("/finish_weight_update/", b"{}", 409, "no weight update is open")]
    for path, body, status, words in cases:
        code, ans = post(path, body)
        assert code == status and words in ans["error"], (path, body, code, ans)
    assert post("/generate/", method="GET")[0] == 405
    assert srv.engine.params == [] and srv.engine.loaded == []


def test_serve_weight_update_is_atomic_and_checked(serve, tiny):
    from safetensors.torch import save

    srv, url, post = serve
    sd = {k: v.clone() for k, v in merged_state_dict(tiny[0]).items()}
    names = sorted(sd)
    assert post("/update_weights/", save({names[0]: sd[names[0]]}))[0] == 409  # no update open
    assert post("/start_weight_update/", b"{}") == (200, {"weight_update": "open"})
    assert post("/update_weights/", save({k: sd[k] for k in names[:3]}))[0] == 200
    code, ans = post("/generate/", b'{"prompt_ids": [[1]]}')  # half an update: refused, the engine untouched
    assert code == 409 and "weight update is in progress" in ans["error"] and srv.engine.params == []
    assert post("/health/", method="GET")[1]["weight_update"] == "open"
    code, ans = post("/finish_weight_update/")
    assert code == 400 and "weight(s) missing" in ans["error"] and srv.engine.loaded == []
    # unknown names and wrong shapes are named; nothing reaches the engine
    bad = dict(sd, **{"model.extra.weight": torch.zeros(2), names[1]: torch.zeros(3, 3)})
    post("/start_weight_update/")
    post("/update_weights/", save(bad))
    code, ans = post("/finish_weight_update/")
    assert code == 400 and "model.extra.weight" in ans["error"] and f"{names[1]} (3, 3)" in ans["error"]
    assert srv.engine.loaded == [] and post("/generate/", b'{"prompt_ids": [[1]]}')[0] == 200
    # a refused update is closed; a new start discards an unfinished one; a full update applies once
    post("/start_weight_update/")
    post("/update_weights/", save({"model.extra.weight": torch.zeros(2)}))
    post("/start_weight_update/")
    half = len(names) // 2
    post("/update_weights/", save({k: sd[k] for k in names[:half]}))
    code, ans = post("/update_weights/", save({k: sd[k] for k in names[half:]}))
    assert code == 200 and ans["tensors"] == len(names)
    code, ans = post("/finish_weight_update/")
    assert code == 200 and ans["tensors"] == len(names) - 1  # the tied head dropped
    assert len(srv.engine.loaded) == 1 and "model.extra.weight" not in srv.engine.loaded[0]


def test_client_reports_a_refused_request_without_retrying(serve, tiny):
    srv, url, post = serve
    eng = VLLMServerEngine(None, tiny[1], base_url=url, **FAST)
    post("/start_weight_update/")  # someone left an update open: generate is refused (409), not retried
    with pytest.raises(VLLMServerError, match=rf"POST {url}/generate/ failed after 1 attempt\(s\): HTTP 409"):
        eng.generate([[1]], SamplingParams(n=1))


def test_serve_command_fails_before_loading_on_a_bad_model_or_a_taken_port(tmp_path, tiny, capsys):
    from r1kit.cli import main

    folder = write_snapshot(tiny[0], tiny[1], tmp_path / "model")
    assert main(["vllm-serve", "--model", str(tmp_path / "nowhere")]) == 1
    assert main(["vllm-serve", "--model", "r1kit:tiny"]) == 1
    assert main(["vllm-serve", "--model", str(folder), "--dtype", "float64"]) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["vllm-serve", "--model", str(folder), "--port", str(s.getsockname()[1])]) == 1
    err = capsys.readouterr().err
    assert "not a model folder (no config.json there)" in err and "built-in random models have none" in err
    assert "dtype must be one of auto, float32, bfloat16, float16" in err and "cannot listen on 127.0.0.1" in err
