"""Rooms shared by several server processes through Redis.

Theory of operation
-------------------
Every process keeps a mirror of every room: the in-process broker's log (recent history, last
id, the local subscribers), so that replaying after a cursor and attaching a subscriber stay one
synchronous step, as :mod:`wirewise.servers.core` requires. Only a publish leaves the process.
One Lua script numbers the event with the room's counter, splices the id into the event's JSON,
appends it to the room's stream (``XADD ... MAXLEN history``, entry id ``0-<id>``), and
``PUBLISH``\\es it on one channel. Scripts run one at a time, so the channel carries every room's
events in id order, and every process (the sender's too) applies them as they come: a message
reaches local and remote subscribers by the same path, and nobody sees it before it is stored.

Ids: a room's counter starts at the era's base, Redis's clock in microseconds when the era began
(the first publish into an empty Redis), exactly as the memory broker's start does. Ids are
consecutive within a room, below 2**53, and an emptied Redis starts a later era, so a cursor
from before is answered with an explicit ``gap``, never a silent skip.

Membership: each process announces the joins and leaves it sees, as with one process; the
script counts them per room and user over every process (a hash in Redis) and stores a
``user_joined`` only when the count goes from 0 to 1, a ``user_left`` only when it returns to 0,
so a user whose requests a balancer spreads over three processes joins once. Each process
also keeps its own share of the counts, and renews a lease in Redis every second. A process
killed with SIGKILL takes nothing back itself: once its lease has run out (:data:`LEASE_S`),
whichever process sweeps first takes its share off the counts, atomically, and stores a
``user_left`` for each user whose count reached 0, unless that user has joined again meanwhile.
A user who reconnected to a survivor before the sweep stays a member and is never told of a
leave.

Redis that stops answering (a hung process, a partition) fails a publish after
:data:`COMMAND_TIMEOUT_S` with ``unavailable`` instead of holding its sender; the channel's
connection has no read timeout, as a quiet channel is not a dead one.

Retries: ``(user, client_msg_id)`` is remembered per room in Redis for as long as the event is
kept, so a retry that lands on another process (after a failover, through a balancer with no
stickiness) is answered with the stored id instead of a second copy.

A process that starts, or whose channel connection broke, subscribes first and then loads every
room's stream; what arrives meanwhile is applied after, skipping ids it holds. A hole in a room's
ids (a message the channel did not bring) is filled from the stream before going on.
Publishes leave in call order on one pipelined connection: a user's join is stored before the
message it sends next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wirewise import protocol
from wirewise.protocol import Gap, NewMessage, ProtocolError, UserJoined, UserLeft
from wirewise.servers.core import SHUTDOWN, RoomLogs, Sent, Stored, _Log

__all__ = ["RedisBroker"]

log = logging.getLogger("wirewise.redis")

PREFIX = "wirewise:"
CHANNEL = PREFIX + "events"
BASE = PREFIX + "base"
INSTANCES = PREFIX + "instances"
"""Every process's lease: a sorted set, scored by when the lease runs out (Redis's clock, ms)."""
PLACEHOLDER = 2**53 - 1
"""The id an event is encoded with before Redis numbers it (spliced out by the script)."""
LEASE_S = 5.0
"""A process whose lease is older than this is gone; its members are taken back."""
RENEW_S = 1.0
"""How often a process renews its lease and sweeps for expired ones."""
COMMAND_TIMEOUT_S = 3.0

PUBLISH = """
local stream, counter, base_key, seen, order, members, mine, my_rooms =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local head, tail, history, channel, field = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local user, delta, room, if_absent = ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
if if_absent == '1' and redis.call('HEXISTS', members, user) == 1 then return {'0', 0} end
if delta ~= 0 then
  if redis.call('HINCRBY', mine, user, delta) <= 0 then redis.call('HDEL', mine, user) end
  redis.call('SADD', my_rooms, room)
  local count = redis.call('HINCRBY', members, user, delta)
  if count <= 0 then redis.call('HDEL', members, user) end
  if (delta > 0 and count ~= 1) or (delta < 0 and count > 0) then return {'0', 0} end
end
if field ~= '' then
  local id = redis.call('HGET', seen, field)
  if id then return {id, 0} end
end
if redis.call('EXISTS', counter) == 0 then
  local base = redis.call('GET', base_key)
  if not base then
    local now = redis.call('TIME')
    base = now[1] .. string.format('%06d', tonumber(now[2]))
    redis.call('SET', base_key, base)
  end
  redis.call('SET', counter, base)
