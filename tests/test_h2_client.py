"""The HTTP/2 client against a real hypercorn server: one connection carries every stream and
every POST, with the POSTs staying fast while 50 streams are open (the point of the h2
transport, and what httpx could not do); plus resume, reconnect, TLS with ALPN, and gevent."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection

import psutil
import pytest

from tests.conftest import TEST_SETTINGS
from tests.servers import ROOT, ServerProcess
from wirewise.clients.base import Backoff, ClientError, Refused, Subscription, SubscriptionFailed
from wirewise.clients.h2 import H2Client, SseEvent, SseParser
from wirewise.protocol import NewMessage, ServerMessage, UserJoined

WAIT = 5.0


def collect(sub: Subscription, count: int, timeout: float = WAIT) -> list[ServerMessage]:
    """``count`` messages from an iterable subscription, failing when they do not come."""
    out: list[ServerMessage] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        message = sub.get(max(deadline - time.monotonic(), 0.01))
        assert message is not None, f"got {len(out)} of {count} messages: {out}"
        out.append(message)
    return out


def wirewise_threads(before: Collection[threading.Thread] = ()) -> list[threading.Thread]:
    """Live client threads (subscriptions, readers) not already running ``before``."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("wirewise-h2-") and t.is_alive() and t not in before
    ]


