"""`r1kit vllm-serve` for real: the command in a subprocess on 127.0.0.1 serving a snapshot of the
shipped tiny-world base model, `rollout_engine: vllm-server` as its client.

(a) greedy generation through the server equals the HF engine's, log-probs within 1e-4; (b) the same
after the policy's weights change and are synced over HTTP; the server's HTTP errors (400/404/409);
(c) GRPO with the server as its engine logs a sampler/trainer log-prob difference under 1e-3, stops
cleanly when the server is killed mid-run (the error names the URL, the last completed step is
checkpointed), and resumes once the server is back. The server starts twice (the restart in (c)).
"""

import copy
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from r1kit.rollout import RolloutError, SamplingParams, make_engine
from r1kit.rollout.vllm_client import VLLMServerEngine
from r1kit.rollout.vllm_common import write_snapshot

READY = re.compile(r"r1kit vllm-serve: ready at (http://127\.0\.0\.1:(\d+)) \(model ")
CLIENT = dict(connect_timeout=2.0, read_timeout=120.0, retries=1, backoff=0.2, startup_timeout=120.0)


class Server:
    """`r1kit vllm-serve` as a subprocess in its own process group (vLLM's engine process joins it)."""

    def __init__(self, model: Path, logs: Path):
        self.model, self.logs, self.proc, self.url, self.port = model, logs, None, None, 0
        self.starts = []  # seconds from launch to the ready line

    def start(self, timeout: float = 180.0) -> None:
        log = self.logs / f"server-{len(self.starts)}.log"
        t0 = time.perf_counter()
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "r1kit.cli", "vllm-serve", "--model", str(self.model),
                                          "--port", str(self.port)],  # dtype auto: float32 on CPU
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            m = READY.search(log.read_text(errors="replace"))
            if m:
                self.url, self.port = m.group(1), int(m.group(2))
                self.starts.append(time.perf_counter() - t0)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = log.read_text(errors="replace")[-3000:]
        self.kill()
        pytest.fail(f"r1kit vllm-serve did not get ready (exit code {self.proc.returncode}):\n{tail}")

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash: nothing cleans up)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (a clean stop), then SIGKILL what is left of the group."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(30)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("server-*.log")))


@pytest.fixture(scope="module")
def server(tiny_base, tmp_path_factory):
    model, tok = tiny_base
    folder = write_snapshot(model, tok, tmp_path_factory.mktemp("served") / "tiny-base")
    s = Server(folder, tmp_path_factory.mktemp("server-logs"))
    s.start()
    yield s
    s.stop()


def prompts(tok) -> list[list[int]]:
    texts = ["12 + 7 =", "A conversation. User: what is 3 * 4? Assistant: <think>", "The sum of 40 and 2 is"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def assert_same_greedy(server_engine, hf_engine, ids) -> list[list[int]]:
    params = SamplingParams(n=1, max_new_tokens=16, temperature=0.0)
    got, want = server_engine.generate(ids, params), hf_engine.generate(ids, params)
    assert [c.completion_ids for c in got] == [c.completion_ids for c in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(w.logprobs), rtol=0, atol=1e-4)
        assert g.finish_reason == w.finish_reason
    return [c.completion_ids for c in got]


def test_greedy_equals_hf_before_and_after_a_weight_sync(server, tiny_base):
    model, tok = tiny_base
    model = copy.deepcopy(model)  # perturbed below; the session's model stays as shipped
    ids = prompts(tok)
    eng = make_engine("vllm-server", model, tok, base_url=server.url, **CLIENT)
    assert isinstance(eng, VLLMServerEngine)
    before = assert_same_greedy(eng, make_engine("hf", model, tok), ids)  # (a)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * p.std())
    t0 = time.perf_counter()
    eng.update_weights(model)
    server.sync_s = time.perf_counter() - t0
    after = assert_same_greedy(eng, make_engine("hf", model, tok), ids)  # (b)
    assert after != before  # the perturbation changed the greedy text, so (b) checks the sync
    assert re.search(r"weight sync \d+: \d+ tensors, [\d.]+ MB, [\d.]+ s", server.log_text())


def test_http_errors(server, tiny_base):
    import http.client
    import json

    def post(path, body):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        ans = resp.status, json.loads(resp.read())["error"]
        conn.close()
        return ans

    assert post("/generate/", b"{}") == (400, "missing field 'prompt_ids' (a list of prompts, each a non-empty "
                                              "list of token ids)")
    code, msg = post("/generate/", json.dumps({"prompt_ids": [[5] * 2000]}).encode())
    assert code == 400 and "vLLM refused the request" in msg, msg  # longer than the model's context (1024)
    assert post("/nope/", b"{}")[0] == 404
    assert post("/finish_weight_update/", b"{}")[0] == 409  # no update open
    eng = VLLMServerEngine(None, tiny_base[1], base_url=server.url, **CLIENT)  # still serving after all that
    assert len(eng.generate([[5, 6]], SamplingParams(n=2, max_new_tokens=4, seed=1))) == 2


def digit_reward(prompts, completions, **columns):
    """A reward the tiny base model's samples differ on (accuracy alone is 0 everywhere: no update)."""
    return [sum(ch.isdigit() for ch in c) / 10 for c in completions]


def test_grpo_with_the_server_stops_when_it_dies_and_resumes(server, tmp_path):
    from r1kit.train.checkpoint import STATE_FILE
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.tracking import read_metrics

    out = tmp_path / "run"
    cfg = dict(model_name_or_path="r1kit:tiny-base", dtype="float32", dataset_name="r1kit:arithmetic",
               dataset_num_rows=16, num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=2,
               max_completion_length=16, learning_rate=1e-3, max_steps=3, save_steps=1, logging_steps=1,
               rollout_engine="vllm-server", rollout_engine_kwargs=dict(base_url=server.url, **CLIENT),
               reward_funcs=["accuracy", "test_vllm_server:digit_reward"], output_dir=str(out), disable_tqdm=True,
               seed=3)

    def kill_after_step_2(step, model, engine):
        if step == 2:
            server.kill()

    with pytest.raises(RolloutError) as err:
        train(GRPOConfig(**cfg), callback=kill_after_step_2)
    msg = str(err.value)
    assert msg.startswith("step 3: the rollout engine failed") and f"{server.url}/generate/" in msg
    assert "resume_from_checkpoint=true" in msg and (out / "checkpoint-2" / STATE_FILE).is_file()
    rows = read_metrics(str(out))
    assert [r["step"] for r in rows] == [1, 2] and all(r["grad_norm"] > 0 for r in rows)  # the policy moved
    server.start()  # back, on the same port, with the shipped weights: the resume re-syncs the trained ones
    train(GRPOConfig(**{**cfg, "max_steps": 4, "resume_from_checkpoint": "true"}))
    rows = read_metrics(str(out))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # every step sampled from the trainer's weights: before the kill, and after the resume's re-sync (the
    # restarted server held the shipped weights, which differ from checkpoint-2's by ~0.5 nats a token)
    diffs = [r["sampling/sampling_logp_difference/mean"] for r in rows]
    assert all(0 <= d < 1e-3 for d in diffs), diffs
    assert len(re.findall(r"weight sync \d+:", (server.logs / "server-1.log").read_text())) >= 2  # start + resume
    print(f"\nserver starts (s): {[round(s, 1) for s in server.starts]}; client weight sync (s): "
          f"{getattr(server, 'sync_s', float('nan')):.2f}; logp difference per step: {diffs}; server: "
          f"{re.findall(r'weight sync .*', server.log_text())[-1]}")
