"""``run_live.py --view HOST:PORT``: the browser viewer in the publishing process, watching
its own publisher (the same as ``python -m stream.view ENDPOINT --http HOST:PORT``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from stream.run.streams import UserError
from stream.transport.curve import CurveClientKeys, CurveServerKeys
from stream.transport.publish import MaskPublisher
from stream.viewer.cli import TOKEN_ENV, ViewError, check_exposure, parse_http
from stream.viewer.receive import Receivers
from stream.viewer.server import ServerThread, ViewerServer
from stream.viewer.tiles import Board


def check_view(address: str, connect: bool) -> tuple[str, int]:
    """--view's address -> (host, port); a user error for a bad or exposed one, or with
    --zmq-connect (then the masks are at the proxy, not here)."""
    if connect:
        raise UserError("--view watches this process's own publisher; with --zmq-connect "
                        "run python -m stream.view PROXY_BACKEND_URL instead")
    try:
        host, port = parse_http(address, flag="--view")
        check_exposure(host, os.environ.get(TOKEN_ENV), flag="--view")
    except ViewError as e:
        raise UserError(str(e)) from None
    return host, port


@contextlib.contextmanager
def open_viewer(address: str | None, publisher: MaskPublisher,
                curve: CurveServerKeys | CurveClientKeys | None) -> Iterator[str | None]:
    """Serve the viewer at ``address`` while the block runs; -> the page's address (None
    without ``address``). A bound publisher's CurveZMQ keys are used with a fresh client
    pair; a publisher that admits only listed clients is refused (run stream.view with a
    listed --client-key)."""
    if address is None:
        yield None
        return
    host, port = check_view(address, publisher.connect)
    client = None
    if isinstance(curve, CurveServerKeys):
        if curve.allowed_clients is not None:
            raise UserError("--view cannot join a publisher that admits only listed clients; "
                            "run python -m stream.view with --client-key of a listed client")
        client = CurveClientKeys.generate(curve.public)
    assert publisher.endpoint is not None
    board = Board([publisher.endpoint])
    receivers = Receivers(board, curve=client).start()
    server = ServerThread(ViewerServer(board, host, port, token=os.environ.get(TOKEN_ENV)))
    try:
        try:
            url = server.start()
        except OSError as e:
            raise UserError(f"--view {address}: cannot listen there: {e.strerror or e}; pick "
                            "another port") from None
        yield url
    finally:
        server.stop()
        receivers.stop()
