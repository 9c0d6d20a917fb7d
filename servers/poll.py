"""Short polling: ``GET /rooms/{room}/events?after=N`` answers at once.

Latency is about half the client's polling interval; every poll costs a request whether or
not anything happened. The server holds nothing between polls, so presence is a timeout.

    curl -s -H "Authorization: Bearer $T" 'http://127.0.0.1:8000/rooms/general/events?after=0'
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from wirewise import protocol
from wirewise.protocol import Gap, ProtocolError
from wirewise.servers.context import Context
from wirewise.servers.core import Stored
from wirewise.servers.http import (
    authenticate,
    check_origin,
    cors_headers,
    error_response,
    json_response,
    query,
    room_of,
)


def poll_body(items: list[Stored | Gap], last_id: int) -> str:
    """``{"events": [...], "last_id": M}``; a ``gap``, when there is one, comes first."""
    return protocol.encode_poll(
        [item.json if isinstance(item, Stored) else protocol.encode(item) for item in items],
        last_id,
    )


async def poll_endpoint(ctx: Context, request: Request) -> Response:
    scope = request.scope
    cors = cors_headers(ctx, scope)
    try:
        check_origin(ctx, scope)
        user = authenticate(ctx, scope)
        room = room_of(scope)
        after = protocol.parse_cursor(query(scope).get("after"))
        items, last_id = ctx.core.poll(user, room, after)
    except ProtocolError as exc:
        return error_response(exc, cors)
    return json_response(poll_body(items, last_id), 200, cors)
