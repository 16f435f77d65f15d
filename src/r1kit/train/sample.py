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
from pathlib import Path

from r1kit.config import to_dict
from r1kit.train.rollouts import PromptSet, Rewarder, Rollouts, load_prompts, rollout_and_score
from r1kit.train.sample_config import SampleConfig
from r1kit.utils.dist import default_device
from r1kit.utils.io import finite_or_none, write_jsonl

log = logging.getLogger("r1kit.sample")

DROP_REASONS = ("unverified", "truncated", "mixed_language", "long_paragraph", "code_block", "contaminated",
                "duplicate", "over_max_per_prompt")
# filter verdicts in each row: True = the sample passed that check
VERDICTS = {"unverified": "verified", "truncated": "complete", "mixed_language": "one_language",
            "long_paragraph": "short_paragraphs", "code_block": "no_code_block", "contaminated": "decontaminated"}
_TOKEN = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


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

    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.rollout import SamplingParams, make_engine

    t_start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(cfg.model_name_or_path, dtype=cfg.dtype, device=default_device(),
                                                tokenizer_name_or_path=cfg.tokenizer_name_or_path)
    model.eval()
    prompts = load_prompts(cfg, tokenizer, cfg.dataset_split)
    names = reward_names(cfg.reward_funcs)
    rewarder = Rewarder(list(cfg.reward_funcs), cfg.reward_weights or [1.0] * len(names), cfg.reward_timeout_s,
                        metric_names=names)
    selection = Selection(cfg, prompts, names, decontaminator(cfg), model_sha256(cfg.model_name_or_path, model))
    engine = engine or make_engine(cfg.rollout_engine, model, tokenizer, **cfg.rollout_engine_kwargs)
    sampling = SamplingParams(n=cfg.num_samples, max_new_tokens=cfg.max_completion_length,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                              stop=tuple(cfg.stop_strings or ()))
    for chunk, start in enumerate(range(0, len(prompts), cfg.prompts_per_batch)):
        rows = list(range(start, min(start + cfg.prompts_per_batch, len(prompts))))
        sampling.seed = cfg.seed * 1_000_003 + chunk
        with torch.no_grad():
            roll = rollout_and_score(engine, sampling, rows, prompts, rewarder)
        selection.add(roll, sampling.seed)
        log.info("sample: %d/%d prompts, %d kept so far", rows[-1] + 1, len(prompts), len(selection.kept))

    stats = selection.stats(elapsed_s=time.perf_counter() - t_start)
    write_outputs(Path(cfg.output_dir), selection.kept, selection.rejected, stats, cfg)
    log.info("sample: kept %d of %d samples (%s)", len(selection.kept), stats["num_samples"],
             ", ".join(f"{k} {v}" for k, v in selection.dropped.items() if v))
    return Path(cfg.output_dir)


