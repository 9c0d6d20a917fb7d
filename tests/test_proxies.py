"""nginx between the clients and one server (``bench --proxy``): what each profile carries, on
real servers through a real nginx, with the real clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_SETTINGS, needs
from tests.servers import ServerProcess, start
from wirewise.cli import main
from wirewise.clients import client_for
from wirewise.protocol import NewMessage
from wirewise.proxies import PROFILES, check_profile, start_proxy
from wirewise.results import read_summary

WAIT = 3.0


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ServerProcess]]:
    needs("nginx")
    started = {name: start(name, *TEST_SETTINGS) for name in ("sse", "longpoll", "ws")}
    yield started
    for server in started.values():
        server.stop()


def _delivers(url: str, transport: str) -> float | None:
    """Seconds from a send to its delivery through ``url``, or None when it never subscribed."""
    client = client_for(transport, url)
    try:
        client.login("ada")
        sub = client.subscribe("proxied", after=0)
        if not sub.wait_connected(WAIT):
            return None
        began = time.monotonic()
        client.send("proxied", "through")
        while time.monotonic() - began < WAIT:
            message = sub.get(0.05)
            if isinstance(message, NewMessage) and message.text == "through":
                return time.monotonic() - began
        raise AssertionError(f"{transport}: subscribed, but the message never came through")
    finally:
        client.close()


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_carries_http_and_only_the_tuned_one_carries_websocket(
    servers: dict[str, ServerProcess], profile: str
) -> None:
    """Measured, not assumed: nginx's buffering (on in the default profiles, even with the
    server's ``X-Accel-Buffering: no`` ignored) did not hold an SSE event or a long poll's
    answer here; what breaks a transport is a missing ``Upgrade``."""
    for transport in ("sse", "longpoll", "ws"):
        proxy = start_proxy(profile, servers[transport].url, transport)
        try:
            took = _delivers(proxy.url, transport)
        finally:
            proxy.stop()
        if transport == "ws" and profile != "nginx-tuned":
            assert took is None, f"{profile} passed a WebSocket upgrade"
        else:
            assert took is not None and took < 1.0, (profile, transport, took)


def test_a_profile_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="prior knowledge"):
        check_profile("nginx-tuned", "h2")
    with pytest.raises(ValueError, match="not HTTP"):
        check_profile("nginx-tuned", "tcp")
    with pytest.raises(ValueError, match="--proxy takes"):
        check_profile("squid", "sse")


def test_a_bench_through_nginx_records_the_path(tmp_path: Path) -> None:
    """chat on sse behind nginx's defaults (~10 s): valid, nginx sampled as a part, and the
    report names the path."""
    needs("nginx")
    argv = ["bench", "--scenario", "chat", "--quick", "--transport", "sse", "--duration", "1"]
    assert main([*argv, "--proxy", "nginx-default", "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (result,) = read_summary(run)["results"]
    assert result["validity"]["valid"], result["validity"]
    assert result["deployment"]["proxy"] == "nginx-default"
    assert set(result["parts_cpu_ms_per_1k_msgs"]) == {"nginx", "instance 1"}
    deliveries = result["deliveries"]
    assert deliveries["delivered"] == deliveries["expected"] > 0
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert "Locust -> nginx (nginx-default) -> one server" in (out / "report.md").read_text()
