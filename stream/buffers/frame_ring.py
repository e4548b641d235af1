"""The frame ring: captured video frames between a source and the engine (docs/design.md section 3).

:class:`FrameRing` is bounded, with a named :class:`OverflowPolicy`, and never blocks the producer.
It counts what was written, read and dropped: ``written == read + dropped + buffered``
(buffered: written but not yet read).
"""

from __future__ import annotations

import bisect
import enum
import threading
from collections import deque
from collections.abc import Sequence

from stream.buffers.frames import Frame


class OverflowPolicy(enum.Enum):
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
        policy: which frame a full ring drops, see :class:`OverflowPolicy`.
    """

    def __init__(self, capacity: int, policy: OverflowPolicy = OverflowPolicy.DROP_OLDEST) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.policy = capacity, policy
        self._frames: deque[Frame] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._written = self._read = self._dropped = 0
        self._closed = False
        self._notify: threading.Event | None = None

    def notify(self, event: threading.Event | None) -> None:
        """Set ``event`` on every frame put (one consumer waiting on several rings)."""
        self._notify = event

    def put(self, frame: Frame) -> bool:
        """Add a frame without waiting; returns False when the frame itself was dropped."""
        with self._cond:
            self._written += 1
            if self._closed:
                self._dropped += 1
                return False
            if len(self._frames) >= self.capacity:
                self._dropped += 1
                if self.policy is OverflowPolicy.DROP_NEWEST:
                    return False
                self._frames.popleft()
            self._frames.append(frame)
            self._cond.notify()
        if self._notify is not None:
            self._notify.set()
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
