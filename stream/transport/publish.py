"""ZMQ publisher of masks and once-a-second stats (docs/design.md section 6, schema in `messages`).

`MaskPublisher.publish` never blocks: the socket is sent to with `zmq.NOBLOCK` and a message
the socket cannot take is dropped and counted. `seq` goes up by one for every mask handed to
`publish`, whether or not the socket took it, so a subscriber that sees a gap in `seq` knows
how many masks it missed (dropped here, on the way, or in its own queue).

The socket is an XPUB (a PUB on the wire, so plain SUB sockets connect as usual). It also
reports subscriptions, which gives `wait_for_subscriber` (no slow-joiner guessing) and, with
`DropPolicy.COUNTED`, `XPUB_NODROP`: a plain PUB socket drops for a slow subscriber silently,
so the drops could never be counted.

With `connect=True` the XPUB connects to a proxy's XSUB side (`stream.proxy`) instead of
binding: the proxy forwards its subscribers' subscriptions, so `wait_for_subscriber` still
works, and the proxy is this socket's only peer. Then `subscribers` in stats counts the link to
the proxy (0 or 1), heartbeats watch that link (libzmq reconnects by itself), and
`DropPolicy.COUNTED` counts masks the link could not take; a subscriber behind the proxy that
reads too slowly loses masks at the proxy, seen only as `seq` gaps there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from .curve import (
    AllowList,
    CurveClientKeys,
    CurveServerKeys,
    start_zap,
)
from .frames import FrameOptions, encode_frame, frame_header
from .messages import ENCODINGS, SCHEMA_VERSION, STREAM_NAME, MaskHeader, dumps, encode_mask
from .sockets import (
    DEFAULT_URL,
    DropPolicy,
    drain_monitor,
    drain_subscriptions,
    exposure_warning,
    open_xpub,
    send_counted,
)

logger = logging.getLogger(__name__)

CONNECT_LINGER_MS = 1000   # connect mode: how long `stop` may take to hand queued masks over


class MaskPublisher:
    """Publishes `mask/<stream>` messages and a `stats/<stream>` message every `stats_interval_s`.

    Args:
        url: where to bind (with `connect`: the proxy's frontend to connect to); loopback by
            default. `tcp://127.0.0.1:*` picks a free port
            (read it back from `endpoint`).
        stream: the stream name in topics and headers (letters, digits, `_.:-`).
        encoding: payload encoding, one of `messages.ENCODINGS`.
        sndhwm: send high-water mark (messages queued per subscriber before dropping).
        context: ZMQ context; the process-wide `zmq.Context.instance()` by default (inproc://
            needs publisher and subscriber on one context).
        curve: CurveZMQ server keys, for subscribers on other machines. With
            `curve.allowed_clients` and no `context`, the publisher uses a context of its own
            for the ZAP authenticator (one per context), and terminates it on `stop`. With
            `connect`: `CurveClientKeys` for the proxy (its public key, this publisher's pair).
        stats_interval_s: period of the stats thread; None: no thread (call `publish_stats`).
        stats_provider: returns the pipeline's counters (a JSON-able dict), sent in stats
            headers under `counters`; its errors are logged, never raised into the pipeline.
        drop_policy: see `DropPolicy`.
        clock: the pipeline clock, for `t_publish_ns`.
        heartbeat_s, heartbeat_timeout_s: ZMTP heartbeats (tcp, ipc): a PING every
            `heartbeat_s`, and a subscriber that sends nothing for `heartbeat_timeout_s` is
            disconnected. A frozen subscriber process, or one behind a dead link, would
            otherwise keep its queue full and, with `DropPolicy.COUNTED`, hold up the masks
            of every other subscriber. None: no heartbeats.
        connect: connect to `url` (a `stream.proxy` frontend) instead of binding it.
        frames: publish `frame/<stream>` with `publish_frame` (see `frames.FrameOptions`);
            None (default): `publish_frame` sends nothing.

    Lifecycle: `start()` binds and starts the stats thread, `stop()` (alias `close()`) stops
    it and closes the socket with LINGER 0 (masks still queued are discarded; connect mode:
    they get `CONNECT_LINGER_MS` to reach the proxy). `publish` may
    run on one thread while the stats thread sends: a lock serialises the socket.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        stream: str = "cam0",
        encoding: str = "mono8",
        sndhwm: int = 2,
        context: zmq.Context[Any] | None = None,
        curve: CurveServerKeys | CurveClientKeys | None = None,
        *,
        stats_interval_s: float | None = 1.0,
        stats_provider: Callable[[], Mapping[str, Any]] | None = None,
        drop_policy: DropPolicy = DropPolicy.COUNTED,
        clock: Callable[[], int] = time.monotonic_ns,
        heartbeat_s: float | None = 0.5,
        heartbeat_timeout_s: float = 1.5,
        connect: bool = False,
        frames: FrameOptions | None = None,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
        if sndhwm < 1:
            raise ValueError(f"sndhwm must be >= 1 (0 would mean unbounded), got {sndhwm}")
        if curve is not None and isinstance(curve, CurveClientKeys) != connect:
            raise ValueError("curve: CurveServerKeys to bind, CurveClientKeys to connect")
        self.url, self.stream, self.encoding, self.sndhwm = url, stream, encoding, sndhwm
        self.mask_topic, self.stats_topic = f"mask/{stream}", f"stats/{stream}"
        self.endpoint: str | None = None          # the bound address, port resolved
        self.connect, self.frames = connect, frames
        self._context, self._curve = context, curve
        self._own_context: zmq.Context[Any] | None = None
        self._auth: ThreadAuthenticator | None = None
        self._allow: AllowList | None = None
        self._stats_interval_s = stats_interval_s
        self._drop_policy, self._clock = drop_policy, clock
        self._heartbeat_s, self._heartbeat_timeout_s = heartbeat_s, heartbeat_timeout_s
        self._monitor: zmq.Socket[bytes] | None = None
        self._connected = self._disconnected = 0        # subscriber connections (monitor)
        self._lock = threading.Lock()              # serialises the socket and the counters
        self._socket: zmq.Socket[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscriptions: set[bytes] = set()
        self._counts: dict[str, dict[str, int]] = {}   # per stream: seq and socket counters
        self._providers: dict[str, Callable[[], Mapping[str, Any]] | None] = {}
        self.add_stream(stream, stats_provider)

    def add_stream(self, stream: str,
                   stats_provider: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Publish one more stream on this socket: ``mask/<stream>`` with its own ``seq`` and
        ``stats/<stream>`` with its own counters (one process, N streams)."""
        if not STREAM_NAME.fullmatch(stream):
            raise ValueError(f"stream name {stream!r}: use letters, digits and _.:- only")
        if stream in self._counts:
            raise ValueError(f"stream {stream!r} is already published here")
        with self._lock:
            self._counts[stream] = {"published": 0, "sent": 0, "dropped_at_socket": 0,
                                    "stats_sent": 0, "stats_dropped": 0, "frames_sent": 0,
                                    "frames_dropped_at_socket": 0}
            self._providers[stream] = stats_provider

    @property
    def streams(self) -> list[str]:
        return list(self._counts)

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> MaskPublisher:
        """Bind the socket and start the stats thread; raises `BindError` if it cannot bind."""
        if self._socket is not None:
            raise RuntimeError("publisher already started")
        context = self._context or zmq.Context.instance()
        if self.connect and self._context is None:       # term() on stop flushes the queue
            context = self._own_context = zmq.Context()
        curve = self._curve
        if isinstance(curve, CurveServerKeys) and curve.allowed_clients is not None:
            if self._context is None:
                context = self._own_context = zmq.Context()
            self._allow = AllowList(curve.allowed_clients)
            self._auth = start_zap(context, {"*": self._allow})
        try:
            return self._bind(context)
        except BaseException:
            self._stop_auth()
            raise

    def _bind(self, context: zmq.Context[Any]) -> MaskPublisher:
        """Create, configure and bind the XPUB socket; start the stats thread."""
        sock = open_xpub(context, self.url, connect=self.connect, sndhwm=self.sndhwm,
                         nodrop=self._drop_policy is DropPolicy.COUNTED, curve=self._curve,
                         heartbeat_s=self._heartbeat_s,
                         heartbeat_timeout_s=self._heartbeat_timeout_s)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.url
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        warning = None if self.connect else exposure_warning(
            self.url, curve=self._curve is not None, allowlist=self._allow is not None)
        if warning:
            logger.warning(warning)
        logger.info("publishing %s %s %s (%s)", self.mask_topic,
                    "into the proxy at" if self.connect else "on", self.endpoint, self.encoding)
        self._socket = sock
        self._stop.clear()
        if self._stats_interval_s is not None:
            self._thread = threading.Thread(
                target=self._stats_loop, args=(self._stats_interval_s,),
                name=f"stats-{self.stream}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0, linger_ms: int | None = None) -> None:
        """Stop the stats thread and close the socket; idempotent. ``linger_ms``: how long
        masks still queued may take to reach their subscribers (default 0, connect mode
        `CONNECT_LINGER_MS`: into the proxy); run_live gives 1 s on a planned end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._lock:
            if self._socket is not None:
                self._socket.disable_monitor()
                if linger_ms is None:
                    linger_ms = CONNECT_LINGER_MS if self.connect else 0
                self._socket.close(linger=linger_ms)
                self._socket = None
            if self._monitor is not None:
                self._monitor.close(linger=0)
                self._monitor = None
        self._stop_auth()

    close = stop

    def _stop_auth(self) -> None:
        """Stop the ZAP authenticator and terminate the publisher's own context, if any."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context is not None:
            self._own_context.term()
            self._own_context = None

    def __enter__(self) -> MaskPublisher:
        return self if self._socket is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------------------- publishing

    def publish(
        self,
        prob: np.ndarray,
        frame_index: int,
        t_capture_ns: int,
        t_audio_start_ns: int,
        t_audio_end_ns: int,
        keep_ratio: float,
        threshold: float,
        model: str,
        *,
        audio_late: bool = False,
        audio_lag_ms: float = 0.0,
        extra: Mapping[str, Any] | None = None,
        stream: str | None = None,
    ) -> int:
        """Send one mask of ``stream`` (default: the constructor's), never blocking; returns
        its seq (also when the socket dropped it).

        prob: (H, W) float probabilities in [0, 1]; encoded with `threshold` as `encoding`
        says. `audio_lag_ms`: how much earlier the audio window ends than the one wanted.
        `extra`: more JSON header keys (e.g. per-stage timestamps for the benchmark).
        """
        payload = encode_mask(prob, self.encoding, threshold)                 # outside the lock
        H, W = prob.shape
        stream = stream or self.stream
        topic = f"mask/{stream}".encode()
        with self._lock:
            sock = self._require_socket()
            counts = self._counts[stream]
            seq = counts["published"]
            counts["published"] += 1
            if seq % 64 == 0:                  # bound the XPUB's queue of subscription events
                self._drain_subscriptions(sock)
            header = MaskHeader(
                stream=stream, seq=seq, frame_index=int(frame_index),
                t_capture_ns=int(t_capture_ns), t_audio_start_ns=int(t_audio_start_ns),
                t_audio_end_ns=int(t_audio_end_ns), t_publish_ns=self._clock(),
                height=int(H), width=int(W), encoding=self.encoding, threshold=float(threshold),
                keep_ratio=float(keep_ratio), model=str(model), audio_late=bool(audio_late),
                audio_lag_ms=float(audio_lag_ms), extra=dict(extra or {}))
            send_counted(sock, [topic, header.to_json(), payload], counts, "sent",
                         "dropped_at_socket")
        return seq

    def publish_frame(self, image: np.ndarray, seq: int, frame_index: int, t_capture_ns: int,
                      stream: str | None = None) -> bool:
        """Send ``frame/<stream>``: the (H, W, 3) uint8 BGR frame the mask numbered ``seq``
        was computed on, as a JPEG, when `frames` is set and wants this seq (every n-th);
        never blocks. -> whether it went out (False: frames off, not wanted, or dropped)."""
        if self.frames is None or not self.frames.wanted(seq):
            return False
        payload, h, w = encode_frame(image, self.frames)                     # outside the lock
        stream = stream or self.stream
        with self._lock:
            sock = self._require_socket()
            counts = self._counts[stream]
            header = frame_header(stream, seq, frame_index, t_capture_ns, self._clock(), (h, w),
                                  (int(image.shape[0]), int(image.shape[1])), self.frames)
            return send_counted(sock, [f"frame/{stream}".encode(), dumps(header), payload],
                                counts, "frames_sent", "frames_dropped_at_socket")

    def publish_stats(self, stream: str | None = None) -> bool:
        """Send one `stats/<stream>` message now (default: the constructor's stream); False
        when the socket dropped it."""
        stream = stream or self.stream
        counters = self._provider_counters(stream)
        with self._lock:
            sock = self._require_socket()
            self._drain_subscriptions(sock)
            counts = self._counts[stream]
            header = {"v": SCHEMA_VERSION, "stream": stream, "t_publish_ns": self._clock(),
                      **counts, "subscriptions": len(self._subscriptions),
                      "subscribers": self._connected - self._disconnected,
                      "subscribers_lost": self._disconnected,
                      "encoding": self.encoding, "drop_policy": self._drop_policy.value,
                      "interval_s": self._stats_interval_s, "auth": self.auth_mode,
                      "connect": self.connect,
                      "curve_denied": self._allow.denied if self._allow else 0,
                      "frames": None if self.frames is None else asdict(self.frames),
                      "counters": counters}
            return send_counted(sock, [f"stats/{stream}".encode(), dumps(header), b""],
                                counts, "stats_sent", "stats_dropped")

    def set_stats_provider(self, provider: Callable[[], Mapping[str, Any]] | None,
                           stream: str | None = None) -> None:
        """Set (or clear) the function whose counters go into ``stream``'s stats headers."""
        self._providers[stream or self.stream] = provider

    @property
    def auth_mode(self) -> str:
        """"none", "curve" (encrypted, any client with the server key), "curve+allowlist", or
        "curve-client" (connect mode: this publisher is a client of the proxy)."""
        if self._curve is None:
            return "none"
        if isinstance(self._curve, CurveClientKeys):
            return "curve-client"
        return "curve" if self._curve.allowed_clients is None else "curve+allowlist"

    def counters(self, stream: str | None = None) -> dict[str, int]:
        """published (masks handed to `publish` = next seq), sent, dropped_at_socket, stats,
        of ``stream`` (default: the constructor's)."""
        with self._lock:
            return dict(self._counts[stream or self.stream])

    def wait_for_subscriber(self, topic: str | None = None, timeout_s: float = 5.0) -> bool:
        """Wait until some subscriber's filter matches `topic` (the mask topic by default).

        ZMQ delivers nothing to a subscriber before its subscription arrives (the
        "slow joiner"); this is how a test or a benchmark waits for it. False on timeout.
        """
        wanted = (topic or self.mask_topic).encode()
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._drain_subscriptions(self._require_socket())
                if any(wanted.startswith(prefix) for prefix in self._subscriptions):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    # -------------------------------------------------------------------------------- internals

    def _require_socket(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            raise RuntimeError("publisher is not started: call start() or use `with`")
        return self._socket

    def _drain_subscriptions(self, sock: zmq.Socket[bytes]) -> None:
        """Read subscription changes and the monitor's connection events; lock held."""
        if self._monitor is not None:
            connected, disconnected = drain_monitor(self._monitor)
            self._connected += connected
            self._disconnected += disconnected
        drain_subscriptions(sock, self._subscriptions)

    def _provider_counters(self, stream: str) -> dict[str, Any]:
        provider = self._providers.get(stream)
        if provider is None:
            return {}
        try:
            counters = dict(provider())
            dumps(counters)                                   # JSON-able, or drop it here
            return counters
        except Exception as e:                                # never raise into the pipeline
            logger.warning("stats_provider failed, stats sent without its counters: %r", e)
            return {}

    def _stats_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                for stream in self.streams:
                    self.publish_stats(stream)
            except RuntimeError:                              # socket closed under us: stopping
                return
