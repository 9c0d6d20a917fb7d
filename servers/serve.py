"""Run a backend: pick the server for the transport, bind, print where, stop cleanly.

| transport | default server | what it speaks |
|---|---|---|
| poll, longpoll, sse, ws | uvicorn (httptools) | HTTP/1.1 and WebSocket |
| h2 | hypercorn | HTTP/2: cleartext with prior knowledge, or TLS with ALPN |
| ws with ``--server websockets`` | bare websockets | WebSocket only, without an ASGI framework |
| tcp | asyncio | newline-delimited JSON (the floor) |

Every server serves the same core. Its rooms live in this process (the default), or in Redis
(``broker="redis://host:port"``), shared with every other process that names the same Redis.
With ``reuse_port`` several processes bind one port and the kernel spreads connections over
them (``SO_REUSEPORT``). On SIGTERM or Ctrl-C the core ends every subscription
first (streams finish, sockets close with 1001), then the server stops: clients see a clean
end and reconnect with their cursor.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp

from wirewise.registry import SERVERS, TRANSPORTS, ready_line
from wirewise.servers.app import build_app
from wirewise.servers.config import Settings
from wirewise.servers.context import Context, make_context
from wirewise.servers.core import ChatCore

Wrap = Callable[[ASGIApp], ASGIApp]
"""An ASGI layer around the application (see :func:`serve`)."""

BACKLOG = 2048


@dataclass(frozen=True)
class ServerPlan:
    transport: str
    server: str
    host: str = "127.0.0.1"
    port: int = 8000
    tls: bool = False
    certfile: Path | None = None
    keyfile: Path | None = None
    loop: str = "auto"
    broker: str = "memory"
    """``memory`` (rooms in this process) or a ``redis://`` URL (rooms shared through it)."""
    reuse_port: bool = False
    """Bind with ``SO_REUSEPORT``, so that several instances share the port."""


def default_server(transport: str) -> str:
    return SERVERS.get(transport, ("uvicorn",))[0]


def check_plan(plan: ServerPlan) -> None:
    """Refuse combinations that cannot serve the transport, with a sentence that says why."""
    if plan.transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {plan.transport!r}; one of {', '.join(TRANSPORTS)}")
    if plan.transport == "tcp" and plan.server != "asyncio":
        raise ValueError("the tcp floor runs on plain asyncio; --server does not apply")
    if plan.transport == "h2" and plan.server != "hypercorn":
        raise ValueError("HTTP/2 is served by hypercorn (uvicorn speaks HTTP/1.1 only)")
    if plan.server == "websockets" and plan.transport != "ws":
        raise ValueError("the bare websockets server serves only the ws transport")
    if plan.server not in SERVERS[plan.transport]:
        raise ValueError(
            f"{plan.transport} is served by {' or '.join(SERVERS[plan.transport])},"
            f" not {plan.server!r}"
        )
    if not 0 <= plan.port <= 65535:
        raise ValueError(f"--port takes 0 (a free one) to 65535, not {plan.port}")
    if (plan.tls or plan.certfile) and plan.transport != "h2":
        raise ValueError("TLS is offered for h2 only (browsers speak HTTP/2 only over TLS)")
    if bool(plan.certfile) != bool(plan.keyfile):
        raise ValueError("--certfile and --keyfile go together")
    if plan.broker != "memory" and not plan.broker.startswith(("redis://", "unix://")):
        raise ValueError(f"--broker takes memory or a redis:// URL, not {plan.broker!r}")


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, scheme: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop when available (all servers alike, so the comparison is fair), else asyncio."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop()


