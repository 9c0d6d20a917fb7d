"""Lean short-polling client: ``GET /rooms/{room}/events?after=N`` every ``interval`` seconds,
issued and read by the hub on one keep-alive connection per subscription.

Like :class:`wirewise.clients.poll.PollClient`, the next poll starts ``interval`` seconds after an
answer has been read, and the first poll (without ``after``) only learns the room's last id.
The answer is parsed with orjson (the events' id and ``sent_at``); one answer in
:data:`wirewise.clients.lean.base.CHECK_EVERY` also goes through the validating ``decode_poll``.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlencode

import orjson

from wirewise import protocol
from wirewise.clients.base import ClientError, connect, refused_from_body
from wirewise.clients.lean.base import (
    CHECK_EVERY,
    HttpLeanClient,
    LeanSubscription,
    parse_response,
    request_bytes,
)
from wirewise.clients.lean.hub import Conn, Hub, Timer

__all__ = ["PollConn", "PollLeanClient"]

DEFAULT_INTERVAL = 1.0


class PollConn(Conn):
    """One subscription's polls: a request, its answer, then the next request."""

    __slots__ = ("_buffer", "_timer", "answers", "client", "sub")

    def __init__(self, client: PollLeanClient, sock: socket.socket, sub: LeanSubscription) -> None:
        super().__init__(client.hub, sock)
        self.client = client
        self.sub = sub
        self._buffer = b""
        self._timer: Timer | None = None
        self.answers = 0

    def poll(self) -> None:
        self._timer = None
        if self.closed:
            return
        try:
            self.write(self.client.poll_request(self.sub))
        except ConnectionError:
            self.close("write failed")

    def on_data(self, data: bytes, received: int) -> None:
        buffer = self._buffer + data if self._buffer else data
        parsed = parse_response(buffer, 0)
        if parsed is None:
            self._buffer = buffer
            return
        status, start, end, rest = parsed
        if rest != len(buffer):
            raise ClientError("bytes after a poll's answer")
        self._buffer = b""
        body = buffer[start:end]
        if status != 200:
            refused = refused_from_body(body, status)
            self.hub.events[f"error:{refused.code}"] += 1
            raise refused
        self.answer(body, received)
        self.sub.connected.set()
        self._timer = self.client.next_poll(self)

    def answer(self, body: bytes, received: int) -> None:
        sub = self.sub
        self.answers += 1
        if self.answers % CHECK_EVERY == 0:
            self.hub.checked += 1
            try:
                protocol.decode_poll(body)
            except protocol.ProtocolError:
                self.hub.mismatched += 1
        answer = orjson.loads(body)
        for event in answer["events"]:
            if event.get("type") == "new_message" and isinstance(event.get("sent_at"), int):
                sub.deliver(event["id"], event["sent_at"], received)
            else:
                sub.event(orjson.dumps(event), received)
        if sub.last_id < 0:  # the first poll: the room's position, no events
            sub.last_id = int(answer["last_id"])

    def on_end(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.sub.ended(reason)


class PollLeanClient(HttpLeanClient):
    transport = "poll"

    def __init__(
        self, base_url: str, hub: Hub, *, interval: float = DEFAULT_INTERVAL, **kwargs: Any
    ) -> None:
        super().__init__(base_url, hub, **kwargs)
        self.interval = interval

    def params(self, sub: LeanSubscription) -> dict[str, str]:
        return {} if sub.after is None else {"after": str(sub.after)}

    def poll_request(self, sub: LeanSubscription) -> bytes:
        query = urlencode(self.params(sub))
        target = f"/rooms/{sub.room}/events" + (f"?{query}" if query else "")
        return request_bytes("GET", target, self.authority, self.headers(sub))

    def next_poll(self, conn: PollConn) -> Timer | None:
        """Schedule ``conn``'s next poll (the timer, to cancel on close)."""
        return self.hub.call_later(self.interval, conn.poll)

    def open(self, sub: LeanSubscription) -> None:
        sock = connect(self.host, self.port, self.timeout)
        conn = PollConn(self, sock, sub)
        sub.opened(conn)
        self.hub.add(conn)
        conn.poll()
        if not sub.connected.wait(self.timeout + self.read_slack()):
            conn.close("no answer to the first poll")
            raise ClientError(f"no answer to the first poll within {self.timeout:g} s")

    def read_slack(self) -> float:
        return 0.0


def _now_us() -> int:
    return time.time_ns() // 1000
