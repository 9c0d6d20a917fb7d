"""The chat core: rooms, ids, history, membership, fan-out and idempotent sends. No I/O.

Theory of operation
-------------------
A room is an append-only log of events with strictly increasing ids (base + 1, base + 2, ...),
of which the last ``history`` are kept. The base is the broker's start time in microseconds, so
ids never repeat across restarts: a cursor from an earlier process is always below this one's
ids and gets an explicit ``gap``, never a silent skip (with ids from 1 after every restart, an
old cursor that the new ids had caught up with looked current). Storing and fanning out go through a :class:`Broker`; the only
implementation here keeps everything in this process (:class:`MemoryBroker`);
:mod:`wirewise.servers.redis_broker` shares rooms between processes through Redis. A send is
the one call that may wait for the broker (``await ChatCore.send``): it needs the event's id for
its acknowledgement, and a shared broker numbers events elsewhere.

A :class:`Subscriber` is one live reader of a room: an SSE stream, a WebSocket, a TCP
connection, or a held long poll. When it opens, the core attaches it to the room and takes
the history after the client's cursor *in the same synchronous step*, so there is no await
between "replay" and "live" and hence no gap and no duplicate at the seam. Events then land in
its bounded queue; a subscriber whose queue is full when an event arrives is dropped as a
``slow_consumer`` (it can resume with ``after=``), which keeps the server's memory bounded.

Membership: a user is in a room while it holds at least one member subscription there
(push transports), or while it has polled within ``presence_timeout`` (polling transports,
expired by :meth:`ChatCore.sweep`). Joining and leaving are room events like messages.

Everything else is synchronous and single-threaded; transports call in from one event loop and
learn about new events through :attr:`Subscriber.notify`. The clock is injected, so tests
drive time by hand.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar, cast

from wirewise import protocol
from wirewise.protocol import Gap, NewMessage, ProtocolError, SendMessage, UserJoined, UserLeft
from wirewise.servers.config import Settings

__all__ = ["Broker", "ChatCore", "MemoryBroker", "RoomLogs", "Sent", "Stored", "Subscriber"]

K = TypeVar("K")

Sent = tuple[int, bool]
"""A send's outcome: the event's id, and whether it is new (False: a retry of a stored one)."""

SHUTDOWN = "shutdown"
"""Close reason when the server stops (not an error: clients reconnect and resume)."""


class Stored:
    """One event of a room's log, encoded to JSON once and shared by every subscriber."""

    __slots__ = ("_frames", "id", "json", "message")

    def __init__(self, message: protocol.RoomEvent, json: str | None = None) -> None:
        self.message = message
        self.id = message.id
        self.json = protocol.encode(message) if json is None else json
        self._frames: dict[str, bytes] | None = None

    def frame(self, kind: str, build: Callable[[Stored], bytes]) -> bytes:
        """The event in a transport's framing, built once per event, not per subscriber."""
        if self._frames is None:
            self._frames = {}
        data = self._frames.get(kind)
        if data is None:
            data = self._frames[kind] = build(self)
        return data


class Subscriber:
    """A live reader of one room with a bounded queue; see the module docstring."""

    __slots__ = (
        "backlog",
        "closed",
        "kind",
        "limit",
        "member",
        "notify",
        "queue",
        "reason",
        "room",
        "seen",
        "user",
    )

    def __init__(self, room: str, user: str, kind: str, *, member: bool, limit: int) -> None:
        self.room = room
        self.user = user
        self.kind = kind
        self.member = member
        self.limit = limit
        self.backlog: list[Stored | Gap] = []
        # A list, not a deque: it is only appended to and taken whole, and an empty deque
        # holds a 64-slot block (~760 bytes with the object) where an empty list holds 56.
        self.queue: list[Stored] = []
        self.closed = False
        self.reason: str | None = None
        self.notify: Callable[[], None] | None = None
        self.seen = 0
        """The client's cursor when no replay covered it: a shared broker's process may attach
        us before its mirror reaches that id, and what arrives up to it is not news."""

    def push(self, event: Stored) -> bool:
        """Queue a live event; False when the queue is full (the caller drops us)."""
        if self.closed or event.id <= self.seen:
            return True
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(event)
        if self.notify is not None:
            self.notify()
        return True

    def take(self) -> list[Stored | Gap]:
        """Everything waiting, backlog (replay) first, then live events, in id order."""
        items: list[Stored | Gap] = self.backlog
        if items:
            self.backlog = []
        queue = cast("list[Stored | Gap]", self.queue)  # taken whole, so no copy
        if queue:
            self.queue = []
            items = items + queue if items else queue
        return items

    @property
    def pending(self) -> bool:
        return bool(self.backlog or self.queue)

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
            if self.notify is not None:
                self.notify()


