"""The fallback client (clients/fallback.py) against a real server, directly and through
nginx configured as a proxy that strips ``Upgrade``: the order it tries, what it settles on,
what the failed step cost, and that the settled transport carries the chat."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import TEST_SETTINGS, needs
from tests.servers import ServerProcess, start
from wirewise.clients import ConnectError
from wirewise.clients.fallback import DEFAULT_ORDER, FallbackClient, parse_order
from wirewise.protocol import NewMessage, ServerMessage
from wirewise.proxies import Proxy, start_proxy

WAIT = 5.0
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """uvicorn serving the one application: every HTTP transport's routes and WebSocket."""
    started = start("ws", *TEST_SETTINGS)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def blocking(server: ServerProcess) -> Iterator[Proxy]:
    needs("nginx")
    proxy = start_proxy("no-upgrade", server.url, "sse")
    yield proxy
    proxy.stop()


def _chat(client: FallbackClient, room: str) -> list[str]:
    """Subscribe (which negotiates), send one message, return the texts that came back."""
    got: list[str] = []

    def keep(message: ServerMessage) -> None:
        if isinstance(message, NewMessage):
            got.append(message.text)

    client.login("ada")
    client.subscribe(room, on_message=keep)
    client.send(room, "hello")
    deadline = time.monotonic() + WAIT
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


def test_the_order_is_checked() -> None:
    assert parse_order("ws, sse,poll") == ("ws", "sse", "poll")
    assert parse_order(DEFAULT_ORDER) == DEFAULT_ORDER
    for bad in ("ws,ws", "carrier-pigeon", "", "tcp"):
        with pytest.raises(ValueError, match="distinct transports"):
            parse_order(bad)


def test_direct_it_settles_on_the_first_transport(server: ServerProcess) -> None:
    with FallbackClient(server.url) as client:
        assert _chat(client, "fallback-direct") == ["hello"]
        assert client.settled == "ws"
        assert [a.outcome for a in client.attempts] == ["settled"]
        assert client.lost_s == 0
        assert client.first_message_s is not None and client.first_message_s < WAIT


def test_behind_a_proxy_that_strips_upgrade_it_falls_back_to_sse(blocking: Proxy) -> None:
    """The WebSocket handshake reaches uvicorn without ``Upgrade`` and is refused: the step
    fails at once (not at its timeout), and SSE carries the chat."""
    with FallbackClient(blocking.url, step_timeout=3.0) as client:
        assert _chat(client, "fallback-blocked") == ["hello"]
        first, second = client.attempts
        assert (first.transport, first.outcome) == ("ws", "failed")
        assert first.reason, "a failed step says why"
        assert first.seconds < 1.0, "a refused handshake fails the step before its timeout"
        assert (second.transport, second.outcome) == ("sse", "settled")
        assert client.settled == "sse"
        assert client.lost_s == pytest.approx(first.seconds)
        assert client.first_message_s is not None and client.first_message_s >= first.seconds


def test_it_follows_the_given_order_and_passes_each_transport_its_options(
    blocking: Proxy,
) -> None:
    order = ("ws", "poll", "sse")
    with FallbackClient(blocking.url, order=order, options={"poll": {"interval": 0.2}}) as client:
        assert _chat(client, "fallback-order") == ["hello"]
        assert [a.transport for a in client.attempts] == ["ws", "poll"]
        assert client.settled == "poll"
        assert client.chosen is not None and client.chosen.interval == 0.2  # type: ignore[attr-defined]


def test_a_step_that_never_opens_times_out_and_none_left_is_a_clear_error() -> None:
    """A listener that accepts and never answers (a proxy holding the request): each step
    lasts its timeout, and when every transport failed the error names each one's reason."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        client = FallbackClient(
            f"http://127.0.0.1:{port}", order=("sse", "longpoll"), step_timeout=0.4
        )
        client.token = "t"  # no login: the silent server would not answer it either
        began = time.monotonic()
        with pytest.raises(ConnectError, match=r"sse: .*longpoll: "):
            client.subscribe("fallback-silent")
        assert time.monotonic() - began < 2.0
        assert [a.outcome for a in client.attempts] == ["timed out", "timed out"]
        assert all(0.4 <= a.seconds < 0.5 for a in client.attempts)
        client.close()
