"""The optional `frame/<stream>` topic, publisher side: which frames go out, and their JPEG.

A subscriber that receives `mask/<stream>` gets no picture to put the mask on; with frames on,
the publisher also sends the frame each n-th mask was computed on, as a JPEG, under the mask's
`seq` and `frame_index` (header: `messages.FRAME_KEYS`). Off by default: encoding costs the
publishing thread about 1 ms per 224x224 frame (several ms at 720p), and the bytes go to
every subscriber of `frame/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .messages import FRAME_ENCODING, SCHEMA_VERSION


def option_problems(every: int, quality: int, max_side: int | None) -> list[tuple[str, str]]:
    """(key, why) for each impossible frame option (see `FrameOptions`)."""
    out = []
    if every < 1:
        out.append(("every", "must be >= 1"))
    if not 1 <= quality <= 100:
        out.append(("quality", "must be in 1..100"))
    if max_side is not None and max_side < 16:
        out.append(("max_side", "must be >= 16 (or null: the source's size)"))
    return out


@dataclass(frozen=True)
class FrameOptions:
    """Which frames are published and how.

    every: one frame each `every` masks (the masks whose seq is a multiple of it).
    quality: JPEG quality, 1..100.
    max_side: a frame whose longer side is larger is scaled down to it (aspect kept);
        None: sent at the source's size.
    """

    every: int = 1
    quality: int = 80
    max_side: int | None = 640

    def __post_init__(self) -> None:
        bad = option_problems(self.every, self.quality, self.max_side)
        if bad:
            raise ValueError("; ".join(f"{key} {why}" for key, why in bad))

    def wanted(self, seq: int) -> bool:
        """Whether the frame of the mask numbered `seq` is published."""
        return seq % self.every == 0


def scaled(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """(H, W, 3) uint8 -> the same, its longer side at most `max_side` (INTER_AREA)."""
    H, W = image.shape[:2]
    if max_side is None or max(H, W) <= max_side:
        return image
    k = max_side / max(H, W)
    size = (max(1, round(W * k)), max(1, round(H * k)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_frame(image: np.ndarray, options: FrameOptions) -> tuple[bytes, int, int]:
    """(H, W, 3) uint8 BGR frame -> (JPEG bytes, height, width of the JPEG)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"frame must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
    small = scaled(image, options.max_side)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, options.quality])
    if not ok:
        raise ValueError("cv2.imencode failed to write the JPEG")
    return buf.tobytes(), int(small.shape[0]), int(small.shape[1])


def frame_header(stream: str, seq: int, frame_index: int, t_capture_ns: int,
                 t_publish_ns: int, size: tuple[int, int], source: tuple[int, int],
                 options: FrameOptions) -> dict[str, Any]:
    """The `frame/<stream>` header (FRAME_KEYS, plus `quality` and `every`). size and source:
    (height, width) of the JPEG and of the frame it was made from."""
    return {"v": SCHEMA_VERSION, "stream": stream, "seq": int(seq),
              "frame_index": int(frame_index), "t_capture_ns": int(t_capture_ns),
              "t_publish_ns": int(t_publish_ns), "height": size[0], "width": size[1],
              "encoding": FRAME_ENCODING, "source_height": source[0],
              "source_width": source[1], "quality": options.quality, "every": options.every}

