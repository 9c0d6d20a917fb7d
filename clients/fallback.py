"""A client that finds a transport that works: it tries an ordered list (default ws, sse,
longpoll, poll) and settles on the first whose subscription opens within a time limit.

This is what SignalR does after its negotiate step (WebSockets, then SSE, then long polling,
each tried in turn when the one before fails) and what Engine.IO's probe decides: behind a
proxy that strips ``Upgrade`` the WebSocket handshake fails, and a client that stopped there
would never connect. Every wirewise HTTP server serves every transport's routes from one
application, so the transports are tried against one base URL::

    with FallbackClient("http://127.0.0.1:8000") as client:
        client.login("ada")
        sub = client.subscribe("general")     # negotiates: ws, then sse, ...
        print(client.settled, client.attempts)

A step fails when its first connection attempt fails (a refused handshake, an error answer,
a dropped connection) or when nothing opened within ``step_timeout`` (a proxy that holds the
request). What a step proves is that the session *opened*: a proxy that passes the upgrade or
the stream but buffers what follows is not caught, as in SignalR (which is why wirewise's SSE
answers carry ``X-Accel-Buffering: no``). The client reports the transport it settled on,
every attempt with its time and reason, and the time from the start to the first message
delivered to a callback (:attr:`first_message_s`), which is what a user waits.

Once settled, later subscriptions and sends use the settled transport only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wirewise.clients import client_for
from wirewise.clients.base import (
    DEFAULT_TIMEOUT,
    Client,
    ConnectError,
    OnMessage,
    Subscription,
)
from wirewise.protocol import SendMessage, ServerMessage

__all__ = ["DEFAULT_ORDER", "Attempt", "FallbackClient", "parse_order"]

DEFAULT_ORDER = ("ws", "sse", "longpoll", "poll")
"""Most capable first: a full-duplex socket, then a server push with POSTs, then polls."""
CANDIDATES = frozenset(DEFAULT_ORDER) | {"h2"}
DEFAULT_STEP_TIMEOUT = 3.0
"""Seconds a step may take to open before the next transport is tried (SignalR's own
transports time out their connect; 3 s is past a loopback or LAN handshake by far and below a
user's patience)."""
WATCH_INTERVAL = 0.005
"""How often a step looks at its subscription: the time a failed step lost is known to 5 ms."""


@dataclass(frozen=True)
class Attempt:
    """One step of the negotiation."""

    transport: str
    outcome: str
    """``settled``, ``failed`` (the first connection attempt failed) or ``timed out``."""
    seconds: float
    """From the step's start to its outcome."""
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
        }


def parse_order(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"ws,sse,longpoll"`` (or a sequence) as a checked order: known transports, no repeats."""
    order = tuple(t.strip() for t in (text.split(",") if isinstance(text, str) else text))
    unknown = [t for t in order if t not in CANDIDATES]
    if not order or unknown or len(set(order)) != len(order):
        raise ValueError(
            f"a fallback order lists distinct transports among {', '.join(sorted(CANDIDATES))}"
            f" (got {','.join(order) or 'nothing'})"
        )
    return order


class FallbackClient(Client):
    """The shared client shape over whichever transport the negotiation settles on."""

    transport = "fallback"

    def __init__(
        self,
        base_url: str,
        *,
        order: str | Sequence[str] = DEFAULT_ORDER,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        options: dict[str, dict[str, Any]] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        """``options`` gives each transport's own keywords (``{"poll": {"interval": 0.5}}``)."""
        super().__init__(base_url, timeout=timeout, **kwargs)
        self.order = parse_order(order)
        self.step_timeout = step_timeout
        self.options = options or {}
        self.attempts: list[Attempt] = []
        self.chosen: Client | None = None
        self.started_at: float | None = None
        self.first_message_s: float | None = None
        """Seconds from the negotiation's start to the first message delivered."""
        self._first = threading.Event()

    @property
    def settled(self) -> str | None:
        """The transport in use, None before (or after a failed) negotiation."""
        return self.chosen.transport if self.chosen is not None else None

    @property
    def lost_s(self) -> float:
        """Seconds spent on the steps that did not settle: the fallback's cost to the user."""
        return sum(a.seconds for a in self.attempts if a.outcome != "settled")

    # -- the shared shape ----------------------------------------------------------------

    def _login(self, user: str) -> str:
        """Every candidate logs in over plain HTTP on the same server: one token serves all."""
        with self._candidate(self.order[0]) as probe:
            return probe._login(user)

    def subscribe(
        self, room: str, after: int | None = None, on_message: OnMessage | None = None
    ) -> Subscription:
        if self.chosen is not None:
            return self.chosen.subscribe(room, after, self._timed(on_message))
        return self._negotiate(room, after, on_message)

    def _send(self, room: str, message: SendMessage) -> int:
        if self.chosen is None:
            raise ConnectError("no transport yet: subscribe first, which negotiates one")
        return self.chosen._send(room, message)

    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        raise NotImplementedError("sessions run on the settled transport's client")

    def close(self) -> None:
        super().close()
        if self.chosen is not None:
            self.chosen.close()

    # -- the negotiation -------------------------------------------------------------------

    def _candidate(self, transport: str) -> Client:
        kwargs = {"timeout": self.timeout, "token": self.token, "backoff": self.backoff}
        kwargs |= self.options.get(transport, {})
        client = client_for(transport, self.base_url, **kwargs)
        client.request_event = self.request_event
        client.user = self.user
        return client

    def _negotiate(
        self, room: str, after: int | None, on_message: OnMessage | None
    ) -> Subscription:
        """Each transport in turn until one opens; raises ConnectError when none did."""
        self.started_at = time.monotonic()
        for transport in self.order:
            began = time.monotonic()
            client = self._candidate(transport)
            sub = client.subscribe(room, after, self._timed(on_message))
            outcome, reason = self._watch(sub)
            self.attempts.append(Attempt(transport, outcome, time.monotonic() - began, reason))
            if outcome == "settled":
                self.chosen = client
                return sub
            sub.close()
            client.close()
        tried = "; ".join(f"{a.transport}: {a.reason or a.outcome}" for a in self.attempts)
        raise ConnectError(f"no transport opened a subscription ({tried})")

    def _watch(self, sub: Subscription) -> tuple[str, str | None]:
        """Until the subscription opens, its first attempt fails, or the step times out."""
        deadline = time.monotonic() + self.step_timeout
        while not sub.connected.wait(WATCH_INTERVAL):
            if sub.error is not None:
                return "failed", str(sub.error)
            if sub.reconnects:
                return "failed", sub.last_failure
            if time.monotonic() >= deadline:
                return "timed out", f"not open after {self.step_timeout:g} s"
        return "settled", None

    def _timed(self, on_message: OnMessage | None) -> OnMessage | None:
        """Note when the first message arrives, then hand every message on. Only a callback
        is timed: in iteration mode the message waits in the queue until the caller looks."""
        if on_message is None:
            return None
        deliver = on_message

        def timed(message: ServerMessage) -> None:
            self._note_first()
            deliver(message)

        return timed

    def _note_first(self) -> None:
        if not self._first.is_set() and self.started_at is not None:
            self.first_message_s = time.monotonic() - self.started_at
            self._first.set()
