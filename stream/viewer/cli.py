"""``python -m stream.view URL [URL ...] --http 127.0.0.1:8080``: every stream the publishers
send, live in a browser (the CLI; the parts: :mod:`stream.viewer.tiles`, ``receive``,
``server``).

    python -m stream.view tcp://127.0.0.1:5555                      # then open the address
    python -m stream.view tcp://10.0.0.7:5557 --server-key keys/server.key \\
        --client-key keys/alice.key_secret                           # a proxy, CurveZMQ
    python -m stream.view tcp://127.0.0.1:5555 --http 0.0.0.0:8080 --token SECRET

Binds the web page to loopback unless told otherwise; any other address needs a token (or
``PCMANET_VIEW_TOKEN``), given as ``?token=`` in the page's address. Masks are drawn over
the frames of the ``frame/<stream>`` topic (``run_live.py --frames``), or on black when a
publisher sends none. Bad input is one ``error:`` line, exit 2; Ctrl-C / SIGTERM exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence

from stream.transport.curve import CurveClientKeys
from stream.viewer.receive import Receivers
from stream.viewer.server import ViewerServer
from stream.viewer.tiles import Board

TOKEN_ENV = "PCMANET_VIEW_TOKEN"
DEFAULT_HTTP = "127.0.0.1:8080"


class ViewError(ValueError):
    """Bad input, one line for the user."""


def parse_http(text: str, flag: str = "--http") -> tuple[str, int]:
    """"127.0.0.1:8080", "[::1]:8080", "localhost:0" -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ViewError(f"{flag} {text!r}: expected HOST:PORT, e.g. {DEFAULT_HTTP} (port 0: "
                        "any free one)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                              # a name: it may resolve to anything


def check_exposure(host: str, token: str | None, flag: str = "--http") -> None:
    """A page other machines could reach must ask for a token."""
    if token is not None and not token:
        raise ViewError(f"the token is empty: give a secret with --token or {TOKEN_ENV}")
    if not is_loopback(host) and token is None:
        how = "--token SECRET (or set " + TOKEN_ENV + ")" if flag == "--http" else TOKEN_ENV
        raise ViewError(f"{flag} {host} is reachable from other machines: set a token with "
                        f"{how}, or bind 127.0.0.1")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stream.view", description=__doc__.split("\n")[0])
    p.add_argument("urls", nargs="+", metavar="URL",
                   help="publisher or stream.proxy backend address, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--http", default=DEFAULT_HTTP, metavar="HOST:PORT",
                   help=f"where the page is served (default {DEFAULT_HTTP}; port 0: any free)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"secret the page's address must carry as ?token= (default: "
                        f"${TOKEN_ENV}); required for a non-loopback --http")
    p.add_argument("--server-key", metavar="FILE",
                   help="CurveZMQ: the publisher's (or proxy's) public key file (server.key)")
    p.add_argument("--client-key", metavar="FILE",
                   help="CurveZMQ: this client's NAME.key_secret (one the publisher allows); "
                        "without it a fresh pair is used")
    p.add_argument("--max-fps", type=float, default=15.0,
                   help="most pictures drawn per stream per second (0: all; default 15)")
    p.add_argument("--stale-s", type=float, default=3.0,
                   help="a stream silent this long shows as reconnecting (default 3)")
    p.add_argument("--fail-s", type=float, default=60.0,
                   help="a stream silent this long shows as failed (default 60)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def curve_from_args(args: argparse.Namespace) -> CurveClientKeys | None:
    if args.client_key and not args.server_key:
        raise ViewError("--client-key needs --server-key (the publisher's server.key)")
    if not args.server_key:
        return None
    from stream.transport.keys import KeyFileError, client_keys  # imports pcmanet (torch)

    try:
        return client_keys(args.server_key, args.client_key)
    except KeyFileError as e:
        raise ViewError(str(e)) from None


def check_numbers(args: argparse.Namespace) -> None:
    if not args.max_fps >= 0:
        raise ViewError(f"--max-fps {args.max_fps:g}: must be >= 0 (0: every picture)")
    if not args.stale_s > 0:
        raise ViewError(f"--stale-s {args.stale_s:g}: must be > 0 seconds")
    if not args.fail_s > args.stale_s:
        raise ViewError(f"--fail-s {args.fail_s:g}: must be more than --stale-s "
                        f"({args.stale_s:g})")


async def serve(server: ViewerServer, sources: Sequence[str]) -> None:
    """Listen until SIGINT / SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await server.start()
    token = "" if server.token is None else " (open it with ?token=YOUR_TOKEN)"
    print(f"viewer on {url} watching {' '.join(sources)}{token}; Ctrl-C stops", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_http(args.http)
        check_exposure(host, args.token)
        check_numbers(args)
        curve = curve_from_args(args)
        board = Board(list(args.urls), stale_s=args.stale_s, fail_s=args.fail_s)
        receivers = Receivers(board, curve=curve, max_fps=args.max_fps)
    except ValueError as e:                 # ViewError; MaskSubscriber: a malformed URL
        print(f"error: {e}", file=sys.stderr)
        return 2
    server = ViewerServer(board, host, port, token=args.token)
    receivers.start()
    try:
        asyncio.run(serve(server, args.urls))
    except OSError as e:
        print(f"error: --http {args.http}: cannot listen there: {e.strerror or e}; pick "
              "another port", file=sys.stderr)
        return 2
    finally:
        receivers.stop()
    return 0
