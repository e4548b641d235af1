"""The viewer's threads: one receiver per publisher address, and the composer.

A receiver subscribes to ``mask/``, ``frame/`` and ``stats/`` of one address (a publisher, or
a ``stream.proxy`` backend) with :class:`~stream.transport.subscribe.MaskSubscriber`, so
CurveZMQ keys, validation and reconnection are the subscriber's: ZMQ reconnects by itself to
a publisher that restarts, and a stream that starts later is just a new topic.
The composer draws each stream's newest pair at most ``max_fps`` times a second.
"""

from __future__ import annotations

import logging
import threading
import time

from stream.transport.curve import CurveClientKeys
from stream.transport.subscribe import MaskSubscriber
from stream.viewer.tiles import Board

logger = logging.getLogger(__name__)

TOPICS = ("mask/", "frame/", "stats/")
POLL_S = 0.2                 # longest wait of a thread before it looks at its stop flag


class Receivers:
    """Receiver threads for ``board.sources`` and one composer thread; ``start`` / ``stop``.

    Args:
        board: where messages go.
        curve: CurveZMQ client keys for every address (None: plain).
        max_fps: most pictures drawn per stream per second (0: every pair).
        rcvhwm: messages each subscriber queues before ZMQ drops (seq gaps show them).
    """

    def __init__(self, board: Board, curve: CurveClientKeys | None = None,
                 max_fps: float = 15.0, rcvhwm: int = 64) -> None:
        self.board, self.max_fps = board, max_fps
        # Connecting here: a malformed address is a ValueError before any thread starts.
        self._subs = [MaskSubscriber(url, topic=TOPICS, curve=curve, rcvhwm=rcvhwm)
                      for url in board.sources]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Receivers:
        for i, sub in enumerate(self._subs):
            self._threads.append(threading.Thread(target=self._receive, args=(i, sub),
                                                  name=f"view-recv-{i}", daemon=True))
        self._threads.append(threading.Thread(target=self._compose, name="view-compose",
                                              daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        with self.board.cond:
            self.board.cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for sub in self._subs:
            sub.close()

    def counters(self) -> list[dict[str, int]]:
        """Each subscriber's counters (received, rejected, ...), in ``board.sources`` order."""
        return [sub.counters() for sub in self._subs]

    def _receive(self, index: int, sub: MaskSubscriber) -> None:
        failures = 0
        while not self._stop.is_set():
            msg = sub.recv(POLL_S)
            if msg is None:
                continue
            try:
                self.board.on_message(index, msg)
            except Exception:                      # a header the board cannot use: skip it
                failures += 1
                if failures <= 10 or failures % 100 == 0:
                    logger.exception("message %d from %s skipped", failures, sub.url)

    def _compose(self) -> None:
        period = 1.0 / self.max_fps if self.max_fps > 0 else 0.0
        while not self._stop.is_set():
            self.board.wait_pending(POLL_S)
            t0 = time.monotonic()
            try:
                self.board.compose_pending()
            except Exception:                      # one bad picture must not end the viewer
                logger.exception("drawing a picture failed")
            rest = period - (time.monotonic() - t0)
            if rest > 0:
                self._stop.wait(rest)              # the rate limit, not a synchronisation
