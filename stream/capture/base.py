"""What every source shares (docs/design.md sections 2-3): :class:`SourceError` and the capture
thread's lifecycle (:class:`_SourceThread`).

Every source stamps what it captures on one clock (``time.monotonic_ns()`` unless injected) and
only writes into its rings: it never waits on consumers. Lifecycle: ``start()`` opens the input
and raises :class:`SourceError` with one clear line when it cannot; the thread then runs until the
input ends (``finished`` is set), ``stop()`` is called, or an error ends it (``error``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from stream.buffers.frames import NS_PER_S

SAMPLE_RATE = 16_000  # Hz; every AudioRing in the pipeline is 16 kHz mono float32
_SLEEP_CHUNK_S = 0.05  # longest single sleep, so stop() is seen within 50 ms

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
