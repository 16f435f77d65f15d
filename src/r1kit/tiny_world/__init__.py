"""The tiny world: a synthetic "web" corpus of arithmetic text, the tiny base model pretrained on
it, and measurements of that base model under the R1-Zero template.

- `corpus.generate_corpus(n_docs, seed, **mix)` -> list[str] documents (train-split items only).
- `pretrain.run_pretrain(PretrainConfig)` trains tokenizer + model on it (`r1kit pretrain`).
- `self_correction.self_correction_stats(samples)` -> what the re-checks in responses did (fixes vs breaks).
- `probe.measure_base_model(path, ...)` -> dict of the numbers the demo cares about.
- `TINY_BASE_PATH`: the shipped model folder (loads with plain transformers).
"""

from pathlib import Path

TINY_BASE_PATH = str(Path(__file__).resolve().parent.parent / "assets" / "tiny-base")

__all__ = ["TINY_BASE_PATH"]
