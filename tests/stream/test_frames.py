"""The optional `frame/<stream>` topic: a frame per n-th mask, as JPEG, under its mask's seq.

Real ZMQ sockets on 127.0.0.1 (port `*`: the OS picks one); every receive has a timeout.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from pcmanet.config import ConfigError
from stream.run.config import load_live_config
from stream.transport.frames import FrameOptions, encode_frame, frame_header
from stream.transport.messages import MessageError, dumps, jpeg_size, parse_message
from stream.transport.publish import MaskPublisher
from stream.transport.subscribe import MaskSubscriber, format_line
from tests.conftest import REPO

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

TIMEOUT_S = 5.0
H, W = 96, 128


def two_tone() -> np.ndarray:
    """(H, W, 3) BGR: left half red, right half blue."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (0, 0, 220)
    img[:, W // 2:] = (220, 0, 0)
    return img


def publish_pair(pub: MaskPublisher, i: int, image: np.ndarray, stream: str | None = None
                 ) -> int:
    t = time.monotonic_ns()
    seq = pub.publish(np.zeros(image.shape[:2], np.float32), 100 + i, t, t, t, 1.0, 0.5, "m",
                      stream=stream)
    pub.publish_frame(image, seq, 100 + i, t, stream=stream)
    return seq


def receive(sub: MaskSubscriber, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        msg = sub.recv(TIMEOUT_S)
        assert msg is not None, f"only {len(out)} of {n} messages: {sub.counters()}"
        out.append(msg)
    return out


def test_every_nth_frame_goes_out_scaled_under_its_masks_seq() -> None:
    opts = FrameOptions(every=2, quality=90, max_side=64)
    with MaskPublisher("tcp://127.0.0.1:*", "cam0", sndhwm=100, frames=opts,
                       stats_interval_s=None) as pub, \
            MaskSubscriber(pub.endpoint or "", topic=["mask/cam0", "frame/cam0"],
                           rcvhwm=100) as sub:
        assert pub.wait_for_subscriber("frame/cam0", TIMEOUT_S)
        for i in range(6):
            publish_pair(pub, i, two_tone())
        msgs = receive(sub, 6 + 3)
        masks = {m.header["seq"]: m for m in msgs if m.kind == "mask"}
        frames = {m.header["seq"]: m for m in msgs if m.kind == "frame"}
        assert sorted(masks) == list(range(6)) and sorted(frames) == [0, 2, 4]
        for seq, f in frames.items():
            h = f.header
            assert h["frame_index"] == masks[seq].header["frame_index"] == 100 + seq
            assert h["t_capture_ns"] == masks[seq].header["t_capture_ns"]
            assert (h["height"], h["width"], h["source_height"], h["source_width"]) == \
                (48, 64, H, W)
            assert h["every"] == 2 and h["quality"] == 90 and f.mask is None
            img = f.image
            assert img is not None and img.shape == (48, 64, 3) and img.dtype == np.uint8
            assert np.abs(img[24, 10].astype(int) - (0, 0, 220)).max() < 30      # red half
            assert np.abs(img[24, 54].astype(int) - (220, 0, 0)).max() < 30      # blue half
            assert re.fullmatch(r"frame/cam0 seq=\d+ frame=\d+ size=64x48 latency_ms=\S+",
                                format_line(f, False))
        counts = pub.counters()
        assert (counts["frames_sent"], counts["frames_dropped_at_socket"]) == (3, 0)
        assert sub.rejected == 0


def test_stats_count_frames_and_say_how_they_are_sent() -> None:
    opts = FrameOptions(every=3, quality=70, max_side=None)
    with MaskPublisher("tcp://127.0.0.1:*", "cam0", sndhwm=100, frames=opts,
                       stats_interval_s=None) as pub, \
            MaskSubscriber(pub.endpoint or "", topic="stats/cam0") as sub:
        assert pub.wait_for_subscriber("stats/cam0", TIMEOUT_S)
        for i in range(4):
            publish_pair(pub, i, two_tone())
        assert pub.publish_stats()
        (stats,) = receive(sub, 1)
        assert stats.header["frames_sent"] == 2                         # seq 0 and 3
        assert stats.header["frames_dropped_at_socket"] == 0
        assert stats.header["frames"] == {"every": 3, "quality": 70, "max_side": None}


def test_frames_are_off_by_default_and_mask_subscribers_never_see_them() -> None:
    """Schema v1 subscribers of mask/ and stats/ get exactly what they got before."""
    ctx = zmq.Context.instance()
    with MaskPublisher("tcp://127.0.0.1:*", "cam0", sndhwm=100, stats_interval_s=None) as off:
        assert not off.publish_frame(two_tone(), 0, 0, 0)
        assert off.counters()["frames_sent"] == 0
    with MaskPublisher("tcp://127.0.0.1:*", "cam0", sndhwm=100, frames=FrameOptions(),
                       stats_interval_s=None) as pub:
        raw = ctx.socket(zmq.SUB)
        raw.setsockopt(zmq.LINGER, 0)
        for prefix in (b"mask/", b"stats/"):
            raw.setsockopt(zmq.SUBSCRIBE, prefix)
        raw.connect(pub.endpoint or "")
        try:
            assert pub.wait_for_subscriber("stats/cam0", TIMEOUT_S)
            for i in range(3):
                publish_pair(pub, i, two_tone())
            pub.publish_stats()
            topics = []
            for _ in range(4):
                assert raw.poll(int(TIMEOUT_S * 1000))
                parts = raw.recv_multipart()
                topic, header, _ = parse_message(parts)
                topics.append(topic)
                assert header.get("encoding") != "jpeg"
            # one connection keeps the order: a frame sent to it would have come before stats
            assert topics == ["mask/cam0"] * 3 + ["stats/cam0"]
        finally:
            raw.close(linger=0)
        assert pub.counters()["frames_sent"] == 3           # the frames went out (to no one)


def frame_message(**changes: Any) -> list[bytes]:
    payload, h, w = encode_frame(two_tone(), FrameOptions(max_side=None))
    header = frame_header("cam0", 3, 7, 1, 2, (h, w), (H, W), FrameOptions())
    header.update(changes)
    return [b"frame/cam0", dumps({k: v for k, v in header.items() if v is not None}), payload]


def test_a_valid_frame_message_decodes_to_bgr() -> None:
    topic, header, image = parse_message(frame_message())
    assert topic == "frame/cam0" and header["seq"] == 3 and header["frame_index"] == 7
    assert image is not None and image.shape == (H, W, 3)


MALFORMED = {
    "missing key": (frame_message(source_width=None), "missing keys ['source_width']"),
    "encoding": (frame_message(encoding="png"), "frame encoding 'png'"),
    "size mismatch": (frame_message(height=H + 1), f"jpeg is {H}x{W}, header says {H + 1}x{W}"),
    "huge": (frame_message(height=1 << 20, width=1 << 20), "must be positive and at most"),
    "negative seq": (frame_message(seq=-1), "seq and frame_index must be >= 0"),
    "not a jpeg": ([b"frame/cam0", frame_message()[1], b"\x89PNG...."], "is not a JPEG"),
    "truncated": ([b"frame/cam0", frame_message()[1], frame_message()[2][:40]], "JPEG"),
    "stream": (frame_message(stream="cam1"), "!= topic stream"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_bad_frame_messages_are_rejected_with_a_reason(name: str) -> None:
    frames, reason = MALFORMED[name]
    with pytest.raises(MessageError, match=re.escape(reason)):
        parse_message(frames)


def test_jpeg_size_reads_the_header_without_decoding() -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))
    assert ok and jpeg_size(buf.tobytes()) == (37, 53)
    assert jpeg_size(b"\xff\xd8\xff") is None and jpeg_size(b"GIF89a") is None


@pytest.mark.parametrize(("override", "expected"), [
    ("live.publish.frames.quality=0", "live.publish.frames.quality must be in 1..100"),
    ("live.publish.frames.every=0", "live.publish.frames.every must be >= 1"),
    ("live.publish.frames.max_side=8", "live.publish.frames.max_side must be >= 16"),
    ("live.publish.frames.qualty=5", "live.publish.frames.qualty: unknown key"),
])
def test_frame_settings_are_checked(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_live_config([], [override])


def test_frame_settings_make_the_publishers_options() -> None:
    cfg = load_live_config([], ["live.publish.frames.enabled=true",
                                "live.publish.frames.every=4", "live.publish.frames.max_side=null"])
    assert cfg.publish.frames.options() == FrameOptions(every=4, quality=80, max_side=None)
    assert load_live_config().publish.frames.options() is None          # off by default


@pytest.mark.slow
def test_run_live_frames_pair_with_the_demo_masks() -> None:
    """run_live.py --demo --frames: each mask has its frame, same seq and frame_index."""
    with socket.socket() as s:                                          # a free port
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    n = 4
    with MaskSubscriber(url, topic=["mask/cam0", "frame/cam0"], rcvhwm=100) as sub:
        live = subprocess.Popen([sys.executable, str(REPO / "run_live.py"), "--demo", "--frames",
                                 "--max-frames", str(n), "--zmq", url, "--wait-subscriber", "60",
                                 "--set", "live.publish.sndhwm=50"],
                                cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            msgs = receive_until(sub, 2 * n, 120.0)
            _, err = live.communicate(timeout=60)
            assert live.returncode == 0, err
        finally:
            live.kill()
    masks = {m.header["seq"]: m.header for m in msgs if m.kind == "mask"}
    frames = {m.header["seq"]: m for m in msgs if m.kind == "frame"}
    assert sorted(masks) == sorted(frames) == list(range(n))
    for seq, f in frames.items():
        assert f.header["frame_index"] == masks[seq]["frame_index"]
        assert f.image is not None and f.image.shape[:2] == (masks[seq]["height"],
                                                            masks[seq]["width"])
    print(json.dumps({s: f.header["frame_index"] for s, f in frames.items()}))


def receive_until(sub: MaskSubscriber, n: int, timeout_s: float) -> list[Any]:
    """n messages, waiting up to timeout_s in all (run_live loads its model first)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        msg = sub.recv(min(1.0, max(0.0, deadline - time.monotonic())))
        if msg is not None:
            out.append(msg)
    assert len(out) == n, f"{len(out)} of {n} messages in {timeout_s} s"
    return out
