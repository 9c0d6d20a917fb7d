"""Hostile input against every backend: each gets its documented answer and harms no one.

One real server per backend (module scope) takes a battery of bad inputs over real sockets:
malformed and mistyped JSON, huge numbers, deep nesting, 10 MiB bodies, frames and lines,
binary frames, path-like room names, bad cursors, SSE newline injection, forged and expired
tokens, foreign origins, send floods, too many connections and slow headers. After every
input a bystander listening in the same room sends a marker; at the end of each test it must
have received every marker exactly once and in order, the server must answer ``/healthz``
and its RSS must have grown less than :data:`RSS_BOUND` over its warmed-up baseline.

The tally (inputs tried, crashes, bystander losses, worst RSS growth per backend) is printed
at the end (``pytest tests/test_hostile.py -s``) and written as JSON to the path in
``$WIREWISE_HOSTILE_REPORT`` (default: ``hostile-summary.json`` in pytest's temp dir).
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pytest
from itsdangerous import TimestampSigner
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.servers import BACKENDS, ServerProcess, start
from tests.test_conformance import (
    BAD_INPUTS,
    WAIT,
    Backend,
    collect,
    count_new,
    drain,
    refuse_subscription,
    send_raw,
    texts,
    unique,
)
from wirewise.clients import Refused, SubscriptionFailed

MiB = 1024 * 1024
RSS_BOUND = 64 * MiB
"""Most the server's RSS may grow over its warmed-up baseline during the battery."""
HEADER_TIMEOUT = 1.0
SECRET = "hostile-battery-secret"
PER_USER = 4
SETTINGS = (
    "--secret",
    SECRET,
    "--set",
    f"header_timeout={HEADER_TIMEOUT}",
    "--set",
    f"max_connections_per_user={PER_USER}",
)
HTTP = {"poll", "longpoll", "sse", "h2"}
WS = {"ws", "ws@websockets"}
STREAMS = {"sse", "h2"}

SUMMARY: dict[str, dict[str, object]] = {}


# -- one server per backend, with its tally ----------------------------------------------------


@dataclass
class Target:
    backend: Backend
    process: psutil.Process
    baseline_rss: int
    tried: int = 0
    crashes: int = 0
    losses: int = 0
    worst_growth: int = 0
    labels: list[str] = field(default_factory=list)
    _web: httpx.Client | None = None
    _web_used: float = 0.0

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def server(self) -> ServerProcess:
        return self.backend.server

    def http(self) -> httpx.Client:
        """A client of its own (a test that may lose its connection, or checks it keeps it)."""
        h2 = self.name == "h2"
        return httpx.Client(http1=not h2, http2=h2, timeout=WAIT)

    @property
    def web(self) -> httpx.Client:
        """The client shared by the module's tests (a new httpx.Client costs ~50 ms); a new
        one after a pause, as the servers close idle connections after HEADER_TIMEOUT."""
        now = time.monotonic()
        if self._web is None or now - self._web_used > HEADER_TIMEOUT / 2:
            if self._web is not None:
                self._web.close()
            self._web = self.http()
        self._web_used = now
        return self._web

    def send(self, token: str, room: str, payload: bytes) -> tuple[int | None, str]:
        """``payload`` sent as the transport's client would: (HTTP status, error code)."""
        if self.name not in HTTP:
            return send_raw(self.backend, token, room, payload)
        response = self.web.post(
            f"{self.backend.url}/rooms/{room}/messages",
            content=payload,
            headers={**auth(token), "content-type": "application/json"},
        )
        return response.status_code, response.json()["code"]

    def refusal(self, room: str, token: str, query: str) -> tuple[int, str]:
        """Status and code of a subscription that must be refused (tcp: status 0)."""
        if self.name not in HTTP:
            return refuse_subscription(self.backend, room, token, query)
        path = "stream" if self.name in STREAMS else "events"
        extra = "&wait=1" if self.name == "longpoll" else ""
        response = self.web.get(
            f"{self.backend.url}/rooms/{room}/{path}?{query}{extra}", headers=auth(token)
        )
        return response.status_code, response.json()["code"]

    def token(self, user: str | None = None) -> str:
        client = self.backend.client(user or unique("u"))
        assert client.token is not None
        client.close()
        return client.token

    def addr(self) -> tuple[str, int]:
        host, port = self.backend.url.split("//", 1)[1].rsplit(":", 1)
        return host, int(port)