class Broker(Protocol):
    """Where events are stored and fanned out; the seam for a networked broker."""

    drop: Callable[[list[Subscriber], str], None]
    """Ends subscriptions with a reason (set by the core): ``slow_consumer`` for a queue that
    was full when an event came; ``shutdown`` for a shared broker's mirror that lost its
    place (the clients resume and learn what is gone)."""

    def publish(
        self,
        room: str,
        build: Callable[[int], protocol.RoomEvent],
        dedupe: tuple[str, str] | None = None,
        presence: tuple[str, int] | None = None,
    ) -> Sent | Awaitable[Sent]:
        """Store the event ``build(next_id)`` and queue it to the room's subscribers.

        For a broker shared by several processes: ``dedupe`` is (user, client_msg_id), as a
        retry may land on another process; ``presence`` is (user, +1 or -1) on a join or leave
        seen by this process, and the event is stored only when the user's count over every
        process goes 0 -> 1 or 1 -> 0 (id 0 otherwise). A broker in one process leaves both to
        the core. The outcome is at hand (in-process) or awaited (numbered elsewhere).
        """
        ...

    def replay(self, room: str, after: int) -> tuple[list[Stored], Gap | None]:
        """Stored events with id > ``after``, and a gap when some are gone."""
        ...

    def last_id(self, room: str) -> int: ...

    def attach(self, room: str, sub: Subscriber) -> None: ...

    def detach(self, room: str, sub: Subscriber) -> None: ...

    def stats(self) -> dict[str, int]: ...


class _Log:
    __slots__ = ("history", "last_id", "subscribers")

    def __init__(self, size: int, base: int) -> None:
        self.last_id = base
        self.history: deque[Stored] = deque(maxlen=size)
        self.subscribers: dict[Subscriber, None] = {}


class RoomLogs:
    """Rooms as this process holds them: a bounded log and the local subscribers of each.

    The in-process broker is this plus numbering; a shared broker keeps the same logs as a
    mirror of what it is told, so replay and attach stay local and synchronous.
    """

    def __init__(self, history: int, base: int | None = None) -> None:
        self._history = history
        self.base = time.time_ns() // 1000 if base is None else base
        """Every room's ids start above it: this broker's start in microseconds (below 2**53,
        exact in JavaScript, until the year 2255). Tests pass 0 for ids 1, 2, 3, ..."""
        self._logs: dict[str, _Log] = {}
        self.events_stored = 0
        self.deliveries = 0
        self.drop: Callable[[list[Subscriber], str], None] = _ignore

    def _log(self, room: str) -> _Log:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = _Log(self._history, self.base)
        return log

    def _append(self, log: _Log, event: Stored) -> None:
        """The next event of ``log``: kept, and queued to the room's subscribers."""
        log.last_id = event.id
        log.history.append(event)
        self.events_stored += 1
        full = [sub for sub in log.subscribers if not sub.push(event)]
        self.deliveries += len(log.subscribers) - len(full)
        if full:
            self.drop(full, "slow_consumer")

    def replay(self, room: str, after: int) -> tuple[list[Stored], Gap | None]:
        log = self._log(room)
        history = log.history
        oldest = history[0].id if history else log.last_id + 1
        if after > log.last_id or 0 < after < self.base:
            # A cursor from before a restart (or invented): what it points at is gone, and
            # everything we hold is news to this client. ``after=0`` means "from the start":
            # everything held, with a gap only if this process's history overflowed.
            return list(history), Gap(requested_after=after, oldest_available=oldest)
        seen = after or self.base  # after=0: nothing seen of this era
        if seen < oldest - 1:
            return list(history), Gap(requested_after=after, oldest_available=oldest)
        start = seen - oldest + 1  # ids in the history are consecutive
        return list(itertools.islice(history, start, None)), None

    def last_id(self, room: str) -> int:
        log = self._logs.get(room)
        return log.last_id if log else self.base

    def attach(self, room: str, sub: Subscriber) -> None:
        self._log(room).subscribers[sub] = None

    def detach(self, room: str, sub: Subscriber) -> None:
        log = self._logs.get(room)
        if log is not None:
            log.subscribers.pop(sub, None)

    def stats(self) -> dict[str, int]:
        return {
            "rooms": len(self._logs),
            "events_stored": self.events_stored,
            "events_held": sum(len(log.history) for log in self._logs.values()),
            "deliveries": self.deliveries,
        }


class MemoryBroker(RoomLogs):
    """Rooms held in this process, numbered here: the default for one process."""

    def publish(
        self,
        room: str,
        build: Callable[[int], protocol.RoomEvent],
        dedupe: tuple[str, str] | None = None,
        presence: tuple[str, int] | None = None,
    ) -> Sent:
        log = self._log(room)
        event = Stored(build(log.last_id + 1))  # validated before the id is taken
        self._append(log, event)
        return event.id, True


