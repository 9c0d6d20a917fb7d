"""``wirewise demo``: one page that chats over every transport, in the browser's own APIs
(``fetch``, ``EventSource``, ``WebSocket``), and shows what each does on the wire and costs.

One process serves everything: the chat application every wirewise server runs (all the
transports' routes), the page (plain HTML, CSS and JavaScript from ``static/``, no build step),
and ``POST /demo/drop``, which makes the server drop the caller's held connections (its stream,
socket or pending long poll), so that a learner can watch each transport recover. Without
``--tls`` it is uvicorn (HTTP/1.1 and WebSocket); with ``--tls``, hypercorn with a generated
self-signed certificate, where the browser negotiates HTTP/2 (browsers speak it only over TLS):
the page's HTTP/2 transport, and the six-connection experiment's other half.

The page is served with a Content-Security-Policy that forbids inline script, and shows every
message as text. The application's Origin rules hold for it as for anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DemoApp", "run_demo"]

STATIC = Path(__file__).resolve().parent / "static"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/demo/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/demo/style.css": ("style.css", "text/css; charset=utf-8"),
}
HELD = re.compile(r"^/rooms/[^/]+/(stream|ws|events)$")
"""The requests a drop ends: streams, sockets and (long) polls."""
DEMO_SEND_RATE, DEMO_SEND_BURST = 2000.0, 2000
"""The burst experiment sends 1,000 messages at once: the default 50/s would refuse most."""


def csp(host: str) -> str:
    """No inline script or style, nothing from elsewhere: connections to this origin only
    (``ws:``/``wss:`` named, as 'self' does not cover them in every browser)."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        f" connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    )


def token_of(scope: Scope) -> str | None:
    """The request's token where the protocol looks for it: header, then query, then cookie."""
    headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return str(query["token"][0])
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "wirewise_token" and value:
            return value
    return None


@dataclass(eq=False)
class Held:
    """One held request: its task, whether it answered yet, whether we dropped it."""

    task: asyncio.Task[object]
    started: bool = False
    dropped: bool = False


@dataclass
class DemoApp:
    """The chat application, the page, and the drop button's endpoint."""

    app: ASGIApp
    held: dict[str, set[Held]] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path in FILES and scope["method"] in ("GET", "HEAD"):
            await self.page(scope, receive, send, *FILES[path])
        elif scope["type"] == "http" and path == "/favicon.ico":
            await Response(status_code=204)(scope, receive, send)
        elif scope["type"] == "http" and path == "/demo/drop" and scope["method"] == "POST":
            await self.drop(scope, receive, send)
        elif scope["type"] in ("http", "websocket") and HELD.match(path) and token_of(scope):
            await self.hold(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def page(self, scope: Scope, receive: Receive, send: Send, name: str, kind: str) -> None:
        host = dict(scope["headers"]).get(b"host", b"127.0.0.1").decode("latin-1")
        headers = {
            "content-security-policy": csp(host),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-store",
        }
        response = Response((STATIC / name).read_bytes(), media_type=kind, headers=headers)
        await response(scope, receive, send)

    async def drop(self, scope: Scope, receive: Receive, send: Send) -> None:
        """End every held request of the caller's token, as a server that drops them would."""
        token = token_of(scope)
        if token is None:
            body = {"type": "error", "code": "unauthorized", "detail": "no token"}
            await JSONResponse(body, 401)(scope, receive, send)
            return
        held = list(self.held.get(token, ()))
        for entry in held:
            entry.dropped = True
            entry.task.cancel()
        await JSONResponse({"dropped": len(held)})(scope, receive, send)

    async def hold(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = token_of(scope)
        assert token is not None
        task = asyncio.current_task()
        assert task is not None
        entry = Held(task)
        self.held.setdefault(token, set()).add(entry)

        async def noted(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                entry.started = True
            await send(message)

        try:
            await self.app(scope, receive, noted)
        except asyncio.CancelledError:
            if not entry.dropped:
                raise
            if hasattr(task, "uncancel"):  # 3.11: else the next await would raise again
                task.uncancel()
            await _abort(scope, entry, send)
        finally:
            mine = self.held.get(token)
            if mine is not None:
                mine.discard(entry)
                if not mine:
                    del self.held[token]


async def _abort(scope: Scope, entry: Held, send: Send) -> None:
    """Leave the connection the way a dropped one is left. HTTP/1.1: return with the response
    unfinished (a long poll's promised body never comes), which makes the server close the
    connection. HTTP/2 has no such thing for one stream through ASGI (the connection carries
    the others): the stream is ended, or a held poll answered 503, and the client goes again.
    WebSocket: close with 1012 (service restart), as a server going away does. A client resumes
    from its last id in every case."""
    with contextlib.suppress(Exception):  # the peer may be gone already
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1012 if entry.started else 1011})
        elif scope.get("http_version") == "2":
            if not entry.started:
                body = {
                    "type": "error",
                    "code": "unavailable",
                    "detail": "dropped by wirewise demo",
                }
                await JSONResponse(body, 503)(scope, _nothing, send)
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif not entry.started:
            await send(
                {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")]}
            )  # fmt: skip


async def _nothing() -> Message:
    """A response's ``receive`` that is never needed (the request was read already)."""
    return {"type": "http.disconnect"}


def run_demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    tls: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the demo until SIGTERM / SIGINT; ``announce`` gets the one line with its URL."""
    from wirewise.registry import parse_ready_line
    from wirewise.servers.config import Settings
    from wirewise.servers.serve import ServerPlan, serve

    plan = (
        ServerPlan("h2", "hypercorn", host, port, tls=True)
        if tls
        else ServerPlan("ws", "uvicorn", host, port)
    )

    def ready(line: str) -> None:
        found = parse_ready_line(line)
        url = found[1] if found else line
        protocols = "HTTP/2 over TLS (self-signed: accept it once)" if tls else "HTTP/1.1"
        announce(f"wirewise demo: open {url}/ ({protocols}; Ctrl-C stops it)")

    settings = Settings(send_rate=DEMO_SEND_RATE, send_burst=DEMO_SEND_BURST)
    serve(plan, settings, ready, wrap=DemoApp)
