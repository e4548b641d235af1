"""What the viewer knows about each stream: its frames and masks paired by ``seq``, the picture
to show (the mask drawn over its frame, as ``run_live.py --show`` draws it) and its figures.

A :class:`Tile` per stream, all of them on a :class:`Board` that receiver threads feed
(:meth:`Board.on_message`) and the composer thread and the web server read. Pairing: a mask
is drawn over the frame with its ``seq``; a publisher that sends one frame each ``every``
masks has the masks in between drawn over the latest frame before them; a stream that has
sent no frame for ``FRAMELESS_S`` (masks only) is drawn on black.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from stream.run.overlay import draw_overlay
from stream.transport.subscribe import MaskMessage

FRAMELESS_S = 2.0          # no frame for this long: the stream's masks are drawn on black
KEEP = 8                   # masks and frames kept per stream while waiting for their pair
RATE_WINDOW_S = 2.0        # fps_out: masks received over about the last 2 s
LATENCY_MASKS = 30         # latency_ms: median of the last 30 masks
JPEG_QUALITY = 85


def compose(image: np.ndarray | None, mask: np.ndarray, header: dict[str, Any]) -> np.ndarray:
    """A mask over its frame -> (h, w, 3) uint8 BGR, tinted and outlined by ``draw_overlay``.

    image: (h, w, 3) uint8 BGR, or None: black at the mask's size. mask: (H, W) uint8 0/1, or
    float32 probabilities (prob16, ``header["threshold"]`` applies); scaled to (h, w) when
    the publisher sent a smaller frame."""
    threshold = float(header["threshold"]) if mask.dtype == np.float32 else 0.5
    if image is None:
        image = np.zeros((*mask.shape, 3), np.uint8)
    h, w = image.shape[:2]
    prob = mask.astype(np.float32)                                       # (H, W)
    if prob.shape != (h, w):
        prob = np.asarray(cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    return draw_overlay(image, prob, threshold, [])


class Tile:
    """One stream: the pair waiting to be drawn, the last picture, the figures. The Board's
    lock guards every field."""

    def __init__(self, key: str, stream: str, source: str) -> None:
        self.key, self.stream, self.source = key, stream, source
        self.masks: OrderedDict[int, MaskMessage] = OrderedDict()    # seq -> mask (no pair yet)
        self.frames: OrderedDict[int, MaskMessage] = OrderedDict()   # seq -> frame
        self.pending: tuple[MaskMessage, MaskMessage | None] | None = None   # (mask, frame)
        self.jpeg: bytes | None = None           # the last composed picture
        self.picture: dict[str, Any] = {}        # its seq, frame_index, size, has_frame
        self.version = 0                         # +1 per composed picture
        self.n_masks = self.n_frames = self.missed = self.restarts = 0
        self.last_seq: int | None = None
        self.t_last = self.t_frame = -1e18       # monotonic s: any message; a frame
        self.arrivals: deque[float] = deque(maxlen=256)              # mask receive times
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_MASKS)  # capture -> publish
        self.last_mask: dict[str, Any] = {}
        self.stats: dict[str, Any] = {}
        self._written: tuple[int, int] | None = None     # (t_publish_ns, frames written)
        self.fps_in: float | None = None

    @property
    def visible(self) -> bool:
        """Shown once a mask or a frame arrived (a stats-only sender, the proxy, is not)."""
        return self.n_masks + self.n_frames > 0

    # -- messages ---------------------------------------------------------------------------
    def on_mask(self, msg: MaskMessage, now: float) -> None:
        h = msg.header
        seq = h["seq"]
        if self.last_seq is not None and seq <= self.last_seq:     # the publisher restarted
            self.restarts += 1
            self.masks.clear()
            self.frames.clear()
        elif self.last_seq is not None:
            self.missed += seq - self.last_seq - 1
        self.last_seq = seq
        self.n_masks += 1
        self.arrivals.append(now)
        self.latency_ms.append((h["t_publish_ns"] - h["t_capture_ns"]) / 1e6)
        self.last_mask = h
        if now - self.t_frame > FRAMELESS_S:
            self.pending = (msg, None)
            return
        frame = self._frame_for(seq)
        if frame is not None:
            self.pending = (msg, frame)
        else:
            _put(self.masks, seq, msg)

    def on_frame(self, msg: MaskMessage, now: float) -> None:
        seq = msg.header["seq"]
        if self.frames and seq < next(reversed(self.frames)):         # restarted
            self.frames.clear()
            self.masks.clear()
        self.n_frames += 1
        self.t_frame = now
        _put(self.frames, seq, msg)
        every = _every(msg.header)
        waiting = [s for s in self.masks if seq <= s < seq + every]
        if waiting:
            self.pending = (self.masks[waiting[-1]], msg)
            for s in [s for s in self.masks if s <= waiting[-1]]:
                del self.masks[s]

    def on_stats(self, msg: MaskMessage) -> None:
        self.stats = msg.header
        counters = _dict(msg.header.get("counters"))
        fps_in = _number(counters.get("fps_in"))
        if fps_in is not None:
            self.fps_in = fps_in
            return
        written = _dict(counters.get("frame_ring")).get("written")
        if isinstance(written, int):
            now_ns = msg.header["t_publish_ns"]
            if self._written is not None and now_ns > self._written[0]:
                rate = (written - self._written[1]) / ((now_ns - self._written[0]) / 1e9)
                self.fps_in = rate if rate >= 0 else None
            self._written = (now_ns, written)

    def _frame_for(self, seq: int) -> MaskMessage | None:
        """The frame a mask goes on: its own, else the latest before it within `every`."""
        for s in reversed(self.frames):
            if s <= seq:
                frame = self.frames[s]
                return frame if seq < s + _every(frame.header) else None
        return None

    # -- drawing and figures ------------------------------------------------------------------
    def take_pending(self) -> tuple[MaskMessage, MaskMessage | None] | None:
        pending, self.pending = self.pending, None
        return pending

    def figures(self, now: float, stale_s: float, fail_s: float) -> dict[str, Any]:
        """The stream's live figures, JSON-able (None where not known yet)."""
        counters = _dict(self.stats.get("counters"))
        recent = [t for t in self.arrivals if now - t <= RATE_WINDOW_S]
        ring, engine = _dict(counters.get("frame_ring")), _dict(counters.get("engine"))
        drops = {"socket": int(_number(self.stats.get("dropped_at_socket")) or 0),
                 "ring": int(_number(ring.get("dropped")) or 0),
                 "handoff": int(_number(engine.get("handoff_dropped")) or 0),
                 "missed": self.missed}
        silent = now - self.t_last
        state, why = "live", None
        if counters.get("state") == "failed":
            state, why = "failed", str(counters.get("error") or "the stream failed")
        elif counters.get("state") == "done":
            state = "ended"
        elif silent > fail_s:
            state, why = "failed", f"nothing received for {silent:.0f} s"
        elif silent > stale_s:
            state, why = "reconnecting", f"nothing received for {silent:.1f} s"
        lat = sorted(self.latency_ms)
        m = self.last_mask
        return {
            "key": self.key, "stream": self.stream, "source": self.source, "state": state,
            "why": why, "fps_in": self.fps_in,
            "fps_out": len(recent) / RATE_WINDOW_S if self.arrivals else None,
            "latency_ms": lat[len(lat) // 2] if lat else None,
            "audio_lag_ms": m.get("audio_lag_ms"), "audio_late": m.get("audio_late"),
            "keep_ratio": m.get("keep_ratio"), "drops": {**drops, "total": sum(drops.values())},
            "seq": self.last_seq, "frame_index": m.get("frame_index"), "masks": self.n_masks,
            "frames": self.n_frames, "restarts": self.restarts, "picture": self.picture,
        }


def _dict(value: Any) -> dict[str, Any]:
    """A stats field that should be an object: itself, else {} (headers are not trusted)."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    """A stats field that should be a number: as float, else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _every(header: dict[str, Any]) -> int:
    """A frame header's optional ``every`` (1 when absent or not a positive int)."""
    every = header.get("every")
    return every if isinstance(every, int) and not isinstance(every, bool) and every > 0 else 1


def _put(d: OrderedDict[int, MaskMessage], seq: int, msg: MaskMessage) -> None:
    d[seq] = msg
    while len(d) > KEEP:
        d.popitem(last=False)


class Board:
    """Every stream's tile, fed by receiver threads and read by the composer and the server.

    Args:
        sources: the publisher addresses, in order; with more than one, a tile's key is
            ``<stream>@<index>`` (two publishers may use one stream name), else ``<stream>``.
        stale_s: nothing received from a stream for this long: "reconnecting".
        fail_s: nothing for this long: "failed".
        clock: monotonic seconds.
    """

    def __init__(self, sources: list[str], stale_s: float = 3.0, fail_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sources, self.stale_s, self.fail_s, self.clock = sources, stale_s, fail_s, clock
        self.tiles: dict[str, Tile] = {}
        self.cond = threading.Condition()        # guards tiles; notified on a new pair
        self.listeners: list[Callable[[], None]] = []   # called after a picture is composed

    def on_message(self, source: int, msg: MaskMessage) -> None:
        """One received message of the publisher at ``sources[source]`` (any thread)."""
        stream = msg.header["stream"]
        key = stream if len(self.sources) == 1 else f"{stream}@{source}"
        now = self.clock()
        with self.cond:
            tile = self.tiles.get(key)
            if tile is None:
                tile = self.tiles[key] = Tile(key, stream, self.sources[source])
            tile.t_last = now
            if msg.kind == "mask":
                tile.on_mask(msg, now)
            elif msg.kind == "frame":
                tile.on_frame(msg, now)
            else:
                tile.on_stats(msg)
            if tile.pending is not None:
                self.cond.notify_all()

    def compose_pending(self) -> int:
        """Draw every tile's waiting pair (JPEG); -> how many were drawn. The drawing runs
        outside the lock."""
        with self.cond:
            work = [(tile, p) for tile in self.tiles.values() if (p := tile.take_pending())]
        for tile, (mask, frame) in work:
            assert mask.mask is not None
            picture = compose(None if frame is None else frame.image, mask.mask, mask.header)
            ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                continue
            with self.cond:
                tile.jpeg = buf.tobytes()
                tile.version += 1
                tile.picture = {"seq": mask.header["seq"],
                                "frame_index": mask.header["frame_index"],
                                "width": int(picture.shape[1]), "height": int(picture.shape[0]),
                                "has_frame": frame is not None}
        if work:
            for listener in self.listeners:
                listener()
        return len(work)

    def wait_pending(self, timeout_s: float) -> None:
        """Block until some tile has a pair to draw, or ``timeout_s``."""
        with self.cond:
            if not any(t.pending for t in self.tiles.values()):
                self.cond.wait(timeout_s)

    def figures(self) -> list[dict[str, Any]]:
        """Every visible stream's figures, by key."""
        now = self.clock()
        with self.cond:
            return [t.figures(now, self.stale_s, self.fail_s)
                    for _, t in sorted(self.tiles.items()) if t.visible]

    def pictures(self, seen: dict[str, int]) -> list[tuple[str, int, dict[str, Any], bytes]]:
        """Pictures newer than ``seen`` (key -> version): (key, version, info, JPEG) each."""
        with self.cond:
            return [(k, t.version, dict(t.picture), t.jpeg) for k, t in self.tiles.items()
                    if t.jpeg is not None and t.version > seen.get(k, 0)]
