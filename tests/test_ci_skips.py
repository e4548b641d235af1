"""tests/ci_skips.py: under CI=true a skip for a missing system package fails the run, an
allow-listed skip does not; outside CI both stay skips. Run in a real pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PROBE = '''
import pytest

def test_needs_ffmpeg():
    pytest.skip("ffmpeg not found (apt-get install ffmpeg)")

def test_needs_pulse():
    pytest.skip("no PulseAudio microphone: pactl not found (apt-get install pulseaudio)")

def test_needs_a_gpu():
    pytest.skip("needs a CUDA GPU")

def test_passes():
    pass
'''


def run_probe(folder: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (folder / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "tests.ci_skips",
                           "-p", "no:cacheprovider", "--rootdir", str(folder), "-c", os.devnull,
                           str(folder / "test_probe.py")],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_missing_package_is_a_skip(tmp_path: Path, ci: str | None) -> None:
    res = run_probe(tmp_path, ci)
    assert res.returncode == 0, res.stdout
    assert "1 passed, 3 skipped" in res.stdout


def test_in_ci_a_missing_package_fails_and_an_expected_skip_does_not(tmp_path: Path) -> None:
    res = run_probe(tmp_path, "true")
    assert res.returncode == 1, res.stdout
    assert "2 failed, 1 passed, 1 skipped" in res.stdout
    for name in ("test_needs_ffmpeg", "test_needs_pulse"):
        assert f"FAILED test_probe.py::{name}" in res.stdout
    assert "SKIPPED" in res.stdout and "needs a CUDA GPU" in res.stdout
    assert "CI=true: skipped for a missing system package (" in res.stdout
    assert "ffmpeg not found (apt-get install ffmpeg)" in res.stdout
