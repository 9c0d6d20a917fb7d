"""Lean SSE client: the event stream read by the hub, sends by pipelined POST.

The stream's head is read once with h11 (:func:`wirewise.clients.lean.base.read_head`); after it the
hub feeds the body to :class:`SseConn`, which undoes the chunked framing and splits events at
the blank line. A wirewise server writes ``id:``, ``event:`` and one ``data:`` line per event,
ending lines with LF (``servers/sse.py``), and that is all this parser knows; the general
WHATWG parser is :class:`wirewise.clients.eventstream.SseParser`, used by the full client.
"""

from __future__ import annotations

import time

from wirewise.clients.base import ClientError, connect, refused_from_body
from wirewise.clients.lean.base import HttpLeanClient, LeanSubscription, read_head, request_bytes
from wirewise.clients.lean.hub import Conn

__all__ = ["SseConn", "SseLeanClient"]

MAX_EVENT = 1 << 20


class SseConn(Conn):
    """One ``text/event-stream`` body: chunked framing off, then events to the subscription."""

    __slots__ = ("_chunked", "_left", "_raw", "_text", "_trailer", "sub")

    def __init__(self, hub, sock, sub: LeanSubscription, chunked: bool) -> None:  # type: ignore[no-untyped-def]
        super().__init__(hub, sock)
        self.sub = sub
        self._chunked = chunked
        self._raw = b""  # undecoded chunked bytes
        self._left = 0  # data bytes left in the current chunk
        self._trailer = 0  # bytes of the CRLF after the chunk's data still to skip
        self._text = b""  # decoded stream not yet ended by a blank line

    def on_data(self, data: bytes, received: int) -> None:
        fresh = not (self._raw or self._left or self._trailer or self._text)
        if self._chunked and fresh and self.one_chunk(data, received):
            return
        self.events(self.unchunk(data) if self._chunked else data, received)

    def one_chunk(self, data: bytes, received: int) -> bool:
        """The usual read, in place: one whole chunk of whole events, nothing left over from
        before. Anything else (a split chunk, several, an extension) returns False untouched,
        for the general path. This halves what an SSE delivery costs the generator."""
        eol = data.find(b"\r\n", 0, 18)
        if eol <= 0:
            return False
        try:
            length = int(data[:eol], 16)
        except ValueError:  # a chunk extension
            return False
        start = eol + 2
        end = start + length
        if not length or end + 2 != len(data) or not data.endswith(b"\n\n\r\n"):
            return False
        sub = self.sub
        at = start
        while (stop := data.find(b"\n\n", at, end)) >= 0:
            found = data.find(b"data: ", at, stop)
            if found >= 0:
                sub.message(data, found + 6, stop, received)
            at = stop + 2
        return True

    def unchunk(self, data: bytes) -> bytes:
        buffer = self._raw + data if self._raw else data
        size, at = len(buffer), 0
        out = []
        while at < size:
            if self._trailer:
                skip = min(self._trailer, size - at)
                at += skip
                self._trailer -= skip
                continue
            if self._left:
                take = min(self._left, size - at)
                out.append(buffer[at : at + take])
                at += take
                self._left -= take
                if not self._left:
                    self._trailer = 2
                continue
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                if size - at > 1024:
                    raise ClientError("chunk header too long")
                break
            length = int(buffer[at:eol].split(b";", 1)[0], 16)
            at = eol + 2
            if length == 0:
                raise ClientError("the stream ended")
            self._left = length
        self._raw = buffer[at:]
        return out[0] if len(out) == 1 else b"".join(out)

    def events(self, data: bytes, received: int) -> None:
        text = self._text + data if self._text else data
        at = 0
        sub = self.sub
        while (end := text.find(b"\n\n", at)) >= 0:
            found = text.find(b"data: ", at, end)
            if found >= 0:
                sub.message(text, found + 6, end, received)
            at = end + 2  # comments (": ping") and "retry:" blocks carry no data line
        if len(text) - at > MAX_EVENT:
            raise ClientError("an event larger than 1 MiB")
        self._text = text[at:]

    def on_end(self, reason: str) -> None:
        self.sub.ended(reason)


class SseLeanClient(HttpLeanClient):
    transport = "sse"

    def open(self, sub: LeanSubscription) -> None:
        headers = [
            *self.headers(sub),
            ("accept", "text/event-stream"),
            ("cache-control", "no-store"),
        ]
        if sub.after is not None:
            headers.append(("last-event-id", str(sub.after)))
        deadline = time.monotonic() + self.timeout
        sock = connect(self.host, self.port, self.timeout)
        try:
            sock.sendall(request_bytes("GET", f"/rooms/{sub.room}/stream", self.authority, headers))
            head = read_head(sock, deadline)
            if head.status != 200:
                raise refused_from_body(head.rest, head.status)
            content_type = head.headers.get(b"content-type", b"")
            if b"text/event-stream" not in content_type:
                raise ClientError(f"expected text/event-stream, got {content_type!r}")
            chunked = b"chunked" in head.headers.get(b"transfer-encoding", b"")
            conn = SseConn(self.hub, sock, sub, chunked)
        except BaseException:
            sock.close()
            raise
        if head.rest:
            conn.on_data(head.rest, time.time_ns() // 1000)
        self.hub.add(conn)
        sub.opened(conn)
