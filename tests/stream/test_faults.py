"""Faults injected into a running pipeline from outside it: a network camera that goes away and
comes back, frames the engine cannot process, a microphone whose worker falls behind, a
subscriber that stalls or dies.

Everything runs for real on loopback: ffmpeg sends the camera over UDP, run_live.py runs in its
own process, subscribers are processes or sockets of this one. Waits are bounded.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.checkpoint import load_checkpoint
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame
from stream.capture.base import SAMPLE_RATE, _SourceThread
from stream.capture.demo import DemoSource
from stream.engine.engine import StreamingEngine
from stream.run.pipeline import LivePipeline, PipelineError
from stream.transport.publish import MaskPublisher
from stream.transport.subscribe import MaskMessage, MaskSubscriber
from tests.stream.test_network_camera import UdpTestStream
from tests.stream.test_run_live import RUN_LIVE, free_port

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py


class Watch:
    """Receives masks and stats of one stream in this process and keeps what matters."""

    def __init__(self, url: str, stream: str) -> None:
        self.sub = MaskSubscriber(url, topic=[f"mask/{stream}", f"stats/{stream}"])
        self.masks: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}

    def until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Receive until ``cond()`` holds (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            msg: MaskMessage | None = self.sub.recv(min(left, 0.2))
            if msg is None:
                continue
            if msg.mask is None:
                self.stats = msg.header
            else:
                self.masks.append(msg.header)
        return True

    def camera(self) -> dict[str, int]:
        return dict(self.stats.get("counters", {}).get("sources", {}).get("camera", {}))

    def close(self) -> None:
        self.sub.close()


def stop_run_live(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    """Signal run_live.py, wait for it (bounded) and return its stderr; exit status must be 0."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # run_live dumps every thread's stack (faulthandler)
        time.sleep(1)
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"run_live.py did not stop within 15 s:\n{err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_run_live_reconnects_a_network_camera_and_masks_resume() -> None:
    sender = UdpTestStream(seconds=60)
    sender.start()
    url = f"tcp://127.0.0.1:{free_port()}"
    watch = Watch(url, "rc")
    proc = subprocess.Popen(
        [*RUN_LIVE, "--camera", sender.url, "--zmq", url, "--stream", "rc", "--duration", "120",
         "--wait-subscriber", "10", "--set", "live.source.stream_timeout_s=1.5",
         "--set", "live.source.reconnect={initial_delay_s: 0.2, max_delay_s: 1.0}",
         "--set", "live.publish.stats_interval_s=0.25"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert watch.until(lambda: len(watch.masks) >= 5, 60), "no masks before the outage"
        sender.kill()                                         # the camera goes away ...
        assert watch.until(lambda: watch.camera().get("reconnect_attempts", 0) >= 1, 10), \
            watch.stats
        assert watch.camera()["connected"] == 0 and proc.poll() is None
        last_before = max(h["frame_index"] for h in watch.masks)
        seq_before = max(h["seq"] for h in watch.masks)
        sender.start()                                        # ... and comes back
        assert watch.until(lambda: watch.camera().get("reconnects", 0) >= 1
                           and sum(h["frame_index"] > last_before for h in watch.masks) >= 5,
                           20), watch.stats
    finally:
        watch.close()
        sender.kill()
        err = stop_run_live(proc)
    resumed = [h for h in watch.masks if h["frame_index"] > last_before]
    assert all(h["seq"] > seq_before for h in resumed)       # one seq stream, no restart
    assert "stopped delivering frames: reconnecting" in err and "reopened after" in err
    assert not sender.failures, sender.failures


# -- frames the engine cannot process --------------------------------------------------------


class FrameFeeder(_SourceThread):
    """A source that delivers the given images one at a time, each once the engine has taken
    the previous one (so every frame reaches the engine), 40 ms apart on the real clock."""

    def __init__(self, images: Sequence[np.ndarray], ring: FrameRing) -> None:
        super().__init__("feeder", time.monotonic_ns, time.sleep)
        self.images, self.ring = images, ring

    def _run(self) -> None:
        for i, image in enumerate(self.images):
            while len(self.ring) and not self.stopping:
                time.sleep(0.002)
            if not self._sleep_until(self._clock() + 40_000_000):
                return
            self.ring.put(Frame(image, self._clock(), i))
            self.frames += 1
        while len(self.ring) and not self.stopping:      # the last frame reaches the engine
            time.sleep(0.002)


@pytest.fixture(scope="module")
def engine_parts() -> tuple[Any, int]:
    model, _, extra = load_checkpoint(DEMO_CHECKPOINT)
    return model, int(extra.get("data", {}).get("image_size") or 128)


def run_frames(images: Sequence[np.ndarray], engine_parts: tuple[Any, int],
               max_consecutive_errors: int) -> LivePipeline:
    model, size = engine_parts
    ring = FrameRing(4)
    feeder = FrameFeeder(images, ring)
    with MaskPublisher(f"inproc://faults-{uuid.uuid4().hex}", stats_interval_s=None) as pub:
        pipeline = LivePipeline(frames=ring, audio=None, sources=[feeder],
                                engine=StreamingEngine(model, size, "cpu"), publisher=pub,
                                threshold=0.5, model_name="demo", duration_s=60,
                                max_consecutive_errors=max_consecutive_errors)
        feeder.start()
        try:
            pipeline.run()
        finally:
            pipeline.shutdown()
    return pipeline


GOOD = np.full((96, 96, 3), 90, np.uint8)                    # (H, W, 3) uint8 BGR
GREY = np.full((96, 96), 90, np.uint8)                       # a camera gone greyscale
EMPTY = np.zeros((0, 0, 3), np.uint8)                        # a frame with no pixels


def test_a_frame_that_raises_is_dropped_logged_once_and_the_run_goes_on(
        engine_parts: tuple[Any, int], caplog: pytest.LogCaptureFixture) -> None:
    images = [GOOD] * 3 + [GREY, GREY, EMPTY] + [GOOD] * 3 + [GREY] + [GOOD] * 2
    with caplog.at_level(logging.ERROR, logger="stream.run.pipeline"):
        pipeline = run_frames(images, engine_parts, max_consecutive_errors=4)
    s = pipeline._summary
    assert s.reason == "end of input" and s.error is None
    assert s.frame_errors == 4 and s.published == len(images) - 4
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2, dropped                        # once per distinct cause
    assert "frame 3 dropped: ValueError: expected a (H, W, 3) uint8 BGR frame" in dropped[0]
    assert dropped[1].startswith("frame 5 dropped: RuntimeError")


def test_frames_that_keep_failing_stop_the_run_with_the_cause(
        engine_parts: tuple[Any, int]) -> None:
    images = [GOOD] * 2 + [GREY] * 8
    with pytest.raises(PipelineError) as err:
        run_frames(images, engine_parts, max_consecutive_errors=5)
    assert str(err.value) == ("5 frames in a row failed in the engine; last cause: ValueError: "
                              "expected a (H, W, 3) uint8 BGR frame, got (96, 96) torch.uint8")


# -- a microphone whose worker falls behind ----------------------------------------------------


def starve_other_threads(seconds: float) -> None:
    """Hold the GIL in long slices for ``seconds``: the process is too busy to serve its
    threads, as on an overloaded machine. The microphone's worker then falls behind
    PortAudio's callback and its staging ring overflows."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.3)
    try:
        t_end, x = time.monotonic() + seconds, 0
        while time.monotonic() < t_end:
            x += 1
    finally:
        sys.setswitchinterval(interval)


def test_microphone_overflow_is_counted_and_pairing_goes_on(pulse_env: Any, engine_parts:
                                                            tuple[Any, int]) -> None:
    from stream.capture.mic import MicSource

    model, size = engine_parts
    frames, audio = FrameRing(4), AudioRing(10 * SAMPLE_RATE)
    demo = DemoSource(frames, None, fps=10, size=96, seed=3)          # video only, real time
    mic = MicSource("pulse", audio, staging_s=0.05)                  # ~50 ms of staging
    url = f"inproc://mic-{uuid.uuid4().hex}"
    engine = StreamingEngine(model, size, "cpu")    # built first, as run_live builds it
    with MaskPublisher(url, stats_interval_s=0.25) as pub, \
            MaskSubscriber(url, topic=["mask/cam0", "stats/cam0"], timeout_s=2.0) as sub:
        pipeline = LivePipeline(frames=frames, audio=audio, sources=[mic, demo],
                                engine=engine, publisher=pub,
                                threshold=0.5, model_name="demo", duration_s=7.0)
        pub.set_stats_provider(pipeline.counters)
        assert pub.wait_for_subscriber("stats/cam0", 5.0)
        mic.start()
        demo.start()
        t_stall: list[int] = []

        def inject() -> None:
            time.sleep(2.5)                          # audio windows exist, masks are paired
            t_stall.append(time.monotonic_ns())
            starve_other_threads(1.2)
            t_stall.append(time.monotonic_ns())

        masks: list[dict[str, Any]] = []
        stats: list[dict[str, Any]] = []
        done = threading.Event()

        def collect() -> None:
            while not done.is_set():
                msg = sub.recv(0.1)
                if msg is not None:
                    (stats if msg.mask is None else masks).append(msg.header)

        injector = threading.Thread(target=inject, daemon=True)
        collector = threading.Thread(target=collect, daemon=True)
        injector.start()
        collector.start()
        try:
            summary = pipeline.run()
        finally:
            injector.join(5.0)
            time.sleep(0.5)                          # the last stats message
            done.set()
            collector.join(2.0)
    assert summary.reason == "duration reached" and summary.error is None
    counted = summary.counters["sources"]["mic"]
    assert counted["dropped_frames"] > 0, counted                   # the overflow is counted ...
    assert any(h["counters"]["sources"]["mic"]["dropped_frames"] > 0 for h in stats)  # ... and sent
    ring = summary.counters["audio_ring"]
    assert ring["gap"] == 0                       # zeros stand in for the lost audio: time linear
    assert ring["written"] >= 5.0 * SAMPLE_RATE   # ~7 s of audio, the stall included
    after = [h for h in masks if h["t_capture_ns"] > t_stall[1] + 500_000_000]
    assert len(after) >= 5, len(after)            # masks go on after the stall ...
    for h in after:                               # ... paired with audio ending at capture time
        assert h["audio"] == "paired"
        assert abs(h["t_capture_ns"] - h["t_audio_end_ns"]) < 60_000_000 or h["audio_late"]


# -- a subscriber that stalls, and one that dies -----------------------------------------------


def test_stalled_and_killed_subscribers_do_not_hold_up_a_healthy_one(tmp_path: Any) -> None:
    from tests.conftest import REPO

    url = f"tcp://127.0.0.1:{free_port()}"
    watch = Watch(url, "sub")                                  # the healthy subscriber
    proc = subprocess.Popen(
        [*RUN_LIVE, "--demo", "--zmq", url, "--stream", "sub", "--duration", "90",
         "--wait-subscriber", "10", "--set", "live.publish.stats_interval_s=0.25"],
        stderr=subprocess.PIPE, text=True)

    def other_subscriber() -> subprocess.Popen[bytes]:
        """A subscriber process (pyzmq only) that reads masks until it is stopped or killed."""
        return subprocess.Popen([sys.executable, str(REPO / "tests/stream/raw_subscriber.py"),
                                 url, "mask/sub", "1000000", str(tmp_path / "x.npz"), "60"],
                                stdout=subprocess.DEVNULL)

    def stat(key: str) -> int:
        return int(watch.stats.get(key, 0))

    others = []
    try:
        assert watch.until(lambda: len(watch.masks) >= 10, 60), "no masks"
        stalled = other_subscriber()
        others.append(stalled)
        assert watch.until(lambda: stat("subscribers") >= 2, 20), watch.stats
        seq_start = watch.masks[-1]["seq"]
        time.sleep(0.5)
        stalled.send_signal(signal.SIGSTOP)                    # frozen: reads nothing, answers
        t_stop = time.monotonic()
        assert watch.until(lambda: stat("subscribers_lost") >= 1, 15), watch.stats  # no PING
        print(f"disconnected after {time.monotonic() - t_stop:.2f} s; "
              f"dropped {stat('dropped_at_socket')}")
        n_before = len(watch.masks)
        t_end = time.monotonic() + 1.0
        assert watch.until(lambda: time.monotonic() > t_end, 5)
        assert len(watch.masks) > n_before                     # the healthy one still receives
        stalled.kill()                                         # ... then dies while frozen
        killed = other_subscriber()
        others.append(killed)
        assert watch.until(lambda: stat("subscribers") >= 2, 20), watch.stats
        killed.kill()                                          # a subscriber that dies
        assert watch.until(lambda: stat("subscribers_lost") >= 2, 10), watch.stats
        t_end = time.monotonic() + 1.0
        assert watch.until(lambda: time.monotonic() > t_end, 5)
        seq_end = watch.masks[-1]["seq"]
        dropped = stat("dropped_at_socket")
    finally:
        for other in others:
            other.kill()
            other.wait(5)
        watch.close()
        stop_run_live(proc)
    seqs = [h["seq"] for h in watch.masks if seq_start <= h["seq"] <= seq_end]
    missing = seq_end - seq_start + 1 - len(seqs)
    assert missing <= dropped, (missing, dropped)             # every gap is a counted drop
    assert len(seqs) >= 0.9 * (seq_end - seq_start + 1), (len(seqs), seq_start, seq_end)
    assert stat("subscribers") == 1                            # only the healthy one is left
