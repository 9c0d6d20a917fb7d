"""HTTP/2: every subscription's SSE stream and every POST multiplexed on one connection.

The point of the ``h2`` transport is one connection per client instead of one per stream, so
this client opens exactly one HTTP/2 connection and keeps it: ``GET /rooms/{room}/stream`` for
each subscription and ``POST /login`` / ``POST /rooms/{room}/messages`` all become streams on
it. httpx/httpcore cannot do that (a POST stalls behind an open stream until the stream's next
chunk, and the sync client hangs under gevent; seen with httpx 0.28 / httpcore 1.0), so this is a thin
client on the ``h2`` protocol library, in the sans-I/O style of h11 and websockets:

- :class:`wirewise.clients.eventstream.SseParser` turns bytes into SSE events (pure);
- :class:`_Cleartext` / :class:`_Tls` turn bytes into bytes (TLS through ``ssl.MemoryBIO``, so
  that the TLS state is touched only under the connection's lock: an ``SSLSocket`` must not be
  read in one thread while another writes it);
- :class:`_Connection` owns the socket, the ``H2Connection`` and the one reader thread that
  feeds it and dispatches its events to per-stream queues;
- :class:`H2Client` is the chat client on top.

Cleartext ``http://`` speaks HTTP/2 with prior knowledge (the preface goes out at once);
``https://`` negotiates ``h2`` with ALPN and refuses anything else. A GOAWAY or a dropped
socket fails every open stream; the next request opens a new connection, and subscriptions
resume through :class:`wirewise.clients.base.Subscription`'s loop.

    with H2Client("http://127.0.0.1:8000") as client:
        client.login("ada")
        sub = client.subscribe("general", after=0)
        client.send("general", "hello")
        print(sub.get(5))
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from wirewise import protocol
from wirewise.clients import idle, reading
from wirewise.clients.base import (
    DEFAULT_TIMEOUT,
    Backoff,
    Client,
    ClientError,
    ConnectError,
    RequestEvent,
    SessionEnded,
    Subscription,
    refused_from_body,
)
from wirewise.clients.eventstream import SseEvent, SseParser
from wirewise.protocol import LoginRequest, SendMessage

__all__ = ["H2Client", "SseEvent", "SseParser", "h2_ssl_context"]

STREAM_WINDOW = 1 << 20
"""Receive window per stream (bytes). Data is acknowledged as its consumer reads it: a
stream whose consumer stalls stops the server after this much (see :class:`_Stream`)."""
CONNECTION_WINDOW = 1 << 24
"""Receive window of the whole connection, shared by every stream: 16 MiB so that many busy
streams do not starve each other between two WINDOW_UPDATEs."""
READ_SIZE = 1 << 16
IDLE_TIMEOUT = 45.0
"""Seconds a stream may stay silent (three of the server's 15 s heartbeats) before we drop it."""

_SETTINGS = h2.settings.SettingCodes


# -- bytes in, bytes out: cleartext or TLS ----------------------------------------------------


class _Cleartext:
    """HTTP/2 with prior knowledge: the bytes pass through untouched."""

    alpn: str | None = None

    def encrypt(self, data: bytes) -> bytes:
        return data

    def decrypt(self, data: bytes) -> bytes:
        return data


class _Tls:
    """TLS as a byte transformer over ``ssl.MemoryBIO``; the handshake blocks on ``sock``."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, host: str) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=host)
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(self._out.read())
                data = sock.recv(READ_SIZE)
                if not data:
                    raise ConnectionError("closed during the TLS handshake") from None
                self._in.write(data)
        sock.sendall(self._out.read())
        self.alpn = self._tls.selected_alpn_protocol()

    def encrypt(self, data: bytes) -> bytes:
        if data:
            self._tls.write(data)
        return self._out.read()

    def decrypt(self, data: bytes) -> bytes:
        self._in.write(data)
        chunks = []
        while True:
            try:
                chunk = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                raise ConnectionError("TLS closed by the server")
            chunks.append(chunk)
        return b"".join(chunks)


_h2_context: ssl.SSLContext | None = None
_h2_context_lock = threading.Lock()


def h2_ssl_context() -> ssl.SSLContext:
    """The verifying context every h2 client shares, offering only ``h2`` by ALPN.

    Not :func:`wirewise.clients.base.shared_ssl_context` itself: httpcore sets ALPN on any context it is
    given, on every connection, so that context's protocol list is whatever the last HTTP/1.1
    client left there. This one costs the same ~50 ms, once per process.
    """
    global _h2_context
    with _h2_context_lock:
        if _h2_context is None:
            _h2_context = ssl.create_default_context()
            _h2_context.set_alpn_protocols(["h2"])
        return _h2_context


def _unverified_context() -> ssl.SSLContext:
    """For tests against a self-signed certificate (no CA bundle loaded: cheap)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


# -- one HTTP/2 connection -------------------------------------------------------------------


class _Data(bytes):
    """A DATA chunk, with the flow-controlled length to acknowledge once it is read."""

    flow_controlled = 0


class _Stream:
    """One request's answer as a queue the reader fills: the status (int), DATA chunks
    (bytes), None at the end, or the ClientError that ended it.

    DATA is acknowledged (the window given back to the server) when the consumer reads it,
    not when the connection's reader receives it: a consumer that stops reading stops
    granting window, so the server stops sending and, as on every other transport, cuts it
    off as a slow consumer. The connection's other streams flow on.
    """

    def __init__(self, connection: _Connection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.ended = False
        self._items: queue.SimpleQueue[int | bytes | ClientError | None] = queue.SimpleQueue()

    def put(self, item: int | bytes | ClientError | None) -> None:
        self._items.put(item)

    def _get(self, timeout: float | None) -> int | bytes | None:
        """The next item; ``timeout`` None blocks without a timer (see :mod:`wirewise.clients.idle`)."""
        try:
            item = self._items.get(timeout=None if timeout is None else max(timeout, 0.0))
        except queue.Empty:
            raise ClientError(f"no answer on stream {self.stream_id} in time") from None
        if isinstance(item, ClientError):
            self.ended = True
            raise item
        if item is None:
            self.ended = True
        elif isinstance(item, _Data) and item.flow_controlled:
            self.connection.acknowledge(self.stream_id, item.flow_controlled)
        return item

    def status(self, deadline: float) -> int:
        status = self._get(deadline - time.monotonic())
        if not isinstance(status, int):
            raise ClientError(f"stream {self.stream_id} has no response headers")
        return status

    def read(self, timeout: float | None) -> bytes | None:
        """The next chunk of the body, None at its end."""
        chunk = self._get(timeout)
        if isinstance(chunk, int):
            raise ClientError(f"stream {self.stream_id} answered twice")
        return chunk

    def body(self, deadline: float) -> bytes:
        chunks = []
        while (chunk := self.read(deadline - time.monotonic())) is not None:
            chunks.append(chunk)
        return b"".join(chunks)

    def expire(self, seconds: float) -> None:
        """From the idle watch: the stream was silent too long; its reader raises."""
        self._items.put(ClientError(f"no data on stream {self.stream_id} for {seconds:g} s"))

    def close(self) -> None:
        """Cancel the stream (RST_STREAM) unless it ended; wakes a reader blocked on it."""
        if not self.ended:
            self._items.put(ClientError("stream cancelled"))
            self.connection.cancel(self.stream_id)


class _Connection:
    """A socket, an ``H2Connection`` and the one thread that reads them.

    Every use of the ``H2Connection`` and every write to the socket happens under ``_lock``;
    the reader holds it only to process what it has just read, never while it waits.
    """

    def __init__(
        self, host: str, port: int, authority: bytes, context: ssl.SSLContext | None, timeout: float
    ) -> None:
        self.authority = authority
        self.scheme = b"https" if context else b"http"
        self.error: ClientError | None = None
        self._write_timeout = timeout
        self._stuck = False
        self._sock = socket.create_connection((host, port), timeout=timeout)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._tls = _Tls(self._sock, context, host) if context else _Cleartext()
            if context and self._tls.alpn != "h2":
                raise ClientError(f"the server chose {self._tls.alpn!r}, not h2, by ALPN")
        except BaseException:
            self._sock.close()
            raise
        # Reads wait without a timer (a timer per read costs CPU; streams time their own
        # silence with clients.idle); a write stuck for `timeout` is cut off in _flush.
        self._sock.settimeout(None)
        self.alpn = self._tls.alpn
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={_SETTINGS.ENABLE_PUSH: 0, _SETTINGS.INITIAL_WINDOW_SIZE: STREAM_WINDOW},
        )
        self._lock = threading.Lock()
        self._slots = threading.Condition(self._lock)  # a stream closed: room for another
        self._streams: dict[int, _Stream] = {}
        self._pending: dict[int, bytes] = {}  # request bodies waiting for send window
        with self._lock:
            self._h2.initiate_connection()
            self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self._flush()
        self._reader = threading.Thread(target=self._read, name="wirewise-h2-reader", daemon=True)
        self._reader.start()

    # -- callers' side -------------------------------------------------------------------

    def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
    ) -> _Stream:
        """Open a stream and send the request; the answer arrives on the returned stream."""
        with self._lock:
            while self.error is None and self._full():
                if not self._slots.wait(deadline - time.monotonic()):
                    raise ClientError("no free HTTP/2 stream in time")
            if self.error is not None:
                raise ClientError(str(self.error))
            request_headers = [
                (b":method", method),
                (b":scheme", self.scheme),
                (b":authority", self.authority),
                (b":path", path),
                *headers,
            ]
            if body is not None:
                request_headers.append((b"content-length", b"%d" % len(body)))
            try:
                stream_id = self._h2.get_next_available_stream_id()
                stream = self._streams[stream_id] = _Stream(self, stream_id)
                self._h2.send_headers(stream_id, request_headers, end_stream=body is None)
                if body is not None:
                    self._pending[stream_id] = body
                    self._send_pending()
            except h2.exceptions.H2Error as exc:  # e.g. stream ids used up: a new connection
                self._fail(ClientError(f"HTTP/2 error: {exc!r}"))
                raise ClientError(f"HTTP/2 error: {exc!r}") from exc
            self._flush()
        return stream

    def acknowledge(self, stream_id: int, length: int) -> None:
        """Give ``length`` bytes of window back: the consumer of ``stream_id`` read them."""
        with self._lock:
            if self.error is not None:
                return
            try:
                self._h2.acknowledge_received_data(length, stream_id)
                self._flush()
            except (h2.exceptions.H2Error, ClientError):
                pass  # the stream or the connection is gone: nothing to give back

    def _full(self) -> bool:
        return self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams

    def cancel(self, stream_id: int) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)
            self._pending.pop(stream_id, None)
            if self.error is None:
                with contextlib.suppress(h2.exceptions.H2Error, ClientError):
                    self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    self._flush()  # a failed write has failed the connection: nothing to cancel
                self._slots.notify_all()

    def close(self) -> None:
        """Say GOAWAY, fail what is still open, and wait for the reader to finish."""
        with self._lock:
            if self.error is None:
                with contextlib.suppress(Exception):
                    self._h2.close_connection()
                    self._flush()
            self._fail(ClientError("connection closed"))
        if threading.current_thread() is not self._reader:
            self._reader.join(DEFAULT_TIMEOUT)

    # -- under the lock ------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._tls.encrypt(self._h2.data_to_send())
        if data:
            # Not a socket timeout: the reader blocks on the same socket without one, and
            # switching it between blocking and timed modes under a reading thread breaks
            # that read. The idle watch shuts a stuck write down instead.
            stuck = idle.watch(self._write_timeout, self._write_stuck)
            try:
                self._sock.sendall(data)
            except OSError as exc:  # a half-written frame leaves the connection unusable
                why = f"no progress for {self._write_timeout:g} s" if self._stuck else exc
                self._fail(ClientError(f"write failed: {why}"))
                raise ClientError(f"write failed: {why}") from exc
            finally:
                idle.unwatch(stuck)

    def _write_stuck(self) -> None:
        """From the idle watch: a write made no progress in time; end the connection."""
        self._stuck = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _send_pending(self) -> None:
        """Send what the peer's flow-control windows allow of the waiting request bodies."""
        for stream_id, body in list(self._pending.items()):
            try:
                room = min(len(body), self._h2.local_flow_control_window(stream_id))
                sent = 0
                while sent < room:
                    size = min(room - sent, self._h2.max_outbound_frame_size)
                    end = sent + size == len(body)
                    self._h2.send_data(stream_id, body[sent : sent + size], end_stream=end)
                    sent += size
                if not body:
                    self._h2.end_stream(stream_id)
                if sent == len(body):
                    del self._pending[stream_id]
                else:
                    self._pending[stream_id] = body[sent:]
            except h2.exceptions.StreamClosedError:
                self._pending.pop(stream_id, None)

    def _fail(self, error: ClientError) -> None:
        """End the connection: every open stream's waiter raises ``error``."""
        if self.error is None:
            self.error = error
        for stream in self._streams.values():
            stream.put(ClientError(str(error)))
        self._streams.clear()
        self._pending.clear()
        self._slots.notify_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; it closes the socket

    # -- the reader thread ---------------------------------------------------------------

    def _read(self) -> None:
        recv = reading.reader(self._sock, READ_SIZE)
        try:
            while True:
                try:
                    data = recv()
                except OSError:
                    data = b""
                with self._lock:
                    if self.error is not None:
                        return
                    try:
                        if not data:
                            raise ClientError("connection closed by the server")
                        for event in self._h2.receive_data(self._tls.decrypt(data)):
                            self._dispatch(event)
                        self._flush()
                    except Exception as exc:  # nobody else reads this socket: it is over
                        self._fail(exc if isinstance(exc, ClientError) else ClientError(repr(exc)))
                        return
        finally:
            self._sock.close()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            if stream := self._streams.get(event.stream_id):
                data = _Data(event.data)
                data.flow_controlled = event.flow_controlled_length
                stream.put(data)  # acknowledged when its consumer reads it (see _Stream)
            else:  # a stream we gave up on: give its window back at once
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived):
            if stream := self._streams.get(event.stream_id):
                stream.put(int(dict(event.headers)[b":status"]))
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            self._pending.pop(event.stream_id, None)
            if stream := self._streams.pop(event.stream_id, None):
                if isinstance(event, h2.events.StreamEnded):
                    stream.put(None)
                else:
                    stream.put(ClientError(f"stream reset ({event.error_code!r})"))
            self._slots.notify_all()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._send_pending()
            self._slots.notify_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise ClientError(f"GOAWAY from the server ({event.error_code!r})")
        # PING is answered by h2 itself; settings are acknowledged by it too.