@pytest.fixture(scope="module", params=list(BACKENDS))
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    server = start(request.param, *SETTINGS)
    try:
        backend = Backend(request.param, server)
        # Warm up (imports, first connection, first message) before the baseline.
        warm = backend.client(unique("warm"))
        sub = warm.subscribe(unique("warm"), after=0)
        assert sub.wait_connected(WAIT)
        warm.send(sub.room, "warm")
        collect(sub, count_new(1))
        warm.close()
        process = psutil.Process(server.pid)
        target = Target(backend, process, process.memory_info().rss)
        yield target
        target.web.close()
        SUMMARY[request.param] = {
            "inputs_tried": target.tried,
            "crashes": target.crashes,
            "bystander_losses": target.losses,
            "worst_rss_growth_mib": round(target.worst_growth / MiB, 1),
        }
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def hostile_summary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    if not SUMMARY:
        return
    path = Path(
        os.environ.get("WIREWISE_HOSTILE_REPORT")
        or tmp_path_factory.getbasetemp() / "hostile-summary.json"
    )
    path.write_text(json.dumps(SUMMARY, indent=2) + "\n")
    print(f"\nhostile battery ({path}):")
    for name, row in SUMMARY.items():
        print(
            f"  {name:9} {row['inputs_tried']:3} inputs tried, {row['crashes']} crashes, "
            f"{row['bystander_losses']} bystander losses, worst RSS growth "
            f"{row['worst_rss_growth_mib']} MiB"
        )


class Bystander:
    """A listener in the attacked room; after each input it sends a marker it must get once."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.room = unique("room")
        self.client = target.backend.client(unique("by"))
        self.sub = self.client.subscribe(self.room, after=0)
        assert self.sub.wait_connected(WAIT)
        self.sent: list[str] = []

    def tried(self, label: str) -> None:
        """One hostile input is done: the server must be alive and the room must still work."""
        target = self.target
        target.tried += 1
        target.labels.append(label)
        if target.server.proc is None or target.server.proc.poll() is not None:
            target.crashes += 1
            pytest.fail(f"the server died after {label!r}:\n{''.join(target.server.output)}")
        marker = f"after {label} #{len(self.sent)}"
        self.client.send(self.room, marker)
        self.sent.append(marker)

    def verify(self) -> None:
        """Every marker arrived exactly once, in order; /healthz answers; RSS stays bounded."""
        got = collect(self.sub, count_new(len(self.sent)), timeout=2 * WAIT) + drain(self.sub, 0.1)
        if texts(got) != self.sent:
            self.target.losses += 1
        assert texts(got) == self.sent, "the bystander gets every marker exactly once"
        assert healthy(self.target)
        growth = self.target.process.memory_info().rss - self.target.baseline_rss
        self.target.worst_growth = max(self.target.worst_growth, growth)
        assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.1f} MiB"
        self.client.close()


@pytest.fixture
def bystander(target: Target) -> Iterator[Bystander]:
    watcher = Bystander(target)
    yield watcher
    watcher.client.close()


def healthy(target: Target) -> bool:
    if target.name == "tcp":  # the floor speaks no HTTP: a login round trip instead
        with socket.create_connection(target.addr(), timeout=WAIT) as sock:
            sock.sendall(b'{"type":"login","user":"health"}\n')
            return b"token" in sock.makefile("rb").readline()
    http = target.web
    return http.get(f"{target.backend.url}/healthz").status_code == 200


# -- raw senders -------------------------------------------------------------------------------


def ws_open(target: Target, path: str, headers: dict[str, str]) -> ClientConnection:
    return connect(
        f"{target.backend.ws_url}{path}",
        additional_headers=headers,
        open_timeout=WAIT,
        close_timeout=1,
        max_size=None,
    )


def ws_refusal(target: Target, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """Status and error code of a WebSocket upgrade that must be refused."""
    with pytest.raises(InvalidStatus) as refused:
        ws_open(target, path, headers).close()
    response = refused.value.response
    return response.status_code, json.loads(response.body)["code"]


def raw_http(target: Target, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request written as given (no client normalizes its path); status, body."""
    with socket.create_connection(target.addr(), timeout=WAIT) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def blast(sock: socket.socket, total: int, until: bytes, chunk: int = 256 * 1024) -> bytes:
    """Write ``total`` bytes of 'x' until the peer says ``until`` or hangs up; return what it
    said."""
    sent = 0
    piece = b"x" * chunk
    received = b""
    sock.setblocking(False)
    try:
        while True:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], WAIT)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
                if until in received:
                    break
            elif writable:
                sent += sock.send(piece[: total - sent])
            else:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return received


