"""The transports, the servers that carry them, and how a server says it is ready: one place.

Every other module imports these names instead of writing its own list.

| transport | servers (default first) | pushes? |
|---|---|---|
| poll | uvicorn, hypercorn | no: the client asks every T seconds |
| longpoll | uvicorn, hypercorn | emulated: a held request per delivery |
| sse | uvicorn, hypercorn | yes |
| h2 | hypercorn | yes |
| ws | uvicorn, websockets | yes |
| tcp | asyncio | yes (the calibration floor, not a choice for clients) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BACKENDS",
    "FLOOR",
    "KILLING",
    "PUSH_TRANSPORTS",
    "SERVERS",
    "TRANSPORTS",
    "Backend",
    "backend",
    "parse_ready_line",
    "ready_line",
]

TRANSPORTS = ("poll", "longpoll", "sse", "h2", "ws", "tcp")
FLOOR = "tcp"
"""The raw-TCP floor: calibration, not a transport a client chooses."""
PUSH_TRANSPORTS = ("sse", "h2", "ws")
"""Transports whose server writes a delivery as soon as it exists, on an open connection."""
SERVERS: dict[str, tuple[str, ...]] = {
    "poll": ("uvicorn", "hypercorn"),
    "longpoll": ("uvicorn", "hypercorn"),
    "sse": ("uvicorn", "hypercorn"),
    "h2": ("hypercorn",),
    "ws": ("uvicorn", "websockets"),
    "tcp": ("asyncio",),
}
"""Which servers serve which transport; the first is the default (hypercorn serves the HTTP/1.1
transports too, as the same-server control for h2)."""
PLAIN_SERVERS = frozenset({"uvicorn", "hypercorn", "asyncio"})
"""Servers a backend's label does not name (each transport's default, or the floor's)."""


KILLING = ("faults", "failover", "rolling")
"""Scenarios whose runner kills a server mid-run: reliability, not latency under load
(faults restarts the one process; failover kills one instance of three behind a balancer;
rolling replaces each of the three in turn, as a deploy does)."""


@dataclass(frozen=True)
class Backend:
    """A transport as served by one server."""

    transport: str
    server: str

    @property
    def label(self) -> str:
        """``ws`` for the default server, ``ws@websockets`` for another."""
        return self.transport if self.server in PLAIN_SERVERS else f"{self.transport}@{self.server}"

    @property
    def slug(self) -> str:
        """The label as a file name: ``ws-websockets``."""
        return self.label.replace("@", "-")

    @property
    def pushes(self) -> bool:
        return self.transport in PUSH_TRANSPORTS


BACKENDS = (
    Backend("poll", "uvicorn"),
    Backend("longpoll", "uvicorn"),
    Backend("sse", "uvicorn"),
    Backend("h2", "hypercorn"),
    Backend("ws", "uvicorn"),
    Backend("ws", "websockets"),
    Backend("tcp", "asyncio"),
)
"""What the bench measures, in the order the report shows them."""


def backend(label: str) -> Backend:
    """The backend of a label (``ws@websockets``, ``sse``)."""
    for item in BACKENDS:
        if item.label == label:
            return item
    transport, _, server = label.partition("@")
    if transport in SERVERS and (not server or server in SERVERS[transport]):
        return Backend(transport, server or SERVERS[transport][0])
    raise ValueError(f"unknown backend {label!r}; one of {', '.join(b.label for b in BACKENDS)}")


_READY = re.compile(r"serving (\S+) on (\S+) \((\S+), pid (\d+)\)")


def ready_line(transport: str, url: str, server: str, pid: int) -> str:
    """What ``wirewise serve`` prints once it listens (launchers wait for it)."""
    return f"wirewise: serving {transport} on {url} ({server}, pid {pid})"


def parse_ready_line(line: str) -> tuple[str, str, str, int] | None:
    """(transport, url, server, pid) from a ready line, or None."""
    match = _READY.search(line)
    if match is None:
        return None
    return match.group(1), match.group(2), match.group(3), int(match.group(4))
