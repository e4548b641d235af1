"""Publishing contract (docs/design.md section 6): codecs, validation, and real ZMQ sockets.

Network tests bind 127.0.0.1 only (port `*`: the OS picks a free one) or inproc://; every
receive has a timeout, so no test can hang.
"""

from __future__ import annotations

import json
import logging
import re
import select
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from stream.transport.curve import CurveClientKeys, CurveServerKeys
from stream.transport.messages import (
    ENCODINGS,
    MaskHeader,
    MessageError,
    decode_payload,
    encode_mask,
    parse_message,
    rle_decode,
    rle_encode,
)
from stream.transport.publish import DropPolicy, MaskPublisher
from stream.transport.sockets import AddressInUseError, exposure_warning
from stream.transport.subscribe import MaskSubscriber, format_line, main

pytestmark = pytest.mark.races  # threads/sockets/processes: bench/stress_races.py

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 5.0                    # any single wait for a message
TRANSPORTS = ("inproc", "tcp")


def bind_url(transport: str) -> str:
    return f"inproc://masks-{uuid.uuid4().hex}" if transport == "inproc" else "tcp://127.0.0.1:*"


def random_prob(shape: tuple[int, int] = (48, 64), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)        # (H, W) in [0, 1)


def publish_one(pub: MaskPublisher, prob: np.ndarray, frame_index: int = 0, **kw: Any) -> int:
    return pub.publish(prob, frame_index, time.monotonic_ns(), 10, 20, 0.25, 0.5, "test", **kw)


def wait_until(cond: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@contextmanager
def pub_sub(transport: str = "inproc", pub_kw: dict[str, Any] | None = None,
            sub_kw: dict[str, Any] | None = None) -> Iterator[tuple[MaskPublisher, MaskSubscriber]]:
    """A started publisher and a subscriber whose subscription has reached it."""
    pub_kw = {"stats_interval_s": None, **(pub_kw or {})}
    sub_kw = {"timeout_s": TIMEOUT_S, **(sub_kw or {})}
    with MaskPublisher(bind_url(transport), **pub_kw) as pub:
        assert pub.endpoint is not None
        with MaskSubscriber(pub.endpoint, **sub_kw) as sub:
            topic = sub.topics[0]
            assert pub.wait_for_subscriber(topic, TIMEOUT_S), f"no subscriber for {topic}"
            yield pub, sub


def valid_header(**changes: Any) -> dict[str, Any]:
    header = MaskHeader(stream="cam0", seq=0, frame_index=0, t_capture_ns=1, t_audio_start_ns=2,
                        t_audio_end_ns=3, t_publish_ns=4, height=4, width=5, encoding="mono8",
                        threshold=0.5, keep_ratio=1.0, model="m").to_dict()
    header.update(changes)
    return header


def message(header: dict[str, Any], payload: bytes | None = None,
            topic: bytes = b"mask/cam0") -> list[bytes]:
    if payload is None:
        payload = bytes(header["height"] * header["width"])
    return [topic, json.dumps(header).encode(), payload]


# ------------------------------------------------------------------------------------- codecs


def rle_reference(mask: np.ndarray) -> list[int]:
    """Plain-loop COCO RLE over the column-major pixels, starting with zeros."""
    counts, current, run = [], 0, 0
    for value in mask.T.ravel():
        if value != current:
            counts.append(run)
            current, run = int(value), 0
        run += 1
    counts.append(run)
    return counts


def single(shape: tuple[int, int], y: int, x: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y, x] = 1
    return mask


RLE_CASES = {
    "all_zero": np.zeros((5, 7), np.uint8),
    "all_one": np.ones((5, 7), np.uint8),
    "single_first": single((5, 7), 0, 0),
    "single_last": single((5, 7), 4, 6),
    "single_middle": single((5, 7), 2, 3),
    "one_by_one_zero": np.zeros((1, 1), np.uint8),
    "one_by_one_one": np.ones((1, 1), np.uint8),
    "random": (np.random.default_rng(1).random((31, 17)) > 0.6).astype(np.uint8),
}


@pytest.mark.parametrize("name", list(RLE_CASES))
def test_rle_round_trip(name: str) -> None:
    mask = RLE_CASES[name]
    rle = rle_encode(mask)
    assert rle["size"] == list(mask.shape)
    assert rle["counts"] == rle_reference(mask)
    assert sum(rle["counts"]) == mask.size
    np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_is_column_major_and_starts_with_zeros() -> None:
    mask = np.array([[0, 1], [0, 1]], np.uint8)                # right column set
    assert rle_encode(mask)["counts"] == [2, 2]                # row-major would be [1, 1, 1, 1]
    assert rle_encode(np.ones((2, 2), np.uint8))["counts"] == [0, 4]
    assert rle_encode(np.zeros((2, 2), np.uint8))["counts"] == [4]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encode_decode(encoding: str) -> None:
    prob = random_prob((30, 40))
    header = valid_header(height=30, width=40, encoding=encoding)
    mask = decode_payload(header, encode_mask(prob, encoding, 0.5))
    assert mask.shape == (30, 40)
    if encoding == "prob16":
        assert mask.dtype == np.float32
        np.testing.assert_allclose(mask, prob, atol=1e-3)      # fp16: 11-bit mantissa
    else:
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, (prob > 0.5).astype(np.uint8))


