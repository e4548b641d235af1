"""Mask messages, schema v1 (docs/design.md 6): header dataclass, payload codecs, validation.

Every message is three ZMQ frames, `[topic, header, payload]`:

- topic: `mask/<stream>` for a mask, `stats/<stream>` for the once-a-second counters, and,
  when the publisher is asked to, `frame/<stream>` for the picture a mask was computed on.
- header: compact UTF-8 JSON object. Masks carry the `MaskHeader` fields; stats carry
  `STATS_KEYS` plus whatever the pipeline reports; frames carry `FRAME_KEYS`, among them the
  `seq` and `frame_index` of their mask. Unknown keys are allowed (extend freely).
- payload, by `encoding` (masks; stats send an empty payload; frames are `jpeg`, a baseline
  or progressive JPEG of `height` x `width`, 3 channels, decoded to (H, W, 3) uint8 BGR):
  `mono8`  H*W bytes, 0 or 255, row-major;
  `png`    8-bit grey PNG (0 or 255);
  `rle`    COCO RLE as JSON, `{"size": [H, W], "counts": [...]}`, uncompressed counts over the
           column-major (Fortran order) mask, starting with the count of zeros;
  `prob16` H*W float16 probabilities, little-endian, row-major.

Binary encodings mean `prob > threshold` (strictly, as `pcmanet.metrics`); the header's
`threshold` says which one was used. Decoded binary masks are (H, W) uint8 0/1, `prob16`
decodes to (H, W) float32 probabilities.

The `frame/<stream>` topic came later within schema v1: a subscriber of `mask/...` or
`stats/...` never receives it, and mask and stats messages are unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

SCHEMA_VERSION = 1
ENCODINGS = ("mono8", "png", "rle", "prob16")
TOPIC_KINDS = ("mask", "stats", "frame")
FRAME_ENCODING = "jpeg"
STREAM_NAME = re.compile(r"[A-Za-z0-9_.:-]+")     # what a publisher may name a stream
MAX_PIXELS = 1 << 26                              # 64 Mpx: a larger header is refused, so a
#                                                   hostile RLE cannot make a decoder allocate more

# Stats headers: these keys at least (counters are ints; see `stream.transport.publish`).
STATS_KEYS: dict[str, type] = {
    "v": int, "stream": str, "t_publish_ns": int, "published": int, "sent": int,
    "dropped_at_socket": int,
}


class MessageError(ValueError):
    """A message that does not follow schema v1; the text says what is wrong."""


@dataclass(frozen=True)
class MaskHeader:
    """Header of one `mask/<stream>` message (schema v1).

    Times are `time.monotonic_ns()` of the publishing machine: latency computed by a receiver
    (t_receive - t_capture) is meaningful only on the same machine.
    """

    stream: str                # the `<stream>` of the topic
    seq: int                   # per stream, +1 per mask handed to the publisher; gaps are drops
    frame_index: int           # the source's own 0-based frame counter (media file: frame number)
    t_capture_ns: int          # when the frame was captured
    t_audio_start_ns: int      # the audio window the mask used: start ...
    t_audio_end_ns: int        # ... and end
    t_publish_ns: int          # when the publisher sent it
    height: int                # mask H
    width: int                 # mask W
    encoding: str              # one of ENCODINGS
    threshold: float           # binary encodings: mask = prob > threshold
    keep_ratio: float          # fraction of query tokens computed (CIM)
    model: str                 # model / weights name
    audio_late: bool = False   # the paired audio had not arrived: the latest window was used
    audio_lag_ms: float = 0.0  # optional: the window ends this much before the one wanted (>= 0)
    v: int = SCHEMA_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)   # more keys, flattened into the JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the fields plus `extra` flattened (extra never shadows a field)."""
        out = {"v": self.v} | {k: v for k, v in asdict(self).items() if k not in ("v", "extra")}
        clash = sorted(set(self.extra) & set(out))
        if clash:
            raise ValueError(f"extra keys {clash} would shadow schema fields")
        out.update(self.extra)
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> MaskHeader:
        """Validate a decoded header object (raises `MessageError`); unknown keys go to `extra`."""
        validate_mask_header(obj)
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: obj[k] for k in names if k in obj}
        return cls(**known, extra={k: v for k, v in obj.items() if k not in names})


