"""``bench/gpu_proof.py --device cpu --quick`` end to end: every section runs and reports figures,
so the first GPU run cannot fail for a reason a CPU would have shown."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.proof_report import TARGETS
from tests.conftest import REPO

SECTIONS = ("cuda_tests", "step", "buckets", "overlap", "live", "training")


def numbers(x: object) -> list[float]:
    """Every number in a JSON value."""
    if isinstance(x, bool):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [n for v in x.values() for n in numbers(v)]
    if isinstance(x, list):
        return [n for v in x for n in numbers(v)]
    return []


@pytest.mark.slow
@pytest.mark.races
def test_the_quick_cpu_proof_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    proc = subprocess.run([sys.executable, "bench/gpu_proof.py", "--out", str(out), "--device",
                           "cpu", "--quick"], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    report = json.loads((out / "gpu_proof.json").read_text())
    failed = {k: s.get("error") for k, s in report["sections"].items() if not s["ok"]}
    assert proc.returncode == 0 and not failed, (failed, proc.stderr[-3000:])
    assert tuple(report["sections"]) == SECTIONS
    for name, s in report["sections"].items():
        values = numbers(s["figures"])
        assert values and all(math.isfinite(v) for v in values), name
        assert s["seconds"] > 0
    f = report["sections"]
    assert f["cuda_tests"]["figures"]["failures"] == 0
    assert f["cuda_tests"]["figures"]["skipped"] == f["cuda_tests"]["figures"]["tests"] > 0
    for model in ("demo", "resnet50", "pvt_v2_b5"):
        for precision in ("fp32", "bf16"):
            r = f["step"]["figures"][model][precision]
            assert r["eager_ms"]["p50"] > 0 and r["graphed_ms"]["p50"] > 0
    assert set(f["buckets"]["figures"]["frames_per_s"]) == {"1", "2", "4"}
    ov = f["overlap"]["figures"]
    assert ov["max_in_flight"] == 1 and ov["hidden_copy_share"] == 0.0   # CPU: in sequence
    assert ov["host_max_in_flight"] <= 2 and ov["frames"] == 8
    assert set(f["live"]["figures"]) == {"fps30", "fps240", "streams32", "streams64"}
    assert f["training"]["figures"]["steps"] == 2
    # every target found its figure; none is judged on a CPU
    assert len(report["targets"]) == len(TARGETS)
    assert all(t["value"] is not None and t["met"] is None for t in report["targets"])
    table = (out / "gpu_proof.md").read_text()
    assert all(f"| {name} | yes |" in table for name in SECTIONS)


def test_an_unknown_section_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/gpu_proof.py", "--out", str(tmp_path),
                           "--device", "cpu", "--only", "step,nope"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nope" in proc.stderr
