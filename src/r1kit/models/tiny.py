"""Tiny, locally built tokenizers and models: no download, seconds to build.

Used by the tests, the benchmarks and the embedded default run. The tokenizer is a byte-level BPE
trained with `tokenizers` on a small corpus, so any text round-trips; the model is a randomly
initialised transformers Qwen2 (or Llama) that every tool can load.
"""

from __future__ import annotations

from typing import Iterable

DEFAULT_CORPUS = [
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>.",
    "<think> 12 + 30 = 42 </think> <answer> 42 </answer>",
    "What is 17 * 3? Let me think step by step. 17 * 3 = 51. The answer is 51.",
    "Compute 245 - 78. 245 - 78 = 167. Wait, let me check: 167 + 78 = 245. Yes.",
    "User: What is 9 + 8? Assistant: <think> 9 + 8 = 17 </think> <answer> 17 </answer>",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = ( ) . , ? !",
]

EOS = "<|endoftext|>"
PAD = "<|pad|>"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 300, chat_template: bool = False,
                    split_digits: bool = False):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a transformers fast tokenizer.

    The vocabulary is the 256 byte symbols, two special tokens (EOS, PAD) and merges up to
    `vocab_size`. With `chat_template=True` a minimal chat template is attached; with
    `split_digits=True` every digit is its own token (the tiny-world base model's tokenizer).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) if texts is not None else DEFAULT_CORPUS * 20, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None, padding_side="left")
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    arch: str = "qwen2",
    tie_word_embeddings: bool = True,
    seed: int = 0,
):
    """A randomly initialised causal LM sized for `tokenizer` (Qwen2 or Llama architecture)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny(out_dir: str | None = None, seed: int = 0, chat_template: bool = False, **model_kwargs):
    """Build a tiny tokenizer + model; save both to `out_dir` (save_pretrained) when given."""
    tokenizer = build_tokenizer(chat_template=chat_template)
    model = build_model(tokenizer, seed=seed, **model_kwargs)
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer
