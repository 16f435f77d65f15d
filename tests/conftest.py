"""Suite-wide settings: one torch thread per test process, and again before every test.

The models in these tests are tiny, so a second thread buys little, and on a shared 2-core machine
oversubscribed threads made small forward/backward passes tens of times slower. Code under test may
set its own thread count (`num_threads` options); the fixture puts it back after each test.
"""

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