def upgrade_request(target: Target, path: str, token: str) -> bytes:
    host, port = target.addr()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


def ws_upgraded(target: Target, room: str, token: str) -> socket.socket:
    """A socket past a WebSocket handshake done by hand (no client reads behind our back)."""
    host, port = target.addr()
    sock = socket.create_connection((host, port), timeout=WAIT)
    sock.sendall(upgrade_request(target, f"/rooms/{room}/ws", token))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def tcp_hello(target: Target, room: str, token: str) -> socket.socket:
    sock = socket.create_connection(target.addr(), timeout=WAIT)
    sock.sendall(json.dumps({"type": "hello", "token": token, "room": room}).encode() + b"\n")
    return sock


# -- the battery -------------------------------------------------------------------------------

EXTRA_INPUTS: list[tuple[str, bytes, str]] = [
    ("deep nesting 60k unclosed", b"[" * 60_000, "bad_json"),
    (
        "deep nesting in a field",
        b'{"type":"send_message","text":"x","sent_at":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        "bad_json",
    ),
    ("deep nesting 100k", b"[" * 100_000 + b"]" * 100_000, "message_too_large"),
    ("type null", b'{"type":null,"text":"x"}', "bad_message"),
    ("room a number", b'{"type":"send_message","room":5,"text":"x"}', "bad_room"),
    ("text a list", b'{"type":"send_message","text":["x"]}', "bad_message"),
    (
        "client_msg_id a number",
        b'{"type":"send_message","text":"x","client_msg_id":5}',
        "bad_message",
    ),
    ("sent_at a float", b'{"type":"send_message","text":"x","sent_at":1.5}', "bad_message"),
    ("sent_at a bool", b'{"type":"send_message","text":"x","sent_at":true}', "bad_message"),
    (
        "sent_at 10^30",
        b'{"type":"send_message","text":"x","sent_at":' + b"1" + b"0" * 30 + b"}",
        "bad_message",
    ),
    ("sent_at 1e309", b'{"type":"send_message","text":"x","sent_at":1e309}', "bad_message"),
    ("NaN", b'{"type":"send_message","text":"x","sent_at":NaN}', "bad_json"),
    ("top-level null", b"null", "bad_message"),
    ("empty", b"", "bad_json"),
    ("lone surrogate", b'{"type":"send_message","text":"\\ud800"}', "bad_message"),
    ("binary garbage", b"\x00\xff\x80garbage", "bad_json"),
    ("UTF-8 BOM", b'\xef\xbb\xbf{"type":"send_message","text":"x"}', "bad_json"),
    ("trailing data", b'{"type":"send_message","text":"x"} []', "bad_json"),
    ("room mismatch", b'{"type":"send_message","room":"elsewhere","text":"x"}', "bad_room"),
]


def expected_code(target: Target, label: str, code: str) -> str:
    if target.name in WS and label in ("invalid UTF-8", "binary garbage"):
        return "bad_message"  # sent as a binary frame, which the protocol refuses
    if target.name == "tcp" and label == "room mismatch":
        return "bad_room"
    return code


