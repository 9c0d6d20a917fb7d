"""What every HTTP transport shares: identity, origins, bodies, errors, and the send endpoint.

Transports call these helpers and then talk to the core; none of them parses tokens, origins
or JSON its own way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from wirewise import protocol
from wirewise.protocol import Error, ProtocolError, SendMessage
from wirewise.servers.context import Context

COOKIE = "wirewise_token"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DRAIN_FACTOR = 16
"""An over-long body is read and dropped up to this many times the cap before answering:
hypercorn's HTTP/2 kills the whole connection if DATA frames arrive after the answer."""

STATUS = {
    "bad_json": 400,
    "bad_message": 400,
    "unknown_type": 400,
    "message_too_large": 413,
    "bad_room": 400,
    "bad_cursor": 400,
    "unauthorized": 401,
    "forbidden_origin": 403,
    "rate_limited": 429,
    "too_many_connections": 503,
    "slow_consumer": 409,
    "unavailable": 503,
}


def json_response(
    body: str | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return Response(text, status, headers=headers, media_type="application/json")


def error_response(exc: ProtocolError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if exc.code == "rate_limited":
        headers.setdefault("retry-after", "1")
    return json_response(protocol.encode(exc.to_message()), STATUS[exc.code], headers)


def error_body(code: str, detail: str) -> bytes:
    return protocol.encode(Error(code, detail)).encode()


# -- request parts -------------------------------------------------------------------------


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value, "latin-1")
    return None


def query(scope: Scope) -> dict[str, str]:
    """First value of each query parameter (bad percent-encoding is kept, not fatal)."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def token_of(scope: Scope) -> str | None:
    """The explicit one wins: Authorization header, then ``token`` query, then the cookie."""
    auth = header(scope, b"authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    from_query = query(scope).get("token")
    if from_query is not None:
        return from_query
    cookie = header(scope, b"cookie")
    if cookie:
        try:
            jar = SimpleCookie(cookie)
        except CookieError:
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


def authenticate(ctx: Context, scope: Scope) -> str:
    """The user behind the request's token; ``unauthorized`` otherwise."""
    user = ctx.tokens.verify(token_of(scope))
    if user is None:
        raise ProtocolError("unauthorized", "a valid token is required (POST /login)")
    return user


def origin_allowed(ctx: Context, scope: Scope) -> bool:
    """No Origin (not a browser), the server's own, localhost, or an allowed one."""
    origin = header(scope, b"origin")
    if origin is None:
        return True
    if origin in ctx.settings.allow_origins:
        return True
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
    except ValueError:
        return False
    if hostname in LOCAL_HOSTS:
        return True
    host = header(scope, b"host")
    return host is not None and parts.netloc == host


def cors_headers(ctx: Context, scope: Scope) -> dict[str, str]:
    origin = header(scope, b"origin")
    if origin is None or not origin_allowed(ctx, scope):
        return {}
    return {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "retry-after",
        "vary": "Origin",
    }


def check_origin(ctx: Context, scope: Scope) -> None:
    if not origin_allowed(ctx, scope):
        origin = (header(scope, b"origin") or "")[:100]
        raise ProtocolError("forbidden_origin", f"origin {origin!r} is not allowed")


def room_of(scope: Scope) -> str:
    room: str = scope["path_params"]["room"]
    if not protocol.valid_room(room):
        raise ProtocolError("bad_room", "room names match [A-Za-z0-9_-]{1,64}")
    return room


def cursor_of(scope: Scope) -> int | None:
    """``Last-Event-ID`` wins over ``after`` (a browser reconnects to its original URL)."""
    last = header(scope, b"last-event-id")
    if last is not None:
        return protocol.parse_cursor(last)
    return protocol.parse_cursor(query(scope).get("after"))


class Disconnected(Exception):
    """The client went away while we were reading its body."""


async def read_body(receive: Receive, cap: int) -> bytes:
    """The request body, or ``message_too_large`` once it passes ``cap`` (see DRAIN_FACTOR)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        body = message.get("body", b"")
        size += len(body)
        if size <= cap:
            chunks.append(body)
        else:
            chunks.clear()
            if size > cap * DRAIN_FACTOR:
                break
        if not message.get("more_body", False):
            break
    if size > cap:
        raise ProtocolError("message_too_large", f"the request body is over {cap} bytes")
    return b"".join(chunks)


# -- endpoints shared by the HTTP transports --------------------------------------------------


async def send_endpoint(ctx: Context, request: Request) -> Response:
    """``POST /rooms/{room}/messages``: 201 with the new id, 200 with the same id on a retry."""
    scope = request.scope
    cors = cors_headers(ctx, scope)
    try:
        body = await read_body(request.receive, ctx.settings.max_body)
        check_origin(ctx, scope)
        user = authenticate(ctx, scope)
        room = room_of(scope)
        message = protocol.decode_client(body, max_text=ctx.settings.max_text)
        if not isinstance(message, SendMessage):
            raise ProtocolError("unknown_type", f"{message.type!r} is not sent over HTTP")
        msg_id, created = await ctx.core.send(user, room, message)
    except ProtocolError as exc:
        return error_response(exc, cors)
    except Disconnected:
        return Response(status_code=400)
    return json_response(protocol.encode_id(msg_id), 201 if created else 200, cors)


async def login_endpoint(ctx: Context, request: Request) -> Response:
    """``POST /login`` (and ``GET /login?user=`` for servers that take no POST)."""
    scope = request.scope
    cors = cors_headers(ctx, scope)
    try:
        if request.method == "POST":
            body = await read_body(request.receive, ctx.settings.max_body)
            check_origin(ctx, scope)
            login = protocol.decode_login(body)
        else:
            check_origin(ctx, scope)
            login = protocol.LoginRequest(user=query(scope).get("user"))  # type: ignore[arg-type]
    except ProtocolError as exc:
        return error_response(exc, cors)
    except Disconnected:
        return Response(status_code=400)
    token = ctx.tokens.issue(login.user)
    response = json_response(protocol.encode_token(token), 200, cors)
    response.set_cookie(
        COOKIE, token, max_age=int(ctx.settings.token_max_age), httponly=True, samesite="lax"
    )
    return response


async def preflight_endpoint(ctx: Context, request: Request) -> Response:
    """CORS preflight for allowed origins; others get no CORS headers (the browser refuses)."""
    headers = cors_headers(ctx, request.scope)
    if headers:
        headers["access-control-allow-methods"] = "GET, POST, OPTIONS"
        headers["access-control-allow-headers"] = "authorization, content-type, last-event-id"
        headers["access-control-max-age"] = "600"
    return Response(status_code=204, headers=headers)


def format_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
