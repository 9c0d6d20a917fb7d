"""The shape every lean client shares, and what their connections have in common.

A lean client has the shape of :class:`wirewise.clients.base.Client` where a load generator needs it,
and differs where measuring needs it to:

- :meth:`LeanClient.subscribe` connects (blocking: it is the ramp, not the measurement) and
  hands the socket to the process's :class:`wirewise.clients.lean.hub.Hub`; deliveries go straight into
  the hub's flat array, not through a callback per message;
- :meth:`LeanClient.send` never waits (open loop): it writes the request or frame and returns;
  the answer (``ack``, ``201``, an error) comes back through :attr:`LeanClient.answered` when
  the hub reads it. A sender that waited for each answer would fall behind its schedule as
  soon as the server slowed down, and the messages it never sent would vanish from the
  measurement (coordinated omission);
- only what the measurement needs is parsed on the hot path (a ``new_message``'s id and
  ``sent_at``); one in :data:`CHECK_EVERY` is also decoded by the validating decoder of
  :mod:`wirewise.protocol` and compared (:attr:`Hub.mismatched`), and every other event
  (``user_joined``, ``gap``, ``error``, ``ack``) goes through the validating decoder;
- a dropped connection reconnects with ``after=`` the last id seen, with the full clients'
  jittered backoff (:class:`wirewise.clients.base.Backoff`), from a thread of its own.

The full clients in :mod:`clients` stay the reference: the conformance suite, tests and scripts
use them; ``tests/test_lean.py`` checks that both read the same events from real servers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11

from wirewise import protocol
from wirewise.clients.base import (
    DEFAULT_TIMEOUT,
    FATAL_CODES,
    Backoff,
    ClientError,
    Refused,
    RequestEvent,
    connect,
    map_errors,
    refused_from_body,
)
from wirewise.clients.lean.hub import Conn, Hub
from wirewise.protocol import Ack, Error, Gap, NewMessage, UserJoined, UserLeft

__all__ = [
    "CHECK_EVERY",
    "Answered",
    "HttpHead",
    "LeanClient",
    "LeanSubscription",
    "PostConn",
    "http_request",
    "read_head",
]

CHECK_EVERY = 64
"""One new_message in this many is decoded by the validating decoder too, and compared."""
_NEW = b'{"type":"new_message","id":'
_NEW_LEN = len(_NEW)
_SENT = b',"sent_at":'
_SENT_LEN = len(_SENT)
_ACK = b'{"type":"ack","client_msg_id":"'
MAX_HEAD = 64 * 1024

Answered = Callable[[str, int | None, str | None, int], None]
"""``(client_msg_id, id or None, error code or None, received_us)`` for each send's answer."""


