"""Pairing video frames with audio, and choosing the temporal window (docs/design.md section 4).

* :class:`Pairer`: a frame captured at t gets the log-mel window (96, 64) ending at t + offset.
  Its :class:`PairingPolicy` says what happens when that audio has not all arrived yet:
  ``latest`` (the default) never waits and takes the window ending at the newest audio
  received, reporting how much earlier it ends (``audio_lag_ns``); ``exact`` waits a bounded
  time for it. Either way a frame whose audio is too far behind goes on with the latest window,
  flagged ``audio_late``. It runs in the engine thread; capture never waits on it.
* :func:`window_indices`: the model's T = 5 frame window from a history of capture times: the
  newest frame and the cached frames nearest t - 1 s, t - 2 s, ...
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Callable, Sequence

from pcmanet.audio.frontend import EXAMPLE_FRAMES, HOP_SAMPLES, WINDOW_SAMPLES
from stream.buffers.frame_ring import nearest_index
from stream.buffers.frames import NS_PER_S, Frame, PairedFrame
from stream.buffers.mel_ring import MelRing, MelWindow


class PairingPolicy(enum.Enum):
    """What the engine thread does when a frame's audio has not all arrived yet."""

    LATEST = "latest"
    """Never wait: use the window ending at the newest audio received, when it ends at most
    ``max_lag_s`` before the wanted one (outcome ``lagged``); further behind, ``late``. The
    engine (and the GPU) never idles on audio; masks see audio shifted by up to ``max_lag_s``."""
    EXACT = "exact"
    """Wait up to ``max_wait_s`` for the window ending at the wanted time; then ``late``. Every
    window ends exactly at the capture time (+ offset), at the cost of the wait."""