def serve(
    plan: ServerPlan,
    settings: Settings,
    announce: Callable[[str], None] | None = None,
    wrap: Wrap | None = None,
) -> None:
    """Serve until SIGTERM / SIGINT. ``announce`` gets the line that says where we listen;
    ``wrap`` puts an ASGI layer around the application (``wirewise demo``: its page, and a
    button that drops a page's connections), for the HTTP servers."""
    check_plan(plan)
    sock = bind(plan.host, plan.port, plan.reuse_port)
    certfile, keyfile = plan.certfile, plan.keyfile
    if plan.tls and certfile is None:
        from wirewise.servers.h2 import self_signed

        certfile, keyfile = self_signed()
    scheme = "tcp" if plan.transport == "tcp" else "https" if certfile else "http"
    url = url_of(sock, scheme)
    line = ready_line(plan.transport, url, plan.server, os.getpid())
    if certfile:
        line += f" certificate {certfile}"
    loop = new_loop(plan.loop)
    asyncio.set_event_loop(loop)
    broker = None
    if plan.broker != "memory":
        from wirewise.servers.redis_broker import RedisBroker

        broker = RedisBroker(plan.broker, settings.history)
    ctx = make_context(settings, broker)

    def ready() -> None:
        # Everything made so far (modules, the app) lives as long as the process: keep it out
        # of the garbage collector's full passes, which otherwise walk it all every few seconds
        # under load (25-60 ms pauses with ~60,000 objects, measured here) and stall deliveries.
        # What connections make later is walked too, so full passes are made rarer (Settings).
        gc.freeze()
        gc.set_threshold(settings.gc_threshold, *gc.get_threshold()[1:])
        (announce or _print)(line)

    try:
        if broker is not None:
            loop.run_until_complete(broker.start())  # the rooms loaded before we listen
        loop.run_until_complete(_serve(plan, ctx, sock, certfile, keyfile, ready, wrap))
        if broker is not None:
            loop.run_until_complete(broker.close())
    finally:
        loop.close()


def _print(line: str) -> None:
    print(line, flush=True)


async def _serve(
    plan: ServerPlan,
    ctx: Context,
    sock: socket.socket,
    certfile: Path | None,
    keyfile: Path | None,
    ready: Callable[[], None],
    wrap: Wrap | None = None,
) -> None:
    app = build_app(ctx) if wrap is None else wrap(build_app(ctx))
    if plan.server == "uvicorn":
        await _uvicorn(ctx, sock, ready, app)
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if plan.server == "hypercorn":
        await _hypercorn(ctx, sock, stop, certfile, keyfile, ready, app)
    elif plan.server == "websockets":
        from wirewise.servers import ws_websockets

        ready()
        await ws_websockets.run(ctx, sock, stop)
    else:
        from wirewise.servers import tcp

        ready()
        await tcp.run(ctx, sock, stop)


async def _uvicorn(
    ctx: Context, sock: socket.socket, ready: Callable[[], None], app: ASGIApp
) -> None:
    import uvicorn

    from wirewise.servers.limits import header_deadline
    from wirewise.servers.patches import apply_uvicorn

    apply_uvicorn()  # a 1009 close that survives the unread rest of its frame
    settings = ctx.settings

    class Server(uvicorn.Server):
        """Ends every stream before uvicorn waits for connections to finish."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            _end_streams(ctx.core)
            await asyncio.sleep(0)
            await super().shutdown(sockets)

        def handle_exit(self, sig: int, frame: object) -> None:
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            # uvicorn re-raises the signal after a graceful shutdown, so the process dies by
            # it (status -15, or a KeyboardInterrupt traceback); a clean stop exits with 0.
            self._captured_signals.clear()

    config = uvicorn.Config(
        app,
        http=header_deadline(settings.header_timeout),
        ws="websockets-sansio",
        ws_max_size=settings.max_frame,
        ws_per_message_deflate=settings.ws_compression,
        # No X-Forwarded-* rewriting (nothing here reads the client address or scheme): its
        # middleware would be one more frame (~0.3 KiB) held by every open stream and socket.
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        backlog=BACKLOG,
        loop="none",
    )
    await Server(config).serve(sockets=[sock])


async def _hypercorn(
    ctx: Context,
    sock: socket.socket,
    stop: asyncio.Event,
    certfile: Path | None,
    keyfile: Path | None,
    ready: Callable[[], None],
    app: ASGIApp,
) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve

    from wirewise.servers.h2 import hypercorn_config
    from wirewise.servers.patches import apply_hypercorn

    apply_hypercorn()  # without them an idle h2c client is held forever (servers/patches.py)
    config = hypercorn_config(os.dup(sock.fileno()), ctx.settings, certfile, keyfile)
    sock.close()

    async def trigger() -> None:
        await stop.wait()
        _end_streams(ctx.core)
        await asyncio.sleep(0.05)

    loop = asyncio.get_running_loop()
    loop.call_soon(ready)
    await hypercorn_serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]


def _end_streams(core: ChatCore) -> None:
    count = core.close_all()
    if count:
        print(f"wirewise: ended {count} subscriptions", file=sys.stderr, flush=True)
