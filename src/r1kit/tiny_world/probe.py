"""Measure a base model the way the demo will: R1-Zero template, sampling at T=0.6, top-p 0.95.

    python -m r1kit.tiny_world.probe [--model PATH] [--task arithmetic] [--n 100] [--k 4]

Reports pass@1 (lenient extraction: the <answer> content if present, else the last number),
the share of worked (step-by-step) outputs and the accuracy of worked vs direct outputs, mean
completion length in tokens, reflection-phrase rate, second-script (Cyrillic) rate and how often
the model writes <answer>.
"""

from __future__ import annotations

import argparse
import json
import re
import time

from r1kit.data.templates import render_prompt

# the probe's own (older, word-bounded) reflection phrases: its numbers in assets/tiny-base/probe.json were
# measured with them; training and evaluation use r1kit.rewards.reflection
REFLECTION_RE = re.compile(r"\b(wait|let me check|double-check|check again|re-check|recheck)\b|проверим|подожди",
                           re.IGNORECASE)
CYRILLIC_RE = re.compile(r"[\u0400-\u04FF]")


def is_worked(text: str) -> bool:
    """A completion counts as worked (step-by-step) when it writes at least two equations."""
    return text.count("=") >= 2


def sample_completions(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, temperature: float,
                       top_p: float, seed: int, batch_size: int = 64) -> list[tuple[str, int]]:
    """k samples per prompt (prompt-major order): (text, number of completion tokens)."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    flat = [p for p in prompts for _ in range(k)]
    out: list[tuple[str, int]] = []
    for i in range(0, len(flat), batch_size):
        chunk = flat[i: i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        for row in new:
            ids = row.tolist()
            n = len(ids)
            for j, t in enumerate(ids):
                if t == tokenizer.eos_token_id:
                    n = j + 1
                    break
                if t == tokenizer.pad_token_id:
                    n = j
                    break
            out.append((tokenizer.decode(ids[:n], skip_special_tokens=True), n))
    return out


def measure_base_model(model_path: str | None = None, task: str = "arithmetic", n: int = 100, k: int = 4,
                       max_new_tokens: int = 200, temperature: float = 0.6, top_p: float = 0.95, seed: int = 0,
                       num_threads: int = 2, task_kwargs: dict | None = None, return_samples: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1kit.tasks import extract_answer, get_task

    from . import TINY_BASE_PATH

    if num_threads:
        torch.set_num_threads(num_threads)
    path = model_path or TINY_BASE_PATH
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    t = get_task(task, **(task_kwargs or {}))
    rows = t.dataset("test", n, seed=seed)
    prompts = [render_prompt(r["prompt"], None, "r1_zero") for r in rows]
    t0 = time.time()
    comps = sample_completions(model, tok, prompts, k, max_new_tokens, temperature, top_p, seed)
    secs = time.time() - t0
    scores, worked, lengths = [], [], []
    refl = cyr = ans_tag = fmt = 0
    per_prompt_correct = []
    for i, (text, ntok) in enumerate(comps):
        row = rows[i // k]
        s = t.score(text, row)
        scores.append(s)
        worked.append(is_worked(text))
        lengths.append(ntok)
        refl += bool(REFLECTION_RE.search(text))
        cyr += bool(CYRILLIC_RE.search(text))
        ans_tag += "<answer>" in text
        fmt += bool(re.search(r"<think>.*</think>\s*<answer>.*</answer>", text, re.DOTALL))
    for i in range(len(rows)):
        per_prompt_correct.append(sum(scores[i * k:(i + 1) * k]) / k)
    N = max(1, len(comps))
    w = [s for s, x in zip(scores, worked) if x]
    d = [s for s, x in zip(scores, worked) if not x]
    res = {
        "model": path, "task": task, "n_prompts": len(rows), "k": k,
        "pass@1": sum(scores) / N,
        "worked_rate": sum(worked) / N,
        "acc_worked": (sum(w) / len(w)) if w else None,
        "acc_direct": (sum(d) / len(d)) if d else None,
        "mean_response_length": sum(lengths) / N,
        "mean_length_worked": (sum(l for l, x in zip(lengths, worked) if x) / len(w)) if w else None,
        "mean_length_direct": (sum(l for l, x in zip(lengths, worked) if not x) / len(d)) if d else None,
        "reflection_rate": refl / N,
        "language_mixing_rate": cyr / N,
        "answer_tag_rate": ans_tag / N,
        "format_rate": fmt / N,
        "frac_prompts_all_wrong": sum(c == 0 for c in per_prompt_correct) / max(1, len(rows)),
        "frac_prompts_all_right": sum(c == 1 for c in per_prompt_correct) / max(1, len(rows)),
        "sampling_seconds": round(secs, 1),
        "extracted_example": extract_answer(comps[0][0]) if comps else None,
    }
    if return_samples:
        res["samples"] = [{"prompt": rows[i // k]["prompt"], "solution": rows[i // k]["solution"], "text": c[0]}
                          for i, c in enumerate(comps)]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max_new_tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=0, help="print this many samples")
    args = ap.parse_args(argv)
    res = measure_base_model(args.model, args.task, args.n, args.k, args.max_new_tokens, seed=args.seed,
                             return_samples=args.show > 0)
    samples = res.pop("samples", [])
    for s in samples[: args.show]:
        print(repr(s["prompt"]), s["solution"], "->", repr(s["text"]))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
