"""The vLLM backends without vLLM: a fake `vllm` module / `LLM` object for the colocated engine, a
tiny HTTP server on 127.0.0.1 for the server client, and merged LoRA weights (`merged_state_dict`).

Not tested here (no GPU, no vllm): a real `vllm.LLM`, real sleep/wake memory behaviour, vLLM's own
`load_weights` name mapping, and a real vLLM HTTP server."""

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
from r1kit.rollout.vllm_common import vllm_sampling_kwargs
from r1kit.rollout.vllm_engine import VLLMEngine


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
    """/health/, /generate/, /update_weights/, /reset_prefix_cache/; `mode` decides how it misbehaves."""

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
    assert posts[-1] == "/reset_prefix_cache/" and "/update_weights/" in posts  # weights sent at start
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