def test_mono8_payload_is_0_255_row_major() -> None:
    prob = np.array([[0.9, 0.1, 0.6]], np.float32)
    assert encode_mask(prob, "mono8", 0.5) == bytes([255, 0, 255])
    assert encode_mask(prob, "prob16", 0.5) == prob.astype("<f2").tobytes()


def test_header_is_compact_utf8_json_with_extras() -> None:
    header = MaskHeader(stream="cam0", seq=3, frame_index=9, t_capture_ns=1, t_audio_start_ns=2,
                        t_audio_end_ns=3, t_publish_ns=4, height=4, width=5, encoding="rle",
                        threshold=0.5, keep_ratio=0.3, model="módel", extra={"t_model_ns": 7})
    raw = header.to_json()
    assert b" " not in raw and raw.startswith(b'{"v":1,')
    obj = json.loads(raw.decode("utf-8"))
    assert obj["model"] == "módel" and obj["t_model_ns"] == 7 and obj["audio_late"] is False
    assert obj["audio_lag_ms"] == 0.0
    assert MaskHeader.from_dict(obj) == header
    with pytest.raises(ValueError, match="shadow"):
        MaskHeader(**{**vars(header), "extra": {"seq": 1}}).to_dict()


# --------------------------------------------------------------------------------- validation

