"""`r1kit sample`: rejection sampling and data generation (DeepSeek-R1 §2.3.3).

k samples per prompt from a model through the rollout engine, scored by `reward_funcs`; a sample is
kept when it passes, in this order (the first failing check is the one counted in `stats.json`):
  unverified       the `verify_reward` value is missing or below `min_reward` (default: accuracy == 1;
                   for tasks without rules name a reward model, e.g. `rm:runs/rm?segment=answer`)
  truncated        the completion hit max_completion_length (SFT would teach EOS after a cut answer)
  mixed_language   the chain of thought's share of `language` words is below `min_language_share`
  long_paragraph   a paragraph (blank-line separated) is longer than `max_paragraph_chars`
  code_block       the chain of thought holds a ``` fence
  contaminated     prompt or completion shares a `decontamination_ngram`-gram of word tokens with an
                   evaluation item (texts shorter than n tokens, but at least
                   `decontamination_min_tokens`, must appear whole)
  duplicate        the same normalised completion text was already kept for this prompt
  over_max_per_prompt  the prompt already has `max_per_prompt` kept samples
Outputs in `output_dir`: `samples.jsonl` and/or `samples.parquet`, `stats.json`, optionally
`rejected.jsonl`. Each row: `prompt` (the RAW dataset prompt) and `completion` (the generated text),
which `r1kit sft` reads as prompt/completion data; train it with the same `template` (and
`system_prompt`) as recorded in each row and in stats.json, and SFT renders exactly the context the
sample was drawn from (the completion gets EOS appended, as the model ended it). Provenance per row:
model path and weight hash, sampling parameters, dataset/prompt id/row index, sample index, reward
values per function, filter verdicts (`filters`: verified, complete, one_language, short_paragraphs,
no_code_block, decontaminated, unique; True = passed), finish reason and token count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from r1kit.config import described, field, to_dict
from r1kit.data.templates import is_conversation, is_template, render_prompt, template_choices, template_help
from r1kit.rollout.base import ENGINES
from r1kit.utils.io import finite_or_none, write_jsonl

log = logging.getLogger("r1kit.sample")

DROP_REASONS = ("unverified", "truncated", "mixed_language", "long_paragraph", "code_block", "contaminated",
                "duplicate", "over_max_per_prompt")
# filter verdicts in each row: True = the sample passed that check
VERDICTS = {"unverified": "verified", "truncated": "complete", "mixed_language": "one_language",
            "long_paragraph": "short_paragraphs", "code_block": "no_code_block", "contaminated": "decontaminated"}
_TOKEN = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass
class SampleConfig:
    # ---- model and data ----
    model_name_or_path: str = field("r1kit:tiny", help="Model folder, hub id, .gguf file or r1kit:tiny to sample from.")
    tokenizer_name_or_path: str | None = field(None, help="Tokenizer to use when it differs from the model's.")
    dtype: str = field("auto", help="auto, float32, bfloat16 or float16.")
    dataset_name: str = field("r1kit:arithmetic", help="Prompts: hub id, local folder, .jsonl/.parquet file, or r1kit:TASK.")
    dataset_config: str | None = field(None, help="Hub dataset configuration name.")
    dataset_split: str = field("train", help="Split to sample prompts from.")
    dataset_prompt_column: str = field("prompt", help="Column holding the prompt (a string or chat messages).")
    dataset_answer_column: str = field("solution", help="Column holding the reference answer.")
    dataset_num_rows: int | None = field(None, help="Use only this many prompts (procedural tasks: how many to generate).")
    template: str = field("r1_zero", help=f"{template_help(custom=True)}; use the same one for r1kit sft.")
    system_prompt: str | None = field(None, help="System message for template: chat.")
    # ---- generation ----
    rollout_engine: str = field("hf", help=f"Rollout backend: {described(ENGINES)}.")
    rollout_engine_kwargs: dict = field({}, help="Options for the engine (see r1kit grpo --help).")
    num_samples: int = field(4, help="Samples per prompt (k).")
    prompts_per_batch: int = field(32, help="Prompts per generation call (each with num_samples samples).")
    max_completion_length: int = field(512, help="Maximum new tokens per sample.")
    temperature: float = field(0.6, help="Sampling temperature (the paper's evaluation setting: 0.6).")
    top_p: float = field(0.95, help="Nucleus sampling threshold.")
    top_k: int = field(0, help="Top-k sampling; 0 disables it.")
    stop_strings: list[str] | None = field(None, help="Generation stops after any of these strings (e.g. </answer>).")
    seed: int = field(0, help="Seed of the procedural prompts and of sampling.")
    # ---- verification ----
    reward_funcs: list[str] = field(["accuracy"], help="Rewards recorded per sample: names, import paths, or rm:PATH?segment=answer.")
    reward_weights: list[float] | None = field(None, help="Weights for the recorded reward_total (default: all 1).")
    verify_reward: str | None = field(None, help="The reward_funcs entry a sample must pass (default: accuracy if listed, else the first); 'total' = the weighted sum.")
    min_reward: float = field(1.0, help="Keep a sample when its verify_reward value is >= this.")
    reward_timeout_s: float | None = field(None, help="Per-row deadline for reward functions, run in a killable worker.")
    # ---- the paper's filters ----
    drop_truncated: bool = field(True, help="Drop samples cut by max_completion_length.")
    language: str = field("en", help="Target language of the chain of thought (code, name or script).")
    min_language_share: float | None = field(1.0, help="Drop a sample whose CoT has a smaller share of target-language words (null: off).")
    max_paragraph_chars: int | None = field(3000, help="Drop a sample with a paragraph longer than this (null: off).")
    filter_code_blocks: bool = field(True, help="Drop a sample whose chain of thought holds a ``` code fence.")
    dedup: bool = field(True, help="Keep one copy of each normalised completion per prompt.")
    max_per_prompt: int | None = field(None, help="Keep at most this many samples per prompt (null: all).")
    decontamination_datasets: list[str] = field([], help="Evaluation sets to decontaminate against: r1kit:TASK (its test split) or local files.")
    decontamination_columns: list[str] = field(["prompt", "problem", "question", "solution", "answer"], help="Their text columns to match.")
    decontamination_ngram: int = field(13, help="n of the shared word-token n-grams that mark a sample contaminated.")
    decontamination_min_tokens: int = field(5, help="Evaluation texts shorter than n tokens are matched whole if they have at least this many.")
    decontamination_num_rows: int = field(200, help="Rows of each r1kit:TASK test split (r1kit eval's default).")
    decontamination_seed: int = field(0, help="Seed of the r1kit:TASK test rows (r1kit eval's default).")
    # ---- outputs ----
    output_dir: str = field("outputs/sample", help="Where samples, stats.json and rejected.jsonl go.")
    output_format: list[str] = field(["jsonl"], help="jsonl and/or parquet.")
    write_rejected: bool = field(False, help="Also write rejected.jsonl (every dropped sample with its verdicts).")

    def __post_init__(self):
        def need(cond: bool, name: str, msg: str):
            if not cond:
                raise ValueError(f"'{name}' {msg}, got {getattr(self, name)!r}")

        need(is_template(self.template, custom=True), "template", f"must be {template_choices(custom=True)}")
        need(self.num_samples >= 1, "num_samples", "must be >= 1")
        need(self.prompts_per_batch >= 1, "prompts_per_batch", "must be >= 1")
        need(self.max_completion_length >= 1, "max_completion_length", "must be >= 1")
        need(len(self.reward_funcs) >= 1, "reward_funcs", "must name at least one reward function")
        need(self.reward_weights is None or len(self.reward_weights) == len(self.reward_funcs), "reward_weights",
             "must have one weight per reward function")
        need(self.verify_reward is None or self.verify_reward in ("total", *self.reward_funcs), "verify_reward",
             f"must be 'total' or one of reward_funcs {self.reward_funcs}")
        need(self.max_per_prompt is None or self.max_per_prompt >= 1, "max_per_prompt", "must be >= 1")
        need(self.decontamination_ngram >= 1, "decontamination_ngram", "must be >= 1")
        need(bool(self.output_format) and set(self.output_format) <= {"jsonl", "parquet"}, "output_format",
             "must list jsonl and/or parquet")


# ---- filters: True = drop ----------------------------------------------------------------------


def is_mixed_language(text: str, scripts, min_share: float | None) -> bool:
    from r1kit.rewards.language import chain_of_thought, language_share

    return min_share is not None and language_share(chain_of_thought(text), scripts) < min_share


def has_long_paragraph(text: str, max_chars: int | None) -> bool:
    return max_chars is not None and any(len(p.strip()) > max_chars for p in _PARAGRAPH_BREAK.split(text))


def has_code_block(text: str) -> bool:
    from r1kit.rewards.language import chain_of_thought

    return "```" in chain_of_thought(text)


def normalize(text: str) -> str:
    """Dedup key: lower case, whitespace collapsed."""
    return " ".join(text.lower().split())


def word_tokens(text: str) -> list[str]:
    """Lower-cased words and single punctuation/symbol marks ("12 + 30?" -> 12, +, 30, ?)."""
    return _TOKEN.findall(text.lower())


class Decontaminator:
    """Flags texts sharing an n-gram of word tokens with any evaluation text."""

    def __init__(self, eval_texts: list[str], n: int = 13, min_tokens: int = 5):
        self.n, self.grams, self.whole = n, set(), set()
        for text in eval_texts:
            toks = word_tokens(text)
            if len(toks) >= n:
                self.grams.update(" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1))
            elif len(toks) >= min_tokens:
                self.whole.add(" ".join(toks))
        self.short_lengths = sorted({len(w.split(" ")) for w in self.whole})

    def __len__(self) -> int:
        return len(self.grams) + len(self.whole)

    def contaminated(self, text: str) -> bool:
        toks = word_tokens(text)
        if any(" ".join(toks[i:i + self.n]) in self.grams for i in range(len(toks) - self.n + 1)):
            return True
        return any(" ".join(toks[i:i + L]) in self.whole for L in self.short_lengths for i in range(len(toks) - L + 1))


def eval_texts(cfg: SampleConfig) -> list[str]:
    """The text fields of every decontamination dataset (r1kit:TASK: its held-out test split)."""
    texts = []
    for name in cfg.decontamination_datasets:
        if name.startswith("r1kit:"):
            from r1kit.tasks import get_task

            rows = get_task(name[len("r1kit:"):]).dataset("test", cfg.decontamination_num_rows, cfg.decontamination_seed)
        else:
            from r1kit.data.sft_data import load_sft_rows

            rows = load_sft_rows(name, "test")[0]
        from r1kit.rewards.text import prompt_text

        texts += [prompt_text(r[c]) if isinstance(r[c], list) else str(r[c])
                  for r in rows for c in cfg.decontamination_columns if r.get(c) is not None]
    return texts


def model_sha256(name_or_path: str, model) -> str:
    """sha256 of the folder's safetensors files (sorted by name), else of the state dict's bytes."""
    import torch

    h = hashlib.sha256()
    folder = Path(name_or_path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if files:
        for f in files:
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return "safetensors:" + h.hexdigest()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return "state_dict:" + h.hexdigest()


def reward_names(specs: list[str]) -> list[str]:
    """Metric-friendly names: registry names as written, else the function's __name__ (deduplicated)."""
    from r1kit.rewards import get_reward

    names = []
    for spec in specs:
        name = spec if re.fullmatch(r"[\w-]+", spec) else getattr(get_reward(spec), "__name__", spec)
        names.append(name if name not in names else f"{name}_{names.count(name) + 1}")
    return names


