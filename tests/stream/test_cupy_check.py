"""The CuPy wheel must match torch's CUDA major: the check names the package to install."""

from __future__ import annotations

import pytest
import torch

from stream.engine.cupy_check import cupy_mismatch, cupy_wheel_for, installed_cupy_wheels


@pytest.mark.parametrize(("cuda", "wheel"), [("13.0", "cupy-cuda13x"), ("12.8", "cupy-cuda12x"),
                                             ("11.8", "cupy-cuda11x")])
def test_wheel_for_torch_cuda(cuda: str, wheel: str) -> None:
    assert cupy_wheel_for(cuda) == wheel


def test_matching_cupy_or_none_is_fine() -> None:
    assert cupy_mismatch(["cupy-cuda13x"], "13.0") is None
    assert cupy_mismatch([], "13.0") is None
    assert cupy_mismatch(["cupy-cuda12x"], None) is None        # a CPU build of torch: no CUDA
    assert cupy_mismatch(["cupy"], "13.0") is None              # built from source for here


def test_cupy_for_another_cuda_major_names_the_fix() -> None:
    message = cupy_mismatch(["cupy-cuda12x"], "13.0")
    assert message is not None
    assert "cupy-cuda12x (CuPy for CUDA 12)" in message
    assert "CUDA 13.0" in message
    assert "pip uninstall -y cupy-cuda12x && pip install cupy-cuda13x" in message


def test_old_style_wheel_names_are_read() -> None:
    message = cupy_mismatch(["cupy-cuda117"], "13.0")
    assert message is not None and "CUDA 11" in message and "cupy-cuda13x" in message


def test_two_cupy_wheels_are_a_conflict() -> None:
    message = cupy_mismatch(["cupy-cuda12x", "cupy-cuda13x"], "13.0")
    assert message is not None and "several CuPy packages" in message
    assert "pip uninstall -y cupy-cuda12x cupy-cuda13x && pip install cupy-cuda13x" in message


def test_this_environment_is_consistent() -> None:
    """What is installed here passes the check, and the gpu extra names torch's CuPy."""
    assert cupy_mismatch() is None, cupy_mismatch()
    assert all(w == "cupy" or w.startswith("cupy-cuda") for w in installed_cupy_wheels())
    if torch.version.cuda is not None:
        from pathlib import Path

        pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
        assert f'gpu = ["{cupy_wheel_for(torch.version.cuda)}' in pyproject
