"""Fixtures: real servers on ephemeral loopback ports, stopped by pid when the test ends."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import ServerProcess, start
from wirewise.cluster import PROGRAMS, start_redis

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


def needs(part: str) -> None:
    """Skip when Debian's program for ``part`` is missing (.ci/run installs them all)."""
    program = PROGRAMS[part]
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (.ci/run installs it)")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A ``redis-server`` of the tests' own on a free loopback port, stopped by its pid."""
    needs("redis")
    workdir = Path(tempfile.mkdtemp(prefix="wirewise-test-redis-"))
    redis = start_redis(workdir)
    try:
        yield redis.address
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
