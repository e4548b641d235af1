"""Fixtures shared by the pcmanet tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test on one torch thread: the generator's log-mels take ~4 ms on one thread and
    ~100 ms on two here (2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
