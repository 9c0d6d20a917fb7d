"""SSE client: one ``text/event-stream`` per subscription (httpx + httpx-sse), sends by POST.

Resume is the protocol's own: a reconnect sends ``Last-Event-ID`` with the last id seen.
httpx-sse 0.4.3 dispatches an empty event carrying the last id on every keep-alive comment
once an id has been seen; those are dropped here, or they would look like duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from clients.base import ClientError, SessionEnded, Subscription, refused_from_body
from clients.http import HttpClient
from wirewise import protocol

HEARTBEAT_GRACE = 3
"""The stream is dead after this many missed 15 s heartbeats."""


class SseClient(HttpClient):
    transport = "sse"

    def __init__(self, base_url: str, *, heartbeat: float = 15.0, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.heartbeat = heartbeat

    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        headers = self.auth()
        if sub.last_id is not None:
            headers["last-event-id"] = str(sub.last_id)
        http, backend = self.session_http(self.heartbeat * HEARTBEAT_GRACE)
        with http:
            forget = sub.on_close(backend.abort)
            try:
                with connect_sse(
                    http, "GET", f"/rooms/{sub.room}/stream", headers=headers
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        response.read()
                        raise refused_from_body(response.content, response.status_code)
                    opened()
                    for event in source.iter_sse():
                        if event.data:  # not a keep-alive replay (see the module docstring)
                            sub.deliver(protocol.decode_server(event.data))
            except (httpx.HTTPError, SSEError) as exc:
                raise ClientError(str(exc) or type(exc).__name__) from exc
            finally:
                forget()
        raise SessionEnded
