"""The training pass alone (forward + backward of the completion log-probs), r1kit's paths side by side.

On one micro-batch shaped like a grid cell (bench_grid.py: the cell's real prompts, left-padded, under its
template; random completion tokens of the full length), interleaved repeats of:

  auto     r1kit's default: "shared" or "unmasked", whichever its FLOP estimate finds cheaper, and the
           LM head fused into the log-softmax where the logits would be big (`fuse_pays`)
  fused    auto's path with the head always fused (log-probs from the hidden states, no [b, T, V] logits)
  shared   each group's prompt runs once with a KV cache, the completions on top of it
  unmasked rows of equal prompt length without an attention mask (the kernel skips above the diagonal)
  plain    one masked forward over [prompt | completion]
           (shared / unmasked / plain: log-probs and entropy from the logits by the chunked selective
           log-softmax, algo/logprobs.py)
  hf       TRL's recipe: one forward over [prompt | completion] keeping T+1 logits, then a full fp32
           log_softmax + gather and the entropy from a full softmax

and prints each one's median seconds per micro-batch (forward, backward, both) and the ratios to
`plain`: a trick is kept only where it is not slower than the plain path.

    python bench/bench_train_pass.py                        # tiny and SmolLM2, every cell
    python bench/bench_train_pass.py --models tiny --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_grpo_vs_trl import PROMPTS, common_rows, prepare_model  # noqa: E402

# model -> (workload folder, micro-batch rows, completions per prompt): as the grid's cells train
SHAPES = {"tiny": ("tiny", 16, 8), "smollm2": ("smollm2-small", 4, 4)}


def make_batch(tokenizer, prompt: str, completion: int, rows: int, group: int, vocab: int):
    from r1kit.train.batch import collate

    texts, _ = common_rows(rows // group, tokenizer, prompt)
    g = torch.Generator().manual_seed(0)
    pids = [tokenizer(t).input_ids for t in texts for _ in range(group)]
    cids = [torch.randint(3, vocab - 1, (completion,), generator=g).tolist() for _ in range(rows)]
    return collate(pids, cids, tokenizer.pad_token_id or 0)


def hf_logps(model, batch):
    """TRL's way: full forward, T+1 logits, full-vocabulary fp32 log_softmax, entropy from the softmax."""
    T = batch.input_ids.shape[1] - batch.prompt_len
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=T + 1)
    logits = out.logits[:, :-1, :].float()  # [B, T, V]
    logp = torch.log_softmax(logits, dim=-1)  # [B, T, V]
    picked = logp.gather(-1, batch.input_ids[:, -T:, None]).squeeze(-1)  # [B, T]
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)  # [B, T]
    return picked, entropy


def time_variant(model, batch, variant: str) -> tuple[float, float]:
    from r1kit.train.batch import completion_logps

    t0 = time.perf_counter()
    if variant == "hf":
        lp, _ = hf_logps(model, batch)
    elif variant in ("auto", "fused"):
        lp, _ = completion_logps(model, batch, 1.0, with_entropy=True, path="auto", head=variant)
    else:
        lp, _ = completion_logps(model, batch, 1.0, with_entropy=True, path=variant, head="logits")
    t1 = time.perf_counter()
    (lp * batch.completion_mask).sum().backward()
    t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    ap.add_argument("--prompts", nargs="+", choices=sorted(PROMPTS), default=["short", "r1"])
    ap.add_argument("--completions", nargs="+", type=int, default=[64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per variant (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1kit.train.batch import _checkpointed_layers, _prompt_groups, choose_path

    variants = ["auto", "fused", "shared", "unmasked", "plain", "hf"]
    print("| model | prompt | completion | rows | auto picks | " + " | ".join(f"{v} s (fwd + bwd)" for v in variants)
          + " | auto / plain | best / plain | hf / plain |")
    print("|---" * (len(variants) + 8) + "|")
    for name in args.models:
        workload, rows, group = SHAPES[name]
        folder = prepare_model(workload)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model.train()
        tok = AutoTokenizer.from_pretrained(folder)
        for prompt in args.prompts:
            for completion in args.completions:
                batch = make_batch(tok, prompt, completion, rows, group, model.config.vocab_size)
                times: dict[str, list] = {}
                warm = completion < 1024 or name == "tiny"  # SmolLM2 at 1024 tokens: no warm-up round (minutes)
                repeats = args.repeats if warm else 1
                for r in range(repeats + warm):
                    if warm and r == 1:  # drop the warm-up round
                        times = {v: [] for v in variants}
                    for v in (variants if r % 2 == 0 else variants[::-1]):
                        times.setdefault(v, []).append(time_variant(model, batch, v))
                tot = {v: statistics.median(f + b for f, b in times[v]) for v in variants}
                fwd = {v: statistics.median(f for f, _ in times[v]) for v in variants}
                cells = " | ".join(f"{tot[v]:.3f} ({fwd[v]:.3f} + {tot[v] - fwd[v]:.3f})" for v in variants)
                P = batch.prompt_len
                picked = choose_path(model, batch.attention_mask, P, completion,
                                     _prompt_groups(batch.input_ids[:, :P], batch.attention_mask[:, :P]),
                                     _checkpointed_layers(model))
                best = min(tot[v] for v in ("shared", "unmasked", "plain"))
                print(f"| {name} | {prompt} (~{P}) | {completion} | {rows} | {picked} | {cells} | "
                      f"**{tot['auto'] / tot['plain']:.2f}x** | {best / tot['plain']:.2f}x | "
                      f"{tot['hf'] / tot['plain']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
