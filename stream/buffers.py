"""Bounded ring buffers between the sources and the engine (DESIGN.md section 3).

* :class:`FrameRing`: video frames, bounded, named drop policy, never blocks the producer.
* :class:`AudioRing`: preallocated float32 mono 16 kHz samples, each with its absolute index and
  capture time; the audio callback only copies into it.
* :class:`MelRing`: VGGish log-mel frames (10 ms hop, 64 bands) computed incrementally from an
  AudioRing, so the 0.96 s window (96, 64) ending at any time is a slice, not a recomputation.

Every ring counts what was written, read and dropped: ``written == read + dropped + buffered``
(buffered: written but not yet read).
"""

from __future__ import annotations

import bisect
import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
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
from stream.frames import Frame

NS_PER_S = 1_000_000_000


class DropPolicy(enum.Enum):
    """What a full ring does with a new item."""

    DROP_OLDEST = "drop_oldest"  # evict the oldest buffered item; the ring keeps the newest N
    DROP_NEWEST = "drop_newest"  # refuse the new item; the ring keeps the oldest N


def nearest_index(times: Sequence[int], t_ns: int) -> int:
    """Index of the value in ascending ``times`` nearest ``t_ns`` (the earlier one on a tie).

    Raises:
        ValueError: ``times`` is empty.
    """
    if not times:
        raise ValueError("nearest_index needs at least one time")
    i = bisect.bisect_left(times, t_ns)  # times[i - 1] < t_ns <= times[i]
    if i == 0:
        return 0
    if i == len(times):
        return i - 1
    return i - 1 if t_ns - times[i - 1] <= times[i] - t_ns else i


class FrameRing:
    """Thread-safe bounded FIFO of :class:`Frame`; ``put`` never blocks.

    Consuming reads (``get``, ``get_latest``) count as read; ``latest``, ``nearest`` and
    ``snapshot`` only look. Frames are expected in capture order (one source per ring), which
    ``nearest`` relies on.

    Args:
        capacity: most frames held.
        policy: which frame a full ring drops, see :class:`DropPolicy`.
    """

    def __init__(self, capacity: int, policy: DropPolicy = DropPolicy.DROP_OLDEST) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.policy = capacity, policy
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._written = self._read = self._dropped = 0
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Add a frame without waiting; returns False when the frame itself was dropped."""
        with self._cond:
            self._written += 1
            if self._closed:
                self._dropped += 1
                return False
            if len(self._frames) >= self.capacity:
                self._dropped += 1
                if self.policy is DropPolicy.DROP_NEWEST:
                    return False
                self._frames.popleft()
            self._frames.append(frame)
            self._cond.notify()
            return True

    def get(self, timeout_s: float | None = 0.0) -> Frame | None:
        """Remove and return the oldest frame, waiting up to ``timeout_s`` (None: until one
        arrives or the ring is closed); None on timeout or when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames or self._closed, timeout_s):
                return None
            if not self._frames:
                return None
            self._read += 1
            return self._frames.popleft()

    def get_latest(self, timeout_s: float | None = 0.0) -> Frame | None:
        """Remove and return the newest frame; the older ones it skips count as dropped.

        The keep-latest read for a consumer slower than the source. Waits as :meth:`get`.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames or self._closed, timeout_s):
                return None
            if not self._frames:
                return None
            frame = self._frames.pop()
            self._dropped += len(self._frames)
            self._frames.clear()
            self._read += 1
            return frame

    def latest(self) -> Frame | None:
        """The newest buffered frame, left in place; None when empty."""
        with self._cond:
            return self._frames[-1] if self._frames else None

    def nearest(self, t_ns: int) -> Frame | None:
        """The buffered frame whose capture time is nearest ``t_ns``, left in place (None when
        empty). For a history ring: the frames nearest t - 1 s, t - 2 s, ... of a window."""
        with self._cond:
            if not self._frames:
                return None
            times = [f.t_capture_ns for f in self._frames]  # ascending; capacity is small
            return self._frames[nearest_index(times, t_ns)]

    def snapshot(self) -> list[Frame]:
        """The buffered frames, oldest first, left in place."""
        with self._cond:
            return list(self._frames)

    def close(self) -> None:
        """Wake every waiting reader; later ``put`` calls are dropped (and counted)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def stats(self) -> dict[str, int]:
        """Counters: written == read + dropped + buffered."""
        with self._cond:
            return {
                "written": self._written,
                "read": self._read,
                "dropped": self._dropped,
                "buffered": len(self._frames),
                "capacity": self.capacity,
            }


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
