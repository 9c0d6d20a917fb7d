"""A thin HTTP/1.1 connection on h11 for the hot paths: polls, SSE streams and sends.

Why not httpx there: a poll through ``httpx.Client.get`` cost ~500 us of CPU here (URL and
query merging, request and response models, cookie extraction, httpcore's pool, then h11),
and every chunk of an SSE stream climbed through five iterator layers and h11's chunk reader
(~40 % of the SSE client's CPU per delivery). This keeps h11 for what it is good at (writing
the request, parsing and validating the response head, framing a whole body, keep-alive) on
one socket owned by one subscription's thread, and decodes a chunked *stream* itself: a
streamed body is consumed here, so h11 never sees it and the connection is not reused.

Sends come here too (through httpx a send cost ~700-850 us of CPU, as much as twenty
deliveries; here ~270 us). httpx stays for login, once per client.

    connection = H1Connection("http://127.0.0.1:8000", timeout=5.0)
    head = connection.request("GET", "/rooms/general/events?after=0", headers, read_timeout=5.0)
    body = connection.read_body()        # or: for data in connection.stream(45.0): ...
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from wirewise.clients import idle, reading
from wirewise.clients.base import ClientError, connect

__all__ = ["H1Connection", "Head"]

READ_SIZE = 1 << 16
MAX_HEAD = 64 * 1024
"""A response head (status line and headers) larger than this is refused."""
MAX_CHUNK_LINE = 1024

_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a head: LF, optional CR, LF
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*")  # h11's chunk header, less CRLF


@dataclass(frozen=True)
class Head:
    """A response's status and headers (names lower-cased, values as bytes)."""

    status: int
    headers: dict[bytes, bytes]

    def header(self, name: bytes) -> str:
        return self.headers.get(name, b"").decode("latin-1")


