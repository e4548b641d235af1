"""Sources: threads that capture frames and audio into the rings (DESIGN.md sections 2-3).

* :class:`CameraSource`: OpenCV ``VideoCapture`` on a device index, a video file or a URL.
* :class:`MediaFileSource`: one media file, video and audio, decoded with PyAV and paced in
  real time (or as fast as possible) with the container's timestamps.
* :class:`DemoSource`: the synthetic sounding-objects scene (:class:`DemoScene`), video and audio.

Every source stamps what it captures on one clock (``time.monotonic_ns()`` unless injected) and
only writes into its rings: it never waits on consumers. Lifecycle: ``start()`` opens the input
and raises :class:`SourceError` with one clear line when it cannot; the thread then runs until the
input ends (``finished`` is set), ``stop()`` is called, or an error ends it (``error``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from stream.buffers import AudioRing, FrameRing
from stream.frames import Frame
from stream.reconnect import Backoff, ReconnectPolicy

logger = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
SAMPLE_RATE = 16_000  # Hz; every AudioRing in the pipeline is 16 kHz mono float32
_SLEEP_CHUNK_S = 0.05  # longest single sleep, so stop() is seen within 50 ms
_MAX_BAD_PACKETS = 25  # media file: packets failing to decode in a row: the file is corrupt
_MAX_READ_FAILURES = 50  # consecutive failed reads (10 ms apart) after which a camera or
#                          stream counts as gone and is reopened

Clock = Callable[[], int]
Sleep = Callable[[float], None]


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering; the message is one line for the user."""


