"""Several processes behind a balancer, sharing rooms through Redis: ``serve --instances``.

The conformance suite runs the HTTP transports through a balancer already; here is what only a
cluster has: requests spread over its instances, every part stopped with it, a Redis emptied
under a running server, and an instance killed with SIGKILL while clients listen and send.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import TEST_SETTINGS, needs
from tests.servers import ServerProcess, start
from wirewise.clients import Client, client_for
from wirewise.cluster import ClusterPlan, start_cluster, start_redis
from wirewise.protocol import Gap, NewMessage, UserJoined, UserLeft

PART = re.compile(r"wirewise: (instance \d+|redis|haproxy|nginx) at (\S+) \(pid (\d+)\)")
WAIT = 10.0


def cluster(transport: str, balancer: str, *extra: str) -> ServerProcess:
    needs("redis")
    if balancer != "reuseport":
        needs(balancer)
    args = ("--instances", "3", "--balancer", balancer, *TEST_SETTINGS, *extra)
    return start(transport, *args)


def parts(server: ServerProcess, expected: int) -> dict[str, tuple[str, int]]:
    """name -> (address, pid), from the lines the launcher prints after its first."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = {m[1]: (m[2], int(m[3])) for m in map(PART.search, server.output) if m}
        if len(found) >= expected:
            return found
        time.sleep(0.05)
    raise AssertionError(f"the launcher named fewer than {expected} parts: {server.output}")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def started() -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize("balancer", ["haproxy", "nginx", "reuseport"])
def test_requests_spread_over_the_instances_and_every_part_stops(
    started: list[ServerProcess], balancer: str
) -> None:
    server = cluster("sse", balancer)
    started.append(server)
    named = parts(server, 4 if balancer == "reuseport" else 5)
    answered = set()
    for _ in range(24):  # a new connection each time
        answered.add(httpx.get(f"{server.url}/stats", timeout=5).json()["instance"])
    assert len(answered) >= 2, answered
    pids = [pid for _, pid in named.values()]
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert server.terminate() == 0
    deadline = time.monotonic() + WAIT
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _alive(pid)], "a part outlived its launcher"


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_sticky_keeps_each_session_on_one_instance_wherever_its_token_travels(
    started: list[ServerProcess], balancer: str
) -> None:
    """``--sticky`` hashes the token, so a browser's EventSource (``?token=``), its fetch POSTs
    (the header) and a cookie-only request reach the same instance; sessions still spread."""
    server = cluster("sse", balancer, "--sticky")
    started.append(server)
    homes = {}
    for n in range(12):  # all on one of 3 instances by chance: 3 ** -11
        token = unique(f"session{n}-")
        answers = {
            httpx.get(f"{server.url}/stats", timeout=5, **way).json()["instance"]  # type: ignore[arg-type]
            for way in (
                {"headers": {"Authorization": f"Bearer {token}"}},
                {"params": {"token": token}},
                {"cookies": {"wirewise_token": token}},
            )
            for _ in range(3)  # a new connection each time
        }
        assert len(answers) == 1, (token, answers)
        homes[token] = answers.pop()
    assert len(set(homes.values())) >= 2, homes


def test_sticky_needs_a_balancer_that_reads_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SO_REUSEPORT"):
        start_cluster(ClusterPlan("sse", balancer="reuseport", sticky=True))


def test_h2_is_not_balanced_by_nginx() -> None:
    """nginx 1.22's cleartext HTTP/2 is prior knowledge only: the client's HTTP/1.1 login
    would be refused, so the plan is, with the reason."""
    with pytest.raises(ValueError, match="prior knowledge"):
        start_cluster(ClusterPlan("h2", balancer="nginx"))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("transport", ["ws", "sse", "longpoll"])
def test_a_killed_instance_loses_nothing(started: list[ServerProcess], transport: str) -> None:
    """kill -9 one of three instances mid-conversation: its clients reconnect through the
    balancer to a survivor and resume from their cursor; the sender's retry is deduplicated
    by Redis. Every listener ends with every message once, in order, without a gap."""
    server = cluster(transport, "haproxy")
    started.append(server)
    named = parts(server, 5)
    room = unique("failover")
    sender = client_for(transport, server.url)
    sender.login(unique("sender"))
    listeners: list[Client] = []
    try:
        subs = []
        for n in range(9):
            client = client_for(transport, server.url)
            client.login(f"listener{n}")
            listeners.append(client)
            subs.append(client.subscribe(room, after=0))
        assert all(sub.wait_connected(WAIT) for sub in subs)
        victim = _busiest_instance(named, transport)
        texts = [f"m{i:02d}" for i in range(20)]
        for i, text in enumerate(texts):
            if i == 10:
                os.killpg(named[victim][1], signal.SIGKILL)
            sender.send(room, text)
        for sub in subs:
            got: list[object] = []
            deadline = time.monotonic() + WAIT
            while sum(isinstance(m, NewMessage) for m in got) < len(texts):
                message = sub.get(max(deadline - time.monotonic(), 0.01))
                if message is None and time.monotonic() > deadline:
                    break
                if message is not None:
                    got.append(message)
            assert not [m for m in got if isinstance(m, Gap)]
            assert [m.text for m in got if isinstance(m, NewMessage)] == texts
        assert sum(sub.reconnects for sub in subs) >= 1, "nobody was on the killed instance"
    finally:
        for client in [sender, *listeners]:
            client.close()


