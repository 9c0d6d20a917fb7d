"""Faults on real servers with the real clients: a clean stop, a kill -9, a slow consumer, and a
reconnect storm, over every transport where the fault applies.

``test_serve.py`` checks that SIGTERM ends streams and exits cleanly; here the server comes
back on the same port and the clients must resume on their own. The memory broker keeps
history in the process, so a restarted server has none of it: the clients must get an explicit
``gap`` for it (docs/PROTOCOL.md: loss is never silent), and every message sent after the restart
must arrive exactly once. Tokens survive the restart because every server here shares one
``--secret``.

Slow consumers only exist where the server pushes into a live queue (sse, h2, ws, ws@websockets):
a poll asks for what it wants, and a held long poll is answered whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import psutil
import pytest

from tests.servers import BACKENDS, ServerProcess
from wirewise.clients import Client, Subscription, client_for
from wirewise.protocol import Error, Gap, NewMessage, ServerMessage

SECRET = "faults-secret"
SETTINGS = (
    "--secret",
    SECRET,
    "--presence-timeout",
    "1",
    "--set",
    "send_rate=100000",
    "--set",
    "send_burst=100000",
    "--set",
    "max_connections_per_user=5000",
)
PUSH = ("sse", "h2", "ws", "ws@websockets")
POLLING = ("poll", "longpoll")
TRANSPORTS = POLLING + PUSH
WAIT = 10.0


@dataclass
class Restartable:
    """One backend that can be stopped (SIGTERM or SIGKILL) and started again on its port."""

    name: str
    extra: tuple[str, ...] = ()
    current: ServerProcess | None = None
    port: int = 0
    started: list[ServerProcess] = field(default_factory=list)

    def start(self) -> ServerProcess:
        transport, args = BACKENDS[self.name]
        port = ("--port", str(self.port)) if self.port else ()
        server = ServerProcess(transport, (*args, *SETTINGS, *self.extra, *port))
        self.started.append(server)
        self.current = server.start()
        self.port = int(server.url.rsplit(":", 1)[1])
        return server

    @property
    def url(self) -> str:
        assert self.current is not None
        return self.current.url

    def kill(self) -> None:
        """SIGKILL, by pid: no close frame, no flush, no last word."""
        assert self.current is not None and self.current.proc is not None
        os.kill(self.current.pid, signal.SIGKILL)
        self.current.proc.wait(5)

    def restart(self, deadline: float = 10.0) -> ServerProcess:
        """Start again on the same port (retried while the old socket lets go)."""
        end = time.monotonic() + deadline
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def backend() -> Iterator[Callable[..., Restartable]]:
    made: list[Restartable] = []

    def factory(name: str, *extra: str) -> Restartable:
        server = Restartable(name, extra)
        made.append(server)
        server.start()
        return server

    yield factory
    for server in made:
        server.stop_all()


def make_client(name: str, url: str, **kwargs: object) -> Client:
    transport = BACKENDS[name][0]
    if transport == "poll":
        kwargs.setdefault("interval", 0.05)
    return client_for(transport, url, **kwargs)


def receive_until(
    sub: object, done: Callable[[list[ServerMessage]], bool], timeout: float = WAIT
) -> list[ServerMessage]:
    """Messages from a queue subscription until ``done(seen)`` or the timeout."""
    seen: list[ServerMessage] = []
    deadline = time.monotonic() + timeout
    while not done(seen) and time.monotonic() < deadline:
        message = sub.get(0.2)  # type: ignore[attr-defined]
        if message is not None:
            seen.append(message)
    return seen


def texts(messages: list[ServerMessage]) -> list[str]:
    return [m.text for m in messages if isinstance(m, NewMessage)]


def send_all(name: str, url: str, room: str, words: list[str], **kwargs: object) -> list[int]:
    sender = make_client(name, url, **kwargs)
    try:
        sender.login("sender")
        return [sender.send(room, word) for word in words]
    finally:
        sender.close()


def after_restart_exactly_once(
    name: str, server: Restartable, sub: object, room: str
) -> tuple[Gap, list[ServerMessage]]:
    """A gap for what the dead process held, then each message sent afterwards once.

    Returns the gap and what was read before it (from the dead process, still queued)."""
    seen = receive_until(sub, lambda seen: any(isinstance(m, Gap) for m in seen))
    gaps = [m for m in seen if isinstance(m, Gap)]
    assert gaps, f"no gap after the restart; got {seen}"
    # The new process numbers from its own start time: above every id the dead one gave.
    assert gaps[0].oldest_available > gaps[0].requested_after
    before = seen[: seen.index(gaps[0])]
    assert not texts(seen[len(before) :]), "nothing of the dead process's comes after the gap"
    after = [f"after-{i}" for i in range(5)]
    send_all(name, server.url, room, after)
    seen = receive_until(sub, lambda seen: len(texts(seen)) >= len(after))
    seen += receive_until(sub, lambda seen: False, timeout=0.5)  # a duplicate would come now
    assert texts(seen) == after, "each message sent after the restart arrives once, in order"
    assert sub.error is None  # type: ignore[attr-defined]
    return gaps[0], before


@contextlib.contextmanager
def reading(name: str, url: str, room: str = "room") -> Iterator[Subscription]:
    """A reader subscribed to ``room`` from the start, connected; closed afterwards."""
    client = make_client(name, url)
    try:
        client.login("reader")
        sub = client.subscribe(room, after=0)
        assert sub.wait_connected(WAIT)
        yield sub
    finally:
        client.close()


@pytest.mark.parametrize("name", TRANSPORTS)
def test_sigterm_then_restart_resumes_without_loss_or_duplicate(
    backend: Callable[..., Restartable], name: str
) -> None:
    server = backend(name)
    with reading(name, server.url) as sub:
        before = [f"before-{i}" for i in range(5)]
        send_all(name, server.url, "room", before)
        seen = receive_until(sub, lambda seen: len(texts(seen)) >= len(before))
        assert texts(seen) == before
        assert server.current is not None and server.current.terminate(10) == 0
        server.restart()
        gap, queued = after_restart_exactly_once(name, server, sub, "room")
        # A clean stop flushed every stream first: the gap covers nothing this client missed.
        assert gap.requested_after == max(getattr(m, "id", 0) or 0 for m in seen + queued)
        assert sub.reconnects >= 1


@pytest.mark.parametrize("name", TRANSPORTS)
def test_kill9_then_restart_signals_the_lost_history_with_a_gap(
    backend: Callable[..., Restartable], name: str
) -> None:
    server = backend(name)
    with reading(name, server.url) as sub:
        acked = send_all(name, server.url, "room", [f"old-{i}" for i in range(20)])
        seen = receive_until(sub, lambda seen: len(texts(seen)) >= 3)
        server.kill()  # some of the 20 may still be in flight: they die with the process
        server.restart()
        gap, queued = after_restart_exactly_once(name, server, sub, "room")
        got = {m.id for m in seen + queued if isinstance(m, NewMessage)}
        # Never silent: every stored message was received, or lies past the gap's cursor.
        silently_lost = [i for i in acked if i not in got and i <= gap.requested_after]
        assert not silently_lost, f"lost without a gap: {silently_lost}"


STALLABLE = ("sse", "h2", "ws", "ws@websockets")
"""Every push transport: the HTTP/2 client acknowledges DATA only as its consumer reads it, so
a stalled consumer stops granting window and the server feels it as on the others (a bare
``h2`` reader that withholds WINDOW_UPDATE is tested apart, below)."""


@pytest.mark.parametrize("name", STALLABLE)
def test_slow_consumer_is_cut_off_resumes_and_memory_stays_bounded(
    backend: Callable[..., Restartable], name: str
) -> None:
    size = 16_000
    server = backend(
        name, "--set", "queue=20", "--set", "history=2000", "--set", f"max_text={size}"
    )
    assert server.current is not None
    process = psutil.Process(server.current.pid)
    gate = threading.Event()
    received: list[ServerMessage] = []

    def stall(message: ServerMessage) -> None:
        gate.wait()  # the reader thread stops reading the socket
        received.append(message)

    reader = make_client(name, server.url)
    sender = make_client(name, server.url)
    try:
        reader.login("slow")
        sub = reader.subscribe("room", after=0, on_message=stall)
        assert sub.wait_connected(WAIT)
        sender.login("fast")
        baseline = process.memory_info().rss
        peak = baseline
        sent = 0
        cut_off_at = None
        while sent < 1500 and (cut_off_at is None or sent < cut_off_at + 100):
            sender.send("room", f"{sent:06d}" + "x" * (size - 6))
            sent += 1
            if sent % 20 == 0:
                peak = max(peak, process.memory_info().rss)
                if cut_off_at is None and server.current.stats()["slow_consumer_disconnects"]:
                    cut_off_at = sent
        assert cut_off_at is not None, f"no slow_consumer after {sent} messages of {size} chars"
        grown = peak - baseline
        # Bounded: the room's history (2000 x 16 KB at most) and buffers, not what was sent.
        assert grown < 64 * 2**20, f"server RSS grew {grown / 2**20:.0f} MiB while stalled"
        gate.set()
        deadline = time.monotonic() + WAIT
        while len(texts(received)) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        got = [int(t[:6]) for t in texts(received)]
        assert got == list(range(sent)), "resumed with every message once, in order"
        assert sub.reconnects >= 1
        errors = [m.code for m in received if isinstance(m, Error)]
        assert set(errors) <= {"slow_consumer"}
    finally:
        gate.set()
        reader.close()
        sender.close()


def test_h2_stream_that_withholds_window_updates_is_cut_off_and_resumes(
    backend: Callable[..., Restartable],
) -> None:
    """HTTP/2's own back-pressure: a stream whose reader never grants window (a bare ``h2``
    connection that reads nothing after the headers) must be cut off as a slow consumer like
    a stalled socket, and the real client resumes from its cursor with nothing lost.

    Before servers/patches.py's ``h2-stream-backpressure`` hypercorn buffered such a stream without
    bound: 1,500 messages of 16 KB grew the server 28 MiB and nobody was cut off."""
    size = 16_000
    server = backend("h2", "--set", "queue=20", "--set", f"max_text={size}")
    assert server.current is not None
    process = psutil.Process(server.current.pid)
    baseline = process.memory_info().rss
    sender = make_client("h2", server.url)
    token = sender.login("fast")
    host, port = server.url.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    try:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [(":method", "GET"), (":scheme", "http"), (":authority", f"{host}:{port}"),
             (":path", "/rooms/room/stream?after=0"), ("authorization", f"Bearer {token}")],
            end_stream=True,
        )  # fmt: skip
        sock.sendall(conn.data_to_send())
        sent = 0
        while sent < 300 and not server.current.stats()["slow_consumer_disconnects"]:
            for _ in range(10):
                sender.send("room", f"{sent:06d}" + "x" * (size - 6))
                sent += 1
        # 64 KiB of window at most reached the stalled stream; the rest had to queue, and the
        # queue (20) overflowed.
        assert server.current.stats()["slow_consumer_disconnects"] >= 1, f"{sent} sent"
        for _ in range(200):  # and once it is cut off, more traffic costs only history
            sender.send("room", f"{sent:06d}" + "x" * (size - 6))
            sent += 1
        grown = process.memory_info().rss - baseline
        assert grown < 32 * 2**20, f"server RSS grew {grown / 2**20:.0f} MiB"
    finally:
        sock.close()
    reader = make_client("h2", server.url)
    try:
        reader.login("slow")
        sub = reader.subscribe("room", after=0)
        seen = receive_until(sub, lambda seen: len(texts(seen)) >= sent)
        assert [int(t[:6]) for t in texts(seen)] == list(range(sent))
    finally:
        reader.close()
        sender.close()


# -- the reconnect storm -------------------------------------------------------------------


@dataclass
class Storm:
    clients: int
    outage_s: float
    """From the SIGKILL until the new process listened (as its first line was read)."""
    all_back_s: float
    """From the SIGKILL until every client had its gap."""
    reconnect_ms: list[float]
    """Each client: from the SIGKILL until its gap arrived (what its user waits)."""
    back: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.reconnect_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.back}/{self.clients} back; all back {self.all_back_s:.2f} s after the"
            f" kill (outage {self.outage_s:.2f} s); reconnect p50 {self.percentile(0.5):.0f} ms,"
            f" p99 {self.percentile(0.99):.0f} ms, max {max(self.reconnect_ms):.0f} ms,"
            f" mean {statistics.fmean(self.reconnect_ms):.0f} ms"
        )


def reconnect_storm(server: Restartable, name: str, count: int, timeout: float) -> Storm:
    """``count`` subscribers, kill -9, restart on the same port, wait for every gap."""
    first = make_client(name, server.url)
    token = first.login("storm")
    first.close()
    back_at: dict[int, float] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def on_message(index: int) -> Callable[[ServerMessage], None]:
        def record(message: ServerMessage) -> None:
            if killed.is_set() and isinstance(message, Gap):
                with lock:
                    back_at.setdefault(index, time.monotonic())

        return record

    # Polls at the default interval: 1,000 clients polling 20 times a second is a flood.
    kwargs = {"interval": 1.0} if name == "poll" else {}
    clients = [make_client(name, server.url, token=token, **kwargs) for _ in range(count)]
    try:
        subs = [
            c.subscribe("storm", after=0, on_message=on_message(i)) for i, c in enumerate(clients)
        ]
        deadline = time.monotonic() + timeout
        for sub in subs:
            assert sub.wait_connected(max(0.1, deadline - time.monotonic()))
        # Enough history that the new process's ids (joins, leaves) cannot pass the clients'
        # cursors during the storm: that is the stale-cursor hole, tested on its own below.
        words = [f"before the kill {i}" for i in range(100)]
        ids = send_all(name, server.url, "storm", words, timeout=30.0)  # 1,000 streams are busy
        while any((sub.last_id or 0) < max(ids) for sub in subs) and time.monotonic() < deadline:
            time.sleep(0.05)  # every cursor at the last id (a slow poller's would be stale)
        killed.set()
        kill_at = time.monotonic()
        server.kill()
        server.restart()
        listening_at = time.monotonic()
        end = listening_at + timeout
        while len(back_at) < count and time.monotonic() < end:
            time.sleep(0.02)
        with lock:
            times = [(t - kill_at) * 1000 for t in back_at.values()]
        return Storm(
            clients=count,
            outage_s=listening_at - kill_at,
            all_back_s=(max(back_at.values()) - kill_at) if back_at else float("inf"),
            reconnect_ms=times or [float("inf")],
            back=len(times),
        )
    finally:
        for client in clients:
            client.close()


@pytest.mark.timeout(60)
def test_reconnect_storm_of_200_clients_after_kill9() -> None:
    server = Restartable("ws@websockets")
    try:
        server.start()
        storm = reconnect_storm(server, "ws@websockets", 200, timeout=20)
    finally:
        server.stop_all()
    print(storm.line("ws@websockets"))
    assert storm.back == 200, storm.line("ws@websockets")
    # Full-jitter backoff capped at 5 s: everyone is back within a few caps of the restart.
    assert storm.all_back_s - storm.outage_s < 12, storm.line("ws@websockets")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", TRANSPORTS)
def test_reconnect_storm_of_1000_clients_after_kill9(name: str) -> None:
    server = Restartable(name)
    try:
        server.start()
        storm = reconnect_storm(server, name, 1000, timeout=60)
    finally:
        server.stop_all()
    print(storm.line(name))
    assert storm.back == 1000, storm.line(name)


@pytest.mark.parametrize("name", ["sse", "poll"])
def test_a_cursor_from_before_the_restart_is_never_taken_for_a_new_one(
    backend: Callable[..., Restartable], name: str
) -> None:
    server = backend(name)
    client = make_client(name, server.url)
    try:
        client.login("reader")
        sub = client.subscribe("room", after=0)
        send_all(name, server.url, "room", ["one", "two", "three"])
        receive_until(sub, lambda seen: len(texts(seen)) >= 3)
        cursor = sub.last_id
        assert cursor is not None
        sub.close()  # the reader is away (a phone in a tunnel) while the server restarts
        server.kill()
        server.restart()
        # Ids never repeat across restarts (each process numbers from its start time), so
        # every id of the new process is above the old cursor, however many it stores.
        sent = send_all(name, server.url, "room", ["new-0", "new-1", "new-2"])
        assert min(sent) > cursor
        back = client.subscribe("room", after=cursor)
        seen = receive_until(back, lambda seen: texts(seen)[-1:] == ["new-2"], 5)
        assert isinstance(seen[0], Gap), f"resumed after={cursor} on the new process with no gap"
        assert seen[0].requested_after == cursor
        assert texts(seen) == ["new-0", "new-1", "new-2"]
    finally:
        client.close()
