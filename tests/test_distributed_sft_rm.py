"""Data parallel SFT and reward-model training: 2 gloo processes == 1 process with the doubled micro-batch,
under DDP and FSDP2, with and without LoRA, as tests/test_distributed.py checks GRPO.

Why they can match: rank r takes `PromptSampler(rank=r, world=2)`'s share perm[r::2] of each epoch's
permutation, so at every step the two ranks' rows together are exactly the single process's rows.
SFT divides every micro-batch's summed -log p by the loss tokens of the whole step over all ranks; the
reward model averages the Bradley-Terry loss over each rank's (equally many) pairs. Averaging the
gradients over ranks (DDP's all-reduce, FSDP2's reduce-scatter) then gives the single process's
gradient. LoRA adapters are initialised from each rank's own seed and must be made rank 0's by the
runtime's broadcast (without it the ranks train different adapters and never agree).

Tolerance: same math, different float summation order and padding widths: rtol 1e-5 on metrics;
weights within 1e-5 (AdamW divides by each element's RMS, so a round-off-sized gradient element can
still move by O(lr) in a round-off-chosen direction; a handful of elements may differ by more than 1e-6).
"""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from r1kit.train.tracking import read_metrics

from test_distributed import _free_port

SFT_KEYS = ("loss", "mean_token_accuracy", "grad_norm", "num_tokens", "num_loss_tokens")
RM_KEYS = ("loss", "accuracy", "margin", "rewards/chosen", "rewards/rejected", "grad_norm", "num_tokens",
           "eval_loss", "eval_accuracy")


def sft_cfg(out: Path, data: str, per_device: int, **kw) -> dict:
    return dict(model_name_or_path="r1kit:tiny", dataset_name=data, per_device_train_batch_size=per_device,
                gradient_accumulation_steps=2, learning_rate=1e-3, max_steps=3, max_length=64, template="none", output_dir=str(out),
                save_steps=0, disable_tqdm=True, seed=5, logging_steps=1, **kw)


def rm_cfg(out: Path, per_device: int, **kw) -> dict:
    return dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:preferences", dataset_num_rows=40,
                eval_fraction=0.2, per_device_train_batch_size=per_device, gradient_accumulation_steps=2,
                learning_rate=1e-3, max_steps=3, max_length=96, output_dir=str(out), save_steps=0,
                disable_tqdm=True, seed=5, logging_steps=1, **kw)


def run(kind: str, cfg: dict) -> Path:
    if kind == "sft":
        from r1kit.train.sft import train
        from r1kit.train.sft_config import SFTConfig as Config
    else:
        from r1kit.train.rm import train
        from r1kit.train.rm_config import RMConfig as Config
    return train(Config(**cfg))


def _worker(rank: int, world: int, port: int, runs: list[tuple[str, dict]]):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    try:
        for kind, cfg in runs:
            run(kind, cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def assert_same_run(single: Path, multi: Path, keys: tuple[str, ...]) -> None:
    a, b = read_metrics(single), read_metrics(multi)
    assert [m["step"] for m in b] == [m["step"] for m in a] == [1, 2, 3], multi.name
    for ma, mb in zip(a, b):
        for key in keys:
            if key in ma:
                assert mb[key] == pytest.approx(ma[key], rel=1e-5, abs=1e-6), (multi.name, ma["step"], key)
    wa, wb = load_file(str(single / "model.safetensors")), load_file(str(multi / "model.safetensors"))
    assert wa.keys() == wb.keys(), multi.name
    diff = torch.cat([(wa[k].float() - wb[k].float()).abs().flatten() for k in wa])
    assert diff.max().item() <= 1e-5, (multi.name, diff.max().item())
    assert int((diff > 1e-6).sum()) <= 1e-4 * diff.numel(), multi.name


def test_sft_and_rm_two_processes_equal_one(tmp_path):
    rows = [{"prompt": f"What is {i} + {i + 3}?", "completion": f"<think> {i} plus {i + 3} </think> "
                                                                f"<answer> {2 * i + 3} </answer>"} for i in range(24)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lora = dict(lora_r=4, lora_alpha=8)
    cases = {  # name -> (kind, single-process config, two-process config)
        "sft_ddp": ("sft", sft_cfg(tmp_path / "sft_1", str(data), 8),
                    sft_cfg(tmp_path / "sft_ddp", str(data), 4, distributed_strategy="ddp")),
        "sft_fsdp2": ("sft", None, sft_cfg(tmp_path / "sft_fsdp2", str(data), 4, distributed_strategy="fsdp2")),
        "sft_lora_ddp": ("sft", sft_cfg(tmp_path / "sft_lora_1", str(data), 8, **lora),
                         sft_cfg(tmp_path / "sft_lora_ddp", str(data), 4, distributed_strategy="ddp", **lora)),
        "sft_lora_fsdp2": ("sft", None,
                           sft_cfg(tmp_path / "sft_lora_fsdp2", str(data), 4, distributed_strategy="fsdp2", **lora)),
        "rm_ddp": ("rm", rm_cfg(tmp_path / "rm_1", 8), rm_cfg(tmp_path / "rm_ddp", 4, distributed_strategy="ddp")),
        "rm_fsdp2": ("rm", None, rm_cfg(tmp_path / "rm_fsdp2", 4, distributed_strategy="fsdp2")),
        "rm_lora_ddp": ("rm", rm_cfg(tmp_path / "rm_lora_1", 8, **lora),
                        rm_cfg(tmp_path / "rm_lora_ddp", 4, distributed_strategy="ddp", **lora)),
        "rm_lora_fsdp2": ("rm", None, rm_cfg(tmp_path / "rm_lora_fsdp2", 4, distributed_strategy="fsdp2", **lora)),
    }
    for kind, single, _ in cases.values():
        if single is not None:
            run(kind, single)
    mp.spawn(_worker, args=(2, _free_port(), [(kind, multi) for kind, _, multi in cases.values()]),
             nprocs=2, join=True)

    init = load_file(str(tmp_path / "sft_1" / "model.safetensors"))
    from r1kit.models.tiny import build_tiny

    start = build_tiny()[0].state_dict()
    assert any(not torch.equal(start[k], v) for k, v in init.items() if k in start), "SFT changed nothing"
    # the LoRA reward model is saved merged: a plain sequence-classification folder, like the full one
    lora_rm = load_file(str(tmp_path / "rm_lora_1" / "model.safetensors"))
    assert lora_rm.keys() == load_file(str(tmp_path / "rm_1" / "model.safetensors")).keys()
    assert "score.weight" in lora_rm and not any("lora" in k for k in lora_rm)
    for name, reference, keys in (("sft_ddp", "sft_1", SFT_KEYS), ("sft_fsdp2", "sft_1", SFT_KEYS),
                                  ("sft_lora_ddp", "sft_lora_1", SFT_KEYS), ("sft_lora_fsdp2", "sft_lora_1", SFT_KEYS),
                                  ("rm_ddp", "rm_1", RM_KEYS), ("rm_fsdp2", "rm_1", RM_KEYS),
                                  ("rm_lora_ddp", "rm_lora_1", RM_KEYS), ("rm_lora_fsdp2", "rm_lora_1", RM_KEYS)):
        assert_same_run(tmp_path / reference, tmp_path / name, keys)