# ---- the run -----------------------------------------------------------------------------------


def run_sample(cfg: SampleConfig, engine=None) -> Path:
    """Sample, verify, filter, write; returns the output folder. `engine`: a ready rollout engine
    (tests, or a caller that holds one); default: `make_engine(cfg.rollout_engine, model, tokenizer)`."""
    import torch

    from r1kit.data.datasets import DataError, load_dataset_rows
    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.rewards import score_completions
    from r1kit.rewards.language import target_scripts
    from r1kit.rewards.text import prompt_text
    from r1kit.rollout import SamplingParams, make_engine

    t_start = time.perf_counter()
    out = Path(cfg.output_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype, device=device,
                                                tokenizer_name_or_path=cfg.tokenizer_name_or_path)
    model.eval()
    ds = load_dataset_rows(cfg.dataset_name, cfg.dataset_split, prompt_column=cfg.dataset_prompt_column,
                           answer_column=cfg.dataset_answer_column, dataset_config=cfg.dataset_config,
                           num_rows=cfg.dataset_num_rows, seed=cfg.seed)
    prompts = ds["prompt"]
    columns = {k: ds[k] for k in ds.column_names if k != "prompt"}
    texts = [render_prompt(p, tokenizer, cfg.template, cfg.system_prompt) for p in prompts]
    prompt_ids = tokenizer(texts, add_special_tokens=cfg.template != "chat").input_ids
    conversational = is_conversation(prompts[0])
    model_hash = model_sha256(cfg.model_name_or_path, model)
    names = reward_names(cfg.reward_funcs)
    weights = cfg.reward_weights or [1.0] * len(names)
    verify = cfg.verify_reward or ("accuracy" if "accuracy" in cfg.reward_funcs else cfg.reward_funcs[0])
    verify_col = None if verify == "total" else cfg.reward_funcs.index(verify)
    scripts = target_scripts(cfg.language)
    decon = None
    if cfg.decontamination_datasets:
        decon = Decontaminator(eval_texts(cfg), cfg.decontamination_ngram, cfg.decontamination_min_tokens)
        if not len(decon):
            raise DataError(f"decontamination_datasets {cfg.decontamination_datasets}: no text of "
                            f"{cfg.decontamination_min_tokens}+ tokens in columns {cfg.decontamination_columns}")
    engine = engine or make_engine(cfg.rollout_engine, model, tokenizer, **cfg.rollout_engine_kwargs)
    sampling = SamplingParams(n=cfg.num_samples, max_new_tokens=cfg.max_completion_length,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                              stop=tuple(cfg.stop_strings or ()))
    provenance = {"model": cfg.model_name_or_path, "model_sha256": model_hash, "dataset": cfg.dataset_name,
                  "split": cfg.dataset_split, "template": cfg.template, "system_prompt": cfg.system_prompt}
    sampling_record = {"n": cfg.num_samples, "max_new_tokens": cfg.max_completion_length, "temperature": cfg.temperature,
                       "top_p": cfg.top_p, "top_k": cfg.top_k, "stop": list(cfg.stop_strings or []), "seed": None}
    dropped = {r: 0 for r in DROP_REASONS}
    failed = {r: 0 for r in DROP_REASONS[:6]}  # every sample failing the check, not only the first failure
    kept, rejected, seen, per_prompt, reward_errors = [], [], {}, {}, {}
    dirty: dict[int, bool] = {}

    def prompt_dirty(r: int) -> bool:  # once per prompt
        if r not in dirty:
            dirty[r] = decon.contaminated(prompt_text(prompts[r]))
        return dirty[r]

    reward_sums = [0.0] * len(names)
    reward_counts = [0] * len(names)

    for chunk, start in enumerate(range(0, len(prompts), cfg.prompts_per_batch)):
        rows = list(range(start, min(start + cfg.prompts_per_batch, len(prompts))))
        sampling.seed = cfg.seed * 1_000_003 + chunk
        with torch.no_grad():
            comps = engine.generate([prompt_ids[r] for r in rows], sampling)
        row_of = [rows[c.prompt_index] for c in comps]
        ctexts = [c.text for c in comps]
        completions = [[{"role": "assistant", "content": t}] for t in ctexts] if conversational else ctexts
        cols = {k: [v[r] for r in row_of] for k, v in columns.items()}
        cols["completion_ids"] = [c.completion_ids for c in comps]
        rb = score_completions(cfg.reward_funcs, weights, [prompts[r] for r in row_of], completions, cols,
                               names=names, timeout_s=cfg.reward_timeout_s)
        for k, v in rb.errors.items():
            reward_errors[k] = reward_errors.get(k, 0) + v
        per_func = rb.per_func.tolist()
        sample_of = {}
        for i, c in enumerate(comps):
            r, text = row_of[i], c.text
            j = sample_of[r] = sample_of.get(r, -1) + 1
            value = float(rb.total[i]) if verify_col is None else per_func[i][verify_col]
            for f, v in enumerate(per_func[i]):
                if not math.isnan(v):
                    reward_sums[f] += v
                    reward_counts[f] += 1
            checks = {  # True = the sample fails this check
                "unverified": math.isnan(value) or value < cfg.min_reward,
                "truncated": cfg.drop_truncated and c.finish_reason == "length",
                "mixed_language": is_mixed_language(text, scripts, cfg.min_language_share),
                "long_paragraph": has_long_paragraph(text, cfg.max_paragraph_chars),
                "code_block": cfg.filter_code_blocks and has_code_block(text),
                "contaminated": decon is not None and (decon.contaminated(text) or prompt_dirty(r)),
            }
            for k, bad in checks.items():
                failed[k] += bool(bad)
            key = normalize(text)
            reason = next((k for k, bad in checks.items() if bad), None)
            if reason is None and cfg.dedup and key in seen.setdefault(r, set()):
                reason = "duplicate"
            if reason is None and cfg.max_per_prompt is not None and per_prompt.get(r, 0) >= cfg.max_per_prompt:
                reason = "over_max_per_prompt"
            verdicts = {VERDICTS[k]: not bad for k, bad in checks.items()}
            verdicts["unique"] = reason != "duplicate"
            record = {
                "prompt": prompts[r], "completion": text,
                **({"solution": columns["solution"][r]} if "solution" in columns else {}),
                "prompt_id": str(columns["id"][r]) if "id" in columns else f"{cfg.dataset_name}:{cfg.dataset_split}:{r}",
                "row_index": r, "sample_index": j, **provenance,
                "sampling": dict(sampling_record, seed=sampling.seed),
                "rewards": {n: finite_or_none(v) for n, v in zip(names, per_func[i])},
                "reward_total": finite_or_none(float(rb.total[i])),
                "filters": verdicts, "finish_reason": c.finish_reason, "num_tokens": len(c.completion_ids),
            }
            if reason is None:
                seen[r].add(key)
                per_prompt[r] = per_prompt.get(r, 0) + 1
                kept.append(record)
            else:
                dropped[reason] += 1
                if cfg.write_rejected:
                    rejected.append(dict(record, dropped_by=reason))
        log.info("sample: %d/%d prompts, %d kept so far", rows[-1] + 1, len(prompts), len(kept))

    stats = {
        "num_prompts": len(prompts), "num_samples": sum(dropped.values()) + len(kept), "kept": len(kept),
        "dropped": dropped, "failed": failed, "prompts_with_kept": len(per_prompt),
        "verify_reward": verify, "min_reward": cfg.min_reward, "reward_errors": reward_errors,
        "reward_means": {n: (s / c if c else None) for n, s, c in zip(names, reward_sums, reward_counts)},
        "decontamination_items": len(decon) if decon is not None else 0, **provenance,
        "sampling": dict(sampling_record, seed=cfg.seed), "elapsed_s": time.perf_counter() - t_start,
        "config": to_dict(cfg),
    }
    write_outputs(out, kept, rejected, stats, cfg)
    log.info("sample: kept %d of %d samples (%s)", len(kept), stats["num_samples"],
             ", ".join(f"{k} {v}" for k, v in dropped.items() if v))
    return out


def write_outputs(out: Path, kept: list[dict], rejected: list[dict], stats: dict, cfg: SampleConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if "jsonl" in cfg.output_format:
        write_jsonl(out / "samples.jsonl", kept)
    if "parquet" in cfg.output_format:
        from datasets import Dataset

        tmp = out / ".samples.parquet.tmp"
        (Dataset.from_list(kept) if kept else Dataset.from_dict({"prompt": [], "completion": []})).to_parquet(str(tmp))
        tmp.replace(out / "samples.parquet")
    if cfg.write_rejected:
        write_jsonl(out / "rejected.jsonl", rejected)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")

