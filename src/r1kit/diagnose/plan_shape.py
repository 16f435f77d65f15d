"""The planner's view of a model: its sizes, read from the model's config alone (no weights loaded).

`model_shape(name_or_path, dtype)` reads the config of a saved folder, a hub id, a `.gguf` file or a
shipped/built r1kit model, builds the model on the `meta` device (shapes only, no memory) and counts
what the planner needs: parameters (tied embeddings once), the embedding and LM-head sizes, the
largest decoder layer (one FSDP2 unit), and every linear layer's (in, out) so LoRA's trainable count
is exact for any `target_modules`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from r1kit.models.lean_mlp import leanable
from r1kit.models.loading import TINY_PREFIX, ModelLoadError, shipped_model_path

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ModelShape:
    """Sizes of a causal LM, as the memory and FLOP formulas use them."""

    name: str
    model_type: str
    params: int                 # all parameters, tied embeddings counted once
    vocab: int
    hidden: int                 # d
    intermediate: int           # I (MLP width)
    layers: int                 # L
    heads: int                  # H (query heads)
    kv_heads: int               # KV heads (grouped-query attention: KV < H)
    head_dim: int               # hd
    tied: bool = True           # input embedding shared with the LM head
    largest_layer: int = 0      # parameters of the biggest decoder layer (an FSDP2 unit)
    linears: list[tuple[str, int, int]] = field(default_factory=list)  # (module name, in, out); LM head excluded
    dtype: str | None = None    # the checkpoint's dtype (what dtype=auto loads), when the config names one
    source: str = "folder"      # folder | hub | gguf | built
    file_bytes: int = 0         # size of the weights file(s) read at load (GGUF, safetensors)
    lean_mlp: bool = False      # gated SiLU MLPs the trainer runs with models.lean_mlp (2, not 4, [token, I] saved)

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden

    @property
    def body(self) -> int:
        """Parameters that multiply every token (decoder layers + final norm): params minus embedding
        (and minus an untied LM head)."""
        return self.params - self.embedding * (1 if self.tied else 2)

    def wrapped(self, targets="all-linear") -> list[tuple[str, int, int]]:
        """The linear layers LoRA wraps: "all-linear" (peft: every linear layer but the LM head) or module
        names, matched as peft does (the full name, or its last dotted parts)."""
        if isinstance(targets, str) and targets.lower() == "all-linear":
            return list(self.linears)
        keys = [targets] if isinstance(targets, str) else list(targets)
        return [lin for lin in self.linears if any(lin[0] == k or lin[0].endswith("." + k) for k in keys)]

    def lora_params(self, r: int, targets="all-linear") -> int:
        """Trainable parameters of LoRA rank r: r x (in + out) per wrapped linear layer."""
        return sum(r * (i + o) for _, i, o in self.wrapped(targets)) if r > 0 else 0


def from_model(model, name: str, source: str = "built", file_bytes: int = 0) -> ModelShape:
    """Count a (meta or real) transformers causal LM."""
    import torch

    cfg = model.config
    text = getattr(cfg, "text_config", None) or cfg
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    out_emb = model.get_output_embeddings()
    linears = [(n, m.in_features, m.out_features) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not out_emb]
    layers = _decoder_layers(model)
    dtype = getattr(cfg, "dtype", None) if hasattr(cfg, "dtype") else getattr(cfg, "torch_dtype", None)
    return ModelShape(
        name=name, model_type=str(getattr(cfg, "model_type", "?")),
        params=sum(p.numel() for p in model.parameters()),
        vocab=int(model.get_input_embeddings().weight.shape[0]), hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
        layers=len(layers) or int(text.num_hidden_layers), heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        tied=out_emb is None or out_emb.weight is model.get_input_embeddings().weight,
        largest_layer=max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0),
        linears=linears, dtype=str(dtype).replace("torch.", "") if dtype is not None else None,
        source=source, file_bytes=file_bytes, lean_mlp=any(leanable(mod) for mod in model.modules()))


def _decoder_layers(model) -> list:
    """The repeated blocks: the largest ModuleList (as r1kit's FSDP2 wrapping picks them)."""
    import torch

    best: list = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > len(best):
            best = list(mod)
    return best


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) or \
        sum(p.stat().st_size for p in folder.glob("*.bin"))


def model_shape(name_or_path: str, trust_remote_code: bool = False) -> ModelShape:
    """The shape of the model `load_model_and_tokenizer` would load, from its config alone.

    `r1kit:tiny*` models are built (a few hundred thousand parameters, under a second); everything
    else is a config read (a folder's config.json, a hub id's, or a GGUF file's metadata) and a model
    built on the meta device, which allocates no memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shipped = shipped_model_path(name_or_path)
    if shipped is None and name_or_path.startswith(TINY_PREFIX):
        from r1kit.models.tiny import build_tiny

        model, _ = build_tiny(chat_template=name_or_path.endswith("-chat"))
        return from_model(model, name_or_path, "built")
    path = Path(os.path.expanduser(shipped or name_or_path))
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    source, file_bytes, where = "hub", 0, str(path)
    if path.is_file() and path.suffix == ".gguf":
        kwargs["gguf_file"], where, source, file_bytes = path.name, str(path.parent), "gguf", path.stat().st_size
    elif path.is_dir() and not (path / "config.json").is_file() and len(list(path.glob("*.gguf"))) == 1:
        gguf = next(path.glob("*.gguf"))
        kwargs["gguf_file"], source, file_bytes = gguf.name, "gguf", gguf.stat().st_size
    elif path.is_dir():
        source, file_bytes = "folder", _weights_bytes(path)
    else:
        where = name_or_path
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{name_or_path}: cannot read the model's config ({e})") from e
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    shape = from_model(model, name_or_path, source, file_bytes)
    if source == "gguf":
        shape.dtype = None  # a GGUF holds quantised blocks; dtype=auto dequantises to float32
    return shape
