"""Lean HTTP/2 client: one connection per client, its SSE streams read by hand, the rest by h2.

As with :class:`wirewise.clients.h2.H2Client`, a client opens exactly one HTTP/2 connection (cleartext,
prior knowledge) and every subscription stream and every POST is a stream on it. The ``h2``
library does everything except the hot path: the DATA frames of the event streams. Those are
split off by their 9-byte frame header and parsed like an SSE body (:class:`H2Conn` keeps a
partial event per stream); every other frame (HEADERS with HPACK, SETTINGS, PING,
WINDOW_UPDATE, RST_STREAM, GOAWAY, and the DATA of POST answers) is fed to ``h2`` in order, one
frame at a time, so that its state (HPACK tables, stream states, its own flow control) is the
one it would have had. Through ``h2`` a DATA frame cost ~20 us here; split off, ~2 us.

Flow control of the split-off streams is ours: their bytes never reach ``h2``'s accounting
(so it never sees them exceed a window), and we send WINDOW_UPDATE for them, on the stream
and on the connection, once half a window is consumed. POSTs go out as soon as they are
scheduled; beyond the server's ``max_concurrent_streams`` they wait for a stream to close.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from wirewise import protocol
from wirewise.clients.base import ClientError, connect, refused_from_body
from wirewise.clients.lean.base import LeanClient, LeanSubscription
from wirewise.clients.lean.hub import Conn, Hub

__all__ = ["H2Conn", "H2LeanClient"]

STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
_DATA, _HEADERS, _WINDOW_UPDATE = 0x0, 0x1, 0x8
_END_STREAM, _PADDED = 0x1, 0x8
_SETTINGS = h2.settings.SettingCodes
MAX_FRAME = 1 << 24


def window_update(stream_id: int, increment: int) -> bytes:
    return (
        (4).to_bytes(3, "big")
        + bytes((_WINDOW_UPDATE, 0))
        + stream_id.to_bytes(4, "big")
        + increment.to_bytes(4, "big")
    )


class _Opening:
    """A stream asked for whose answer the subscriber waits."""

    __slots__ = ("body", "done", "status", "sub")

    def __init__(self, sub: LeanSubscription) -> None:
        self.sub = sub
        self.status = 0
        self.body = b""
        self.done = threading.Event()


class H2Conn(Conn):
    """One client's HTTP/2 connection, read by the hub; see the module docstring."""

    __slots__ = (
        "_buffer",
        "_h2",
        "_h2lock",
        "_posts",
        "_queued",
        "_unacked",
        "_unacked_total",
        "client",
        "opening",
        "streams",
        "texts",
    )

    def __init__(self, client: H2LeanClient, sock: socket.socket) -> None:
        super().__init__(client.hub, sock)
        self.client = client
        self._buffer = b""
        self._h2lock = threading.Lock()
        self.streams: dict[int, LeanSubscription] = {}
        """Event streams whose DATA we read ourselves."""
        self.texts: dict[int, bytes] = {}
        """Per event stream: the start of an event not yet ended by a blank line."""
        self.opening: dict[int, _Opening] = {}
        self._posts: dict[int, list[Any]] = {}  # stream id -> [client_msg_id, status, body]
        self._queued: deque[tuple[bytes, bytes, str]] = deque()  # (path, body, id) awaiting a slot
        self._unacked: dict[int, int] = {}
        self._unacked_total = 0
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={_SETTINGS.ENABLE_PUSH: 0, _SETTINGS.INITIAL_WINDOW_SIZE: STREAM_WINDOW},
        )
        with self._h2lock:
            self._h2.initiate_connection()
            self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self._flush()

    # -- requests (any thread) -----------------------------------------------------------------

    def open_stream(self, sub: LeanSubscription, headers: list[tuple[bytes, bytes]]) -> _Opening:
        opening = _Opening(sub)
        with self._h2lock:
            stream_id = self._h2.get_next_available_stream_id()
            self.opening[stream_id] = opening
            self._h2.send_headers(
                stream_id,
                self._request(b"GET", f"/rooms/{sub.room}/stream".encode(), headers),
                end_stream=True,
            )
            self._flush()
        return opening

    def post(self, path: bytes, body: bytes, client_msg_id: str) -> None:
        with self._h2lock:
            if self._full():
                self._queued.append((path, body, client_msg_id))
                return
            self._start_post(path, body, client_msg_id)
            self._flush()

    def _request(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        return [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", self.client.authority.encode()),
            (b":path", path),
            *headers,
        ]

    def _full(self) -> bool:
        return self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams

    def _start_post(self, path: bytes, body: bytes, client_msg_id: str) -> None:
        """Under the h2 lock: a POST stream with its (small) body."""
        stream_id = self._h2.get_next_available_stream_id()
        headers = [
            (b"authorization", b"Bearer " + self.client.bearer()),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        self._posts[stream_id] = [client_msg_id, 0, b""]
        self._h2.send_headers(stream_id, self._request(b"POST", path, headers))
        if len(body) <= self._h2.local_flow_control_window(stream_id):
            self._h2.send_data(stream_id, body, end_stream=True)
        else:  # no send window: wait for the server's WINDOW_UPDATE
            self._posts[stream_id].append(body)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self.write(data)

    # -- reading (the hub) ---------------------------------------------------------------------

    def on_data(self, data: bytes, received: int) -> None:
        buffer = self._buffer + data if self._buffer else data
        size, at = len(buffer), 0
        streams = self.streams
        while size - at >= 9:
            length = int.from_bytes(buffer[at : at + 3], "big")
            end = at + 9 + length
            if end > size:
                break
            kind = buffer[at + 3]
            stream_id = int.from_bytes(buffer[at + 5 : at + 9], "big") & 0x7FFFFFFF
            if kind == _DATA and stream_id in streams:
                flags = buffer[at + 4]
                start = at + 9
                stop = end
                if flags & _PADDED:
                    stop -= buffer[start]
                    start += 1
                self._consumed(stream_id, length)
                self._events(stream_id, buffer[start:stop], received)
                if flags & _END_STREAM:
                    self._stream_over(stream_id, "the server ended the stream")
            else:
                self._feed(buffer[at:end], received)
            at = end
        self._buffer = buffer[at:]
        if self._unacked_total >= CONNECTION_WINDOW // 2:
            self._grant()

    def _events(self, stream_id: int, data: bytes, received: int) -> None:
        text = self.texts.get(stream_id)
        if text:
            data = text + data
        at = 0
        sub = self.streams[stream_id]
        while (end := data.find(b"\n\n", at)) >= 0:
            found = data.find(b"data: ", at, end)
            if found >= 0:
                sub.message(data, found + 6, end, received)
            at = end + 2
        self.texts[stream_id] = data[at:]

    def _consumed(self, stream_id: int, length: int) -> None:
        self._unacked_total += length
        unacked = self._unacked.get(stream_id, 0) + length
        if unacked >= STREAM_WINDOW // 2:
            self.write(window_update(stream_id, unacked))
            unacked = 0
        self._unacked[stream_id] = unacked

    def _grant(self) -> None:
        self.write(window_update(0, self._unacked_total))
        self._unacked_total = 0

    def _feed(self, frame: bytes, received: int) -> None:
        with self._h2lock:
            try:
                events = self._h2.receive_data(frame)
            except h2.exceptions.ProtocolError as exc:
                raise ClientError(f"HTTP/2 protocol error: {exc!r}") from exc
            for event in events:
                self._dispatch(event, received)
            self._flush()

    def _dispatch(self, event: h2.events.Event, received: int) -> None:
        """Under the h2 lock."""
        stream_id = getattr(event, "stream_id", 0)
        if isinstance(event, h2.events.ResponseReceived):
            status = int(dict(event.headers)[b":status"])
            if (opening := self.opening.get(stream_id)) is not None:
                opening.status = status
                if status == 200:  # from the next frame on, its DATA is ours
                    del self.opening[stream_id]
                    self.streams[stream_id] = opening.sub
                    self.texts[stream_id] = b""
                    opening.done.set()
            elif (post := self._posts.get(stream_id)) is not None:
                post[1] = status
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
            if (post := self._posts.get(stream_id)) is not None:
                post[2] += event.data
            elif (opening := self.opening.get(stream_id)) is not None:
                opening.body += event.data
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            self._ended(stream_id, event, received)
            self._next_posts()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._send_waiting_bodies()
            self._next_posts()
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise ClientError(f"GOAWAY from the server ({event.error_code!r})")

    def _ended(self, stream_id: int, event: h2.events.Event, received: int) -> None:
        reset = isinstance(event, h2.events.StreamReset)
        if (post := self._posts.pop(stream_id, None)) is not None:
            client_msg_id, status, body = post[0], post[1], post[2]
            if reset or status == 0:
                self.client.answer(client_msg_id, None, "stream_reset", received)
            elif status in (200, 201):
                self.client.answer(client_msg_id, protocol.decode_id(body), None, received)
            else:
                self.client.answer(
                    client_msg_id, None, refused_from_body(body, status).code, received
                )
        elif (opening := self.opening.pop(stream_id, None)) is not None:
            opening.done.set()  # refused (its status and body say why), or reset
        elif stream_id in self.streams:
            self._stream_over(stream_id, "stream reset" if reset else "stream ended")

    def _send_waiting_bodies(self) -> None:
        for stream_id, post in list(self._posts.items()):
            if len(post) == 4 and len(post[3]) <= self._h2.local_flow_control_window(stream_id):
                self._h2.send_data(stream_id, post.pop(), end_stream=True)

    def _next_posts(self) -> None:
        while self._queued and not self._full():
            self._start_post(*self._queued.popleft())

    def _stream_over(self, stream_id: int, reason: str) -> None:
        sub = self.streams.pop(stream_id, None)
        self.texts.pop(stream_id, None)
        self._unacked.pop(stream_id, None)
        if sub is not None:
            sub.ended(reason)

    def cancel(self, sub: LeanSubscription) -> None:
        with self._h2lock:
            for stream_id, owner in list(self.streams.items()):
                if owner is sub:
                    del self.streams[stream_id]
                    self.texts.pop(stream_id, None)
                    self._unacked.pop(stream_id, None)
                    if not self.closed:
                        try:
                            self._h2.reset_stream(stream_id)
                            self._flush()
                        except (h2.exceptions.H2Error, ConnectionError):
                            pass

    def on_end(self, reason: str) -> None:
        now = time.time_ns() // 1000
        with self._h2lock:
            posts, self._posts = self._posts, {}
            queued, self._queued = self._queued, deque()
            streams, self.streams = self.streams, {}
            openings, self.opening = self.opening, {}
        for post in posts.values():
            self.client.answer(post[0], None, "connection_lost", now)
        for _path, _body, client_msg_id in queued:
            self.client.answer(client_msg_id, None, "connection_lost", now)
        for opening in openings.values():
            opening.done.set()
        self.client.connection_ended(self)
        for sub in streams.values():
            sub.ended(reason)


class H2LeanClient(LeanClient):
    transport = "h2"

    def __init__(self, base_url: str, hub: Hub, **kwargs: Any) -> None:
        super().__init__(base_url, hub, **kwargs)
        self._conn: H2Conn | None = None
        self._conn_lock = threading.Lock()

    def connection(self) -> H2Conn:
        with self._conn_lock:
            if self._conn is None or self._conn.closed:
                sock = connect(self.host, self.port, self.timeout)
                self._conn = H2Conn(self, sock)
                self.hub.add(self._conn)
            return self._conn

    def connection_ended(self, conn: H2Conn) -> None:
        with self._conn_lock:
            if self._conn is conn:
                self._conn = None

    def open(self, sub: LeanSubscription) -> None:
        headers = [
            (b"authorization", b"Bearer " + self.bearer()),
            (b"accept", b"text/event-stream"),
        ]
        if sub.after is not None:
            headers.append((b"last-event-id", b"%d" % sub.after))
        conn = self.connection()
        opening = conn.open_stream(sub, headers)
        if not opening.done.wait(self.timeout):
            raise ClientError(f"no answer to the stream within {self.timeout:g} s")
        if opening.status != 200:
            if opening.status == 0:
                raise ClientError("the stream was reset before its answer")
            raise refused_from_body(opening.body, opening.status)
        sub.opened(conn)

    def _send(self, room: str, text: str, sent_at: int, client_msg_id: str) -> None:
        body = protocol.encode(
            protocol.SendMessage(room=None, text=text, client_msg_id=client_msg_id, sent_at=sent_at)
        ).encode()
        try:
            self.connection().post(f"/rooms/{room}/messages".encode(), body, client_msg_id)
        except h2.exceptions.H2Error as exc:
            raise ConnectionError(f"HTTP/2: {exc!r}") from exc

    def close_subscription(self, sub: LeanSubscription) -> None:
        """Reset its stream; the connection carries the others and the sends."""
        conn = sub.conn
        if isinstance(conn, H2Conn):
            conn.cancel(sub)

    def close(self) -> None:
        super().close()
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close("closed by the client")