def connections_to(port: int) -> int:
    """Established TCP connections from this process to ``port`` (the client's sockets)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    )


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# -- the SSE parser (pure) -------------------------------------------------------------------


def test_sse_parser_follows_the_event_stream_rules() -> None:
    parser = SseParser()
    stream = (
        b"\xef\xbb\xbfretry: 3000\n\n"  # BOM, then a retry-only block: no event
        b": ping\r\n\r\n"  # a comment: no event
        b'id: 7\nevent: new_message\ndata: {"a":1}\n\n'
        b"data: line one\rdata: line two\r\n\r\n"  # CR and CRLF; data lines joined with LF
        b"data\n\n"  # a field without colon: empty data, dropped
        b"event: chat_error\ndata:no-space\n\n"
    )
    events = [event for i in range(len(stream)) for event in parser.feed(stream[i : i + 1])]
    assert events == [
        SseEvent("new_message", '{"a":1}', "7"),
        SseEvent("message", "line one\nline two", "7"),  # the last id persists
        SseEvent("chat_error", "no-space", "7"),
    ]
    # The same bytes in one piece parse the same; a CR ending a chunk pairs with a leading LF.
    assert SseParser().feed(stream) == events
    split = SseParser()
    assert split.feed(b"data: x\r") == []
    assert split.feed(b"\n\r") == [SseEvent("message", "x", "")]
    assert split.feed(b"\ndata: y\n\n") == [SseEvent("message", "y", "")]


# -- against a real server -------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["cleartext", "tls"])
def test_login_subscribe_send_receive(server_factory: Callable[..., ServerProcess], tls: bool):
    server = server_factory("h2", *(("--tls",) if tls else ()), *TEST_SETTINGS)
    assert server.url.startswith("https://" if tls else "http://")
    with H2Client(server.url, verify=False) as client:
        token = client.login("ada")
        assert token and client.token == token and client.user == "ada"
        sub = client.subscribe("general", after=0)
        assert sub.wait_connected(WAIT)
        sent = [
            (client.send("general", f"hello {i}", client_msg_id=f"m{i}", sent_at=1_000 + i), i)
            for i in range(3)
        ]
        joined, *messages = collect(sub, 4)
        assert joined == UserJoined(id=joined.id, room="general", user="ada")
        first = joined.id + 1  # ids are consecutive in a room (they start at the server's start)
        assert (
            [m.id for m in messages]
            == [msg_id for msg_id, _ in sent]
            == [first, first + 1, first + 2]
        )
        for message, i in zip(messages, range(3), strict=True):
            assert isinstance(message, NewMessage)
            assert (message.sender, message.text) == ("ada", f"hello {i}")
            assert (message.client_msg_id, message.sent_at) == (f"m{i}", 1_000 + i)
        assert client.alpn == ("h2" if tls else None)
        assert client.connections_opened == 1
    if tls:  # verification is on by default: a self-signed certificate is refused
        with H2Client(server.url) as strict, pytest.raises(ClientError, match="CERTIFICATE"):
            strict.login("ada")


def test_one_connection_carries_50_streams_and_fast_posts(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """The proof: 50 open SSE streams and 200 POSTs from 4 threads share one connection."""
    server = server_factory("h2", *TEST_SETTINGS)
    rooms = [f"room-{i}" for i in range(25)]
    senders, per_sender = 4, 50
    with H2Client(server.url) as client:
        client.login("ada")
        received: list[list[ServerMessage]] = []
        subs = []
        for room in rooms * 2:  # two streams per room: 50 streams
            inbox: list[ServerMessage] = []
            received.append(inbox)
            subs.append(client.subscribe(room, after=0, on_message=inbox.append))
        assert all(sub.wait_connected(WAIT) for sub in subs)

        durations: list[float] = []
        errors: list[BaseException] = []

        def sender(n: int) -> None:
            try:
                for i in range(per_sender):
                    room = rooms[(n * per_sender + i) % len(rooms)]
                    started = time.perf_counter()
                    client.send(room, f"{n}-{i}", client_msg_id=f"{n}-{i}")
                    durations.append(time.perf_counter() - started)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
        for thread in threads:
            thread.start()
        open_during = connections_to(port_of(server.url))  # measured while POSTs flow
        for thread in threads:
            thread.join(30)
        assert not errors, errors

        expected: dict[str, Counter[str]] = {room: Counter() for room in rooms}
        for n in range(senders):
            for i in range(per_sender):
                expected[rooms[(n * per_sender + i) % len(rooms)]][f"{n}-{i}"] = 1
        deadline = time.monotonic() + WAIT
        for sub, inbox in zip(subs, received, strict=True):
            want = len(expected[sub.room])
            while time.monotonic() < deadline and _count_new(inbox) < want:
                time.sleep(0.01)
        time.sleep(0.1)  # anything extra (a duplicate) would arrive now
        for sub, inbox in zip(subs, received, strict=True):
            got = Counter(m.client_msg_id for m in inbox if isinstance(m, NewMessage))
            assert got == expected[sub.room], f"stream of {sub.room}"
            ids = [m.id for m in inbox if isinstance(m, NewMessage)]
            assert ids == sorted(set(ids)), "in order, no duplicates"

        assert open_during == 1
        assert connections_to(port_of(server.url)) == 1
        assert client.connections_opened == 1
        assert all(sub.reconnects == 0 for sub in subs)
        stats = server.stats()
        assert stats["connections"] == {"h2": 50}
        assert stats["subscriptions"] == 50

    durations.sort()
    p50 = durations[len(durations) // 2]
    p99 = durations[math.ceil(0.99 * len(durations)) - 1]
    print(
        f"\nPOST with 50 open streams on one connection: n={len(durations)} "
        f"p50={p50 * 1000:.2f} ms p99={p99 * 1000:.2f} ms max={durations[-1] * 1000:.2f} ms"
    )
    assert len(durations) == senders * per_sender
    assert p99 < 0.050


def _count_new(inbox: list[ServerMessage]) -> int:
    return sum(isinstance(m, NewMessage) for m in inbox)


def test_resume_after_close_gets_exactly_the_missed_events(
    server_factory: Callable[..., ServerProcess],
) -> None:
    # Heartbeats every 0.1 s flow on the stream all along: comments must deliver nothing.
    server = server_factory("h2", "--heartbeat", "0.1", *TEST_SETTINGS)
    with H2Client(server.url) as client:
        client.login("ada")
        sub = client.subscribe("lobby", after=0)
        assert sub.wait_connected(WAIT)
        for i in range(3):
            client.send("lobby", f"before {i}")
        first = collect(sub, 4)
        last_id = first[-1].id  # type: ignore[union-attr]
        time.sleep(0.3)
        assert sub.get(0) is None, "heartbeats must not show up as messages"
        sub.close()  # RST_STREAM: the server drops the subscription and ada leaves
        deadline = time.monotonic() + WAIT
        while server.stats()["subscriptions"] and time.monotonic() < deadline:
            time.sleep(0.02)
        missed = [client.send("lobby", f"missed {i}") for i in range(3)]

        resumed = client.subscribe("lobby", after=last_id)
        again = collect(resumed, 5)
        assert [m.id for m in again] == list(range(last_id + 1, last_id + 6))  # type: ignore[union-attr]
        assert [m.type for m in again] == ["user_left", *["new_message"] * 3, "user_joined"]
        assert [m.id for m in again[1:4]] == missed  # type: ignore[union-attr]
        assert [m.text for m in again[1:4]] == [f"missed {i}" for i in range(3)]  # type: ignore[union-attr]
        assert resumed.get(0.3) is None, "no duplicate after the replay"
        assert client.connections_opened == 1


def test_refusals_are_final(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("h2", *TEST_SETTINGS)
    with H2Client(server.url, token="not-a-token") as client:
        with pytest.raises(Refused) as refused:
            client.send("general", "hi")
        assert (refused.value.code, refused.value.status) == ("unauthorized", 401)
        sub = client.subscribe("general")
        with pytest.raises(SubscriptionFailed, match="unauthorized"):
            sub.get(WAIT)
        # A refused stream and a refused POST leave the shared connection usable.
        client.login("ada")
        sent = client.send("general", "now it works")
        history = collect(client.subscribe("general", after=0), 1)
        # The refused stream joined nobody: the room's first event is this message.
        assert isinstance(history[0], NewMessage) and history[0].id == sent
        assert client.connections_opened == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SteadyBackoff(Backoff):
    """Reconnect every 0.5 s, after the stopping server's ~0.2 s shutdown. A retry within it
    opens a stream the stopping server still accepts (servers/serve.py ends the streams, then
    hypercorn takes new ones for ~50 ms) and never ends: hypercorn cancels it after its 5 s
    grace period and exits with status 1."""

    def delay(self, attempt: int) -> float:
        return 0.5


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_subscription_survives_a_server_restart(
    server_factory: Callable[..., ServerProcess], how: str
) -> None:
    """The server ends the stream cleanly (SIGTERM: end of stream, then GOAWAY) or dies
    (SIGKILL: the socket just closes); a new one takes the port; the subscription resumes on a
    new connection (ids restart there: the old cursor is answered with a gap)."""
    port = _free_port()
    args = ("--port", str(port), "--secret", "test-secret", *TEST_SETTINGS)
    first = server_factory("h2", *args)  # the last --port wins
    assert port_of(first.url) == port
    before = set(threading.enumerate())
    client = H2Client(first.url, backoff=SteadyBackoff())
    try:
        client.login("ada")
        sub = client.subscribe("general", after=0)
        client.send("general", "before")
        assert [type(m) for m in collect(sub, 2)] == [UserJoined, NewMessage]
        if how == "terminate":
            assert first.terminate() == 0
        else:
            os.kill(first.pid, signal.SIGKILL)
            first.proc.wait(WAIT)  # type: ignore[union-attr]

        second = server_factory("h2", *args)
        assert sub.wait_connected(WAIT)
        assert client.send("general", "after") >= 1  # the same token: the same secret
        rest = collect(sub, 3)  # gap, user_joined, new_message (the new server's ids)
        assert rest[0].type == "gap"
        assert [m.type for m in rest[1:]] == ["user_joined", "new_message"]
        assert rest[-1].text == "after"  # type: ignore[union-attr]
        assert sub.reconnects >= 1
        assert client.connections_opened == 2
        assert second.stats()["subscriptions"] == 1

        started = time.monotonic()
        sub.close()
        assert time.monotonic() - started < 1.0
        assert sub.get(0) is None
    finally:
        client.close()
    assert wirewise_threads(before) == []


def test_close_is_prompt_and_leaves_no_threads(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory("h2", *TEST_SETTINGS)
    before = set(threading.enumerate())
    client = H2Client(server.url)
    client.login("ada")
    subs = [client.subscribe(f"r{i}") for i in range(5)]
    assert all(sub.wait_connected(WAIT) for sub in subs)
    assert len(wirewise_threads(before)) == 6  # five subscriptions and one reader
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 1.0
    assert wirewise_threads(before) == []
    assert connections_to(port_of(server.url)) == 0
    deadline = time.monotonic() + WAIT
    while server.stats()["subscriptions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stats()["subscriptions"] == 0


GEVENT_SCRIPT = """
from gevent import monkey

