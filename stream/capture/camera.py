"""Camera, video file or stream URL via OpenCV ``VideoCapture`` (docs/design.md section 3):
:class:`CameraSource`, which reconnects to a lost camera or stream (``reconnect``).
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import cv2

from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import NS_PER_S, Frame
from stream.capture.base import Clock, Sleep, SourceError, _SourceThread
from stream.capture.reconnect import Backoff, ReconnectPolicy

logger = logging.getLogger(__name__)

_MAX_READ_FAILURES = 50  # consecutive failed reads (10 ms apart) after which a camera or
#                          stream counts as gone and is reopened


def _describe(device: int | str) -> tuple[str, int | str]:
    """(kind, what to pass to VideoCapture): 'camera' for an index, 'stream' for a URL,
    'file' otherwise. A string of digits is a camera index."""
    if isinstance(device, int):
        return "camera", device
    if device.strip().isdigit():
        return "camera", int(device)
    if "://" in device:
        return "stream", device
    return "file", device


def _describe_policy(p: ReconnectPolicy) -> str:
    never = "never giving up" if p.give_up_s is None else f"giving up after {p.give_up_s:g} s"
    return f"backoff {p.initial_delay_s:g} s doubling to {p.max_delay_s:g} s, {never}"


class CameraSource(_SourceThread):
    """Grabs frames from a camera, a video file or a stream URL into a :class:`FrameRing`.

    Each frame is ``Frame(image (H, W, 3) uint8 BGR, t_capture_ns=clock() when grab returned,
    index)``, ``index`` counting frames read from 0. The thread only reads and puts; the ring's
    policy decides what is dropped. End of a file ends the thread cleanly (``finished``). A
    camera or stream that keeps failing to deliver is released and reopened with exponential
    backoff (``reconnect``); frames then resume with ``index`` counting on. Once nothing has come
    for ``reconnect.give_up_s`` the thread ends with ``error`` set. ``stats()`` counts
    ``read_failures``, ``reconnect_attempts`` and ``reconnects``.

    Args:
        device: camera index (int or digit string), video file path, or URL (rtsp://, udp://...).
        frames: the ring frames go into.
        clock: the pipeline's clock, ns.
        fps_hint: requested frame rate: set on a camera (CAP_PROP_FPS); for a file, reads are
            paced at this rate (None: as fast as possible).
        sleep: used to pace a file with ``fps_hint`` and to back off after a failed read.
        stream_timeout_s: for a URL, the longest wait to open it and for each read (OpenCV's
            FFmpeg backend waits 30 s by default); a URL that sends nothing fails in that time.
        reconnect: what a camera or stream that stops delivering does (reopen with backoff,
            give up after a while); default :class:`ReconnectPolicy` ().
    """

    def __init__(
        self,
        device: int | str,
        frames: FrameRing,
        clock: Clock = time.monotonic_ns,
        fps_hint: float | None = None,
        sleep: Sleep = time.sleep,
        stream_timeout_s: float = 10.0,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        super().__init__("camera", clock, sleep)
        self.kind, self._target = _describe(device)
        self.device, self.frame_ring, self.fps_hint = device, frames, fps_hint
        self.stream_timeout_s = stream_timeout_s
        self.reconnect = reconnect or ReconnectPolicy()
        self.read_failures = self.reconnect_attempts = self.reconnects = 0
        self.connected = True
        self._t_last_frame_ns: int | None = None
        self._cap: cv2.VideoCapture | None = None

    def _open(self) -> None:
        if self.kind == "file" and not Path(str(self._target)).is_file():
            raise SourceError(f"video file {self.device} not found")
        cap = self._open_capture()
        if cap is None:
            if self.kind == "camera":
                raise SourceError(
                    f"camera {self._target} could not be opened: no such device "
                    "(run with --list-devices)"
                )
            if self.kind == "stream":
                raise SourceError(
                    f"stream {self.device} could not be opened (unreachable, not a video "
                    f"stream, or nothing received within {self.stream_timeout_s:g} s)"
                )
            raise SourceError(
                f"video file {self.device} could not be opened (not a video, or corrupt)"
            )
        self._cap = cap

    def _open_capture(self) -> cv2.VideoCapture | None:
        """A VideoCapture on the target, or None when it cannot be opened (blocks at most
        ``stream_timeout_s`` for a URL)."""
        if self.kind == "stream":
            ms = round(self.stream_timeout_s * 1000)
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(str(self._target), cv2.CAP_FFMPEG, timeouts)
        else:
            cap = cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            return None
        if self.kind == "camera" and self.fps_hint:
            cap.set(cv2.CAP_PROP_FPS, float(self.fps_hint))
        return cap

    def _run(self) -> None:
        assert self._cap is not None, "start() opens the capture"
        pace_ns = round(NS_PER_S / self.fps_hint) if self.kind == "file" and self.fps_hint else 0
        failures = 0
        for index in itertools.count():
            if (
                pace_ns
                and self.t0_ns is not None
                and not self._sleep_until(self.t0_ns + index * pace_ns)
            ):
                return
            if self.stopping:
                return
            while not self._cap.grab():
                if self.kind == "file":  # end of file
                    return
                self.errors += 1
                self.read_failures += 1
                failures += 1
                if failures >= _MAX_READ_FAILURES:
                    if not self._reconnect():  # raises SourceError when it gives up
                        return  # stopped meanwhile
                    failures = 0
                elif not self._sleep_until(self._clock() + 10_000_000) or self.stopping:
                    return
            t_capture_ns = self._clock()  # stamped as grab returns: the frame's capture time
            self._t_last_frame_ns, failures = t_capture_ns, 0
            ok, image = self._cap.retrieve()
            if not ok or image is None:
                self.errors += 1
                continue
            self.frame_ring.put(Frame(image, t_capture_ns, index))  # never waits
            self.frames += 1

    def _reconnect(self) -> bool:
        """Release the capture and reopen it with backoff until it opens (True), the source is
        stopped (False), or ``give_up_s`` has passed since the last frame (SourceError)."""
        policy = self.reconnect
        if not policy.enabled:
            raise SourceError(f"{self.kind} {self.device} stopped delivering frames")
        t_lost = self._t_last_frame_ns or self.t0_ns or self._clock()
        backoff = Backoff(policy, t_lost)
        self.connected = False
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        logger.warning("%s %s stopped delivering frames: reconnecting (%s)", self.kind,
                       self.device, _describe_policy(policy))
        while True:
            if backoff.expired(self._clock()):
                raise SourceError(
                    f"{self.kind} {self.device} stopped delivering frames and could not be "
                    f"reopened within {policy.give_up_s:g} s ({backoff.attempts} attempts)"
                )
            if not self._sleep_until(self._clock() + round(backoff.next_delay_s() * NS_PER_S)):
                return False
            self.reconnect_attempts += 1
            cap = self._open_capture()
            if cap is not None:
                self._cap, self.connected = cap, True
                self.reconnects += 1
                logger.warning("%s %s reopened after %d attempt(s), %.1f s without frames",
                               self.kind, self.device, backoff.attempts,
                               (self._clock() - t_lost) / NS_PER_S)
                return True
            if self.stopping:
                return False

    def stats(self) -> dict[str, int]:
        """Counters: frames, errors, read failures, reconnect attempts, reconnects (reopened),
        connected (1, or 0 while reconnecting)."""
        return {**super().stats(), "read_failures": self.read_failures,
                "reconnect_attempts": self.reconnect_attempts, "reconnects": self.reconnects,
                "connected": int(self.connected)}

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