class Selection:
    """The paper's filters applied to every sample, in order (the first failing check is the reason a
    sample is dropped), with the kept and rejected rows and the counts `stats.json` reports."""

    def __init__(self, cfg: SampleConfig, prompts: PromptSet, names: list[str], decon: "Decontaminator | None",
                 model_hash: str):
        from r1kit.rewards.language import target_scripts

        self.cfg, self.prompts, self.names, self.decon = cfg, prompts, names, decon
        verify = cfg.verify_reward or ("accuracy" if "accuracy" in cfg.reward_funcs else cfg.reward_funcs[0])
        self.verify, self.verify_col = verify, None if verify == "total" else cfg.reward_funcs.index(verify)
        self.scripts = target_scripts(cfg.language)
        self.provenance = {"model": cfg.model_name_or_path, "model_sha256": model_hash, "dataset": cfg.dataset_name,
                           "split": cfg.dataset_split, "template": cfg.template, "system_prompt": cfg.system_prompt}
        self.sampling_record = {"n": cfg.num_samples, "max_new_tokens": cfg.max_completion_length,
                                "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
                                "stop": list(cfg.stop_strings or []), "seed": None}
        self.dropped = {r: 0 for r in DROP_REASONS}
        self.failed = {r: 0 for r in DROP_REASONS[:6]}  # every sample failing the check, not only the first failure
        self.kept: list[dict] = []
        self.rejected: list[dict] = []
        self.seen: dict[int, set] = {}  # row -> normalised texts kept
        self.per_prompt: dict[int, int] = {}  # row -> samples kept
        self.reward_errors: dict[str, int] = {}
        self.reward_sums, self.reward_counts = [0.0] * len(names), [0] * len(names)
        self._dirty: dict[int, bool] = {}  # row -> its prompt is contaminated

    def add(self, roll: Rollouts, seed: int) -> None:
        """Judge one generation call's samples (drawn with `seed`)."""
        for k, v in roll.rewards.errors.items():
            self.reward_errors[k] = self.reward_errors.get(k, 0) + v
        per_func = roll.rewards.per_func.tolist()
        sample_of: dict[int, int] = {}
        for i, c in enumerate(roll.completions):
            r = roll.rows[i]
            j = sample_of[r] = sample_of.get(r, -1) + 1
            for f, v in enumerate(per_func[i]):
                if not math.isnan(v):
                    self.reward_sums[f] += v
                    self.reward_counts[f] += 1
            total = float(roll.rewards.total[i])
            checks = self.checks(c, r, total if self.verify_col is None else per_func[i][self.verify_col])
            for k, bad in checks.items():
                self.failed[k] += bool(bad)
            key = normalize(c.text)
            reason = next((k for k, bad in checks.items() if bad), None)
            if reason is None and self.cfg.dedup and key in self.seen.setdefault(r, set()):
                reason = "duplicate"
            if reason is None and self.cfg.max_per_prompt is not None and self.per_prompt.get(r, 0) >= self.cfg.max_per_prompt:
                reason = "over_max_per_prompt"
            verdicts = {VERDICTS[k]: not bad for k, bad in checks.items()}
            verdicts["unique"] = reason != "duplicate"
            record = self.record(c, r, j, seed, per_func[i], total, verdicts)
            if reason is None:
                self.seen[r].add(key)
                self.per_prompt[r] = self.per_prompt.get(r, 0) + 1
                self.kept.append(record)
            else:
                self.dropped[reason] += 1
                if self.cfg.write_rejected:
                    self.rejected.append(dict(record, dropped_by=reason))

    def checks(self, c, row: int, value: float) -> dict[str, bool]:
        """True = the sample fails this check (in the order the first failure is counted)."""
        cfg, text = self.cfg, c.text
        return {
            "unverified": math.isnan(value) or value < cfg.min_reward,
            "truncated": cfg.drop_truncated and c.finish_reason == "length",
            "mixed_language": is_mixed_language(text, self.scripts, cfg.min_language_share),
            "long_paragraph": has_long_paragraph(text, cfg.max_paragraph_chars),
            "code_block": cfg.filter_code_blocks and has_code_block(text),
            "contaminated": self.decon is not None and (self.decon.contaminated(text) or self.prompt_dirty(row)),
        }

    def prompt_dirty(self, row: int) -> bool:  # once per prompt
        from r1kit.rewards.text import prompt_text

        if row not in self._dirty:
            self._dirty[row] = self.decon.contaminated(prompt_text(self.prompts.prompts[row]))
        return self._dirty[row]

    def record(self, c, r: int, j: int, seed: int, rewards: list[float], total: float, verdicts: dict) -> dict:
        """One output row: the raw prompt, the completion, and its provenance."""
        cfg, columns = self.cfg, self.prompts.columns
        return {
            "prompt": self.prompts.prompts[r], "completion": c.text,
            **({"solution": columns["solution"][r]} if "solution" in columns else {}),
            "prompt_id": str(columns["id"][r]) if "id" in columns else f"{cfg.dataset_name}:{cfg.dataset_split}:{r}",
            "row_index": r, "sample_index": j, **self.provenance,
            "sampling": dict(self.sampling_record, seed=seed),
            "rewards": {n: finite_or_none(v) for n, v in zip(self.names, rewards)},
            "reward_total": finite_or_none(total),
            "filters": verdicts, "finish_reason": c.finish_reason, "num_tokens": len(c.completion_ids),
        }

    def stats(self, elapsed_s: float) -> dict:
        cfg = self.cfg
        return {
            "num_prompts": len(self.prompts), "num_samples": sum(self.dropped.values()) + len(self.kept),
            "kept": len(self.kept), "dropped": self.dropped, "failed": self.failed,
            "prompts_with_kept": len(self.per_prompt), "verify_reward": self.verify, "min_reward": cfg.min_reward,
            "reward_errors": self.reward_errors,
            "reward_means": {n: (s / c if c else None)
                             for n, s, c in zip(self.names, self.reward_sums, self.reward_counts)},
            "decontamination_items": len(self.decon) if self.decon is not None else 0, **self.provenance,
            "sampling": dict(self.sampling_record, seed=cfg.seed), "elapsed_s": elapsed_s, "config": to_dict(cfg),
        }


def decontaminator(cfg: SampleConfig) -> "Decontaminator | None":
    """The n-gram index of the evaluation sets to decontaminate against, or None when none is named."""
    if not cfg.decontamination_datasets:
        return None
    from r1kit.data.datasets import DataError

    decon = Decontaminator(eval_texts(cfg), cfg.decontamination_ngram, cfg.decontamination_min_tokens)
    if not len(decon):
        raise DataError(f"decontamination_datasets {cfg.decontamination_datasets}: no text of "
                        f"{cfg.decontamination_min_tokens}+ tokens in columns {cfg.decontamination_columns}")
    return decon


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

