"""A client's message on a socket transport (a WebSocket frame, a TCP line) to its answer.

The WebSocket endpoints (ASGI and bare websockets) and the tcp floor read sends the same way
and answer each in order with an ``ack`` or an ``error``; this is that one way.
"""

from __future__ import annotations

from wirewise import protocol
from wirewise.protocol import Ack, ProtocolError, SendMessage
from wirewise.servers.core import ChatCore

__all__ = ["handle_frame", "handle_ws_frame"]


async def handle_frame(
    core: ChatCore, user: str, room: str, data: str | bytes
) -> Ack | protocol.Error:
    """One client message (a frame, a line) to its answer: ``ack`` or ``error``."""
    try:
        message = protocol.decode_client(data, max_text=core.settings.max_text)
        if not isinstance(message, SendMessage):
            raise ProtocolError("unknown_type", f"{message.type!r} cannot be sent here")
        msg_id, _ = await core.send(user, room, message)
    except ProtocolError as exc:
        return exc.to_message()
    return Ack(client_msg_id=message.client_msg_id, id=msg_id)


async def handle_ws_frame(
    core: ChatCore, user: str, room: str, data: str | bytes | None
) -> Ack | protocol.Error:
    """A WebSocket frame: text only (a binary frame is answered ``bad_message``)."""
    if not isinstance(data, str):
        return protocol.Error("bad_message", "frames are JSON text, not binary")
    return await handle_frame(core, user, room, data)
