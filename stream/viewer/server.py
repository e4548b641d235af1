"""The viewer's web side (aiohttp): the page, a WebSocket that pushes pictures and figures, and
the figures as JSON.

Routes:

* ``GET /``, ``GET /view.js``: the page (``static/``; plain HTML and JavaScript).
* ``GET /ws``: WebSocket. The server sends a text message ``{"type": "streams", "streams":
  [figures, ...]}`` every ``figures_s`` and, whenever a stream has a new picture, a binary
  message: a 4-byte big-endian length, that many bytes of UTF-8 JSON (``key``, ``seq``,
  ``frame_index``, ``width``, ``height``, ``has_frame``), then the JPEG. A client that reads
  slowly gets only each stream's newest picture.
* ``GET /api/streams``: the figures, ``{"streams": [...]}``.

With a token, ``/ws`` and ``/api/streams`` want it, as ``?token=...`` (the page passes its own
on) or ``Authorization: Bearer ...``; the page and its script hold no data and need none. A
WebSocket whose ``Origin`` is another site is refused (a page elsewhere cannot read the
streams through the user's browser).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from stream.viewer.tiles import Board

logger = logging.getLogger(__name__)

HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",          # the token may be in the address
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; connect-src 'self'; "
                                "img-src 'self' blob: data:; style-src 'unsafe-inline'"),
}
STATIC = {"/": ("index.html", "text/html"), "/view.js": ("view.js", "text/javascript")}


class ViewerServer:
    """Serves one board over HTTP; ``start`` binds, ``stop`` closes every connection.

    Args:
        board: the streams to show.
        host, port: where to listen (port 0: any free one; ``url`` says which).
        token: wanted on every request (None: none asked; the caller keeps that to loopback).
        figures_s: how often each client gets the figures.
    """

    def __init__(self, board: Board, host: str, port: int, token: str | None = None,
                 figures_s: float = 0.5) -> None:
        self.board, self.host, self.port, self.token = board, host, port, token
        self.figures_s = figures_s
        self.url: str | None = None
        self._files = {path: (resources.files("stream.viewer").joinpath("static", name)
                              .read_bytes(), kind) for path, (name, kind) in STATIC.items()}
        self._wakes: set[asyncio.Event] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        board.listeners.append(self._wake_from_thread)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._check_token])
        for path in STATIC:
            app.router.add_get(path, self._static)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/streams", self._streams)
        return app

    async def start(self) -> str:
        """Listen; -> the page's address. Raises OSError when the address cannot be bound."""
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=1.0)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        return self.url

    async def stop(self) -> None:
        """Close every WebSocket (going away: the page retries) and stop listening."""
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- requests -----------------------------------------------------------------------------
    @web.middleware
    async def _check_token(self, request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
        if self.token is not None and request.path not in STATIC:   # the page holds no data
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[len("Bearer "):]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.Response(status=401, text="open this address with ?token=TOKEN\n",
                                    headers=HEADERS)
        return await handler(request)

    async def _static(self, request: web.Request) -> web.Response:
        body, kind = self._files[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=HEADERS)

    async def _streams(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": self.board.figures()}, headers=HEADERS)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text=f"WebSocket from origin {origin} refused\n")
        ws = web.WebSocketResponse(heartbeat=10.0, timeout=1.0, compress=False)  # JPEGs
        await ws.prepare(request)
        wake = asyncio.Event()
        self._wakes.add(wake)
        self._sockets.add(ws)
        sender = asyncio.create_task(self._send_loop(ws, wake))
        try:
            async for msg in ws:                  # the client says nothing; this sees it go
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._wakes.discard(wake)
            self._sockets.discard(ws)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        return ws

    async def _send_loop(self, ws: web.WebSocketResponse, wake: asyncio.Event) -> None:
        """Each new picture as it is drawn, the figures every ``figures_s``, until closed."""
        seen: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        figures_at = loop.time()
        while not ws.closed:
            wake.clear()
            for key, version, info, jpeg in self.board.pictures(seen):
                head = json.dumps({"key": key, **info}).encode()
                await ws.send_bytes(len(head).to_bytes(4, "big") + head + jpeg)
                seen[key] = version
            if loop.time() >= figures_at:
                await ws.send_str(json.dumps({"type": "streams",
                                              "streams": self.board.figures()}))
                figures_at = loop.time() + self.figures_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, figures_at - loop.time()))

    # -- from the composer thread ---------------------------------------------------------------
    def _wake_from_thread(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):          # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for wake in self._wakes:
            wake.set()


class ServerThread:
    """A :class:`ViewerServer` on its own event loop thread (``run_live.py --view``)."""

    def __init__(self, server: ViewerServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="view-http",
                                        daemon=True)

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the thread and listen; -> the page's address (OSError: cannot bind)."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.server.start(), self._loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 3.0) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop)
            with contextlib.suppress(Exception):
                future.result(timeout_s)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()
