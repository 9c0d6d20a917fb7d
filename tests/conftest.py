"""Fixtures: real servers on ephemeral loopback ports, stopped by pid when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.servers import ServerProcess, start

TEST_SETTINGS = ("--presence-timeout", "1", "--set", "send_rate=1000", "--set", "send_burst=1000")
"""Short presence timeout so polling membership is testable; sends not rate-limited."""


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerProcess]]:
    """Start backends by name (tests.servers.BACKENDS) with extra CLI args; all are stopped."""
    started: list[ServerProcess] = []

    def factory(name: str, *extra: str) -> ServerProcess:
        server = start(name, *extra)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