MALFORMED = {
    "two_parts": ([b"mask/cam0", json.dumps(valid_header()).encode()], "expected 3 parts"),
    "four_parts": ([*message(valid_header()), b""], "expected 3 parts"),
    "bad_topic": (message(valid_header(), topic=b"masks/cam0"), "not mask/<stream>"),
    "bad_json": ([b"mask/cam0", b"{not json", bytes(20)], "not UTF-8 JSON"),
    "not_object": ([b"mask/cam0", b"[1, 2]", bytes(20)], "must be a JSON object"),
    "missing_keys": (message({k: v for k, v in valid_header().items()
                              if k not in ("seq", "model")}), "missing keys ['seq', 'model']"),
    "wrong_type": (message(valid_header(seq="7")), "'seq' must be int"),
    "bool_for_int": (message(valid_header(height=True)), "'height' must be int"),
    "wrong_version": (message(valid_header(v=2)), "schema version v=2"),
    "unknown_encoding": (message(valid_header(encoding="jpeg")), "unknown encoding 'jpeg'"),
    "short_payload": (message(valid_header(), bytes(19)), "payload has 19 bytes, mono8 needs 20"),
    "short_prob16": (message(valid_header(encoding="prob16"), bytes(20)), "prob16 needs 40"),
    "mono8_values": (message(valid_header(), bytes(range(20))), "must be 0 or 255"),
    "png_garbage": (message(valid_header(encoding="png"), b"\x89PNG junk"), "not a PNG"),
    "png_size": (message(valid_header(encoding="png"), encode_mask(random_prob((5, 4)), "png")),
                 "header says (4, 5)"),
    "rle_sum": (message(valid_header(encoding="rle"), b'{"size":[4,5],"counts":[3,4]}'),
                "counts sum to 7"),
    "rle_size": (message(valid_header(encoding="rle"), b'{"size":[5,4],"counts":[20]}'),
                 "rle size"),
    "stream_mismatch": (message(valid_header(stream="cam1")), "!= topic stream"),
    "negative_lag": (message(valid_header(audio_lag_ms=-10.0)), "audio_lag_ms must be a finite"),
    "bool_lag": (message(valid_header(audio_lag_ms=True)), "audio_lag_ms must be a finite"),
    "text_lag": (message(valid_header(audio_lag_ms="20")), "audio_lag_ms must be a finite"),
    "stats_payload": ([b"stats/cam0", json.dumps({"v": 1, "stream": "cam0", "t_publish_ns": 1,
                       "published": 0, "sent": 0, "dropped_at_socket": 0}).encode(), b"x"],
                      "stats payload must be empty"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_parse_message_rejects_with_reason(name: str) -> None:
    frames, reason = MALFORMED[name]
    with pytest.raises(MessageError, match=re.escape(reason)):
        parse_message(frames)


def test_parse_message_accepts_valid_and_unknown_keys() -> None:
    topic, header, mask = parse_message(message(valid_header(future_key={"a": 1})))
    assert topic == "mask/cam0" and header["future_key"] == {"a": 1}
    assert mask is not None and mask.shape == (4, 5) and not mask.any()


def test_audio_lag_is_optional_and_read_from_headers_that_have_it() -> None:
    """Schema v1 gained audio_lag_ms as an optional key: headers of older publishers (without
    it) stay valid; a lag sent as an int is accepted and kept."""
    old = valid_header()
    old.pop("audio_lag_ms", None)
    assert parse_message(message(old))[1].get("audio_lag_ms") is None
    assert MaskHeader.from_dict(old).audio_lag_ms == 0.0
    assert MaskHeader.from_dict(valid_header(audio_lag_ms=30)).audio_lag_ms == 30
    assert parse_message(message(valid_header(audio_lag_ms=12.5)))[1]["audio_lag_ms"] == 12.5


def test_short_payload_reason_names_the_sizes() -> None:
    with pytest.raises(MessageError) as err:
        parse_message(message(valid_header(height=480, width=640), bytes(100)))
    assert str(err.value) == "payload has 100 bytes, mono8 needs 307200 = 480*640"


# ------------------------------------------------------------------------------- real sockets


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_round_trip(transport: str, encoding: str) -> None:
    prob = random_prob((48, 64), seed=len(encoding))
    with pub_sub(transport, {"encoding": encoding, "stream": "cam0"}) as (pub, sub):
        t0 = time.monotonic_ns()
        seq = pub.publish(prob, 41, t0, t0 - 900, t0 + 60, 0.37, 0.5, "tiny",
                          audio_late=True, audio_lag_ms=20.0, extra={"t_model_ns": t0 + 5})
        msg = sub.recv()
    assert msg is not None and msg.mask is not None and seq == 0
    h = msg.header
    assert msg.topic == "mask/cam0"
    assert (h["v"], h["stream"], h["seq"], h["frame_index"]) == (1, "cam0", 0, 41)
    assert (h["t_capture_ns"], h["t_audio_start_ns"], h["t_audio_end_ns"]) == (t0, t0 - 900,
                                                                               t0 + 60)
    assert h["t_publish_ns"] >= t0 and msg.t_receive_ns >= h["t_publish_ns"]
    assert (h["height"], h["width"], h["encoding"]) == (48, 64, encoding)
    assert (h["threshold"], h["keep_ratio"], h["model"]) == (0.5, 0.37, "tiny")
    assert h["audio_late"] is True and h["t_model_ns"] == t0 + 5 and h["audio_lag_ms"] == 20.0
    if encoding == "prob16":
        np.testing.assert_allclose(msg.mask, prob, atol=1e-3)
    else:
        np.testing.assert_array_equal(msg.mask, (prob > 0.5).astype(np.uint8))
    assert msg.latency_ms is not None and msg.latency_ms >= 0


def test_seq_increments_without_gaps() -> None:
    with pub_sub() as (pub, sub):
        seqs = [publish_one(pub, random_prob(seed=i), frame_index=100 + i) for i in range(10)]
        got = [sub.recv() for _ in range(10)]
    assert seqs == list(range(10))
    assert [m.header["seq"] for m in got if m] == seqs
    assert [m.header["frame_index"] for m in got if m] == [100 + i for i in range(10)]
    assert sub.missed == 0 and sub.received == 10


@contextmanager
def raw_publisher() -> Iterator[tuple[zmq.Socket[bytes], MaskSubscriber]]:
    """A bare XPUB socket (to send anything) and a subscriber to mask/cam0 behind it."""
    url = bind_url("inproc")
    raw: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind(url)
    try:
        with MaskSubscriber(url, timeout_s=TIMEOUT_S) as sub:
            assert raw.poll(int(TIMEOUT_S * 1000)), "subscription did not arrive"
            assert raw.recv() == b"\x01mask/cam0"
            yield raw, sub
    finally:
        raw.close(linger=0)


def test_subscriber_detects_seq_gaps() -> None:
    with raw_publisher() as (raw, sub):
        for seq in (0, 1, 4, 5, 9):
            raw.send_multipart(message(valid_header(seq=seq)))
        got = [sub.recv() for _ in range(5)]
    assert [m.header["seq"] for m in got if m] == [0, 1, 4, 5, 9]
    assert sub.missed == 2 + 3


def test_malformed_messages_are_rejected_and_stream_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    bad = [frames for name, (frames, _) in MALFORMED.items()
           if frames[0] == b"mask/cam0" and name != "two_parts"]
    bad.insert(0, MALFORMED["two_parts"][0])
    with caplog.at_level(logging.WARNING, logger="stream.transport.subscribe"), \
            raw_publisher() as (raw, sub):
        for i, frames in enumerate(bad):
            raw.send_multipart(frames)
            raw.send_multipart(message(valid_header(seq=i)))
            msg = sub.recv()
            assert msg is not None and msg.header["seq"] == i, f"case {i}: {sub.last_reject}"
            assert sub.rejected == i + 1
        assert sub.recv(0.05) is None
    assert sub.received == len(bad) and sub.missed == 0
    text = caplog.text
    for reason in ("expected 3 parts", "not UTF-8 JSON", "missing keys", "schema version v=2",
                   "payload has 19 bytes"):
        assert reason in text


def test_other_streams_with_a_common_prefix_are_ignored() -> None:
    with MaskPublisher(bind_url("inproc"), stream="cam01", stats_interval_s=None) as pub:
        assert pub.endpoint is not None
        with MaskSubscriber(pub.endpoint, topic="mask/cam0") as sub:
            assert pub.wait_for_subscriber("mask/cam01", TIMEOUT_S)   # ZMQ filters by prefix
            publish_one(pub, random_prob())
            assert sub.recv(0.2) is None
            assert sub.ignored == 1 and sub.received == 0


def test_stats_messages_carry_counters() -> None:
    calls: list[int] = []

    def provider() -> dict[str, int]:
        calls.append(1)
        return {"camera_dropped": 3, "frames_in": 12}

    pub_kw = {"stats_interval_s": 0.05, "stats_provider": provider}
    with pub_sub(pub_kw=pub_kw, sub_kw={"topic": "stats/cam0"}) as (pub, sub):
        for i in range(3):
            publish_one(pub, random_prob(seed=i))
        msg = sub.recv()
        while msg is not None and msg.header["published"] < 3:    # one sent before the masks
            msg = sub.recv()
    assert msg is not None and msg.topic == "stats/cam0" and msg.mask is None
    h = msg.header
    assert (h["v"], h["stream"], h["published"], h["dropped_at_socket"]) == (1, "cam0", 3, 0)
    assert h["sent"] == 3                      # taken by the socket (no mask subscriber here)
    assert h["counters"] == {"camera_dropped": 3, "frames_in": 12}
    assert isinstance(h["t_publish_ns"], int) and calls
    assert "published=3" in format_line(msg, as_json=False)


def test_failing_stats_provider_does_not_stop_stats(caplog: pytest.LogCaptureFixture) -> None:
    def provider() -> dict[str, Any]:
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING), pub_sub(
            pub_kw={"stats_provider": provider}, sub_kw={"topic": "stats/cam0"}) as (pub, sub):
        assert pub.publish_stats()
        msg = sub.recv()
    assert msg is not None and msg.header["counters"] == {}
    assert "boom" in caplog.text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_slow_subscriber_does_not_hold_up_publisher(transport: str) -> None:
    n, shape = 2000, ((64, 64) if transport == "inproc" else (240, 320))
    prob = random_prob(shape)
    with pub_sub(transport, {"sndhwm": 2}, {"rcvhwm": 2}) as (pub, sub):
        seqs = [publish_one(pub, prob, frame_index=i) for i in range(n)]   # nobody reads
        c = pub.counters()
        assert seqs == list(range(n))
        assert c["published"] == n and c["sent"] + c["dropped_at_socket"] == n
        assert c["dropped_at_socket"] > 0
        if transport == "inproc":                          # queue = sndhwm + rcvhwm, nothing else
            assert c["sent"] <= 8 and c["dropped_at_socket"] >= n - 8
        # the subscriber catches up and gets exactly the masks the socket took ...
        got = []
        while (msg := sub.recv(0.5)) is not None:
            got.append(msg.header["seq"])
        assert len(got) == c["sent"] and got == sorted(got)
        # ... then a new mask goes through, and its seq gaps add up to the counted drops
        assert wait_until(lambda: publish_one(pub, prob) >= 0
                          and pub.counters()["sent"] > c["sent"])
        last = sub.recv()
        assert last is not None
        dropped = pub.counters()["dropped_at_socket"]
        assert sub.missed == dropped == last.header["seq"] + 1 - sub.received


def test_keep_latest_returns_newest_per_topic() -> None:
    topics = ["mask/cam0", "stats/cam0"]
    pub_kw = {"sndhwm": 1000}
    with pub_sub(pub_kw=pub_kw, sub_kw={"topic": topics, "keep_latest": True}) as (pub, sub):
        assert pub.wait_for_subscriber("stats/cam0", TIMEOUT_S)
        for i in range(50):
            publish_one(pub, random_prob(seed=i), frame_index=i)
        assert pub.publish_stats()
        assert wait_until(lambda: sub.received == 51), sub.counters()
        first, second = sub.recv(0), sub.recv(0)
        assert sub.recv(0.05) is None
    assert first is not None and first.topic == "mask/cam0" and first.header["seq"] == 49
    assert second is not None and second.topic == "stats/cam0"
    assert second.header["published"] == 50
    assert sub.skipped == 49 and sub.missed == 0


def test_recv_times_out_and_iteration_ends() -> None:
    with pub_sub(sub_kw={"timeout_s": 0.05}) as (pub, sub):
        publish_one(pub, random_prob())
        assert [m.header["seq"] for m in sub] == [0]
        assert sub.recv() is None and sub.recv(0) is None
    with pytest.raises(RuntimeError, match="closed"):
        sub.recv(0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_address_in_use_is_a_clear_error(transport: str) -> None:
    with MaskPublisher(bind_url(transport), stats_interval_s=None) as first:
        assert first.endpoint is not None
        second = MaskPublisher(first.endpoint, stats_interval_s=None)
        with pytest.raises(AddressInUseError,
                           match=f"{first.endpoint} is already in use: pick another --zmq port"):
            second.start()
        with pytest.raises(RuntimeError, match="not started"):
            publish_one(second, random_prob())


def test_exposure_warning() -> None:
    for url in ("tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555",
                "inproc://x", "ipc:///tmp/x"):
        assert exposure_warning(url) is None, url
    for url in ("tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://[::]:5555"):
        text = exposure_warning(url)
        assert text is not None and "ALL network interfaces" in text and "unencrypted" in text
    text = exposure_warning("tcp://192.168.1.5:5555", curve=True)
    assert text is not None and "other machines" in text and "unencrypted" not in text


def test_loopback_bind_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), MaskPublisher("tcp://127.0.0.1:*",
                                                         stats_interval_s=None):
        pass
    assert not caplog.records


def test_publisher_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="stream name"):
        MaskPublisher(stream="cam/0")
    with pytest.raises(ValueError, match="unknown encoding"):
        MaskPublisher(encoding="jpeg")
    with MaskPublisher(bind_url("inproc"), stats_interval_s=None) as pub:
        with pytest.raises(ValueError, match=r"\(H, W\)"):
            publish_one(pub, np.zeros((2, 3, 1), np.float32))
        pub.stop()
        pub.stop()                                                            # idempotent


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CurveZMQ")
def test_curve_round_trip() -> None:
    server = CurveServerKeys(*zmq.curve_keypair())
    with MaskPublisher("tcp://127.0.0.1:*", curve=server, stats_interval_s=None) as pub:
        assert pub.endpoint is not None
        keys = CurveClientKeys.generate(server.public)
        with MaskSubscriber(pub.endpoint, curve=keys, timeout_s=TIMEOUT_S) as sub:
            assert pub.wait_for_subscriber(timeout_s=TIMEOUT_S)
            publish_one(pub, random_prob())
            msg = sub.recv()
        assert msg is not None and msg.header["seq"] == 0
        with MaskSubscriber(pub.endpoint, timeout_s=0.2) as plain:           # no keys: nothing
            publish_one(pub, random_prob())
            assert plain.recv() is None


