"""The audio ring: captured samples between the microphone (or file) and the log-mel ring
(docs/design.md section 3).

:class:`AudioRing` holds preallocated float32 mono 16 kHz samples, each with its absolute index
and capture time; the audio callback only copies into it. It counts what was written, read and
dropped: ``written == read + dropped + buffered`` (buffered: written but not yet read).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from pcmanet.audio.frontend import (
    SAMPLE_RATE,
)
from stream.buffers.frames import NS_PER_S


class AudioRing:
    """Preallocated ring of mono float32 samples @16 kHz with absolute indices and capture times.

    Sample ``s`` (absolute, 0 = the first sample ever written) was captured at
    ``time_of(s) = t0 + s * 1e9 / sample_rate`` ns, ``t0`` being the first block's start time.
    One writer (the audio callback) and any readers. ``write`` copies into the preallocated buffer
    and holds the lock only to update indices, never during a copy; a reader that finds its
    range overwritten while copying gets None.

    Counters (samples): ``written`` (including zero fill for gaps), ``read`` (consumed by
    :meth:`read`), ``dropped`` (overwritten or skipped before being read), ``gap`` (zeros
    written where a block's timestamp showed lost samples); written == read + dropped + buffered.

    Args:
        capacity_samples: samples held (16000 per second).
        sample_rate: Hz; the pipeline runs at 16 kHz.
        gap_tolerance_s: a block stamped later than its sample count predicts by more than this
            means samples were lost upstream; the gap is filled with zeros so that sample index
            and time stay linear. Smaller deviations (jitter, drift) are measured
            (``clock_error_ns``) and otherwise ignored.
        clock: stamps the first block when it comes without a time.
    """

    def __init__(
        self,
        capacity_samples: int,
        sample_rate: int = SAMPLE_RATE,
        gap_tolerance_s: float = 0.1,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if capacity_samples < 1:
            raise ValueError(f"capacity_samples must be >= 1, got {capacity_samples}")
        self.capacity, self.sample_rate, self._clock = capacity_samples, sample_rate, clock
        self._gap_tolerance_ns = round(gap_tolerance_s * NS_PER_S)
        self._buf = np.zeros(capacity_samples, dtype=np.float32)  # (capacity,) float32 @16 kHz
        self._lock = threading.Lock()
        self._end = 0  # samples [start_sample, _end) are readable
        self._pending_end = 0  # _end once the write in progress is done
        self._cursor = 0  # consumer position: samples before it were read or dropped
        self._t0_ns: int | None = None
        self._written = self._read = self._dropped = self._gap = 0
        self._clock_error_ns = 0

    # -- clock mapping ---------------------------------------------------------------------
    @property
    def t0_ns(self) -> int | None:
        """Capture time of sample 0; None before the first write."""
        return self._t0_ns

    def time_of(self, sample: int) -> int:
        """Capture time (ns) of absolute sample index ``sample``."""
        if self._t0_ns is None:
            raise RuntimeError("AudioRing has no clock mapping before its first write")
        return self._t0_ns + sample * NS_PER_S // self.sample_rate

    def sample_at(self, t_ns: int) -> int:
        """Samples captured before ``t_ns``: the index of the first sample at or after it.

        ``sample_at(time_of(s)) == s``; audio "ending at t" is samples ``[..., sample_at(t))``.
        """
        if self._t0_ns is None:
            raise RuntimeError("AudioRing has no clock mapping before its first write")
        return -((self._t0_ns - t_ns) * self.sample_rate // NS_PER_S)  # ceil division

    # -- writing ---------------------------------------------------------------------------
    def write(self, samples: np.ndarray, t_start_ns: int | None = None) -> int:
        """Copy (N,) mono samples @16 kHz captured from ``t_start_ns`` on; returns the absolute
        index of ``samples[0]``. Safe in a sounddevice callback: no allocation, short lock.

        ``t_start_ns`` None: count samples (for backends that report no ADC time).
        """
        if samples.ndim != 1:
            raise ValueError(f"samples must be 1-D mono (N,), got shape {samples.shape}")
        n = int(samples.shape[0])
        with self._lock:
            start, gap = self._end, 0
            if self._t0_ns is None:
                if t_start_ns is None:  # block just ended: its first sample is n samples ago
                    t_start_ns = self._clock() - n * NS_PER_S // self.sample_rate
                self._t0_ns = t_start_ns
            elif t_start_ns is not None:
                self._clock_error_ns = t_start_ns - self.time_of(start)
                if self._clock_error_ns > self._gap_tolerance_ns:
                    gap = self.sample_at(t_start_ns) - start  # samples lost upstream
            end = start + gap + n
            self._pending_end = end  # readers of the region being overwritten now fail
            # Samples [old_begin, new_begin) are overwritten; those at or past the cursor unread.
            old_begin, new_begin = max(0, start - self.capacity), max(0, end - self.capacity)
            self._dropped += max(0, new_begin - max(old_begin, self._cursor))
        if gap:
            self._copy_in(start, gap, None)
        self._copy_in(start + gap, n, samples)
        with self._lock:
            self._end = end
            self._written += gap + n
            self._gap += gap
        return start + gap

    def _copy_in(self, start: int, n: int, samples: np.ndarray | None) -> None:
        """Write n samples (zeros if None) at absolute index ``start``, wrapping around."""
        if n > self.capacity:  # only the last `capacity` samples survive
            if samples is not None:
                samples = samples[n - self.capacity :]
            start, n = start + n - self.capacity, self.capacity
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        if samples is None:
            self._buf[pos : pos + first] = 0.0
            self._buf[: n - first] = 0.0
        else:
            self._buf[pos : pos + first] = samples[:first]
            self._buf[: n - first] = samples[first:n]

    def _copy_out(self, start: int, out: np.ndarray) -> None:
        """Copy samples from absolute index ``start`` into (n,) ``out``, wrapping around."""
        n = out.shape[0]
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out[:first] = self._buf[pos : pos + first]
        out[first:] = self._buf[: n - first]

    # -- reading ---------------------------------------------------------------------------
    @property
    def end_sample(self) -> int:
        """Absolute index one past the newest sample (samples written so far, gaps included)."""
        with self._lock:
            return self._end

    @property
    def start_sample(self) -> int:
        """Absolute index of the oldest sample still held."""
        with self._lock:
            return max(0, self._end - self.capacity)

    def read(self, start_sample: int, n: int) -> np.ndarray | None:
        """Copy of samples ``[start_sample, start_sample + n)``: (n,) float32, consumed (the
        read counter and cursor advance). None if any of them was overwritten or has not
        arrived yet."""
        return self._read_range(start_sample, n, consume=True)

    def peek(self, start_sample: int, n: int) -> np.ndarray | None:
        """As :meth:`read`, without consuming (counters unchanged)."""
        return self._read_range(start_sample, n, consume=False)

    def _read_range(self, start: int, n: int, consume: bool) -> np.ndarray | None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        stop = start + n
        with self._lock:
            if start < max(0, self._end - self.capacity) or stop > self._end:
                return None
        out = np.empty(n, dtype=np.float32)  # (n,) float32 @16 kHz
        self._copy_out(start, out)
        with self._lock:
            if start < self._pending_end - self.capacity:  # a write overtook the copy
                return None
            if consume:
                begin = max(0, self._end - self.capacity)
                self._dropped += max(0, start - max(self._cursor, begin))  # skipped unread
                self._read += max(0, stop - max(self._cursor, start))
                self._cursor = max(self._cursor, stop)
        return out

    def stats(self) -> dict[str, int]:
        """Sample counters: written == read + dropped + buffered."""
        with self._lock:
            buffered = self._end - max(self._cursor, self._end - self.capacity, 0)
            return {
                "written": self._written,
                "read": self._read,
                "dropped": self._dropped,
                "buffered": buffered,
                "gap": self._gap,
                "capacity": self.capacity,
                "clock_error_ns": self._clock_error_ns,
            }
