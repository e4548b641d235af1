"""Socket setup: the publisher's default address, whether an address is reachable from other
machines (:func:`exposure_warning`, shared with the proxy), the errors binding or connecting
raises (:class:`BindError` and its kinds), and the publisher's XPUB socket configured and bound
(:func:`open_xpub`: high-water mark, :class:`DropPolicy`, CurveZMQ, heartbeats), and what
the publisher does on it: non-blocking counted sends, subscription and connection events.
"""

from __future__ import annotations

import enum
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from .curve import CurveClientKeys, CurveServerKeys, apply_client, apply_server

DEFAULT_URL = "tcp://127.0.0.1:5555"
_ALL_INTERFACES = ("*", "0.0.0.0", "::", "[::]", "[*]", "")


class DropPolicy(enum.Enum):
    """What happens to a mask when a subscriber's queue is full (both never block)."""

    COUNTED = "counted"
    """XPUB_NODROP: the mask goes to no subscriber and `dropped_at_socket` counts it. The
    slowest subscriber sets the pace for all of them (within their high-water marks)."""
    PER_SUBSCRIBER = "per_subscriber"
    """Plain PUB behaviour: only the slow subscriber loses the mask; the publisher cannot see
    it, so `dropped_at_socket` stays 0 and only the subscriber's seq gaps show the loss."""


class BindError(OSError):
    """The publisher could not bind its URL."""


class AddressInUseError(BindError):
    """Another socket already holds the URL."""


class ConnectError(BindError):
    """The publisher could not connect to its URL (connect mode: a malformed address)."""


def exposure_warning(url: str, curve: bool = False, allowlist: bool = False) -> str | None:
    """A warning when `url` is reachable from other machines, None for loopback / ipc / inproc.

    It says whether CurveZMQ is on (`curve`) and restricted to allowed client keys
    (`allowlist`)."""
    if not url.startswith("tcp://"):
        return None
    host = url[len("tcp://"):].rpartition(":")[0]
    bare = host.strip("[]")
    if host == "localhost" or bare.startswith("127.") or bare == "::1":
        return None
    if not curve:
        security = "; masks go unencrypted to anyone (set live.publish.curve keys)"
    elif allowlist:
        security = "; CurveZMQ on: encrypted, only allowed client keys receive masks"
    else:
        security = ("; CurveZMQ on: encrypted, but any client with the server's public key "
                    "may subscribe (set live.publish.curve.allowed_clients_dir)")
    if host in _ALL_INTERFACES:
        return f"{url} binds ALL network interfaces: other machines can subscribe{security}"
    return f"{url} binds {host}, which other machines can reach{security}"


def open_xpub(context: zmq.Context[Any], url: str, *, connect: bool, sndhwm: int, nodrop: bool,
              curve: CurveServerKeys | CurveClientKeys | None, heartbeat_s: float | None,
              heartbeat_timeout_s: float) -> zmq.Socket[bytes]:
    """Create and configure an XPUB socket, then bind it to `url` (with `connect`: connect).

    Raises:
        ConnectError, AddressInUseError, BindError: one line for the user; the socket is closed.
    """
    sock: zmq.Socket[bytes] = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.XPUB_NODROP, int(nodrop))
    if isinstance(curve, CurveServerKeys):
        apply_server(sock, curve)
    elif isinstance(curve, CurveClientKeys):
        apply_client(sock, curve)
    if heartbeat_s is not None:
        sock.setsockopt(zmq.HEARTBEAT_IVL, round(heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, round(heartbeat_timeout_s * 1000))
    if "[" in url or "::" in url:
        sock.setsockopt(zmq.IPV6, 1)
    try:
        (sock.connect if connect else sock.bind)(url)
    except zmq.ZMQError as e:
        sock.close(linger=0)
        if connect:
            raise ConnectError(e.errno, f"cannot connect to {url}: {e.strerror}") from None
        if e.errno == zmq.EADDRINUSE:
            raise AddressInUseError(
                e.errno, f"{url} is already in use: pick another --zmq port") from None
        raise BindError(e.errno, f"cannot bind {url}: {e.strerror}") from None
    return sock


def drain_subscriptions(sock: zmq.Socket[bytes], subscriptions: set[bytes]) -> None:
    """Read an XPUB's pending subscription messages (b"\\x01prefix" subscribes, b"\\x00prefix"
    unsubscribes) into `subscriptions`, without waiting."""
    while True:
        try:
            msg = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        if msg[:1] == b"\x01":
            subscriptions.add(msg[1:])
        elif msg[:1] == b"\x00":
            subscriptions.discard(msg[1:])


def drain_monitor(monitor: zmq.Socket[bytes]) -> tuple[int, int]:
    """Read a socket monitor's pending events, without waiting -> (connections made: accepted
    or connected, connections lost: heartbeat timeouts, closed or killed peers)."""
    made = lost = 0
    while True:
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
        except zmq.Again:
            return made, lost
        if event["event"] in (zmq.EVENT_ACCEPTED, zmq.EVENT_CONNECTED):
            made += 1
        elif event["event"] == zmq.EVENT_DISCONNECTED:
            lost += 1


def send_counted(sock: zmq.Socket[bytes], parts: list[bytes], counts: dict[str, int], sent: str,
                 dropped: str) -> bool:
    """Send `parts` without blocking and count it in `counts` under `sent`, or under `dropped`
    when the socket would not take it; -> whether it was sent."""
    try:
        sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        counts[dropped] += 1
        return False
    counts[sent] += 1
    return True
