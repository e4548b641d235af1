"""Shared by the viewer tests: a live publisher thread, the viewer in its own process, its
figures over HTTP. Everything on 127.0.0.1, every wait bounded."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import numpy as np

from stream.transport.publish import MaskPublisher
from tests.conftest import REPO

H, W = 120, 160
# The known scene: left half blue-ish, right half grey (BGR), and the mask, a rectangle
# across both halves.
FRAME = np.full((H, W, 3), 128, np.uint8)
FRAME[:, : W // 2] = (170, 70, 60)
MASK_BOX = (30, 90, 40, 120)                     # rows 30..89, cols 40..119


T_PUBLISH_NS = 10**15                            # the test publishers' clock, frozen here:
LATENCY_MS = 15.0                                # the feeder stamps captures this long before


def frozen_clock() -> int:
    """A publisher clock (``MaskPublisher(clock=...)``) that always says T_PUBLISH_NS, so the
    capture -> publish latency the viewer shows is exactly LATENCY_MS, however loaded the
    machine."""
    return T_PUBLISH_NS


def mask_for(box: tuple[int, int, int, int], shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """(H, W) float32: 1 inside rows box[0]:box[1], cols box[2]:box[3], else 0."""
    prob = np.zeros(shape, np.float32)
    prob[box[0]:box[1], box[2]:box[3]] = 1.0
    return prob


class Feeder:
    """Publishes (mask, frame) pairs of some streams every ``period_s`` on a thread, as a
    live pipeline does; ``frame`` None: masks only. The pace is the workload; no test
    outcome waits on it. Captures are stamped LATENCY_MS before T_PUBLISH_NS (give the
    publisher ``clock=frozen_clock``)."""

    def __init__(self, pub: MaskPublisher, period_s: float = 0.05) -> None:
        self.pub, self.period_s = pub, period_s
        self.streams: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.lock = threading.Lock()

    def set(self, stream: str, prob: np.ndarray, frame: np.ndarray | None) -> None:
        with self.lock:
            self.streams[stream] = (prob, frame)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.period_s):
            with self.lock:
                items = list(self.streams.items())
            for stream, (prob, frame) in items:
                t = T_PUBLISH_NS - round(LATENCY_MS * 1e6)                  # captured
                seq = self.pub.publish(prob, i, t, t - 960_000_000, t, 0.75, 0.5, "test",
                                       audio_lag_ms=5.0, stream=stream)
                if frame is not None:
                    self.pub.publish_frame(frame, seq, i, t, stream=stream)
            i += 1


class Lines:
    """A process's text pipe read line by line on a thread, so a wait for the next line can
    be bounded (select() on the pipe would miss lines already in Python's buffer)."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")                              # the process closed it

    def next(self, timeout_s: float) -> str:
        """The next line within ``timeout_s``; '' when the pipe closed or the time ran out."""
        try:
            return self._lines.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return ""


@contextmanager
def viewer(urls: Sequence[str], *args: str, timeout_s: float = 60.0,
           env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m stream.view URLS --http 127.0.0.1:0 ARGS`` in its own process -> the page's
    address; stopped with SIGTERM (it must exit 0)."""
    proc = subprocess.Popen([sys.executable, "-m", "stream.view", *urls, "--http",
                             "127.0.0.1:0", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    try:
        line = Lines(proc.stdout).next(timeout_s)
        assert line.startswith("viewer on http://127.0.0.1:"), (line, proc.poll())
        yield line.split()[2]
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    finally:
        proc.kill()
        proc.wait(10)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET -> (status, body), errors included; 5 s at most."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def streams(page: str, token: str | None = None) -> dict[str, dict[str, Any]]:
    """The viewer's figures by stream key (``/api/streams``)."""
    status, body = get(page + "api/streams" + (f"?token={token}" if token else ""))
    assert status == 200, body
    return {s["key"]: s for s in json.loads(body)["streams"]}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0,
             poll_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")