def _busiest_instance(named: dict[str, tuple[str, int]], transport: str) -> str:
    """The instance holding the most of our listeners (asked directly, not via the balancer)."""
    held = {}
    for name, (address, _) in named.items():
        if name.startswith("instance"):
            stats = httpx.get(f"{address}/stats", timeout=5).json()
            held[name] = stats["subscriptions"] if transport != "longpoll" else stats["pollers"]
    return max(held, key=lambda name: held[name])


def test_an_emptied_redis_starts_a_new_era_with_an_explicit_gap(
    started: list[ServerProcess], tmp_path: Path
) -> None:
    """Redis restarted without its data: ids go on above every old one, and an old cursor is
    answered with a gap, never a silent skip (nor a replay of someone else's messages)."""
    import redis

    needs("redis")
    own = start_redis(tmp_path)  # emptied below: not the session's shared one
    redis_url = own.address
    try:
        _emptied(started, redis_url, redis.Redis.from_url(redis_url))
    finally:
        own.stop()


def _emptied(started: list[ServerProcess], redis_url: str, redis: Any) -> None:
    server = start("ws", *TEST_SETTINGS, "--broker", redis_url)
    started.append(server)
    room = unique("era")
    with client_for("ws", server.url) as ada:
        ada.login("ada")
        old = [ada.send(room, f"old{i}") for i in range(3)]
        redis.flushall()
        new = ada.send(room, "new")
        assert new > max(old)
        sub = ada.subscribe(room, after=old[-1])
        got = []
        while not got or not isinstance(got[-1], NewMessage):
            message = sub.get(WAIT)
            assert message is not None, got
            if not isinstance(message, UserJoined):
                got.append(message)
        # Told at once, or (the process had not seen the new era yet) when it does: the
        # stream ends as at a shutdown, and the resume is answered with the gap.
        gaps = [m for m in got if isinstance(m, Gap)]
        assert [g.requested_after for g in gaps] == [old[-1]]
        assert got[-1].text == "new" and got[-1].id == new


@pytest.mark.timeout(60)
def test_the_members_of_a_killed_process_leave_once_its_lease_runs_out(
    started: list[ServerProcess], tmp_path: Path
) -> None:
    """kill -9 takes nothing back itself: a survivor sweeps the dead process's share of the
    counts and stores ``user_left`` for a user now in no process, and none for a user who is
    still present through another process."""
    from wirewise.servers.redis_broker import LEASE_S, RENEW_S

    needs("redis")
    own = start_redis(tmp_path)
    try:
        doomed = start("sse", *TEST_SETTINGS, "--broker", own.address)
        survivor = start("sse", *TEST_SETTINGS, "--broker", own.address)
        started += [doomed, survivor]
        room = unique("lease")
        clients = []
        try:
            subs = {}
            for name, server in (
                ("bob", survivor),
                ("ada", doomed),
                ("cy", doomed),
                ("cy", survivor),
            ):
                client = client_for("sse", server.url)
                client.login(name)
                clients.append(client)
                subs.setdefault(name, client.subscribe(room, after=0))
            assert all(sub.wait_connected(WAIT) for sub in subs.values())
            # Killed only once the memberships are in Redis (their joins reached bob): a
            # SIGKILL right after the stream opened could beat the join's own write there.
            joined: set[str] = set()
            deadline = time.monotonic() + WAIT
            while not {"ada", "cy"} <= joined and time.monotonic() < deadline:
                message = subs["bob"].get(0.2)
                if isinstance(message, UserJoined):
                    joined.add(message.user)
            assert {"ada", "cy"} <= joined, joined
            os.kill(doomed.pid, signal.SIGKILL)
            left: list[str] = []
            deadline = time.monotonic() + LEASE_S + 3 * RENEW_S + WAIT
            while "ada" not in left and time.monotonic() < deadline:
                message = subs["bob"].get(0.2)
                if isinstance(message, UserLeft):
                    left.append(message.user)
            assert left == ["ada"], "ada left once; cy is still here through the survivor"
            time.sleep(2 * RENEW_S)  # a second sweep takes nothing back twice
            while (message := subs["bob"].get(0.2)) is not None:
                assert not isinstance(message, UserLeft), message
        finally:
            for client in clients:
                client.close()
    finally:
        own.stop()


def test_a_rolling_restart_replaces_each_instance_and_loses_nothing(tmp_path: Path) -> None:
    """A deploy's steps through the launcher's own API: each instance in turn gets SIGTERM and
    a replacement on its port while a listener stays subscribed through HAProxy."""
    needs("redis")
    needs("haproxy")
    plan = ClusterPlan("ws", instances=3, balancer="haproxy", serve_args=TEST_SETTINGS)
    cluster = start_cluster(plan)
    try:
        room = unique("deploy")
        with client_for("ws", cluster.url) as ada, client_for("ws", cluster.url) as bob:
            ada.login("ada")
            bob.login("bob")
            sub = bob.subscribe(room, after=0)
            assert sub.wait_connected(WAIT)
            texts = []
            for index in range(3):
                old = cluster.instances[index]
                texts.append(ada.send(room, f"before {index}") and f"before {index}")
                new = cluster.replace(index)
                assert new.pid != old.pid and not _alive(old.pid)
                assert new.address == old.address  # the balancer's configuration still holds
            texts.append(ada.send(room, "after") and "after")
            got: list[str] = []
            deadline = time.monotonic() + WAIT
            while len(got) < len(texts) and time.monotonic() < deadline:
                message = sub.get(0.5)
                assert not isinstance(message, Gap)
                if isinstance(message, NewMessage):
                    got.append(message.text)
            assert got == texts
    finally:
        cluster.stop()
