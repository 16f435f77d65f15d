"""Suite-wide settings: one torch thread per test process.

The models in these tests are tiny, so a second thread buys little, and on a shared 2-core machine
oversubscribed threads made small forward/backward passes tens of times slower.
"""

import os

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
