"""Short polling client: ``GET /rooms/{room}/events?after=N`` every ``interval`` seconds.

A message waits on average ``interval / 2`` before a poll picks it up, and every poll costs a
request whether or not anything happened: the two numbers the benchmark shows for polling.
Polls go through :class:`wirewise.clients.h1.H1Connection` (one keep-alive connection per
subscription): through httpx a poll cost the load generator several times more CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from wirewise import protocol
from wirewise.clients.base import Subscription, refused_from_body
from wirewise.clients.h1 import H1Connection
from wirewise.clients.http import HttpClient

DEFAULT_INTERVAL = 1.0


class PollClient(HttpClient):
    transport = "poll"

    def __init__(self, base_url: str, *, interval: float = DEFAULT_INTERVAL, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.interval = interval
        self.polls = 0

    def params(self, sub: Subscription) -> dict[str, str]:
        return {} if sub.last_id is None else {"after": str(sub.last_id)}

    def read_timeout(self) -> float:
        return self.timeout

    def pause(self, sub: Subscription) -> None:
        """Between polls: wait the interval (returns early when the subscription closes)."""
        sub.pause(self.interval)

    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        path = f"/rooms/{sub.room}/events"
        connection = H1Connection(self.base_url, self.timeout, self.verify)
        forget = sub.on_close(connection.abort)
        try:
            while not sub.closed:
                headers = [(b"authorization", f"Bearer {self._require_token()}".encode())]
                query = urlencode(self.params(sub))
                target = f"{path}?{query}" if query else path
                head = connection.request("GET", target, headers, self.read_timeout())
                body = connection.read_body()
                self.polls += 1
                if head.status != 200:
                    raise refused_from_body(body, head.status)
                opened()
                events, last_id = protocol.decode_poll(body)
                for message in events:
                    sub.deliver(message)
                sub.set_cursor(last_id)
                self.pause(sub)
        finally:
            forget()
            connection.close()
