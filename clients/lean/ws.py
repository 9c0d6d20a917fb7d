"""Lean WebSocket client: frames split by hand on the hot path, sends written without waiting.

The handshake is websockets' own (``ClientProtocol`` checks the 101 and its accept key); after
it the hub reads the socket and :class:`WsConn` splits frames itself: a server frame is never
masked, so a text frame is a 2-10 byte header and the JSON. Pings are answered, a close frame
is answered and ends the session, a binary or fragmented message is refused (wirewise servers
send neither). Outgoing frames are built by websockets' ``Frame.serialize`` (masking in C).
"""

from __future__ import annotations

import contextlib
import time
from urllib.parse import urlencode

from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import USER_AGENT
from websockets.uri import parse_uri

from wirewise import protocol
from wirewise.clients.base import ClientError, connect, refused_from_body
from wirewise.clients.lean.base import DuplexConn, DuplexLeanClient, LeanSubscription, read_head

__all__ = ["WsConn", "WsLeanClient"]

MAX_FRAME = 1 << 20


def _frame(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=True)


class WsConn(DuplexConn):
    """One open WebSocket read by the hub."""

    __slots__ = ()

    def frame(self, text: str) -> bytes:
        return _frame(Opcode.TEXT, text.encode())

    def on_data(self, data: bytes, received: int) -> None:
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        at = 0
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 4], "big"), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(buffer[at + 2 : at + 10], "big"), 10
            if second & 0x80 or length > MAX_FRAME:
                raise ClientError("a masked or oversized frame from the server")
            end = at + head + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == 1 and first & 0x80:
                self.message(buffer, at + head, end, received)
            elif opcode == 9:
                self.write(_frame(Opcode.PONG, buffer[at + head : end]))
            elif opcode == 8:
                self.closing(buffer[at + head : end])
                return
            elif opcode != 10:  # binary, or a fragment: wirewise servers send neither
                raise ClientError(f"unexpected frame (opcode {opcode}, fin {first >> 7})")
            at = end
        self._buffer = buffer[at:]

    def closing(self, payload: bytes) -> None:
        """The server's close frame: answer it, count a protocol code, end the session."""
        close = Close.parse(payload) if payload else None
        with contextlib.suppress(ConnectionError):
            self.write(_frame(Opcode.CLOSE, Close(CloseCode.NORMAL_CLOSURE, "").serialize()))
        if close is not None and close.reason in protocol.ERROR_CODES:
            self.hub.events[f"error:{close.reason}"] += 1
        self.close(f"closed by the server ({close.code if close else 'no code'})")


class WsLeanClient(DuplexLeanClient):
    transport = "ws"

    def connect_room(self, room: str, after: int | None, sub: LeanSubscription | None) -> WsConn:
        query = f"?{urlencode({'after': after})}" if after is not None else ""
        uri = parse_uri(f"ws://{self.authority}/rooms/{room}/ws{query}")
        deadline = time.monotonic() + self.timeout
        sock = connect(self.host, self.port, self.timeout)
        try:
            ws = ClientProtocol(uri, max_size=MAX_FRAME)
            request = ws.connect()
            request.headers["Authorization"] = f"Bearer {self.bearer().decode()}"
            request.headers["User-Agent"] = USER_AGENT
            ws.send_request(request)
            sock.sendall(b"".join(ws.data_to_send()))
            head = read_head(sock, deadline, upgrade=True)
            if head.status != 101:
                raise refused_from_body(head.rest, head.status)
            ws.receive_data(head.raw)
            ws.events_received()
            if ws.handshake_exc is not None:
                raise ClientError(f"cannot connect: {ws.handshake_exc}")
            conn = WsConn(self, sock, sub)
        except BaseException:
            sock.close()
            raise
        if head.rest:  # frames that came with the 101
            conn.on_data(head.rest, time.time_ns() // 1000)
        self.hub.add(conn)
        return conn