def test_cli_prints_one_line_per_message(capsys: pytest.CaptureFixture[str]) -> None:
    with MaskPublisher("tcp://127.0.0.1:*", stream="cli", stats_interval_s=None) as pub:
        stop = threading.Event()

        def feed() -> None:                                  # slow joiner: keep publishing
            i = 0
            while not stop.wait(0.01):
                publish_one(pub, random_prob(seed=i), frame_index=i)
                i += 1

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        try:
            assert pub.endpoint is not None
            code = main([pub.endpoint, "--topic", "mask/cli", "--count", "3", "--timeout", "5"])
            assert code == 0
            lines = capsys.readouterr().out.splitlines()
            code = main([pub.endpoint, "--topic", "mask/cli", "--count", "2", "--json",
                         "--timeout", "5"])
            assert code == 0
            records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        finally:
            stop.set()
            thread.join(TIMEOUT_S)
    assert len(lines) == 3 and all(x.startswith("mask/cli seq=") for x in lines)
    for field in ("frame=", "latency_ms=", "keep=0.250", "area="):
        assert field in lines[0]
    assert len(records) == 2 and records[0]["stream"] == "cli"
    assert records[1]["seq"] > records[0]["seq"] and 0 <= records[0]["area"] <= 1


def test_cli_times_out() -> None:
    with MaskPublisher("tcp://127.0.0.1:*", stats_interval_s=None) as pub:
        assert pub.endpoint is not None
        assert main([pub.endpoint, "--count", "1", "--timeout", "0.1"]) == 1


