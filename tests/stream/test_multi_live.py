"""run_live.py with several streams in one process, end to end over real ZeroMQ on loopback: two
media files and a network camera (ffmpeg over UDP) whose sender is killed mid-run. The files'
streams must publish every frame in order, the camera's stream must report the outage in its
stats, and nothing else may change. Also: the multi-stream config and CLI errors."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pcmanet.data.synthetic_demo import write_demo_video
from stream.run.app import parse_args, resolve_config
from stream.run.streams import UserError, resolve_streams
from stream.transport.subscribe import MaskSubscriber
from tests.stream.test_faults import stop_run_live
from tests.stream.test_network_camera import UdpTestStream
from tests.stream.test_run_live import RUN_LIVE, free_port, run_live_error

FILE_FPS, FILE_S = 5, 10.0
FILE_FRAMES = round(FILE_FPS * FILE_S)


class MultiWatch:
    """Receives every stream's masks and stats in this process (a real SUB socket on tcp)."""

    def __init__(self, url: str) -> None:
        self.sub = MaskSubscriber(url, topic=["mask/", "stats/"], rcvhwm=10_000)
        self.masks: dict[str, list[dict[str, Any]]] = {}
        self.stats: dict[str, dict[str, Any]] = {}

    def until(self, cond, timeout_s: float) -> bool:
        import time

        deadline = time.monotonic() + timeout_s
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            msg = self.sub.recv(min(left, 0.2))
            if msg is None:
                continue
            name = msg.header["stream"]
            if msg.mask is None:
                self.stats[name] = msg.header
            else:
                self.masks.setdefault(name, []).append(msg.header)
        return True

    def counters(self, name: str) -> dict[str, Any]:
        return dict(self.stats.get(name, {}).get("counters", {}))

    def camera(self) -> dict[str, int]:
        return dict(self.counters("cam").get("sources", {}).get("camera", {}))

    def count(self, name: str) -> int:
        return len(self.masks.get(name, []))

    def close(self) -> None:
        self.sub.close()