def test_bad_payloads(target: Target, bystander: Bystander) -> None:
    """Every bad body / frame / line gets its error code (and status); a WebSocket stays up."""
    token = target.token()
    for label, payload, code in [*BAD_INPUTS, *EXTRA_INPUTS]:
        if target.name in WS and code == "message_too_large" and len(payload) > 64 * 1024:
            with ws_open(target, f"/rooms/{bystander.room}/ws", auth(token)) as ws:
                ws.send(payload.decode())
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, label
        else:
            status, answer = target.send(token, bystander.room, payload)
            assert answer == expected_code(target, label, code), label
            if status is not None:
                assert status == (413 if code == "message_too_large" else 400), label
        bystander.tried(label)
    bystander.verify()


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_ten_mib_inputs(target: Target, bystander: Bystander) -> None:
    """10 MiB body: 413; 10 MiB frame: close 1009; 10 MiB line: message_too_large."""
    token = target.token()
    big = 10 * MiB
    if target.name in WS:
        for label, opcode in [("10 MiB text frame", 0x81), ("10 MiB binary frame", 0x82)]:
            with ws_upgraded(target, bystander.room, token) as sock:
                # A masked frame announcing 10 MiB, its payload streamed after it: the close
                # frame must say 1009 (0x03f1) while we are still sending.
                sock.sendall(bytes([opcode, 0x80 | 127]) + big.to_bytes(8, "big") + b"mask")
                answer = blast(sock, big, b"\x03\xf1")
            assert b"\x88" in answer and b"\x03\xf1" in answer, answer[-40:]
            bystander.tried(label)
    elif target.name == "tcp":
        with tcp_hello(target, bystander.room, token) as sock:
            answer = blast(sock, big, b"message_too_large")
        lines = [json.loads(line) for line in answer.splitlines() if line.strip()]
        assert any(m.get("code") == "message_too_large" for m in lines), lines
        bystander.tried("10 MiB line")
    else:
        url = f"{target.backend.url}/rooms/{bystander.room}/messages"
        with target.http() as http:
            # Over h2 too: the 413 comes back on the POST's own stream (servers/patches.py:
            # hypercorn used to drop the whole connection when the body kept coming).
            response = http.post(url, content=b"x" * big, headers=auth(token))
            assert response.status_code == 413
            assert response.json()["code"] == "message_too_large"
        bystander.tried("10 MiB body")
        # Over HTTP/1.1 by hand too (hypercorn, the h2 server, speaks it as well).
        host, port = target.addr()
        head = (
            f"POST /rooms/{bystander.room}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {big}\r\n\r\n"
        ).encode()
        with socket.create_connection((host, port), timeout=WAIT) as sock:
            sock.sendall(head)
            answer = blast(sock, big, b"\r\n")
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        bystander.tried("10 MiB body by hand")
    bystander.verify()


def test_binary_frames(target: Target, bystander: Bystander) -> None:
    if target.name not in WS:
        pytest.skip("binary frames are a WebSocket thing")
    token = target.token()
    with ws_open(target, f"/rooms/{bystander.room}/ws", auth(token)) as ws:
        for label, frame in [
            ("binary JSON frame", b'{"type":"send_message","text":"hi"}'),
            ("binary garbage frame", bytes(range(256))),
            ("empty binary frame", b""),
        ]:
            ws.send(frame)
            while (answer := json.loads(ws.recv(timeout=WAIT)))["type"] != "error":
                pass
            assert answer["code"] == "bad_message", label
            bystander.tried(label)
        ws.send('{"type":"send_message","text":"still on"}')
        while (answer := json.loads(ws.recv(timeout=WAIT)))["type"] != "ack":
            pass
        bystander.sent.append("still on")  # the socket still works after refused frames
    bystander.verify()


BAD_ROOMS = ["%2E%2E", "%2F", "a%2Fb", "x" * 65, "caf%C3%A9", "%00", "a%20b", "%FF", "a.b"]
"""Room names as they appear in a URL path (percent-encoded where they are)."""
PATHLIKE = ["..", "a/b", "../../etc/passwd", "."]
"""Room segments that change the path itself (sent verbatim, no client normalizes them)."""