PUBLISHER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from stream.transport.publish import MaskPublisher

    pub = MaskPublisher("tcp://127.0.0.1:*", stream="proc", encoding="rle",
                        stats_interval_s=None).start()
    print(pub.endpoint, flush=True)
    if not pub.wait_for_subscriber(timeout_s=20):
        sys.exit("no subscriber")
    i = 0
    while pub.counters()["sent"] < 20 and i < 2000:      # 100 Hz until 20 went out
        prob = np.zeros((24, 32), np.float32)
        prob[i % 24, :] = 1.0                                 # row i % 24 set
        pub.publish(prob, i, time.monotonic_ns(), 0, 0, 1.0, 0.5, "proc-test")
        i += 1
        time.sleep(0.01)
    sys.stdin.read()                                          # hold the socket until told
    print(json.dumps(pub.counters()), flush=True)
    pub.close()
""")


def read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, "publisher process printed nothing"
    return proc.stdout.readline().strip()


def test_publisher_in_another_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        endpoint = read_line(proc, 60.0)                     # interpreter start + imports
        assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
        with MaskSubscriber(endpoint, topic="mask/proc", timeout_s=10.0) as sub:
            got = [sub.recv() for _ in range(20)]
        assert proc.stdin is not None
        proc.stdin.close()
        counters = json.loads(read_line(proc, 10.0))
        proc.wait(10.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10.0)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert all(m is not None for m in got)
    seqs = [m.header["seq"] for m in got if m]
    assert seqs == sorted(set(seqs)) and len(seqs) == 20
    for m in got:
        assert m is not None and m.mask is not None
        expected = np.zeros((24, 32), np.uint8)
        expected[m.header["frame_index"] % 24, :] = 1
        np.testing.assert_array_equal(m.mask, expected)
    assert counters["sent"] == 20 and sub.missed == seqs[-1] - seqs[0] + 1 - 20


@pytest.mark.parametrize("policy", [DropPolicy.COUNTED, DropPolicy.PER_SUBSCRIBER])
def test_drop_policy_with_one_stalled_and_one_reading_subscriber(policy: DropPolicy) -> None:
    """A subscriber that never reads next to one that reads everything: COUNTED drops the
    masks for both once the stalled queue is full (and counts them); PER_SUBSCRIBER keeps
    feeding the reader and only the stalled subscriber loses masks (uncounted: the publisher
    cannot see them; the subscriber's seq gaps show them)."""
    n = 150
    prob = random_prob((32, 32))
    with pub_sub("inproc", {"sndhwm": 2, "drop_policy": policy}, {"rcvhwm": 2}) as (pub, stalled):
        assert pub.endpoint is not None
        with MaskSubscriber(pub.endpoint, timeout_s=TIMEOUT_S) as reader:
            time.sleep(0.2)  # inproc: the pipe is attached; the next send sees the subscription
            got: list[int] = []
            for i in range(n):
                publish_one(pub, prob, frame_index=i)
                while (msg := reader.recv(0.02)) is not None:
                    got.append(msg.header["seq"])
                    if msg.header["seq"] == i:
                        break
            while (msg := reader.recv(0.2)) is not None:
                got.append(msg.header["seq"])
            dropped = pub.counters()["dropped_at_socket"]
            if policy is DropPolicy.PER_SUBSCRIBER:  # (ZMQ's batched queue credit may cost
                assert got == sorted(got) and len(got) >= n - 5 and dropped == 0  # one or two)
            else:
                assert dropped >= n - 10 and len(got) + dropped == n
        stalled_seqs = []
        while (msg := stalled.recv(0.2)) is not None:
            stalled_seqs.append(msg.header["seq"])
        assert len(stalled_seqs) <= 8  # its queue: sndhwm + rcvhwm, with inproc
