"""WebSocket client: websockets' sans-I/O ``ClientProtocol``, driven by the subscription's reader.

The token goes in the upgrade request's ``Authorization`` header: the handshake is plain
HTTP, so HTTP authentication carries over. A refused upgrade (401, 403, 400) is a
:class:`wirewise.clients.base.Refused` with the status and the code of the ``error`` body; a close
with 1008 and a protocol error code as its reason (``slow_consumer``) reaches the
subscription as an ``error`` message once, then the session ends and resumes.

Why not ``websockets.sync``: it reads each socket in a thread of its own and hands messages
over through an assembler queue, and our :class:`wirewise.clients.duplex.DuplexClient` reads them in
another thread; under Locust every message cost two greenlet switches and a handful of locks
before it was recorded. Here the subscription's one reader thread reads the socket and feeds
``ClientProtocol`` itself; sends write through the same protocol object under a lock. What
``websockets.sync`` did for us is kept:

- no compression offered; frames and messages up to :data:`MAX_FRAME` (larger: close 1009);
- pings from the server are answered (``ClientProtocol`` queues the pong);
- keepalive: after :data:`KEEPALIVE` seconds without a byte from the server we ping, and after
  as long again the session ends (close 1011). ``websockets.sync`` pinged every 20 s whatever
  the traffic; a busy link proves itself alive, so we ping only an idle one. The silence is
  timed by :mod:`wirewise.clients.idle`, not by a socket timeout (a timer per read costs CPU);
- closing sends a close frame (1000) and waits up to ``timeout`` for the server to answer and
  end the TCP connection, as ``close_timeout`` did; a server that does not is cut off;
- proxies from the environment are not used (like the HTTP clients' ``trust_env=False``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import USER_AGENT
from websockets.protocol import CLOSED, OPEN
from websockets.uri import parse_uri

from wirewise import protocol
from wirewise.clients import idle, reading
from wirewise.clients.base import (
    ClientError,
    ConnectError,
    SessionEnded,
    connect,
    refused_from_body,
    shared_ssl_context,
)
from wirewise.clients.duplex import DuplexClient
from wirewise.clients.http import make_http
from wirewise.protocol import ERROR_CODES

MAX_FRAME = 1 << 20
READ_SIZE = 1 << 16
KEEPALIVE = 20.0
"""Seconds of silence before a ping, and again before an unanswered link is dropped."""


class _WsLink:
    """One open WebSocket: text messages both ways over a ``ClientProtocol``.

    Only the reader thread (the subscription's) reads the socket; ``_lock`` guards the
    protocol object and socket writes, which both the reader (pongs, close replies) and
    senders use. ``_reading`` is held while a thread reads, so that :meth:`close` knows
    whether to wait for that thread or to read the server's close answer itself.
    """

    def __init__(
        self, sock: socket.socket, ws: ClientProtocol, early: list[Frame], timeout: float
    ) -> None:
        self._sock = sock
        self._ws = ws
        self._timeout = timeout
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        self._ended = threading.Event()
        self._texts: deque[str] = deque()
        self._fragments: list[bytes] = []
        self._pinged = False
        self._surfaced = False
        sock.settimeout(None)  # silence is timed by the idle watch, not per read
        self._recv = reading.reader(sock, READ_SIZE)
        self._idle = idle.watch(KEEPALIVE, self._keepalive)
        self._frames(early)

    # -- the Link interface ----------------------------------------------------------------

    def send_text(self, text: str) -> None:
        with self._lock:
            if self._ws.state is not OPEN:
                raise ClientError("socket closed")
            self._ws.send_text(text.encode())
            self._flush()

    def recv_text(self) -> str:
        """The next text message; the session's end raises SessionEnded (see the module doc)."""
        if self._texts:  # from the last read: no lock needed to hand it over
            return self._texts.popleft()
        with self._reading:
            while not self._texts:
                if self._ws.state is not OPEN:
                    return self._end()
                self._feed(self._read())
            return self._texts.popleft()

    def close(self) -> None:
        """Close frame (1000), wait for the server's answer and EOF, then drop the socket."""
        with self._lock:
            if self._ws.state is OPEN:
                self._ws.send_close(CloseCode.NORMAL_CLOSURE)
                with contextlib.suppress(OSError):
                    self._flush()
        if self._reading.acquire(blocking=False):
            try:
                self._finish()  # nobody is reading: read the close handshake here
            finally:
                self._reading.release()
        else:
            self._ended.wait(self._timeout)  # the reader sees the answer and finishes
        self._drop()

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> bytes | None:
        """Bytes from the socket, b"" at its end, None when a closing read timed out."""
        try:
            return self._recv()
        except TimeoutError:
            return None
        except OSError:
            return b""

    def _keepalive(self) -> None:
        """From the idle watch: ping a silent link, or drop one that stayed silent after it."""
        with self._lock:
            if self._ws.state is not OPEN:
                return
            if not self._pinged:
                self._pinged = True
                self._ws.send_ping(b"")
                with contextlib.suppress(OSError):
                    self._flush()
                return
            self._ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            with contextlib.suppress(OSError):
                self._flush()
        self._drop()  # wakes the reader, which ends the session

    def _feed(self, data: bytes | None) -> None:
        if data is None:
            return
        self._idle.last = time.monotonic()  # idle.touch(), inlined: once per read
        self._pinged = False
        with self._lock:
            if data:
                self._ws.receive_data(data)
            else:
                self._ws.receive_eof()
            events = self._ws.events_received()
            try:  # noqa: SIM105 - not contextlib.suppress: this runs at every read
                self._flush()
            except OSError:
                pass  # the read side will see the end
        self._frames(events)  # type: ignore[arg-type]

    def _frames(self, frames: list[Frame]) -> None:
        """Text messages to the queue, reassembling fragments; control frames need nothing.

        After a failure (binary data, invalid UTF-8) the rest is dropped: the protocol
        discards what follows, and so do we for what came in the same read.
        """
        for frame in frames:
            opcode = frame.opcode
            if opcode is Opcode.BINARY:
                self._fail(CloseCode.UNSUPPORTED_DATA, "the server sent a binary frame")
                return
            if opcode is not Opcode.TEXT and not (opcode is Opcode.CONT and self._fragments):
                continue  # PING (answered by the protocol), PONG, CLOSE
            if not frame.fin:
                self._fragments.append(bytes(frame.data))
                continue
            data = b"".join([*self._fragments, frame.data]) if self._fragments else frame.data
            self._fragments = []
            try:
                self._texts.append(str(data, "utf-8"))
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                return

    def _fail(self, code: CloseCode, reason: str) -> None:
        with self._lock:
            self._ws.fail(code, reason)
            with contextlib.suppress(OSError):
                self._flush()

    # -- ending ----------------------------------------------------------------------------

    def _end(self) -> str:
        """The connection left OPEN: finish it, surface a 1008 error code once, then end."""
        self._finish()
        received = self._ws.close_rcvd
        if (
            not self._surfaced
            and received is not None
            and received.code == CloseCode.POLICY_VIOLATION
            and received.reason in ERROR_CODES
        ):
            self._surfaced = True  # the next read ends the session
            return protocol.encode(protocol.Error(received.reason, "the server closed the socket"))
        raise SessionEnded(str(self._ws.close_exc))

    def _finish(self) -> None:
        """Read (and drop) until the server ends the TCP connection, within the timeout."""
        deadline = time.monotonic() + self._timeout
        while self._ws.state is not CLOSED:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(OSError):
                self._sock.settimeout(left)
            self._feed(self._read())
        with self._lock:
            self._ws.receive_eof()  # idempotent; the state is CLOSED from here on
        self._ended.set()
        self._drop()

    def _flush(self) -> None:
        """Write what the protocol queued (under ``_lock``); an empty write means half-close."""
        for data in self._ws.data_to_send():
            if data:
                self._sock.sendall(data)
            else:
                self._sock.shutdown(socket.SHUT_WR)

    def _drop(self) -> None:
        idle.unwatch(self._idle)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class WsClient(DuplexClient):
    transport = "ws"

    def __init__(
        self, base_url: str, *, verify: bool | ssl.SSLContext = True, **kwargs: Any
    ) -> None:
        super().__init__(base_url, **kwargs)
        self.verify = verify
        self.ws_base = (
            "ws" + self.base_url.removeprefix("http")
            if self.base_url.startswith("http")
            else self.base_url
        )
        self.http_base = "http" + self.ws_base.removeprefix("ws")

    def _login(self, user: str) -> str:
        """``GET /login?user=``: the bare websockets server reads only GET requests."""
        try:
            with make_http(self.http_base, self.timeout, self.verify) as http:
                response = http.get("/login", params={"user": user})
        except httpx.HTTPError as exc:
            raise ConnectError(f"login failed: {exc}") from exc
        if response.status_code != 200:
            raise refused_from_body(response.content, response.status_code)
        return protocol.decode_token(response.content)

    def _ssl_context(self) -> ssl.SSLContext:
        if self.verify is True:
            return shared_ssl_context()
        if self.verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return self.verify

    def open_link(self, room: str, after: int | None) -> _WsLink:
        query = f"?{urlencode({'after': after})}" if after is not None else ""
        uri = parse_uri(f"{self.ws_base}/rooms/{room}/ws{query}")
        deadline = time.monotonic() + self.timeout
        context = self._ssl_context() if uri.secure else None
        sock = connect(uri.host, uri.port, self.timeout, context)
        try:
            ws = ClientProtocol(uri, max_size=MAX_FRAME)
            early = self._handshake(sock, ws, deadline)
        except BaseException:
            sock.close()
            raise
        return _WsLink(sock, ws, early, self.timeout)

    def _handshake(self, sock: socket.socket, ws: ClientProtocol, deadline: float) -> list[Frame]:
        """Send the upgrade and read its answer; returns frames that came along with it."""
        request = ws.connect()
        request.headers["Authorization"] = f"Bearer {self._require_token()}"
        request.headers["User-Agent"] = USER_AGENT
        ws.send_request(request)
        try:
            sock.sendall(b"".join(ws.data_to_send()))
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data = sock.recv(READ_SIZE)
                if data:
                    ws.receive_data(data)
                else:
                    ws.receive_eof()
                events = ws.events_received()
                if ws.handshake_exc is not None:
                    break
                if events:  # the response first, then any frames sent right after it
                    return events[1:]  # type: ignore[return-value]
        except TimeoutError:
            raise ConnectError(f"no upgrade answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect: {exc}") from exc
        failure = ws.handshake_exc
        if isinstance(failure, InvalidStatus):
            answer = failure.response
            raise refused_from_body(bytes(answer.body or b""), answer.status_code) from failure
        raise ConnectError(f"cannot connect: {failure}") from failure
