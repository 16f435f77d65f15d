"""Training loops: GRPO (`grpo.py`), pretraining (`pretrain.py`), and their shared pieces."""