class H1Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time, reopened when needed.

    Not thread-safe except :meth:`abort`, which another thread may call to end a blocked
    read (shutting the socket down wakes a reader; closing its descriptor would not).
    """

    def __init__(self, base_url: str, timeout: float, verify: bool | ssl.SSLContext = True) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"an HTTP/1.1 connection needs an http(s):// URL, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._authority = url.netloc.encode()
        self._prefix = url.path.rstrip("/")
        self._context = _client_context(verify) if url.scheme == "https" else None
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._h11: h11.Connection | None = None
        self._rest = b""  # bytes read past the head, not yet given to anyone
        self._chunked_body = False
        self._idle: idle.Idle | None = None  # while a stream is read
        self._stream_recv: Callable[[], bytes] | None = None
        self._expired = False
        self._lock = threading.Lock()  # guards _sock against abort() from another thread
        self._aborted = False

    # -- requests ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        read_timeout: float,
        body: bytes | None = None,
    ) -> Head:
        """Send a request and read the response head (the body comes next)."""
        sock, conn = self._ready()
        if body is not None:
            headers = [*headers, (b"content-length", b"%d" % len(body))]
        request = h11.Request(
            method=method,
            target=(self._prefix + path).encode(),
            headers=[(b"host", self._authority), *headers],
        )
        try:
            data = conn.send(request)
            if body:
                data += conn.send(h11.Data(data=body))
            sock.settimeout(self._timeout)
            sock.sendall(data + conn.send(h11.EndOfMessage()))
            sock.settimeout(read_timeout)
            return self._head(sock, conn)
        except (OSError, h11.ProtocolError) as exc:
            self.close()
            raise ClientError(_describe(exc)) from exc

    def read_body(self) -> bytes:
        """The whole body of the last response (framed by h11); the connection stays usable."""
        sock, conn = self._current()
        chunks = []
        try:
            for data in self._h11_body(sock, conn):
                chunks.append(data)
        except (OSError, h11.ProtocolError) as exc:
            self.close()
            raise ClientError(_describe(exc)) from exc
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self.close()  # "Connection: close", or a body read to the end of the stream
        return b"".join(chunks)

    def stream(self, idle_timeout: float) -> Iterator[bytes]:
        """The body of the last response as it arrives; the connection is closed after it.

        ``idle_timeout`` seconds without a byte end it (timed by :mod:`wirewise.clients.idle`: a
        socket timeout would arm a timer at every read of a long stream).
        """
        sock, conn = self._current()
        self._h11 = None  # the body is read here, not by h11: no reuse
        sock.settimeout(None)
        self._stream_recv = reading.reader(sock, READ_SIZE)
        self._idle = idle.watch(idle_timeout, self._expire)
        try:
            if self._chunked_body:
                yield from self._chunked(sock)
            else:  # a length or read-to-close body: rare for a stream, h11 frames it
                yield from self._h11_body(sock, conn)
        except (OSError, h11.ProtocolError) as exc:
            if self._expired:
                raise ClientError(f"no data for {idle_timeout:g} s") from exc
            raise ClientError(_describe(exc)) from exc
        finally:
            idle.unwatch(self._idle)
            self._idle = None
            self.close()

    def abort(self) -> None:
        """From any thread: end the connection and wake a read blocked on it."""
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _expire(self) -> None:
        """From the idle watch: the stream went silent; wake its reader with an error."""
        self._expired = True
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            sock, self._sock, self._h11 = self._sock, None, None
        self._rest = b""
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- inside --------------------------------------------------------------------------------

    def _ready(self) -> tuple[socket.socket, h11.Connection]:
        """The idle connection, or a new one when there is none or the server closed it."""
        if self._sock is not None and self._h11 is not None and not _closed_by_peer(self._sock):
            return self._sock, self._h11
        self.close()
        sock = connect(self._host, self._port, self._timeout, self._context)
        with self._lock:
            aborted = self._aborted
            self._sock, self._h11 = sock, h11.Connection(h11.CLIENT)
        if aborted:
            self.close()
            raise ClientError("the connection was aborted")
        return sock, self._h11

    def _current(self) -> tuple[socket.socket, h11.Connection]:
        if self._sock is None or self._h11 is None:
            raise ClientError("no response to read")
        return self._sock, self._h11

    def _head(self, sock: socket.socket, conn: h11.Connection) -> Head:
        """Read up to the end of the response head; what follows stays in ``_rest``."""
        buffer = b""
        while True:
            while (end := _HEAD_END.search(buffer)) is None:
                if len(buffer) > MAX_HEAD:
                    raise h11.RemoteProtocolError("response head too large")
                data = sock.recv(READ_SIZE)
                if not data:
                    raise h11.RemoteProtocolError("the server closed the connection early")
                buffer += data
            conn.receive_data(buffer[: end.end()])
            buffer = buffer[end.end() :]
            event = conn.next_event()
            if isinstance(event, h11.Response):
                break
            if not isinstance(event, h11.InformationalResponse):  # 1xx: the real one follows
                raise h11.RemoteProtocolError(f"expected a response head, got {event!r}")
        self._rest = buffer
        # h11 accepted the head, so a transfer-encoding can only be "chunked".
        self._chunked_body = any(name == b"transfer-encoding" for name, _ in event.headers)
        return Head(event.status_code, {name: value for name, value in event.headers})

    def _h11_body(self, sock: socket.socket, conn: h11.Connection) -> Iterator[bytes]:
        """The body as h11 frames it (length, chunked or read-to-close)."""
        if self._rest:
            conn.receive_data(self._rest)  # (an empty receive_data would mean EOF)
            self._rest = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self._read(sock))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("the connection closed before the body ended")

    def _read(self, sock: socket.socket) -> bytes:
        """A read of the body; a stream's idle entry learns that data came."""
        if self._idle is None or self._stream_recv is None:
            return sock.recv(READ_SIZE)
        data = self._stream_recv()
        self._idle.last = time.monotonic()  # idle.touch(), inlined: once per read
        return data

    def _more(self, sock: socket.socket) -> bytes:
        """More of a chunked body, which must not end here."""
        data = self._read(sock)
        if not data:
            raise h11.RemoteProtocolError("peer closed connection in the middle of a chunked body")
        return data

    def _chunked(self, sock: socket.socket) -> Iterator[bytes]:
        """Decode a chunked body as it arrives, yielding each chunk's data (or its parts)."""
        buffer, at = self._rest, 0
        self._rest = b""
        while True:
            while (eol := buffer.find(b"\r\n", at)) < 0:
                if len(buffer) - at > MAX_CHUNK_LINE:
                    raise h11.RemoteProtocolError("chunk header too long")
                buffer, at = buffer[at:] + self._more(sock), 0
            size = _CHUNK_SIZE.fullmatch(buffer, at, eol)
            if size is None:
                raise h11.RemoteProtocolError(f"illegal chunk header {buffer[at:eol][:40]!r}")
            left, at = int(size.group(1), 16), eol + 2
            if left == 0:
                return  # the last chunk; trailers are not read: the connection closes
            while left:
                if at == len(buffer):
                    buffer, at = self._more(sock), 0
                piece = buffer[at : at + left]
                at += len(piece)
                left -= len(piece)
                yield piece
            while len(buffer) - at < 2:
                buffer, at = buffer[at:] + self._more(sock), 0
            if buffer[at : at + 2] != b"\r\n":
                raise h11.RemoteProtocolError("malformed chunk footer")
            at += 2


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed (or broken) by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _client_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    from wirewise.clients.base import shared_ssl_context

    if verify is True:
        return shared_ssl_context()
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return verify


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
