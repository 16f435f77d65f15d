"""A recipe's numbers mean what they mean in TRL (issue 12).

GRPO: a step is an optimizer update (max_steps, save_steps, logging_steps, checkpoint-N, metrics' `step`,
reward functions' trainer_state); a generation batch of steps_per_generation micro-batches makes
num_iterations x steps_per_generation / gradient_accumulation_steps of them; the generation batch over all
processes holds whole groups (a group may span processes); num_generations >= 2; over-long prompts are cut
from the left. SFT: TRL's loss masks (completion_only_loss, assistant_only_loss) and no template on string
prompts. Defaults r1kit keeps different from TRL's are listed in DEFAULT_DIFFERENCES and noticed once.
"""

import dataclasses
import json
import logging
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

import r1kit.train.trl_semantics as trl_semantics
from r1kit.config import ConfigError, load_config
from r1kit.data.datasets import DataError
from r1kit.data.sft_data import build_examples, encode_row
from r1kit.models.tiny import build_tiny
from r1kit.rollout.base import Completion
from r1kit.train.checkpoint import list_checkpoints
from r1kit.train.grpo import train
from r1kit.train.grpo_config import GRPOConfig
from r1kit.train.rollouts import load_prompts
from r1kit.train.sft import train as sft_train
from r1kit.train.sft_config import SFTConfig
from r1kit.train.skeleton import IN_FLIGHT_FILE
from r1kit.train.tracking import read_metrics
from r1kit.train.trl_semantics import DEFAULT_DIFFERENCES, generation_plan, notice_default_differences

TIMING = ("timing_s/", "perf/")
SEEN: list[tuple[int, int]] = []  # (trainer_state.global_step, max_steps) at each generation batch


def digits_seen(completions, trainer_state, **kwargs):
    """Varies over a random model's samples (non-zero advantages); records TRL's step counters."""
    SEEN.append((trainer_state.global_step, trainer_state.max_steps))
    return [sum(ch.isdigit() for ch in c) / 10 for c in completions]


def digits(completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / 10 for c in completions]


def tiny_cfg(tmp_path, name="run", **kw) -> GRPOConfig:
    base = dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=32,
                num_generations=4, per_device_train_batch_size=8, max_completion_length=8, max_prompt_length=256,
                learning_rate=1e-3, max_steps=4, reward_funcs=["format", "test_trl_semantics:digits_seen"],
                output_dir=str(tmp_path / name), save_steps=0, logging_steps=1, disable_tqdm=True, seed=5)
    base.update(kw)
    return GRPOConfig(**base)