class LeanSubscription:
    """One room followed through the hub: its cursor, its connection, its reconnects."""

    __slots__ = (
        "_timer",
        "client",
        "closed",
        "conn",
        "connected",
        "hub",
        "index",
        "last_id",
        "reconnects",
        "room",
    )

    def __init__(self, client: LeanClient, room: str, index: int, after: int | None) -> None:
        self.client = client
        self.hub = client.hub
        self.room = room
        self.index = index
        self.last_id = -1 if after is None else after
        self.conn: Conn | None = None
        self.reconnects = 0
        self.closed = False
        self.connected = threading.Event()
        self._timer = None

    @property
    def after(self) -> int | None:
        return None if self.last_id < 0 else self.last_id

    # -- reading (from the hub) --------------------------------------------------------------

    def message(self, data: bytes, start: int, end: int, received: int) -> None:
        """One JSON message of the stream, ``data[start:end]``; see the module docstring."""
        if data.startswith(_NEW, start):
            try:
                at = start + _NEW_LEN
                msg_id = int(data[at : data.index(b",", at, end)])
                at = data.rindex(_SENT, at, end) + _SENT_LEN
                sent_at = int(data[at : data.index(b",", at, end)])
            except ValueError:  # no sent_at (null), or a shape the fast path does not know
                self.event(data[start:end], received)
                return
            hub = self.hub
            if msg_id <= self.last_id:
                hub.duplicates += 1  # replayed at a reconnect seam: dropped, but counted
                return
            self.last_id = msg_id
            hub.deliveries.extend((self.index, msg_id, sent_at, received))
            if len(hub.deliveries) % (4 * CHECK_EVERY) == 0:
                self.check(data[start:end], msg_id, sent_at)
            return
        self.event(data[start:end], received)

    def deliver(self, msg_id: int, sent_at: int, received: int) -> None:
        """A timed new_message whose fields were read another way (a poll answer)."""
        hub = self.hub
        if msg_id <= self.last_id:
            hub.duplicates += 1
            return
        self.last_id = msg_id
        hub.deliveries.extend((self.index, msg_id, sent_at, received))

    def check(self, payload: bytes, msg_id: int, sent_at: int) -> None:
        """The sampled full decode: the fast path must read what the validator reads."""
        hub = self.hub
        hub.checked += 1
        try:
            message = protocol.decode_server(payload)
        except protocol.ProtocolError:
            hub.mismatched += 1
            return
        if not (
            isinstance(message, NewMessage)
            and message.id == msg_id
            and message.sent_at == sent_at
            and message.room == self.room
        ):
            hub.mismatched += 1

    def event(self, payload: bytes, received: int) -> None:
        """Anything but a timed new_message: decoded and validated in full."""
        hub = self.hub
        message = protocol.decode_server(payload)
        kind = message.type
        if isinstance(message, (UserJoined, UserLeft)):
            hub.last_membership = time.time()
            self.last_id = max(self.last_id, message.id)
        elif isinstance(message, NewMessage):
            kind = "new_message_untimed"  # someone else's message (curl, a browser): not timed
            self.last_id = max(self.last_id, message.id)
        elif isinstance(message, Gap):
            self.last_id = message.oldest_available - 1
        elif isinstance(message, Error):
            kind = f"error:{message.code}"
            if message.code in FATAL_CODES:  # a refusal that resuming cannot fix
                self.closed = True
        elif isinstance(message, Ack):
            kind = "ack_unexpected"
        hub.events[kind] += 1

    # -- the session -------------------------------------------------------------------------

    def opened(self, conn: Conn) -> None:
        self.conn = conn
        self.connected.set()

    def ended(self, reason: str) -> None:
        """The hub lost our connection: resume from the cursor after a backoff pause."""
        self.conn = None
        self.connected.clear()
        if self.closed or self.client.closed:
            return
        self.reconnects += 1
        self.hub.events["reconnect"] += 1
        threading.Thread(target=self._resume, name="wirewise-resume", daemon=True).start()

    def _resume(self) -> None:
        backoff = self.client.backoff
        deadline = time.monotonic() + backoff.give_up_after
        for attempt in range(1_000_000):
            if self.closed or self.client.closed:
                return
            time.sleep(backoff.delay(attempt))
            try:
                self.client.open(self)
                return
            except Refused as exc:
                self.hub.events[f"refused:{exc.code}"] += 1
                return
            except (ClientError, OSError) as exc:
                self.hub.events[f"resume_failed:{type(exc).__name__}"] += 1
                if time.monotonic() > deadline:
                    self.hub.events["gave_up"] += 1
                    return

    def close(self) -> None:
        self.closed = True
        self.client.close_subscription(self)


