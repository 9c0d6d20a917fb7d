"""One client per transport, all with the shape of :class:`wirewise.clients.base.Client`.

``client_for("sse", "http://127.0.0.1:8000")`` builds the client of a transport by name, so
that tests, scripts and Locust scenarios take the transport as a parameter.
"""

from __future__ import annotations

import importlib
from typing import Any

from wirewise.clients.base import (
    Backoff,
    BadAnswer,
    Client,
    ClientError,
    ConnectError,
    Refused,
    RequestEvent,
    Subscription,
    SubscriptionFailed,
)

__all__ = [
    "CLASSES",
    "Backoff",
    "BadAnswer",
    "Client",
    "ClientError",
    "ConnectError",
    "Refused",
    "RequestEvent",
    "Subscription",
    "SubscriptionFailed",
    "client_class",
    "client_for",
]

CLASSES = {
    "poll": "wirewise.clients.poll:PollClient",
    "longpoll": "wirewise.clients.longpoll:LongPollClient",
    "sse": "wirewise.clients.sse:SseClient",
    "h2": "wirewise.clients.h2:H2Client",
    "ws": "wirewise.clients.ws:WsClient",
    "tcp": "wirewise.clients.tcp:TcpClient",
}
"""The transports' own clients (:class:`wirewise.clients.fallback.FallbackClient` tries several
of them in turn; it is not a transport)."""


def client_class(transport: str) -> type[Client]:
    try:
        module, name = CLASSES[transport].split(":")
    except KeyError:
        raise ValueError(f"unknown transport {transport!r}; one of {', '.join(CLASSES)}") from None
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def client_for(transport: str, base_url: str, **kwargs: Any) -> Client:
    return client_class(transport)(base_url, **kwargs)
