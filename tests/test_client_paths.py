"""The clients' receive paths against scripted servers: what the real backends rarely do.

The conformance suite drives every client against the real servers; these tests cover the
edges of the hand-written pieces (the WebSocket link on websockets' sans-I/O protocol, the
HTTP/1.1 reader, the event-stream parser) that a well-behaved server never shows: fragmented
frames, close reasons, pings, odd chunkings, idle keep-alive connections closed by the peer,
and a malformed message in the middle of a session.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.server import ServerConnection, serve

from wirewise.clients.base import ClientError, Refused, SessionEnded
from wirewise.clients.eventstream import SseEvent, SseParser
from wirewise.clients.h1 import H1Connection
from wirewise.clients.tcp import TcpClient
from wirewise.clients.ws import WsClient
from wirewise.protocol import Error, NewMessage, ServerMessage

WAIT = 5.0
EVENT = '{"type":"new_message","id":%d,"room":"r","from":"ada","text":"hi","ts":1}'


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.01)


# -- the event-stream parser -------------------------------------------------------------------


def reference_events(stream: bytes) -> list[SseEvent]:
    """The WHATWG rules, line by line, on the whole stream at once (slow and plain)."""
    text = stream.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:-1]
    events, data, event, last_id = [], [], "", ""
    for line in lines:
        if not line:
            joined = "\n".join(data)
            if joined:
                events.append(SseEvent(event or "message", joined, last_id))
            data, event = [], ""
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


FIELDS = [b"data: x", b"data:y", b"data", b"id: 7", b"id: a\0b", b"event: e", b": c", b"retry: 1"]
PIECES = st.sampled_from(
    [
        *FIELDS,
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"\xc3\xa9",
        b"\xc3",
        b"\xff",
        b":",
        b" ",
        b"data: {}",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=30), st.lists(st.integers(1, 12), max_size=30), st.booleans())
def test_sse_parser_matches_the_rules_however_the_stream_is_cut(
    pieces: list[bytes], cuts: list[int], bom: bool
) -> None:
    stream = (b"\xef\xbb\xbf" if bom else b"") + b"".join(pieces)
    parser, events, at = SseParser(), [], 0
    for size in [*cuts, len(stream)]:
        events += parser.feed(stream[at : at + size])
        at += size
    assert events == reference_events(stream)  # lines are decoded whole, wherever the cuts are
    assert SseParser().feed(stream) == events


# -- the HTTP/1.1 reader -----------------------------------------------------------------------


class ScriptedServer:
    """Accepts connections and answers each request with the next scripted bytes, in pieces.

    A context manager: the listening socket closes on exit.
    """

    def __init__(self, answers: list[list[bytes]], close_after: bool = False) -> None:
        self.answers = answers
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(WAIT)

    def _serve(self) -> None:
        try:
            while self.answers:
                sock, _ = self.listener.accept()
                self.connections += 1
                with sock:
                    self._answer(sock)
        except OSError:
            pass  # the listener closed, or the client went away mid-answer

    def _answer(self, sock: socket.socket) -> None:
        while self.answers:
            request = sock.recv(65536)
            if not request:
                return
            self.requests.append(request)
            for piece in self.answers.pop(0):
                sock.sendall(piece)
                time.sleep(0.002)
            if self.close_after:
                return


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in [*sizes, len(body)]:
        piece = body[at : at + size]
        if piece:
            out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
        at += size
    return out + b"0\r\nx-trailer: 1\r\n\r\n"


@settings(max_examples=30, deadline=None)
@given(
    st.binary(min_size=1, max_size=300), st.lists(st.integers(1, 40), max_size=8), st.integers(1, 9)
)
def test_chunked_stream_decodes_however_it_is_cut(body: bytes, sizes: list[int], cut: int) -> None:
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(body, sizes)
    with ScriptedServer([[wire[i : i + cut] for i in range(0, len(wire), cut)]]) as server:
        connection = H1Connection(server.url, WAIT)
        head = connection.request("GET", "/s", [], read_timeout=WAIT)
        assert head.status == 200
        assert b"".join(connection.stream(WAIT)) == body


def test_keep_alive_is_reused_and_a_closed_idle_connection_reopened() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    with ScriptedServer([[ok], [ok]], close_after=True) as server:  # closes after each answer
        connection = H1Connection(server.url, WAIT)
        for _ in range(2):
            assert connection.request("GET", "/p", [], read_timeout=WAIT).status == 200
            assert connection.read_body() == b"ok"
            time.sleep(0.05)  # the server's close arrives while the connection is idle
        connection.close()
    assert server.connections == 2, "a connection the server closed is not reused"

    with ScriptedServer([[ok], [ok[:20], ok[20:]]]) as server:
        connection = H1Connection(server.url, WAIT)
        for _ in range(2):
            connection.request("GET", "/p", [(b"authorization", b"Bearer t")], read_timeout=WAIT)
            assert connection.read_body() == b"ok"
        connection.close()
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /p HTTP/1.1\r\n")
    assert b"authorization: Bearer t\r\n" in server.requests[0]


def test_truncated_stream_and_abort_are_client_errors() -> None:
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"
    with ScriptedServer([[wire]], close_after=True) as server:
        connection = H1Connection(server.url, WAIT)
        connection.request("GET", "/s", [], read_timeout=WAIT)
        with pytest.raises(ClientError):
            list(connection.stream(WAIT))

    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers
        connection = H1Connection(f"http://127.0.0.1:{listener.getsockname()[1]}", WAIT)
        threading.Timer(0.2, connection.abort).start()
        started = time.monotonic()
        with pytest.raises(ClientError):
            connection.request("GET", "/s", [], read_timeout=30)
        assert time.monotonic() - started < 2, "abort wakes a blocked read"


# -- the WebSocket link ------------------------------------------------------------------------


@pytest.fixture
def ws_server() -> Iterator[Callable[[Callable[[ServerConnection], None]], str]]:
    servers = []

    def start(handler: Callable[[ServerConnection], None]) -> str:
        server = serve(handler, "127.0.0.1", 0, compression=None)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"ws://127.0.0.1:{server.socket.getsockname()[1]}"

    yield start
    for server in servers:
        server.shutdown()


def ws_client(url: str) -> WsClient:
    client = WsClient(url, timeout=2.0)
    client.token = "t"
    return client


def test_fragments_pings_and_a_1008_reason(ws_server: Callable[..., str]) -> None:
    """A fragmented message arrives whole; our pong answers the server's ping; a close with
    1008 and a protocol code reaches the subscription once as an error, then it resumes."""
    pongs: list[bool] = []
    sessions: list[int] = []

    def handler(ws: ServerConnection) -> None:
        sessions.append(1)
        if len(sessions) > 1:
            ws.recv()  # the resumed session stays open until the client closes it
            return
        assert ws.request is not None and ws.request.headers["Authorization"] == "Bearer t"
        ws.send([(EVENT % 1)[:20], (EVENT % 1)[20:]])  # two frames: TEXT, then CONT
        pongs.append(ws.ping().wait(WAIT))
        ws.close(1008, "slow_consumer")

    client = ws_client(ws_server(handler))
    got: list[ServerMessage] = []
    sub = client.subscribe("r", after=None, on_message=got.append)
    wait_for(lambda: len(sessions) == 2)
    client.close()
    assert pongs == [True]
    assert got[0] == NewMessage(id=1, room="r", sender="ada", text="hi", ts=1)
    assert got[1:] == [Error("slow_consumer", "the server closed the socket")]
    assert sub.reconnects >= 1


def test_binary_frame_ends_the_session_and_close_is_a_clean_handshake(
    ws_server: Callable[..., str],
) -> None:
    closes: list[int | None] = []

    def handler(ws: ServerConnection) -> None:
        if not closes:
            closes.append(None)
            ws.send(b"\x00binary")
            with pytest.raises(Exception):  # noqa: B017 - the client closes: any ConnectionClosed
                ws.recv(WAIT)
            closes.append(ws.close_code)
            return
        with pytest.raises(Exception):  # noqa: B017
            ws.recv(WAIT)
        closes.append(ws.close_code)

    client = ws_client(ws_server(handler))
    sub = client.subscribe("r", after=None, on_message=lambda message: None)
    wait_for(lambda: sub.reconnects >= 1 and sub.connected.is_set())
    client.close()
    wait_for(lambda: len(closes) == 3)
    assert closes[1] == 1003, "a binary frame is refused with 1003 (unsupported data)"
    assert closes[2] == 1000, "closing is a normal closure the server sees"


def test_refused_upgrade_is_refused_with_status_and_code(ws_server: Callable[..., str]) -> None:
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def refuse(connection: ServerConnection, request: object) -> Response:
        body = b'{"type":"error","code":"unauthorized","detail":"bad token"}'
        return Response(401, "Unauthorized", Headers({"Content-Length": str(len(body))}), body)

    server = serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ws_client(f"ws://127.0.0.1:{server.socket.getsockname()[1]}")
        with pytest.raises(Refused) as refused:
            client.open_link("r", None)
        assert (refused.value.code, refused.value.status) == ("unauthorized", 401)
    finally:
        server.shutdown()


# -- a malformed message mid-session -------------------------------------------------------------


def test_a_malformed_message_drops_the_connection_and_the_subscription_resumes() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    hellos: list[bytes] = []

    def serve_lines() -> None:
        for line in (b"{not json\n", (EVENT % 2).encode() + b"\n"):
            sock, _ = listener.accept()
            hellos.append(sock.makefile("rb").readline())
            sock.sendall(line)
            time.sleep(0.2)
            sock.close()

    server = threading.Thread(target=serve_lines, daemon=True)
    server.start()
    client = TcpClient(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=2.0)
    client.token = "t"
    got: list[ServerMessage] = []
    sub = client.subscribe("r", after=None, on_message=got.append)
    wait_for(lambda: len(got) == 1)
    client.close()
    server.join(WAIT)
    listener.close()
    assert isinstance(got[0], NewMessage) and got[0].id == 2
    assert sub.reconnects >= 1 and sub.error is None


def test_a_silent_link_is_pinged_then_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that sends nothing gets a ping after KEEPALIVE; silent still, it is dropped."""
    from websockets.utils import accept_key

    import wirewise.clients.ws

    monkeypatch.setattr(wirewise.clients.ws, "KEEPALIVE", 0.5)
    received: list[bytes] = []

    def mute_server(listener: socket.socket) -> None:
        sock, _ = listener.accept()
        with sock:
            head = sock.recv(65536)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(key.decode()).encode()
                + b"\r\n\r\n"
            )
            while data := sock.recv(65536):  # answers nothing, not even pings
                received.append(data)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=mute_server, args=(listener,), daemon=True)
        server.start()
        client = ws_client(f"ws://127.0.0.1:{listener.getsockname()[1]}")
        link = client.open_link("r", None)
        started = time.monotonic()
        with pytest.raises(SessionEnded):
            while True:
                link.recv_text()
        elapsed = time.monotonic() - started
        server.join(WAIT)
    frames = b"".join(received)
    assert frames[:1] == b"\x89", "the first frame is a ping (masked, from a client)"
    assert b"\x88" in frames, "then a close frame (1011)"
    assert 0.9 <= elapsed <= 5.0, elapsed


def test_a_silent_stream_ends_with_a_client_error() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_then_hang() -> None:
            sock, _ = listener.accept()
            with sock:
                sock.recv(65536)
                sock.sendall(head)
                sock.recv(65536)  # until the client gives up

        server = threading.Thread(target=answer_then_hang, daemon=True)
        server.start()
        connection = H1Connection(f"http://127.0.0.1:{listener.getsockname()[1]}", WAIT)
        connection.request("GET", "/s", [], read_timeout=WAIT)
        got, started = [], time.monotonic()
        with pytest.raises(ClientError, match=r"no data for 0\.5 s"):
            for data in connection.stream(0.5):
                got.append(data)
        assert got == [b"abc"]
        assert time.monotonic() - started < 0.5 + 2 * 1.0 + 1
        server.join(WAIT)
