"""The shape every wirewise client shares, and the reconnect-with-resume loop they all use.

A client logs in, subscribes to rooms, sends messages and closes::

    with SseClient("http://127.0.0.1:8000") as client:
        client.login("ada")
        sub = client.subscribe("general", after=0)
        client.send("general", "hello")
        for message in sub:          # protocol messages: new_message, user_joined, gap, ...
            print(message)

Transport modules implement two things: :meth:`Client.send` and a *session* opener, a
function that opens one connection (or one series of polls) from a cursor and feeds the
messages it reads to a callback until the connection ends. Everything else is here: a
reader thread per subscription, the cursor (the last id seen), dropping duplicates at a
reconnect seam, resuming after a drop with jittered exponential backoff, and giving up
(:class:`SubscriptionFailed`) only after ``give_up_after`` seconds without a connection or
when the server refuses us (401, 403, 400).

Synchronous and thread-based on purpose: under Locust, gevent patches threads into greenlets,
so the same code serves a test, a script and a load generator.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import random
import socket
import ssl
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from wirewise import protocol
from wirewise.protocol import Error, Gap, SendMessage, ServerMessage

__all__ = [
    "Backoff",
    "BadAnswer",
    "Client",
    "ClientError",
    "ConnectError",
    "Refused",
    "RequestEvent",
    "Subscription",
    "SubscriptionFailed",
    "map_errors",
    "shared_ssl_context",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds for connecting, for a request, and for a send's answer."""

OnMessage = Callable[[ServerMessage], None]


class ClientError(Exception):
    """A request failed. The tree, raised by every client's public methods (mapped at the
    boundary by :func:`map_errors`, as httpx maps httpcore's exceptions)::

        ClientError
        ├── ConnectError        cannot connect, or the connection broke
        ├── Refused             the server answered with a protocol error (``code``)
        ├── BadAnswer           the server answered something that is not the protocol
        └── SubscriptionFailed  a subscription gave up (refused, or no connection for too long)

    A caller's own mistake (a bad room or user name, an empty text) is not a ClientError: it
    raises :class:`wirewise.protocol.ProtocolError` before anything goes on the wire.
    """


class ConnectError(ClientError):
    """Cannot connect, or the connection broke before an answer."""


class BadAnswer(ClientError):
    """The server's answer is not the protocol (the decoder's error is the cause)."""


class Refused(ClientError):
    """The server answered with a protocol error; ``code`` says which (docs/PROTOCOL.md)."""

    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {detail}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.detail = detail
        self.status = status


class SubscriptionFailed(ClientError):
    """A subscription gave up: refused by the server, or no connection for too long."""


class SessionEnded(Exception):
    """Raised inside a session when the server ended it; the loop resumes with backoff."""


FATAL_CODES = frozenset({"unauthorized", "forbidden_origin", "bad_room", "bad_cursor"})
"""Refusals that retrying cannot fix."""


class RequestEvent(Protocol):
    """Locust's ``environment.events.request`` (anything with that ``fire``): a client fires
    it once per send, as Locust's own ``HttpUser`` does for each request."""

    def fire(self, **kwargs: Any) -> Any: ...


