"""Raw-TCP floor client: newline-delimited JSON over a plain socket (calibration only).

The first line of a connection is ``hello`` (token, room, cursor) or ``login``; see
:mod:`wirewise.servers.tcp`. Then the same messages as a WebSocket, one per line.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from wirewise import protocol
from wirewise.clients import reading
from wirewise.clients.base import (
    ClientError,
    ConnectError,
    SessionEnded,
    connect,
    refused_from_body,
)
from wirewise.clients.duplex import DuplexClient
from wirewise.protocol import Hello, LoginRequest

MAX_LINE = 1 << 20
READ_SIZE = 1 << 16


class _TcpLink:
    """One connection: lines out, lines in (split here: the reader reads whole chunks)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._recv = reading.reader(sock, READ_SIZE)
        self._lines: deque[bytes] = deque()
        self._partial = b""

    def send_text(self, text: str) -> None:
        try:
            self.sock.sendall(text.encode() + b"\n")
        except OSError as exc:
            raise ClientError(f"socket closed: {exc}") from exc

    def recv_text(self) -> str:
        while not self._lines:
            try:
                data = self._recv()
            except OSError as exc:
                raise SessionEnded(str(exc)) from exc
            if not data:
                raise SessionEnded("the server closed the connection")
            *lines, self._partial = (self._partial + data).split(b"\n")
            if len(self._partial) > MAX_LINE:
                raise SessionEnded(f"a line longer than {MAX_LINE} bytes")
            self._lines.extend(lines)
        try:
            return self._lines.popleft().decode()
        except UnicodeDecodeError as exc:
            raise ClientError(f"the server sent invalid UTF-8: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class TcpClient(DuplexClient):
    transport = "tcp"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        parts = urlsplit(self.base_url if "://" in self.base_url else f"tcp://{self.base_url}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{base_url!r} is not tcp://host:port")
        self.address = (parts.hostname, parts.port)

    def _connect(self) -> socket.socket:
        sock = connect(*self.address, self.timeout)
        sock.settimeout(None)
        return sock

    def _login(self, user: str) -> str:
        link = _TcpLink(self._connect())
        link.sock.settimeout(self.timeout)
        try:
            link.send_text(protocol.encode(LoginRequest(user)))
            answer = link.recv_text()
        except SessionEnded as exc:
            raise ConnectError(f"login failed: {exc}") from exc
        finally:
            link.close()
        try:
            return protocol.decode_token(answer)
        except protocol.ProtocolError:
            raise refused_from_body(answer, None) from None

    def open_link(self, room: str, after: int | None) -> _TcpLink:
        link = _TcpLink(self._connect())
        link.send_text(protocol.encode(Hello(token=self._require_token(), room=room, after=after)))
        return link