def test_bad_room_names(target: Target, bystander: Bystander) -> None:
    token = target.token()
    body = b'{"type":"send_message","text":"x"}'
    if target.name == "tcp":
        for room in ["..", "a/b", "%2F", "x" * 65, "café", "", "a b", "\u202e"]:
            with tcp_hello(target, room, token) as sock:
                answer = json.loads(sock.makefile("rb").readline())
            assert answer["code"] == "bad_room", room
            bystander.tried(f"room {room!r}")
        bystander.verify()
        return
    for room in BAD_ROOMS:
        # An encoded slash decodes into the path: no route (404) where the server routes on
        # the decoded path, bad_room where it routes on the raw one (the bare websockets one).
        slash = "%2F" in room
        if target.name in WS:
            with pytest.raises(InvalidStatus) as refused:
                ws_open(target, f"/rooms/{room}/ws", auth(token)).close()
            response = refused.value.response
            # (Starlette refuses an unrouted WebSocket with 403, before any frame)
            if not (slash and response.status_code in (403, 404)):
                assert response.status_code == 400, room
                assert json.loads(response.body)["code"] == "bad_room", room
        else:
            http = target.web
            for method, path in [("POST", "messages"), ("GET", "events"), ("GET", "stream")]:
                response = http.request(
                    method,
                    f"{target.backend.url}/rooms/{room}/{path}",
                    content=body if method == "POST" else None,
                    headers=auth(token),
                )
                if slash and response.status_code == 404:
                    continue
                assert response.status_code == 400, (room, path)
                assert response.json()["code"] == "bad_room", (room, path)
        bystander.tried(f"room {room!r}")
    for room in PATHLIKE:
        host, port = target.addr()
        if target.name in WS:
            request = upgrade_request(target, f"/rooms/{room}/ws", token)
        else:
            request = (
                f"POST /rooms/{room}/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n{body.decode()}"
            ).encode()
        status, answer = raw_http(target, request)
        # no route: 404, or 403 for a WebSocket on Starlette (it refuses before any frame)
        assert status in ((400, 403, 404) if target.name == "ws" else (400, 404)), (room, status)
        if status == 400:
            assert json.loads(answer)["code"] == "bad_room"
        bystander.tried(f"path {room!r}")
    bystander.verify()


BAD_CURSORS = ["-1", "1e309", "abc", str(10**30), "1.5", "", "0x10", "+1", str(2**63), "9" * 5000]


def test_bad_cursors(target: Target, bystander: Bystander) -> None:
    """A cursor that is not an integer in 0..2^63-1 is refused with 400 bad_cursor."""
    token = target.token()
    for cursor in BAD_CURSORS:
        if target.name == "tcp":
            for value in _as_json(cursor):
                hello = {"type": "hello", "token": token, "room": bystander.room}
                raw = json.dumps(hello)[:-1] + f',"after":{value}}}'
                with socket.create_connection(target.addr(), timeout=WAIT) as sock:
                    sock.sendall(raw.encode() + b"\n")
                    answer = json.loads(sock.makefile("rb").readline())
                assert answer["code"] == "bad_cursor", raw[-60:]
                bystander.tried(f"after {value[:20]}")
            continue
        status, code = target.refusal(bystander.room, token, f"after={quote(cursor)}")
        assert (status, code) == (400, "bad_cursor"), cursor
        bystander.tried(f"after={cursor[:20]}")
        if target.name in STREAMS | WS and cursor:
            headers = {**auth(token), "last-event-id": cursor}
            if target.name in WS:
                status, code = ws_refusal(target, f"/rooms/{bystander.room}/ws", headers)
            else:
                http = target.web
                response = http.get(
                    f"{target.backend.url}/rooms/{bystander.room}/stream?after=0",
                    headers=headers,
                )
                status, code = response.status_code, response.json()["code"]
            assert (status, code) == (400, "bad_cursor"), cursor
            bystander.tried(f"Last-Event-ID {cursor[:20]}")
    if target.name == "longpoll":
        for wait in ["abc", "-1", "1e309", "nan", "inf", ""]:
            http = target.web
            response = http.get(
                f"{target.backend.url}/rooms/{bystander.room}/events",
                params={"after": "0", "wait": wait},
                headers=auth(token),
            )
            assert response.status_code == 400, wait
            assert response.json()["code"] == "bad_message"
            bystander.tried(f"wait={wait}")
    bystander.verify()


