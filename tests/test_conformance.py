"""One script, every transport: the backends must be indistinguishable to a chat client.

Each test runs against real servers (``wirewise serve T --port 0``) with the real clients, once
per backend in :data:`tests.servers.BACKENDS` with its rooms in the process, once with them in
Redis (``--broker``), and for the HTTP transports once more through a balancer in front of three
processes sharing Redis (``--instances 3``), where consecutive requests reach different
processes. Rooms and users are unique per test, so the tests share one server per setup.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import TEST_SETTINGS, needs
from tests.servers import BACKENDS, ServerProcess, start
from wirewise.clients import Client, Refused, Subscription, SubscriptionFailed, client_for
from wirewise.protocol import Error, Gap, NewMessage, ServerMessage, UserJoined, UserLeft

PUSH = {"sse", "h2", "ws", "ws@websockets", "tcp"}
WAIT = 5.0


BALANCED = [
    ("sse", "haproxy"),
    ("h2", "haproxy"),
    ("ws", "haproxy"),
    ("longpoll", "nginx"),
    ("poll", "nginx"),
]
"""Setups behind a balancer: each transport on one, both balancers, both push styles."""
SETUPS = [
    *((name, "memory") for name in BACKENDS),
    *((name, "redis") for name in BACKENDS),
    *BALANCED,
]


@dataclass
class Backend:
    name: str
    server: ServerProcess
    setup: str = "memory"

    @property
    def balanced(self) -> bool:
        """Behind a balancer: each request may reach another of the processes."""
        return self.setup in ("haproxy", "nginx")

    @property
    def transport(self) -> str:
        return self.server.transport

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def client(self, user: str | None = None) -> Client:
        kwargs: dict[str, object] = {}
        if self.transport == "poll":
            kwargs["interval"] = 0.05
        client = client_for(self.transport, self.url, **kwargs)
        if user is not None:
            client.login(user)
        return client


@pytest.fixture(scope="module", params=SETUPS, ids=[f"{n}-{s}" for n, s in SETUPS])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name, setup = request.param
    if setup == "memory":
        server = start(name, *TEST_SETTINGS)
    elif setup == "redis":
        server = start(name, *TEST_SETTINGS, "--broker", request.getfixturevalue("redis_url"))
    else:
        needs(setup)
        server = start(name, *TEST_SETTINGS, "--instances", "3", "--balancer", setup)
    try:
        yield Backend(name, server, setup)
    finally:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[[Client], Client]]:
    """Register clients to be closed at the end of the test."""
    opened: list[Client] = []

    def keep(client: Client) -> Client:
        opened.append(client)
        return client

    yield keep
    for client in opened:
        client.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def collect(
    sub: Subscription, done: Callable[[list[ServerMessage]], bool], timeout: float = WAIT
) -> list[ServerMessage]:
    """Messages until ``done(messages)`` holds; fails the test after ``timeout``."""
    got: list[ServerMessage] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        left = deadline - time.monotonic()
        message = sub.get(max(left, 0.0)) if left > 0 else None
        if message is None:
            pytest.fail(f"timed out after {timeout} s; got {got}")
        got.append(message)
    return got


def drain(sub: Subscription, quiet: float = 0.3) -> list[ServerMessage]:
    """Everything that arrives until ``quiet`` seconds pass with nothing."""
    got = []
    while (message := sub.get(quiet)) is not None:
        got.append(message)
    return got


def texts(messages: list[ServerMessage]) -> list[str]:
    return [m.text for m in messages if isinstance(m, NewMessage)]


def count_new(n: int) -> Callable[[list[ServerMessage]], bool]:
    return lambda got: sum(isinstance(m, NewMessage) for m in got) >= n


# -- delivery --------------------------------------------------------------------------------


def test_every_member_gets_every_message_in_order(
    backend: Backend, clients: Callable[[Client], Client]
) -> None:
    room = unique("room")
    members = [clients(backend.client(unique(name))) for name in ("ada", "bob", "cy")]
    subs = [c.subscribe(room, after=0) for c in members]
    for sub in subs:
        assert sub.wait_connected(WAIT)
    sent = []
    for round_ in range(4):
        for i, client in enumerate(members):
            text = f"m{round_}-{i}"
            msg_id = client.send(
                room, text, client_msg_id=unique("c"), sent_at=1_764_144_000_000_000 + round_
            )
            sent.append((msg_id, text))
    seen = []
    for sub in subs:
        got = collect(sub, count_new(len(sent)))
        news = [m for m in got if isinstance(m, NewMessage)]
        assert [(m.id, m.text) for m in news] == sent
        ids = [m.id for m in got if not isinstance(m, (Gap, Error))]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), "ids strictly increase"
        seen.append(ids)
    assert seen[0][-len(sent) :] == seen[1][-len(sent) :] == seen[2][-len(sent) :]
    assert all(isinstance(m, NewMessage) and m.sent_at is not None for m in news)


def test_sent_at_and_client_msg_id_pass_through(
    backend: Backend, clients: Callable[[Client], Client]
) -> None:
    room = unique("room")
    ada = clients(backend.client(unique("ada")))
    sub = ada.subscribe(room, after=0)
    msg_id = ada.send(room, "stamped", client_msg_id="c0ffee-1", sent_at=1_764_144_000_000_123)
    (message,) = [m for m in collect(sub, count_new(1)) if isinstance(m, NewMessage)]
    assert message.id == msg_id
    assert message.client_msg_id == "c0ffee-1"
    assert message.sent_at == 1_764_144_000_000_123
    assert message.sender == ada.user
    assert message.ts > 1_764_144_000_000_000  # server time, microseconds


def test_own_events_reach_the_sender(backend: Backend, clients: Callable[[Client], Client]) -> None:
    room = unique("room")
    ada = clients(backend.client(unique("ada")))
    sub = ada.subscribe(room, after=0)
    got = collect(sub, lambda g: any(isinstance(m, UserJoined) for m in g))
    assert any(isinstance(m, UserJoined) and m.user == ada.user for m in got)


def test_text_with_newlines_and_sse_syntax_arrives_intact(
    backend: Backend, clients: Callable[[Client], Client]
) -> None:
    room = unique("room")
    ada = clients(backend.client(unique("ada")))
    sub = ada.subscribe(room, after=0)
    tricky = "line one\n\ndata: forged\nid: 999999\r\nevent: user_left\r\r: comment\u2028end"
    ada.send(room, tricky)
    ada.send(room, "after")
    got = collect(sub, count_new(2))
    assert texts(got) == [tricky, "after"]


# -- resume ----------------------------------------------------------------------------------


def test_resume_from_after_has_no_gap_and_no_duplicate(
    backend: Backend, clients: Callable[[Client], Client]
) -> None:
    room = unique("room")
    writer = clients(backend.client(unique("wri")))
    reader = clients(backend.client(unique("rea")))
    first = reader.subscribe(room, after=0)
    assert first.wait_connected(WAIT)
    for i in range(3):
        writer.send(room, f"before-{i}")
    got = collect(first, count_new(3))
    cursor = first.last_id
    assert cursor == max(m.id for m in got if not isinstance(m, (Gap, Error)))
    first.close()
    for i in range(4):
        writer.send(room, f"missed-{i}")
    second = reader.subscribe(room, after=cursor)
    got = collect(second, count_new(4))
    writer.send(room, "live")
    got += collect(second, count_new(1))
    assert texts(got) == [*(f"missed-{i}" for i in range(4)), "live"]
    ids = [m.id for m in got if not isinstance(m, (Gap, Error))]
    assert ids[0] == cursor + 1, "no gap at the seam"
    assert ids == sorted(set(ids)), "no duplicate"
    assert not any(isinstance(m, Gap) for m in got)


def test_cursor_from_a_previous_server_gets_an_explicit_gap(
    backend: Backend, clients: Callable[[Client], Client]
) -> None:
    room = unique("room")
    ada = clients(backend.client(unique("ada")))
    first = ada.send(room, "one")
    stale = 10**9  # below this process's ids, which start at its start time in microseconds
    sub = ada.subscribe(room, after=stale)
    got = collect(sub, count_new(1))
    assert isinstance(got[0], Gap)
    # Oldest held: "one", or the sender's own join before it (push transports join on connect).
    assert got[0].requested_after == stale and stale < got[0].oldest_available <= first
    assert texts(got) == ["one"]
    ada.send(room, "two")
    assert texts(collect(sub, count_new(1))) == ["two"], "ids after the gap are accepted"


# -- idempotency -----------------------------------------------------------------------------


def test_retried_send_is_stored_once(backend: Backend, clients: Callable[[Client], Client]) -> None:
    room = unique("room")
    ada = clients(backend.client(unique("ada")))
    sub = ada.subscribe(room, after=0)
    first = ada.send(room, "once", client_msg_id="retry-me")
    again = ada.send(room, "once", client_msg_id="retry-me")
    other = ada.send(room, "twice", client_msg_id="another")
    assert first == again != other
    got = collect(sub, count_new(2)) + drain(sub)
    assert texts(got) == ["once", "twice"]


# -- membership ------------------------------------------------------------------------------


def test_membership_join_and_leave(backend: Backend, clients: Callable[[Client], Client]) -> None:
    room = unique("room")
    ada = clients(backend.client(unique("ada")))
    watcher = ada.subscribe(room, after=0)
    collect(watcher, lambda g: any(isinstance(m, UserJoined) and m.user == ada.user for m in g))
    bob = clients(backend.client(unique("bob")))
    bob_sub = bob.subscribe(room)
    assert bob_sub.wait_connected(WAIT)
    got = collect(
        watcher, lambda g: any(isinstance(m, UserJoined) and m.user == bob.user for m in g)
    )
    assert not any(isinstance(m, UserLeft) for m in got)
    started = time.monotonic()
    bob_sub.close()
    # Push transports know at once; polling only when the presence timeout (1 s here) runs out.
    got = collect(watcher, lambda g: any(isinstance(m, UserLeft) and m.user == bob.user for m in g))
    elapsed = time.monotonic() - started
    if backend.name in PUSH:
        assert elapsed < 1.0, f"push transports see a leave at once, took {elapsed:.2f} s"
    else:
        assert 0.5 <= elapsed < 4.0, (
            f"polling leaves after the presence timeout, took {elapsed:.2f} s"
        )


# -- refusals and bad input ------------------------------------------------------------------


def test_bad_token_is_refused(backend: Backend, clients: Callable[[Client], Client]) -> None:
    room = unique("room")
    mallory = clients(backend.client())
    mallory.token = "mallory.forged.signature"
    sub = mallory.subscribe(room, after=0)
    with pytest.raises(SubscriptionFailed, match="unauthorized"):
        sub.get(WAIT)
    with pytest.raises(Refused) as refused:
        mallory.send(room, "let me in")
    assert refused.value.code == "unauthorized"


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("truncated JSON", b'{"type":"send_message","text":', "bad_json"),
    ("invalid UTF-8", b'{"type":"send_message","text":"\xff\xfe"}', "bad_json"),
    ("not an object", b"[1, 2, 3]", "bad_message"),
    ("no type", b'{"text":"hi"}', "bad_message"),
    ("unknown type", b'{"type":"shout","text":"hi"}', "unknown_type"),
    (
        "text too long",
        json.dumps({"type": "send_message", "text": "x" * 4097}).encode(),
        "message_too_large",
    ),
    ("text not a string", b'{"type":"send_message","text":5}', "bad_message"),
    ("empty text", b'{"type":"send_message","text":""}', "bad_message"),
    ("room path-like", b'{"type":"send_message","room":"../etc","text":"hi"}', "bad_room"),
    (
        "client_msg_id too long",
        json.dumps({"type": "send_message", "text": "x", "client_msg_id": "y" * 65}).encode(),
        "bad_message",
    ),
    ("sent_at not a number", b'{"type":"send_message","text":"x","sent_at":"soon"}', "bad_message"),
    (
        "huge number",
        b'{"type":"send_message","text":"x","sent_at":' + b"9" * 5000 + b"}",
        "bad_json",
    ),
    ("deep nesting", b"[" * 10000 + b"]" * 10000, "bad_json"),
]


def send_raw(backend: Backend, token: str, room: str, payload: bytes) -> tuple[int | None, str]:
    """Send ``payload`` as the transport's client would; return (HTTP status, error code)."""
    if backend.transport in ("poll", "longpoll", "sse", "h2"):
        http2 = backend.transport == "h2"
        with httpx.Client(http1=not http2, http2=http2) as http:
            response = http.post(
                f"{backend.url}/rooms/{room}/messages",
                content=payload,
                headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            )
        return response.status_code, response.json()["code"]
    if backend.transport == "ws":
        with connect(
            f"{backend.ws_url}/rooms/{room}/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            try:
                ws.send(payload.decode("utf-8"))
            except UnicodeDecodeError:
                ws.send(payload)  # a binary frame: WebSocket text must be UTF-8
            while True:
                answer = json.loads(ws.recv(timeout=WAIT))
                if answer["type"] == "error":
                    return None, answer["code"]
    return None, send_raw_tcp(backend, token, room, payload)


def send_raw_tcp(backend: Backend, token: str, room: str, payload: bytes) -> str:
    import socket

    host, port = backend.url.removeprefix("tcp://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=WAIT) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(json.dumps({"type": "hello", "token": token, "room": room}).encode() + b"\n")
        sock.sendall(payload + b"\n")
        while line := reader.readline():
            answer = json.loads(line)
            if answer["type"] == "error":
                return answer["code"]
    raise AssertionError("the connection closed without an error")


@pytest.mark.parametrize(("label", "payload", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_its_error_code_and_harms_no_one(
    backend: Backend, clients: Callable[[Client], Client], label: str, payload: bytes, code: str
) -> None:
    room = unique("room")
    bystander = clients(backend.client(unique("by")))
    watch = bystander.subscribe(room, after=0)
    assert watch.wait_connected(WAIT)
    sender = clients(backend.client(unique("bad")))
    assert sender.token is not None
    expected = code
    if backend.transport == "ws" and label == "invalid UTF-8":
        expected = "bad_message"  # sent as a binary frame, which the protocol refuses
    status, answer = send_raw(backend, sender.token, room, payload)
    assert answer == expected
    if status is not None:
        assert status == (413 if code == "message_too_large" else 400)
    bystander.send(room, "still here")
    got = collect(watch, count_new(1)) + drain(watch, 0.2)
    assert texts(got) == ["still here"], "the bystander gets exactly the good message, once"


def test_oversized_body_or_frame_is_refused(
    backend: Backend, clients: Callable[[Client], Client]
) -> None:
    room = unique("room")
    sender = clients(backend.client(unique("big")))
    big = json.dumps({"type": "send_message", "text": "x" * 100_000}).encode()
    assert sender.token is not None
    if backend.transport == "ws":
        with connect(
            f"{backend.ws_url}/rooms/{room}/ws",
            additional_headers={"Authorization": f"Bearer {sender.token}"},
        ) as ws:
            ws.send(big.decode())
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    else:
        status, code = send_raw(backend, sender.token, room, big)
        assert code == "message_too_large"
        if status is not None:
            assert status == 413
    sender.send(room, "the server is still up")


def refuse_subscription(
    backend: Backend, room: str, token: str | None, query: str
) -> tuple[int, str]:
    """Open the transport's subscription by hand; return the refusal's status and code."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if backend.transport in ("poll", "longpoll", "sse", "h2"):
        path = "stream" if backend.transport in ("sse", "h2") else "events"
        extra = "&wait=1" if backend.transport == "longpoll" else ""
        http2 = backend.transport == "h2"
        with httpx.Client(http1=not http2, http2=http2) as http:
            response = http.get(
                f"{backend.url}/rooms/{room}/{path}?{query}{extra}", headers=headers
            )
        return response.status_code, response.json()["code"]
    if backend.transport == "ws":
        with pytest.raises(InvalidStatus) as refused:
            connect(
                f"{backend.ws_url}/rooms/{room}/ws?{query}",
                additional_headers=headers,
                open_timeout=WAIT,
                legacy=True,
            )
        return refused.value.response.status_code, json.loads(refused.value.response.body)["code"]
    import socket

    host, port = backend.url.removeprefix("tcp://").rsplit(":", 1)
    after = query.removeprefix("after=")
    hello = f'{{"type":"hello","token":"{token or ""}","room":"{room}"' + (
        f',"after":"{after}"}}' if after else "}"
    )
    with (
        socket.create_connection((host, int(port)), timeout=WAIT) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(hello.encode() + b"\n")
        line = reader.readline()
    return 0, json.loads(line)["code"]


@pytest.mark.parametrize(
    ("case", "room", "with_token", "query", "status", "code"),
    [
        ("missing token", "general", False, "", 401, "unauthorized"),
        ("bad cursor", "general", True, "after=abc", 400, "bad_cursor"),
        ("negative cursor", "general", True, "after=-1", 400, "bad_cursor"),
        ("cursor past 2^63", "general", True, f"after={2**63}", 400, "bad_cursor"),
        ("bad room", "no%20spaces", True, "", 400, "bad_room"),
    ],
)
def test_bad_subscription_is_refused(
    backend: Backend,
    clients: Callable[[Client], Client],
    case: str,
    room: str,
    with_token: bool,
    query: str,
    status: int,
    code: str,
) -> None:
    client = clients(backend.client(unique("sub")))
    if backend.transport == "tcp" and room != "general":
        room = "no spaces"
    got_status, got_code = refuse_subscription(
        backend, room, client.token if with_token else None, query
    )
    assert got_code == code
    if backend.transport != "tcp":
        assert got_status == status


def test_health_and_stats(backend: Backend, clients: Callable[[Client], Client]) -> None:
    if backend.transport == "tcp":
        pytest.skip("the TCP floor speaks no HTTP")
    ada = clients(backend.client(unique("ada")))
    sub = ada.subscribe(unique("room"))
    assert sub.wait_connected(WAIT)
    http2 = backend.transport == "h2"
    with httpx.Client(http1=not http2, http2=http2) as http:
        assert http.get(f"{backend.server.http_url}/healthz").status_code == 200
        stats = http.get(f"{backend.server.http_url}/stats").json()
    assert stats["events_stored"] >= 1
    assert stats["instance"]  # which process answered
    if backend.name in PUSH and not backend.balanced:
        kind = {"ws@websockets": "ws"}.get(backend.name, backend.name)
        assert stats["connections"].get(kind, 0) >= 1


# -- the clients under Locust's gevent -------------------------------------------------------

GEVENT_SCRIPT = """
from gevent import monkey

monkey.patch_all()

import sys
import gevent
from wirewise.clients import client_for
from wirewise.protocol import NewMessage

transport, url, room = sys.argv[1], sys.argv[2], sys.argv[3]
kwargs = {"interval": 0.05} if transport == "poll" else {}
alice, bob = client_for(transport, url, **kwargs), client_for(transport, url, **kwargs)
alice.login("alice"); bob.login("bob")
got = []
sub = bob.subscribe(room, after=0, on_message=got.append)
assert sub.wait_connected(5), "not connected"
senders = [gevent.spawn(alice.send, room, f"g{i}") for i in range(5)]
gevent.joinall(senders, timeout=10, raise_error=True)
for _ in range(200):
    if sum(isinstance(m, NewMessage) for m in got) >= 5:
        break
    gevent.sleep(0.05)
texts = sorted(m.text for m in got if isinstance(m, NewMessage))
assert texts == [f"g{i}" for i in range(5)], texts
alice.close(); bob.close()
print("ok")
"""


def test_clients_work_under_gevent(backend: Backend) -> None:
    """Locust runs users as greenlets with the standard library monkey-patched."""
    import subprocess
    import sys

    from tests.servers import ROOT

    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, backend.transport, backend.url, unique("gevent")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
