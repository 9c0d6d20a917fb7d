"""What the HTTP/1.1 clients share: login (httpx) and the send POST.

Short polling, long polling and SSE all send with ``POST /rooms/{room}/messages`` and differ
only in how they read; each of their modules implements ``run_session``. Sends and reads go
through :class:`wirewise.clients.h1.H1Connection`: through httpx a request cost the load generator
~500 us of CPU, four times as much.
"""

from __future__ import annotations

import ssl
import threading

import httpx

from wirewise import protocol
from wirewise.clients.base import (
    DEFAULT_TIMEOUT,
    Backoff,
    Client,
    ConnectError,
    RequestEvent,
    refused_from_body,
    shared_ssl_context,
)
from wirewise.clients.h1 import H1Connection
from wirewise.protocol import LoginRequest, SendMessage

IDLE_SENDERS = 4
LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=IDLE_SENDERS)
"""Idle keep-alive connections a client keeps for its sends (as httpx's pool did)."""


def make_http(base_url: str, timeout: float, verify: bool | ssl.SSLContext = True) -> httpx.Client:
    """An httpx client sharing one SSL context (each new context costs ~50 ms of CPU)."""
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout),
        verify=shared_ssl_context() if verify is True else verify,
        limits=LIMITS,
        trust_env=False,
    )


class HttpClient(Client):
    """Login and sends over HTTP/1.1; subclasses read the room their own way."""

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
        self.verify = verify
        self.http = make_http(self.base_url, timeout, verify)
        self._senders: list[H1Connection] = []  # idle, kept alive
        self._senders_lock = threading.Lock()

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._require_token()}"}

    def _login(self, user: str) -> str:
        body = protocol.encode(LoginRequest(user))
        try:
            # Connection: close: a login is once per client; a kept-alive socket would sit idle
            # beside the stream until the server's keep-alive timeout (and count as a client).
            response = self.http.post(
                "/login",
                content=body,
                headers={"content-type": "application/json", "connection": "close"},
            )
        except httpx.HTTPError as exc:
            raise ConnectError(f"login failed: {exc}") from exc
        if response.status_code != 200:
            raise refused_from_body(response.content, response.status_code)
        return protocol.decode_token(response.content)

    def _send(self, room: str, message: SendMessage) -> int:
        body = protocol.encode(message).encode()
        headers = [
            (b"authorization", f"Bearer {self._require_token()}".encode()),
            (b"content-type", b"application/json"),
        ]
        path = f"/rooms/{room}/messages"

        def attempt() -> int:
            connection = self._sender()
            head = connection.request("POST", path, headers, self.timeout, body)
            answer = connection.read_body()
            self._release(connection)
            if head.status in (200, 201):
                return protocol.decode_id(answer)
            raise refused_from_body(answer, head.status)

        return self._retrying(attempt)

    def _sender(self) -> H1Connection:
        """An idle connection for a send, or a new one (sends may run in parallel)."""
        with self._senders_lock:
            if self._senders:
                return self._senders.pop()
        return H1Connection(self.base_url, self.timeout, self.verify)

    def _release(self, connection: H1Connection) -> None:
        with self._senders_lock:
            if len(self._senders) < IDLE_SENDERS:
                self._senders.append(connection)
                return
        connection.close()

    def close(self) -> None:
        super().close()
        self.http.close()
        with self._senders_lock:
            senders, self._senders = self._senders, []
        for connection in senders:
            connection.close()
