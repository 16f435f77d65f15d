"""Model and tokenizer loading (local folders, hub ids, GGUF files, LoRA) and tiny models for tests."""

from r1kit.models.loading import ModelLoadError, is_peft_model, load_model_and_tokenizer, save_model

__all__ = ["ModelLoadError", "is_peft_model", "load_model_and_tokenizer", "save_model"]
