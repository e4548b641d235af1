"""run_live.py end to end, in separate processes, over real ZeroMQ on loopback.

A demo video with a known sounding-object timeline is written; ``run_live.py --video FILE``
runs the shipped demo model on it and publishes masks; an independent subscriber process
(pyzmq + json only) receives them. The masks must arrive in order and match the object that
is really sounding. Also: the user errors of docs/design.md 7 give one line and exit 2.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pcmanet.data.synthetic_demo import DemoScene, write_demo_video
from tests.conftest import REPO

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

RUN_LIVE = [sys.executable, str(REPO / "run_live.py")]
# Scene seed 12 (disc, hexagon, triangle sounding in turn): offline, the demo model scores 0.90
# on it; over seeds 0-23 it scores 0.81 on average (0.46-0.90; weak on some classes).
# This test checks that the live path (file decode, pairing, engine, ZeroMQ) delivers the
# model's masks intact and aligned, so it uses a scene the model is known to handle.
SEED, SIZE, FPS, SECONDS = 12, 160, 10, 9.0
SETTLE_S = 1.1  # the 0.96 s audio window lies wholly inside the sounding segment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e2e") / "scene.mp4"
    write_demo_video(path, SECONDS, size=SIZE, fps=FPS, seed=SEED)
    return path


def settled_frames(sidecar: dict) -> set[int]:
    """Frames whose sounding object has been sounding for SETTLE_S (and is not silence)."""
    out = set()
    for seg in sidecar["segments"]:
        if seg["sounding"] is None:
            continue
        for f in sidecar["frames"]:
            if seg["start_s"] + SETTLE_S <= f["t"] < seg["end_s"]:
                out.add(f["index"])
    return out


def run_with_subscriber(source: list[str], stream: str, count: int, tmp_path: Path,
                        timeout_s: float = 120) -> tuple[list[dict], np.ndarray]:
    """run_live.py on ``source`` publishing at most ``count`` masks to mask/<stream>, received
    by raw_subscriber.py in another process -> (headers, masks (N, H, W) bool), in arrival
    order. How many masks a real-time source yields depends on the machine's speed (frames
    the engine cannot keep up with are dropped before it, by design), so the check here is
    that the subscriber received exactly the masks run_live says it published."""
    url = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "received.npz"
    # The subscriber waits as long as the run may take (a loaded machine starts run_live
    # slowly), and the publisher's queue holds every mask (a subscriber process descheduled
    # for a while must not lose any: drops at a slow subscriber are tested in test_publish).
    sub = subprocess.Popen([sys.executable, str(REPO / "tests/stream/raw_subscriber.py"), url,
                            f"mask/{stream}", str(count), str(out), str(timeout_s)],
                           stdout=subprocess.PIPE)
    try:
        live = subprocess.run([*RUN_LIVE, *source, "--max-frames", str(count), "--zmq", url,
                               "--stream", stream, "--wait-subscriber", str(timeout_s),
                               "--set", f"live.publish.sndhwm={count + 10}"],
                              capture_output=True, text=True, timeout=timeout_s)
        assert live.returncode == 0, live.stderr
        sub.wait(timeout=timeout_s)
    finally:
        sub.kill()
    stopped = re.search(r"stopped \((max frames reached|end of input)\): (\d+) masks",
                        live.stderr)
    assert stopped, live.stderr
    data = np.load(out)
    headers = [json.loads(h) for h in data["headers"]]
    published = int(stopped.group(2))
    assert [h["seq"] for h in headers] == list(range(published)), live.stderr  # none lost
    return headers, data["masks"]


def test_masks_reach_another_process_in_order_and_follow_the_sounding_object(
        demo_video: Path, tmp_path: Path) -> None:
    headers, masks = run_with_subscriber(["--video", str(demo_video)], "e2e", 60, tmp_path)
    assert len(headers) >= 5, "too few masks to judge"      # 2 cores even under heavy load
    indices = [h["frame_index"] for h in headers]
    assert indices == sorted(set(indices))                  # source frame numbers, ascending
    paired = [h for h in headers if h["audio"] == "paired"]
    # silence only until the first 0.96 s window exists (plus slack for a loaded machine)
    assert all(h["frame_index"] < 2 * FPS for h in headers if h["audio"] != "paired")
    for h in paired:
        assert h["t_audio_end_ns"] - h["t_audio_start_ns"] == pytest.approx(0.975e9, abs=2e6)
        # the window wanted ends at the last whole 10 ms log-mel hop at or before the capture
        # time; the one used ends audio_lag_ms before it (latest pairing: the audio received)
        lag_ns = round(h["audio_lag_ms"] * 1e6)
        assert lag_ns % 10_000_000 == 0 and (h["audio_late"] or lag_ns <= 40e6)
        assert 0 <= h["t_capture_ns"] - h["t_audio_end_ns"] - lag_ns <= 10e6
    for h in headers:
        assert 0.0 <= h["keep_ratio"] <= 1.0 and h["stream"] == "e2e"
    scene = DemoScene(seed=SEED, size=SIZE, fps=FPS)
    sidecar = json.loads(demo_video.with_suffix(".json").read_text())
    scored = settled_frames(sidecar)
    ious = []
    for h, pred in zip(headers, masks, strict=True):
        if h["frame_index"] in scored:
            gt = scene.frame(h["frame_index"])[1] > 127
            ious.append((pred & gt).sum() / max((pred | gt).sum(), 1))
    assert len(ious) >= 3, f"{len(ious)} settled frames among {len(headers)} masks"
    print(f"e2e: mean IoU {np.mean(ious):.3f} over {len(ious)} settled frames")
    assert float(np.mean(ious)) >= 0.8, f"mean IoU {np.mean(ious):.3f} over {len(ious)} frames"


def run_live_error(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN_LIVE, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("args", "expected"), [
    (["--camera", "7", "--max-frames", "1"], "camera 7 could not be opened"),
    (["--video", "/nonexistent/clip.mp4"], "not found"),
    (["--weights", "/nonexistent/w.pt"], "weights file /nonexistent/w.pt not found"),
    (["--variant", "resnet50_s4", "--max-frames", "1"], "another variant"),
    (["--set", "live.engine.threads=0"], "live.engine.threads must be >= 1"),
    (["--set", "live.engine.thredas=2"], "live.engine.thredas: unknown key"),
    (["--set", "live.engine.weights=/nonexistent/cfg.pt"], "weights file /nonexistent/cfg.pt"),
    (["--set", "live.engine.cuda_graphs=true"], "cuda_graphs needs a CUDA device"),
    (["--set", "live.engine.cuda_graphs=true", "--set", "live.engine.compile=on"],
     "cuda_graphs and live.engine.compile=on are exclusive"),
])
def test_user_errors_are_one_line_and_exit_2(args: list[str], expected: str) -> None:
    res = run_live_error(*args, "--zmq", f"tcp://127.0.0.1:{free_port()}")
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_one_line() -> None:
    res = run_live_error("--device", "cuda", "--max-frames", "1")
    assert res.returncode == 2 and "CUDA is not available" in res.stderr
    assert "Traceback" not in res.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import zmq

    port = free_port()
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.bind(f"tcp://127.0.0.1:{port}")
    try:
        res = run_live_error("--demo", "--max-frames", "1", "--zmq", f"tcp://127.0.0.1:{port}")
    finally:
        sock.close(linger=0)
    assert res.returncode == 2
    assert "already in use" in res.stderr and "Traceback" not in res.stderr


def test_dry_run_prints_the_resolved_config(tmp_path: Path) -> None:
    frag = tmp_path / "offset.yaml"
    frag.write_text("live:\n  sync: {av_offset_ms: 40}\n")
    res = run_live_error("--dry-run", "--config", str(frag), "--encoding", "png")
    assert res.returncode == 0, res.stderr
    import yaml

    text = res.stdout.split("# source")[0]
    cfg = yaml.safe_load(text)["live"]
    assert cfg["sync"]["av_offset_ms"] == 40.0 and cfg["publish"]["encoding"] == "png"


def test_record_keeps_frames_masks_audio_and_timeline(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    res = run_live_error("--demo", "--max-frames", "20", "--record", str(rec),
                         "--zmq", f"tcp://127.0.0.1:{free_port()}")
    assert res.returncode == 0, res.stderr
    lines = (rec / "timeline.jsonl").read_text().splitlines()
    assert len(lines) == 20
    first = json.loads(lines[0])
    assert (rec / "frames" / f"{first['frame_index']:06d}.jpg").is_file()
    assert (rec / "masks" / f"{first['frame_index']:06d}.png").is_file()
    meta = json.loads((rec / "meta.json").read_text())
    assert meta["frames_written"] == 20 and meta["audio_samples"] > 8000
    import wave

    with wave.open(str(rec / "audio.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() == meta["audio_samples"]


def wait_for_timeline(proc: subprocess.Popen[str], rec: Path, lines: int) -> None:
    """Wait (60 s at most) until the running recording's timeline has `lines` whole lines."""
    deadline = time.monotonic() + 60
    while not (rec / "timeline.jsonl").exists() or \
            (rec / "timeline.jsonl").read_text().count("\n") < lines:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_and_the_recording_stays_readable(tmp_path: Path, sig: int) -> None:
    """SIGTERM / SIGINT: exit 0, every thread stopped and every file closed and readable. How
    fast is a figure (under 2 s on an idle 2-core machine, docs/live.md), not asserted here: at load
    8 it took 2.9-3.5 s; the 20 s bound only catches a hang."""
    rec = tmp_path / "rec"
    proc = subprocess.Popen([*RUN_LIVE, "--demo", "--record", str(rec), "--zmq",
                             f"tcp://127.0.0.1:{free_port()}"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_timeline(proc, rec, 10)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        print(f"stopped {time.monotonic() - t0:.2f} s after signal {sig}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0 and "Traceback" not in err, err
    meta = json.loads((rec / "meta.json").read_text())
    headers = [json.loads(line) for line in (rec / "timeline.jsonl").read_text().splitlines()]
    assert len(headers) == meta["frames_written"] >= 10              # every line whole
    for h in headers:
        name = f"{h['frame_index']:06d}"
        frame = cv2.imread(str(rec / "frames" / f"{name}.jpg"))
        mask = cv2.imread(str(rec / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert frame is not None and frame.ndim == 3 and mask is not None and mask.ndim == 2
    with wave.open(str(rec / "audio.wav")) as w:                     # the header was finalised
        assert w.getframerate() == 16000 and w.getnframes() == meta["audio_samples"] > 0


def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A shell starts background jobs (`run_live.py ... &`) with SIGINT ignored; Python keeps
    that, so run_live installs its own handler and `kill -INT` still stops it."""
    rec = tmp_path / "rec"
    proc = subprocess.Popen([*RUN_LIVE, "--demo", "--record", str(rec), "--zmq",
                             f"tcp://127.0.0.1:{free_port()}"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for_timeline(proc, rec, 3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0 and "stopped (interrupted)" in err, err


def test_network_camera_and_pulseaudio_microphone_end_to_end(pulse_env, udp_stream, tmp_path):
    """--camera udp://... --mic pulse: frames from ffmpeg over loopback UDP, audio recorded from
    a PulseAudio sink through PortAudio; masks published with audio windows after ~1 s."""
    from tests.stream.audio_env import write_wav

    t = np.arange(48_000 * 8) / 48_000
    pulse_env.play(write_wav(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t)))
    headers, _ = run_with_subscriber(["--camera", udp_stream, "--mic", "pulse"], "live", 25,
                                     tmp_path, timeout_s=90)
    assert headers and headers[0]["height"] == 120 and headers[0]["width"] == 160
    paired = [h for h in headers if h["audio"] == "paired"]
    assert paired, "no mask was paired with microphone audio"
    for h in paired:
        assert h["t_audio_end_ns"] - h["t_audio_start_ns"] == pytest.approx(0.975e9, abs=2e6)
        lag_ns = round(h["audio_lag_ms"] * 1e6)
        assert h["t_audio_end_ns"] + lag_ns <= h["t_capture_ns"] + 10e6


def test_overlay_draws_the_mask_and_the_text() -> None:
    from stream.run.overlay import draw_overlay

    image = np.full((60, 80, 3), 100, np.uint8)
    prob = np.zeros((60, 80), np.float32)
    prob[10:30, 20:50] = 0.9
    out = draw_overlay(image, prob, 0.5, ["30 FPS  latency 40 ms"])
    assert out.shape == image.shape and np.array_equal(image, np.full_like(image, 100))
    assert out[20, 35, 1] > out[20, 35, 0]          # inside the mask: tinted green
    assert np.array_equal(out[50, 70], image[50, 70])  # far outside mask and text: unchanged
    assert (out[5:20, 5:60] != 100).any()           # the text


def test_a_microphone_that_matches_nothing_is_one_line() -> None:
    res = run_live_error("--camera", "0", "--mic", "nosuchmic", "--max-frames", "1",
                         "--zmq", f"tcp://127.0.0.1:{free_port()}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    # PortAudio lists what exists; where it sees no input at all, or is missing, it says so
    line = lines[0]
    listed = "no audio input device matches 'nosuchmic'" in line and "--list-devices" in line
    assert listed or "no audio input devices found" in line or "no microphone support" in line
