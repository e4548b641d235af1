"""CameraSource on a network stream: ffmpeg sends MPEG-TS over UDP on the loopback interface."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest

from stream.buffers import FrameRing
from stream.frames import Frame
from stream.sources import CameraSource, SourceError

W, H, FPS = 160, 120, 15


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def udp_stream() -> Iterator[str]:
    """ffmpeg sending an 8 s test pattern (MPEG-2 in MPEG-TS, real time) to a loopback port;
    yields the URL to open. ffmpeg is killed afterwards."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not found (apt-get install ffmpeg)")
    port = free_udp_port()
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc=size={W}x{H}:rate={FPS}", "-t", "8",
        "-c:v", "mpeg2video", "-g", "5",  # a keyframe every 1/3 s: a late receiver starts soon
        "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        yield f"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=1000000"
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        if proc.returncode not in (0, -9):  # killed is expected; anything else is reported
            pytest.fail(f"ffmpeg failed ({proc.returncode}): {err.decode(errors='replace')}")


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