@pytest.mark.races
def test_two_files_and_a_udp_camera_killed_mid_run(tmp_path: Path) -> None:
    files = []
    for i, seed in enumerate((12, 5)):
        path = tmp_path / f"scene{i}.mp4"
        write_demo_video(path, FILE_S, size=96, fps=FILE_FPS, seed=seed)
        files.append(path)
    sender = UdpTestStream(seconds=120)
    sender.start()
    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump({"live": {
        "source": {"stream_timeout_s": 1.5, "frame_ring": 2 * FILE_FRAMES,
                   "reconnect": {"initial_delay_s": 0.2, "max_delay_s": 1.0}},
        "publish": {"stats_interval_s": 0.25, "sndhwm": 10_000},
        "streams": [{"name": "cam", "source": sender.url},    # opens first (probes ~1.5 s)
                    {"name": "f0", "source": str(files[0]), "take": "all"},
                    {"name": "f1", "source": str(files[1]), "take": "all"}]}}))
    url = f"tcp://127.0.0.1:{free_port()}"
    watch = MultiWatch(url)
    proc = subprocess.Popen([*RUN_LIVE, "--config", str(config), "--zmq", url,
                             "--duration", "300", "--wait-subscriber", "30"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert watch.until(lambda: watch.count("cam") >= 3, 90), watch.stats
        files_at_kill = min(watch.count("f0"), watch.count("f1"))
        sender.kill()                                             # the camera goes away
        assert watch.until(lambda: watch.camera().get("reconnect_attempts", 0) >= 1, 30), \
            watch.stats.get("cam")
        assert watch.camera()["connected"] == 0 and proc.poll() is None
        assert watch.until(lambda: all(watch.counters(f).get("state") == "done"
                                       for f in ("f0", "f1")), 120), watch.stats
        assert watch.until(lambda: all(watch.count(f) >= FILE_FRAMES for f in ("f0", "f1")), 10)
        cam_stats = watch.counters("cam")
    finally:
        watch.close()
        sender.kill()
        err = stop_run_live(proc, signal.SIGINT)
    assert files_at_kill < FILE_FRAMES, "the files had ended before the camera was killed"
    for name in ("f0", "f1"):
        masks = watch.masks[name]
        assert [h["frame_index"] for h in masks] == list(range(FILE_FRAMES)), name
        assert [h["seq"] for h in masks] == list(range(FILE_FRAMES)), name
        c = watch.counters(name)
        assert c["frame_ring"]["dropped"] == 0 and c["engine"]["frame_errors"] == 0, c
        assert c["error"] is None and c["fps_out"] >= 0 and c["latency_ms"]["masks"] > 0
    assert cam_stats["state"] == "running" and cam_stats["error"] is None   # reconnecting
    cam = [h["frame_index"] for h in watch.masks["cam"]]
    assert cam == sorted(set(cam))
    assert "f0 (done)" in err and "f1 (done)" in err and "stopped (interrupted)" in err, err
    assert not sender.failures, sender.failures


# -- config and command line ------------------------------------------------------------------


def streams_of(*argv: str, config: dict | None = None, tmp_path: Path | None = None):
    extra = []
    if config is not None:
        assert tmp_path is not None
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump({"live": config}))
        extra = ["--config", str(path)]
    args = parse_args([*argv, *extra])
    return resolve_streams(args, resolve_config(args))


def test_command_line_streams_are_named_in_order(tmp_path: Path) -> None:
    specs = streams_of("--video", "a.mp4", "--camera", "udp://h:1", "--video", "b.mp4")
    assert [(s.name, s.kind, s.target) for s in specs] == [
        ("cam0", "video", "a.mp4"), ("cam1", "camera", "udp://h:1"), ("cam2", "video", "b.mp4")]
    named = streams_of("--camera", "0", "--camera", "1", "--stream", "door", "--stream", "hall")
    assert [s.name for s in named] == ["door", "hall"]
    (one,) = streams_of("--camera", "0", "--mic", "default", "--stream", "solo")
    assert (one.name, one.mic) == ("solo", "default")


def test_yaml_streams_take_their_overrides(tmp_path: Path) -> None:
    specs = streams_of(config={
        "sync": {"av_offset_ms": 20}, "source": {"fps": 12},
        "streams": [{"name": "a", "source": "demo:3", "fps": 15},
                    {"source": 2, "mic": "default", "av_offset_ms": 40, "take": "all"},
                    {"name": "c", "source": "rtsp://h/cam"}]}, tmp_path=tmp_path)
    assert [(s.name, s.kind, s.target, s.fps, s.av_offset_ms, s.take, s.mic) for s in specs] == [
        ("a", "demo", 3, 15.0, 20.0, "newest", None),
        ("cam1", "camera", "2", 12.0, 40.0, "all", "default"),
        ("c", "camera", "rtsp://h/cam", 12.0, 20.0, "newest", None)]


@pytest.mark.parametrize(("argv", "config", "expected"), [
    (["--camera", "0", "--camera", "1", "--mic", "default"], None, "--mic with 2 cameras"),
    (["--video", "a", "--video", "b", "--stream", "x", "--stream", "x"], None,
     "two streams are named 'x'"),
    (["--video", "a", "--video", "b", "--stream", "x"], None, "1 --stream names for 2"),
    (["--demo", "--video", "a"], None, "--demo plays the embedded scene alone"),
    (["--video", "a"], {"streams": [{"source": "demo"}]}, "give one or the other"),
    ([], {"streams": [{"name": "cam1", "source": "demo"}, {"source": "demo"}]},
     "two streams are named 'cam1'"),
    ([], {"streams": [{"source": "demo:x"}]}, "a demo seed is an integer"),
    ([], {"streams": [{"source": "a.mp4", "mic": "default"}]}, "mic goes with a camera"),
])
def test_stream_mistakes_are_user_errors(tmp_path: Path, argv, config, expected) -> None:
    with pytest.raises(UserError, match=expected.replace("(", r"\(")):
        streams_of(*argv, config=config, tmp_path=tmp_path)


@pytest.mark.parametrize(("config", "expected"), [
    ({"streams": [{"name": "a", "sorce": "demo"}]}, "live.streams[0].sorce: unknown key"),
    ({"streams": [{"name": "a"}, {"name": "a"}]}, "live.streams[1].name 'a' is taken"),
    ({"streams": [{"name": "a b"}]}, "live.streams[0].name 'a b': use letters"),
    ({"streams": [{"take": "some"}]}, "live.streams[0].take must be one of newest, all"),
    ({"engine": {"max_batch": 0}}, "live.engine.max_batch must be >= 1"),
    ({"engine": {"max_batch": 8, "batch_buckets": [1, 2, 4]}}, "live.engine.batch_buckets"),
])
def test_bad_stream_configs_exit_2_naming_the_key(tmp_path: Path, config, expected) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"live": config}))
    res = run_live_error("--dry-run", "--config", str(path))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], res.stderr


def test_dry_run_prints_the_resolved_streams(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"")                # --dry-run checks that a media file exists, no more
    res = run_live_error("--dry-run", "--video", str(clip), "--camera", "udp://h:1",
                         "--set", "live.source.take=all")
    assert res.returncode == 0, res.stderr
    assert f"# stream cam0: {{'kind': 'video', 'path': '{clip}'}} (take all" in res.stdout
    assert "# stream cam1: {'kind': 'camera', 'device': 'udp://h:1', 'mic': None}" in res.stdout


def test_user_error_is_one_line() -> None:
    res = run_live_error("--camera", "0", "--camera", "1", "--mic", "default")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: --mic with 2 cameras")
    assert len(res.stderr.strip().splitlines()) == 1


def test_user_error_class_is_shared() -> None:
    from stream.run import app

    assert app.UserError is UserError


def test_the_sample_multi_stream_config_resolves() -> None:
    from tests.conftest import REPO

    res = run_live_error("--dry-run", "--config", str(REPO / "configs/live/multi.yaml"))
    assert res.returncode == 0, res.stderr
    assert "# stream demo0: {'kind': 'demo', 'seed': 0}" in res.stdout
    assert "# stream demo1: {'kind': 'demo', 'seed': 1}" in res.stdout
