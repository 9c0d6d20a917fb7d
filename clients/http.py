"""What the HTTP/1.1 clients share: an httpx client, login, and the send POST.

Short polling, long polling and SSE all send with ``POST /rooms/{room}/messages`` and differ
only in how they read; each of their modules implements ``run_session``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from typing import Any

import httpcore
import httpx

from clients.base import (
    DEFAULT_TIMEOUT,
    Backoff,
    Client,
    ClientError,
    refused_from_body,
    shared_ssl_context,
)
from wirewise import protocol
from wirewise.protocol import LoginRequest, SendMessage

LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=4)


def make_http(base_url: str, timeout: float, verify: bool | ssl.SSLContext = True) -> httpx.Client:
    """An httpx client sharing one SSL context (each new context costs ~50 ms of CPU)."""
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout),
        verify=shared_ssl_context() if verify is True else verify,
        limits=LIMITS,
        trust_env=False,
    )


class AbortableBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, remembering its sockets so another thread can abort a read.

    A subscription blocks in a read (an SSE stream, a held long poll) while ``close()`` runs
    in another thread. httpx's ``Client.close()`` closes the socket, but closing a file
    descriptor does not wake a thread blocked in ``recv()`` on Linux, and the server never
    sees the client go; ``shutdown()`` does both. httpx has no hook for this, so the backend
    is set on its connection pool.
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._streams: list[httpcore.NetworkStream] = []
        self._lock = threading.Lock()
        self.aborted = False

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(*args, **kwargs)
        with self._lock:
            self._streams = [s for s in self._streams if s.get_extra_info("socket") is not None]
            self._streams.append(stream)
            aborted = self.aborted
        if aborted:
            self._shutdown(stream)
        return stream

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return self._inner.connect_unix_socket(*args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            streams = list(self._streams)
        for stream in streams:
            self._shutdown(stream)

    @staticmethod
    def _shutdown(stream: httpcore.NetworkStream) -> None:
        sock = stream.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


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
    ) -> None:
        super().__init__(base_url, timeout=timeout, backoff=backoff, token=token)
        self.verify = verify
        self.http = make_http(self.base_url, timeout, verify)

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._require_token()}"}

    def login(self, user: str) -> str:
        body = protocol.encode(LoginRequest(user))
        try:
            # Connection: close: a login is once per client; a kept-alive socket would sit idle
            # beside the stream until the server's keep-alive timeout (and count as a client).
            response = self.http.post(
                "/login", content=body, headers={"content-type": "application/json", "connection": "close"}
            )
        except httpx.HTTPError as exc:
            raise ClientError(f"login failed: {exc}") from exc
        if response.status_code != 200:
            raise refused_from_body(response.content, response.status_code)
        self.token = protocol.decode_token(response.content)
        self.user = user
        return self.token

    def send(
        self, room: str, text: str, *, client_msg_id: str | None = None, sent_at: int | None = None
    ) -> int:
        message = SendMessage(
            room=None, text=text, client_msg_id=client_msg_id or self.message_id(), sent_at=sent_at
        )
        body = protocol.encode(message)
        headers = {**self.auth(), "content-type": "application/json"}
        url = f"/rooms/{room}/messages"

        def attempt() -> int:
            try:
                response = self.http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise ClientError(str(exc) or type(exc).__name__) from exc
            if response.status_code in (200, 201):
                return protocol.decode_id(response.content)
            raise refused_from_body(response.content, response.status_code)

        return self._retrying(attempt)

    def close(self) -> None:
        super().close()
        self.http.close()

    def session_http(self, read_timeout: float) -> tuple[httpx.Client, AbortableBackend]:
        """A connection of the subscription's own, and the way to abort its blocking read."""
        client = make_http(self.base_url, self.timeout, self.verify)
        client.timeout = httpx.Timeout(self.timeout, read=read_timeout)
        backend = AbortableBackend()
        client._transport._pool._network_backend = backend  # type: ignore[attr-defined]
        return client, backend
