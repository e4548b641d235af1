"""Immutable records that travel through the live pipeline (docs/design.md sections 2-4).

Every time is an ``int`` in nanoseconds on the pipeline's one clock, ``time.monotonic_ns()``,
stamped at the source and never re-stamped downstream. The dataclasses are frozen; the arrays
they hold are not copied, so producers hand over arrays they no longer write to.

``eq=False``: records compare by identity (comparing ndarray fields elementwise has no single
truth value), and stay hashable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS_PER_S = 1_000_000_000  # the pipeline's times are int nanoseconds


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured video frame.

    Attributes:
        image: (H, W, 3) uint8 BGR, as OpenCV returns it.
        t_capture_ns: ``time.monotonic_ns()`` at grab (for files: the container's timestamp
            mapped onto the same clock).
        index: the source's own 0-based frame counter; gaps mean drops (for a media file, the
            frame's number in the file).
    """

    image: np.ndarray  # (H, W, 3) uint8 BGR
    t_capture_ns: int
    index: int


@dataclass(frozen=True, eq=False)
class PairedFrame:
    """A frame with the log-mel window of the audio that ends at its capture time (+ offset).

    Attributes:
        frame: the video frame.
        logmel: (96, 64) float32 VGGish log-mel frames (0.96 s, 10 ms hop, 64 mel bands), oldest
            first; None when no complete window of audio exists (no audio source, or the first
            ~1 s of the stream).
        t_audio_start_ns: capture time of the window's first sample; None with ``logmel`` None.
        t_audio_end_ns: capture time just past the window's last sample (first sample time +
            samples / 16 kHz); None with ``logmel`` None.
        audio_late: the audio ending at ``t_capture_ns + offset`` had not arrived (within the
            Pairer's bounded wait, or its lag bound), so ``logmel`` is the latest window
            available (ending earlier).
        audio_lag_ns: how much earlier ``logmel`` ends than the window ending at
            ``t_capture_ns + offset`` would (>= 0, a multiple of the 10 ms hop); 0 when it is
            that window, or when ``logmel`` is None.
    """

    frame: Frame
    logmel: np.ndarray | None  # (96, 64) float32
    t_audio_start_ns: int | None
    t_audio_end_ns: int | None
    audio_late: bool
    audio_lag_ns: int = 0