# Required mask header keys and their JSON types (bool is never accepted for an int or float).
MASK_KEYS: dict[str, tuple[type, ...]] = {
    "v": (int,), "stream": (str,), "seq": (int,), "frame_index": (int,),
    "t_capture_ns": (int,), "t_audio_start_ns": (int,), "t_audio_end_ns": (int,),
    "t_publish_ns": (int,), "height": (int,), "width": (int,), "encoding": (str,),
    "threshold": (int, float), "keep_ratio": (int, float), "model": (str,),
}


# Required frame header keys (`frame/<stream>`): `seq` and `frame_index` are those of the mask
# computed on this frame; height x width is the JPEG's size (the publisher may have scaled the
# frame down from source_height x source_width).
FRAME_KEYS: dict[str, tuple[type, ...]] = {
    "v": (int,), "stream": (str,), "seq": (int,), "frame_index": (int,),
    "t_capture_ns": (int,), "t_publish_ns": (int,), "height": (int,), "width": (int,),
    "encoding": (str,), "source_height": (int,), "source_width": (int,),
}


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (no spaces, no NaN)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# ---------------------------------------------------------------------------------- encoding


def encode_mask(prob: np.ndarray, encoding: str, threshold: float = 0.5) -> bytes:
    """(H, W) float probabilities in [0, 1] -> payload bytes for `encoding`."""
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"prob must be a non-empty (H, W) array, got shape {prob.shape}")
    if encoding == "prob16":
        return np.ascontiguousarray(prob, dtype="<f2").tobytes()
    binary = (prob > threshold).view(np.uint8)                           # (H, W) uint8 0/1
    if encoding == "mono8":
        return (binary * np.uint8(255)).tobytes()
    if encoding == "png":
        ok, buf = cv2.imencode(".png", binary * np.uint8(255))
        if not ok:
            raise ValueError("cv2.imencode failed to write the PNG")
        return buf.tobytes()
    if encoding == "rle":
        return dumps(rle_encode(binary))
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) 0/1 mask -> COCO uncompressed RLE `{"size": [H, W], "counts": [...]}`.

    Counts run over the column-major (Fortran order) pixels and start with a run of zeros,
    which is 0 when the first pixel is set.
    """
    H, W = mask.shape
    flat = (mask.ravel(order="F") != 0)                                   # (H*W,) column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1                    # starts of runs 2..n
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds)
    if flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [int(H), int(W)], "counts": counts.tolist()}


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO uncompressed RLE -> (H, W) uint8 0/1 (raises `MessageError` on a bad object)."""
    size, counts = rle.get("size"), rle.get("counts")
    if (not isinstance(size, list) or len(size) != 2
            or not all(type(s) is int and s > 0 for s in size)):
        raise MessageError(f"rle: 'size' must be [H, W] of positive ints, got {size!r}")
    if isinstance(counts, str):
        raise MessageError("rle: compressed (string) counts are not supported; send a list")
    if not isinstance(counts, list) or not all(type(c) is int for c in counts):
        raise MessageError("rle: 'counts' must be a list of ints")
    H, W = size
    if H * W > MAX_PIXELS:
        raise MessageError(f"rle: size {H}x{W} is more than {MAX_PIXELS} pixels")
    if len(counts) > H * W + 1:
        raise MessageError(f"rle: {len(counts)} counts for {H * W} pixels")
    if any(c < 0 for c in counts):
        raise MessageError("rle: counts must not be negative")
    total = sum(counts)                                                   # Python ints: exact
    if total != H * W:
        raise MessageError(f"rle: counts sum to {total}, size needs {H * W} = {H}*{W}")
    runs = np.asarray(counts, dtype=np.int64)                             # each <= H*W now
    values = (np.arange(runs.size) % 2).astype(np.uint8)                  # 0, 1, 0, ...
    flat = np.repeat(values, runs)                                        # (H*W,) column-major
    return np.ascontiguousarray(flat.reshape((H, W), order="F"))


