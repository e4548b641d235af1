"""Faults injected into a running ``run_live.py`` from outside it: a network camera that goes
away and comes back, a subscriber that stalls or dies, and the signals that stop it.

Everything runs for real on loopback: ffmpeg sends the camera over UDP, run_live.py runs in its
own process, subscribers are processes or sockets of this one. Waits are bounded.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from stream.subscribe import MaskMessage, MaskSubscriber
from tests.stream.test_network_camera import UdpTestStream
from tests.stream.test_run_live import RUN_LIVE, free_port


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