def _as_json(cursor: str) -> list[str]:
    """The cursor as a JSON string, and as a bare JSON value where it is one (tcp hello)."""
    try:
        json.loads(cursor)
    except ValueError:
        return [json.dumps(cursor)]
    return [json.dumps(cursor), cursor]


def test_newline_injection_arrives_as_one_event(target: Target, bystander: Bystander) -> None:
    attacker = target.backend.client(unique("inj"))
    try:
        tricky = [
            'hi\n\ndata: {"type":"new_message","id":999,"text":"forged"}\n\n',
            "x\r\n\r\nevent: user_left\r\ndata: {}\r\n\r\n",
            "id: 5\nretry: 1\n: comment\n",
            "\u2028\u2029\x85\x00end",
        ]
        for text in tricky:
            attacker.send(bystander.room, text)
            bystander.sent.append(text)  # the bystander must get it intact, exactly once
            bystander.tried(f"injection {text[:10]!r}")
    finally:
        attacker.close()
    bystander.verify()


def expired_token(user: str) -> str:
    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 2 * 24 * 3600

    return Past(SECRET, salt="wirewise-login").sign(user).decode()


def forged_tokens(target: Target) -> list[tuple[str, str]]:
    good = target.token(unique("ada"))
    user, stamp, signature = good.split(".")
    other = TimestampSigner("another-secret", salt="wirewise-login").sign(user).decode()
    # The first character: the last one of a base64 signature carries padding bits, and
    # changing only those decodes to the same signature (a valid token).
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return [
        ("made up", "mallory.forged.signature"),
        ("user swapped", f"eve.{stamp}.{signature}"),
        ("signature flipped", f"{user}.{stamp}.{flipped}"),
        ("other secret", other),
        ("expired", expired_token(user)),
        ("bad user signed", TimestampSigner(SECRET, salt="wirewise-login").sign("../x").decode()),
        ("very long", "a" * 5000),
        ("dots only", ".."),
        ("no signature", f"{user}.{stamp}"),
    ]


def test_forged_and_expired_tokens(target: Target, bystander: Bystander) -> None:
    for label, token in forged_tokens(target):
        status, code = target.refusal(bystander.room, token, "")
        assert code == "unauthorized", label
        if target.name != "tcp":
            assert status == 401, label
        if target.name in HTTP:
            status, code = target.send(token, bystander.room, b'{"type":"send_message","text":"x"}')
            assert (status, code) == (401, "unauthorized"), label
        if target.name != "tcp":
            mallory = target.backend.client()
            mallory.token = token
            sub = mallory.subscribe(bystander.room, after=0)
            with pytest.raises(SubscriptionFailed, match="unauthorized"):
                sub.get(WAIT)
            with pytest.raises(Refused) as refused:
                mallory.send(bystander.room, "let me in")
            assert refused.value.code == "unauthorized"
            mallory.close()
        bystander.tried(f"token {label}")
    bystander.verify()


FOREIGN = [
    "https://evil.example",
    "null",
    "http://127.0.0.1.evil.example",
    "http://localhost.evil.example:8000",
    "file://",
    "http://[::1",
]


def test_foreign_origins(target: Target, bystander: Bystander) -> None:
    if target.name == "tcp":
        pytest.skip("no browser reaches the tcp floor: it has no Origin")
    token = target.token()
    for origin in FOREIGN:
        headers = {**auth(token), "origin": origin}
        if target.name in WS:
            status, code = ws_refusal(target, f"/rooms/{bystander.room}/ws", headers)
            assert (status, code) == (403, "forbidden_origin"), origin
        else:
            http = target.web
            base = f"{target.backend.url}"
            for response in [
                http.post(
                    f"{base}/rooms/{bystander.room}/messages",
                    headers=headers,
                    json={"type": "send_message", "text": "x"},
                ),
                http.post(f"{base}/login", headers={"origin": origin}, json={"user": "eve"}),
                http.get(f"{base}/rooms/{bystander.room}/events", headers=headers),
            ]:
                assert response.status_code == 403, (origin, response.request.url)
                assert response.json()["code"] == "forbidden_origin"
                assert "access-control-allow-origin" not in response.headers
        bystander.tried(f"origin {origin}")
    bystander.verify()


