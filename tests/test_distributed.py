"""Data parallel GRPO: 2 gloo processes == 1 process with the doubled micro-batch.

What has to match, and how the test makes it match:

* Prompts. Rank r takes `PromptSampler(rank=r, world=2)`'s share perm[r::2] of every epoch's
  permutation, so at every step the two ranks' prompts together are exactly the prompts the single
  process takes (perm[4s:4s+4]), in a different order. The test checks this from the logged rows.
* Sampling randomness. The real HF engine draws all rows of a batch from ONE generator, so a row's
  random numbers depend on where it sits in its process's batch; no seed schedule can make a 2-rank
  batch draw the same tokens as the 1-rank batch. The test therefore wraps the real engine
  (`PerPromptEngine`): it generates each prompt on its own, with a seed that is a function of
  (generate call number, prompt tokens) only. Generation still runs the real engine on the current
  weights; only the seeding differs from production (documented here, not hidden).
* Everything after generation is the production loop: global advantages (scale_rewards=batch needs
  the std over all ranks' rewards), the global dapo token normaliser, gradient averaging (bucketed
  all-reduce for ddp; FSDP2's reduce-scatter for fsdp2), clipping, AdamW, global metrics.

Tolerances: the 1-process run sums the loss over one micro-batch of 8 rows, the 2-process run over
two of 4 rows, then all-reduces; padding widths differ too. Same math, different float summation
order, so the results agree to float32 round-off: allclose(rtol=1e-5, atol=1e-6), not bitwise.
"""

import math
import os
import socket
import zlib
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from r1kit.rollout import SamplingParams
from r1kit.rollout.hf import HFEngine
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.tracking import read_metrics
from r1kit.utils.dist import Runtime, resolve_strategy


def digit_reward(prompts, completions, **columns):
    """Varies across a random model's samples, so advantages (and gradients) are non-zero."""
    return [sum(ch.isdigit() for ch in c) / 10 for c in completions]


class PerPromptEngine:
    """The real HF engine, one prompt at a time, seeded by (call number, prompt tokens)."""

    def __init__(self, model, tokenizer):
        self.inner, self.calls = HFEngine(model, tokenizer), 0

    def update_weights(self, model):
        self.inner.update_weights(model)

    def generate(self, prompt_ids, params):
        self.calls += 1
        out = []
        for i, p in enumerate(prompt_ids):
            seed = zlib.crc32(repr((self.calls, list(p))).encode())
            for c in self.inner.generate([p], SamplingParams(**{**asdict(params), "seed": seed})):
                c.prompt_index = i
                out.append(c)
        return out


def _patch_engine(monkeypatch=None):
    import r1kit.train.grpo as grpo

    fake = lambda name, model, tokenizer, **kw: PerPromptEngine(model, tokenizer)  # noqa: E731
    if monkeypatch is not None:
        monkeypatch.setattr(grpo, "make_engine", fake)
    else:
        grpo.make_engine = fake


def cfg_dict(out: Path, per_device: int, **kw) -> dict:
    base = dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=16,
                num_generations=4, per_device_train_batch_size=per_device, gradient_accumulation_steps=2,
                max_completion_length=8, max_prompt_length=256, learning_rate=1e-3, max_steps=2, beta=0.04,
                loss_type="dapo", scale_rewards="batch", reward_funcs=["format", "test_distributed:digit_reward"],
                output_dir=str(out), save_steps=0, disable_tqdm=True, seed=3)
    base.update(kw)
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, runs: list[dict]):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from r1kit.train.grpo import train

    _patch_engine()
    try:
        for run in runs:
            train(GRPOConfig(**run))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _rows_per_step(out: Path) -> list[list[int]]:
    import json

    return [sorted(json.loads(line)["row"] for line in f.read_text().splitlines())
            for f in sorted((out / "completions").glob("step-*.jsonl"))]


