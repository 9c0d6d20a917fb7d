"""What the two socket clients share (WebSocket and the TCP floor): one full-duplex link per
subscription, sends answered in order by ``ack`` or ``error`` on the same link.

The reader thread of a subscription reads every message of its link: room events go to the
subscription; answers go to the oldest waiting send (the server answers each message in
order). A send to a room with no open link opens one (a subscription that discards events:
on a socket transport, being connected *is* being in the room).
"""

from __future__ import annotations

import dataclasses
import threading
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

from wirewise import protocol
from wirewise.clients.base import FATAL_CODES, Client, ClientError, Refused, Subscription
from wirewise.protocol import Ack, Error, NewMessage, SendMessage, ServerMessage


class Link(Protocol):
    """One open connection: text messages both ways."""

    def send_text(self, text: str) -> None: ...

    def recv_text(self) -> str:
        """The next message; raises SessionEnded (or ClientError) when the link ends."""
        ...

    def close(self) -> None: ...


class _Live:
    """A link in use by a subscription, with the sends waiting for their answers."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.lock = threading.Lock()
        self.pending: deque[Future[Ack | Error]] = deque()
        self.alive = True

    def request(self, text: str) -> Future[Ack | Error]:
        future: Future[Ack | Error] = Future()
        with self.lock:
            if not self.alive:
                raise ClientError("the connection closed")
            self.pending.append(future)
            self.link.send_text(text)
        return future

    def answer(self, reply: Ack | Error) -> bool:
        with self.lock:
            if not self.pending:
                return False
            future = self.pending.popleft()
        future.set_result(reply)
        return True

    def fail(self) -> None:
        with self.lock:
            self.alive = False
            pending, self.pending = self.pending, deque()
        for future in pending:
            future.set_exception(ClientError("the connection closed before the answer"))


class DuplexClient(Client):
    """A client whose subscriptions are sockets that carry the sends too."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._live: dict[str, list[_Live]] = {}
        self._live_lock = threading.Lock()
        self._live_changed = threading.Condition(self._live_lock)
        self._senders: dict[str, Subscription] = {}

    @abstractmethod
    def open_link(self, room: str, after: int | None) -> Link:
        """Connect to ``room`` from ``after``; raise Refused when the server says no."""

    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        link = self.open_link(sub.room, sub.last_id)
        live = _Live(link)
        forget = sub.on_close(link.close)
        with self._live_changed:
            self._live.setdefault(sub.room, []).append(live)
            self._live_changed.notify_all()
        opened()
        try:
            while True:
                message = protocol.decode_server(link.recv_text())
                if type(message) is NewMessage:  # most of the traffic: straight to the room
                    sub.deliver(message)
                else:
                    self._route(sub, live, message)
        finally:
            with self._live_lock:
                self._live[sub.room].remove(live)
            live.fail()
            forget()
            link.close()

    @staticmethod
    def _route(sub: Subscription, live: _Live, message: ServerMessage) -> None:
        """Answers to the oldest waiting send; everything else (and stray errors) to the room."""
        is_answer = isinstance(message, Ack) or (
            isinstance(message, Error) and message.code != "slow_consumer"
        )
        if is_answer and live.answer(message):  # type: ignore[arg-type]
            return
        if isinstance(message, Error) and message.code in FATAL_CODES:
            raise Refused(message.code, message.detail)  # the floor refuses with a line
        sub.deliver(message)

    def _send(self, room: str, message: SendMessage) -> int:
        body = protocol.encode(dataclasses.replace(message, room=room))

        def attempt() -> int:
            future = self._link_for(room).request(body)
            try:
                reply = future.result(self.timeout)
            except FutureTimeout:
                raise ClientError(f"no answer to a send within {self.timeout:g} s") from None
            if isinstance(reply, Ack):
                return reply.id
            raise Refused(reply.code, reply.detail)

        return self._retrying(attempt)

    def _link_for(self, room: str) -> _Live:
        with self._live_changed:
            sender = self._senders.get(room)
            if not self._live.get(room) and sender is None:
                sender = self._senders[room] = self.subscribe(room, on_message=lambda message: None)

            def ready() -> bool:
                return bool(self._live.get(room)) or (
                    sender is not None and sender.error is not None
                )

            if not self._live_changed.wait_for(ready, self.timeout):
                raise ClientError(f"no connection to room {room!r} within {self.timeout:g} s")
            if self._live.get(room):
                return self._live[room][-1]
        assert sender is not None and sender.error is not None
        self._senders.pop(room, None)
        cause = sender.error.__cause__
        raise cause if isinstance(cause, Refused) else sender.error

    def subscription_failed(self, sub: Subscription) -> None:
        with self._live_changed:
            self._live_changed.notify_all()

    def close(self) -> None:
        self._senders.clear()
        super().close()
