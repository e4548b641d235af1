"""CurveZMQ key files: create them, and read them for the publisher, the proxy and clients.

Files are pyzmq's certificates (``zmq.auth.create_certificates``): ``NAME.key`` holds the
public key (z85, 40 characters), ``NAME.key_secret`` the public and the secret key.

    python -m stream.keys KEYDIR --client alice --client bob [--publisher cam1]

writes, for the server (the publisher that binds, or ``stream.proxy``):

- ``KEYDIR/server.key_secret``: its secret (``live.publish.curve.server_secret_file``);
- ``KEYDIR/server.key``: its public key, which every client needs;
- ``KEYDIR/clients/alice.key``, ...: the allow-list of subscribers
  (``live.publish.curve.allowed_clients_dir``), public keys only;
- ``KEYDIR/publishers/cam1.key``, ...: the proxy's allow-list of publishers, public keys only;

and one folder per client to hand over whole, never read by the server:
``KEYDIR/client-alice/`` (``alice.key_secret``, ``alice.key`` and a copy of ``server.key``:
``python -m stream.subscribe URL --server-key client-alice/server.key --client-key
client-alice/alice.key_secret``), ``KEYDIR/publisher-cam1/`` likewise. Secret files are
written mode 0600; nothing is ever overwritten.

Errors (:class:`KeyFileError`, a :class:`~pcmanet.config.ConfigError`) are one line naming the
file and the fix.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq
import zmq.auth

from pcmanet.cli import Parser
from pcmanet.config import ConfigError
from stream.transport.curve import CurveClientKeys, CurveServerKeys

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


def create_keys(folder: str | Path, clients: Sequence[str] = (), server: str = "server",
                publishers: Sequence[str] = ()) -> list[Path]:
    """Write ``server.key(_secret)`` into ``folder``; for each client NAME its pair into
    ``client-NAME/`` (with a copy of ``server.key``) and its public key alone into the
    allow-list ``clients/`` (publishers: ``publisher-NAME/`` and ``publishers/``). Refuses to
    overwrite anything. Returns the files written."""
    folder = Path(folder)
    kinds = [("client", name) for name in clients] + [("publisher", n) for n in publishers]
    plan = [folder / f"{server}{suffix}" for suffix in (".key", ".key_secret")]
    for kind, name in kinds:
        own = folder / f"{kind}-{name}"
        plan += [folder / f"{kind}s" / f"{name}.key", own / f"{name}.key",
                 own / f"{name}.key_secret", own / f"{server}.key"]
    for name in [server, *(n for _, n in kinds)]:
        if not name or "/" in name or name.startswith("."):
            raise KeyFileError(f"key name {name!r}: use a plain file name")
    names = [server, *clients, *publishers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise KeyFileError(f"key name {twice[0]!r} is given twice: key names must differ from "
                           "each other and from the server's")
    if folder.exists() and not folder.is_dir():
        raise KeyFileError(f"{folder} exists and is not a folder: give a new or existing folder")
    for path in plan:
        if path.exists():
            raise KeyFileError(f"{path} exists: keys are never overwritten; pick another "
                               "folder or name")
    written = _create_pair(folder, server)
    for kind, name in kinds:
        own, allow = folder / f"{kind}-{name}", folder / f"{kind}s"
        written += _create_pair(own, name)
        allow.mkdir(parents=True, exist_ok=True)
        for src, dst in ((own / f"{name}.key", allow / f"{name}.key"),
                         (folder / f"{server}.key", own / f"{server}.key")):
            shutil.copyfile(src, dst)                           # public keys only
            written.append(dst)
    return written


def _create_pair(where: Path, name: str) -> list[Path]:
    """``where/NAME.key`` and ``where/NAME.key_secret`` (mode 0600)."""
    where.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(where, name)
    os.chmod(secret_file, 0o600)
    return [Path(public_file), Path(secret_file)]


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m stream.keys",
                                description="Create CurveZMQ keys for the publisher and clients.")
    p.add_argument("folder", help="where to write server.key(_secret), the allow-lists clients/ "
                                  "and publishers/, and one client-NAME/ folder per client")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="a subscriber: client-NAME/ (its keys) and clients/NAME.key (repeatable)")
    p.add_argument("--publisher", action="append", default=[], metavar="NAME",
                   help="a publisher that connects into stream.proxy: publisher-NAME/ and "
                        "publishers/NAME.key (repeatable)")
    p.add_argument("--server", default="server", metavar="NAME", help="server key name")
    args = p.parse_args(argv)
    if not zmq.has("curve"):
        print("error: this libzmq has no CurveZMQ support", file=sys.stderr)
        return 2
    try:
        for path in create_keys(args.folder, args.client, args.server, args.publisher):
            print(path)
    except (KeyFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = Path(args.folder)
    print(f"publisher: live.publish.curve: {{server_secret_file: "
          f"{folder / (args.server + '.key_secret')}"
          + (f", allowed_clients_dir: {folder / 'clients'}}}" if args.client else "}"),
          file=sys.stderr)
    for name in args.client:
        print(f"give {folder / ('client-' + name)}/ to subscriber {name} (keep its "
              f"{name}.key_secret off the server)", file=sys.stderr)
    return 0