class LeanClient(ABC):
    """One user of a load generator: login, subscriptions in the hub, open-loop sends."""

    transport: str

    def __init__(
        self,
        base_url: str,
        hub: Hub,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        answered: Answered | None = None,
        request_event: RequestEvent | None = None,
    ) -> None:
        url = urlsplit(base_url if "://" in base_url else f"tcp://{base_url}")
        if url.scheme not in ("http", "tcp", "ws") or not url.hostname or not url.port:
            raise ValueError(
                f"lean clients speak cleartext to host:port, not {base_url!r} (TLS: use clients.*)"
            )
        self.base_url = base_url.rstrip("/")
        self.host, self.port = url.hostname, url.port
        self.authority = f"{self.host}:{self.port}"
        self.hub = hub
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.answered = answered
        self.request_event = request_event
        self._scheduled: dict[str, int] = {}  # client_msg_id -> sent_at, until its answer
        self.token: str | None = None
        self.user: str | None = None
        self.closed = False
        self.subscriptions: list[LeanSubscription] = []

    def login(self, user: str) -> str:
        """Get a token for ``user``; errors are mapped as the reference clients map them."""
        protocol.LoginRequest(user)  # a bad name is the caller's mistake: raised before the wire
        with map_errors("login"):
            token = self._login(user)
        self.token, self.user = token, user
        return token

    def _login(self, user: str) -> str:
        """``GET /login?user=`` (every HTTP server here answers it; the floor overrides)."""
        status, _, body = http_request(
            self.host, self.port, "GET", f"/login?{urlencode({'user': user})}", [], self.timeout
        )
        if status != 200:
            raise refused_from_body(body, status)
        return protocol.decode_token(body)

    def subscribe(self, room: str, index: int, after: int | None = None) -> LeanSubscription:
        """Follow ``room`` (deliveries land in the hub tagged ``index``); blocks until connected."""
        if not protocol.valid_room(room):
            raise Refused("bad_room", "room names match [A-Za-z0-9_-]{1,64}")
        sub = LeanSubscription(self, room, index, after)
        self.open(sub)
        self.subscriptions.append(sub)
        return sub

    @abstractmethod
    def open(self, sub: LeanSubscription) -> None:
        """Connect ``sub`` from its cursor and hand the connection to the hub (blocking)."""

    def send(self, room: str, text: str, *, sent_at: int, client_msg_id: str) -> None:
        """Write one ``send_message`` and return; the answer arrives through ``answered`` (and
        Locust's request event, timed from ``sent_at``: the schedule)."""
        self._scheduled[client_msg_id] = sent_at
        try:
            with map_errors("send"):
                self._send(room, text, sent_at, client_msg_id)
        except ClientError as exc:
            self.hub.events[f"send_failed:{type(exc).__name__}"] += 1
            self.answer(client_msg_id, None, "connection_lost", time.time_ns() // 1000)

    @abstractmethod
    def _send(self, room: str, text: str, sent_at: int, client_msg_id: str) -> None:
        """Write the send on this transport's connection (raise when it cannot be written)."""

    def close_subscription(self, sub: LeanSubscription) -> None:
        """End ``sub``'s connection (transports that share one override this)."""
        if sub.conn is not None:
            sub.conn.close("closed by the client")

    def answer(
        self, client_msg_id: str, msg_id: int | None, code: str | None, received: int
    ) -> None:
        """A send's answer (from the hub): to ``answered``, and to Locust."""
        if self.answered is not None:
            self.answered(client_msg_id, msg_id, code, received)
        sent_at = self._scheduled.pop(client_msg_id, None)
        if self.request_event is not None and sent_at is not None:
            self.request_event.fire(
                request_type=self.transport,
                name="send",
                response_time=max(received - sent_at, 0) / 1000,
                response_length=0,
                exception=None if code is None else Refused(code, "the send was not stored"),
                context={},
            )

    def close(self) -> None:
        self.closed = True
        for sub in self.subscriptions:
            sub.close()
        self.subscriptions.clear()

    def bearer(self) -> bytes:
        if self.token is None:
            raise Refused("unauthorized", "log in first")
        return self.token.encode()


# -- HTTP/1.1 pieces ------------------------------------------------------------------------


class HttpHead:
    """A response head read with h11 (once per connection: the hot path parses by hand)."""

    __slots__ = ("headers", "raw", "rest", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], raw: bytes, rest: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        """The head as it came, through its blank line."""
        self.rest = rest
        """Bytes read past the head (the start of the body, or the first frames)."""


def read_head(sock: socket.socket, deadline: float, upgrade: bool = False) -> HttpHead:
    """Read a response head from a blocking socket, with h11 checking it (``upgrade``: the
    request asked to switch protocols, so a 101 is the expected answer)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise ClientError("response head too large")
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise ClientError("no answer in time") from None
        except OSError as exc:
            raise ClientError(f"connection failed: {exc}") from exc
        if not data:
            raise ClientError("the server closed the connection")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    conn = h11.Connection(h11.CLIENT)
    proposal = [("connection", "upgrade"), ("upgrade", "websocket")] if upgrade else []
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x"), *proposal]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head + b"\r\n\r\n")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise ClientError(f"bad response head: {exc}") from exc
    if not isinstance(event, (h11.Response, h11.InformationalResponse)):
        raise ClientError(f"expected a response head, got {event!r}")
    return HttpHead(event.status_code, dict(event.headers), head + b"\r\n\r\n", rest)


def request_bytes(
    method: str,
    target: str,
    authority: str,
    headers: list[tuple[str, str | bytes]],
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"host: " + authority.encode()]
    for name, value in headers:
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if body or method == "POST":
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def http_request(
    host: str,
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str | bytes]],
    timeout: float,
    body: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on its own connection (``connection: close``): status, headers, body."""
    deadline = time.monotonic() + timeout
    sock = connect(host, port, timeout)
    try:
        sock.sendall(
            request_bytes(
                method, target, f"{host}:{port}", [*headers, ("connection", "close")], body
            )
        )
        head = read_head(sock, deadline)
        length = int(head.headers.get(b"content-length", b"-1"))
        data = head.rest
        while length < 0 or len(data) < length:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return head.status, head.headers, data[:length] if length >= 0 else data
    except (TimeoutError, OSError) as exc:
        raise ClientError(f"{method} {target} failed: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def parse_response(data: bytes, at: int) -> tuple[int, int, int, int] | None:
    """A whole response at ``data[at:]`` with a content-length body: (status, body start,
    body end, next); None when it is not all there yet. Chunked answers are not expected
    from a send or a poll and raise."""
    head_end = data.find(b"\r\n\r\n", at)
    if head_end < 0:
        return None
    status = int(data[at + 9 : at + 12])
    start = head_end + 4
    lower = data[at:head_end].lower()
    mark = lower.find(b"\r\ncontent-length:")
    if mark < 0:
        if status in (204, 304) or 100 <= status < 200:
            return status, start, start, start
        raise ClientError("an answer without content-length")
    mark += at + 17
    end_of_line = data.find(b"\r\n", mark, head_end + 2)
    length = int(data[mark:end_of_line])
    if len(data) < start + length:
        return None
    return status, start, start + length, start + length


class PostConn(Conn):
    """A keep-alive HTTP/1.1 connection for sends, pipelined: requests go out on schedule and
    answers come back in order (HTTP/1.1 answers pipelined requests in order), so the oldest
    waiting send owns the next answer."""

    __slots__ = ("_buffer", "client", "pending")

    def __init__(self, client: HttpLeanClient, sock: socket.socket) -> None:
        super().__init__(client.hub, sock)
        self.client = client
        self.pending: deque[str] = deque()
        self._buffer = b""

    def post(self, request: bytes, client_msg_id: str) -> None:
        with self._lock:
            self.pending.append(client_msg_id)
        self.write(request)

    def on_data(self, data: bytes, received: int) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while at < len(buffer):
            parsed = parse_response(buffer, at)
            if parsed is None:
                break
            status, start, end, at = parsed
            with self._lock:
                client_msg_id = self.pending.popleft() if self.pending else ""
            body = buffer[start:end]
            if status in (200, 201):
                self.client.answer(client_msg_id, protocol.decode_id(body), None, received)
            else:
                refused = refused_from_body(body, status)
                self.client.answer(client_msg_id, None, refused.code, received)
        self._buffer = buffer[at:]

    def on_end(self, reason: str) -> None:
        with self._lock:
            pending, self.pending = self.pending, deque()
        now = time.time_ns() // 1000
        for client_msg_id in pending:
            self.client.answer(client_msg_id, None, "connection_lost", now)
        self.client.sender_ended(self)


class HttpLeanClient(LeanClient):
    """Sends by pipelined POST on one keep-alive connection (poll, long poll, SSE)."""

    def __init__(self, base_url: str, hub: Hub, **kwargs: Any) -> None:
        super().__init__(base_url, hub, **kwargs)
        self._sender: PostConn | None = None
        self._sender_lock = threading.Lock()

    def _send(self, room: str, text: str, sent_at: int, client_msg_id: str) -> None:
        body = protocol.encode(
            protocol.SendMessage(room=None, text=text, client_msg_id=client_msg_id, sent_at=sent_at)
        ).encode()
        request = request_bytes(
            "POST",
            f"/rooms/{room}/messages",
            self.authority,
            [("authorization", b"Bearer " + self.bearer()), ("content-type", "application/json")],
            body,
        )
        self._post_conn().post(request, client_msg_id)

    def _post_conn(self) -> PostConn:
        with self._sender_lock:
            if self._sender is None or self._sender.closed:
                sock = connect(self.host, self.port, self.timeout)
                self._sender = PostConn(self, sock)
                self.hub.add(self._sender)
            return self._sender

    def sender_ended(self, conn: PostConn) -> None:
        with self._sender_lock:
            if self._sender is conn:
                self._sender = None

    def close(self) -> None:
        super().close()
        with self._sender_lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close("closed by the client")

    def headers(self, sub: LeanSubscription) -> list[tuple[str, str | bytes]]:
        return [("authorization", b"Bearer " + self.bearer())]


# -- socket transports (WebSocket, the TCP floor): sends and answers on the room's link ---------


class DuplexConn(Conn):
    """A link that carries the room's events and the sends, each send answered in order.

    The server answers each message in turn on the same link, so the oldest waiting send owns
    each ``ack`` (or ``error`` other than ``slow_consumer``), as in
    :class:`wirewise.clients.duplex.DuplexClient`. Subclasses split the byte stream into messages.
    """

    __slots__ = ("_buffer", "client", "pending", "sub")

    def __init__(
        self, client: DuplexLeanClient, sock: socket.socket, sub: LeanSubscription | None
    ) -> None:
        super().__init__(client.hub, sock)
        self.client = client
        self.sub = sub
        self.pending: deque[str] = deque()
        self._buffer = b""

    def frame(self, text: str) -> bytes:
        raise NotImplementedError

    def send_text(self, text: str, client_msg_id: str) -> None:
        data = self.frame(text)
        with self._lock:
            self.pending.append(client_msg_id)
        self.write(data)

    def message(self, data: bytes, start: int, end: int, received: int) -> None:
        """One JSON message ``data[start:end]``: the room's, or an answer."""
        if self.sub is not None and data.startswith(_NEW, start):
            self.sub.message(data, start, end, received)
        else:
            self.text(data[start:end], received)

    def text(self, payload: bytes, received: int) -> None:
        if payload.startswith(_ACK) and self.pending:
            # {"type":"ack","client_msg_id":"...","id":N}: ours, in order; the rest of the
            # answer is what the send's own id and the server's id say.
            at = payload.rfind(b',"id":')
            with self._lock:
                client_msg_id = self.pending.popleft()
            if payload.find(client_msg_id.encode(), 17, at) < 0:
                self.hub.mismatched += 1  # an answer out of order: the ledger will show it
            self.client.answer(client_msg_id, int(payload[at + 6 : -1]), None, received)
            return
        if payload.startswith(b'{"type":"ack"') or payload.startswith(b'{"type":"error"'):
            message = protocol.decode_server(payload)
            if isinstance(message, Ack) or (
                isinstance(message, Error) and message.code != "slow_consumer"
            ):
                with self._lock:
                    oldest = self.pending.popleft() if self.pending else None
                if oldest is not None:
                    if isinstance(message, Ack):
                        self.client.answer(oldest, message.id, None, received)
                    else:
                        self.client.answer(oldest, None, message.code, received)
                    return
        if self.sub is not None:
            self.sub.event(payload, received)
        elif not payload.startswith(b'{"type":"user_') and not payload.startswith(_NEW):
            self.hub.events["send_link:" + protocol.decode_server(payload).type] += 1

    def on_end(self, reason: str) -> None:
        with self._lock:
            pending, self.pending = self.pending, deque()
        now = time.time_ns() // 1000
        for client_msg_id in pending:
            self.client.answer(client_msg_id, None, "connection_lost", now)
        if self.sub is not None:
            self.sub.ended(reason)
        else:
            self.client.link_ended(self)


class DuplexLeanClient(LeanClient):
    """Sends go on the room's subscription link, or a send-only link (on a socket transport,
    being connected is being in the room)."""

    def __init__(self, base_url: str, hub: Hub, **kwargs: Any) -> None:
        super().__init__(base_url, hub, **kwargs)
        self._links: dict[str, DuplexConn] = {}
        self._links_lock = threading.Lock()

    @abstractmethod
    def connect_room(
        self, room: str, after: int | None, sub: LeanSubscription | None
    ) -> DuplexConn:
        """Open a link to ``room`` from ``after`` and add it to the hub."""

    def open(self, sub: LeanSubscription) -> None:
        sub.opened(self.connect_room(sub.room, sub.after, sub))

    def _send(self, room: str, text: str, sent_at: int, client_msg_id: str) -> None:
        message = protocol.SendMessage(
            room=room, text=text, client_msg_id=client_msg_id, sent_at=sent_at
        )
        self._link(room).send_text(protocol.encode(message), client_msg_id)

    def _link(self, room: str) -> DuplexConn:
        for sub in self.subscriptions:
            conn = sub.conn
            if sub.room == room and conn is not None and not conn.closed:
                return conn  # type: ignore[return-value]
        with self._links_lock:
            link = self._links.get(room)
            if link is None or link.closed:
                link = self._links[room] = self.connect_room(room, None, None)
            return link

    def link_ended(self, conn: DuplexConn) -> None:
        with self._links_lock:
            for room, link in list(self._links.items()):
                if link is conn:
                    del self._links[room]

    def close(self) -> None:
        super().close()
        with self._links_lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.close("closed by the client")
