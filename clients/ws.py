"""WebSocket client (``websockets.sync``): one socket per subscription, sends on it too.

The token goes in the upgrade request's ``Authorization`` header: the handshake is plain
HTTP, so HTTP authentication carries over. A refused upgrade (401, 403, 400) is a
:class:`~clients.base.Refused`; a close with 1008 and a protocol error code as its reason
(``slow_consumer``) reaches the subscription as an ``error`` message before it resumes.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from clients.base import ClientError, SessionEnded, refused_from_body, shared_ssl_context
from clients.duplex import DuplexClient
from clients.http import make_http
from wirewise import protocol
from wirewise.protocol import ERROR_CODES

MAX_FRAME = 1 << 20


class _WsLink:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    def send_text(self, text: str) -> None:
        try:
            self.connection.send(text)
        except ConnectionClosed as exc:
            raise ClientError(f"socket closed: {exc}") from exc

    def recv_text(self) -> str:
        try:
            data = self.connection.recv()
        except ConnectionClosed as exc:
            frame = exc.rcvd
            if frame is not None and frame.code == 1008 and frame.reason in ERROR_CODES:
                # The server's reason is a protocol error code: surface it as a message.
                return protocol.encode(protocol.Error(frame.reason, "the server closed the socket"))
            raise SessionEnded(str(exc)) from exc
        if not isinstance(data, str):
            raise ClientError("the server sent a binary frame")
        return data

    def close(self) -> None:
        self.connection.close()


class _ClosingLink(_WsLink):
    """After surfacing a close reason as an error, the next read ends the session."""


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

    def login(self, user: str) -> str:
        """``GET /login?user=``: the bare websockets server reads only GET requests."""
        protocol.LoginRequest(user)  # validates the name before it goes on the wire
        try:
            with make_http(self.http_base, self.timeout, self.verify) as http:
                response = http.get("/login", params={"user": user})
        except httpx.HTTPError as exc:
            raise ClientError(f"login failed: {exc}") from exc
        if response.status_code != 200:
            raise refused_from_body(response.content, response.status_code)
        self.token = protocol.decode_token(response.content)
        self.user = user
        return self.token

    def open_link(self, room: str, after: int | None) -> _WsLink:
        query = f"?{urlencode({'after': after})}" if after is not None else ""
        ssl_context = None
        if self.ws_base.startswith("wss"):
            ssl_context = shared_ssl_context() if self.verify is True else self.verify
            if ssl_context is False:
                ssl_context = ssl.create_default_context()
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        try:
            connection = connect(
                f"{self.ws_base}/rooms/{room}/ws{query}",
                additional_headers={"Authorization": f"Bearer {self._require_token()}"},
                open_timeout=self.timeout,
                close_timeout=self.timeout,
                max_size=MAX_FRAME,
                compression=None,
                ssl=ssl_context,
                legacy=True,  # a connection object we own, not a context manager
            )
        except InvalidStatus as exc:
            raise refused_from_body(exc.response.body or b"", exc.response.status_code) from exc
        except (WebSocketException, OSError, TimeoutError) as exc:
            raise ClientError(f"cannot connect: {exc}") from exc
        return _WsLink(connection)
