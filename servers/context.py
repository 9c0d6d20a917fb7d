"""What every transport's endpoint is handed: the core, the settings, tokens, the ticker.

One :class:`Context` per server process, shared by every transport it serves (ASGI endpoints,
the bare websockets server and the tcp floor alike).
"""

from __future__ import annotations

import os
import socket
import time

from wirewise.servers.aio import Ticker
from wirewise.servers.auth import Tokens
from wirewise.servers.config import Settings
from wirewise.servers.core import Broker, ChatCore

__all__ = ["Context", "make_context"]


class Context:
    """What an endpoint needs: the core, the settings, the token signer, the heartbeat ticker."""

    def __init__(self, core: ChatCore, tokens: Tokens) -> None:
        self.core = core
        self.settings: Settings = core.settings
        self.tokens = tokens
        # Ticks every SSE stream each half heartbeat (servers.sse.Stream.tick); run by the
        # application's lifespan.
        self.heartbeats = Ticker(core.settings.heartbeat / 2)
        self.started = time.monotonic()
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        """Which process answered (``GET /stats``): behind a balancer, one of several."""

    def stats(self) -> dict[str, object]:
        """``GET /stats``: which instance, how long up, and the core's and broker's counts."""
        return {
            "instance": self.instance,
            "uptime_s": round(time.monotonic() - self.started, 3),
            **self.core.stats(),
        }


def make_context(settings: Settings | None = None, broker: Broker | None = None) -> Context:
    settings = settings or Settings()
    return Context(ChatCore(settings, broker), Tokens(settings.secret, settings.token_max_age))
