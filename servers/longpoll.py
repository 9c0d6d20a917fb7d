"""Long polling: ``GET /rooms/{room}/events?after=N&wait=S`` is held until an event exists.

Near-push latency, but a request per delivery and a reconnect between deliveries: events that
arrive while no poll is held wait for the next one (they are never lost: the next poll asks
``after`` the last id it saw).

    curl -s -H "Authorization: Bearer $T" 'http://127.0.0.1:8000/rooms/general/events?after=5&wait=25'
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response

from wirewise import protocol
from wirewise.protocol import ProtocolError
from wirewise.servers.aio import Feed
from wirewise.servers.context import Context
from wirewise.servers.http import (
    authenticate,
    check_origin,
    cors_headers,
    error_response,
    json_response,
    query,
    room_of,
)
from wirewise.servers.poll import poll_body


def parse_wait(raw: str, cap: float) -> float:
    """``wait`` in seconds, capped at ``cap``; anything but a finite number >= 0 is refused."""
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise ProtocolError("bad_message", f"wait must be a number of seconds in 0..{cap:g}")
    return min(wait, cap)


async def longpoll_endpoint(ctx: Context, request: Request) -> Response:
    scope = request.scope
    cors = cors_headers(ctx, scope)
    core = ctx.core
    try:
        check_origin(ctx, scope)
        user = authenticate(ctx, scope)
        room = room_of(scope)
        params = query(scope)
        after = protocol.parse_cursor(params.get("after"))
        wait = parse_wait(params["wait"], ctx.settings.longpoll_max_wait)
        items, last_id = core.poll(user, room, after)
        if not items and after is not None and wait > 0:
            feed = Feed(core.waiter(user, room))
            feed.watch_disconnect(request.receive)
            try:
                await feed.next(wait)
            finally:
                feed.stop_watching()
                core.unsubscribe(feed.sub)
            items, last_id = core.poll(user, room, after)
    except ProtocolError as exc:
        return error_response(exc, cors)
    return json_response(poll_body(items, last_id), 200, cors)
