"""The latency benchmark: statistics on known samples, and one short real run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stream.measure.latency import (
    after_warmup,
    format_table,
    fps,
    report,
    seq_gaps,
    stage_samples,
    summarize_ms,
)
from tests.conftest import REPO

MS = 1_000_000


def record(i: int, e2e_ms: float, seq: int | None = None) -> dict:
    t = 1_000 * MS + i * 33 * MS
    return {"seq": i if seq is None else seq, "t_capture_ns": t, "t_dequeue_ns": t + 2 * MS,
            "t_paired_ns": t + 3 * MS, "t_preprocess_start_ns": t + 3 * MS,
            "t_encode_start_ns": t + 4 * MS, "t_decode_start_ns": t + 14 * MS,
            "t_decode_end_ns": t + 20 * MS, "t_publish_ns": t + 21 * MS,
            "t_receive_ns": t + round(e2e_ms * MS), "keep_ratio": 0.25}


def test_percentiles_of_known_samples():
    s = summarize_ms(list(range(1, 101)))             # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01) and s["max"] == 100 and s["mean"] == 50.5
    assert np.isnan(summarize_ms([])["p99"])


def test_warmup_is_excluded_and_stages_are_differences():
    records = [record(i, 500.0 if i < 30 else 25.0) for i in range(120)]  # slow first second
    kept = after_warmup(records, warmup_s=1.0)
    assert len(kept) == 120 - 31                      # frames 0..30 lie within 1 s of frame 0
    stages = stage_samples(kept)
    assert set(stages["encode"]) == {10.0} and set(stages["decode"]) == {6.0}
    assert set(stages["e2e"]) == {25.0} and set(stages["transport"]) == {4.0}
    assert fps(kept, "t_receive_ns") == pytest.approx(1000 / 33)


def test_drop_accounting():
    records = [record(i, 25.0, seq=s) for i, s in enumerate([0, 1, 2, 5, 6, 9])]
    assert seq_gaps([r["seq"] for r in records]) == 4
    counters = {"frame_ring": {"dropped": 7}, "engine": {"handoff_dropped": 1, "frame_errors": 0},
                "publisher": {"published": 10, "dropped": 3}}
    rep = report(records, 0.0, counters, frames_captured=20, capture_span_s=2.0, mode="stream",
                 config={})
    assert rep["drops"]["seq_gaps_at_subscriber"] == 4 and rep["drops"]["socket"] == 3
    assert rep["drops"]["not_received"] == 4 and rep["drops"]["frame_ring"] == 7
    assert rep["fps_in"] == 10.0 and rep["keep_ratio"] == 0.25
    assert rep["e2e_ms"]["p50"] == pytest.approx(25.0)


def test_pairing_outcomes_waits_and_audio_lag_are_reported():
    records = [{**record(i, 25.0), "audio": "paired" if i else "none",
                "audio_lag_ms": float(10 * (i % 3))} for i in range(10)]
    counters = {"pairing": {"paired": 10, "on_time": 4, "lagged": 5, "late": 0, "no_audio": 1,
                            "unavailable": 0, "wait_ns_total": 0, "wait_ns_max": 0,
                            "lag_ns_total": 90 * MS, "lag_ns_max": 20 * MS}}
    rep = report(records, 0.0, counters, frames_captured=10, capture_span_s=1.0, mode="stream",
                 config={})
    pairing = rep["pairing"]
    assert pairing["lagged"] == 5 and pairing["no_audio"] == 1 and pairing["wait_ms_total"] == 0
    assert pairing["audio_lag_ms"]["max"] == 20.0 and pairing["audio_lag_ms"]["p50"] == 10.0
    assert "lag_ns_total" not in pairing
    assert "pairing: on_time 4, lagged 5, late 0" in format_table(rep)


@pytest.mark.races
def test_bench_runs_the_pipeline_with_a_subscriber_process(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    # The plumbing, eager: compiling (tests/stream/test_static_step.py) would take minutes here.
    res = subprocess.run([sys.executable, "-m", "stream.bench", "--source", "demo", "--duration",
                          "4", "--warmup", "1", "--json", str(out), "--plot", str(png),
                          "--set", "live.engine.compile=off"],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    for key in ("fps_in", "fps_out", "e2e_ms", "stages", "drops", "keep_ratio", "mode", "config"):
        assert key in rep
    assert rep["mode"] == "stream" and rep["frames"]["after_warmup"] >= 10
    assert 20 <= rep["fps_in"] <= 40                  # the demo source runs at 30 FPS
    assert 0 < rep["e2e_ms"]["p50"] <= rep["e2e_ms"]["p99"] <= rep["e2e_ms"]["max"]
    assert rep["drops"]["seq_gaps_at_subscriber"] == 0
    assert png.stat().st_size > 10_000
    assert "END TO END" in res.stdout


def test_stream_counts_parse() -> None:
    import argparse

    from stream.measure.bench import parse_counts

    assert parse_counts("1,2,4") == [1, 2, 4] and parse_counts("3") == [3]
    for bad in ("0", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_counts(bad)


@pytest.mark.races
def test_bench_streams_reports_each_stream_and_pooled(tmp_path):
    out, png = tmp_path / "multi.json", tmp_path / "multi.png"
    res = subprocess.run([sys.executable, "-m", "stream.bench", "--streams", "1,2", "--duration",
                          "4", "--warmup", "1", "--set", "live.source.fps=10",
                          "--set", "live.engine.compile=off", "--json",
                          str(out), "--plot", str(png)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [r["streams"] for r in runs] == [1, 2]
    for r in runs:
        assert sorted(r["per_stream"]) == [f"s{i}" for i in range(r["streams"])]
        for rep in [*r["per_stream"].values(), r["pooled"]]:
            for key in ("fps_in", "fps_out", "e2e_ms", "drops", "frames"):
                assert key in rep
            assert rep["frames"]["received"] > 0
            assert 0 < rep["e2e_ms"]["p50"] <= rep["e2e_ms"]["p99"] <= rep["e2e_ms"]["max"]
        assert r["pooled"]["frames"]["received"] == sum(
            p["frames"]["received"] for p in r["per_stream"].values())
        assert r["batch"]["steps"] > 0 and len(r["load_avg_before"]) == 3
    assert png.stat().st_size > 10_000
    assert "POOLED" in res.stdout