def test_two_processes_equal_one_with_doubled_batch(tmp_path, monkeypatch):
    # one process, micro-batch 8 (2 accumulation steps -> 4 prompts x 4 completions per step)
    _patch_engine(monkeypatch)
    from r1kit.train.grpo import train

    single = train(GRPOConfig(**cfg_dict(tmp_path / "single", per_device=8)))
    # two gloo processes, micro-batch 4 each: a ddp run, then an fsdp2 run (same process group)
    runs = [cfg_dict(tmp_path / "ddp", per_device=4, distributed_strategy="ddp"),
            cfg_dict(tmp_path / "fsdp2", per_device=4, distributed_strategy="fsdp2")]
    mp.spawn(_worker, args=(2, _free_port(), runs), nprocs=2, join=True)

    ref_metrics, ref_w = read_metrics(single), _weights(single)
    init = __import__("r1kit.models.tiny", fromlist=["build_tiny"]).build_tiny()[0].state_dict()
    assert any(not torch.equal(init[k], v) for k, v in ref_w.items() if k in init), "training changed nothing"
    for name in ("ddp", "fsdp2"):
        out = tmp_path / name
        # the same prompts per step (union over ranks), and identical sampled completions
        assert _rows_per_step(out) == _rows_per_step(single), name
        metrics = read_metrics(out)
        assert [m["step"] for m in metrics] == [1, 2]
        for a, b in zip(ref_metrics, metrics):
            for key in ("loss", "reward", "reward_std", "kl", "entropy", "grad_norm", "completions/mean_length",
                        "completions/clipped_ratio", "advantages/abs_mean", "frac_reward_zero_std", "num_tokens"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (name, a["step"], key)
        w = _weights(out)
        assert w.keys() == ref_w.keys()
        diff = torch.cat([(w[k] - ref_w[k]).abs().flatten() for k in ref_w])
        print(name, "max weight diff", diff.max().item(), "elements > 1e-6:", int((diff > 1e-6).sum()), "of", diff.numel())
        # Weights after 2 AdamW steps: AdamW divides each gradient element by its own running RMS, so
        # an element whose gradient is mostly round-off (cancellation) still moves by O(lr), in a
        # direction set by that round-off. So: every element within 1% of one step (lr = 1e-3), and
        # all but a handful within 1e-6.
        assert diff.max().item() <= 1e-5, name
        assert int((diff > 1e-6).sum()) <= 1e-4 * diff.numel(), name


def parity_reward(prompts, completions, **columns):
    """Prompts of even length score every completion 0.5 (advantage 0: their rows may skip the backward);
    the others score the completion's length in characters (which a random model's samples vary)."""
    return [0.5 if len(p) % 2 == 0 else len(c) / 100 for p, c in zip(prompts, completions)]


def test_two_processes_skip_zero_advantage_rows_like_one(tmp_path, monkeypatch):
    """beta 0: rows with advantage 0 run forward only (skip_zero_advantage_backward). The ranks hold different
    numbers of such rows, yet must run as many backward passes (FSDP2's are collectives): the 2-process runs
    still equal the 1-process run."""
    _patch_engine(monkeypatch)
    from r1kit.train.grpo import train

    kw = dict(beta=0.0, scale_rewards="group", reward_funcs=["test_distributed:parity_reward"],
              gradient_accumulation_steps=4, max_steps=4)  # 2 groups per rank per step, micro-batches of 2 rows
    single = train(GRPOConfig(**cfg_dict(tmp_path / "single", per_device=4, **kw)))
    runs = [cfg_dict(tmp_path / name, per_device=2, distributed_strategy=name, **kw) for name in ("ddp", "fsdp2")]
    mp.spawn(_worker, args=(2, _free_port(), runs), nprocs=2, join=True)
    # the case that needs the agreement: a step where one rank (rows 0-7 rank 0, 8-15 rank 1; micro-batches of 2)
    # needs fewer backward passes than the other, which needs fewer than all 4, so both skip some and one of
    # them also back-propagates rows whose loss is 0 to match the other's count
    import json

    def passes(advantages):
        return max(1, math.ceil(sum(a != 0 for a in advantages) / 2))

    per_rank = []
    for f in sorted((tmp_path / "ddp" / "completions").glob("step-*.jsonl")):
        adv = [json.loads(line)["advantage"] for line in f.read_text().splitlines()]
        per_rank.append((passes(adv[:8]), passes(adv[8:])))
    assert any(a != b and max(a, b) < 4 for a, b in per_rank), per_rank
    ref_metrics, ref_w = read_metrics(single), _weights(single)
    for name in ("ddp", "fsdp2"):
        metrics = read_metrics(tmp_path / name)
        assert any(m["frac_backward_skipped"] > 0 for m in metrics), name
        for a, b in zip(ref_metrics, metrics):
            for key in ("loss", "reward", "entropy", "grad_norm", "frac_reward_zero_std"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (name, a["step"], key)
        w = _weights(tmp_path / name)
        diff = torch.cat([(w[k] - ref_w[k]).abs().flatten() for k in ref_w])
        assert diff.max().item() <= 1e-5 and int((diff > 1e-6).sum()) <= 1e-4 * diff.numel(), name  # as above


def test_strategy_from_accelerate_environment(monkeypatch):
    for var in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_RESHARD_AFTER_FORWARD", "FSDP_OFFLOAD_PARAMS",
                "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_strategy("auto")[0] == "ddp"
    with monkeypatch.context() as m:
        m.setenv("ACCELERATE_USE_FSDP", "true")
        m.setenv("FSDP_VERSION", "2")
        m.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
        assert resolve_strategy("auto") == ("fsdp2", {"reshard_after_forward": False, "offload": False})
        assert resolve_strategy("ddp")[0] == "ddp"  # an explicit choice wins
        m.setenv("FSDP_VERSION", "1")
        with pytest.raises(ValueError, match="fsdp_version: 2"):
            resolve_strategy("auto")
    with monkeypatch.context() as m:
        m.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        m.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
        m.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu")
        assert resolve_strategy("auto") == ("fsdp2", {"reshard_after_forward": True, "offload": True})
        m.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        m.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")
        assert resolve_strategy("auto") == ("fsdp2", {"reshard_after_forward": False, "offload": False})
        m.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
        assert resolve_strategy("auto")[0] == "ddp"
        m.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "nvme")
        with pytest.raises(ValueError, match="NVMe"):
            resolve_strategy("auto")
    with pytest.raises(ValueError, match="distributed_strategy"):
        resolve_strategy("zero9")


def test_single_process_runtime_is_identity():
    rt = Runtime(device=torch.device("cpu"))
    assert rt.sum(2.5) == 2.5 and rt.mean(3.0) == 3.0 and rt.max(1.0) == 1.0
    t = torch.arange(4.0)
    assert rt.gather(t) is t and rt.shard([1, 2]) == [1, 2] and rt.gather_objects("x") == ["x"]
    m = torch.nn.Linear(2, 2)
    assert rt.prepare_model(m) is m and rt.rollout_model(m) is m and rt.unwrap(m) is m


@pytest.mark.slow
def test_accelerate_launch_ddp_config_on_cpu(tmp_path):
    """`accelerate launch --config_file recipes/accelerate_configs/ddp.yaml --num_processes 2 -m r1kit.cli
    grpo` on a machine without GPUs: 2 gloo processes, rank 0 logs all 8 completions per step (~20 s)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: r1kit:tiny\ndataset_name: r1kit:arithmetic\ndataset_num_rows: 16\n"
                      f"num_generations: 4\nper_device_train_batch_size: 4\nmax_completion_length: 8\n"
                      f"max_steps: 2\nsave_steps: 0\noutput_dir: {tmp_path / 'out'}\ndisable_tqdm: true\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(root / "recipes/accelerate_configs/ddp.yaml"), "--num_processes", "2", "--main_process_port",
           str(_free_port()), "-m", "r1kit.cli", "grpo", "--config", str(recipe)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["step"] for m in read_metrics(tmp_path / "out")] == [1, 2]
    assert [len(r) for r in _rows_per_step(tmp_path / "out")] == [8, 8]  # both ranks' completions