def decode_payload(header: Mapping[str, Any], payload: bytes) -> np.ndarray:
    """Payload of a validated mask header -> (H, W) uint8 0/1, or float32 for `prob16`.

    Raises `MessageError` when the payload does not fit the header.
    """
    H, W, encoding = header["height"], header["width"], header["encoding"]
    n = len(payload)
    if encoding == "mono8":
        if n != H * W:
            raise MessageError(f"payload has {n} bytes, mono8 needs {H * W} = {H}*{W}")
        raw = np.frombuffer(payload, dtype=np.uint8).reshape(H, W)
        return _binary_from_0_255(raw, "mono8")
    if encoding == "prob16":
        if n != 2 * H * W:
            raise MessageError(f"payload has {n} bytes, prob16 needs {2 * H * W} = 2*{H}*{W}")
        return np.frombuffer(payload, dtype="<f2").reshape(H, W).astype(np.float32)
    if encoding == "png":
        # The size in the IHDR chunk is checked before decoding, so a small PNG that claims to
        # be huge is never decompressed (bytes 16..24: width, height, big-endian).
        if n < 24 or payload[:8] != b"\x89PNG\r\n\x1a\n" or payload[12:16] != b"IHDR":
            raise MessageError(f"payload ({n} bytes) is not a PNG image")
        png_w, png_h = int.from_bytes(payload[16:20], "big"), int.from_bytes(payload[20:24], "big")
        if (png_h, png_w) != (H, W):
            raise MessageError(f"png is ({png_h}, {png_w}), header says ({H}, {W}) uint8 grey")
        try:
            img = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as e:
            raise MessageError(f"png payload could not be decoded: {str(e).strip()[:120]}"
                               ) from None
        if img is None:
            raise MessageError(f"payload ({n} bytes) is not a PNG image")
        if img.dtype != np.uint8 or img.shape != (H, W):
            raise MessageError(f"png is {img.shape} {img.dtype}, header says ({H}, {W}) uint8 grey")
        return _binary_from_0_255(img, "png")
    if encoding == "rle":
        rle = _json(payload, "rle payload is not JSON")
        if not isinstance(rle, dict):
            raise MessageError("rle payload must be a JSON object")
        if rle.get("size") != [H, W]:
            raise MessageError(f"rle size {rle.get('size')!r} != header [height, width] {[H, W]}")
        return rle_decode(rle)
    raise MessageError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def _json(raw: bytes, what: str) -> Any:
    """UTF-8 JSON -> object; anything the decoder raises (bad UTF-8 or JSON, an integer of
    more than 4300 digits, nesting deeper than the recursion limit) -> `MessageError`."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:          # UnicodeDecodeError, JSONDecodeError too
        reason = str(e) if not isinstance(e, RecursionError) else "nested too deeply"
        raise MessageError(f"{what}: {reason[:200]}") from None


def _binary_from_0_255(raw: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W) uint8 of 0/255 -> (H, W) uint8 0/1; other values are an error."""
    if ((raw != 0) & (raw != 255)).any():
        raise MessageError(f"{encoding} pixels must be 0 or 255")
    return raw >> 7                                                       # 255 -> 1, 0 -> 0


# -------------------------------------------------------------------------------- validation