@contextlib.contextmanager
def map_errors(action: str) -> Iterator[None]:
    """The one place lower-layer errors become :class:`ClientError` s (see its tree)."""
    try:
        yield
    except ClientError:
        raise
    except protocol.ProtocolError as exc:
        raise BadAnswer(f"{action}: the server's answer is not the protocol ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise ConnectError(f"{action}: {exc}") from exc


def refused_from_body(body: bytes | str, status: int | None) -> Refused:
    """The :class:`Refused` an HTTP error answer stands for (its ``error`` body when valid)."""
    try:
        message = protocol.decode_server(body)
    except protocol.ProtocolError:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return Refused("bad_message", f"unexpected answer {text[:80]!r}", status)
    if isinstance(message, Error):
        return Refused(message.code, message.detail, status)
    return Refused("bad_message", f"unexpected {message.type}", status)


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


SOURCES_ENV = "WIREWISE_SOURCES"
"""Comma-separated local addresses that connections take in turn (e.g. 127.0.0.2,127.0.0.3):
one source address has ~28,000 ephemeral ports towards one destination, so tens of thousands
of connections to one loopback port need several (all of 127.0.0.0/8 is local)."""
_sources = (
    itertools.cycle([(a.strip(), 0) for a in os.environ[SOURCES_ENV].split(",") if a.strip()])
    if os.environ.get(SOURCES_ENV)
    else None
)


def connect(
    host: str, port: int, timeout: float, context: ssl.SSLContext | None = None
) -> socket.socket:
    """A TCP connection with Nagle off (a chat message is one small write), in TLS when given
    a context; any failure is a :class:`ClientError` and leaves no socket open."""
    source = next(_sources) if _sources is not None else None
    try:
        sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
    except OSError as exc:
        raise ClientError(f"cannot connect to {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise ClientError(f"cannot connect to {host}:{port}: {exc}") from exc
    return sock


def shared_ssl_context() -> ssl.SSLContext:
    """One SSL context for every client: building one costs ~50 ms of CPU (even for http://)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        return _ssl_context


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: sleep uniform(0, min(cap, base * 2**attempt))."""

    base: float = 0.1
    cap: float = 5.0
    give_up_after: float = 30.0
    """Seconds of consecutive failure after which a subscription gives up."""

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


_CLOSED = object()


class Subscription:
    """A live view of one room: iterate it, or pass ``on_message`` to be called instead.

    The reader thread keeps the cursor (``last_id``), drops events it has already seen,
    treats ``gap`` as a new starting point, and reconnects after any drop with ``after`` =
    the cursor. Iteration ends when the subscription is closed or has failed (then
    :attr:`error` says why and iterating raises it).
    """

    def __init__(
        self,
        client: Client,
        room: str,
        after: int | None,
        on_message: OnMessage | None,
    ) -> None:
        self.client = client
        self.room = room
        self.last_id = after
        self.reconnects = 0
        self.duplicates = 0
        self.error: ClientError | None = None
        self.last_failure: str | None = None
        """Why the last session ended or failed to open (the loop retries; this says why)."""
        self.connected = threading.Event()
        self._on_message = on_message
        self._queue: queue.SimpleQueue[object] | None = None if on_message else queue.SimpleQueue()
        self._closed = threading.Event()
        self._closers: list[Callable[[], None]] = []
        self._thread = threading.Thread(
            target=self._run, name=f"wirewise-{client.transport}-{room}", daemon=True
        )
        self._thread.start()

    # -- the consumer side ---------------------------------------------------------------

    def __iter__(self) -> Iterator[ServerMessage]:
        return self

    def __next__(self) -> ServerMessage:
        message = self.get(None)
        if message is None:
            raise StopIteration
        return message

    def get(self, timeout: float | None) -> ServerMessage | None:
        """The next message, or None after ``timeout`` seconds or once closed."""
        if self._queue is None:
            raise TypeError("this subscription delivers to its on_message callback")
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # later calls end too
            if self.error is not None and not self._closed.is_set():
                raise self.error
            return None
        return item  # type: ignore[return-value]

    def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        return self.connected.wait(timeout)

    def close(self) -> None:
        """Stop reading and close the connection; safe to call twice and from any thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        for closer in list(self._closers):
            with contextlib.suppress(Exception):  # closing what is already gone
                closer()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=DEFAULT_TIMEOUT)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless closed first; True when closed."""
        return self._closed.wait(seconds)

    # -- the reader side -----------------------------------------------------------------

    def on_close(self, closer: Callable[[], None]) -> Callable[[], None]:
        """Sessions register how to abort their blocking read; returns the unregister."""
        self._closers.append(closer)
        if self._closed.is_set():
            closer()

        def forget() -> None:
            if closer in self._closers:
                self._closers.remove(closer)

        return forget

    def deliver(self, message: ServerMessage) -> None:
        """Called by sessions for every message read, in order."""
        if isinstance(message, Gap):
            # Events before oldest_available are gone; ids may restart (a server restart).
            self.last_id = message.oldest_available - 1
        elif isinstance(message, Error):
            pass
        else:
            msg_id = getattr(message, "id", None)
            if msg_id is not None:
                if self.last_id is not None and msg_id <= self.last_id:
                    self.duplicates += 1  # seen before a reconnect: dropped, but counted
                    return
                self.last_id = msg_id
        if self._on_message is not None:
            self._on_message(message)
        else:
            assert self._queue is not None
            self._queue.put(message)

    def set_cursor(self, last_id: int) -> None:
        """Sessions that learn the live position without an event (a first poll) set it."""
        if self.last_id is None:
            self.last_id = last_id

    def _run(self) -> None:
        backoff = self.client.backoff
        attempt = 0
        failing_since: float | None = None
        try:
            while not self._closed.is_set():
                opened = False

                def mark_open() -> None:
                    nonlocal opened, attempt, failing_since
                    opened = True
                    attempt = 0
                    failing_since = None
                    self.connected.set()

                try:
                    self.client.run_session(self, mark_open)
                except Refused as exc:
                    self.last_failure = str(exc)
                    if exc.code in FATAL_CODES or exc.status in (401, 403):
                        raise SubscriptionFailed(str(exc)) from exc
                except (ClientError, SessionEnded, OSError, protocol.ProtocolError) as exc:
                    # A malformed message too: drop the connection and resume.
                    self.last_failure = str(exc) or type(exc).__name__
                if self._closed.is_set():
                    break
                self.connected.clear()
                now = time.monotonic()
                if not opened:
                    failing_since = failing_since or now
                    if now - failing_since > backoff.give_up_after:
                        raise SubscriptionFailed(
                            f"no connection to {self.client.base_url} for {backoff.give_up_after:g} s"
                        )
                self.reconnects += 1
                self._closed.wait(backoff.delay(attempt))
                attempt += 1
        except SubscriptionFailed as exc:
            self.error = exc
            self.client.subscription_failed(self)
        finally:
            self.connected.clear()
            if self._queue is not None:
                self._queue.put(_CLOSED)


class Client(ABC):
    """One user's connection(s) to one server. Thread-safe; close it when done."""

    transport: ClassVar[str]

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff | None = None,
        token: str | None = None,
        request_event: RequestEvent | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.token = token
        self.user: str | None = None
        self.request_event = request_event
        self._subscriptions: list[Subscription] = []

    # -- the shared shape ----------------------------------------------------------------

    def login(self, user: str) -> str:
        """Get a token for ``user`` (kept for every later call) and return it."""
        protocol.LoginRequest(user)  # a bad name is the caller's mistake: raised before the wire
        with map_errors("login"):
            token = self._login(user)
        self.token, self.user = token, user
        return token

    def subscribe(
        self, room: str, after: int | None = None, on_message: OnMessage | None = None
    ) -> Subscription:
        """Follow ``room`` from event ``after`` (None: from now on)."""
        if not protocol.valid_room(room):
            raise Refused("bad_room", "room names match [A-Za-z0-9_-]{1,64}")
        sub = Subscription(self, room, after, on_message)
        self._subscriptions.append(sub)
        return sub

    def send(
        self, room: str, text: str, *, client_msg_id: str | None = None, sent_at: int | None = None
    ) -> int:
        """Send a message and return its id (retries are safe: sends are idempotent)."""
        message = SendMessage(
            room=None, text=text, client_msg_id=client_msg_id or self.message_id(), sent_at=sent_at
        )
        began = time.perf_counter()
        error: ClientError | None = None
        try:
            with map_errors("send"):
                return self._send(room, message)
        except ClientError as exc:
            error = exc
            raise
        finally:
            self.fire_request("send", began, len(message.text), error)

    def fire_request(
        self, name: str, began: float, length: int, error: BaseException | None
    ) -> None:
        """Tell Locust (when it is listening) what one request cost."""
        if self.request_event is not None:
            self.request_event.fire(
                request_type=self.transport,
                name=name,
                response_time=(time.perf_counter() - began) * 1000,
                response_length=length,
                exception=error,
                context={},
            )

    def close(self) -> None:
        for sub in self._subscriptions:
            sub.close()
        self._subscriptions.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for transport modules -----------------------------------------------------------

    @abstractmethod
    def _login(self, user: str) -> str:
        """Log ``user`` in and return the token (errors are mapped by :meth:`login`)."""

    @abstractmethod
    def _send(self, room: str, message: SendMessage) -> int:
        """Send ``message`` (its ``room`` unset) to ``room``; its id (mapped by :meth:`send`)."""

    @abstractmethod
    def run_session(self, sub: Subscription, opened: Callable[[], None]) -> None:
        """Open one connection from ``sub.last_id``, call ``opened()`` once it is up, feed
        every message read to ``sub.deliver`` and return (or raise) when it ends."""

    def subscription_failed(self, sub: Subscription) -> None:  # noqa: B027 - a hook
        """Called from a subscription's thread when it gives up (``sub.error`` says why)."""

    def _require_token(self) -> str:
        if self.token is None:
            raise Refused("unauthorized", "log in first")
        return self.token

    @staticmethod
    def message_id() -> str:
        return uuid.uuid4().hex[:16]

    def _retrying(self, attempt_send: Callable[[], int]) -> int:
        """Retry a send on network errors until ``timeout``; protocol refusals are final."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                return attempt_send()
            except Refused:
                raise
            except (ClientError, OSError) as exc:
                pause = self.backoff.delay(attempt)
                if time.monotonic() + pause >= deadline:
                    raise ClientError(f"send failed: {exc}") from exc
            time.sleep(pause)
            attempt += 1


def now_us() -> int:
    """Microseconds since the epoch (what ``sent_at`` carries)."""
    return time.time_ns() // 1000
