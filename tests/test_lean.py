"""The lean load-generator clients read what the full clients read, on every backend, over real
sockets: the same messages, ids and ``sent_at``, answers for open-loop sends, resume without
loss or duplicate after a dropped connection, and kernel receipt times."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import TEST_SETTINGS
from tests.servers import BACKENDS, ServerProcess
from wirewise.clients import client_for
from wirewise.clients.lean import Hub, lean_client_for
from wirewise.clients.lean.base import CHECK_EVERY
from wirewise.protocol import NewMessage

pytestmark = pytest.mark.timeout(60)


def rows(hub: Hub) -> list[tuple[int, int, int, int]]:
    deliveries, _ = hub.take()
    return [tuple(deliveries[i : i + 4]) for i in range(0, len(deliveries), 4)]  # type: ignore[misc]


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def kwargs_for(transport: str) -> dict[str, Any]:
    return {"interval": 0.1} if transport == "poll" else {}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_lean_reads_what_the_full_client_reads(
    backend: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(backend, *TEST_SETTINGS)
    transport = server.transport
    hub = Hub()
    answers: list[tuple[str, int | None, str | None, int]] = []
    reference = client_for(transport, server.url, **kwargs_for(transport))
    lean = lean_client_for(transport, server.url, hub, **kwargs_for(transport))
    sender = lean_client_for(
        transport, server.url, hub, answered=lambda *a: answers.append(a), **kwargs_for(transport)
    )
    try:
        reference.login("ref")
        lean.login("lean")
        sender.login("sender")
        ref_sub = reference.subscribe("lean-room")
        assert ref_sub.wait_connected(10)
        lean.subscribe("lean-room", index=3)
        time.sleep(0.3)
        began = time.time_ns() // 1000
        scheduled = [began - 1000 * (40 - i) for i in range(40)]  # each in the past
        for i, at in enumerate(scheduled):
            sender.send("lean-room", f"m{i}", sent_at=at, client_msg_id=f"sender-{i}")
        assert wait_for(lambda: len(answers) == 40), f"{len(answers)} of 40 sends answered"
        assert all(msg_id is not None and code is None for _, msg_id, code, _ in answers)
        acked = {cid: msg_id for cid, msg_id, _, _ in answers}
        assert sorted(acked) == sorted(f"sender-{i}" for i in range(40))

        expected = []
        while len(expected) < 40:
            message = ref_sub.get(10)
            assert message is not None, "the full client stopped hearing the room"
            if isinstance(message, NewMessage):
                expected.append((message.id, message.sent_at))
        got: list[tuple[int, int, int, int]] = []
        assert wait_for(lambda: len(got.__iadd__(rows(hub)) or got) >= 40)
        assert [(msg_id, sent_at) for _, msg_id, sent_at, _ in got] == expected
        assert {room for room, _, _, _ in got} == {3}, "rows carry the subscription's index"
        assert sorted(acked.values()) == [msg_id for msg_id, _ in expected]
        assert [sent_at for _, sent_at in expected] == scheduled, "sent_at is the schedule"
        for _, _, sent_at, received in got:
            assert 0 < received - sent_at < 5_000_000, "a receipt time after the schedule"
        assert hub.duplicates == 0 and hub.mismatched == 0
    finally:
        for client in (reference, lean, sender):
            client.close()
        hub.stop()


@pytest.mark.parametrize("backend", ["sse", "h2", "ws", "tcp", "longpoll"])
def test_a_dropped_connection_resumes_without_loss_or_duplicate(
    backend: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(backend, *TEST_SETTINGS)
    transport = server.transport
    hub = Hub()
    reader = lean_client_for(transport, server.url, hub)
    sender = client_for(transport, server.url)
    try:
        reader.login("reader")
        sender.login("sender")
        sub = reader.subscribe("resume-room", index=0)
        time.sleep(0.2)
        for i in range(10):
            sender.send("resume-room", f"a{i}", sent_at=time.time_ns() // 1000)
        assert wait_for(lambda: len(hub.deliveries) >= 40)
        assert sub.conn is not None
        sub.conn.close("dropped by the test")  # the client resumes from its cursor
        for i in range(10):
            sender.send("resume-room", f"b{i}", sent_at=time.time_ns() // 1000)
        assert wait_for(lambda: len(hub.deliveries) >= 80 and sub.connected.is_set(), 15)
        ids = [msg_id for _, msg_id, _, _ in rows(hub)]
        assert len(ids) == 20 and len(set(ids)) == 20, f"{len(ids)} deliveries, ids {ids}"
        assert ids == sorted(ids)
        assert sub.reconnects == 1 and hub.events["reconnect"] == 1
    finally:
        reader.close()
        sender.close()
        hub.stop()


def test_receipt_times_come_from_the_kernel(server_factory: Callable[..., ServerProcess]) -> None:
    """A message that waited in the socket is stamped when it arrived, not when it was read."""
    server = server_factory("ws", *TEST_SETTINGS)
    hub = Hub(coalesce=0.3)  # the loop sleeps 300 ms after a wakeup before reading
    reader = lean_client_for("ws", server.url, hub)
    sender = client_for("ws", server.url)
    try:
        reader.login("reader")
        sender.login("sender")
        reader.subscribe("stamps", index=0)
        sender.subscribe("stamps")
        time.sleep(0.5)
        hub.take()
        sent = time.time_ns() // 1000
        sender.send("stamps", "hi", sent_at=sent)
        assert wait_for(lambda: len(hub.deliveries) >= 4)
        deliveries, delays = hub.take()
        latency = deliveries[3] - sent
        assert latency < 100_000, f"stamped {latency} us after the send: the read time leaked in"
        assert max(delays) >= 250_000, "the read delay shows how long data waited for us"
    finally:
        reader.close()
        sender.close()
        hub.stop()


def test_the_fast_parse_is_checked_against_the_validating_decoder(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory("tcp", *TEST_SETTINGS)
    hub = Hub()
    reader = lean_client_for("tcp", server.url, hub)
    sender = lean_client_for("tcp", server.url, hub)
    try:
        reader.login("reader")
        sender.login("sender")
        reader.subscribe("checked", index=0)
        for i in range(3 * CHECK_EVERY):
            sender.send("checked", "x", sent_at=time.time_ns() // 1000, client_msg_id=f"s-{i}")
        assert wait_for(lambda: len(hub.deliveries) >= 4 * 3 * CHECK_EVERY)
        assert hub.checked >= 2, "a sampled share is decoded in full"
        assert hub.mismatched == 0
    finally:
        reader.close()
        sender.close()
        hub.stop()


@pytest.mark.parametrize(
    ("cut", "copies"),
    [
        pytest.param(lambda s: [s], 1, id="one-chunk-per-read"),
        pytest.param(lambda s: [s[:7], s[7:50], s[50:]], 1, id="a-chunk-split-across-reads"),
        pytest.param(lambda s: [s + s], 2, id="two-chunks-in-one-read"),
        pytest.param(lambda s: [s.replace(b"\r\n", b";x=1\r\n", 1)], 1, id="a-chunk-extension"),
    ],
)
def test_sse_stream_reads_the_same_deliveries_however_the_reads_fall(
    cut: Callable[[bytes], list[bytes]], copies: int
) -> None:
    """The in-place path for the usual read (one whole chunk) and the general one agree."""
    import socket

    from wirewise.clients.lean.base import LeanSubscription
    from wirewise.clients.lean.sse import SseConn, SseLeanClient
    from wirewise.genfloor import message_bytes

    hub = Hub()
    ours, theirs = socket.socketpair()
    client = SseLeanClient("http://127.0.0.1:1", hub)
    conn = SseConn(hub, ours, LeanSubscription(client, "floor", 7, None), chunked=True)
    ping = b"8\r\n: ping\n\n\r\n"
    stream = [message_bytes("sse", 1_000_001), ping, message_bytes("sse", 1_000_002)]
    try:
        for index, part in enumerate(stream):
            for read in cut(part):
                conn.on_data(read, 1_000 + index)
    finally:
        conn.sock.close()
        theirs.close()
    got = list(hub.deliveries)
    rows = [tuple(got[i : i + 4]) for i in range(0, len(got), 4)]
    assert [(room, msg_id) for room, msg_id, _, _ in rows] == [(7, 1_000_001), (7, 1_000_002)]
    assert [received for *_, received in rows] == [1_000, 1_002]
    assert hub.duplicates == 2 * (copies - 1), "a copy of a delivered id is dropped and counted"
    assert not (conn._raw or conn._text or conn._left or conn._trailer), "nothing left over"
