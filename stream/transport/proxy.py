"""Many machines behind one address: an XSUB/XPUB forwarder for masks (docs/design.md section 5).

    python -m stream.proxy --frontend tcp://127.0.0.1:5556 --backend tcp://127.0.0.1:5557
    python run_live.py --demo --stream cam1 --zmq-connect tcp://127.0.0.1:5556      # each machine
    python -m stream.subscribe tcp://127.0.0.1:5557 --topic mask/                  # every stream

Publishers connect their PUB (an XPUB, see `stream.transport.publish`) to the frontend, an XSUB that
binds; subscribers connect to the backend, an XPUB that binds. Forwarding is libzmq's own
steerable proxy (`zmq.proxy_steerable`) on a thread; a control thread steers it (PAUSE, RESUME,
TERMINATE), asks it for STATISTICS and publishes `stats/proxy` (schema v1 stats header, empty
payload) through the frontend once per interval, so it reaches subscribers like any stream.
Subscriptions travel upstream: the XSUB replays them to every publisher that (re)connects, so
`run_live.py --wait-subscriber` and a restarted publisher need no sleeps.

Stats (counts in message parts, 3 per schema-v1 message, including the proxy's own stats):
`published` / `sent` parts in from publishers / out to subscribers, `messages_forwarded`
(sent // 3), `bytes_forwarded`, `subscription_parts` (backend to frontend), `publishers`,
`subscribers` (connections open, from socket monitors), `publishers_lost`,
`subscribers_lost`, `publishers_denied`, `subscribers_denied` (CurveZMQ allow-lists),
`paused`, `uptime_s`, `auth`. `dropped_at_socket` is always 0: a subscriber that reads too
slowly loses masks at the backend queue (`--hwm` per subscriber) without the proxy seeing it;
its `seq` gaps show it.

CurveZMQ: `--server-secret` makes both sides CurveZMQ servers with that key pair (publishers
and subscribers need its public `server.key`); `--publishers DIR` / `--subscribers DIR` admit
only the `*.key` public keys in DIR on that side (`python -m stream.keys`).
SIGINT / SIGTERM stop it within 2 s, exit 0; bad input is one `error:` line, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from types import FrameType
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from pcmanet.cli import Parser

from .curve import AllowList, CurveServerKeys, apply_server, start_zap
from .messages import SCHEMA_VERSION, dumps
from .sockets import AddressInUseError, BindError, exposure_warning

logger = logging.getLogger(__name__)

FRONTEND_URL, BACKEND_URL = "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557"
STATS_TOPIC = "stats/proxy"
_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
# libzmq 4.3.5 (the one pyzmq 27 bundles) swapped PAUSE and RESUME in its rewritten proxy
# (fixed after the release, libzmq PR 4600); test_proxy checks that pause() really holds.
_PAUSE, _RESUME = ((b"RESUME", b"PAUSE") if zmq.zmq_version_info() == (4, 3, 5)
                   else (b"PAUSE", b"RESUME"))


class _Side:
    """One bound side: its socket, its monitor and its connection counters (control thread)."""

    def __init__(self, name: str, sock: zmq.Socket[bytes], allow: AllowList | None) -> None:
        self.name, self.sock, self.allow = name, sock, allow
        self.monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_MONITOR_EVENTS)
        self.accepted = self.lost = 0

    def drain(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.accepted += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.lost += 1


class MaskProxy:
    """XSUB `frontend` (publishers connect) -> XPUB `backend` (subscribers connect).

    Args:
        frontend, backend: bind addresses; loopback by default (`tcp://127.0.0.1:*` picks a
            free port: read `frontend_endpoint` / `backend_endpoint`).
        frontend_curve, backend_curve: CurveZMQ server keys per side (None: off); their
            `allowed_clients` turn on the allow-list of that side.
        stats_interval_s: period of `stats/proxy`; None: no stats.
        hwm: messages queued per peer on each side before dropping.
        heartbeat_s, heartbeat_timeout_s: ZMTP heartbeats on both sides, so a dead publisher
            or subscriber is noticed and its connection freed; None: none.

    Lifecycle: `start()` binds both sides (raises `BindError`) and starts the threads;
    `pause()` / `resume()` steer it; `stop()` terminates the proxy and closes everything.
    """

    def __init__(self, frontend: str = FRONTEND_URL, backend: str = BACKEND_URL, *,
                 frontend_curve: CurveServerKeys | None = None,
                 backend_curve: CurveServerKeys | None = None,
                 stats_interval_s: float | None = 1.0, hwm: int = 1000,
                 heartbeat_s: float | None = 0.5, heartbeat_timeout_s: float = 1.5) -> None:
        if hwm < 1:
            raise ValueError(f"hwm must be >= 1, got {hwm}")
        self.frontend, self.backend = frontend, backend
        self.frontend_endpoint: str | None = None
        self.backend_endpoint: str | None = None
        self._curve = {"publishers": frontend_curve, "subscribers": backend_curve}
        self._stats_interval_s, self._hwm = stats_interval_s, hwm
        self._heartbeat_s, self._heartbeat_timeout_s = heartbeat_s, heartbeat_timeout_s
        self._context: zmq.Context[Any] | None = None
        self._auth: ThreadAuthenticator | None = None
        self._control: zmq.Socket[bytes] | None = None        # the proxy thread's end
        self._commands: queue.Queue[tuple[bytes, threading.Event]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._sides: list[_Side] = []
        self.paused, self.stats_sent, self._t0 = False, 0, time.monotonic()

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> MaskProxy:
        if self._context is not None:
            raise RuntimeError("proxy already started")
        ctx = self._context = zmq.Context()
        allows = {d: AllowList(k.allowed_clients, who=d[:-1])
                  for d, k in self._curve.items() if k is not None}
        if any(a.keys is not None for a in allows.values()):
            self._auth = start_zap(ctx, allows)       # every CurveZMQ side needs a provider
        socks: list[zmq.Socket[bytes]] = []
        try:
            for kind, domain, url in ((zmq.XSUB, "publishers", self.frontend),
                                      (zmq.XPUB, "subscribers", self.backend)):
                sock = self._bind(ctx, kind, domain, url)
                socks.append(sock)
                self._sides.append(_Side(domain, sock, allows.get(domain)))
        except BaseException:
            for sock in socks:
                sock.close(linger=0)
            self._sides = []
            self._close_context()
            raise
        front, back = socks
        self.frontend_endpoint = front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend_endpoint = back.getsockopt_string(zmq.LAST_ENDPOINT)
        stats_url = f"inproc://proxy-stats-{uuid.uuid4().hex}"   # inproc skips CurveZMQ
        front.bind(stats_url)
        stats: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
        stats.setsockopt(zmq.LINGER, 0)
        stats.connect(stats_url)
        control_url = f"inproc://proxy-control-{uuid.uuid4().hex}"
        steer: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
        steer.bind(control_url)
        control: zmq.Socket[bytes] = ctx.socket(zmq.PAIR)
        control.connect(control_url)
        self._control = control
        self._t0 = time.monotonic()
        self._threads = [
            threading.Thread(target=zmq.proxy_steerable, args=(front, back, None, control),
                             name="proxy", daemon=True),
            threading.Thread(target=self._control_loop, args=(steer, stats),
                             name="proxy-control", daemon=True)]
        for thread in self._threads:
            thread.start()
        logger.info("proxy: publishers -> %s, subscribers <- %s", self.frontend_endpoint,
                    self.backend_endpoint)
        return self

    def _bind(self, ctx: zmq.Context[Any], kind: int, domain: str, url: str
              ) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM if kind == zmq.XSUB else zmq.SNDHWM, self._hwm)
        keys = self._curve[domain]
        if keys is not None:
            apply_server(sock, keys, zap_domain=domain)
        if self._heartbeat_s is not None:
            sock.setsockopt(zmq.HEARTBEAT_IVL, round(self._heartbeat_s * 1000))
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, round(self._heartbeat_timeout_s * 1000))
        if "[" in url or "::" in url:
            sock.setsockopt(zmq.IPV6, 1)
        flag = "--frontend" if kind == zmq.XSUB else "--backend"
        try:
            sock.bind(url)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            if e.errno == zmq.EADDRINUSE:
                raise AddressInUseError(e.errno, f"{flag} {url} is already in use") from None
            raise BindError(e.errno, f"cannot bind {flag} {url}: {e.strerror}") from None
        if exposure_warning(url) is not None:
            who = "publish into" if kind == zmq.XSUB else "subscribe to"
            logger.warning("%s %s is reachable from other machines: %s", flag, url,
                           f"anyone can {who} it (CurveZMQ off)" if keys is None else
                           "CurveZMQ on" + (" with an allow-list" if keys.allowed_clients
                                            is not None else ", any client with server.key"))
        return sock

    def pause(self, timeout_s: float = 2.0) -> bool:
        """Stop forwarding (messages queue up to `hwm`, then publishers drop them); True once
        the proxy has taken the command."""
        return self._command(_PAUSE, timeout_s)

    def resume(self, timeout_s: float = 2.0) -> bool:
        return self._command(_RESUME, timeout_s)

    def _command(self, command: bytes, timeout_s: float) -> bool:
        if self._context is None:
            raise RuntimeError("proxy is not started")
        done = threading.Event()
        self._commands.put((command, done))
        return done.wait(timeout_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Terminate the proxy, join the threads, close every socket; idempotent."""
        if self._context is None:
            return
        self._commands.put((b"TERMINATE", threading.Event()))
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = any(t.is_alive() for t in self._threads)
        if not alive:
            for side in self._sides:
                side.sock.disable_monitor()
                side.monitor.close(linger=0)
                side.sock.close(linger=0)
            if self._control is not None:
                self._control.close(linger=0)
        self._control = None
        self._threads, self._sides = [], []
        self._close_context(wait=not alive)

    def _close_context(self, wait: bool = True) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            if wait:
                self._context.term()
            self._context = None

    def __enter__(self) -> MaskProxy:
        return self if self._context is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ internals

    def _control_loop(self, steer: zmq.Socket[bytes], stats: zmq.Socket[bytes]) -> None:
        """Owns the control and stats sockets: runs commands, publishes stats on time."""
        interval = self._stats_interval_s
        next_at = time.monotonic() + (interval or 0)
        try:
            while True:
                wait = None if interval is None else max(0.0, next_at - time.monotonic())
                try:
                    command, done = self._commands.get(timeout=wait)
                except queue.Empty:
                    assert interval is not None
                    self._publish_stats(steer, stats)
                    next_at = max(next_at + interval, time.monotonic())
                    continue
                self._steer(steer, command)
                self.paused = command == _PAUSE
                done.set()
                if command == b"TERMINATE":
                    return
        finally:
            steer.close(linger=0)
            stats.close(linger=0)

    @staticmethod
    def _steer(steer: zmq.Socket[bytes], command: bytes) -> list[bytes]:
        """Send a command; libzmq 4.3.5 answers each (STATISTICS: 8 counters, others: an
        empty part), older versions only STATISTICS, so the reply wait is bounded."""
        steer.send(command)
        if steer.poll(1000 if command == b"STATISTICS" else 200):
            return steer.recv_multipart()
        return []

    def _publish_stats(self, steer: zmq.Socket[bytes], stats: zmq.Socket[bytes]) -> None:
        reply = self._steer(steer, b"STATISTICS")
        counts = [int.from_bytes(part, sys.byteorder) for part in reply]
        if len(counts) != 8:
            counts = [0] * 8
        # frontend: parts in, bytes in, parts out, bytes out; then the same for the backend
        for side in self._sides:
            side.drain()
        pub, sub = self._sides
        header = {"v": SCHEMA_VERSION, "stream": "proxy", "t_publish_ns": time.monotonic_ns(),
                  "published": counts[0], "sent": counts[6], "dropped_at_socket": 0,
                  "messages_forwarded": counts[6] // 3, "bytes_forwarded": counts[7],
                  "subscription_parts": counts[4],
                  "publishers": pub.accepted - pub.lost, "publishers_lost": pub.lost,
                  "subscribers": sub.accepted - sub.lost, "subscribers_lost": sub.lost,
                  "publishers_denied": pub.allow.denied if pub.allow else 0,
                  "subscribers_denied": sub.allow.denied if sub.allow else 0,
                  "paused": self.paused, "uptime_s": round(time.monotonic() - self._t0, 3),
                  "interval_s": self._stats_interval_s, "auth": self.auth_modes()}
        try:
            stats.send_multipart([STATS_TOPIC.encode(), dumps(header), b""], zmq.NOBLOCK)
            self.stats_sent += 1
        except zmq.Again:
            pass

    def auth_modes(self) -> dict[str, str]:
        """Per side: "none", "curve" or "curve+allowlist"."""
        return {d: "none" if k is None else
                "curve" if k.allowed_clients is None else "curve+allowlist"
                for d, k in self._curve.items()}


