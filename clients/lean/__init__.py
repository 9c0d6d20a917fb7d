"""Lean clients for load generation: one per transport, the same names as :mod:`clients`.

The clients in :mod:`clients` are the reference (validated, a reader thread per subscription,
usable from anything); these trade that for a load generator's needs: every connection of a
process is read by one :class:`wirewise.clients.lean.hub.Hub`, only the fields the measurement needs
are parsed on the hot path (a sampled share is validated in full), and sends never wait for
their answers. See :mod:`wirewise.clients.lean.hub` and :mod:`wirewise.clients.lean.base`.

    hub = Hub()
    client = lean_client_for("ws", "http://127.0.0.1:8000", hub, answered=on_answer)
    client.login("ada")
    client.subscribe("general", index=0)
    client.send("general", "hi", sent_at=now_us(), client_msg_id="ada-1")
    deliveries, read_delays = hub.take()      # (room index, id, sent_at, received_at) ...
"""

from __future__ import annotations

import importlib
from typing import Any

from wirewise.clients.lean.base import LeanClient, LeanSubscription
from wirewise.clients.lean.hub import Hub

__all__ = ["CLASSES", "Hub", "LeanClient", "LeanSubscription", "lean_client_for"]

CLASSES = {
    "poll": "wirewise.clients.lean.poll:PollLeanClient",
    "longpoll": "wirewise.clients.lean.longpoll:LongPollLeanClient",
    "sse": "wirewise.clients.lean.sse:SseLeanClient",
    "h2": "wirewise.clients.lean.h2:H2LeanClient",
    "ws": "wirewise.clients.lean.ws:WsLeanClient",
    "tcp": "wirewise.clients.lean.tcp:TcpLeanClient",
}


def lean_client_for(transport: str, base_url: str, hub: Hub, **kwargs: Any) -> LeanClient:
    try:
        module, name = CLASSES[transport].split(":")
    except KeyError:
        raise ValueError(f"unknown transport {transport!r}; one of {', '.join(CLASSES)}") from None
    cls = getattr(importlib.import_module(module), name)
    return cls(base_url, hub, **kwargs)  # type: ignore[no-any-return]
