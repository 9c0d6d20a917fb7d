"""Every limit and timeout of a wirewise server, with its named default, in one place.

docs/PROTOCOL.md ("Limits and slow consumers") names these defaults; the benchmark may raise them
and records in its results that it did (:meth:`Settings.changed`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from wirewise.protocol import DEFAULT_MAX_TEXT

KiB = 1024


@dataclass(frozen=True)
class Settings:
    max_text: int = DEFAULT_MAX_TEXT
    """Characters (code points) in a message's text: ``message_too_large`` above."""
    max_body: int = 64 * KiB
    """Bytes in an HTTP request body: 413 ``message_too_large`` above."""
    max_frame: int = 64 * KiB
    """Bytes in a WebSocket frame or a TCP line: close 1009 above."""
    history: int = 1000
    """Events each room keeps for resume; older ones are answered with ``gap``."""
    queue: int = 1000
    """Events queued for one live subscriber before it is cut off as a ``slow_consumer``."""
    send_rate: float = 50.0
    """Sends per user per second, sustained (``rate_limited`` above)."""
    send_burst: int = 100
    """Sends a user may make at once before the sustained rate applies."""
    longpoll_max_wait: float = 30.0
    """Longest a long poll is held (``wait`` is capped to it)."""
    header_timeout: float = 10.0
    """Seconds a client has to send its request headers before the connection is closed."""
    heartbeat: float = 15.0
    """Seconds between SSE comment heartbeats (keeps proxies from timing the stream out)."""
    presence_timeout: float = 30.0
    """Seconds without a poll after which a polling user has left its room."""
    send_timeout: float = 10.0
    """Seconds a single write to a stream may block before the subscriber is dropped."""
    max_connections: int = 100_000
    """Live subscriptions (streams, sockets, held polls) in total: ``too_many_connections``."""
    max_connections_per_user: int = 64
    """Live subscriptions of one user."""
    token_max_age: float = 24 * 3600.0
    """Seconds a login token stays valid."""
    gc_threshold: int = 7000
    """CPython's young-generation collection threshold (CPython ships 700). Full collections
    walk every connection's objects: 20-30 ms each with 500 HTTP/2 connections, nine in a
    40-second broadcast at 700, which put them in the p99. At 7,000 none happened and p99 fell
    from 43-72 ms to 23-26 ms (wirewise bench --scenario broadcast --transport h2)."""
    ws_compression: bool = False
    """permessage-deflate: costs ~35 KiB per connection and invites compression bombs."""
    allow_origins: tuple[str, ...] = field(default_factory=tuple)
    """Browser origins allowed besides the server's own and localhost."""
    secret: str | None = None
    """Token signing key; a random one per process when not given."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"{f.name} must be positive, not {value}")

    def changed(self) -> dict[str, object]:
        """Settings that differ from the defaults (recorded with every result)."""
        default = Settings()
        return {
            f.name: value
            for f in fields(self)
            if f.name != "secret" and (value := getattr(self, f.name)) != getattr(default, f.name)
        }

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("secret")
        return d