class _SourceThread(threading.Thread):
    """Common lifecycle: ``start`` opens (raising :class:`SourceError`), the thread runs
    ``_run`` and always ``_close``; ``stop`` asks it to end; ``join(timeout)`` waits.

    Counters (written by the thread only): ``frames`` put into the frame ring, ``audio_samples``
    written to the audio ring, ``errors`` seen. ``error`` holds the exception that ended the
    thread, if any; ``finished`` is set when the thread has ended, for whatever reason.
    """

    def __init__(self, name: str, clock: Clock, sleep: Sleep) -> None:
        super().__init__(name=name, daemon=True)
        self._clock, self._sleep = clock, sleep
        self._stop_event = threading.Event()  # not `_stop`: threading.Thread uses that name
        self.finished = threading.Event()
        self.frames = self.audio_samples = self.errors = 0
        self.error: BaseException | None = None
        self.t0_ns: int | None = None  # clock() when the source started

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the input (raises :class:`SourceError`), then start the capture thread."""
        self._open()
        self.t0_ns = self._clock()
        try:
            super().start()
        except BaseException:
            self._close()
            raise

    def stop(self) -> None:
        """Ask the thread to end; returns at once (``join`` waits)."""
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop_event.is_set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # ends the thread; kept for whoever joins it
            self.errors += 1
            self.error = e
        finally:
            try:
                self._close()
            finally:
                self.finished.set()

    def stats(self) -> dict[str, int]:
        """Counters: frames, audio samples and errors so far."""
        return {"frames": self.frames, "audio_samples": self.audio_samples, "errors": self.errors}

    # -- for subclasses --------------------------------------------------------------------
    def _open(self) -> None:
        """Open the input in the caller's thread; raise :class:`SourceError` on failure."""

    def _run(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release the input; called once by the thread when it ends."""

    def _sleep_until(self, t_ns: int) -> bool:
        """Sleep (in short chunks) until ``clock() >= t_ns``; False if stopped meanwhile."""
        while not self._stop_event.is_set():
            dt_ns = t_ns - self._clock()
            if dt_ns <= 0:
                return True
            self._sleep(min(dt_ns / NS_PER_S, _SLEEP_CHUNK_S))
        return False


# -- camera / file / URL via OpenCV -----------------------------------------------------------


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


# -- media file (video + audio) via PyAV ------------------------------------------------------


class MediaFileSource(_SourceThread):
    """Decodes video and audio from one media file into a :class:`FrameRing` and an
    :class:`AudioRing`, on one clock.

    Times: ``t0 = clock()`` at start; an item with container time ``pts`` seconds is stamped
    ``t0 + pts``, so audio and video keep the file's alignment. Frames: (H, W, 3) uint8 BGR,
    ``index`` = the frame's number in the file (0-based). Audio: resampled to 16 kHz mono
    float32 and written with the time of its first sample. ``realtime``: a frame is delivered
    at its time and an audio block when its last sample has "happened" (as a microphone would);
    otherwise everything is delivered as fast as possible. A file without audio works
    (``has_audio`` False). The thread ends at the end of the file (``finished``). A packet that
    does not decode is skipped (counted in ``errors``); a file whose packets keep failing ends
    the thread with ``error`` set (:class:`SourceError`).

    Args:
        path: the media file.
        frames: ring for video frames.
        audio: ring for audio (None: audio is not decoded).
        realtime: pace to the container's timestamps.
        clock: the pipeline's clock, ns.
        sleep: how pacing waits (seconds); injected in tests.
    """

    def __init__(
        self,
        path: str | Path,
        frames: FrameRing,
        audio: AudioRing | None = None,
        realtime: bool = True,
        clock: Clock = time.monotonic_ns,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__("media-file", clock, sleep)
        self.path, self.frame_ring, self.audio_ring = Path(path), frames, audio
        self.realtime = realtime
        self.has_audio = False
        self._container: av.container.InputContainer | None = None

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"media file {self.path} not found")
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SourceError(f"media file {self.path} could not be opened: {e}") from e
        if not container.streams.video:
            container.close()
            raise SourceError(f"media file {self.path} has no video stream")
        self.has_audio = bool(container.streams.audio)
        self._container = container

    def _run(self) -> None:
        container, t0 = self._container, self.t0_ns
        assert container is not None and t0 is not None, "start() opens the file"
        vstream = container.streams.video[0]
        streams: list[av.stream.Stream] = [vstream]
        resampler = None
        if self.has_audio and self.audio_ring is not None:
            streams.append(container.streams.audio[0])
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        audio_next_s: float | None = None  # time of the next audio sample when pts is missing
        for decoded in self._decoded_packets(container, streams):
            for frame in decoded:
                if self.stopping:
                    return
                if isinstance(frame, av.VideoFrame):
                    t_ns = t0 + round((frame.time or 0.0) * NS_PER_S)
                    if self.realtime and not self._sleep_until(t_ns):
                        return
                    image = frame.to_ndarray(format="bgr24")  # (H, W, 3) uint8 BGR
                    self.frame_ring.put(Frame(image, t_ns, self.frames))  # never waits
                    self.frames += 1
                elif isinstance(frame, av.AudioFrame) and resampler is not None:
                    try:
                        blocks = resampler.resample(frame)
                    except ValueError:  # a damaged frame whose format differs: skipped
                        self.errors += 1
                        continue
                    for block in blocks:
                        audio_next_s = self._write_audio(block, t0, audio_next_s)
                        if audio_next_s is None:
                            return
        if self.frames == 0:
            raise SourceError(f"media file {self.path}: no video frame could be decoded "
                              "(corrupt, or an empty video stream)")
        if resampler is not None:
            for block in resampler.resample(None):  # flush what the resampler holds
                audio_next_s = self._write_audio(block, t0, audio_next_s)
                if audio_next_s is None:
                    return

    def _decoded_packets(self, container: av.container.InputContainer,
                         streams: list[av.stream.Stream]) -> Iterator[list[Any]]:
        """The frames of each packet, in file order. A packet that fails to decode is skipped
        and counted in ``errors`` (logged once per run of failures), as a player would;
        ``_MAX_BAD_PACKETS`` in a row, or a container that cannot be read on, is a
        :class:`SourceError`."""
        bad = 0
        packets = container.demux(*streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as e:
                raise SourceError(f"media file {self.path} is corrupt: {e}") from None
            try:
                decoded = list(packet.decode())
            except av.FFmpegError as e:
                self.errors += 1
                bad += 1
                if bad == 1:
                    logger.warning("media file %s: could not decode a %s packet at %.2f s; "
                                   "skipped (%s)", self.path, packet.stream.type,
                                   float(packet.pts * packet.time_base)
                                   if packet.pts is not None and packet.time_base else 0.0, e)
                if bad >= _MAX_BAD_PACKETS:
                    raise SourceError(f"media file {self.path} is corrupt: {bad} packets in a "
                                      f"row could not be decoded ({e})") from None
                continue
            bad = 0
            yield decoded

    def _write_audio(self, block: av.AudioFrame, t0: int, next_s: float | None) -> float | None:
        """Write one resampled block; returns the time just past it (s), None if stopped."""
        samples = block.to_ndarray().reshape(-1)  # (1, n) packed flt mono -> (n,) float32 @16 kHz
        n = int(samples.shape[0])
        if block.pts is not None and block.time_base is not None:
            start_s = float(block.pts * block.time_base)
        else:
            start_s = next_s or 0.0
        end_s = start_s + n / SAMPLE_RATE
        if self.realtime and not self._sleep_until(t0 + round(end_s * NS_PER_S)):
            return None
        assert self.audio_ring is not None
        self.audio_ring.write(
            samples.astype(np.float32, copy=False), t0 + round(start_s * NS_PER_S)
        )
        self.audio_samples += n
        return end_s

    def _close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


# -- the synthetic demo scene -----------------------------------------------------------------


class DemoSource(_SourceThread):
    """Plays :class:`DemoScene` ``(seed, size, fps)``: frames and 16 kHz audio on one clock.

    Frame ``i`` is stamped ``t0 + i / fps`` and has ``index`` i, so ``scene.frame(i)`` gives its
    ground-truth mask. Audio goes out in blocks of ``block_ms``; the block starting at sample s is
    stamped ``t0 + s / 16000``. ``realtime``: a frame is delivered at its time, an audio block
    when its last sample has happened; otherwise as fast as possible (in the same order).

    Args:
        frames, audio: the rings.
        fps, size, seed: the scene.
        realtime: pace in real time.
        clock, sleep: injected in tests.
        block_ms: audio block length.
        max_frames: end (``finished``) after this many frames and the audio up to their end
            time, ``max_frames / fps`` s; None: run until stopped.
    """

    def __init__(
        self,
        frames: FrameRing,
        audio: AudioRing | None,
        fps: float = 30.0,
        size: int = 224,
        seed: int = 0,
        realtime: bool = True,
        clock: Clock = time.monotonic_ns,
        sleep: Sleep = time.sleep,
        block_ms: int = 20,
        max_frames: int | None = None,
    ) -> None:
        super().__init__("demo", clock, sleep)
        from pcmanet.data.synthetic_demo import DemoScene  # heavy import, only when used

        self.scene = DemoScene(seed=seed, size=size, fps=fps)
        self.frame_ring, self.audio_ring, self.fps = frames, audio, fps
        self.realtime, self.max_frames = realtime, max_frames
        self.block_samples = max(1, SAMPLE_RATE * block_ms // 1000)

    def _run(self) -> None:
        t0 = self.t0_ns
        assert t0 is not None, "start() sets t0"
        end_sample = (
            None if self.max_frames is None else round(self.max_frames * SAMPLE_RATE / self.fps)
        )
        i = s = 0  # next frame index, next audio sample
        while not self.stopping:
            video_left = self.max_frames is None or i < self.max_frames
            audio_left = self.audio_ring is not None and (end_sample is None or s < end_sample)
            if not video_left and not audio_left:
                return
            n = (
                self.block_samples
                if end_sample is None
                else min(self.block_samples, end_sample - s)
            )
            t_frame_ns = t0 + i * NS_PER_S / self.fps
            t_block_end_ns = t0 + (s + n) * NS_PER_S / SAMPLE_RATE  # block ready at its end
            if video_left and (not audio_left or t_frame_ns <= t_block_end_ns):
                if self.realtime and not self._sleep_until(round(t_frame_ns)):
                    return
                image, _, _ = self.scene.frame(i)  # (H, W, 3) uint8 BGR
                self.frame_ring.put(Frame(image, round(t_frame_ns), i))
                self.frames += 1
                i += 1
            else:
                if self.realtime and not self._sleep_until(round(t_block_end_ns)):
                    return
                assert self.audio_ring is not None
                self.audio_ring.write(self.scene.audio(s, n), t0 + s * NS_PER_S // SAMPLE_RATE)
                self.audio_samples += n
                s += n
