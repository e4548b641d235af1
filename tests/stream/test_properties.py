"""Property-based tests (hypothesis) of what comes from outside: ZMQ messages reaching the
decoder, and live config mappings, files and overrides reaching the loader. Whatever the input,
the result is a valid value or the module's own error with a reason, never another exception.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcmanet.config import ConfigError
from stream.run.config import LiveConfig, live_config_from_dict, load_live_config
from stream.transport.messages import (
    ENCODINGS,
    MASK_KEYS,
    STATS_KEYS,
    MaskHeader,
    MessageError,
    encode_mask,
    parse_message,
)
from tests.stream.test_publish import message, raw_publisher, valid_header

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-3, 300)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
TOPICS = st.sampled_from([b"mask/cam0", b"stats/cam0", b"frame/cam0", b"mask/", b"mask/cam1",
                          b"masks/cam0", b"\xff/cam0"]) | st.binary(max_size=16)


def check_parse(frames: list[bytes]) -> None:
    """parse_message either accepts (and the result is consistent) or rejects with a reason."""
    try:
        topic, header, mask = parse_message(frames)
    except MessageError as e:
        assert str(e).strip(), "a rejection must say why"
        return
    kind, _, stream = topic.partition("/")
    assert header["stream"] == stream and header["v"] == 1
    if kind == "stats":
        assert mask is None and frames[2] == b""
        return
    if kind == "frame":
        assert mask is not None and mask.shape == (header["height"], header["width"], 3)
        return
    assert mask is not None and mask.shape == (header["height"], header["width"])
    if header["encoding"] == "prob16":
        assert mask.dtype == np.float32
    else:
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


@FAST
@given(st.lists(st.binary(max_size=48), max_size=5))
def test_random_bytes_are_accepted_or_rejected_with_a_reason(frames: list[bytes]) -> None:
    check_parse(frames)


@st.composite
def mask_messages(draw: st.DrawFn) -> list[bytes]:
    """A valid mask message, then maybe broken: header keys changed, dropped or added, the
    payload replaced, the topic changed, the header made invalid JSON."""
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    encoding = draw(st.sampled_from(ENCODINGS))
    header = MaskHeader(stream="cam0", seq=draw(st.integers(0, 10)), frame_index=3,
                        t_capture_ns=1, t_audio_start_ns=2, t_audio_end_ns=3, t_publish_ns=4,
                        height=H, width=W, encoding=encoding, threshold=0.5, keep_ratio=0.2,
                        model="m").to_dict()
    prob = draw(st.lists(st.floats(0, 1), min_size=H * W, max_size=H * W))
    payload = encode_mask(np.asarray(prob, np.float32).reshape(H, W), encoding)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(MASK_KEYS)) | st.text(max_size=6))
        if draw(st.booleans()):
            header[key] = draw(json_values)
        else:
            header.pop(key, None)
    if draw(st.booleans()):
        header["height"], header["width"] = draw(st.integers(-2, 1 << 40)), W
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=80)
                       | st.sampled_from([b'{"size":[%d,%d],"counts":[%d]}' % (H, W, H * W),
                                          b'{"size":[%d,%d],"counts":[%d]}' % (H, W, 1 << 70),
                                          b"[" * 5000, b"1" * 5000]))
    raw = json.dumps(header).encode()  # allow_nan: NaN and Infinity are in the text
    if draw(st.booleans()):
        raw = draw(st.sampled_from([b"[" * 5000, b'{"v":' + b"9" * 5000 + b"}",
                                    raw[: len(raw) // 2], raw + b"\x00", b"\xff" + raw]))
    topic = draw(st.just(b"mask/cam0") | TOPICS)
    parts = [topic, raw, payload]
    return draw(st.just(parts) | st.just(parts[:2]) | st.just([*parts, b""]))


@FAST
@given(mask_messages())
def test_mutated_mask_messages_are_accepted_or_rejected_with_a_reason(frames: list[bytes]
                                                                      ) -> None:
    check_parse(frames)


@FAST
@given(st.dictionaries(st.sampled_from(sorted(STATS_KEYS)) | st.text(max_size=6), json_values,
                       max_size=8), st.binary(max_size=4))
def test_random_stats_headers(header: dict[str, Any], payload: bytes) -> None:
    check_parse([b"stats/cam0", json.dumps(header).encode(), payload])


def test_hostile_headers_are_rejected_not_raised() -> None:
    """What hypothesis found, kept as plain cases: each is a MessageError with a reason."""
    big = MaskHeader(stream="cam0", seq=0, frame_index=0, t_capture_ns=1, t_audio_start_ns=2,
                     t_audio_end_ns=3, t_publish_ns=4, height=1 << 20, width=1 << 20,
                     encoding="rle", threshold=0.5, keep_ratio=1.0, model="m").to_dict()
    cases = {
        "deep JSON": [b"mask/cam0", b"[" * 5000, b""],
        "huge int": [b"mask/cam0", b'{"v":' + b"9" * 5000 + b"}", b""],
        "rle bomb": [b"mask/cam0", json.dumps(big).encode(),
                     b'{"size":[1048576,1048576],"counts":[1099511627776]}'],
        "rle overflow": [b"mask/cam0", json.dumps({**big, "height": 2, "width": 2}).encode(),
                         b'{"size":[2,2],"counts":[%d]}' % (1 << 70)],
    }
    for name, frames in cases.items():
        try:
            parse_message(frames)
        except MessageError as e:
            assert str(e), name
        else:
            raise AssertionError(f"{name} was accepted")
    # ... and through a real socket: each is rejected with its reason and the stream goes on
    with raw_publisher() as (raw, sub):
        for i, frames in enumerate(cases.values()):
            raw.send_multipart(frames)
            raw.send_multipart(message(valid_header(seq=i)))
            msg = sub.recv()
            assert msg is not None and msg.header["seq"] == i and sub.rejected == i + 1
            assert sub.last_reject
        assert sub.received == len(cases) and sub.missed == 0


# -- the live config loader -----------------------------------------------------------------

SECTIONS = {"source": ["fps", "demo_seed", "demo_size", "frame_ring", "audio_ring_s",
                       "realtime", "stream_timeout_s", "reconnect"],
            "sync": ["av_offset_ms", "pairing", "max_lag_ms", "max_wait_ms", "spacing_s"],
            "engine": ["device", "threads", "cim_threshold", "cache_fp16", "carry",
                       "max_consecutive_errors"],
            "publish": ["zmq", "stream", "encoding", "threshold", "sndhwm", "stats_interval_s",
                        "heartbeat_s", "heartbeat_timeout_s", "curve"]}
NESTED = ["enabled", "initial_delay_s", "max_delay_s", "give_up_s", "refresh_every",
          "change_threshold", "audio_change", "dilate", "server_secret_file",
          "allowed_clients_dir"]
config_values = (json_scalars | st.sampled_from(["cpu", "cuda:0", "png", "cam0", "nan", "1e-3",
                                                 "latest", "exact"])
                 | st.dictionaries(st.sampled_from(NESTED) | st.text(max_size=5), json_scalars,
                                   max_size=3))


@st.composite
def live_mappings(draw: st.DrawFn) -> dict[Any, Any]:
    """{"live": {section: {key: value}}} with mostly known keys, some unknown, any values."""
    live: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)) | st.text(max_size=5),
                                 max_size=4)):
        keys = SECTIONS.get(section, [])
        live[section] = draw(st.dictionaries(
            (st.sampled_from(keys) if keys else st.nothing()) | st.text(max_size=5)
            | st.integers(0, 3), config_values, max_size=4)) if draw(st.integers(0, 9)) else \
            draw(json_scalars)
    top: dict[Any, Any] = {"live": live} if draw(st.integers(0, 9)) else {"live": draw(json_values)}
    if not draw(st.integers(0, 7)):
        top[draw(st.text(max_size=6) | st.integers())] = draw(json_values)
    return top


@pytest.mark.parametrize(("override", "key"), [
    ("live.source.fps=.inf", "live.source.fps"), ("live.sync.av_offset_ms=.nan", "live.sync."),
    ("live.source.reconnect.give_up_s=.inf", "live.source.reconnect.give_up_s"),
    ("live.engine.threads=[", "live.engine.threads"), ("live.publish={a: 1", "live.publish")])
def test_non_finite_and_unparsable_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_live_config([], [override])


def names_a_key(message: str, data: dict[Any, Any]) -> bool:
    return message.startswith("live") or any(message.startswith(str(k)) for k in data)


@FAST
@given(live_mappings())
def test_live_config_from_random_mappings(data: dict[Any, Any]) -> None:
    try:
        cfg = live_config_from_dict(data)
    except ConfigError as e:
        assert names_a_key(str(e), data), str(e)
        return
    assert isinstance(cfg, LiveConfig)
    assert cfg.source.fps > 0 and math.isfinite(cfg.source.fps) and cfg.engine.threads >= 1


@FAST
@given(st.lists(st.sampled_from([f"live.{s}.{k}" for s, ks in SECTIONS.items() for k in ks])
                | st.text(max_size=12), min_size=1, max_size=3),
       st.lists(st.text(max_size=10) | st.sampled_from(["[", "{a: 1", "null", ".nan", "-1",
                                                        "1e9", "'x'", "{enabled: true}"]),
                min_size=1, max_size=3))
def test_live_config_overrides(keys: list[str], values: list[str]) -> None:
    overrides = [f"{k}={v}" for k, v in zip(keys, values)]
    try:
        assert isinstance(load_live_config([], overrides), LiveConfig)
    except ConfigError as e:
        assert str(e).startswith(("overrides: ", "override ")), str(e)
        assert "\n" not in str(e).strip() or any("\n" in o for o in overrides), str(e)


@FAST
@given(st.text(max_size=200) | st.sampled_from(["live:\n  source: {fps: .inf}\n",
                                                  "live: &a [*a]\n", "live:\n  - 1\n", ":\n"]))
def test_live_config_files_with_any_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "live.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass") if text.isprintable() \
            else path.write_bytes(text.encode("utf-8", errors="replace"))
        try:
            assert isinstance(load_live_config([path]), LiveConfig)
        except ConfigError as e:
            assert str(path) in str(e), str(e)
