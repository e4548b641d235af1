"""Where a socket binds: the publisher's default address, whether an address is reachable from
other machines (:func:`exposure_warning`), and the errors binding or connecting raises
(:class:`BindError` and its kinds). Shared by the publisher and ``stream.proxy``.
"""

from __future__ import annotations

DEFAULT_URL = "tcp://127.0.0.1:5555"
_ALL_INTERFACES = ("*", "0.0.0.0", "::", "[::]", "[*]", "")


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