def clean(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


GENERATION_KEYS = ("reward", "reward_std", "completions/mean_length", "frac_reward_zero_std", "advantages/abs_mean")


# ---- steps are optimizer updates -------------------------------------------------------------------------


def test_mu_2_max_steps_4_is_two_generation_batches_of_two_updates(tmp_path):
    SEEN.clear()
    out = train(tiny_cfg(tmp_path, num_iterations=2, save_steps=1, lr_scheduler_type="linear"))
    # reward functions see TRL's counters: generation batches at global steps 0 and 2 of 4
    assert SEEN == [(0, 4), (2, 4)]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one row per optimizer update
    # the schedule spans the 4 updates (the rate logged after each: linear to 0)
    assert [r["learning_rate"] for r in rows] == pytest.approx([1e-3 * (4 - k) / 4 for k in (1, 2, 3, 4)])
    # each row carries its generation batch's statistics; the two updates of a batch differ in their loss
    for a, b in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert all(a[k] == b[k] for k in GENERATION_KEYS)
        assert a["grad_norm"] != b["grad_norm"]
    # completions are logged once per generation batch, at its first update
    assert sorted(p.name for p in (out / "completions").glob("*.jsonl")) == ["step-000001.jsonl", "step-000003.jsonl"]
    # checkpoints are named by optimizer step; those between two updates of a batch carry it
    ckpts = dict(list_checkpoints(out))
    assert sorted(ckpts) == [1, 2, 3, 4]
    assert [(ckpts[s] / IN_FLIGHT_FILE).is_file() for s in (1, 2, 3, 4)] == [True, False, True, False]


def test_steps_per_generation_and_generation_batch_size(tmp_path):
    """steps_per_generation 2 with one micro-batch per update: each generation batch of 2 x 8 completions
    makes 2 updates (on its halves); generation_batch_size 16 says the same (TRL's two spellings)."""
    SEEN.clear()
    a = train(tiny_cfg(tmp_path, "spg", steps_per_generation=2))
    assert SEEN == [(0, 4), (2, 4)]
    SEEN.clear()
    b = train(tiny_cfg(tmp_path, "gbs", generation_batch_size=16))
    assert SEEN == [(0, 4), (2, 4)]
    assert clean(read_metrics(a)) == clean(read_metrics(b))
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = read_metrics(a)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(rows[0][k] == rows[1][k] for k in GENERATION_KEYS)
    lines = (a / "completions" / "step-000001.jsonl").read_text().splitlines()
    assert len(lines) == 16 and len({json.loads(x)["row"] for x in lines}) == 4  # 4 prompts x 4 completions


def test_default_steps_per_generation_is_gradient_accumulation_steps(tmp_path):
    """TRL's default: one generation batch per optimizer update, as r1kit always did."""
    a = train(tiny_cfg(tmp_path, "default", per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2))
    b = train(tiny_cfg(tmp_path, "explicit", per_device_train_batch_size=4, gradient_accumulation_steps=2,
                       max_steps=2, steps_per_generation=2))
    assert clean(read_metrics(a)) == clean(read_metrics(b))
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class Crash(Exception):
    pass


@pytest.mark.parametrize("kw", [dict(num_iterations=2, beta=0.04), dict(steps_per_generation=2)],
                         ids=["mu2_beta", "spg2"])
def test_resume_between_two_updates_of_a_generation_batch_is_exact(tmp_path, monkeypatch, kw):
    """Killed right after checkpoint-3 (the first update of the second generation batch), resumed: the
    same rows and bitwise the same weights as the run never stopped (the batch came back from the checkpoint)."""
    straight = train(tiny_cfg(tmp_path, "straight", save_steps=1, **kw))
    import r1kit.train.skeleton as skeleton

    real_save = skeleton.save_checkpoint

    def crash_at_3(*args, **k):
        path = real_save(*args, **k)
        if path.name == "checkpoint-3":
            raise Crash(path)
        return path

    monkeypatch.setattr(skeleton, "save_checkpoint", crash_at_3)
    with pytest.raises(Crash):
        train(tiny_cfg(tmp_path, "resumed", save_steps=1, **kw))
    monkeypatch.setattr(skeleton, "save_checkpoint", real_save)
    SEEN.clear()
    resumed = train(tiny_cfg(tmp_path, "resumed", save_steps=1, resume_from_checkpoint="true", **kw))
    assert SEEN == []  # nothing regenerated: step 4 trained on the batch checkpoint-3 carried
    assert [r["step"] for r in read_metrics(resumed)] == [1, 2, 3, 4]
    assert clean(read_metrics(straight)) == clean(read_metrics(resumed))
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- divisibility and group size, as TRL checks them -----------------------------------------------------


def plan_cfg(**kw):
    base = dict(per_device_train_batch_size=8, gradient_accumulation_steps=1, num_generations=8, num_iterations=1,
                steps_per_generation=None, generation_batch_size=None, dynamic_sampling=False)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("kw, world, expect", [
    # TRL's own example: 14 completions per prompt over 7 GPUs, 2 each: one prompt's group spans them all
    (dict(per_device_train_batch_size=2, num_generations=14), 7,
     dict(generation_batch_size=14, prompts_per_generation=1, groups_span_processes=True, updates_per_generation=1)),
    (dict(per_device_train_batch_size=8), 1,
     dict(generation_batch_size=8, prompts_per_generation=1, groups_span_processes=False, steps_per_generation=1)),
    (dict(per_device_train_batch_size=4, gradient_accumulation_steps=2), 1,  # default: S = gradient accumulation
     dict(steps_per_generation=2, generation_batch_size=8, updates_per_generation=1)),
    (dict(per_device_train_batch_size=2, generation_batch_size=12, num_generations=4), 2,
     dict(steps_per_generation=3, groups_span_processes=True, prompts_per_generation=3, updates_per_generation=3)),
    (dict(per_device_train_batch_size=4, steps_per_generation=4, gradient_accumulation_steps=2, num_iterations=3,
          num_generations=4), 2,
     dict(generation_batch_size=32, updates_per_generation=6, prompts_per_process=4, groups_span_processes=False)),
])
def test_generation_batches_trl_accepts(kw, world, expect):
    plan = generation_plan(plan_cfg(**kw), world)
    assert {k: getattr(plan, k) for k in expect} == expect


@pytest.mark.parametrize("kw, world, match", [
    (dict(num_generations=1), 1, r"'num_generations' must be >= 2, got 1"),
    (dict(per_device_train_batch_size=6, num_generations=4), 1,
     r"'num_generations' \(4\) must divide the generation batch: .* = 6 x 1 x 1 = 6 completions"),
    (dict(per_device_train_batch_size=2, num_generations=14), 6, r"= 2 x 6 x 1 = 12 completions"),
    (dict(steps_per_generation=2, generation_batch_size=16), 1, "cannot both be set"),
    (dict(per_device_train_batch_size=4, generation_batch_size=10, num_generations=2), 1,
     r"'generation_batch_size' \(10\) must be a positive multiple of the global batch"),
    (dict(per_device_train_batch_size=4, steps_per_generation=3, gradient_accumulation_steps=2, num_generations=4), 1,
     r"'steps_per_generation' \(3\) must be a multiple of gradient_accumulation_steps \(2\)"),
    (dict(per_device_train_batch_size=2, num_generations=4, dynamic_sampling=True), 2,
     "'dynamic_sampling' needs whole groups on every process"),
])
def test_generation_batches_refused(kw, world, match):
    with pytest.raises(ValueError, match=match):
        generation_plan(plan_cfg(**kw), world)


def test_config_checks_with_the_launch_world_size(monkeypatch):
    """At config time the processes are the launch's (WORLD_SIZE), as TRL's GRPOConfig reads them."""
    kw = dict(per_device_train_batch_size=2, num_generations=14)
    with pytest.raises(ValueError, match="must divide the generation batch"):
        GRPOConfig(**kw)  # one process: 2 completions cannot hold a group of 14
    monkeypatch.setenv("WORLD_SIZE", "7")
    assert GRPOConfig(**kw).num_generations == 14
    with pytest.raises(ConfigError, match="'num_generations' must be >= 2"):
        load_config(GRPOConfig, None, ["--num_generations", "1"])


class GroupEngine:
    """A scripted engine whose j-th completion of a prompt's group is the same wherever it is generated: in
    one process (n = G completions of each prompt) or split over processes (n = 1 per row, each process's
    slice of the groups: j continues across ranks). Texts carry j digits, so advantages are non-zero."""

    def __init__(self):
        self.rank = int(os.environ.get("RANK", "0"))

    def generate(self, prompt_ids, params):
        out, first = [], self.rank * len(prompt_ids) * params.n
        for p, ids in enumerate(prompt_ids):
            for _ in range(params.n):
                j = (first + len(out)) % 4
                cids = [7 + j] * (j + 1)
                out.append(Completion(prompt_index=p, prompt_ids=list(ids), completion_ids=cids,
                                      logprobs=[-1.0] * len(cids), finish_reason="stop", text="7" * j))
        return out

    def update_weights(self, model) -> None:
        pass


def span_cfg(out: Path, per_device: int, **kw) -> dict:
    return dict(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=8,
                num_generations=4, per_device_train_batch_size=per_device, max_completion_length=8, max_steps=2,
                learning_rate=1e-3, loss_type="dapo", reward_funcs=["test_trl_semantics:digits"],
                output_dir=str(out), save_steps=0, disable_tqdm=True, seed=3, **kw)


def _span_worker(rank: int, world: int, port: int, cfg: dict):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    import r1kit.train.grpo as grpo

    grpo.make_engine = lambda name, model, tokenizer, **kw: GroupEngine()
    try:
        grpo.train(GRPOConfig(**cfg))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_groups_spanning_two_processes_train_as_one_process(tmp_path, monkeypatch):
    """num_generations 4, 2 completions per process, 2 processes: one prompt per step, its group split over
    the two. Same prompts, completions, advantages (over the whole group), loss and update as one process
    generating the group itself."""
    import r1kit.train.grpo as grpo

    monkeypatch.setattr(grpo, "make_engine", lambda name, model, tokenizer, **kw: GroupEngine())
    single = train(GRPOConfig(**span_cfg(tmp_path / "single", 4)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WORLD_SIZE", "2")  # the config is checked as the launch will see it
    cfg = span_cfg(tmp_path / "split", 2, distributed_strategy="ddp")
    GRPOConfig(**cfg)
    mp.spawn(_span_worker, args=(2, port, cfg), nprocs=2, join=True)

    def logged(out):
        return [[(r["row"], r["completion"], r["advantage"]) for r in map(json.loads, f.read_text().splitlines())]
                for f in sorted((out / "completions").glob("*.jsonl"))]

    split = tmp_path / "split"
    assert logged(split) == logged(single)
    assert all(len({row for row, _, _ in step}) == 1 and len(step) == 4 for step in logged(split))
    for a, b in zip(read_metrics(single), read_metrics(split)):
        for key in ("reward", "reward_std", "advantages/abs_mean", "frac_reward_zero_std", "loss", "grad_norm",
                    "entropy", "num_tokens"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    a, b = weights(single), weights(split)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


# ---- prompts over max_prompt_length are cut from the left ------------------------------------------------


def test_over_long_prompts_keep_their_last_tokens(tmp_path, caplog):
    _, tok = build_tiny()
    cfg = tiny_cfg(tmp_path, dataset_num_rows=16, max_prompt_length=96)
    whole = load_prompts(cfg, tok, "train", None)
    with caplog.at_level(logging.WARNING, logger="r1kit.grpo"):
        cut = load_prompts(cfg, tok, "train", 96)
    over = [i for i, ids in enumerate(whole.prompt_ids) if len(ids) > 96]
    assert over, "the R1-Zero template makes these prompts longer than 96 tokens"
    for i, ids in enumerate(whole.prompt_ids):
        assert cut.prompt_ids[i] == (ids[-96:] if i in over else ids)
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "r1kit.grpo"]
    assert f"{len(over)} of 16 prompts are longer than max_prompt_length=96 tokens" in msg
    assert "each keeps its last 96 tokens (cut from the left" in msg
    assert all(cut.texts[i] == tok.decode(cut.prompt_ids[i]) != whole.texts[i] for i in over)
    out = train(tiny_cfg(tmp_path, dataset_num_rows=16, max_prompt_length=96, max_steps=1))  # it trains on them
    logged = [json.loads(x) for x in (out / "completions" / "step-000001.jsonl").read_text().splitlines()]
    assert all(r["prompt"] == cut.texts[r["row"]] for r in logged)


# ---- SFT: TRL's loss masks and no template on string prompts ---------------------------------------------


def test_sft_masks_are_trls_defaults(tmp_path):
    _, tok = build_tiny(chat_template=True)
    convo = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    full = encode_row(convo, tok, kind="messages")
    assert sum(full.loss_mask) == len(full.input_ids) - 1  # messages: every token (but the first)
    only = encode_row(convo, tok, kind="messages", assistant_only_loss=True)
    assert tok.decode([t for t, m in zip(only.input_ids, only.loss_mask) if m]) == f"4{tok.eos_token}\n"

    pc = {"prompt": "What is 2 + 3?", "completion": "5"}
    ex = encode_row(pc, tok, kind="prompt_completion")  # template none: the string prompt as is
    p_ids = tok("What is 2 + 3?").input_ids
    assert ex.input_ids[:len(p_ids)] == p_ids and "Assistant:" not in tok.decode(ex.input_ids)
    assert sum(ex.loss_mask) == len(ex.input_ids) - len(p_ids)  # completion_only_loss None: the completion
    assert sum(encode_row(pc, tok, kind="prompt_completion", completion_only_loss=False).loss_mask) == \
        len(ex.input_ids) - 1
    # a conversation prompt/completion: the completion, or its assistant turns
    chat_pc = {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]}
    assert encode_row(chat_pc, tok, kind="prompt_completion").loss_mask == only.loss_mask
    assert encode_row(chat_pc, tok, kind="prompt_completion", assistant_only_loss=True).loss_mask == only.loss_mask
    # assistant_only_loss needs conversations, as in TRL
    for row in (pc, {"text": "hello"}):
        with pytest.raises(DataError, match="assistant_only_loss is true"):
            build_examples([row], tok, "d", max_length=64, assistant_only_loss=True)


def test_sft_run_counts_the_loss_tokens_trl_would(tmp_path):
    model_dir = tmp_path / "chat-model"
    _, tok = build_tiny(str(model_dir), chat_template=True)
    convos = [{"messages": [{"role": "user", "content": f"{i}+{i}?"}, {"role": "assistant", "content": f"{2 * i}"}]}
              for i in range(4)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in convos))
    base = dict(model_name_or_path=str(model_dir), dataset_name=str(data), max_length=64, max_steps=1,
                per_device_train_batch_size=4, save_steps=0, logging_steps=1, disable_tqdm=True)
    examples = {flag: build_examples(convos, tok, "d", max_length=64, assistant_only_loss=flag)[0] for flag in (0, 1)}
    for flag in (False, True):
        out = sft_train(SFTConfig(**base, output_dir=str(tmp_path / f"run{int(flag)}"), assistant_only_loss=flag))
        (row,) = read_metrics(out)
        assert row["num_loss_tokens"] == sum(sum(e.loss_mask) for e in examples[flag])
    assert sum(sum(e.loss_mask) for e in examples[True]) < sum(sum(e.loss_mask) for e in examples[False])


# ---- defaults r1kit keeps different from TRL's -----------------------------------------------------------


def test_default_differences_table_matches_the_configs():
    classes = {"grpo": GRPOConfig, "sft": SFTConfig}
    for d in DEFAULT_DIFFERENCES:
        f = {f.name: f for f in dataclasses.fields(classes[d.trainer])}[d.key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert default == d.r1kit and d.r1kit != d.trl and d.why, d
    # the defaults that TRL shares are not listed
    keys = {(d.trainer, d.key) for d in DEFAULT_DIFFERENCES}
    for same in ("learning_rate", "beta", "loss_type", "num_generations", "num_iterations", "temperature"):
        assert ("grpo", same) not in keys
    for same in ("template", "completion_only_loss", "assistant_only_loss", "learning_rate", "num_train_epochs"):
        assert ("sft", same) not in keys
    assert SFTConfig(dataset_name="x").template == "none" and SFTConfig(dataset_name="x").completion_only_loss is None


def test_default_differences_are_noticed_once(monkeypatch, caplog):
    monkeypatch.setattr(trl_semantics, "_NOTICED", set())
    cfg = GRPOConfig(adam_beta2=0.999)
    with caplog.at_level(logging.INFO, logger="r1kit.trl"):
        said = notice_default_differences("grpo", cfg)
        assert notice_default_differences("grpo", cfg) == []  # once per process
    logged = [r for r in caplog.records if r.name == "r1kit.trl"]
    assert len(said) == len(logged) == len([d for d in DEFAULT_DIFFERENCES if d.trainer == "grpo"]) - 1
    assert not any("'adam_beta2'" in m for m in said)  # set to TRL's value: nothing to say
    monkeypatch.setattr(trl_semantics, "_NOTICED", set())  # num_train_epochs matters only without max_steps
    assert not any("'num_train_epochs'" in m for m in notice_default_differences("grpo", GRPOConfig(max_steps=3)))
    (lr,) = [m for m in said if "'max_completion_length'" in m]
    assert "'max_completion_length' is 256, r1kit's default; TRL's default is 512" in lr
    # with the keys the recipe gave, "left unset" is exact
    monkeypatch.setattr(trl_semantics, "_NOTICED", set())
    said = notice_default_differences("grpo", GRPOConfig(), given={"adam_beta2", "logging_steps"})
    assert not any("'adam_beta2'" in m or "'logging_steps'" in m for m in said) and said


def test_a_run_notices_its_defaults(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(trl_semantics, "_NOTICED", set())
    with caplog.at_level(logging.INFO, logger="r1kit.trl"):
        train(tiny_cfg(tmp_path, max_steps=1))
    said = [r.getMessage() for r in caplog.records if r.name == "r1kit.trl"]
    assert any("r1kit grpo: 'adam_beta2' is 0.99, r1kit's default; TRL's default is 0.999" in m for m in said)