class Pairer:
    """Gives each frame the log-mel window of the audio ending at its capture time + offset.

    The *wanted* window is the last ``frames`` log-mel frames that lie wholly before
    ``t_capture_ns + offset_ns`` (it ends up to one 10 ms hop before that time). A frame's
    ``audio_lag_ns`` is how much earlier the window it got ends than the wanted one: 0 when it
    got the wanted window or none, a multiple of 10 ms otherwise.

    Outcomes (counted in :meth:`stats`):

    * ``on_time``: the wanted window is there (``exact``: possibly after waiting); lag 0,
      ``audio_late`` False.
    * ``lagged`` (``latest`` only): the wanted window is not complete yet, and the newest window
      held ends at most ``max_lag_s`` before it: that window is used at once, ``audio_late``
      False, its lag reported.
    * ``late``: ``exact``: the wanted window did not arrive within ``max_wait_s``; ``latest``:
      the audio received ends more than ``max_lag_s`` before it. The frame gets the latest
      window held (or None if there is none yet), ``audio_late`` True, its lag reported. In
      ``exact`` mode a source that has delivered nothing for ``stall_s`` is not waited for at
      all, so a dead microphone costs no latency per frame.
    * ``no_audio``: no audio ever arrived; logmel None, ``audio_late`` False. Never waits.
    * ``unavailable``: the window can never exist (it starts before the stream did, or its audio
      was already overwritten; ``latest``: also a lagging window that would start before the
      stream); logmel None, ``audio_late`` False.

    Args:
        mel_ring: log-mel frames of the audio; the Pairer calls its ``update``.
        offset_ns: added to the capture time (from calib; positive: audio lags video).
        max_wait_s: ``exact``: longest wait for audio per frame.
        clock: the pipeline clock, ``time.monotonic_ns``; injected in tests.
        sleep: waits the given seconds while polling; injected in tests (no real sleep).
        poll_s: polling period while waiting.
        stall_s: audio that has not advanced for this long is treated as stalled.
        frames: log-mel frames per window (96 = 0.96 s).
        policy: :class:`PairingPolicy`; ``latest`` never calls ``sleep``.
        max_lag_s: ``latest``: the longest lag accepted as not late.
    """

    def __init__(
        self,
        mel_ring: MelRing,
        offset_ns: int = 0,
        max_wait_s: float = 0.05,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], object] = time.sleep,
        poll_s: float = 0.002,
        stall_s: float = 0.5,
        frames: int = EXAMPLE_FRAMES,
        policy: PairingPolicy = PairingPolicy.LATEST,
        max_lag_s: float = 0.04,
    ) -> None:
        if max_wait_s < 0 or poll_s <= 0 or max_lag_s < 0:
            raise ValueError(f"need max_wait_s >= 0, poll_s > 0 and max_lag_s >= 0, got "
                             f"{max_wait_s}, {poll_s}, {max_lag_s}")
        self.mel_ring, self.offset_ns, self.frames = mel_ring, offset_ns, frames
        self.policy = PairingPolicy(policy)
        self._clock, self._sleep = clock, sleep
        self._max_wait_ns = round(max_wait_s * NS_PER_S)
        self._max_lag_ns = round(max_lag_s * NS_PER_S)
        self._poll_s, self._stall_ns = poll_s, round(stall_s * NS_PER_S)
        self._seen_end, self._seen_at = -1, 0  # audio progress: end sample, and when it moved
        self._counts = dict.fromkeys(
            ("paired", "on_time", "lagged", "late", "no_audio", "unavailable"), 0)
        self._wait_ns_total = self._wait_ns_max = 0
        self._lag_ns_total = self._lag_ns_max = 0

    def pair(self, frame: Frame) -> PairedFrame:
        """The frame with its (96, 64) log-mel window. ``latest``: never waits; ``exact``:
        waits at most ``max_wait_s``."""
        self._counts["paired"] += 1
        target = frame.t_capture_ns + self.offset_ns
        if self.policy is PairingPolicy.LATEST:
            return self._pair_latest(frame, target)
        return self._pair_exact(frame, target)

    def _wanted(self, frame: Frame, target: int) -> PairedFrame | tuple[tuple[int, int], int]:
        """New log-mel frames computed; then the frame paired when its wanted window settles
        it (complete: on time; no audio yet; before the stream or overwritten: unavailable),
        else (the wanted window's frame span, the ring's end frame)."""
        self.mel_ring.update()
        span = self.mel_ring.span(target, self.frames)
        if span is None:
            return self._result(frame, None, "no_audio")
        begin, end = self.mel_ring.frame_range
        if span[0] < 0 or span[0] < begin:  # before the stream began, or overwritten
            return self._result(frame, None, "unavailable")
        if span[1] <= end:
            window = self.mel_ring.window(target, self.frames)
            if window is not None:
                return self._result(frame, window, "on_time")
        return span, end

    def _pair_latest(self, frame: Frame, target: int) -> PairedFrame:
        """The wanted window if it is complete, else the newest one held; never waits."""
        got = self._wanted(frame, target)
        if isinstance(got, PairedFrame):
            return got
        span, end = got
        lag_ns = self._wanted_end_ns(span) - self.mel_ring.audio.time_of(_frames_end(end))
        latest = self.mel_ring.latest_window(self.frames)
        if lag_ns > self._max_lag_ns:
            return self._result(frame, latest, "late", span)
        if latest is None:  # a lagging window would start before the stream
            return self._result(frame, None, "unavailable")
        return self._result(frame, latest, "lagged", span)

    def _pair_exact(self, frame: Frame, target: int) -> PairedFrame:
        """The wanted window, waiting at most ``max_wait_s`` for it; then the latest one."""
        waited_from: int | None = None
        try:
            while True:
                got = self._wanted(frame, target)
                if isinstance(got, PairedFrame):
                    return got
                span = got[0]
                now = self._clock()
                if self._stalled(now):
                    break
                if waited_from is None:
                    waited_from = now
                remaining = waited_from + self._max_wait_ns - now
                if remaining <= 0:
                    break
                self._sleep(min(self._poll_s, remaining / NS_PER_S))
            return self._result(frame, self.mel_ring.latest_window(self.frames), "late", span)
        finally:
            if waited_from is not None:
                waited = self._clock() - waited_from
                self._wait_ns_total += waited
                self._wait_ns_max = max(self._wait_ns_max, waited)

    def _stalled(self, now: int) -> bool:
        """Whether the audio has not advanced for ``stall_s`` (seen across calls)."""
        end = self.mel_ring.audio.end_sample
        if end != self._seen_end:
            self._seen_end, self._seen_at = end, now
            return False
        return now - self._seen_at >= self._stall_ns

    def _wanted_end_ns(self, span: tuple[int, int]) -> int:
        """Capture time just past the wanted window's last sample."""
        return self.mel_ring.audio.time_of(_frames_end(span[1]))

    def _result(self, frame: Frame, window: MelWindow | None, outcome: str,
                span: tuple[int, int] | None = None) -> PairedFrame:
        """The PairedFrame; ``span`` (the wanted window's frames) gives the lag of ``window``."""
        self._counts[outcome] += 1
        late = outcome == "late"
        if window is None:
            return PairedFrame(frame, None, None, None, audio_late=late)
        logmel, t_start, t_end = window
        lag_ns = max(0, self._wanted_end_ns(span) - t_end) if span is not None else 0
        self._lag_ns_total += lag_ns
        self._lag_ns_max = max(self._lag_ns_max, lag_ns)
        return PairedFrame(frame, logmel, t_start, t_end, audio_late=late, audio_lag_ns=lag_ns)

    def stats(self) -> dict[str, int]:
        """Counters: paired == on_time + lagged + late + no_audio + unavailable; waits and
        lags (of the windows used) in ns."""
        return {
            **self._counts,
            "wait_ns_total": self._wait_ns_total,
            "wait_ns_max": self._wait_ns_max,
            "lag_ns_total": self._lag_ns_total,
            "lag_ns_max": self._lag_ns_max,
        }


def _frames_end(k_stop: int) -> int:
    """Sample just past log-mel frame ``k_stop - 1``: the end of frames ``[.., k_stop)``."""
    return HOP_SAMPLES * (k_stop - 1) + WINDOW_SAMPLES


def window_indices(
    history: Sequence[int],
    t_now: int | None = None,
    T: int = 5,
    spacing_s: float = 1.0,
) -> list[int]:
    """Indices into ``history`` of the T frames of the model's window, oldest first.

    The last index is the newest frame (``len(history) - 1``); before it, the frames nearest
    ``t_now - j * spacing_s`` for j = T - 1, ..., 1. While the history is shorter than the
    window, the targets before its start fall on index 0: the oldest frame is repeated.

    Args:
        history: capture times (ns) of the cached frames, ascending; the last is the newest.
        t_now: the window's reference time; default the newest capture time.
        T: frames per window.
        spacing_s: time between window frames (training used 1 s).

    Raises:
        ValueError: empty history, T < 1, or times not ascending.
    """
    if not history:
        raise ValueError("window_indices needs at least one frame in history")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if any(a > b for a, b in itertools.pairwise(history)):
        raise ValueError("history capture times must be ascending")
    newest = len(history) - 1
    t_ref = history[newest] if t_now is None else t_now
    spacing_ns = round(spacing_s * NS_PER_S)
    older = [nearest_index(history, t_ref - j * spacing_ns) for j in range(T - 1, 0, -1)]
    return [*older, newest]
