"""CameraSource on a network stream: ffmpeg sends MPEG-TS over UDP on the loopback interface;
the sender is killed and restarted to check reconnecting with backoff."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import Frame
from stream.capture.base import SourceError
from stream.capture.camera import CameraSource
from stream.capture.reconnect import Backoff, ReconnectPolicy

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

W, H, FPS = 160, 120, 15


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UdpTestStream:
    """ffmpeg sending a test pattern (MPEG-2 in MPEG-TS, real time) to a loopback UDP port.

    ``start()`` launches a sender, ``kill()`` ends it (a camera that goes away); ``start()``
    again sends to the same port (the camera coming back). ``url`` is what a receiver opens.
    """

    def __init__(self, seconds: float = 8.0) -> None:
        if shutil.which("ffmpeg") is None:
            pytest.skip("ffmpeg not found (apt-get install ffmpeg)")
        self.seconds, self.port = seconds, free_udp_port()
        self.url = f"udp://127.0.0.1:{self.port}?overrun_nonfatal=1&fifo_size=1000000"
        self._proc: subprocess.Popen[bytes] | None = None
        self.failures: list[str] = []

    def start(self) -> None:
        cmd = [
            "ffmpeg", "-nostdin", "-v", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}", "-t", f"{self.seconds:g}",
            "-c:v", "mpeg2video", "-g", "5",  # a keyframe every 1/3 s: a late receiver starts soon
            "-f", "mpegts", f"udp://127.0.0.1:{self.port}?pkt_size=1316",
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)  # fmt: skip

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        _, err = proc.communicate(timeout=5)
        if proc.returncode not in (0, -9):  # killed is expected; anything else is reported
            self.failures.append(f"ffmpeg failed ({proc.returncode}): "
                                 f"{err.decode(errors='replace')}")


@pytest.fixture
def udp_stream() -> Iterator[str]:
    """ffmpeg sending an 8 s test pattern to a loopback port; yields the URL to open. ffmpeg is
    killed afterwards."""
    sender = UdpTestStream()
    sender.start()
    try:
        yield sender.url
    finally:
        sender.kill()
        if sender.failures:
            pytest.fail(sender.failures[0])


def test_camera_source_reads_a_udp_stream(udp_stream: str) -> None:
    ring = FrameRing(capacity=256)
    cam = CameraSource(udp_stream, ring, stream_timeout_s=5.0)
    assert cam.kind == "stream"
    t_start = time.monotonic_ns()
    cam.start()  # returns once FFmpeg has probed the stream (~1.5 s of it)
    try:
        deadline = time.monotonic() + 6.0
        while len(ring) < 45 and time.monotonic() < deadline and not cam.finished.is_set():
            time.sleep(0.02)
    finally:
        cam.stop()
        cam.join(2.0)
    assert not cam.is_alive(), "stop() must end the thread within 2 s"
    assert cam.error is None, cam.error
    frames: list[Frame] = ring.snapshot()
    assert len(frames) >= 45, f"only {len(frames)} frames in 6 s: {cam.stats()}"
    assert all(f.image.shape == (H, W, 3) and f.image.dtype == np.uint8 for f in frames)
    indices = [f.index for f in frames]
    assert indices == list(range(indices[0], indices[0] + len(frames)))  # none dropped
    times = np.array([f.t_capture_ns for f in frames])
    assert np.all(np.diff(times) > 0) and times[0] > t_start
    # After the frames FFmpeg buffered while probing, frames come at the sender's 15 fps.
    late = times[times > times[0] + 300_000_000]
    assert late.shape[0] >= 10, (times - times[0]) / 1e6
    fps = (late.shape[0] - 1) / ((late[-1] - late[0]) / 1e9)
    assert fps == pytest.approx(FPS, rel=0.3)
    assert frames[-1].image.std() > 10  # the test pattern, not a blank frame


def test_camera_source_closed_rtsp_port_fails_fast() -> None:
    t = time.monotonic()
    with pytest.raises(SourceError) as info:
        CameraSource("rtsp://127.0.0.1:1/none", FrameRing(4), stream_timeout_s=3.0).start()
    assert time.monotonic() - t < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("stream rtsp://127.0.0.1:1/none could not be opened")


def test_camera_source_silent_udp_port_fails_within_the_timeout() -> None:
    url = f"udp://127.0.0.1:{free_udp_port()}"  # nobody sends there
    t = time.monotonic()
    with pytest.raises(SourceError, match=r"nothing received within 1\.5 s\)$") as info:
        CameraSource(url, FrameRing(4), stream_timeout_s=1.5).start()
    assert 1.0 < time.monotonic() - t < 5.0
    assert "\n" not in str(info.value)


# -- a stream that stops and comes back (fault injected from outside: the sender is killed) ---

FAST_RECONNECT = ReconnectPolicy(initial_delay_s=0.2, max_delay_s=1.0, give_up_s=20.0)


def wait_for(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_camera_source_reconnects_when_the_stream_comes_back() -> None:
    sender = UdpTestStream(seconds=30)
    sender.start()
    ring = FrameRing(capacity=512)
    cam = CameraSource(sender.url, ring, stream_timeout_s=1.5, reconnect=FAST_RECONNECT)
    try:
        cam.start()
        assert wait_for(lambda: cam.frames >= 10, 6.0), cam.stats()
        sender.kill()  # the camera goes away: reads time out, then reopening fails
        assert wait_for(lambda: cam.reconnect_attempts >= 1, 8.0), cam.stats()
        assert cam.stats()["connected"] == 0 and cam.is_alive() and cam.error is None
        before = cam.frames
        last_index = ring.snapshot()[-1].index
        sender.start()  # ... and comes back on the same port
        assert wait_for(lambda: cam.frames >= before + 10, 12.0), cam.stats()
    finally:
        cam.stop()
        cam.join(4.0)
        sender.kill()
    assert not cam.is_alive() and cam.error is None, cam.error
    stats = cam.stats()
    assert stats["reconnects"] >= 1 and stats["connected"] == 1, stats
    assert stats["reconnect_attempts"] >= stats["reconnects"] and stats["read_failures"] > 0
    frames: list[Frame] = ring.snapshot()
    resumed = [f for f in frames if f.index > last_index]
    assert len(resumed) >= 10 and resumed[-1].image.std() > 10
    indices, times = [f.index for f in frames], [f.t_capture_ns for f in frames]
    assert indices == sorted(set(indices)) and times == sorted(times)  # counting on, one clock
    assert not sender.failures, sender.failures


def test_camera_source_gives_up_after_give_up_s() -> None:
    sender = UdpTestStream(seconds=30)
    sender.start()
    policy = ReconnectPolicy(initial_delay_s=0.2, max_delay_s=0.4, give_up_s=3.0)
    cam = CameraSource(sender.url, FrameRing(8), stream_timeout_s=1.0, reconnect=policy)
    try:
        cam.start()
        assert wait_for(lambda: cam.frames >= 5, 6.0), cam.stats()
        sender.kill()
        assert wait_for(cam.finished.is_set, 10.0), cam.stats()
    finally:
        cam.stop()
        cam.join(3.0)
        sender.kill()
    assert isinstance(cam.error, SourceError)
    message = str(cam.error)
    assert "\n" not in message and message.startswith(f"stream {sender.url} stopped delivering")
    assert "could not be reopened within 3 s" in message
    assert cam.stats()["reconnects"] == 0 and cam.stats()["reconnect_attempts"] >= 1


def test_reconnect_disabled_ends_the_source() -> None:
    sender = UdpTestStream(seconds=30)
    sender.start()
    cam = CameraSource(sender.url, FrameRing(8), stream_timeout_s=1.0,
                       reconnect=ReconnectPolicy(enabled=False))
    try:
        cam.start()
        assert wait_for(lambda: cam.frames >= 5, 6.0), cam.stats()
        sender.kill()
        assert wait_for(cam.finished.is_set, 6.0), cam.stats()
    finally:
        cam.stop()
        cam.join(3.0)
        sender.kill()
    assert isinstance(cam.error, SourceError) and "stopped delivering frames" in str(cam.error)
    assert cam.stats()["reconnect_attempts"] == 0


def test_backoff_doubles_to_the_cap_and_gives_up_from_the_last_frame() -> None:
    backoff = Backoff(ReconnectPolicy(initial_delay_s=0.5, max_delay_s=3.0, give_up_s=10.0),
                      t_lost_ns=1_000_000_000)
    assert [backoff.next_delay_s() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backoff.attempts == 6
    assert not backoff.expired(10_999_999_999) and backoff.expired(11_000_000_000)
    assert not Backoff(ReconnectPolicy(give_up_s=None), 0).expired(10**18)
    bad = ReconnectPolicy(initial_delay_s=0, max_delay_s=-1, give_up_s=0)
    assert [k for k, _ in bad.problems()] == ["initial_delay_s", "max_delay_s", "give_up_s"]