# -- the chat client -------------------------------------------------------------------------


class H2Client(Client):
    """The chat over one HTTP/2 connection: streams for subscriptions, POSTs beside them.

    ``verify`` is True (check the certificate against the system's CAs), False (accept any:
    tests against ``wirewise serve h2 --tls``) or an ``ssl.SSLContext`` (ALPN ``h2`` is set
    on it). ``connections_opened`` counts the sockets this client has opened, for tests.
    """

    transport = "h2"
    idle_timeout = IDLE_TIMEOUT

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        token: str | None = None,
        verify: bool | ssl.SSLContext = True,
        request_event: RequestEvent | None = None,
    ) -> None:
        super().__init__(
            base_url, timeout=timeout, backoff=backoff, token=token, request_event=request_event
        )
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"an h2 client needs an http:// or https:// URL, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._authority = url.netloc.encode()
        self._prefix = url.path.rstrip("/")
        self._context: ssl.SSLContext | None = None
        if url.scheme == "https":
            if isinstance(verify, ssl.SSLContext):
                verify.set_alpn_protocols(["h2"])
                self._context = verify
            else:
                self._context = h2_ssl_context() if verify else _unverified_context()
        self._connection: _Connection | None = None
        self._connection_lock = threading.Lock()
        self._closed = False
        self.connections_opened = 0

    @property
    def alpn(self) -> str | None:
        """The protocol ALPN chose on the current connection (None for cleartext)."""
        return self._connection.alpn if self._connection else None

    def _connect(self) -> _Connection:
        """The live connection, or a new one when there is none or it failed (lazily)."""
        with self._connection_lock:
            if self._closed:
                raise ClientError("the client is closed")
            connection = self._connection
            if connection is None or connection.error is not None:
                if connection is not None:
                    connection.close()
                try:
                    connection = _Connection(
                        self._host, self._port, self._authority, self._context, self.timeout
                    )
                except (OSError, ssl.SSLError) as exc:
                    raise ConnectError(f"cannot connect to {self.base_url}: {exc}") from exc
                self._connection = connection
                self.connections_opened += 1
            return connection

    def _open(
        self, method: bytes, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> tuple[_Stream, float]:
        deadline = time.monotonic() + self.timeout
        stream = self._connect().request(
            method, (self._prefix + path).encode(), headers, body, deadline
        )
        return stream, deadline

    def _post(self, path: str, body: str, token: str | None) -> tuple[int, bytes]:
        headers = [(b"content-type", b"application/json")]
        if token is not None:
            headers.append((b"authorization", b"Bearer " + token.encode()))
        stream, deadline = self._open(b"POST", path, headers, body.encode())
        try:
            status = stream.status(deadline)
            return status, stream.body(deadline)
        finally:
            stream.close()

    def _login(self, user: str) -> str:
        status, body = self._post("/login", protocol.encode(LoginRequest(user)), None)
        if status != 200:
            raise refused_from_body(body, status)
        return protocol.decode_token(body)

    def _send(self, room: str, message: SendMessage) -> int:
        token = self._require_token()
        body = protocol.encode(message)

        def attempt() -> int:
            status, answer = self._post(f"/rooms/{room}/messages", body, token)
            if status not in (200, 201):
                raise refused_from_body(answer, status)
            return protocol.decode_id(answer)

        return self._retrying(attempt)

    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        headers = [
            (b"authorization", b"Bearer " + self._require_token().encode()),
            (b"accept", b"text/event-stream"),
        ]
        if sub.last_id is not None:
            headers.append((b"last-event-id", b"%d" % sub.last_id))
        stream, deadline = self._open(b"GET", f"/rooms/{sub.room}/stream", headers, None)
        forget = sub.on_close(stream.close)
        try:
            status = stream.status(deadline)
            if status != 200:
                raise refused_from_body(stream.body(deadline), status)
            opened()
            silence = idle.watch(self.idle_timeout, lambda: stream.expire(self.idle_timeout))
            try:
                self._read_events(sub, stream, silence)
            finally:
                idle.unwatch(silence)
            raise SessionEnded("the server ended the stream")
        finally:
            forget()
            stream.close()

    @staticmethod
    def _read_events(sub: Subscription, stream: _Stream, silence: idle.Idle) -> None:
        """Parse the stream's chunks into messages for ``sub`` until the stream ends."""
        parser = SseParser()
        while (chunk := stream.read(None)) is not None:  # silence is timed by the watch
            silence.last = time.monotonic()  # silence.touch(), inlined: once per chunk
            for event in parser.feed(chunk):
                try:
                    message = protocol.decode_server(event.data)
                except protocol.ProtocolError as exc:
                    raise ClientError(f"bad event {event.data[:80]!r}: {exc}") from exc
                sub.deliver(message)

    def close(self) -> None:
        super().close()  # subscriptions first: their streams are cancelled on the connection
        with self._connection_lock:
            self._closed = True
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