end
local id = string.format('%d', redis.call('INCR', counter))
local json = head .. id .. tail
redis.call('XADD', stream, 'MAXLEN', history, '0-' .. id, 'e', json)
redis.call('PUBLISH', channel, json)
if field ~= '' then
  redis.call('HSET', seen, field, id)
  redis.call('RPUSH', order, field)
  if redis.call('LLEN', order) > history then
    redis.call('HDEL', seen, redis.call('LPOP', order))
  end
end
return {id, 1}
"""


RENEW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms)
"""
"""Renew this process's lease; answer the processes whose lease ran out."""

REAP = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > ms then return {} end
redis.call('ZREM', KEYS[1], ARGV[1])
local prefix, gone = ARGV[2], {}
local rooms_key = prefix .. 'instance:' .. ARGV[1] .. ':rooms'
for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
  local members = prefix .. 'room:' .. room .. ':members'
  local mine = members .. ':' .. ARGV[1]
  local counts = redis.call('HGETALL', mine)
  for i = 1, #counts, 2 do
    if redis.call('HINCRBY', members, counts[i], -tonumber(counts[i + 1])) <= 0 then
      redis.call('HDEL', members, counts[i])
      table.insert(gone, room)
      table.insert(gone, counts[i])
    end
  end
  redis.call('DEL', mine)
