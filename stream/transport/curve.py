"""CurveZMQ key holders and the ZAP allow-list, shared by the publisher, the subscriber and the
proxy (`stream.keys` reads them from files).

A socket is either a CurveZMQ *server* (it holds the secret of the address others connect to:
the publisher's bound XPUB, both sides of `stream.proxy`) or a *client* (a subscriber, or a
publisher that connects into a proxy). `apply_server` / `apply_client` set the socket options;
`start_zap` runs one `zmq.auth.thread.ThreadAuthenticator` per context that admits, per ZAP
domain, only the listed client public keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurveServerKeys:
    """CurveZMQ server key pair (z85 bytes, `zmq.curve_keypair()`); clients need `public`.

    Encrypts the stream. `allowed_clients` (z85 public keys) turns on authentication: a ZAP
    handler admits only those clients; a client with another key, or without CurveZMQ,
    receives nothing. None: any client holding `public` may connect.
    """

    public: bytes
    secret: bytes
    allowed_clients: frozenset[bytes] | None = None


@dataclass(frozen=True)
class CurveClientKeys:
    """CurveZMQ keys of a client: the server's public key and this client's pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def generate(cls, server_public: bytes) -> CurveClientKeys:
        """A fresh client key pair for the server `server_public`."""
        public, secret = zmq.curve_keypair()
        return cls(server_public, public, secret)


class AllowList:
    """ZAP credentials provider: admits the listed z85 client keys, counts the others.

    `keys` None admits every client (a ZAP handler refuses domains it has no provider for, so
    a CurveZMQ socket without an allow-list still needs one when another socket of its context
    has a list). `who` names the clients in the warning ("subscriber", "publisher")."""

    def __init__(self, keys: frozenset[bytes] | None, who: str = "subscriber") -> None:
        self.keys, self.who, self.denied = keys, who, 0

    def callback(self, domain: str, key: bytes) -> bool:
        if self.keys is None or key in self.keys:
            return True
        self.denied += 1
        if self.denied <= 3 or self.denied % 100 == 0:
            logger.warning("CurveZMQ: refused a %s with a key not in the allowed clients "
                           "(%d refused so far)", self.who, self.denied)
        return False


def apply_server(sock: zmq.Socket[Any], keys: CurveServerKeys, zap_domain: str | None = None
                 ) -> None:
    """Make `sock` a CurveZMQ server (before bind); `zap_domain` picks its allow-list."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    if zap_domain is not None:
        sock.setsockopt(zmq.ZAP_DOMAIN, zap_domain.encode())


def apply_client(sock: zmq.Socket[Any], keys: CurveClientKeys) -> None:
    """Make `sock` a CurveZMQ client of the server `keys.server_public` (before connect)."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def start_zap(context: zmq.Context[Any], lists: Mapping[str, AllowList]) -> ThreadAuthenticator:
    """Start the context's ZAP handler: ZAP domain -> the allow-list for that domain ("*":
    every domain). Stop it with `.stop()` before terminating the context."""
    auth = ThreadAuthenticator(context, log=logging.getLogger(__name__ + ".zap"))
    auth.start()
    for domain, allow in lists.items():
        auth.configure_curve_callback(domain, credentials_provider=allow)
    return auth
