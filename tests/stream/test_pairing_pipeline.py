"""Pairing policies through the real pipeline: the demo source (real time) -> LivePipeline ->
ZeroMQ over inproc:// -> a subscriber. Checks the published ``audio_lag_ms`` against each
mask's own audio window and capture time, and that ``latest`` never makes the engine wait;
nothing here asserts a duration."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.sync import PairingPolicy
from stream.capture.base import SAMPLE_RATE
from stream.capture.demo import DemoSource
from stream.engine.engine import StreamingEngine
from stream.run.pipeline import LivePipeline
from stream.transport.publish import MaskPublisher
from stream.transport.subscribe import MaskSubscriber

MS = 1_000_000
HOP_NS = 10 * MS  # log-mel hop: the wanted window ends up to one hop before the wanted time


@pytest.fixture(scope="module")
def engine_parts() -> tuple[Any, int]:
    model, _, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra.get("data", {}).get("image_size") or 128)


def run_demo(engine_parts: tuple[Any, int], policy: PairingPolicy, block_ms: int,
             max_lag_ms: float = 40.0, masks: int = 25) -> tuple[list[dict[str, Any]],
                                                                 dict[str, Any]]:
    """The demo scene at 10 FPS with audio in ``block_ms`` blocks -> (published mask headers,
    the pipeline's counters)."""
    model, size = engine_parts
    frames, audio = FrameRing(4), AudioRing(10 * SAMPLE_RATE)
    demo = DemoSource(frames, audio, fps=10, size=96, seed=3, block_ms=block_ms)
    url = f"inproc://pairing-{uuid.uuid4().hex}"
    headers: list[dict[str, Any]] = []
    with MaskPublisher(url, stats_interval_s=None) as pub, \
            MaskSubscriber(url, topic="mask/cam0", timeout_s=2.0, rcvhwm=1000) as sub:
        pipeline = LivePipeline(frames=frames, audio=audio, sources=[demo],
                                engine=StreamingEngine(model, size, "cpu"), publisher=pub,
                                threshold=0.5, model_name="demo", max_frames=masks,
                                duration_s=60.0, pairing=policy, max_lag_ms=max_lag_ms)
        assert pub.wait_for_subscriber("mask/cam0", 5.0)
        done = threading.Event()

        def collect() -> None:  # until the run is over and nothing more comes
            while True:
                msg = sub.recv(0.2)
                if msg is not None:
                    headers.append(msg.header)
                elif done.is_set():
                    return

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        demo.start()
        try:
            summary = pipeline.run()
        finally:
            done.set()
            collector.join(5.0)
    assert summary.error is None and summary.published == masks
    return headers, summary.counters


def check_lag(h: dict[str, Any], max_lag_ms: float) -> None:
    """The header's lag is the distance from its window's end to the wanted window's end."""
    lag_ns = round(h["audio_lag_ms"] * MS)
    assert h["audio_lag_ms"] >= 0 and lag_ns % HOP_NS == 0, h
    if h["audio"] == "none":
        assert lag_ns == 0 and h["t_audio_end_ns"] == h["t_capture_ns"]
        return
    assert h["t_audio_end_ns"] - h["t_audio_start_ns"] == 975 * MS
    # wanted window end = the used window's end + lag: at or up to one hop before capture time
    assert 0 <= h["t_capture_ns"] - (h["t_audio_end_ns"] + lag_ns) < HOP_NS, h
    assert h["audio_late"] == (lag_ns > max_lag_ms * MS), h


@pytest.mark.parametrize("block_ms", [20, 120])
def test_latest_pairing_never_waits_and_publishes_the_lag(engine_parts, block_ms):
    """20 ms blocks (the demo default): windows a hop or two early at most; 120 ms blocks (a
    bursty microphone): often more than max_lag behind, flagged late. The engine never waits."""
    headers, counters = run_demo(engine_parts, PairingPolicy.LATEST, block_ms)
    pairing = counters["pairing"]
    assert pairing["wait_ns_total"] == 0 and pairing["wait_ns_max"] == 0
    assert pairing["paired"] == sum(pairing[k] for k in ("on_time", "lagged", "late",
                                                         "no_audio", "unavailable"))
    assert headers and all("audio_lag_ms" in h for h in headers)
    for h in headers:
        check_lag(h, 40.0)
    assert any(h["audio"] == "paired" for h in headers)
    assert max(h["audio_lag_ms"] for h in headers) <= pairing["lag_ns_max"] / MS


def test_exact_pairing_publishes_zero_lag_when_on_time(engine_parts):
    headers, counters = run_demo(engine_parts, PairingPolicy.EXACT, 20)
    assert counters["pairing"]["lagged"] == 0
    for h in headers:
        assert h["audio_lag_ms"] >= 0
        if h["audio"] == "paired" and not h["audio_late"]:
            assert h["audio_lag_ms"] == 0.0
            assert 0 <= h["t_capture_ns"] - h["t_audio_end_ns"] < HOP_NS
