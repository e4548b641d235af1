"""Small generated data for the calib tools."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def s4_small(tmp_path_factory):
    """A synthetic S4 set in the AVSBench layout: 8 val clips at 128 px (the demo model's size)."""
    from pcmanet.data.synthetic import main as synth_main

    root = tmp_path_factory.mktemp("syn_s4")
    assert synth_main(["--out", str(root), "--task", "s4", "--train", "2", "--val", "8",
                       "--test", "2", "--size", "128", "--seed", "5"]) == 0
    return root