monkey.patch_all()

import os
import sys
import threading

import gevent

assert monkey.is_module_patched("threading") and monkey.is_module_patched("socket")

from wirewise.clients.h2 import H2Client
from wirewise.protocol import NewMessage

with H2Client(sys.argv[1]) as client:
    client.login("ada")
    sub = client.subscribe("general", after=0)
    assert sub.wait_connected(5)
    senders = [gevent.spawn(client.send, "general", f"green {i}") for i in range(5)]
    gevent.joinall(senders, timeout=5, raise_error=True)
    texts = set()
    while len(texts) < 5:
        message = sub.get(5)
        assert message is not None, texts
        if isinstance(message, NewMessage):
            texts.add(message.text)
    assert texts == {f"green {i}" for i in range(5)}, texts
    assert client.connections_opened == 1
    # The reader and the subscriptions are greenlets: were they OS threads, the process
    # would have one more than them (the main thread) plus gevent's resolver pool.
    idle = [client.subscribe(f"idle-{i}") for i in range(3)]
    assert all(sub.wait_connected(5) for sub in idle)
    ours = [t for t in threading.enumerate() if t.name.startswith("wirewise-h2-")]
    assert len(ours) == 5, ours
    assert len(os.listdir("/proc/self/task")) < 1 + len(ours)
print("ok")
"""


def test_works_under_gevent(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("h2", *TEST_SETTINGS)
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_an_oversized_post_is_refused_on_its_stream_and_the_connection_lives_on(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """A 10 MiB POST gets its 413 on its own stream; the SSE stream beside it on the same
    connection goes on (hypercorn used to drop the whole connection: servers/patches.py)."""
    server = server_factory("h2", *TEST_SETTINGS)
    client = H2Client(server.url)
    sender = H2Client(server.url)
    try:
        token = client.login("big")
        sender.login("other")
        sub = client.subscribe("room")
        assert sub.wait_connected(10)
        status, body = client._post("/rooms/room/messages", "x" * (10 * 2**20), token)
        assert status == 413 and b"message_too_large" in body
        sender.send("room", "still here")
        texts = []
        while "still here" not in texts:
            message = sub.get(10)
            assert message is not None, "the stream beside the oversized POST went quiet"
            if isinstance(message, NewMessage):
                texts.append(message.text)
        assert client.send("room", "and my own sends too") > 0
        assert client.connections_opened == 1, "one connection throughout"
    finally:
        client.close()
        sender.close()
