"""SSE client: one ``text/event-stream`` per subscription, sends by POST.

Resume is the protocol's own: a reconnect sends ``Last-Event-ID`` with the last id seen.
The stream is read by :class:`wirewise.clients.h1.H1Connection` (h11 for the head, the chunked body
decoded as it arrives) into :class:`wirewise.clients.eventstream.SseParser`, which splits a chunk
(the server writes a burst of events as one) in one call. httpx and httpx-sse spent ~40 % of
this client's CPU per delivery in their layers; see :mod:`wirewise.clients.h1`. Events with empty
data (keep-alives) are dropped, as they had to be with httpx-sse's replays of the last id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wirewise import protocol
from wirewise.clients.base import ClientError, SessionEnded, Subscription, refused_from_body
from wirewise.clients.eventstream import SseParser
from wirewise.clients.h1 import H1Connection
from wirewise.clients.http import HttpClient

HEARTBEAT_GRACE = 3
"""The stream is dead after this many missed 15 s heartbeats."""


class SseClient(HttpClient):
    transport = "sse"

    def __init__(self, base_url: str, *, heartbeat: float = 15.0, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.heartbeat = heartbeat

    def stream_headers(self, sub: Subscription) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"authorization", f"Bearer {self._require_token()}".encode()),
            (b"accept", b"text/event-stream"),
            (b"cache-control", b"no-store"),
        ]
        if sub.last_id is not None:
            headers.append((b"last-event-id", b"%d" % sub.last_id))
        return headers

    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        connection = H1Connection(self.base_url, self.timeout, self.verify)
        forget = sub.on_close(connection.abort)
        try:
            head = connection.request(
                "GET",
                f"/rooms/{sub.room}/stream",
                self.stream_headers(sub),
                read_timeout=self.heartbeat * HEARTBEAT_GRACE,
            )
            if head.status != 200:
                raise refused_from_body(connection.read_body(), head.status)
            content_type = head.header(b"content-type")
            if "text/event-stream" not in content_type:
                raise ClientError(f"expected text/event-stream, got {content_type!r}")
            opened()
            parser = SseParser()
            for chunk in connection.stream(self.heartbeat * HEARTBEAT_GRACE):
                for event in parser.feed(chunk):
                    sub.deliver(protocol.decode_server(event.data))
        finally:
            forget()
            connection.close()
        raise SessionEnded
