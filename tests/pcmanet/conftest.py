"""Fixtures shared by the pcmanet tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pcmanet.data.eval_families import write_family


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test on one torch thread: the generator's log-mels take ~4 ms on one thread and
    ~100 ms on two here (2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pitch_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pitch family set (8 train / 2 val / 4 test clips, 64 px) shared by the tests
    that train on one or read its clips."""
    root = tmp_path_factory.mktemp("pitch-family")
    write_family(root, "pitch", {"train": 8, "val": 2, "test": 4}, size=64, seed=2)
    return root
