"""Long polling client: ``GET /rooms/{room}/events?after=N&wait=S``, re-asked at once.

The server holds each poll until an event exists (or ``wait`` seconds pass), so a delivery
costs one request and arrives near-instantly, except for events that land between two polls,
which wait for the next request's round trip.
"""

from __future__ import annotations

from typing import Any

from wirewise.clients.base import Subscription
from wirewise.clients.poll import PollClient

DEFAULT_WAIT = 25.0
"""Seconds the server may hold a poll: under common proxies' 30 s idle timeouts."""


class LongPollClient(PollClient):
    transport = "longpoll"

    def __init__(self, base_url: str, *, wait: float = DEFAULT_WAIT, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.wait = wait

    def params(self, sub: Subscription) -> dict[str, str]:
        params = super().params(sub)
        params["wait"] = f"{self.wait:g}"
        return params

    def read_timeout(self) -> float:
        return self.wait + self.timeout

    def pause(self, sub: Subscription) -> None:
        """No pause: the next poll is the wait."""
