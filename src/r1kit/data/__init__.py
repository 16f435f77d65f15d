"""Datasets (files, folders, procedural tasks, hub) and prompt templates."""

from r1kit.data.datasets import DataError, load_dataset_rows, validate_rows
from r1kit.data.templates import R1_ZERO_TEMPLATE, prompt_ends_with_think, render_prompt

__all__ = [
    "DataError",
    "R1_ZERO_TEMPLATE",
    "load_dataset_rows",
    "prompt_ends_with_think",
    "render_prompt",
    "validate_rows",
]
