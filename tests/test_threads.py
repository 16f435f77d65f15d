"""The CPU thread policy (utils/threads.py): threads follow the cores other processes leave free."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from r1kit.utils.threads import CpuThreads, _cores

BUSY = [sys.executable, "-c", "while True: pass"]


def _detached_busy() -> int:
    """A busy process that is NOT our descendant (its parent exits at once): pid."""
    out = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.skipif(len(_cores()) < 2 or not os.path.exists("/proc/stat"), reason="needs Linux and 2+ cores")
def test_a_busy_neighbour_takes_a_core_and_gives_it_back(restore_threads):
    torch.set_num_threads(len(_cores()))
    pid = _detached_busy()
    try:
        threads = CpuThreads()
        time.sleep(0.6)
        loaded = threads.adapt()
        assert loaded <= len(_cores()) - 1  # the neighbour's core is left to it
        assert torch.get_num_threads() == loaded
    finally:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.6)
    if len(_cores()) == 2:  # the CI machine: nothing else runs, so both cores are free again
        assert threads.adapt() == 2
    threads.restore()
    assert torch.get_num_threads() == len(_cores())


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux")
def test_our_own_children_are_not_other_processes(restore_threads):
    threads = CpuThreads()
    child = subprocess.Popen(BUSY)  # e.g. a reward worker: its CPU is ours
    try:
        time.sleep(0.8)
        assert threads.others_busy() < 0.5
    finally:
        child.kill()
        child.wait()


def test_a_fixed_count_is_kept_and_the_start_restored(restore_threads):
    torch.set_num_threads(2)
    threads = CpuThreads(fixed=1)
    assert torch.get_num_threads() == 1
    assert [threads.adapt(), threads.adapt()] == [1, 1]
    threads.restore()
    assert torch.get_num_threads() == 2


def test_never_more_threads_than_the_process_started_with(restore_threads):
    torch.set_num_threads(1)  # e.g. the demo's --num_threads 1
    threads = CpuThreads()
    time.sleep(0.3)
    assert threads.adapt() == 1


def test_cpu_threads_is_validated():
    from r1kit.train.grpo_config import GRPOConfig

    with pytest.raises(ValueError, match="'cpu_threads' must be >= 0"):
        GRPOConfig(cpu_threads=-1)
