"""CurveZMQ key files: create them, and read them for the publisher and its subscribers.

Files are pyzmq's certificates (``zmq.auth.create_certificates``): ``NAME.key`` holds the
public key (z85, 40 characters), ``NAME.key_secret`` the public and the secret key.

    python -m stream.keys KEYDIR --client alice --client bob

writes ``KEYDIR/server.key`` (the publisher's public key: give it to subscribers),
``KEYDIR/server.key_secret`` (the publisher's secret: ``live.publish.curve.server_secret_file``),
and ``KEYDIR/clients/alice.key`` / ``alice.key_secret`` ... (``KEYDIR/clients`` is the
publisher's ``allowed_clients_dir``: only its ``*.key`` files are read; hand each
``.key_secret`` to its subscriber, ``python -m stream.subscribe URL --server-key
KEYDIR/server.key --client-key alice.key_secret``). Secret files are written mode 0600.

Errors (:class:`KeyFileError`, a :class:`~pcmanet.config.ConfigError`) are one line naming the
file and the fix.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq
import zmq.auth

from pcmanet.config import ConfigError
from stream.publish import CurveServerKeys
from stream.subscribe import CurveClientKeys

Z85_KEY_LEN = 40  # a 32-byte Curve25519 key in z85


class KeyFileError(ConfigError):
    """A key file or folder that cannot be used; the message names it."""


def _read(path: str | Path, want_secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a certificate file, checked."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} not found (create keys with python -m stream.keys "
                           "DIR)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"key file {path} is not a CurveZMQ certificate: {e}") from None
    if want_secret and secret is None:
        raise KeyFileError(f"key file {path} holds no secret key: pass the .key_secret file")
    for key in (public, secret):
        if key is not None and len(key) != Z85_KEY_LEN:
            raise KeyFileError(f"key file {path}: a key is {len(key)} characters, a z85 Curve "
                               f"key has {Z85_KEY_LEN}")
    return public, secret


def read_public_key(path: str | Path) -> bytes:
    """The z85 public key of a ``.key`` (or ``.key_secret``) file."""
    return _read(path, want_secret=False)[0]


def read_key_pair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of a ``.key_secret`` file."""
    public, secret = _read(path, want_secret=True)
    assert secret is not None
    return public, secret


def read_allowed_clients(folder: str | Path) -> frozenset[bytes]:
    """Public keys of every ``*.key`` file in ``folder`` (at least one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KeyFileError(f"allowed clients folder {folder} not found")
    keys = frozenset(read_public_key(p) for p in sorted(folder.glob("*.key")))
    if not keys:
        raise KeyFileError(f"allowed clients folder {folder} holds no *.key files (create "
                           "them with python -m stream.keys DIR --client NAME)")
    return keys


def server_keys(secret_file: str | Path, allowed_clients_dir: str | Path | None = None
                ) -> CurveServerKeys:
    """The publisher's keys; ``allowed_clients_dir`` None: any client that knows the server's
    public key may subscribe (the stream is still encrypted)."""
    public, secret = read_key_pair(secret_file)
    allowed = None if allowed_clients_dir is None else read_allowed_clients(allowed_clients_dir)
    return CurveServerKeys(public, secret, allowed_clients=allowed)


def client_keys(server_public_file: str | Path, client_secret_file: str | Path | None = None
                ) -> CurveClientKeys:
    """A subscriber's keys; no client file: a fresh pair (accepted only by a publisher without
    an allowed-clients list)."""
    server_public = read_public_key(server_public_file)
    if client_secret_file is None:
        return CurveClientKeys.generate(server_public)
    public, secret = read_key_pair(client_secret_file)
    return CurveClientKeys(server_public, public, secret)


def create_keys(folder: str | Path, clients: Sequence[str] = (), server: str = "server"
                ) -> list[Path]:
    """Write ``server.key(_secret)`` into ``folder`` and ``clients/NAME.key(_secret)``; refuses
    to overwrite. Returns the files written."""
    folder = Path(folder)
    names = [(folder, server)] + [(folder / "clients", c) for c in clients]
    for where, name in names:
        if not name or "/" in name or name.startswith("."):
            raise KeyFileError(f"key name {name!r}: use a plain file name")
        for suffix in (".key", ".key_secret"):
            if (where / f"{name}{suffix}").exists():
                raise KeyFileError(f"{where / (name + suffix)} exists: keys are never "
                                   "overwritten; pick another folder or name")
    written = []
    for where, name in names:
        where.mkdir(parents=True, exist_ok=True)
        public_file, secret_file = zmq.auth.create_certificates(where, name)
        os.chmod(secret_file, 0o600)
        written += [Path(public_file), Path(secret_file)]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.keys",
                                description="Create CurveZMQ keys for the publisher and clients.")
    p.add_argument("folder", help="where to write server.key, server.key_secret, clients/")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="also create clients/NAME.key(_secret) (repeatable)")
    p.add_argument("--server", default="server", metavar="NAME", help="server key name")
    args = p.parse_args(argv)
    if not zmq.has("curve"):
        print("error: this libzmq has no CurveZMQ support", file=sys.stderr)
        return 2
    try:
        for path in create_keys(args.folder, args.client, args.server):
            print(path)
    except (KeyFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = Path(args.folder)
    print(f"publisher: live.publish.curve: {{server_secret_file: "
          f"{folder / (args.server + '.key_secret')}"
          + (f", allowed_clients_dir: {folder / 'clients'}}}" if args.client else "}"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
