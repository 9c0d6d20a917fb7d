"""The users of every scenario: a chat participant that subscribes and sends on a schedule.

The transport is a parameter (``--transport``), never a subclass; scenarios subclass
:class:`ChatUser` for their defaults and their rooms.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any, ClassVar

import gevent
from locust import User, task
from locust.env import Environment
from locust.runners import WorkerRunner

from wirewise.clients import ClientError, Refused
from wirewise.clients.lean import LeanClient, LeanSubscription, lean_client_for
from wirewise.scenarios._record import LATE_GRACE_US, RECORDER, now_us, options, total_users

# -- users ---------------------------------------------------------------------------------------

_user_numbers = itertools.count()


def worker_index(environment: Environment) -> tuple[int, int]:
    """(index of this process among the load generators, how many there are)."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        return 0, 1
    parsed = environment.parsed_options
    count = max(
        1, int(getattr(parsed, "processes", 0) or getattr(parsed, "expect_workers", 1) or 1)
    )
    return int(getattr(runner, "worker_index", 0) or 0), count


class _Payload:
    size = 0
    """The message size the users actually sent (a scenario may change the default)."""


PAYLOAD = _Payload()


class ChatUser(User):
    """A chat participant: subscribes to its room and, if ``sends``, sends on a schedule.

    Subclasses set ``sends`` / ``receives`` and the scenario's defaults; the transport is a
    parameter (``--transport``), never a subclass.
    """

    abstract = True
    sends: ClassVar[bool] = True
    receives: ClassVar[bool] = True
    default_rate: ClassVar[float] = 1.0
    default_room_size: ClassVar[int] = 10
    default_payload: ClassVar[int] = 100
    """Characters of text when ``--payload-bytes`` is not given (0)."""
    scenario: ClassVar[str] = "chat"
    connect_wait: ClassVar[float] = 30.0
    """Seconds a user may take to log in and subscribe before it gives up."""

    @property
    def base_url(self) -> str:
        """The server, from ``--host`` (Locust leaves ``host`` None when it is not given)."""
        if not self.host:
            raise ValueError("wirewise scenarios need --host, e.g. --host http://127.0.0.1:8000")
        return self.host

    def on_start(self) -> None:
        opts = options(self.environment)
        index, count = worker_index(self.environment)
        self.number = next(_user_numbers) * count + index
        self.name = f"{self.scenario[:4]}{self.number}"
        self.room = self.pick_room()
        self.room_index = RECORDER.rooms.index(self.room)
        self.rate = opts.rate or self.default_rate
        PAYLOAD.size = max(1, opts.payload_bytes or self.default_payload)
        self.text = "x" * PAYLOAD.size
        self.client = self.make_client()
        self.sub: LeanSubscription | None = None
        self.next_at: float | None = None
        if self.receives:
            RECORDER.started += 1
        deadline = time.monotonic() + self.connect_wait
        try:
            self.login(deadline)
            if self.receives:
                self.subscribe(deadline)
        except ClientError:
            if self.receives:
                RECORDER.failed += 1
            raise

    def make_client(self) -> LeanClient:
        opts = options(self.environment)
        kwargs: dict[str, Any] = {
            "timeout": 10.0,
            "answered": RECORDER.answered,
            "request_event": self.environment.events.request,
        }
        if opts.transport == "poll":
            kwargs["interval"] = opts.poll_interval
        elif opts.transport == "longpoll":
            kwargs["wait"] = opts.longpoll_wait
        return lean_client_for(opts.transport, self.base_url, RECORDER.hub, **kwargs)

    def login(self, deadline: float) -> None:
        """Log in, retrying with the client's backoff until ``deadline`` (a busy ramp)."""
        for attempt in itertools.count():
            try:
                self.client.login(self.name)
                return
            except Refused:
                raise
            except ClientError:
                pause = self.client.backoff.delay(attempt)
                if time.monotonic() + pause >= deadline:
                    raise
                gevent.sleep(pause)

    def subscribe(self, deadline: float) -> None:
        for attempt in itertools.count():
            try:
                self.sub = self.client.subscribe(self.room, self.room_index)
                break
            except Refused:
                raise
            except ClientError:
                pause = self.client.backoff.delay(attempt)
                if time.monotonic() + pause >= deadline:
                    raise
                gevent.sleep(pause)
        RECORDER.connected[self.room] += 1

    def pick_room(self) -> str:
        opts = options(self.environment)
        size = opts.room_size or self.default_room_size
        users = total_users(self.environment)
        rooms = max(1, math.ceil(users / size)) if size else 1
        return f"{self.scenario}-{self.number % rooms}"

    def on_stop(self) -> None:
        if self.sub is not None:
            RECORDER.connected[self.room] -= 1
        self.client.close()

    def rate_at(self, scheduled: float) -> float:
        """Sends per second at wall-clock ``scheduled`` (saturate ramps it)."""
        return self.rate

    def room_at(self, sequence: int) -> tuple[str, int]:
        """Where the ``sequence``-th send goes (a broadcast publisher cycles its rooms)."""
        return self.room, self.room_index

    @task
    def chat(self) -> None:
        self.act()

    def act(self) -> None:
        """What the user does for the whole run (subclasses override this, not the task)."""
        if not self.sends:
            gevent.sleep(3600)
            return
        while RECORDER.window is None:
            gevent.sleep(0.05)
        RECORDER.senders.append(self)
        start = RECORDER.window[0] / 1e6
        self.next_at = start + random.uniform(0, 1.0 / self.rate_at(start))
        self.sequence = 0
        while self.next_at is not None and self.next_at < RECORDER.window[1] / 1e6:
            now = time.time()
            if self.next_at > now:
                gevent.sleep(self.next_at - now)
                continue  # the window may have moved meanwhile (saturate ends it early)
            if (now - RECORDER.window[1] / 1e6) * 1e6 > LATE_GRACE_US:
                break  # hopelessly late: unsent_rest() counts what is left
            self.send_at(self.next_at)
            self.next_at += 1.0 / self.rate_at(self.next_at)
        if self.next_at is not None and self.next_at >= RECORDER.window[1] / 1e6:
            self.next_at = None
        gevent.sleep(3600)  # the run ends before this does

    def send_at(self, scheduled: float) -> None:
        """Issue the send scheduled for ``scheduled`` now, without waiting for its answer."""
        room, room_index = self.room_at(self.sequence)
        self.sequence += 1
        scheduled_us = int(scheduled * 1e6)
        n = RECORDER.sends.schedule(room_index, scheduled_us)
        RECORDER.sends.issued(n, now_us())
        self.client.send(room, self.text, sent_at=scheduled_us, client_msg_id=f"{self.name}-{n}")

    def unsent_rest(self) -> None:
        """At the end: the schedule's points before the window's end that were never issued."""
        if self.next_at is None or RECORDER.window is None:
            return
        end = RECORDER.window[1] / 1e6
        at = self.next_at
        while at < end:
            _room, room_index = self.room_at(self.sequence)
            self.sequence += 1
            RECORDER.sends.schedule(room_index, int(at * 1e6))
            at += 1.0 / self.rate_at(at)
        self.next_at = None
