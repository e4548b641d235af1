"""``--show``: the mask drawn over the frame, with FPS and latency, in an OpenCV window."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import cv2
import numpy as np

from stream.buffers.frames import Frame

WINDOW = "PCMANet Live"


def draw_overlay(image: np.ndarray, prob: np.ndarray, threshold: float, lines: list[str]
                 ) -> np.ndarray:
    """(H, W, 3) uint8 BGR frame, (H, W) probabilities -> a new BGR image: the mask tinted
    green with its outline, and ``lines`` of text top left."""
    mask = prob > threshold
    out = image.copy()
    green = np.array([0, 200, 0], np.float32)
    out[mask] = (0.5 * out[mask] + 0.5 * green).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    for i, text in enumerate(lines):
        y = 16 + 16 * i
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


class Overlay:
    """A pipeline sink showing each mask in a window (runs in the publishing thread).

    The FPS is over the last second of shown masks; latency is capture -> publish of the mask.
    Closing the window (or pressing q / Esc) calls ``on_quit``.
    """

    def __init__(self, threshold: float = 0.5, on_quit: Any = None) -> None:
        self.threshold, self.on_quit = threshold, on_quit
        self._times: deque[float] = deque(maxlen=120)
        self._open = False

    def __call__(self, frame: Frame, prob: np.ndarray, header: dict[str, Any]) -> None:
        now = time.monotonic()
        self._times.append(now)
        recent = [t for t in self._times if now - t <= 1.0]
        latency_ms = (header["t_publish_ns"] - header["t_capture_ns"]) / 1e6
        lines = [f"{len(recent)} FPS  latency {latency_ms:.0f} ms",
                 f"keep {header['keep_ratio']:.2f}  frame {header['frame_index']}"]
        cv2.imshow(WINDOW, draw_overlay(frame.image, prob, self.threshold, lines))
        self._open = True
        key = cv2.waitKey(1) & 0xFF
        closed = cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
        if (key in (ord("q"), 27) or closed) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(WINDOW)
            cv2.waitKey(1)
            self._open = False