def _check_types(obj: Mapping[str, Any], keys: Mapping[str, tuple[type, ...]], what: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise MessageError(f"{what} header is missing keys {missing}")
    for key, types in keys.items():
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise MessageError(f"{what} header key {key!r} must be {names}, got {value!r}")
    if obj["v"] != SCHEMA_VERSION:
        raise MessageError(f"schema version v={obj['v']!r}, this reader knows v={SCHEMA_VERSION}")


def validate_mask_header(obj: Mapping[str, Any]) -> None:
    """Raise `MessageError` unless `obj` is a valid v1 mask header."""
    _check_types(obj, MASK_KEYS, "mask")
    if obj["encoding"] not in ENCODINGS:
        raise MessageError(f"unknown encoding {obj['encoding']!r}; expected one of {ENCODINGS}")
    if obj["height"] <= 0 or obj["width"] <= 0:
        raise MessageError(f"height and width must be positive, got {obj['height']}x{obj['width']}")
    if obj["height"] * obj["width"] > MAX_PIXELS:
        raise MessageError(f"mask of {obj['height']}x{obj['width']} is more than {MAX_PIXELS} "
                           "pixels")
    if obj["seq"] < 0 or obj["frame_index"] < 0:
        raise MessageError(
            f"seq and frame_index must be >= 0, got {obj['seq']}, {obj['frame_index']}")
    if "audio_late" in obj and not isinstance(obj["audio_late"], bool):
        raise MessageError(f"audio_late must be a bool, got {obj['audio_late']!r}")
    if "audio_lag_ms" in obj:  # optional (older publishers do not send it)
        lag = obj["audio_lag_ms"]
        if isinstance(lag, bool) or not isinstance(lag, (int, float)) or not 0 <= lag < math.inf:
            raise MessageError(f"audio_lag_ms must be a finite number >= 0, got {lag!r}")


def validate_frame_header(obj: Mapping[str, Any]) -> None:
    """Raise `MessageError` unless `obj` is a valid v1 frame header."""
    _check_types(obj, FRAME_KEYS, "frame")
    if obj["encoding"] != FRAME_ENCODING:
        raise MessageError(f"frame encoding {obj['encoding']!r}; expected {FRAME_ENCODING!r}")
    for h, w in ((obj["height"], obj["width"]), (obj["source_height"], obj["source_width"])):
        if h <= 0 or w <= 0 or h * w > MAX_PIXELS:
            raise MessageError(f"frame size {h}x{w} must be positive and at most {MAX_PIXELS} "
                               "pixels")
    if obj["seq"] < 0 or obj["frame_index"] < 0:
        raise MessageError(
            f"seq and frame_index must be >= 0, got {obj['seq']}, {obj['frame_index']}")


def jpeg_size(payload: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame segment, read without decoding; None when
    `payload` is not a JPEG or has no such segment."""
    if payload[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(payload):
        if payload[i] != 0xFF:
            return None
        marker = payload[i + 1]
        if marker == 0xFF:                                # fill byte
            i += 1
            continue
        length = int.from_bytes(payload[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):     # SOFn
            return (int.from_bytes(payload[i + 5:i + 7], "big"),
                    int.from_bytes(payload[i + 7:i + 9], "big"))
        i += 2 + length
    return None


def decode_frame(header: Mapping[str, Any], payload: bytes) -> np.ndarray:
    """JPEG payload of a validated frame header -> (H, W, 3) uint8 BGR; the size in the JPEG
    is checked against the header before decoding. Raises `MessageError`."""
    H, W = header["height"], header["width"]
    size = jpeg_size(payload)
    if size is None:
        raise MessageError(f"frame payload ({len(payload)} bytes) is not a JPEG image")
    if size != (H, W):
        raise MessageError(f"jpeg is {size[0]}x{size[1]}, header says {H}x{W}")
    try:
        img = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise MessageError(f"jpeg payload could not be decoded: {str(e).strip()[:120]}"
                           ) from None
    if img is None or img.shape != (H, W, 3):
        raise MessageError(f"jpeg payload could not be decoded to {H}x{W}x3")
    return img


def validate_stats_header(obj: Mapping[str, Any]) -> None:
    """Raise `MessageError` unless `obj` is a valid v1 stats header."""
    _check_types(obj, {k: (t,) for k, t in STATS_KEYS.items()}, "stats")


def parse_topic(topic: bytes) -> tuple[str, str]:
    """b"mask/cam0" -> ("mask", "cam0"); raises `MessageError` on anything else."""
    try:
        text = topic.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError(f"topic {topic[:40]!r} is not UTF-8") from None
    kind, sep, stream = text.partition("/")
    if not sep or kind not in TOPIC_KINDS or not stream:
        raise MessageError(f"topic {text[:60]!r} is not mask/<stream>, stats/<stream> or "
                           "frame/<stream>")
    return kind, stream


def parse_message(frames: Sequence[bytes]) -> tuple[str, dict[str, Any], np.ndarray | None]:
    """`[topic, header, payload]` -> (topic, header dict, data): data is the mask (see
    `decode_payload`), the (H, W, 3) uint8 BGR image for a frame, None for stats.

    Checks everything schema v1 fixes and raises `MessageError` with the reason otherwise.
    """
    if len(frames) != 3:
        raise MessageError(f"expected 3 parts [topic, header, payload], got {len(frames)}")
    topic, raw_header, payload = (bytes(f) for f in frames)
    kind, stream = parse_topic(topic)
    header = _json(raw_header, "header is not UTF-8 JSON")
    if not isinstance(header, dict):
        raise MessageError(f"header must be a JSON object, got {type(header).__name__}")
    if kind == "stats":
        validate_stats_header(header)
        mask = None
        if payload:
            raise MessageError(f"stats payload must be empty, got {len(payload)} bytes")
    elif kind == "frame":
        validate_frame_header(header)
        mask = decode_frame(header, payload)
    else:
        validate_mask_header(header)
        mask = decode_payload(header, payload)
    if header["stream"] != stream:
        raise MessageError(f"header stream {header['stream']!r} != topic stream {stream!r}")
    return topic.decode(), header, mask
