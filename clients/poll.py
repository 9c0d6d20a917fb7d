"""Short polling client: ``GET /rooms/{room}/events?after=N`` every ``interval`` seconds.

A message waits on average ``interval / 2`` before a poll picks it up, and every poll costs a
request whether or not anything happened: the two numbers the benchmark shows for polling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from clients.base import ClientError, Subscription, refused_from_body
from clients.http import HttpClient
from wirewise import protocol

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
        url = f"/rooms/{sub.room}/events"
        http, backend = self.session_http(self.read_timeout())
        with http:
            forget = sub.on_close(backend.abort)
            try:
                while not sub.closed:
                    try:
                        response = http.get(url, params=self.params(sub), headers=self.auth())
                    except httpx.HTTPError as exc:
                        raise ClientError(str(exc) or type(exc).__name__) from exc
                    self.polls += 1
                    if response.status_code != 200:
                        raise refused_from_body(response.content, response.status_code)
                    opened()
                    events, last_id = protocol.decode_poll(response.content)
                    for message in events:
                        sub.deliver(message)
                    sub.set_cursor(last_id)
                    self.pause(sub)
            finally:
                forget()