def _ignore(subs: list[Subscriber], reason: str) -> None:
    """A broker's ``drop`` until a core takes it over."""


def _count_up(counts: dict[K, int], key: K) -> int:
    """Increment ``counts[key]``; returns the count before."""
    before = counts.get(key, 0)
    counts[key] = before + 1
    return before


def _count_down(counts: dict[K, int], key: K) -> int:
    """Decrement ``counts[key]``, forgetting it at zero; returns the count after."""
    after = counts[key] - 1
    if after:
        counts[key] = after
    else:
        del counts[key]
    return after


class _Bucket:
    """Token bucket for one user's sends."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class ChatCore:
    """The chat application, independent of any transport."""

    def __init__(
        self,
        settings: Settings | None = None,
        broker: Broker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or Settings()
        self.broker: Broker = broker or MemoryBroker(self.settings.history)
        self.broker.drop = self._drop_many
        self.clock = clock
        self._streams: dict[tuple[str, str], int] = {}  # (room, user) -> member subscriptions
        self._pollers: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> last poll
        self._held: dict[tuple[str, str], int] = {}  # (room, user) -> long polls held now
        self._idempotent: dict[str, OrderedDict[tuple[str, str], int]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._subs: dict[Subscriber, None] = {}
        self._subs_by_user: dict[str, int] = {}
        self.slow_consumers = 0
        self.rate_limited = 0
        self.closing = False

    # -- sending -------------------------------------------------------------------------

    async def send(self, user: str, room: str, message: SendMessage) -> Sent:
        """Store ``message`` from ``user``; returns (id, created). Idempotent by client_msg_id."""
        self._check(user, room)
        if message.room is not None and message.room != room:
            raise ProtocolError("bad_room", f"message is for room {message.room!r}, not {room!r}")
        seen = self._idempotent.get(room)
        key = (user, message.client_msg_id) if message.client_msg_id is not None else None
        if key is not None and seen is not None and key in seen:
            return seen[key], False
        self._take_token(user)
        now_us = int(self.clock() * 1_000_000)
        sent = self.broker.publish(
            room,
            lambda i: NewMessage(
                id=i,
                room=room,
                sender=user,
                text=message.text,
                client_msg_id=message.client_msg_id,
                sent_at=message.sent_at,
                ts=now_us,
            ),
            key,
        )
        msg_id, created = sent if isinstance(sent, tuple) else await sent
        if key is not None:
            seen = self._idempotent.get(room)
            if seen is None:
                seen = self._idempotent[room] = OrderedDict()
            seen[key] = msg_id
            if len(seen) > self.settings.history:  # remembered as long as the event is
                seen.popitem(last=False)
        return msg_id, created

    def _take_token(self, user: str) -> None:
        now = self.clock()
        rate, burst = self.settings.send_rate, self.settings.send_burst
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            self.rate_limited += 1
            raise ProtocolError(
                "rate_limited", f"more than {rate:g} sends/s (burst {burst}); retry later"
            )
        bucket.tokens -= 1.0
        if len(self._buckets) > 4 * max(len(self._subs_by_user), 1024):
            self._forget_full_buckets(now)

    def _forget_full_buckets(self, now: float) -> None:
        """A refilled bucket is the same as no bucket: drop them so the map stays small."""
        refill = self.settings.send_burst / self.settings.send_rate
        for user in [u for u, b in self._buckets.items() if now - b.stamp >= refill]:
            del self._buckets[user]

    def _joined(self, room: str, user: str) -> None:
        """Announce a join nobody waits for (a shared broker reports its own failures)."""
        self.broker.publish(room, partial(_joined, room=room, user=user), None, (user, 1))

    def _left(self, room: str, user: str) -> None:
        self.broker.publish(room, partial(_left, room=room, user=user), None, (user, -1))

    def _drop_many(self, subs: list[Subscriber], reason: str) -> None:
        for sub in subs:
            if sub in self._subs:  # not already dropped by a nested publish (its user_left)
                self.slow_consumers += reason == "slow_consumer"
                self._drop(sub, reason)

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(
        self, user: str, room: str, after: int | None, kind: str, *, member: bool = True
    ) -> Subscriber:
        """Open a live subscription; its backlog holds the replay after ``after``."""
        self._check(user, room)
        self._admit(user)
        sub = Subscriber(room, user, kind, member=member, limit=self.settings.queue)
        if after is not None:
            events, gap = self.broker.replay(room, after)
            sub.backlog = [gap, *events] if gap is not None else list(events)
            if gap is None and not events:
                sub.seen = after
        self.broker.attach(room, sub)
        self._subs[sub] = None
        _count_up(self._subs_by_user, user)
        key = (room, user)
        if not member:
            _count_up(self._held, key)
        elif _count_up(self._streams, key) == 0 and key not in self._pollers:
            self._joined(room, user)
        return sub

    def admissible(self, user: str) -> None:
        """``too_many_connections`` when :meth:`subscribe` would refuse ``user`` right now
        (lets a server refuse a WebSocket upgrade before accepting it)."""
        self._admit(user)

    def waiter(self, user: str, room: str) -> Subscriber:
        """A held long poll: told of the room's next event, not a member itself."""
        return self.subscribe(user, room, None, "longpoll", member=False)

    def unsubscribe(self, sub: Subscriber) -> None:
        """Close ``sub`` (idempotent); the user leaves when this was its last stream."""
        self._drop(sub, sub.reason or "closed")

    def _admit(self, user: str) -> None:
        if self.closing:
            raise ProtocolError("too_many_connections", "the server is shutting down; retry")
        limit_total = self.settings.max_connections
        limit_user = self.settings.max_connections_per_user
        if len(self._subs) >= limit_total:
            raise ProtocolError("too_many_connections", f"the server holds {limit_total} already")
        if self._subs_by_user.get(user, 0) >= limit_user:
            raise ProtocolError(
                "too_many_connections", f"user {user!r} holds {limit_user} connections already"
            )

    def _drop(self, sub: Subscriber, reason: str) -> None:
        if sub not in self._subs:
            sub.close(reason)
            return
        del self._subs[sub]
        _count_down(self._subs_by_user, sub.user)
        self.broker.detach(sub.room, sub)
        sub.close(reason)
        key = (sub.room, sub.user)
        if not sub.member:
            _count_down(self._held, key)
        elif _count_down(self._streams, key) == 0 and key not in self._pollers:
            self._left(sub.room, sub.user)

    def close_all(self, reason: str = SHUTDOWN) -> int:
        """End every subscription (server shutdown); returns how many there were."""
        self.closing = True
        subs = list(self._subs)
        for sub in subs:  # closed first: a closed queue takes no more, so none looks slow
            sub.close(reason)
        for sub in subs:
            self._drop(sub, reason)
        return len(subs)

    # -- polling -------------------------------------------------------------------------

    def poll(self, user: str, room: str, after: int | None) -> tuple[list[Stored | Gap], int]:
        """A poll: marks ``user`` present, answers the events after ``after`` and ``last_id``."""
        self._check(user, room)
        key = (room, user)
        if key in self._pollers:
            self._pollers.move_to_end(key)
            self._pollers[key] = self.clock()
        else:
            self._pollers[key] = self.clock()
            if key not in self._streams:
                self._joined(room, user)
        if after is None:
            return [], self.broker.last_id(room)
        events, gap = self.broker.replay(room, after)
        items: list[Stored | Gap] = [gap, *events] if gap is not None else list(events)
        return items, self.broker.last_id(room)

    def sweep(self) -> int:
        """Polling users silent for ``presence_timeout`` leave their rooms; returns how many."""
        now = self.clock()
        deadline = now - self.settings.presence_timeout
        gone = 0
        while self._pollers:
            key, last = next(iter(self._pollers.items()))
            if last > deadline:
                break
            if key in self._held:  # a held long poll is presence
                self._pollers.move_to_end(key)
                self._pollers[key] = now
                continue
            del self._pollers[key]
            gone += 1
            room, user = key
            if key not in self._streams:
                self._left(room, user)
        return gone

    # -- reading -------------------------------------------------------------------------

    @staticmethod
    def _check(user: str, room: str) -> None:
        """Names come validated from the transports; checked again so nothing half-happens."""
        if not protocol.valid_room(room):
            raise ProtocolError("bad_room", "room names match [A-Za-z0-9_-]{1,64}")
        if not protocol.valid_user(user):
            raise ProtocolError("bad_message", "user names match [A-Za-z0-9_-]{1,32}")

    def members(self, room: str) -> set[str]:
        streaming = {user for (r, user) in self._streams if r == room}
        polling = {user for (r, user) in self._pollers if r == room}
        return streaming | polling

    def stats(self) -> dict[str, object]:
        by_kind: dict[str, int] = {}
        for sub in self._subs:
            by_kind[sub.kind] = by_kind.get(sub.kind, 0) + 1
        return {
            "connections": by_kind,
            "subscriptions": len(self._subs),
            "pollers": len(self._pollers),
            "slow_consumer_disconnects": self.slow_consumers,
            "rate_limited": self.rate_limited,
            **self.broker.stats(),
        }


def _joined(msg_id: int, *, room: str, user: str) -> UserJoined:
    """A ``user_joined`` for the broker to number (bound with ``partial``)."""
    return UserJoined(id=msg_id, room=room, user=user)


def _left(msg_id: int, *, room: str, user: str) -> UserLeft:
    """A ``user_left`` for the broker to number (bound with ``partial``)."""
    return UserLeft(id=msg_id, room=room, user=user)
