"""fallback: the faults scenario's chat crowd (rooms of ``--room-size``, everyone sending at
``--rate``), every user on the fallback client (``clients/fallback.py``), which tries
``--fallback-order`` (default ws, sse, longpoll, poll) in turn, ``--step-timeout`` seconds
each, and settles on the first whose subscription opens. Nothing is killed.

Behind a proxy that strips ``Upgrade`` every WebSocket handshake fails and the crowd settles on
SSE; what it measures is what that costs each user: the time lost to the failed attempts, the
time from the first attempt to the first message, which transport each one settled on, and
then the chat itself on the settled transport (every acknowledged message checked against
each receiver of its room, delivery latency from the schedule).

    wirewise bench --scenario fallback --proxy no-upgrade       # the bench starts nginx

Every wirewise HTTP server answers every transport's routes from one application, so the
scenario runs against one server: uvicorn's (the ``ws`` backend).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from wirewise.clients.fallback import FallbackClient, parse_order
from wirewise.scenarios import faults
from wirewise.scenarios._record import ENV, options, total_users

SCENARIO = "fallback"
CLIENTS: list[FallbackClient] = []


class Negotiator(faults.Member):  # the module, not the class: Locust would spawn it too
    """A chat member whose client finds its transport."""

    scenario = SCENARIO

    def make_client(self) -> FallbackClient:  # type: ignore[override]
        opts = options(self.environment)
        client = FallbackClient(
            self.base_url,
            order=parse_order(opts.fallback_order),
            step_timeout=opts.step_timeout,
            options={
                "poll": {"interval": opts.poll_interval},
                "longpoll": {"wait": opts.longpoll_wait},
            },
            timeout=10.0,
            request_event=self.environment.events.request,
        )
        CLIENTS.append(client)
        return client

    def pick_room(self) -> str:
        opts = options(self.environment)
        size = opts.room_size or self.default_room_size
        return f"{SCENARIO}-{self.number % max(1, math.ceil(total_users(self.environment) / size))}"


def negotiations() -> dict[str, Any]:
    """What each client's negotiation found and cost (ms), for the result file."""
    environment = ENV.environment
    order = options(environment).fallback_order if environment is not None else ""
    reasons = Counter(
        f"{a.transport}: {a.reason or a.outcome}"
        for c in CLIENTS
        for a in c.attempts
        if a.outcome != "settled"
    )
    return {
        "fallback": {
            "order": order.split(","),
            "step_timeout": options(environment).step_timeout if environment else None,
            "clients": len(CLIENTS),
            "settled": dict(Counter(c.settled or "none" for c in CLIENTS)),
            "attempts": dict(
                Counter(f"{a.transport} {a.outcome}" for c in CLIENTS for a in c.attempts)
            ),
            "lost_ms": sorted(round(c.lost_s * 1000, 2) for c in CLIENTS if c.attempts),
            "first_message_ms": sorted(
                round(c.first_message_s * 1000, 2) for c in CLIENTS if c.first_message_s is not None
            ),
            "reasons": dict(reasons.most_common(5)),
        }
    }


faults.REPORTS.append(negotiations)

__all__ = ["Negotiator"]
