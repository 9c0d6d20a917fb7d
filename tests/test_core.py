"""servers.core without a network: ids, replay, history, membership, limits and fan-out.

Time is a :class:`FakeClock` moved by hand; settings are small so limits are reached in a few
steps (history 5, queue 3, presence timeout 30 s unless a test says otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from wirewise.protocol import (
    Gap,
    NewMessage,
    ProtocolError,
    SendMessage,
    UserJoined,
    UserLeft,
    encode,
)
from wirewise.servers.config import Settings
from wirewise.servers.core import ChatCore, MemoryBroker, Stored, Subscriber

ROOM = "general"
START = 1_000.0

Row = tuple[object, ...]


class FakeClock:
    """Seconds since the epoch that move only when the test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Counter:
    """A ``Subscriber.notify`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def send(core: ChatCore, user: str, room: str, msg: SendMessage) -> tuple[int, bool]:
    """``await core.send(...)`` with the in-process broker, which never waits: run to its end."""
    step = core.send(user, room, msg)
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise AssertionError("a send through the in-process broker waited")


def make_core(**overrides: object) -> tuple[ChatCore, FakeClock]:
    options: dict[str, object] = {"history": 5, "queue": 3, "presence_timeout": 30.0}
    options.update(overrides)
    clock = FakeClock()
    settings = Settings(**options)
    broker = MemoryBroker(
        settings.history, base=0
    )  # ids 1, 2, 3, ... (see test_ids_never_repeat_across_restarts)
    return ChatCore(settings, broker, clock=clock), clock  # type: ignore[arg-type]


def message(
    text: str = "hi",
    *,
    room: str | None = None,
    cmid: str | None = None,
    sent_at: int | None = None,
) -> SendMessage:
    return SendMessage(room=room, text=text, client_msg_id=cmid, sent_at=sent_at)


def say(core: ChatCore, user: str, text: str = "hi", *, room: str = ROOM) -> int:
    """Send a new message and return its id."""
    msg_id, created = send(core, user, room, message(text))
    assert created
    return msg_id


def rows(items: list[Stored | Gap] | list[Stored]) -> list[Row]:
    """Compact view of what a subscriber or poll got."""
    out: list[Row] = []
    for item in items:
        if isinstance(item, Gap):
            out.append(("gap", item.requested_after, item.oldest_available))
            continue
        event = item.message
        if isinstance(event, NewMessage):
            out.append((event.id, "msg", event.sender, event.text))
        elif isinstance(event, UserJoined):
            out.append((event.id, "joined", event.user))
        else:
            assert isinstance(event, UserLeft)
            out.append((event.id, "left", event.user))
    return out


def log(core: ChatCore, room: str = ROOM) -> list[Row]:
    """Every event the room still holds."""
    events, gap = core.broker.replay(room, 0)
    return ([("gap", gap.requested_after, gap.oldest_available)] if gap else []) + rows(events)


def refused(code: str, call: Callable[[], object]) -> None:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.code == code, info.value


def drain(*subs: Subscriber) -> None:
    for sub in subs:
        sub.take()


# -- ids and events ------------------------------------------------------------------------


def test_ids_never_repeat_across_restarts() -> None:
    """A cursor from an earlier process always gets a gap, even once new ids pass it."""
    before = time.time_ns() // 1000
    old = ChatCore(Settings(history=50), clock=FakeClock())  # type: ignore[arg-type]
    assert old.broker.base >= before  # the default base: the broker's start, in microseconds
    assert old.broker.last_id(ROOM) == old.broker.base  # an empty room's cursor is this era's
    cursor = [say(old, "ada") for _ in range(3)][-1]
    assert cursor == old.broker.base + 3
    # kill -9, restart: a later start, a later base, history gone. Even after more messages
    # than the old process ever stored, the old cursor cannot be taken for a new id.
    new = ChatCore(Settings(history=50), MemoryBroker(50, base=old.broker.base + 1_000_000))
    ids = [say(new, "bob") for _ in range(5)]
    assert ids[0] == new.broker.base + 1 > cursor
    items, gap = new.broker.replay(ROOM, cursor)
    assert gap is not None and (gap.requested_after, gap.oldest_available) == (cursor, ids[0])
    assert [item.id for item in items] == ids
    # "From the start" (after=0) is every event held, with no gap while nothing overflowed.
    items, gap = new.broker.replay(ROOM, 0)
    assert gap is None and [item.id for item in items] == ids
    # A cursor of this era resumes with no gap.
    items, gap = new.broker.replay(ROOM, ids[1])
    assert gap is None and [item.id for item in items] == ids[2:]


def test_ids_are_per_room_start_at_one_and_strictly_increase() -> None:
    core, _ = make_core(history=50)
    assert [say(core, "ada", room="r1") for _ in range(3)] == [1, 2, 3]
    assert [say(core, "ada", room="r2") for _ in range(2)] == [1, 2]
    assert say(core, "bob", room="r1") == 4
    sub = core.subscribe("carl", "r1", None, "sse")  # joins share the sequence
    assert rows(sub.take()) == [(5, "joined", "carl")]
    assert core.broker.last_id("r1") == 5
    assert core.broker.last_id("r2") == 2
    assert core.broker.last_id("never-used") == 0
    assert [row[0] for row in log(core, "r1")] == [1, 2, 3, 4, 5]


def test_events_carry_clock_ts_and_pass_sent_at_and_client_msg_id_through() -> None:
    core, clock = make_core()
    clock.advance(0.25)
    assert send(core, "ada", ROOM, message("hello", cmid="c-1", sent_at=123)) == (1, True)
    clock.advance(1.5)
    assert send(core, "ada", ROOM, message("again")) == (2, True)
    events, gap = core.broker.replay(ROOM, 0)
    assert gap is None
    assert [e.message for e in events] == [
        NewMessage(
            id=1,
            room=ROOM,
            sender="ada",
            text="hello",
            client_msg_id="c-1",
            sent_at=123,
            ts=1_000_250_000,
        ),
        NewMessage(id=2, room=ROOM, sender="ada", text="again", ts=1_001_750_000),
    ]
    # encoded once, and the same JSON every subscriber gets
    assert all(e.json == encode(e.message) and e.id == e.message.id for e in events)


# -- replay and live -----------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 1, 2, 4, 5])
def test_subscribe_after_replays_then_goes_live_with_no_gap_or_duplicate(after: int) -> None:
    core, _ = make_core(history=50, queue=50)
    for i in range(1, 6):
        say(core, "ada", f"m{i}")
    sub = core.subscribe("bob", ROOM, after, "sse")
    say(core, "ada", "live")
    expected = [(i, "msg", "ada", f"m{i}") for i in range(after + 1, 6)]
    expected += [(6, "joined", "bob"), (7, "msg", "ada", "live")]
    assert rows(sub.take()) == expected


def test_subscribe_without_after_starts_live() -> None:
    core, _ = make_core()
    for _ in range(3):
        say(core, "ada")
    sub = core.subscribe("bob", ROOM, None, "sse")
    assert sub.backlog == []
    say(core, "ada", "live")
    assert rows(sub.take()) == [(4, "joined", "bob"), (5, "msg", "ada", "live")]


def test_subscriber_sees_its_own_user_joined() -> None:
    core, _ = make_core()
    first = core.subscribe("ada", ROOM, None, "sse")
    assert rows(first.take()) == [(1, "joined", "ada")]
    second = core.subscribe("bob", ROOM, 0, "ws")
    assert rows(second.take()) == [(1, "joined", "ada"), (2, "joined", "bob")]
    assert rows(first.take()) == [(2, "joined", "bob")]


# -- bounded history -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "head"),
    [
        (0, [("gap", 0, 4)]),
        (2, [("gap", 2, 4)]),
        (3, []),  # 3 was the last one dropped: nothing is missing
    ],
)
def test_history_is_bounded_and_loss_is_a_gap(after: int, head: list[Row]) -> None:
    core, _ = make_core(history=5)
    for i in range(1, 9):
        say(core, "ada", f"m{i}")
    stats = core.stats()
    assert (stats["events_stored"], stats["events_held"]) == (8, 5)
    sub = core.subscribe("bob", ROOM, after, "sse")
    kept = [(i, "msg", "ada", f"m{i}") for i in range(4, 9)]
    assert rows(sub.take()) == [*head, *kept, (9, "joined", "bob")]


def test_history_cursor_inside_the_window_has_no_gap() -> None:
    core, _ = make_core(history=5)
    for i in range(1, 9):
        say(core, "ada", f"m{i}")
    sub = core.subscribe("bob", ROOM, 6, "sse")
    assert rows(sub.take()) == [
        (7, "msg", "ada", "m7"),
        (8, "msg", "ada", "m8"),
        (9, "joined", "bob"),
    ]


def test_poll_reports_the_same_gap() -> None:
    core, _ = make_core(history=5)
    for i in range(1, 9):
        say(core, "ada", f"m{i}")
    items, last_id = core.poll("bob", ROOM, 0)  # the poll's own join is id 9
    assert last_id == 9
    assert rows(items) == [
        ("gap", 0, 5),
        *[(i, "msg", "ada", f"m{i}") for i in range(5, 9)],
        (9, "joined", "bob"),
    ]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (0, [("gap", 100, 1)]),
        (3, [("gap", 100, 1), *[(i, "msg", "ada", f"m{i}") for i in (1, 2, 3)]]),
        (8, [("gap", 100, 4), *[(i, "msg", "ada", f"m{i}") for i in range(4, 9)]]),
    ],
)
def test_cursor_beyond_last_id_gets_a_gap_and_the_whole_history(
    sent: int, expected: list[Row]
) -> None:
    # A client from before a restart: its cursor points at events this server never had.
    core, _ = make_core(history=5)
    for i in range(1, sent + 1):
        say(core, "ada", f"m{i}")
    sub = core.subscribe("bob", ROOM, 100, "sse")
    assert rows(sub.take()) == [*expected, (sent + 1, "joined", "bob")]
    items, _ = core.poll("carl", ROOM, 100)
    gap = items[0]
    assert isinstance(gap, Gap)
    assert gap.requested_after == 100
    assert gap.oldest_available == items[1].id


# -- idempotent sends ----------------------------------------------------------------------


def test_same_client_msg_id_is_stored_once() -> None:
    core, _ = make_core()
    assert send(core, "ada", ROOM, message("hi", cmid="c1")) == (1, True)
    assert send(core, "ada", ROOM, message("hi", cmid="c1")) == (1, False)
    assert send(core, "ada", ROOM, message("hi", room=ROOM, cmid="c1")) == (1, False)
    assert core.stats()["events_stored"] == 1
    assert log(core) == [(1, "msg", "ada", "hi")]


def test_client_msg_id_is_scoped_to_user_and_room() -> None:
    core, _ = make_core()
    assert send(core, "ada", ROOM, message(cmid="c1")) == (1, True)
    assert send(core, "bob", ROOM, message(cmid="c1")) == (2, True)
    assert send(core, "ada", "other", message(cmid="c1")) == (1, True)
    assert send(core, "bob", ROOM, message(cmid="c1")) == (2, False)
    assert core.stats()["events_stored"] == 3


def test_send_without_client_msg_id_is_always_new() -> None:
    core, _ = make_core()
    assert [send(core, "ada", ROOM, message("same")) for _ in range(3)] == [
        (1, True),
        (2, True),
        (3, True),
    ]
    assert core.stats()["events_stored"] == 3


# -- membership: push transports -----------------------------------------------------------


def test_push_membership_follows_the_first_and_last_subscription() -> None:
    core, _ = make_core(queue=50)
    watcher = core.subscribe("eve", ROOM, None, "sse")
    drain(watcher)
    first = core.subscribe("ada", ROOM, None, "sse")
    assert rows(watcher.take()) == [(2, "joined", "ada")]
    second = core.subscribe("ada", ROOM, None, "ws")
    assert watcher.take() == []
    assert core.members(ROOM) == {"eve", "ada"}

    core.unsubscribe(first)
    assert first.closed
    assert first.reason == "closed"
    assert watcher.take() == []
    assert core.members(ROOM) == {"eve", "ada"}

    core.unsubscribe(second)
    assert rows(watcher.take()) == [(3, "left", "ada")]
    assert core.members(ROOM) == {"eve"}

    core.unsubscribe(second)
    core.unsubscribe(first)
    assert watcher.take() == []
    assert core.broker.last_id(ROOM) == 3
    assert core.stats()["subscriptions"] == 1


def test_closed_subscription_gets_no_more_events() -> None:
    core, _ = make_core()
    sub = core.subscribe("ada", ROOM, None, "sse")
    core.unsubscribe(sub)
    say(core, "bob")
    assert rows(sub.take()) == [(1, "joined", "ada")]  # queued before the close, nothing after
    assert not sub.pending


def test_membership_is_per_room() -> None:
    core, _ = make_core()
    here = core.subscribe("ada", "r1", None, "sse")
    core.subscribe("ada", "r2", None, "sse")
    assert log(core, "r2") == [(1, "joined", "ada")]
    core.unsubscribe(here)
    assert log(core, "r1") == [(1, "joined", "ada"), (2, "left", "ada")]
    assert log(core, "r2") == [(1, "joined", "ada")]
    assert core.members("r1") == set()
    assert core.members("r2") == {"ada"}


# -- membership: polling -------------------------------------------------------------------


def test_first_poll_joins_and_later_polls_do_not() -> None:
    core, clock = make_core()
    assert core.poll("ada", ROOM, None) == ([], 1)
    clock.advance(10)
    items, last_id = core.poll("ada", ROOM, 0)
    assert (rows(items), last_id) == ([(1, "joined", "ada")], 1)
    clock.advance(10)
    assert core.poll("ada", ROOM, 1) == ([], 1)
    assert core.members(ROOM) == {"ada"}
    assert log(core) == [(1, "joined", "ada")]


def test_sweep_after_presence_timeout_of_silence_publishes_user_left() -> None:
    core, clock = make_core(presence_timeout=30)
    core.poll("ada", ROOM, None)
    clock.advance(29.5)
    assert core.sweep() == 0
    assert core.members(ROOM) == {"ada"}
    clock.advance(0.5)
    assert core.sweep() == 1
    assert core.members(ROOM) == set()
    assert log(core) == [(1, "joined", "ada"), (2, "left", "ada")]
    assert core.sweep() == 0
    assert core.stats()["pollers"] == 0
    core.poll("ada", ROOM, None)  # polling again is a new join
    assert log(core)[-1] == (3, "joined", "ada")


def test_a_poll_in_between_keeps_the_user() -> None:
    core, clock = make_core(presence_timeout=30)
    core.poll("ada", ROOM, None)
    core.poll("bob", ROOM, None)
    clock.advance(20)
    core.poll("ada", ROOM, None)
    clock.advance(20)
    assert core.sweep() == 1  # bob: 40 s of silence; ada polled 20 s ago
    assert core.members(ROOM) == {"ada"}
    clock.advance(10)
    assert core.sweep() == 1
    assert log(core) == [
        (1, "joined", "ada"),
        (2, "joined", "bob"),
        (3, "left", "bob"),
        (4, "left", "ada"),
    ]


def test_held_long_poll_keeps_the_user_present_and_does_not_join() -> None:
    core, clock = make_core(presence_timeout=30)
    core.poll("ada", ROOM, None)
    waiter = core.waiter("ada", ROOM)
    assert waiter.kind == "longpoll"
    assert not waiter.member
    assert core.broker.last_id(ROOM) == 1  # holding a poll is not a second join
    clock.advance(31)
    assert core.sweep() == 0
    clock.advance(100)
    assert core.sweep() == 0
    assert core.members(ROOM) == {"ada"}

    say(core, "bob", "wake up")
    assert rows(waiter.take()) == [(2, "msg", "bob", "wake up")]
    core.unsubscribe(waiter)  # the poll is answered
    assert core.broker.last_id(ROOM) == 2  # ending a held poll is not a leave

    clock.advance(29.5)
    assert core.sweep() == 0
    clock.advance(0.5)
    assert core.sweep() == 1
    assert log(core)[-1] == (3, "left", "ada")


def test_waiter_alone_publishes_no_membership() -> None:
    core, _ = make_core()
    waiter = core.waiter("zed", ROOM)
    assert core.broker.last_id(ROOM) == 0
    assert core.members(ROOM) == set()
    core.unsubscribe(waiter)
    assert core.broker.last_id(ROOM) == 0


def test_streaming_and_polling_together_join_and_leave_once() -> None:
    core, clock = make_core()
    core.poll("ada", ROOM, None)
    stream = core.subscribe("ada", ROOM, None, "sse")
    clock.advance(60)
    assert core.sweep() == 1  # the poll presence expires ...
    assert core.members(ROOM) == {"ada"}  # ... but the stream holds the user in the room
    core.unsubscribe(stream)
    assert log(core) == [(1, "joined", "ada"), (2, "left", "ada")]

    stream = core.subscribe("bob", ROOM, None, "sse")
    core.poll("bob", ROOM, None)
    core.unsubscribe(stream)
    assert core.members(ROOM) == {"bob"}
    clock.advance(30)
    assert core.sweep() == 1
    assert log(core)[2:] == [(3, "joined", "bob"), (4, "left", "bob")]


# -- slow consumers ------------------------------------------------------------------------


def test_slow_consumer_is_dropped_and_can_resume() -> None:
    core, _ = make_core(history=5, queue=3)
    slow = core.subscribe("sloth", ROOM, None, "sse")
    notified = Counter()
    slow.notify = notified
    fast = core.subscribe("hare", ROOM, None, "ws")
    assert rows(slow.take()) == [(1, "joined", "sloth"), (2, "joined", "hare")]
    drain(fast)
    for text in "abc":
        say(core, "ada", text)
        drain(fast)
    assert len(slow.queue) == 3
    assert not slow.closed

    calls = notified.calls
    say(core, "ada", "d")  # id 6: the queue is full
    assert slow.closed
    assert slow.reason == "slow_consumer"
    assert notified.calls == calls + 1  # woken up to see that it was closed
    assert rows(fast.take()) == [(6, "msg", "ada", "d"), (7, "left", "sloth")]
    say(core, "ada", "e")
    assert rows(fast.take()) == [(8, "msg", "ada", "e")]
    taken = slow.take()
    assert rows(taken) == [(3, "msg", "ada", "a"), (4, "msg", "ada", "b"), (5, "msg", "ada", "c")]

    stats = core.stats()
    assert stats["slow_consumer_disconnects"] == 1
    assert stats["connections"] == {"ws": 1}
    assert core.members(ROOM) == {"hare"}
    core.unsubscribe(slow)  # the transport closing it afterwards changes nothing
    assert slow.reason == "slow_consumer"
    assert core.broker.last_id(ROOM) == 8

    resumed = core.subscribe("sloth", ROOM, taken[-1].id, "sse")
    assert rows(resumed.take()) == [
        (6, "msg", "ada", "d"),
        (7, "left", "sloth"),
        (8, "msg", "ada", "e"),
        (9, "joined", "sloth"),
    ]


def test_slow_consumer_with_another_subscription_does_not_leave() -> None:
    core, _ = make_core(queue=3)
    slow = core.subscribe("ada", ROOM, None, "sse")
    other = core.subscribe("ada", ROOM, None, "ws")
    say(core, "bob")
    say(core, "bob")
    assert len(slow.queue) == 3
    drain(other)
    say(core, "bob")
    assert slow.reason == "slow_consumer"
    assert not other.closed
    assert rows(other.take()) == [(4, "msg", "bob", "hi")]  # no user_left
    assert core.members(ROOM) == {"ada"}


def test_backlog_does_not_count_against_the_queue() -> None:
    core, _ = make_core(history=50, queue=3)
    for _ in range(10):
        say(core, "ada")
    sub = core.subscribe("bob", ROOM, 0, "sse")
    assert len(sub.backlog) == 10
    assert not sub.closed
    assert len(sub.take()) == 11


# -- rate limiting -------------------------------------------------------------------------


def test_sends_are_rate_limited_by_a_token_bucket() -> None:
    core, clock = make_core(send_rate=10, send_burst=3)
    for _ in range(3):
        say(core, "ada")
    refused("rate_limited", lambda: send(core, "ada", ROOM, message()))
    assert core.stats()["rate_limited"] == 1
    assert core.stats()["events_stored"] == 3
    say(core, "bob")  # another user has its own bucket
    clock.advance(0.1)  # one token at 10/s
    assert say(core, "ada") == 5
    refused("rate_limited", lambda: send(core, "ada", ROOM, message()))
    clock.advance(10)  # refills to the burst, not beyond
    for _ in range(3):
        say(core, "ada")
    refused("rate_limited", lambda: send(core, "ada", ROOM, message()))


def test_idempotent_retry_is_not_rate_limited() -> None:
    core, clock = make_core(send_rate=10, send_burst=3)
    assert [send(core, "ada", ROOM, message(cmid=f"c{i}")) for i in range(3)] == [
        (1, True),
        (2, True),
        (3, True),
    ]
    refused("rate_limited", lambda: send(core, "ada", ROOM, message(cmid="c3")))
    assert send(core, "ada", ROOM, message(cmid="c0")) == (1, False)
    assert send(core, "ada", ROOM, message(cmid="c2")) == (3, False)
    assert core.stats()["rate_limited"] == 1
    clock.advance(0.1)
    assert send(core, "ada", ROOM, message(cmid="c3")) == (4, True)  # the refused one was not kept


# -- connection limits ---------------------------------------------------------------------


def test_max_connections_per_user() -> None:
    core, _ = make_core(max_connections_per_user=2)
    stream = core.subscribe("ada", ROOM, None, "sse")
    core.waiter("ada", ROOM)  # a held poll is a connection too
    for call in (
        lambda: core.subscribe("ada", ROOM, 0, "sse"),
        lambda: core.subscribe("ada", "other", None, "ws"),
        lambda: core.waiter("ada", ROOM),
    ):
        refused("too_many_connections", call)
    assert core.stats()["subscriptions"] == 2
    assert core.broker.last_id(ROOM) == 1
    assert core.broker.last_id("other") == 0
    assert core.members("other") == set()
    core.subscribe("bob", ROOM, None, "sse")  # other users are not affected
    core.unsubscribe(stream)
    core.subscribe("ada", "other", None, "ws")  # a freed slot can be used again
    assert core.stats()["subscriptions"] == 3


def test_max_connections_in_total() -> None:
    core, _ = make_core(max_connections=2, queue=50)
    core.subscribe("ada", ROOM, None, "sse")
    bob = core.subscribe("bob", ROOM, None, "sse")
    refused("too_many_connections", lambda: core.subscribe("carl", ROOM, None, "sse"))
    refused("too_many_connections", lambda: core.waiter("carl", ROOM))
    assert core.stats()["subscriptions"] == 2
    assert core.members(ROOM) == {"ada", "bob"}
    assert core.broker.last_id(ROOM) == 2
    core.unsubscribe(bob)
    core.subscribe("carl", ROOM, None, "sse")
    assert core.members(ROOM) == {"ada", "carl"}


# -- rooms ---------------------------------------------------------------------------------


def test_send_for_another_room_is_bad_room() -> None:
    core, _ = make_core()
    refused("bad_room", lambda: send(core, "ada", ROOM, message(room="elsewhere")))
    assert core.stats()["events_stored"] == 0
    assert core.broker.last_id(ROOM) == 0
    assert core.broker.last_id("elsewhere") == 0
    assert send(core, "ada", ROOM, message(room=ROOM)) == (1, True)


@pytest.mark.parametrize("room", ["", "a/b", "../x", "r" * 65, "a b", "café", "a\x00b"])
def test_invalid_room_names_are_bad_room(room: str) -> None:
    core, _ = make_core()
    for call in (
        lambda: core.subscribe("ada", room, None, "sse"),
        lambda: core.subscribe("ada", room, 0, "ws"),
        lambda: core.waiter("ada", room),
        lambda: core.poll("ada", room, None),
        lambda: core.poll("ada", room, 0),
        lambda: send(core, "ada", room, message()),
    ):
        refused("bad_room", call)
    stats = core.stats()
    assert (stats["subscriptions"], stats["pollers"], stats["events_stored"]) == (0, 0, 0)


# -- shutdown, notify, take, stats ---------------------------------------------------------


def test_close_all_closes_and_notifies_every_subscription() -> None:
    core, _ = make_core(queue=50)
    subs = [
        core.subscribe("ada", ROOM, None, "sse"),
        core.subscribe("bob", ROOM, None, "ws"),
        core.subscribe("ada", "other", None, "tcp"),
        core.waiter("carl", ROOM),
    ]
    counters = [Counter() for _ in subs]
    for sub, counter in zip(subs, counters, strict=True):
        sub.notify = counter
    assert core.close_all() == 4
    for sub, counter in zip(subs, counters, strict=True):
        assert sub.closed
        assert sub.reason == "shutdown"
        assert counter.calls >= 1
    assert core.stats()["subscriptions"] == 0
    assert core.stats()["connections"] == {}
    assert core.members(ROOM) == set()
    assert core.close_all() == 0


def test_notify_is_called_for_each_queued_event() -> None:
    core, _ = make_core(queue=10)
    sub = core.subscribe("ada", ROOM, None, "sse")
    counter = Counter()
    sub.notify = counter
    for _ in range(3):
        say(core, "bob")
    assert counter.calls == 3
    core.subscribe("carl", ROOM, None, "sse")
    assert counter.calls == 4
    assert len(sub.take()) == 5  # own join, three messages, carl's join
    assert counter.calls == 4  # taking does not notify


def test_take_returns_backlog_then_queue_and_empties_both() -> None:
    core, _ = make_core(history=5, queue=10)
    for i in range(1, 8):
        say(core, "ada", f"m{i}")
    sub = core.subscribe("bob", ROOM, 1, "sse")  # backlog: gap, 3..7; queue: join 8
    say(core, "ada", "m9")
    assert sub.pending
    assert rows(sub.backlog) == [("gap", 1, 3), *[(i, "msg", "ada", f"m{i}") for i in range(3, 8)]]
    assert rows(list(sub.queue)) == [(8, "joined", "bob"), (9, "msg", "ada", "m9")]
    items = sub.take()
    assert rows(items) == [
        ("gap", 1, 3),
        *[(i, "msg", "ada", f"m{i}") for i in range(3, 8)],
        (8, "joined", "bob"),
        (9, "msg", "ada", "m9"),
    ]
    assert sub.backlog == []
    assert len(sub.queue) == 0
    assert not sub.pending
    assert sub.take() == []
    say(core, "ada", "m10")
    assert rows(sub.take()) == [(10, "msg", "ada", "m10")]


def test_stats_report_connections_events_and_deliveries() -> None:
    core, _ = make_core(queue=10)
    core.subscribe("ada", ROOM, None, "sse")  # join 1 -> ada
    core.subscribe("bob", ROOM, None, "sse")  # join 2 -> ada, bob
    core.subscribe("carl", "other", None, "ws")  # join 1 in other -> carl
    core.waiter("dan", ROOM)  # no event
    core.poll("erin", ROOM, None)  # join 3 -> ada, bob, dan's held poll
    say(core, "ada")  # 4 -> ada, bob, dan
    stats = core.stats()
    expected = {
        "connections": {"sse": 2, "ws": 1, "longpoll": 1},
        "subscriptions": 4,
        "pollers": 1,
        "rooms": 2,
        "events_stored": 5,
        "events_held": 5,
        "deliveries": 1 + 2 + 1 + 3 + 3,
        "slow_consumer_disconnects": 0,
        "rate_limited": 0,
    }
    assert {key: stats[key] for key in expected} == expected


# -- regressions ----------------------------------------------------------------------------


def test_each_slow_consumer_is_counted_once() -> None:
    core, _ = make_core(queue=3)
    a = core.subscribe("ada", ROOM, None, "sse")
    b = core.subscribe("bob", ROOM, None, "sse")
    drain(a, b)
    for _ in range(3):
        say(core, "carl")
    say(core, "carl")  # both queues were full: both dropped
    assert (a.reason, b.reason) == ("slow_consumer", "slow_consumer")
    assert core.stats()["slow_consumer_disconnects"] == 2


def test_close_all_with_a_full_queue_still_says_shutdown() -> None:
    core, _ = make_core(queue=3)
    bob = core.subscribe("bob", ROOM, None, "sse")  # closed first by close_all
    ada = core.subscribe("ada", ROOM, None, "sse")
    drain(bob, ada)
    for _ in range(3):
        say(core, "carl")
    assert len(ada.queue) == 3
    core.close_all()
    assert (bob.reason, ada.reason) == ("shutdown", "shutdown")
    assert core.stats()["slow_consumer_disconnects"] == 0


def test_refused_send_does_not_break_replay() -> None:
    core, _ = make_core(history=50)
    say(core, "ada", "one")
    with pytest.raises(ProtocolError):
        send(core, "not a user!", ROOM, message("bad"))
    second = say(core, "ada", "two")
    say(core, "ada", "three")
    sub = core.subscribe("bob", ROOM, second, "sse")
    assert [row[3] for row in rows(sub.backlog)] == ["three"]


def test_refused_subscribe_leaves_nothing_attached() -> None:
    core, _ = make_core()
    with pytest.raises(ProtocolError):
        core.subscribe("not a user!", ROOM, None, "sse")
    assert core.stats()["subscriptions"] == 0
