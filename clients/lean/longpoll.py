"""Lean long-polling client: ``GET /rooms/{room}/events?after=N&wait=S``, re-asked as soon as
each answer is read (by the hub, on one keep-alive connection per subscription)."""

from __future__ import annotations

from typing import Any

from wirewise.clients.lean.base import LeanSubscription
from wirewise.clients.lean.hub import Hub, Timer
from wirewise.clients.lean.poll import PollConn, PollLeanClient

__all__ = ["LongPollLeanClient"]

DEFAULT_WAIT = 25.0


class LongPollLeanClient(PollLeanClient):
    transport = "longpoll"

    def __init__(
        self, base_url: str, hub: Hub, *, wait: float = DEFAULT_WAIT, **kwargs: Any
    ) -> None:
        super().__init__(base_url, hub, **kwargs)
        self.wait = wait

    def params(self, sub: LeanSubscription) -> dict[str, str]:
        params = super().params(sub)
        if sub.after is not None:  # the first poll only learns the position: answered at once
            params["wait"] = f"{self.wait:g}"
        return params

    def next_poll(self, conn: PollConn) -> Timer | None:
        conn.poll()  # the server holds it: no pause between polls
        return None