def test_send_flood_is_rate_limited(target: Target, bystander: Bystander) -> None:
    """A flood from one user: the burst (100) and the rate (50/s) pass, the rest is refused,
    nothing else breaks. HTTP sends one at a time until refused 20 times (on a loaded machine
    200 sends may take long enough for the rate to cover them); frames and lines go at once."""
    token = target.token()
    flood = 300
    body = {"type": "send_message", "room": bystander.room, "text": "flood"}
    limited = accepted = 0
    started = time.monotonic()
    if target.name in HTTP:
        http = target.web
        while limited < 20 and accepted < 1000:
            response = http.post(
                f"{target.backend.url}/rooms/{bystander.room}/messages",
                json=body,
                headers=auth(token),
            )
            if response.status_code == 429:
                assert response.json()["code"] == "rate_limited"
                assert response.headers["retry-after"] == "1"
                limited += 1
            else:
                assert response.status_code == 201
                accepted += 1
    else:
        frames = [json.dumps({**body, "client_msg_id": f"f{i}"}) for i in range(flood)]
        answers: list[dict[str, object]] = []
        if target.name in WS:
            with ws_open(target, f"/rooms/{bystander.room}/ws", auth(token)) as ws:
                for frame in frames:
                    ws.send(frame)
                while len(answers) < flood:
                    message = json.loads(ws.recv(timeout=WAIT))
                    if message["type"] in ("ack", "error"):
                        answers.append(message)
        else:
            with tcp_hello(target, bystander.room, token) as sock:
                sock.sendall("".join(f"{f}\n" for f in frames).encode())
                reader = sock.makefile("rb")
                while len(answers) < flood:
                    message = json.loads(reader.readline())
                    if message["type"] in ("ack", "error"):
                        answers.append(message)
        for answer in answers:
            if answer["type"] == "error":
                assert answer["code"] == "rate_limited"
                limited += 1
            else:
                accepted += 1
    elapsed = time.monotonic() - started
    assert limited > 0 and accepted >= 100
    assert accepted <= 100 + 50 * elapsed + 1, f"{accepted} sends passed in {elapsed:.2f} s"
    if target.name not in HTTP:
        assert limited + accepted == flood
    bystander.sent += ["flood"] * accepted  # the accepted ones are room events too
    bystander.tried("send flood")
    bystander.verify()


def test_too_many_connections_per_user(target: Target, bystander: Bystander) -> None:
    if target.name == "poll":
        pytest.skip("a short poll holds no connection")
    user = unique("greedy")
    token = target.token(user)
    room = unique("room")
    held: list[object] = []
    threads: list[threading.Thread] = []
    try:
        if target.name == "longpoll":
            http = target.web
            last = http.get(
                f"{target.backend.url}/rooms/{room}/events", headers=auth(token)
            ).json()["last_id"]
            for _ in range(PER_USER):
                thread = threading.Thread(target=_hold_poll, args=(target, room, token, last))
                thread.start()
                threads.append(thread)
        else:
            greedy = target.backend.client()
            greedy.token = token
            held.append(greedy)
            for _ in range(PER_USER):
                assert greedy.subscribe(room).wait_connected(WAIT)
        if target.name == "longpoll":
            # One more short hold, until the four threads' polls are all held (a poll the
            # server admits answers 200 after 0.05 s).
            deadline = time.monotonic() + WAIT
            while True:
                response = target.web.get(
                    f"{target.backend.url}/rooms/{room}/events",
                    params={"after": last, "wait": 0.05},
                    headers=auth(token),
                )
                if response.status_code != 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)  # leave the slot to the threads' polls
            status, code = response.status_code, response.json()["code"]
        else:
            status, code = target.refusal(room, token, "")
        assert code == "too_many_connections"
        if target.name != "tcp":
            assert status == 503
        bystander.tried("one connection too many")
    finally:
        for client in held:
            client.close()  # type: ignore[attr-defined]
        if threads:
            releaser = target.backend.client(unique("rel"))
            releaser.send(room, "release")
            releaser.close()
            for thread in threads:
                thread.join(WAIT)
    bystander.verify()


