"""``run_live.py --list-devices`` tells the truth: cameras are opened and read (a real media file
stands in for a camera node: OpenCV opens both the same way), microphones come from PortAudio
(the PulseAudio null-sink microphone of ``pulse_env``), and a machine without a camera says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pcmanet.data.synthetic_demo import write_demo_video
from stream.capture.devices import CameraProbe, probe_camera, probe_cameras, video_nodes
from tests.conftest import REPO
from tests.stream.audio_env import PulseAudioEnv

pytestmark = pytest.mark.races  # a PulseAudio daemon and a subprocess


def test_a_source_that_gives_frames_is_listed_with_its_size_and_rate(tmp_path: Path) -> None:
    clip = tmp_path / "cam.mp4"
    write_demo_video(clip, 1.0, size=96, fps=10, seed=0)
    probe = probe_camera(str(clip))
    assert probe.opened and probe.gives_frames
    assert (probe.width, probe.height) == (96, 96) and probe.fps == pytest.approx(10.0)
    assert probe.line().endswith(f"96x96, 10 FPS: --camera {clip}")


def test_nodes_that_give_no_frames_or_do_not_open_are_marked(tmp_path: Path) -> None:
    missing = probe_camera(str(tmp_path / "video99"))
    assert not missing.opened and "cannot be opened" in missing.line()
    silent = CameraProbe(1, opened=True)        # opened, read() gave nothing
    assert not silent.gives_frames and "gives no frames" in silent.line()
    assert [p.source for p in probe_cameras([str(tmp_path / "a"), str(tmp_path / "b")])] == [
        str(tmp_path / "a"), str(tmp_path / "b")]


def test_video_nodes_are_the_dev_video_indices(tmp_path: Path) -> None:
    for name in ("video0", "video1", "video10", "vide", "videoX", "video2-meta"):
        (tmp_path / name).touch()
    assert video_nodes(tmp_path) == [0, 1, 10]


def test_list_devices_with_the_pulseaudio_microphone_and_no_camera(
        pulse_env: PulseAudioEnv) -> None:
    res = subprocess.run([sys.executable, str(REPO / "run_live.py"), "--list-devices"],
                         env={**os.environ, **pulse_env.client_env},
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    cameras, mics = out.split("Microphones (PortAudio inputs):")
    assert cameras.startswith("Cameras (each opened and one frame read):")
    nodes = video_nodes()
    if nodes:     # a machine with cameras: each node is probed and gets its line
        for n in nodes:
            assert re.search(rf"^  {n} \(/dev/video{n}\): ", cameras, re.M), out
    else:
        assert "none found (no /dev/video* nodes)" in cameras, out
    # PortAudio's inputs through ALSA's pulse plugin: name, host API, channels, default rate,
    # and the default marked.
    pulse = [ln for ln in mics.splitlines() if re.search(r"\bpulse\b", ln)]
    assert pulse, out
    assert re.search(r"\bpulse\s+ALSA\s+\d+\s+\d+ Hz$", pulse[0]), out
    assert any(ln.lstrip().startswith(">") for ln in mics.splitlines()), out
    assert "--mic NAME or --mic INDEX" in mics