end
redis.call('DEL', rooms_key)
return gone
"""
"""Take an expired process's share off every room's counts (once: the first sweeper removes
its lease); answer (room, user) pairs whose count reached 0."""


def _keys(room: str, instance: str) -> list[str]:
    room_key = PREFIX + "room:" + room
    return [
        room_key,
        room_key + ":last",
        BASE,
        room_key + ":seen",
        room_key + ":order",
        room_key + ":members",
        room_key + ":members:" + instance,
        PREFIX + "instance:" + instance + ":rooms",
    ]


class RedisBroker(RoomLogs):
    """A mirror of every room, numbered and fanned out by Redis; see the module docstring."""

    def __init__(self, url: str, history: int) -> None:
        super().__init__(history, base=0)
        self.url = url
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=COMMAND_TIMEOUT_S, socket_connect_timeout=COMMAND_TIMEOUT_S
        )
        self._channel = aioredis.Redis.from_url(url, socket_connect_timeout=COMMAND_TIMEOUT_S)
        self._script = self._redis.register_script(PUBLISH)
        self._renew = self._redis.register_script(RENEW)
        self._reap = self._redis.register_script(REAP)
        self._outbox: deque[tuple[list[str], list[str | int], asyncio.Future[Sent]]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self.publish_failures = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Connect, learn the era, load every room, and follow the channel from here on."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._redis.ping()
                break
            except (RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no Redis at {self.url}: {exc}") from None
                await asyncio.sleep(0.1)
        await self._redis.set(BASE, str(time.time_ns() // 1000), nx=True)
        self.base = int(await self._redis.get(BASE) or 0)
        self._tasks = [
            asyncio.ensure_future(self._follow()),
            asyncio.ensure_future(self._send_outbox()),
            asyncio.ensure_future(self._lease()),
        ]
        ready = asyncio.ensure_future(self._ready.wait())
        done, _ = await asyncio.wait(
            [ready, self._tasks[0]], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            await self.close()
            raise RuntimeError(f"Redis at {self.url} did not answer the room load in {timeout} s")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()
        await self._channel.aclose()

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        room: str,
        build: Callable[[int], protocol.RoomEvent],
        dedupe: tuple[str, str] | None = None,
        presence: tuple[str, int] | None = None,
    ) -> Awaitable[Sent]:
        text = protocol.encode(build(PLACEHOLDER))  # validated here, numbered by Redis
        head, marker, tail = text.partition(f'"id":{PLACEHOLDER}')
        assert marker, "every room event has an id"
        field = f"{dedupe[0]}:{dedupe[1]}" if dedupe is not None else ""
        future: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        future.add_done_callback(self._count_failure)
        user, delta = presence or ("", 0)
        if_absent = "1" if presence is not None and delta == 0 else "0"
        args: list[str | int] = [
            head + '"id":', tail, self._history, CHANNEL, field, user, delta, room, if_absent
        ]  # fmt: skip
        self._outbox.append((_keys(room, self.instance), args, future))
        self._wake.set()
        return future

    async def _send_outbox(self) -> None:
        """Publishes in call order, as many per round trip as are waiting."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = list(self._outbox)
                self._outbox.clear()
                pipe = self._redis.pipeline(transaction=False)
                for keys, args, _ in batch:
                    await self._script(keys=keys, args=args, client=pipe)
                try:
                    replies = await pipe.execute(raise_on_error=False)
                except (RedisError, OSError) as exc:
                    replies = [exc] * len(batch)
                for (_, _, future), reply in zip(batch, replies, strict=True):
                    if future.done():
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(
                            ProtocolError("unavailable", "the message broker did not answer")
                        )
                    else:
                        future.set_result((int(reply[0]), bool(reply[1])))

    def _count_failure(self, future: asyncio.Future[Sent]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.publish_failures += 1
            if self.publish_failures == 1 or self.publish_failures % 1000 == 0:
                log.warning("%d publishes failed: Redis at %s", self.publish_failures, self.url)

    # -- leases: taking back the members of a process that died ----------------------------

    async def _lease(self) -> None:
        """Renew this process's lease each second; sweep the expired ones."""
        while True:
            try:
                expired = await self._renew(
                    keys=[INSTANCES], args=[self.instance, int(LEASE_S * 1000)]
                )
                for dead in expired or ():
                    await self._take_back(dead.decode())
            except (RedisError, OSError) as exc:
                log.warning("could not renew the lease in Redis at %s: %s", self.url, exc)
            await asyncio.sleep(RENEW_S)

    async def _take_back(self, dead: str) -> None:
        gone = await self._reap(keys=[INSTANCES], args=[dead, PREFIX])
        pairs = [item.decode() for item in gone or ()]
        for room, user in zip(pairs[::2], pairs[1::2], strict=True):
            # presence (user, 0): stored only if the user has not joined again meanwhile
            self.publish(room, partial(_left, room=room, user=user), None, (user, 0))
        if pairs:
            log.info("took back %d members of %s (its lease ran out)", len(pairs) // 2, dead)

    # -- following the channel -----------------------------------------------------------

    async def _follow(self) -> None:
        """Apply the channel's events; after a broken connection, subscribe and load again."""
        while True:
            pubsub = self._channel.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._load()
                self._ready.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        await self._apply(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("lost the Redis channel (%s); loading the rooms again", exc)
                await asyncio.sleep(0.2)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py 8.1

    async def _load(self) -> None:
        """Every room's kept events beyond what this process holds."""
        async for key in self._redis.scan_iter(match=PREFIX + "room:*", count=1000):
            name = key.decode()
            if name.count(":") == 2:  # the stream itself, not its counter or dedupe keys
                await self._fill(name.split(":", 2)[2], None)

    async def _fill(self, room: str, upto: int | None) -> None:
        """Apply the stored events after the mirror's last id (up to ``upto``, excluded)."""
        log_ = self._log(room)
        end = "+" if upto is None else f"0-{upto - 1}"
        entries = await self._redis.xrange(PREFIX + "room:" + room, f"(0-{log_.last_id}", end)
        for _, fields in entries or ():
            data = cast("dict[bytes, bytes]", fields)[b"e"]  # the client returns bytes
            self._take(log_, _room_event(data), data)

    async def _apply(self, data: bytes) -> None:
        event = _room_event(data)
        log_ = self._log(event.room)
        if event.id > log_.last_id + 1:
            await self._fill(event.room, event.id)  # a hole: the channel missed something
            if event.id > log_.last_id + 1:
                self._lost(log_, event.id)
        self._take(log_, event, data)

    def replay(self, room: str, after: int) -> tuple[list[Stored], Gap | None]:
        """As in one process, except for a cursor beyond what this process has applied: it
        came from a process a few milliseconds ahead of this one (or from our own ack, ahead
        of its echo), and its events are on their way here: nothing yet, and no gap. (A new
        era's ids are above every old cursor, so a restart never looks like this.)"""
        if after > self._log(room).last_id:
            return [], None
        return super().replay(room, after)

    def _lost(self, log_: _Log, next_id: int) -> None:
        """Redis no longer holds what the mirror misses (it was emptied): the room starts over
        at ``next_id``, and its subscribers are ended as at a shutdown: they resume, and the
        resume answers them a ``gap``, so the loss is explicit."""
        log_.history.clear()
        log_.last_id = next_id - 1
        if log_.subscribers:
            self.drop(list(log_.subscribers), SHUTDOWN)

    def _take(self, log_: _Log, event: protocol.RoomEvent, data: bytes) -> None:
        """The next event of a room, unless the mirror holds it already."""
        if event.id > log_.last_id:
            self._append(log_, Stored(event, data.decode()))

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "publish_failures": self.publish_failures}


def _left(msg_id: int, *, room: str, user: str) -> UserLeft:
    return UserLeft(id=msg_id, room=room, user=user)


def _room_event(data: bytes) -> protocol.RoomEvent:
    """An event as stored by the script (only room events are published)."""
    event = protocol.decode_server(data)
    if not isinstance(event, (NewMessage, UserJoined, UserLeft)):
        raise ProtocolError("bad_message", f"not a room event on {CHANNEL}: {event.type}")
    return event