# ------------------------------------------------------------------------------------------ CLI


def _curve_from_args(args: argparse.Namespace) -> tuple[CurveServerKeys | None,
                                                       CurveServerKeys | None]:
    if args.server_secret is None:
        return None, None
    from .keys import read_allowed_clients, read_key_pair  # here: .keys imports torch

    public, secret = read_key_pair(args.server_secret)
    pubs = None if args.publishers is None else read_allowed_clients(args.publishers)
    subs = None if args.subscribers is None else read_allowed_clients(args.subscribers)
    return CurveServerKeys(public, secret, pubs), CurveServerKeys(public, secret, subs)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m stream.proxy",
                                description=__doc__.split("\n")[0])
    p.add_argument("--frontend", default=FRONTEND_URL, metavar="URL",
                   help=f"bind address publishers connect to (default {FRONTEND_URL})")
    p.add_argument("--backend", default=BACKEND_URL, metavar="URL",
                   help=f"bind address subscribers connect to (default {BACKEND_URL})")
    p.add_argument("--server-secret", metavar="FILE",
                   help="CurveZMQ on both sides: the proxy's server.key_secret")
    p.add_argument("--publishers", metavar="DIR",
                   help="CurveZMQ: admit only publishers whose NAME.key is in DIR")
    p.add_argument("--subscribers", metavar="DIR",
                   help="CurveZMQ: admit only subscribers whose NAME.key is in DIR")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="S",
                   help=f"publish {STATS_TOPIC} every S seconds (0: never; default 1)")
    p.add_argument("--hwm", type=int, default=1000, metavar="N",
                   help="messages queued per publisher / subscriber (default 1000)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.hwm < 1:
            raise ValueError(f"--hwm {args.hwm}: must be >= 1 message part")
        if not 0 <= args.stats_interval < float("inf"):
            raise ValueError(f"--stats-interval {args.stats_interval:g}: must be >= 0 seconds "
                             "(0: no stats/proxy)")
        if (args.publishers or args.subscribers) and not args.server_secret:
            raise ValueError("--publishers / --subscribers need --server-secret")
        if args.frontend == args.backend:
            raise ValueError("--frontend and --backend must differ")
        front_keys, back_keys = _curve_from_args(args)
        proxy = MaskProxy(args.frontend, args.backend, frontend_curve=front_keys,
                          backend_curve=back_keys, hwm=args.hwm,
                          stats_interval_s=args.stats_interval or None).start()
    except (ValueError, BindError) as e:                     # KeyFileError is a ValueError
        print(f"error: {e.strerror if isinstance(e, OSError) else e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    auth = proxy.auth_modes()
    print(f"proxy: publishers connect to {proxy.frontend_endpoint} (auth {auth['publishers']}), "
          f"subscribers to {proxy.backend_endpoint} (auth {auth['subscribers']}); "
          f"{STATS_TOPIC} every {args.stats_interval:g} s; Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.1):
            pass
    finally:
        proxy.stop()
    print(f"proxy stopped ({proxy.stats_sent} stats sent)", file=sys.stderr)
    return 0

