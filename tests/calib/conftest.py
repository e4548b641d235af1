"""Small generated data for the calib tools."""

from __future__ import annotations

import pytest

from tests.conftest import synthetic_s4


@pytest.fixture(scope="session")
def s4_small(tmp_path_factory):
    """A synthetic S4 set in the AVSBench layout: 8 val clips at 128 px (the demo model's size)."""
    return synthetic_s4(tmp_path_factory, "syn_s4", train=2, val=8, test=2, size=128, seed=5)
