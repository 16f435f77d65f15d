"""Run an evaluation: k samples per problem through a rollout engine, scored by a verifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from r1kit.eval.metrics import bootstrap_ci, majority_vote, pass_at_k
from r1kit.rewards.reflection import has_reflection
from r1kit.rollout import SamplingParams


@dataclass
class EvalResult:
    pass_at_1: float              # mean correctness (score >= 1.0) over all k samples of all problems
    pass_at_1_ci: list[float]     # bootstrap 95% interval over problems
    cons_at_k: float              # majority vote over the k extracted answers
    pass_at_k: float              # unbiased pass@k (Chen et al.)
    k: int
    num_problems: int
    mean_response_length: float   # tokens
    reflection_rate: float
    language_mixing_rate: float
    samples: list[dict] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("samples")
        return {("pass@1" if k == "pass_at_1" else "pass@1_ci" if k == "pass_at_1_ci" else
                 "cons@k" if k == "cons_at_k" else "pass@k" if k == "pass_at_k" else k): v for k, v in d.items()}


def evaluate(engine, prompt_ids: list[list[int]], rows: list[dict], score: Callable[[str, dict], float],
             extract: Callable[[str], str | None], *, k: int = 8, temperature: float = 0.6, top_p: float = 0.95,
             max_new_tokens: int = 256, stop: tuple[str, ...] = (), seed: int = 0, chunk: int = 64) -> EvalResult:
    """pass@1 over `k` samples per problem, cons@k and pass@k, as DeepSeek-R1 reports them (§3).

    `prompt_ids[i]` is problem i's rendered, tokenized prompt; `score(text, row)` its verifier;
    `extract(text)` the answer used for majority voting.
    """
    from r1kit.rewards import language_mixing_rate

    params = SamplingParams(n=k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            stop=tuple(stop), seed=seed)
    samples, per_problem, cons, passk = [], [], [], []
    for start in range(0, len(rows), chunk):
        params.seed = seed + start
        comps = engine.generate(prompt_ids[start:start + chunk], params)
        for j in range(0, len(comps), k):
            group = comps[j:j + k]
            row = rows[start + group[0].prompt_index]
            scores = [float(score(c.text, row)) for c in group]
            right = [s >= 1.0 for s in scores]  # correct only when fully right: partial credit is not accuracy
            answers = [extract(c.text) for c in group]
            vote = majority_vote(answers)
            cons.append(float(any(r for r, a in zip(right, answers) if a == vote)) if vote else 0.0)
            per_problem.append(sum(right) / k)
            passk.append(pass_at_k(k, sum(right), k))
            samples += [{"problem": start + c.prompt_index, "completion": c.text, "answer": a, "score": s,
                         "length": len(c.completion_ids), "finish_reason": c.finish_reason}
                        for c, a, s in zip(group, answers, scores)]
    texts = [s["completion"] for s in samples]
    n = max(len(per_problem), 1)
    return EvalResult(
        pass_at_1=sum(per_problem) / n, pass_at_1_ci=bootstrap_ci(per_problem), cons_at_k=sum(cons) / n,
        pass_at_k=sum(passk) / n, k=k, num_problems=len(per_problem),
        mean_response_length=sum(s["length"] for s in samples) / max(len(samples), 1),
        reflection_rate=sum(map(has_reflection, texts)) / max(len(texts), 1),
        language_mixing_rate=language_mixing_rate(texts), samples=samples)
