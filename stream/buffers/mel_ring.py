"""The log-mel ring: VGGish log-mel frames computed incrementally from an :class:`AudioRing`
(docs/design.md section 3).

:class:`MelRing` computes frames (10 ms hop, 64 bands) as audio arrives, so the 0.96 s window
(96, 64) ending at any time is a slice (:class:`MelWindow`), not a recomputation.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import torch

from pcmanet.audio.frontend import (
    EXAMPLE_FRAMES,
    HOP_SAMPLES,
    MEL_BANDS,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    LogMel,
    num_frames,
)
from stream.buffers.audio_ring import AudioRing


class MelWindow(NamedTuple):
    """A log-mel window: (F, 64) float32 frames and the capture times of the audio it covers."""

    logmel: np.ndarray  # (F, 64) float32, oldest frame first
    t_start_ns: int  # capture time of the first sample of the first frame
    t_end_ns: int  # capture time just past the last sample of the last frame


class MelRing:
    """VGGish log-mel frames of an :class:`AudioRing`, computed incrementally as audio arrives.

    Frame k (absolute) covers samples ``[160 k, 160 k + 400)``, exactly as :class:`LogMel` on
    the whole signal. :meth:`update` computes only the frames completed since the last call, from
    a chunk that starts at sample 160 k (so it re-reads the 240-sample overlap). One thread at a
    time runs ``update``; ``window`` may be called from any thread.

    Args:
        audio: the source ring; MelRing is its consumer (it reads, advancing the read counter).
        capacity_frames: frames kept (100 per second); at least one 96-frame window.
        compute_dtype: LogMel's arithmetic; float64 equals the whole-signal LogMel to float32
            rounding (float32 is faster, ~1e-3 off after the log near silence).
    """

    def __init__(
        self,
        audio: AudioRing,
        capacity_frames: int = 1000,
        compute_dtype: torch.dtype = torch.float64,
    ) -> None:
        if capacity_frames < EXAMPLE_FRAMES:
            raise ValueError(f"capacity_frames must be >= {EXAMPLE_FRAMES}, got {capacity_frames}")
        if audio.sample_rate != SAMPLE_RATE:
            raise ValueError(f"MelRing needs {SAMPLE_RATE} Hz audio, got {audio.sample_rate}")
        if audio.capacity < WINDOW_SAMPLES + HOP_SAMPLES:
            raise ValueError(f"audio ring too small for log-mel frames: {audio.capacity} samples")
        self.audio, self.capacity = audio, capacity_frames
        self._logmel = LogMel(compute_dtype)
        self._buf = np.zeros((capacity_frames, MEL_BANDS), dtype=np.float32)  # (capacity, 64)
        self._lock = threading.Lock()  # guards _buf, _begin, _end
        self._update_lock = threading.Lock()  # one update at a time
        self._begin = 0  # frames [_begin, _end) are held
        self._end = 0
        self._computed = self._skipped = 0

    @property
    def frame_range(self) -> tuple[int, int]:
        """Absolute frame indices held: ``[begin, end)``."""
        with self._lock:
            return self._begin, self._end

    def update(self) -> int:
        """Compute the frames that the audio written since the last call completes; returns how
        many. Frames whose audio was overwritten before this ran are skipped (counted)."""
        with self._update_lock:
            k, k_stop = self._end, num_frames(self.audio.end_sample)
            if k_stop <= k:
                return 0
            # Skip frames whose samples are gone, and frames that would not fit in the ring.
            k_first = max(-(-self.audio.start_sample // HOP_SAMPLES), k_stop - self.capacity)
            if k < k_first:
                self._skipped += k_first - k
                k = k_first
            start, n = HOP_SAMPLES * k, HOP_SAMPLES * (k_stop - k - 1) + WINDOW_SAMPLES
            wave = self.audio.read(start, n)  # (n,) float32 @16 kHz
            if wave is None:  # overwritten while reading: the next update skips ahead
                return 0
            with torch.inference_mode():
                frames = self._logmel(torch.from_numpy(wave)).numpy()  # (k_stop - k, 64)
            with self._lock:
                if k != self._end:  # skipped: the held frames are no longer contiguous
                    self._begin = k
                self._write(k, frames)
                self._end = k_stop
                self._begin = max(self._begin, k_stop - self.capacity)
            self._computed += k_stop - k
            return k_stop - k

    def _write(self, k: int, frames: np.ndarray) -> None:
        """Store (F, 64) frames at absolute index k, wrapping around (F <= capacity)."""
        F = frames.shape[0]
        pos = k % self.capacity
        first = min(F, self.capacity - pos)
        self._buf[pos : pos + first] = frames[:first]
        self._buf[: F - first] = frames[first:]

    def _slice(self, k0: int, k_stop: int) -> np.ndarray:
        """Copy of held frames ``[k0, k_stop)``: (k_stop - k0, 64) float32; lock held."""
        idx = np.arange(k0, k_stop) % self.capacity
        return self._buf[idx]  # fancy indexing copies

    def frames(self, k0: int, k_stop: int) -> np.ndarray | None:
        """Copy of absolute frames ``[k0, k_stop)``: (k_stop - k0, 64) float32, or None unless
        all of them are held."""
        with self._lock:
            if k0 < self._begin or k_stop > self._end or k0 > k_stop:
                return None
            return self._slice(k0, k_stop)

    def span(self, t_end_ns: int, frames: int = EXAMPLE_FRAMES) -> tuple[int, int] | None:
        """Absolute frames ``[k0, k_stop)`` of the window ending at ``t_end_ns``: the last
        ``frames`` frames that lie wholly before it. None before the first audio arrives."""
        if self.audio.t0_ns is None:
            return None
        k_stop = num_frames(max(0, self.audio.sample_at(t_end_ns)))
        return k_stop - frames, k_stop

    def window(self, t_end_ns: int, frames: int = EXAMPLE_FRAMES) -> MelWindow | None:
        """The ``frames`` log-mel frames (0.96 s for 96) ending at ``t_end_ns``, as a copied
        slice: logmel (frames, 64) float32. None unless all of them are held (not computed
        yet, overwritten, or before the stream began). Call :meth:`update` first."""
        span = self.span(t_end_ns, frames)
        if span is None or span[0] < 0:
            return None
        return self._window(*span)

    def latest_window(self, frames: int = EXAMPLE_FRAMES) -> MelWindow | None:
        """The newest ``frames`` frames held, or None if fewer are held."""
        with self._lock:
            k_stop = self._end
        return self._window(k_stop - frames, k_stop)

    def _window(self, k0: int, k_stop: int) -> MelWindow | None:
        with self._lock:
            if k0 < self._begin or k_stop > self._end:
                return None
            logmel = self._slice(k0, k_stop)  # (frames, 64)
        t_start = self.audio.time_of(HOP_SAMPLES * k0)
        t_end = self.audio.time_of(HOP_SAMPLES * (k_stop - 1) + WINDOW_SAMPLES)
        return MelWindow(logmel, t_start, t_end)

    def stats(self) -> dict[str, int]:
        """Frame counters: computed, skipped (audio lost before it was turned into frames),
        and the held range."""
        begin, end = self.frame_range
        return {"computed": self._computed, "skipped": self._skipped, "begin": begin, "end": end}
