"""Lean raw-TCP floor client: newline-delimited JSON read by the hub (calibration only).

The first line of a connection is ``hello`` (token, room, cursor), or ``login`` on a
connection of its own; see :mod:`wirewise.servers.tcp`. Then the same messages as a WebSocket, one
per line, sends answered in order.
"""

from __future__ import annotations

import time

from wirewise import protocol
from wirewise.clients.base import ClientError, ConnectError, connect, refused_from_body
from wirewise.clients.lean.base import DuplexConn, DuplexLeanClient, LeanSubscription
from wirewise.protocol import Hello, LoginRequest

__all__ = ["TcpConn", "TcpLeanClient"]

MAX_LINE = 1 << 20


class TcpConn(DuplexConn):
    __slots__ = ()

    def frame(self, text: str) -> bytes:
        return text.encode() + b"\n"

    def on_data(self, data: bytes, received: int) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while (end := buffer.find(b"\n", at)) >= 0:
            if end > at:
                self.message(buffer, at, end, received)
            at = end + 1
        if len(buffer) - at > MAX_LINE:
            raise ClientError(f"a line longer than {MAX_LINE} bytes")
        self._buffer = buffer[at:]


class TcpLeanClient(DuplexLeanClient):
    transport = "tcp"

    def _login(self, user: str) -> str:
        sock = connect(self.host, self.port, self.timeout)
        try:
            sock.sendall(protocol.encode(LoginRequest(user)).encode() + b"\n")
            answer = b""
            deadline = time.monotonic() + self.timeout
            while not answer.endswith(b"\n"):
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            raise ConnectError(f"login failed: {exc}") from exc
        finally:
            sock.close()
        try:
            return protocol.decode_token(answer.strip())
        except protocol.ProtocolError:
            raise refused_from_body(answer.strip(), None) from None

    def connect_room(self, room: str, after: int | None, sub: LeanSubscription | None) -> TcpConn:
        sock = connect(self.host, self.port, self.timeout)
        try:
            hello = Hello(token=self.bearer().decode(), room=room, after=after)
            sock.sendall(protocol.encode(hello).encode() + b"\n")
            conn = TcpConn(self, sock, sub)
        except BaseException:
            sock.close()
            raise
        self.hub.add(conn)
        return conn
