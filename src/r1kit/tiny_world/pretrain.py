"""Pretrain the tiny-world base model from scratch: corpus -> tokenizer -> Qwen2 -> save_pretrained.

    r1kit pretrain --config recipes/tiny-pretrain.yaml [--output_dir DIR] [--key value ...]
    python -m r1kit.tiny_world.pretrain --config recipes/tiny-pretrain.yaml [--key value ...]   (the same)

`PretrainConfig` is loaded like every command's config (`r1kit.config.load_config`: YAML recipe, then
`--key value` overrides, each coerced to the field's type, unknown keys named). `run_pretrain(PretrainConfig)`
returns the output folder, which holds the model and tokenizer
(`save_pretrained`), `metrics.jsonl` (one line per logged step: step, loss, lr, tokens, seconds),
`manifest.json` (config, corpus statistics, parameter count, wall time, the exact command) and a
`README.md` saying how to regenerate it. Deterministic in `seed` on a given machine and torch build
(unless `max_minutes` cuts the run short, which the manifest records).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass

from r1kit.config import field, load_config, split_config_flag
from r1kit.models import tiny
from r1kit.tiny_world.corpus import FORBIDDEN, CorpusMix, corpus_stats, generate_corpus


@dataclass
class PretrainConfig:
    """Everything that determines the tiny base model."""

    output_dir: str = field("runs/tiny-pretrain", "Folder to write the model, tokenizer, metrics and manifest to.")
    seed: int = field(0, "Seed for the corpus, the model initialisation and the data order.")
    corpus_docs: int = field(50_000, "Number of synthetic documents to generate.")
    corpus_mix: dict = field({}, "Overrides of r1kit.tiny_world.corpus.CorpusMix fields (behaviour mix of the corpus).")
    tokenizer_docs: int = field(20_000, "Documents used to train the tokenizer (a prefix of the corpus).")
    vocab_size: int = field(768, "Tokenizer vocabulary size (byte-level BPE, digits always split one per token).")
    context_length: int = field(512, "Training block length in tokens; documents are packed whole into blocks.")
    hidden_size: int = field(128, "Model width.")
    num_layers: int = field(4, "Number of transformer layers.")
    num_heads: int = field(4, "Attention heads.")
    num_kv_heads: int = field(4, "Key/value heads (grouped-query attention when smaller than num_heads).")
    intermediate_size: int = field(384, "MLP width.")
    max_position_embeddings: int = field(1024, "Largest position the saved config allows (RoPE, no parameters).")
    arch: str = field("qwen2", "transformers architecture: 'qwen2' or 'llama'.")
    batch_size: int = field(12, "Blocks per optimiser step.")
    max_steps: int = field(300, "Optimiser steps.")
    learning_rate: float = field(3e-3, "Peak learning rate (AdamW).")
    min_lr_ratio: float = field(0.1, "Final learning rate as a fraction of the peak (cosine decay).")
    warmup_steps: int = field(20, "Linear warm-up steps.")
    weight_decay: float = field(0.01, "AdamW weight decay.")
    grad_clip: float = field(1.0, "Gradient-norm clip (0 = off).")
    num_threads: int = field(2, "torch CPU threads (0 = leave torch's default).")
    log_every: int = field(10, "Log the loss every this many steps.")
    max_minutes: float = field(0.0, "Stop early after this many minutes (0 = no limit); recorded in the manifest.")

    def __post_init__(self):
        def need(cond, name, msg):
            if not cond:
                raise ValueError(f"PretrainConfig.{name}: {msg} (got {getattr(self, name)!r})")

        need(isinstance(self.output_dir, str) and self.output_dir, "output_dir", "must be a non-empty path")
        need(self.corpus_docs >= 1, "corpus_docs", "must be >= 1")
        need(1 <= self.tokenizer_docs, "tokenizer_docs", "must be >= 1")
        need(260 <= self.vocab_size <= 65536, "vocab_size", "must be in 260..65536 (256 bytes + specials)")
        need(16 <= self.context_length <= self.max_position_embeddings, "context_length",
             "must be >= 16 and <= max_position_embeddings")
        need(self.hidden_size >= 8 and self.hidden_size % self.num_heads == 0, "hidden_size",
             "must be >= 8 and divisible by num_heads")
        need(self.num_layers >= 1, "num_layers", "must be >= 1")
        need(self.num_heads >= 1, "num_heads", "must be >= 1")
        need(self.num_kv_heads >= 1 and self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
             "must be >= 1 and divide num_heads")
        need(self.intermediate_size >= 1, "intermediate_size", "must be >= 1")
        need(self.arch in ("qwen2", "llama"), "arch", "must be 'qwen2' or 'llama'")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.max_steps >= 1, "max_steps", "must be >= 1")
        need(self.learning_rate > 0, "learning_rate", "must be > 0")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        need(self.num_threads >= 0, "num_threads", "must be >= 0")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need(self.max_minutes >= 0, "max_minutes", "must be >= 0")
        need(isinstance(self.corpus_mix, dict), "corpus_mix", "must be a mapping of CorpusMix fields")
        known = {f.name for f in dataclasses.fields(CorpusMix)}
        bad = sorted(set(self.corpus_mix) - known)
        need(not bad, "corpus_mix", f"unknown keys {bad}; known: {sorted(known)}")


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE whose pre-tokenizer splits every digit into its own token, with the chat template."""
    return tiny.build_tokenizer(texts, vocab_size, chat_template=True, split_digits=True)


