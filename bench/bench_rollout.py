"""Rollout throughput: r1kit's HF engine vs `model.generate` on a tiny model (or SmolLM2-135M).

Setup (the issue's): 4.27M-param Qwen2 (hidden 256, 4 layers, 4 heads, tied embeddings) on the tiny
~300-token byte-level BPE tokenizer; batch 64 = 8 prompts x n=8; 64 new tokens; temperature 1;
EOS disabled on both sides so both generate exactly 64 x 64 tokens; 2 torch threads by default.
Prompts (`--prompts`): `short` (8 short strings, 4-26 tokens) or `r1` (8 `r1kit:arithmetic` problems
in the R1-Zero template, as a GRPO step sees them: ~240 tokens each with this tokenizer).
`--model smollm2`: SmolLM2-135M-Instruct (the GGUF dequantised to fp32, as bench_grpo_vs_trl.py prepares
it), with its own tokenizer. "engine (unpacked)" is the same engine with `pack_weights=False` (every decode
step multiplies by the modules' own weights instead of oneDNN-packed copies; rollout/packed_linear.py).
Runs are interleaved (generate, generate+logprobs, engine, ...) and medians are reported. The
"linear-only floor" runs just the model's linear layers for the same B x M tokens (no attention, no
sampling) through the modules' own F.linear: what a decode loop on unpacked weights cannot remove (the
packed engine can pass it: its matmuls are faster than these).
Wall-clock timings with 2 threads are only meaningful on an otherwise idle machine.

    python bench/bench_rollout.py [--repeats 7] [--threads 2] [--device cpu|cuda] [--backend auto|hf] [--prompts short|r1]
    python bench/bench_rollout.py --model smollm2 --n 4 --prompt-count 2 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from r1kit.models.tiny import build_model, build_tokenizer
from r1kit.rollout import SamplingParams, make_engine

PROMPTS = [
    "What is 17 * 3?",
    "Compute 245 - 78.",
    "User: What is 9 + 8? Assistant:",
    "A conversation between User and Assistant.",
    "<think> 12 + 30 =",
    "0 1 2 3 4 5",
    "Let me think step by step.",
    "The answer is",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--prompts", choices=("short", "r1"), default="short")
    ap.add_argument("--prompt-count", type=int, default=8, help="how many of the 8 prompts to use")
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the linear-layers-only floor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.model == "smollm2":
        from bench_grpo_vs_trl import prepare_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = prepare_model("smollm2")
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"  # for model.generate's batch
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        tok = build_tokenizer()
        model = build_model(tok, hidden_size=256, num_layers=4, num_heads=4, tie_word_embeddings=True)
    model.to(args.device).eval()
    model.generation_config.eos_token_id = None  # no EOS: both sides produce exactly `new` tokens
    n_params = sum(p.numel() for p in model.parameters())
    if args.prompts == "r1":
        from r1kit.data.templates import render_prompt
        from r1kit.tasks import get_task

        texts = [render_prompt(r["prompt"]) for r in get_task("arithmetic").dataset("train", 8, seed=0)]
    else:
        texts = PROMPTS
    prompts = [tok(p).input_ids for p in texts[: args.prompt_count]]
    B, M = len(prompts) * args.n, args.new

    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    ids = enc.input_ids.repeat_interleave(args.n, 0).to(args.device)
    am = enc.attention_mask.repeat_interleave(args.n, 0).to(args.device)
    gen_kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=M, min_new_tokens=M,
                  pad_token_id=tok.pad_token_id)
    engine = make_engine("hf", model, tok, backend=args.backend, eos_token_ids=())
    unpacked = make_engine("hf", model, tok, backend=args.backend, eos_token_ids=(), pack_weights=False)
    params = SamplingParams(n=args.n, max_new_tokens=M, temperature=1.0, seed=0)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_generate():
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=am, **gen_kw)
        assert out.shape == (B, ids.shape[1] + M)

    def run_generate_lp():
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=am, output_scores=True,
                                 return_dict_in_generate=True, **gen_kw)
            lp = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        assert lp.shape == (B, M)

    def run_engine(eng=engine):
        outs = eng.generate(prompts, params)
        assert len(outs) == B and all(len(c.completion_ids) == M for c in outs)

    x = torch.randn(B, model.config.hidden_size, device=args.device)

    def run_floor():  # only the model's linear layers for the same B x M tokens: no decode loop beats this
        with torch.inference_mode():
            for _ in range(M):
                for layer in model.model.layers:
                    a, mlp = layer.self_attn, layer.mlp
                    a.q_proj(x), a.k_proj(x), a.v_proj(x), a.o_proj(x)
                    mlp.down_proj(mlp.gate_proj(x) * mlp.up_proj(x))
                model.lm_head(x)

    runs = {"generate": run_generate, "generate+logprobs": run_generate_lp, "engine": run_engine,
            "engine (unpacked)": lambda: run_engine(unpacked)}
    if args.floor:
        runs["linear-only floor"] = run_floor
    times = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)

    print(f"model: {model.config.model_type} {n_params / 1e6:.2f}M params, vocab {len(tok)}; batch {B} ({len(prompts)} prompts x n={args.n}), "
          f"{M} new tokens, prompts {args.prompts} ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), T=1, device {args.device}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:>18}: median {med[k] * 1e3:8.1f} ms  ({B * M / med[k]:9.0f} tok/s)  "
              f"min {min(v) * 1e3:.1f} ms  max {max(v) * 1e3:.1f} ms")
    print(f"ratio engine/generate tok/s:           {med['generate'] / med['engine']:.2f}x")
    print(f"ratio engine/generate+logprobs tok/s:  {med['generate+logprobs'] / med['engine']:.2f}x")
    print(f"ratio engine/engine (unpacked) tok/s:  {med['engine (unpacked)'] / med['engine']:.2f}x")


if __name__ == "__main__":
    main()
