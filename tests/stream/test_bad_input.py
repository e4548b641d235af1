"""Bad input through ``run_live.py``, end to end in a subprocess: checkpoints that are
truncated, not checkpoints, or pickles of arbitrary objects; media files that are corrupt or
have no audio; configs with unknown keys, wrong types, impossible values. Each gives one
``error:`` line and exit 2 (or a warning and exit 0 where the run can go on), never a traceback.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import av
import pytest
import torch

from pcmanet.assets import DEMO_CHECKPOINT
from pcmanet.data.synthetic_demo import write_demo_video
from tests.stream.test_run_live import RUN_LIVE, free_port


def run_live(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN_LIVE, *args, "--zmq", f"tcp://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=timeout)


def main_in_process(capsys: pytest.CaptureFixture[str], *args: str
                    ) -> subprocess.CompletedProcess[str]:
    """``stream.run.app.main`` in this process (the same code as run_live.py, without the
    interpreter start), as a CompletedProcess for :func:`one_error`."""
    from stream.run.app import main

    capsys.readouterr()
    code = main([*args, "--zmq", f"tcp://127.0.0.1:{free_port()}"])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def one_error(res: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 2, exactly one ``error:`` line holding every ``expected`` text, no traceback."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


class RunsCode:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A short demo clip, the same clip damaged three ways, and a clip without audio."""
    root = tmp_path_factory.mktemp("clips")
    good = root / "good.mp4"
    write_demo_video(good, 3.0, size=96, fps=10, seed=0)
    data = good.read_bytes()
    n, rng = len(data), random.Random(0)
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4  # the media data, not the index
    assert 0 < start < end
    out = {"good": good}
    for name, (a, b) in {"damaged": (n // 4, n // 2), "garbage": (start + 64, end)}.items():
        broken = bytearray(data)
        for i in range(a, b):                                   # the container stays readable
            broken[i] = rng.randrange(256)
        out[name] = root / f"{name}.mp4"
        out[name].write_bytes(bytes(broken))
    out["cut"] = root / "cut.mp4"
    out["cut"].write_bytes(data[: n // 2])                      # the index (moov) is lost
    out["text"] = root / "notes.mp4"
    out["text"].write_text("not a video\n" * 20)
    out["silent"] = root / "silent.mp4"
    drop_audio(good, out["silent"])
    return out


def drop_audio(src: Path, dst: Path) -> None:
    """Copy ``src``'s video stream, packet for packet, into ``dst`` without its audio (PyAV)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        video = inp.streams.video[0]
        copy = out.add_stream_from_template(video)
        for packet in inp.demux(video):
            if packet.dts is not None:                          # the flush packet has none
                packet.stream = copy
                out.mux(packet)


# -- checkpoints -------------------------------------------------------------------------------


def test_truncated_checkpoint(tmp_path: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(DEMO_CHECKPOINT.read_bytes()[: DEMO_CHECKPOINT.stat().st_size // 3])
    one_error(run_live("--weights", str(cut), "--max-frames", "1"), "cut.pt",
              "not a readable PyTorch weights file")


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(random.Random(1).randbytes(4096))
    one_error(run_live("--weights", str(junk), "--max-frames", "1"), "junk.pt",
              "not a readable PyTorch weights file")


def test_a_pickle_of_arbitrary_objects_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "pcmanet-live", "state_dict": RunsCode(marker)}, evil)
    line = one_error(run_live("--weights", str(evil), "--max-frames", "1"), "evil.pt",
                     "objects other than tensors, which are never unpickled")
    assert not marker.exists(), "the checkpoint's code ran: it was unpickled"
    assert "GLOBAL posix.system" in line                       # torch names the refused global


def test_a_state_dict_of_another_model_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3, 3)}, other)
    one_error(run_live("--weights", str(other), "--max-frames", "1"), "other.pt",
              "not a PCMANet Live checkpoint")


# -- media files -------------------------------------------------------------------------------


def test_media_file_whose_packets_are_garbage(clips: dict[str, Path]) -> None:
    one_error(run_live("--video", str(clips["garbage"]), "--no-pacing"), "garbage.mp4",
              "is corrupt: 25 packets in a row could not be decoded")


@pytest.mark.parametrize("clip", ["cut", "text"])
def test_media_files_that_cannot_be_opened(clips: dict[str, Path], clip: str, capsys) -> None:
    one_error(main_in_process(capsys, "--video", str(clips[clip]), "--no-pacing"),
              clips[clip].name, "could not be opened")


def test_damaged_packets_are_skipped_and_the_run_goes_on(clips: dict[str, Path]) -> None:
    res = run_live("--video", str(clips["damaged"]), "--no-pacing")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "could not decode a" in res.stderr and "skipped" in res.stderr
    assert "stopped (end of input)" in res.stderr


def test_a_media_file_without_audio_plays_with_a_warning(clips: dict[str, Path]) -> None:
    res = run_live("--video", str(clips["silent"]), "--max-frames", "5", "--no-pacing")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "has no audio track: the model hears silence" in res.stderr


# -- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("live:\n  sync: {av_ofset_ms: 3}\n", "live.sync.av_ofset_ms: unknown key"),
    ("live:\n  source: {fps: fast}\n", "live.source.fps: expected float"),
    ("live:\n  source: {reconnect: {max_delay_s: 0.1}}\n",
     "live.source.reconnect.max_delay_s must be >= initial_delay_s"),
    ("live:\n  publish: {sndhwm: 0}\n", "live.publish.sndhwm must be >= 1"),
    ("live:\n  source: {fps: .inf}\n", "live.source.fps must be a finite number"),
    ("live: {engine: [\n", "not valid YAML"),
])
def test_bad_config_files(tmp_path: Path, text: str, expected: str, capsys) -> None:
    cfg = tmp_path / "live.yaml"
    cfg.write_text(text)
    one_error(main_in_process(capsys, "--config", str(cfg), "--max-frames", "1"), str(cfg),
              expected)


def test_an_override_that_is_not_yaml() -> None:
    one_error(run_live("--set", "live.engine.threads=[", "--max-frames", "1"),
              "override 'live.engine.threads=['", "not valid YAML")