def _hold_poll(target: Target, room: str, token: str, after: int) -> None:
    """Hold a long poll until an event; again when refused (the test's probe took the slot)."""
    deadline = time.monotonic() + WAIT
    with target.http() as http:
        while time.monotonic() < deadline:
            response = http.get(
                f"{target.backend.url}/rooms/{room}/events",
                params={"after": after, "wait": 4},
                headers=auth(token),
            )
            if response.status_code != 503:
                return


def trickle(target: Target, first: bytes, rest: bytes, gap: float = 0.05) -> float:
    """Send ``first``, then ``rest`` a byte at a time; seconds until the server hangs up."""
    started = time.monotonic()
    limit = HEADER_TIMEOUT + 4
    with socket.create_connection(target.addr(), timeout=WAIT) as sock:
        sock.sendall(first)
        sock.settimeout(gap)
        for byte in rest:
            try:
                sock.sendall(bytes([byte]))
                if not sock.recv(65536):
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            if time.monotonic() - started > limit:
                break
    pytest.fail(f"a slow client was still connected after {limit} s")


def test_slow_headers_are_cut_off(target: Target, bystander: Bystander) -> None:
    """Headers sent a byte at a time: closed after the header deadline, on every server."""
    trickles: list[tuple[str, bytes, bytes]] = []
    if target.name == "tcp":
        trickles.append(("slow hello", b"", b'{"type":"hello","token":"' + b"a" * 400))
    else:
        trickles.append(
            (
                "slow HTTP/1.1 headers",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
                b"X-Slow: " + b"a" * 400,
            )
        )
        if target.name in WS:
            trickles.append(
                (
                    "slow upgrade",
                    b"GET /rooms/r/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
                    b"X-Slow: " + b"a" * 400,
                )
            )
        if target.name == "h2":
            # A HEADERS frame header announcing 16 KiB, its payload trickled.
            preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            frame = b"\x00\x40\x00\x01\x04\x00\x00\x00\x01"
            trickles.append(("slow HTTP/2 HEADERS", preface + frame, b"\x00" * 400))
    with ThreadPoolExecutor(len(trickles)) as pool:  # all at once: one deadline's wait
        took = list(pool.map(lambda t: trickle(target, t[1], t[2]), trickles))
    for (label, _, _), seconds in zip(trickles, took, strict=True):
        assert seconds < HEADER_TIMEOUT + 2, f"{label}: closed after {seconds:.1f} s"
        bystander.tried(label)
    bystander.verify()


def test_unknown_paths_and_methods(target: Target, bystander: Bystander) -> None:
    """404 for a path no route serves, 405 for a wrong method, never a 5xx; a body sent to
    them is drained, so that hypercorn's HTTP/2 keeps the connection (and its streams)."""
    if target.name == "tcp":
        pytest.skip("the floor speaks no HTTP")
    token = target.token()
    cases = [("GET", "/nope", 404), ("GET", "/rooms/a/b/events", 404)]
    if target.name != "ws@websockets":  # the bare websockets server reads GET only
        cases += [
            ("POST", "/x", 404),
            ("DELETE", "/healthz", 405),
            ("PUT", f"/rooms/{bystander.room}/messages", 405),
            ("OPTIONS", "/anything", 204),
        ]
    with target.http() as http:
        for method, path, status in cases:
            body = b"x" * 100_000 if method != "GET" else None
            response = http.request(
                method, f"{target.backend.url}{path}", headers=auth(token), content=body
            )
            assert response.status_code == status, (method, path, response.status_code)
            bystander.tried(f"{method} {path}")
        assert http.get(f"{target.backend.url}/healthz").status_code == 200
    bystander.verify()
