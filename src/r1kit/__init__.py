"""r1kit: train reasoning language models the way DeepSeek-R1 was trained."""

__version__ = "0.1.0"
