"""What the HTTP/1.1 clients share: an httpx client, login, and the send POST.

Short polling, long polling and SSE all send with ``POST /rooms/{room}/messages`` and differ
only in how they read; each of their modules implements ``run_session``.
"""

from __future__ import annotations

import ssl

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
            response = self.http.post(
                "/login", content=body, headers={"content-type": "application/json"}
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

    def session_http(self, read_timeout: float) -> httpx.Client:
        """A connection of the subscription's own, so that closing it aborts a blocking read."""
        client = make_http(self.base_url, self.timeout, self.verify)
        client.timeout = httpx.Timeout(self.timeout, read=read_timeout)
        return client
