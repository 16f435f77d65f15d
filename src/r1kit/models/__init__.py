"""Model and tokenizer loading (local folders, hub ids, GGUF files, LoRA) and tiny models for tests."""
