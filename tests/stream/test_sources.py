"""Sources on real files: CameraSource (OpenCV), MediaFileSource (PyAV), DemoSource; stop."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.stream import VideoStream

from pcmanet.data.synthetic_demo import write_demo_video
from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame
from stream.capture.base import SourceError
from stream.capture.camera import CameraSource
from stream.capture.demo import DemoSource
from stream.capture.media_file import MediaFileSource

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

FPS, SIZE, SECONDS = 30, 64, 2.0
NUM_FRAMES = round(FPS * SECONDS)
SR = 16_000
JOIN_S = 20.0  # bound on a whole file's decode; never reached in a passing run


@pytest.fixture(scope="module")
def demo_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "demo.mp4"
    write_demo_video(path, SECONDS, size=SIZE, fps=FPS, seed=0)
    return path


@pytest.fixture(scope="module")
def video_only_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "video_only.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        assert isinstance(stream, VideoStream)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(30):
            image = np.full((SIZE, SIZE, 3), 8 * i, np.uint8)  # (H, W, 3) uint8 BGR
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    return path


class FakeClock:
    """Monotonic ns clock that only moves when slept on (thread-safe)."""

    def __init__(self, t0_ns: int = 1_000_000_000) -> None:
        self.t_ns, self.slept_s, self._lock = t0_ns, 0.0, threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self.t_ns

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.t_ns += round(seconds * 1e9)
            self.slept_s += seconds


def drain(ring: FrameRing) -> list[Frame]:
    frames = []
    while (f := ring.get()) is not None:
        frames.append(f)
    return frames


def start_then_stop(source, run_s: float) -> None:
    """Start the source, let it run ``run_s``, stop it: its thread must end within 2 s."""
    source.start()
    time.sleep(run_s)
    t = time.monotonic()
    source.stop()
    source.join(2.0)
    assert not source.is_alive() and time.monotonic() - t < 2.0


def run_to_end(source: CameraSource | MediaFileSource | DemoSource) -> None:
    source.start()
    source.join(JOIN_S)
    assert not source.is_alive(), "source did not finish"
    assert source.finished.is_set() and source.error is None, source.error


def assert_increasing(frames: list[Frame]) -> None:
    assert [f.index for f in frames] == list(range(len(frames)))
    times = [f.t_capture_ns for f in frames]
    assert all(a < b for a, b in itertools.pairwise(times)), times


# -- CameraSource ---------------------------------------------------------------------------


def test_camera_source_reads_a_whole_file(demo_mp4: Path) -> None:
    ring = FrameRing(capacity=128)
    source = CameraSource(str(demo_mp4), ring)
    run_to_end(source)
    frames = drain(ring)
    assert len(frames) == NUM_FRAMES == source.frames
    assert_increasing(frames)
    assert frames[0].image.shape == (SIZE, SIZE, 3) and frames[0].image.dtype == np.uint8
    assert source.kind == "file" and source.errors == 0


def test_camera_source_paces_a_file_with_fps_hint(demo_mp4: Path) -> None:
    clock, ring = FakeClock(), FrameRing(capacity=128)
    source = CameraSource(str(demo_mp4), ring, clock=clock, fps_hint=FPS, sleep=clock.sleep)
    run_to_end(source)
    frames = drain(ring)
    assert len(frames) == NUM_FRAMES
    step = [b.t_capture_ns - a.t_capture_ns for a, b in itertools.pairwise(frames)]
    assert all(abs(d - 1e9 / FPS) < 1e6 for d in step), step  # one frame period each


def test_camera_source_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "x.mp4"
    with pytest.raises(SourceError, match=r"^video file .*x\.mp4 not found$"):
        CameraSource(str(missing), FrameRing(4)).start()


def test_camera_source_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match=r"^video file .*bad\.mp4 could not be opened"):
        CameraSource(str(bad), FrameRing(4)).start()


@pytest.mark.parametrize("device", [97, "97"])
def test_camera_source_bad_index(device: int | str) -> None:
    with pytest.raises(
        SourceError,
        match=r"^camera 97 could not be opened: no such device "
        r"\(run with --list-devices\)$",
    ):
        CameraSource(device, FrameRing(4)).start()


def test_camera_source_bad_stream() -> None:
    source = CameraSource("file:///nonexistent/stream.ts", FrameRing(4))
    assert source.kind == "stream"
    with pytest.raises(SourceError, match=r"^stream file:///nonexistent/stream\.ts could not"):
        source.start()


def test_camera_source_stop(demo_mp4: Path) -> None:
    clock, ring = FakeClock(), FrameRing(capacity=4)
    slow = threading.Event()

    def sleep(seconds: float) -> None:  # paced "real time" that never advances on its own
        slow.wait(0.01)

    source = CameraSource(str(demo_mp4), ring, clock=clock, fps_hint=FPS, sleep=sleep)
    start_then_stop(source, run_s=0.05)
    assert source.finished.is_set() and source.error is None


# -- MediaFileSource ------------------------------------------------------------------------


def test_media_file_source_video_and_audio(demo_mp4: Path) -> None:
    clock, ring, audio = FakeClock(), FrameRing(capacity=128), AudioRing(4 * SR)
    source = MediaFileSource(demo_mp4, ring, audio, realtime=False, clock=clock)
    run_to_end(source)
    assert source.has_audio and clock.slept_s == 0.0
    frames = drain(ring)
    assert abs(len(frames) - NUM_FRAMES) <= 1 and source.frames == len(frames)
    assert_increasing(frames)
    assert frames[0].image.shape == (SIZE, SIZE, 3) and frames[0].image.dtype == np.uint8
    # ~2 s of 16 kHz audio (AAC pads the last packet)
    assert audio.end_sample == source.audio_samples
    assert abs(audio.end_sample - SECONDS * SR) <= 0.05 * SECONDS * SR, audio.end_sample
    # Both streams on one clock: t0 + container pts. Frame i shows time i / fps; the audio
    # sample at that time was captured at (nearly) the same instant.
    t0 = source.t0_ns
    assert t0 is not None and audio.t0_ns is not None
    for f in frames:
        assert abs(f.t_capture_ns - (t0 + f.index * 1e9 / FPS)) < 2e6
        s = round(f.index * SR / FPS)
        assert abs(audio.time_of(s) - f.t_capture_ns) < 50e6
    assert audio.stats()["gap"] == 0
    samples = audio.peek(0, audio.end_sample)
    assert samples is not None and samples.dtype == np.float32 and np.abs(samples).max() > 0.01


def test_media_file_source_realtime_paces_with_the_injected_clock(demo_mp4: Path) -> None:
    clock, ring, audio = FakeClock(), FrameRing(capacity=128), AudioRing(4 * SR)
    source = MediaFileSource(demo_mp4, ring, audio, realtime=True, clock=clock, sleep=clock.sleep)
    run_to_end(source)
    assert abs(clock.slept_s - SECONDS) < 0.1, clock.slept_s  # paced over ~the file's length
    assert abs(len(drain(ring)) - NUM_FRAMES) <= 1


def test_media_file_source_video_only(video_only_mp4: Path) -> None:
    ring, audio = FrameRing(capacity=64), AudioRing(SR)
    source = MediaFileSource(video_only_mp4, ring, audio, realtime=False)
    run_to_end(source)
    assert not source.has_audio and source.audio_samples == 0 and audio.end_sample == 0
    frames = drain(ring)
    assert len(frames) == 30
    assert_increasing(frames)
    assert int(frames[5].image.mean()) in range(38, 43)  # frame 5 was filled with 40


def test_media_file_source_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^media file .*nope\.mp4 not found$"):
        MediaFileSource(tmp_path / "nope.mp4", FrameRing(4), AudioRing(SR)).start()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(SourceError, match=r"^media file .*bad\.mp4 could not be opened"):
        MediaFileSource(bad, FrameRing(4), AudioRing(SR)).start()


def test_media_file_source_stop(demo_mp4: Path) -> None:
    ring, audio = FrameRing(capacity=4), AudioRing(4 * SR)
    source = MediaFileSource(demo_mp4, ring, audio, realtime=True)  # real clock: ~2 s file
    start_then_stop(source, run_s=0.2)
    assert 0 < source.frames < NUM_FRAMES and source.error is None


# -- DemoSource -----------------------------------------------------------------------------


def test_demo_source_fast(tmp_path: Path) -> None:
    n = 15
    clock, ring, audio = FakeClock(), FrameRing(capacity=64), AudioRing(4 * SR)
    source = DemoSource(
        ring,
        audio,
        fps=FPS,
        size=SIZE,
        seed=3,
        realtime=False,
        clock=clock,
        sleep=clock.sleep,
        max_frames=n,
    )
    run_to_end(source)
    frames = drain(ring)
    assert len(frames) == n == source.frames and clock.slept_s == 0.0
    assert_increasing(frames)
    t0 = source.t0_ns
    assert t0 is not None and audio.t0_ns == t0
    expected_samples = round(n * SR / FPS)
    assert audio.end_sample == source.audio_samples == expected_samples
    for f in frames[:3] + frames[-2:]:
        assert f.t_capture_ns == round(t0 + f.index * 1e9 / FPS)
        image, mask, _ = source.scene.frame(f.index)  # ground truth recomputed by index
        assert np.array_equal(f.image, image) and mask.shape == (SIZE, SIZE)
    got = audio.peek(0, expected_samples)
    assert got is not None
    np.testing.assert_array_equal(got, source.scene.audio(0, expected_samples))


def test_demo_source_realtime_interleaves_on_the_injected_clock() -> None:
    clock, ring, audio = FakeClock(), FrameRing(capacity=64), AudioRing(4 * SR)
    source = DemoSource(
        ring,
        audio,
        fps=FPS,
        size=32,
        realtime=True,
        clock=clock,
        sleep=clock.sleep,
        block_ms=20,
        max_frames=9,
    )
    run_to_end(source)
    assert len(drain(ring)) == 9
    assert abs(clock.slept_s - 9 / FPS) < 0.01, clock.slept_s  # ended with the last audio block
    assert audio.end_sample == round(9 * SR / FPS)


def test_demo_source_stop() -> None:
    ring, audio = FrameRing(capacity=4), AudioRing(SR)
    source = DemoSource(ring, audio, fps=FPS, size=32, realtime=True)  # endless, real clock
    start_then_stop(source, run_s=0.2)
    assert source.frames > 0 and source.audio_samples > 0 and source.error is None