def pack_documents(token_docs: list[list[int]], block: int, pad_id: int) -> tuple[list[list[int]], int]:
    """Greedy packing of whole documents (each already ending in EOS) into blocks of `block` tokens.

    Every block starts at a document boundary, as a prompt does at generation time. Documents longer
    than a block are truncated. Returns (blocks padded with `pad_id`, number of real tokens).
    """
    blocks, cur, real = [], [], 0
    for ids in token_docs:
        ids = ids[:block]
        if len(cur) + len(ids) > block:
            blocks.append(cur + [pad_id] * (block - len(cur)))
            cur = []
        cur.extend(ids)
        real += len(ids)
    if cur:
        blocks.append(cur + [pad_id] * (block - len(cur)))
    return blocks, real


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("tiny_world", "pretrain.py")):
        argv = ["-m", "r1kit.tiny_world.pretrain"] + argv[1:]
    return " ".join(shlex.quote(a) for a in ["python"] + argv)


def run_pretrain(cfg: PretrainConfig, command: str | None = None) -> str:
    """Generate the corpus, train tokenizer and model, save everything to `cfg.output_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    t0 = time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    os.makedirs(cfg.output_dir, exist_ok=True)
    mix = CorpusMix(**cfg.corpus_mix)
    docs, metas = generate_corpus(cfg.corpus_docs, cfg.seed, mix, return_meta=True)
    for d in docs[:2000]:
        assert not any(f in d for f in FORBIDDEN), "corpus must not contain the R1-Zero template"
    stats = corpus_stats(docs, metas)
    stats["mix"] = dataclasses.asdict(mix)
    t_corpus = time.time() - t0

    tokenizer = build_tokenizer(docs[: cfg.tokenizer_docs], cfg.vocab_size)
    enc = tokenizer(docs, add_special_tokens=False)["input_ids"]
    token_docs = [ids + [tokenizer.eos_token_id] for ids in enc]
    blocks, real_tokens = pack_documents(token_docs, cfg.context_length, tokenizer.pad_token_id)
    stats["tokens"] = real_tokens
    stats["blocks"] = len(blocks)
    data = torch.tensor(blocks, dtype=torch.long)
    t_tok = time.time() - t0 - t_corpus

    config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[cfg.arch]
    mconf = config_cls(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(mconf)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    model.train()

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        prog = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))

    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(data), generator=gen)
    pos = 0
    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    t_train0 = time.time()
    stopped_early = False
    running = None
    step = 0
    with open(metrics_path, "w") as mf:
        for step in range(cfg.max_steps):
            if pos + cfg.batch_size > len(order):
                order = torch.randperm(len(data), generator=gen)
                pos = 0
            idx = order[pos: pos + cfg.batch_size]
            pos += cfg.batch_size
            x = data[idx]
            mask = (x != tokenizer.pad_token_id).long()
            labels = x.masked_fill(mask == 0, -100)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            # Blocks are right-padded after whole documents, so plain causal attention without a mask
            # is exact for every real token (and takes the fast attention path).
            out = model(input_ids=x, labels=labels)
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss = out.loss.item()
            running = loss if running is None else 0.9 * running + 0.1 * loss
            if step % cfg.log_every == 0 or step == cfg.max_steps - 1:
                rec = {"step": step + 1, "loss": round(loss, 5), "loss_ema": round(running, 5),
                       "lr": lr_at(step), "tokens": int(mask.sum()) * (step + 1),
                       "seconds": round(time.time() - t_train0, 2)}
                mf.write(json.dumps(rec) + "\n")
                mf.flush()
                print(json.dumps(rec), flush=True)
            if cfg.max_minutes and time.time() - t_train0 > 60 * cfg.max_minutes:
                stopped_early = True
                break

    model.eval()
    model.save_pretrained(cfg.output_dir)
    tokenizer.save_pretrained(cfg.output_dir)
    wall = time.time() - t0
    manifest = {
        "command": command or _command_line(),
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "parameters": n_params,
        "corpus": stats,
        "steps_done": step + 1,
        "stopped_early": stopped_early,
        "final_loss_ema": running,
        "seconds": {"corpus": round(t_corpus, 1), "tokenize": round(t_tok, 1),
                    "train": round(time.time() - t_train0, 1), "total": round(wall, 1)},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    with open(os.path.join(cfg.output_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    with open(os.path.join(cfg.output_dir, "README.md"), "w") as f:
        f.write(_readme(manifest))
    return cfg.output_dir


def _readme(m: dict) -> str:
    c = m["corpus"]
    return f"""# r1kit tiny-base

A {m['parameters'] / 1e6:.2f}M-parameter {m['config']['arch']} model pretrained from scratch by
`r1kit.tiny_world.pretrain` on a synthetic arithmetic corpus (the r1kit "tiny world"). It has never seen
the R1-Zero template; see `r1kit/tiny_world/corpus.py` for what the corpus contains.

Regenerate (seed {m['seed']}, {m['seconds']['total']:.0f} s here on {m['threads']} CPU threads):

    {m['command']}

Corpus: {c['documents']} documents, {c.get('tokens', '?')} tokens; worked solutions {c['frac_worked']:.0%}
of answered documents (accuracy {c['acc_worked']:.0%}; with a self-check {c['acc_worked_with_check']:.0%}),
direct answers accuracy {c['acc_direct']:.0%}, Russian steps in {c['frac_russian']:.1%} of documents,
<think>/<answer> tags in {c['frac_tags']:.1%}. Steps: {m['steps_done']}, final loss (EMA) {m['final_loss_ema']:.4f}.
Full configuration and statistics: `manifest.json`; losses: `metrics.jsonl`.
"""


def main(argv: list[str] | None = None) -> str:
    """`python -m r1kit.tiny_world.pretrain [--config recipe.yaml] [--key value ...]`: as `r1kit pretrain`."""
    path, overrides = split_config_flag(list(sys.argv[1:] if argv is None else argv))
    out = run_pretrain(load_config(PretrainConfig, path, overrides))
    print(out)
    return out


if __name__ == "__main__":
    main()
