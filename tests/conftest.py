"""Shared fixtures: paths, a tiny model config, torch settings for fast, deterministic tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# CI=true: a skip for a missing system package fails the run (tests/ci_skips.py).
pytest_plugins = ["tests.ci_skips"]
torch.set_num_threads(min(2, torch.get_num_threads()))
# The compiled-step cache (stream.engine.aot) of this test session, for this process and every
# command a test starts: tests neither read nor fill the user's cache.
AOT_CACHE = Path(tempfile.mkdtemp(prefix="pcmanet-test-cache-"))
os.environ["PCMANET_LIVE_CACHE"] = str(AOT_CACHE)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the step builders still running for this session's cache (a build outlives the
    run that started it, by design; not the test session), and remove the cache."""
    for lock in (AOT_CACHE / "aot").glob("*.lock"):
        with contextlib.suppress(ValueError, OSError):
            os.killpg(int(lock.read_text().strip()), signal.SIGTERM)
    shutil.rmtree(AOT_CACHE, ignore_errors=True)


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

