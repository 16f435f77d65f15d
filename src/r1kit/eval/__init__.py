"""Evaluation with the paper's protocol: pass@1 over k samples (T=0.6, top-p 0.95) and cons@k."""

from .metrics import bootstrap_ci, majority_vote, pass_at_k, reflection_rate
from .runner import EvalResult, evaluate

__all__ = ["EvalResult", "bootstrap_ci", "evaluate", "majority_vote", "pass_at_k", "reflection_rate"]
