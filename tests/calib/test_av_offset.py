"""calib.av_offset: the flash-and-click pattern with a known shift, read from a media file and
from a real run_live recording; clear refusals when nothing (or nothing consistent) matches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calib.av_offset import estimate, load_media, main
from calib.pattern import FlashClickPattern
from pcmanet.data.media_writer import write_media
from stream.run.config import load_live_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shift_ms", [120.0, -80.0, 0.0])
def test_known_shift_is_recovered_from_a_media_file(tmp_path, shift_ms):
    pattern = FlashClickPattern(seconds=8, shift_ms=shift_ms, seed=2)
    pattern.write(tmp_path / "p.mp4")
    est = estimate(load_media(tmp_path / "p.mp4"))
    assert est.visual_events == len(pattern.flash_starts) >= 5
    assert est.matched == est.visual_events
    assert est.offset_ms == pytest.approx(shift_ms, abs=5.0)  # codec delay: ~1.5 ms
    assert est.level == "high" and est.confidence > 0.9


def test_offset_from_a_run_live_recording_is_written_as_a_fragment(tmp_path, capsys):
    """The pattern (clicks 60 ms late) through the real pipeline: MediaFileSource stamps,
    the recorder's timeline and wav; the estimate lands in live.sync.av_offset_ms."""
    # 10 FPS: a loaded machine keeps up with most frames; events whose onset fell among
    # dropped frames are left out by the estimate, so drops cannot bias it
    FlashClickPattern(seconds=12, fps=10, shift_ms=60, seed=3).write(tmp_path / "p.mp4")
    rec = tmp_path / "rec"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = subprocess.run([sys.executable, str(REPO / "run_live.py"), "--video",
                          str(tmp_path / "p.mp4"), "--record", str(rec), "--zmq",
                          f"tcp://127.0.0.1:{port}"], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr
    out, js = tmp_path / "offset.yaml", tmp_path / "offset.json"
    assert main(["--recording", str(rec), "--out", str(out), "--json", str(js)]) == 0
    est = json.loads(js.read_text())
    assert est["matched"] >= 4 and est["level"] in ("high", "medium")
    assert load_live_config([out]).sync.av_offset_ms == pytest.approx(60, abs=12)
    assert "offset +" in capsys.readouterr().out


def test_nothing_to_match_is_a_clear_failure_and_writes_nothing(tmp_path, capsys):
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(16000 * 4) * 0.01).astype(np.float32)
    write_media(tmp_path / "still.mp4", lambda i: np.full((64, 64, 3), 90, np.uint8),
                lambda s, n: noise[s:s + n], 120, 30.0, (64, 64))
    out = tmp_path / "offset.yaml"
    assert main(["--video", str(tmp_path / "still.mp4"), "--out", str(out)]) == 1
    assert "no flash or clap matched" in capsys.readouterr().err
    assert not out.exists()


def test_inconsistent_events_are_low_confidence_and_not_written(tmp_path, capsys):
    """Flashes from one pattern, clicks from another (other gaps): no consistent lag."""
    seen, heard = FlashClickPattern(seconds=12, seed=4), FlashClickPattern(seconds=12, seed=9)
    write_media(tmp_path / "mixed.mp4", seen.frame, heard.audio, seen.num_frames, 30.0,
                seen.size)
    out = tmp_path / "offset.yaml"
    est = estimate(load_media(tmp_path / "mixed.mp4"))
    assert est.level == "low" and est.matched < est.visual_events / 2
    assert main(["--video", str(tmp_path / "mixed.mp4"), "--out", str(out)]) == 1
    assert "confidence too low" in capsys.readouterr().err and not out.exists()
    assert main(["--video", str(tmp_path / "mixed.mp4"), "--out", str(out), "--force"]) == 0
    assert out.exists()


def test_a_recording_without_audio_names_the_problem(tmp_path, capsys):
    (tmp_path / "timeline.jsonl").write_text("")
    (tmp_path / "audio.wav").write_bytes(b"")
    (tmp_path / "meta.json").write_text(json.dumps({"audio_t0_ns": None}))
    assert main(["--recording", str(tmp_path)]) == 2
    assert "holds no audio" in capsys.readouterr().err


def test_a_flash_that_began_among_dropped_frames_is_not_an_event():
    """30 frames at 10 FPS with 2-frame flashes starting at frames 8 and 20; frame 19 is missing
    from the recording, so the second flash began somewhere in 1.8-2.0 s: only the first counts."""
    from calib.av_offset import Capture, visual_events

    index = np.array([i for i in range(30) if i != 19])           # frame 19 was dropped
    gray = np.zeros((len(index), 64, 64), np.float32)
    gray[np.isin(index, [8, 9, 20, 21])] = 200.0                   # two flashes
    cap = Capture(index / 10.0, gray, np.zeros(16000, np.float32), 0.0)
    np.testing.assert_allclose(visual_events(cap), [0.8, 2.0])     # every frame assumed there
    cap.frame_index = index
    np.testing.assert_allclose(visual_events(cap), [0.8])
