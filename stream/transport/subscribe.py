"""Subscriber for published masks: a Python client and a CLI (docs/design.md section 6).

    with MaskSubscriber("tcp://127.0.0.1:5555", topic="mask/cam0", timeout_s=5) as sub:
        for msg in sub:                     # ends after timeout_s without a message
            print(msg.header["seq"], msg.mask.mean())

    python -m stream.subscribe tcp://127.0.0.1:5555 --topic mask/cam0 [--count N] [--json]
        [--server-key KEYDIR/server.key --client-key alice.key_secret]      # CurveZMQ

Malformed messages are logged, counted in `rejected` and skipped; the stream goes on.
Latency printed by the CLI is t_receive - t_capture, both `time.monotonic_ns()`: it means
something only when the subscriber runs on the publisher's machine.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import zmq

from pcmanet.cli import Parser

from .curve import CurveClientKeys, apply_client
from .messages import MessageError, parse_message

logger = logging.getLogger(__name__)

_POLL_S = 0.2          # longest single wait, so Ctrl-C and close() are noticed promptly


class _Unset(enum.Enum):
    UNSET = 0


@dataclass(frozen=True, eq=False)
class MaskMessage:
    """One received message. mask: (H, W) uint8 0/1, float32 for prob16, None for stats and
    frames. image: a `frame/<stream>` message's picture, (H, W, 3) uint8 BGR; None otherwise.

    `eq=False`: compared by identity (an ndarray field has no single truth value).
    """

    topic: str
    header: dict[str, Any]
    mask: np.ndarray | None
    t_receive_ns: int            # subscriber's monotonic clock when the message arrived
    image: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """"mask", "stats" or "frame" (the topic's first part)."""
        return self.topic.partition("/")[0]

    @property
    def latency_ms(self) -> float | None:
        """t_receive - t_capture in ms (same machine only); None for stats."""
        t_capture = self.header.get("t_capture_ns")
        return None if t_capture is None else (self.t_receive_ns - t_capture) / 1e6

    @property
    def area(self) -> float | None:
        """Fraction of mask pixels set (prob16: above the header threshold); None for stats."""
        if self.mask is None:
            return None
        if self.mask.dtype == np.float32:
            return float((self.mask > self.header["threshold"]).mean())
        return float(self.mask.mean())


class MaskSubscriber:
    """Receives, validates and decodes messages of the given topics.

    Args:
        url: the publisher's address.
        topic: one topic or several. A full topic (`mask/cam0`) matches exactly (ZMQ's own
            filter is a prefix, so `mask/cam01` is received and then ignored); a topic ending
            in `/` (`mask/`) or the empty string matches every topic with that prefix.
            `frame/<stream>` gives the frames a publisher sends beside its masks (decoded to
            `MaskMessage.image`; pair them with masks by `seq`).
        keep_latest: a background thread receives continuously and keeps only the newest
            message per topic, so a slow consumer always gets the latest mask (`skipped`
            counts the ones it never saw). Without it, messages queue up to `rcvhwm`.
        rcvhwm: receive high-water mark.
        timeout_s: default for `recv` and iteration; None waits forever.
        curve: CurveZMQ client keys when the publisher uses them.
        context: ZMQ context; the process-wide instance by default (inproc:// needs the same).
        clock: the clock for `t_receive_ns`.

    Counters: `received`, `rejected` (malformed, `last_reject` says why), `ignored` (topics
    outside the filter), `missed` (sum of seq gaps per stream: drops anywhere upstream),
    `skipped` (keep-latest only: replaced before the consumer took them).
    """

    def __init__(
        self,
        url: str,
        topic: str | Sequence[str] = "mask/cam0",
        keep_latest: bool = False,
        rcvhwm: int = 16,
        timeout_s: float | None = None,
        curve: CurveClientKeys | None = None,
        context: zmq.Context[Any] | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.url, self.timeout_s, self._clock = url, timeout_s, clock
        self.topics = (topic,) if isinstance(topic, str) else tuple(topic)
        self.received = self.rejected = self.ignored = self.missed = self.skipped = 0
        self.last_reject: str | None = None
        self._last_seq: dict[str, int] = {}
        sock: zmq.Socket[bytes] = (context or zmq.Context.instance()).socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            apply_client(sock, curve)
        for t in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        try:
            sock.connect(url)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            raise ValueError(f"cannot connect to {url!r}: {e}") from None
        self._socket: zmq.Socket[bytes] | None = sock
        self._closed = False
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._latest: OrderedDict[str, MaskMessage] = OrderedDict()       # keep-latest only
        self._stop = threading.Event()
        self._thread_error: BaseException | None = None
        if keep_latest:       # the socket now belongs to the thread (thread start is a barrier)
            self._thread = threading.Thread(target=self._run, args=(sock,),
                                            name="mask-subscriber", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------------------ receiving

    def recv(self, timeout_s: float | Literal[_Unset.UNSET] | None = _Unset.UNSET
             ) -> MaskMessage | None:
        """The next valid message, or None after `timeout_s` (default: the constructor's)."""
        if self._closed:
            raise RuntimeError("subscriber is closed")
        timeout = self.timeout_s if timeout_s is _Unset.UNSET else timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            return self._recv_latest(deadline)
        assert self._socket is not None
        while True:
            wait_s = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if self._socket.poll(max(0, math.ceil(wait_s * 1000)), zmq.POLLIN):
                msg = self._accept(self._socket.recv_multipart())
                if msg is not None:
                    return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def __iter__(self) -> Iterator[MaskMessage]:
        """Messages until a `recv` times out (never, with timeout_s=None)."""
        while (msg := self.recv()) is not None:
            yield msg

    @property
    def heard(self) -> bool:
        """Whether any message at all has arrived (valid, malformed, or of another topic)."""
        return self.received + self.rejected + self.ignored > 0

    def counters(self) -> dict[str, int]:
        """received, rejected, ignored, missed, skipped."""
        return {"received": self.received, "rejected": self.rejected, "ignored": self.ignored,
                "missed": self.missed, "skipped": self.skipped}

    # ------------------------------------------------------------------------------ lifecycle

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the receive thread (keep-latest) and close the socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout_s)          # the thread closes its socket
        elif self._socket is not None:
            self._socket.close(linger=0)
        self._socket = None

    def __enter__(self) -> MaskSubscriber:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------------------ internals

    def _wanted(self, topic: bytes) -> bool:
        text = topic.decode("utf-8", errors="replace")
        return any(text == t or ((not t or t.endswith("/")) and text.startswith(t))
                   for t in self.topics)

    def _accept(self, frames: list[bytes]) -> MaskMessage | None:
        """Validate and decode one raw message; None when rejected or not for us."""
        t_receive_ns = self._clock()
        if frames and not self._wanted(frames[0]):
            self.ignored += 1
            return None
        try:
            topic, header, data = parse_message(frames)
        except Exception as e:  # MessageError; anything else is a decoder bug: still rejected
            self.rejected += 1
            self.last_reject = str(e) if isinstance(e, MessageError) else f"{type(e).__name__}: {e}"
            if self.rejected <= 10 or self.rejected % 100 == 0:
                logger.warning("rejected message %d on %r: %s",
                               self.rejected, frames[0][:60] if frames else b"", e)
            return None
        self.received += 1
        if topic.startswith("frame/"):
            return MaskMessage(topic, header, None, t_receive_ns, image=data)
        if data is not None:
            self._track_seq(header["stream"], header["seq"])
        return MaskMessage(topic, header, data, t_receive_ns)

    def _track_seq(self, stream: str, seq: int) -> None:
        last = self._last_seq.get(stream)
        if last is not None and seq > last + 1:
            self.missed += seq - last - 1
        elif last is not None and seq <= last:
            logger.info("stream %r: seq went back from %d to %d (publisher restarted?)",
                        stream, last, seq)
        self._last_seq[stream] = seq

    def _run(self, sock: zmq.Socket[bytes]) -> None:
        """Keep-latest receive thread: newest message per topic, oldest topic first out."""
        try:
            while not self._stop.is_set():
                if not sock.poll(int(_POLL_S * 1000), zmq.POLLIN):
                    continue
                msg = self._accept(sock.recv_multipart())
                if msg is None:
                    continue
                with self._cond:
                    if self._latest.pop(msg.topic, None) is not None:
                        self.skipped += 1
                    self._latest[msg.topic] = msg
                    self._cond.notify_all()
        except BaseException as e:                     # surfaced to the consumer by recv()
            self._thread_error = e
            logger.exception("subscriber receive thread failed")
        finally:
            sock.close(linger=0)
            with self._cond:
                self._cond.notify_all()

    def _recv_latest(self, deadline: float | None) -> MaskMessage | None:
        assert self._thread is not None
        with self._cond:
            while not self._latest:
                if not self._thread.is_alive():
                    raise RuntimeError(f"receive thread stopped: {self._thread_error!r}")
                wait_s = _POLL_S if deadline is None else min(_POLL_S,
                                                              deadline - time.monotonic())
                if wait_s <= 0:
                    return None
                self._cond.wait(wait_s)
            return self._latest.popitem(last=False)[1]


# ------------------------------------------------------------------------------------------ CLI


def format_line(msg: MaskMessage, as_json: bool) -> str:
    """One output line for a message: key=value text, or a JSON object."""
    h = msg.header
    if as_json:
        out: dict[str, Any] = {"topic": msg.topic, **h}
        if msg.mask is not None or msg.image is not None:
            out["latency_ms"] = msg.latency_ms
        if msg.mask is not None:
            out["area"] = msg.area
        return json.dumps(out, separators=(",", ":"))
    if msg.image is not None:
        return (f"{msg.topic} seq={h['seq']} frame={h['frame_index']} "
                f"size={h['width']}x{h['height']} latency_ms={msg.latency_ms:.1f}")
    if msg.mask is None:
        counts = " ".join(f"{k}={v}" for k, v in h.items()
                          if k not in ("v", "stream", "t_publish_ns") and not isinstance(v, dict))
        return f"{msg.topic} {counts} counters={json.dumps(h.get('counters', {}))}"
    late = " audio_late" if h.get("audio_late") else ""
    if h.get("audio_lag_ms"):
        late += f" audio_lag_ms={h['audio_lag_ms']:.0f}"
    return (f"{msg.topic} seq={h['seq']} frame={h['frame_index']} "
            f"latency_ms={msg.latency_ms:.1f} keep={h['keep_ratio']:.3f} "
            f"area={msg.area:.4f}{late}")


def silence_hint(url: str, after_s: float, server_key: str | None, client_key: str | None
                 ) -> str:
    """The one stderr line for a subscriber that has heard nothing at all for `after_s`."""
    head = f"warning: nothing received from {url} in {after_s:g} s"
    if server_key is None:
        why = ("the publisher may require CurveZMQ keys: pass --server-key SERVER.key and "
               "--client-key NAME.key_secret")
    elif client_key is None:
        why = ("the publisher may admit only allowed clients: pass --client-key "
               "NAME.key_secret of a client it allows (and check --server-key is its key)")
    else:
        why = (f"the publisher may not allow {client_key} (is its public key in the allowed "
               "clients folder?) or --server-key is not its key")
    return f"{head}; {why} (or nothing is published on the topic yet); still waiting"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (1 when --timeout passes before --count)."""
    parser = Parser(
        prog="python -m stream.subscribe", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="publisher address, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--topic", action="append",
                        help="mask/NAME, stats/NAME or frame/NAME (repeatable; 'mask/' = "
                             "every stream); default mask/cam0")
    parser.add_argument("--count", type=int, default=None, help="exit after N messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up (exit 1) after S seconds without a message")
    parser.add_argument("--keep-latest", action="store_true",
                        help="skip to the newest message when printing falls behind")
    parser.add_argument("--server-key", metavar="FILE",
                        help="CurveZMQ: the publisher's public key file (server.key)")
    parser.add_argument("--client-key", metavar="FILE",
                        help="CurveZMQ: this client's NAME.key_secret (one the publisher "
                             "allows); without it a fresh pair is used")
    parser.add_argument("--warn-after", type=float, default=5.0, metavar="S",
                        help="nothing at all received for S seconds: say once on stderr that "
                             "the publisher may require CurveZMQ keys (0: never; default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    curve = None
    if args.count is not None and args.count < 1:
        parser.error(f"--count {args.count}: must be >= 1")
    if args.timeout is not None and not 0 < args.timeout < float("inf"):
        parser.error(f"--timeout {args.timeout:g}: must be > 0 seconds")
    if not 0 <= args.warn_after < float("inf"):
        parser.error(f"--warn-after {args.warn_after:g}: must be >= 0 seconds (0: never)")
    if args.client_key and not args.server_key:
        parser.error("--client-key needs --server-key")
    if args.server_key:
        from .keys import KeyFileError, client_keys  # here: .keys imports pcmanet (torch)

        try:
            curve = client_keys(args.server_key, args.client_key)
        except KeyFileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    n, code = 0, 0
    warn_at = time.monotonic() + args.warn_after if args.warn_after > 0 else None
    try:
        opened = MaskSubscriber(args.url, topic=args.topic or ["mask/cam0"], curve=curve,
                                keep_latest=args.keep_latest)
    except ValueError as e:
        print(f"error: {e}; give an address such as tcp://127.0.0.1:5555", file=sys.stderr)
        return 2
    with opened as sub:
        try:
            deadline = None if args.timeout is None else time.monotonic() + args.timeout
            while args.count is None or n < args.count:
                wake = min((t for t in (deadline, warn_at) if t is not None), default=None)
                msg = sub.recv(None if wake is None else max(0.0, wake - time.monotonic()))
                now = time.monotonic()
                if warn_at is not None and (sub.heard or msg is not None):
                    warn_at = None                      # the connection works: no hint
                if msg is None:
                    if deadline is not None and now >= deadline:
                        print(f"no message for {args.timeout} s", file=sys.stderr)
                        code = 1
                        break
                    if warn_at is not None and now >= warn_at:
                        print(silence_hint(args.url, args.warn_after, args.server_key,
                                           args.client_key), file=sys.stderr, flush=True)
                        warn_at = None
                    continue
                print(format_line(msg, args.json), flush=True)
                n += 1
                deadline = None if args.timeout is None else now + args.timeout
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:                     # `| head`: the reader went away
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(" ".join(f"{k}={v}" for k, v in sub.counters().items()), file=sys.stderr)
    return code

