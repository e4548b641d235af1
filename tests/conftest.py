"""Shared fixtures: paths, a tiny model config, torch settings for fast, deterministic tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# CI=true: a skip for a missing system package fails the run (tests/ci_skips.py).
pytest_plugins = ["tests.ci_skips"]
torch.set_num_threads(min(2, torch.get_num_threads()))


#: The official checkpoints' key tables (key, shape, dtype), kept in the repository.
REFERENCE = REPO / "tests" / "pcmanet" / "reference"


def read_key_table(name: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """key -> (shape, dtype) from a tests/pcmanet/reference/*.tsv file."""
    table = {}
    for line in (REFERENCE / name).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
        table[key] = (dims, getattr(torch, dtype))
    return table


def random_state_dict(table: dict[str, tuple[tuple[int, ...], torch.dtype]], seed: int = 0
                      ) -> dict[str, torch.Tensor]:
    """Random values with exactly the table's keys, shapes and dtypes (BN variances positive)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, (shape, dtype) in table.items():
        if dtype == torch.int64:
            out[key] = torch.tensor(100, dtype=dtype).reshape(shape)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:
            out[key] = torch.randn(shape, generator=g) * 0.05
    return out


@pytest.fixture
def tiny_cfg():
    from pcmanet.config import load_config

    return load_config(REPO / "configs" / "test_tiny.yaml").model


def synthetic_s4(factory: pytest.TempPathFactory, name: str, *, train: int, val: int, test: int,
                 size: int, seed: int) -> Path:
    """A synthetic S4 set in the AVSBench layout, written by the project's own generator."""
    from pcmanet.data.synthetic import main as synth_main

    root = factory.mktemp(name)
    assert synth_main(["--out", str(root), "--task", "s4", "--train", str(train), "--val",
                       str(val), "--test", str(test), "--size", str(size),
                       "--seed", str(seed)]) == 0
    return root

