"""One media file, video and audio, decoded with PyAV (docs/design.md section 3):
:class:`MediaFileSource`, paced in real time (or as fast as possible) with the container's
timestamps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream.buffers.audio_ring import AudioRing
from stream.buffers.frame_ring import FrameRing
from stream.buffers.frames import NS_PER_S, Frame
from stream.capture.base import SAMPLE_RATE, Clock, Sleep, SourceError, _SourceThread

logger = logging.getLogger(__name__)

_MAX_BAD_PACKETS = 25  # media file: packets failing to decode in a row: the file is corrupt


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
