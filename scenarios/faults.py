"""faults: a chat crowd (rooms of ``--room-size``, default 10, everyone sending at ``--rate``,
default 1/s) while things go wrong, on a fixed timeline inside the measurement window:

- at 5 % one reader (``SlowReader``, room ``faults-slow``) stops reading and a ``Flooder``
  sends it ``--slow-messages`` messages of ``--slow-bytes`` characters, until 40 %: the server
  must cut it off as a ``slow_consumer``; at 45 % it reads again and resumes with ``after=``;
- at ``--kill-at`` (default 60 %) the *runner* kills the server with SIGKILL and starts it
  again on the same port (this file only says when, in ``faults-plan.json`` beside
  ``--wirewise-out``; the runner answers with the times in ``faults-restart.json``).

Every message carries ``<sender>:<seq>:`` so that each receiver's deliveries can be checked
one by one against the acknowledged sends of its room. A missing delivery is *signalled* when
the message was stored by the killed process and the receiver got a ``gap`` whose cursor lies
before it; any other missing delivery is *silent* (the protocol says there must be none; see
``lost_silently_stale_cursor`` for the kind this run can find).
A receiver is back after the kill at the first message of a session it reopened (a push
client hears its own ``user_joined``, a poller joins on its first poll); that time minus
when the new process listened is its reconnect time. Messages a receiver got in a session it reopened, stored before that session began, are the
ones that a client without resume would have lost (``delivered_by_resume``).

    wirewise bench --scenario faults --transport sse      # the runner does the killing

Run by hand (``locust -f scenarios/faults.py ...``) nothing is killed: the accounting then
covers the slow consumer only. One Locust process: the accounting is not merged across workers.

Unlike the other scenarios this one uses the full clients of :mod:`clients` (a reader thread
per subscription, closed-loop sends that retry): their reconnect-and-resume logic is what it
tests, and its figures are reliability, not latency under load.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust import events

from wirewise.clients import Client, ClientError, Subscription, client_for
from wirewise.ledger import RawMessages
from wirewise.metrics import Histogram
from wirewise.protocol import Error, Gap, NewMessage, ServerMessage
from wirewise.scenarios._phases import CONTROLLER, expected_receivers
from wirewise.scenarios._record import ENV, RECORDER, is_worker, options, total_users
from wirewise.scenarios._users import ChatUser

SCENARIO = "faults"
SLOW_ROOM = f"{SCENARIO}-slow"
STALL_FROM, FLOOD_UNTIL, STALL_UNTIL = 0.05, 0.40, 0.45
"""Fractions of the window: the slow reader stalls, the flooder stops, the reader reads again."""


class Ledger:
    """Acknowledged sends per room and what each receiver got (one Locust process)."""

    def __init__(self) -> None:
        self.acked: dict[str, list[tuple[str, int, float, bool]]] = {}
        """room -> (key, id, acked at, counted: scheduled inside the window or a flood)."""
        self.receivers: list[Receiver] = []
        self.opening = False
        self.stored_at: dict[str, int] = {}
        """key -> the server's ``ts`` (us) as a receiver saw it: which process stored it."""
        self.stall = Event()
        self.stall.set()  # set: reading; cleared while the slow reader stalls
        self.latency = Histogram()
        self.send_failed = 0
        self.connected_at_end = 0
        """Receivers connected when the run stopped (after every one was back, or patience)."""

    def ack(self, room: str, key: str, msg_id: int, counted: bool) -> None:
        self.acked.setdefault(room, []).append((key, msg_id, time.time(), counted))


LEDGER = Ledger()
REPORTS: list[Callable[[], dict[str, Any]]] = []
"""What scenarios built on this one add to the result (fallback: the negotiations)."""


class Receiver:
    """One subscription's view: keys received, gaps, and deliveries made by a resume."""

    def __init__(self, user: FaultUser) -> None:
        self.user = user
        self.got: Counter[str] = Counter()
        self.gaps: list[tuple[float, int]] = []
        self.by_resume = 0
        self.slow_consumer = 0
        self.session = 0
        self.session_started_us = time.time_ns() // 1000
        self.connected_at = math.inf
        self.sessions: list[float] = []
        """Wall-clock time of the first message of each reopened session."""
        self.arrivals: list[tuple[float, int]] = []
        """(arrival s, latency us) of each timed delivery: split later into survivors' and
        moved clients', before and during a failover's reconnect storm."""

    @property
    def room(self) -> str:
        return self.user.room

    def record(self, message: ServerMessage) -> None:
        sub = getattr(self.user, "sub", None)
        now_us = time.time_ns() // 1000
        if sub is not None and sub.reconnects != self.session:
            self.session, self.session_started_us = sub.reconnects, now_us
            self.sessions.append(now_us / 1e6)
        if isinstance(message, NewMessage):
            key = message.text.split(":", 2)
            if len(key) == 3:
                self.got[f"{key[0]}:{key[1]}"] += 1
                LEDGER.stored_at.setdefault(f"{key[0]}:{key[1]}", message.ts)
            if self.session and message.ts < self.session_started_us:
                self.by_resume += 1
        elif isinstance(message, Gap):
            self.gaps.append((now_us / 1e6, message.requested_after))
        elif isinstance(message, Error) and message.code == "slow_consumer":
            self.slow_consumer += 1


class FaultUser(ChatUser):
    abstract = True
    scenario = SCENARIO
    # The full client, not the lean one: resume, callbacks and the error a fault produces are
    # what this scenario checks; ChatUser's lean client has none of them.
    client: Client  # type: ignore[assignment]
    sub: Subscription | None  # type: ignore[assignment]

    def on_start(self) -> None:
        self.receiver = Receiver(self)
        self.sequence = 0
        super().on_start()
        if self.receives:
            self.receiver.connected_at = time.time()  # it started live: nothing before counts
            LEDGER.receivers.append(self.receiver)

    def make_client(self) -> Client:  # type: ignore[override]
        opts = options(self.environment)
        kwargs: dict[str, Any] = {"timeout": 10.0, "request_event": self.environment.events.request}
        if opts.transport == "poll":
            kwargs["interval"] = opts.poll_interval
        elif opts.transport == "longpoll":
            kwargs["wait"] = opts.longpoll_wait
        return client_for(opts.transport, self.base_url, **kwargs)

    def subscribe(self, deadline: float) -> None:
        self.sub = self.client.subscribe(self.room, after=None, on_message=self.on_message)
        if not self.sub.wait_connected(max(0.0, deadline - time.monotonic())):
            raise ClientError(f"{self.name} could not subscribe to {self.room}")
        RECORDER.connected[self.room] += 1

    def on_message(self, message: ServerMessage) -> None:
        self.receiver.record(message)
        if (
            isinstance(message, NewMessage)
            and message.sent_at is not None
            and self.in_window(message.sent_at)
        ):
            now_us = time.time_ns() // 1000
            LEDGER.latency.record(now_us - message.sent_at)
            self.receiver.arrivals.append((now_us / 1e6, now_us - message.sent_at))

    @staticmethod
    def in_window(scheduled_us: int) -> bool:
        window = RECORDER.window
        return window is not None and window[0] <= scheduled_us < window[1]

    def act(self) -> None:
        """Closed loop on purpose: each send waits for its answer (and retries, as a client does)."""
        if not self.sends:
            gevent.sleep(3600)
            return
        while RECORDER.window is None:
            gevent.sleep(0.05)
        start, end = (t / 1e6 for t in RECORDER.window)
        next_at = start + random.uniform(0, 1.0 / self.rate)
        while next_at < end:
            now = time.time()
            if next_at > now:
                gevent.sleep(next_at - now)
            self.send_one(next_at)
            next_at += 1.0 / self.rate
        gevent.sleep(3600)

    def send_one(self, scheduled: float) -> None:
        """ChatUser's send, with a key in the text and the acknowledged id kept."""
        scheduled_us = int(scheduled * 1_000_000)
        self.sequence += 1
        key = f"{self.name}:{self.sequence}"
        text = f"{key}:{self.text}"[: max(len(self.text), len(key) + 1)]
        try:
            msg_id = self.client.send(self.room, text, sent_at=scheduled_us)
        except ClientError:
            LEDGER.send_failed += 1  # the client told Locust already
            return
        counted = self.in_window(scheduled_us) or self.room == SLOW_ROOM
        LEDGER.ack(self.room, key, msg_id, counted)


class Member(FaultUser):
    default_rate = 1.0
    default_room_size = 10
    weight = 1

    def pick_room(self) -> str:
        opts = options(self.environment)
        size = opts.room_size or self.default_room_size
        members = max(1, total_users(self.environment) - 2)
        return f"{SCENARIO}-{self.number % max(1, math.ceil(members / size))}"


class SlowReader(FaultUser):
    """Stops reading (its reader blocks) from 5 % to 45 % of the window."""

    fixed_count = 1
    sends = False

    def pick_room(self) -> str:
        return SLOW_ROOM

    def on_message(self, message: ServerMessage) -> None:
        LEDGER.stall.wait()
        self.receiver.record(message)  # not a chat delivery: kept out of the latency


class Flooder(FaultUser):
    """Sends the slow reader big messages as fast as the server acknowledges them."""

    fixed_count = 1
    receives = False

    def pick_room(self) -> str:
        return SLOW_ROOM

    def act(self) -> None:
        while RECORDER.window is None:
            gevent.sleep(0.05)
        opts = options(self.environment)
        start, end = (t / 1e6 for t in RECORDER.window)
        length = end - start
        self.text = "f" * opts.slow_bytes
        gevent.sleep(max(0.0, start + STALL_FROM * length - time.time()))
        LEDGER.stall.clear()
        for _ in range(opts.slow_messages):
            if time.time() > start + FLOOD_UNTIL * length:
                break
            self.send_one(time.time())
        gevent.sleep(max(0.0, start + STALL_UNTIL * length - time.time()))
        LEDGER.stall.set()
        gevent.sleep(3600)


def plan_path(environment: Any, name: str) -> Path | None:
    out = options(environment).wirewise_out
    return Path(out).with_name(name) if out else None


@events.spawning_complete.add_listener
def _spawned(user_count: int, **kwargs: Any) -> None:
    environment = ENV.environment
    if environment is None or is_worker(environment) or LEDGER.opening:
        return
    LEDGER.opening = True
    gevent.spawn(_open_window, environment)


def _open_window(environment: Any) -> None:
    """The window opens once every receiver is subscribed (or after 60 s of waiting): the
    ledger expects each message of the window from every receiver of its room."""
    opts = options(environment)
    CONTROLLER.notes["connect"] = CONTROLLER.wait_connected(
        environment, expected_receivers(environment), 60.0
    )
    CONTROLLER.notes["settle"] = CONTROLLER.settle(environment)
    start = time.time() + 0.5
    end = start + opts.measure
    CONTROLLER.open_window(environment, start, end)
    path = plan_path(environment, "faults-plan.json")
    if path is not None:
        kill_at = start + opts.kill_at * (end - start)
        path.write_text(json.dumps({"window": [start, end], "kill_at": kill_at}))
    gevent.spawn(_stop_when_back, environment, end + opts.drain, opts.back_within)


def _stop_when_back(environment: Any, earliest: float, patience: float) -> None:
    """Stop after the drain, once every receiver has its gap from the new process (or later
    by ``patience`` seconds at most): a run that ended first would count late clients' losses
    as silent."""
    gevent.sleep(max(0.0, earliest - time.time()))
    path = plan_path(environment, "faults-restart.json")
    deadline = time.time() + patience
    while time.time() < deadline and path is not None:
        if path.exists():
            restart = json.loads(path.read_text())
            if everyone_back(restart):
                gevent.sleep(opts_drain(environment))  # what the new sessions replay lands
                break
        gevent.sleep(0.1)
    # Before the users stop (which closes every subscription).
    LEDGER.connected_at_end = sum(map(connected, LEDGER.receivers))
    if environment.runner is not None:
        environment.runner.quit()


def everyone_back(restart: dict[str, Any]) -> bool:
    """After a restart every receiver has come back; after a failover (one instance of
    several killed, the others listening all along) only some left, and every receiver is
    connected again a second after the kill."""
    if restart.get("failover"):
        return time.time() > restart["killed_at"] + 1.0 and all(map(connected, LEDGER.receivers))
    return all(back(r, restart) for r in LEDGER.receivers)


def connected(receiver: Receiver) -> bool:
    sub = receiver.user.sub
    return sub is not None and sub.connected.is_set()


def back(receiver: Receiver, restart: dict[str, float]) -> float | None:
    """When ``receiver`` was back after the restart: its first message on a new connection,
    or its gap (a poller may never have noticed the outage: its next poll found the new
    process); None while it is not."""
    times = [t for t in receiver.sessions if t >= restart["listening_at"]]
    times += [t for t, _ in receiver.gaps if t >= restart["killed_at"]][:1]
    return min(times) if times else None


def slowest(moved: list[tuple[float, Receiver]], count: int = 3) -> list[dict[str, Any]]:
    """The slowest clients back after a kill: how many times their subscription ended or failed
    to open (the lost session included) and the last reason, so a straggler can be traced."""
    found = []
    for ms, receiver in sorted(moved, key=lambda item: item[0], reverse=True)[:count]:
        sub = getattr(receiver.user, "sub", None)
        found.append(
            {
                "reconnect_ms": ms,
                "room": receiver.room,
                "ends_and_failed_attempts": sub.reconnects if sub is not None else None,
                "last_failure": sub.last_failure if sub is not None else None,
            }
        )
    return found


def opts_drain(environment: Any) -> float:
    return min(float(options(environment).drain), 2.0)


def stored_by_old(key: str, killed: float) -> bool:
    """Was this message stored by the killed process? Its ``ts`` says, as any receiver saw it;
    one that no receiver got died with it. (Not the ack's time: under gevent a greenlet may
    read an ack from the old process only after the new one listens.)"""
    ts = LEDGER.stored_at.get(key)
    return ts is None or ts < killed * 1e6


STORM_CAP_S = 30.0
"""A storm ends when the last client that moved is back, or this long after its kill."""


def storms(restart: dict[str, Any]) -> list[tuple[float, float]]:
    """(kill, end) per kill of a failover or rolling restart: from the SIGKILL/SIGTERM to the
    first message of the last session reopened because of it (the slow reader's apart)."""
    kills = sorted(restart.get("kills") or [restart["killed_at"]])
    spans = []
    for kill, following in zip(kills, [*kills[1:], math.inf], strict=True):
        limit = min(following, kill + STORM_CAP_S)
        back_at = [
            min(times)
            for r in LEDGER.receivers
            if r.room != SLOW_ROOM  # the server cuts it off by design: not the kill's doing
            and (times := [t for t in r.sessions if kill <= t < limit])
        ]
        spans.append((kill, max(back_at, default=kill)))
    return spans


def survivors_latency(restart: dict[str, Any]) -> dict[str, Any]:
    """Delivery latency of the clients the kill did not touch (no session reopened in the
    storm; never the slow reader itself): before the first kill (its flood's load included),
    during each storm, and after the last storm to the window's end (calm: the baseline), from
    the same run; what a failover costs the users who stayed put. Timed from each message's schedule, so a moved
    sender's late messages count against the survivors who received them, as a user sees it."""
    spans = storms(restart)
    window_end = (RECORDER.window or (0, 0))[1] / 1e6
    before, during, after = Histogram(), Histogram(), Histogram()
    survivors: set[int] = set()
    for index, receiver in enumerate(LEDGER.receivers):
        if receiver.room == SLOW_ROOM:
            continue  # it reads slowly by design: its latency is its own, not a survivor's
        moved = [any(k <= t <= end for t in receiver.sessions) for k, end in spans]
        if not all(moved):
            survivors.add(index)
        for arrived, latency_us in receiver.arrivals:
            if arrived < spans[0][0]:
                before.record(latency_us)
            elif arrived > spans[-1][1]:
                if not moved[-1] and arrived <= window_end:
                    after.record(latency_us)
            else:
                for (kill, end), away in zip(spans, moved, strict=True):
                    if not away and kill <= arrived <= end:
                        during.record(latency_us)
                        break
    return {
        "storms_s": [[round(k, 6), round(end - k, 3)] for k, end in spans],
        "receivers": len(survivors),
        "before": before.encode(),
        "during": during.encode(),
        "after": after.encode(),
        "after_s": round(max(0.0, window_end - spans[-1][1]), 3),
    }


def accounting(restart: dict[str, Any] | None) -> dict[str, Any]:
    """Every expected delivery: delivered, duplicated, lost with a gap, or lost silently."""
    killed = restart["killed_at"] if restart else math.inf
    listening = restart["listening_at"] if restart else math.inf
    counts = Counter[str]()
    reconnect_ms: list[float] = []
    moved: list[tuple[float, Receiver]] = []
    slow_back_ms: float | None = None
    silent: list[dict[str, Any]] = []
    for receiver in LEDGER.receivers:
        acked = [
            m for m in LEDGER.acked.get(receiver.room, []) if m[3] and m[2] > receiver.connected_at
        ]
        after_kill = [(t, cursor) for t, cursor in receiver.gaps if t >= killed]
        came_back = back(receiver, restart) if restart else None
        kills = (restart or {}).get("kills")
        slow = receiver.room == SLOW_ROOM  # cut off by design, so its sessions are not the kill's
        if kills and not slow:  # a rolling restart: each reopened session, from its stop
            for t in receiver.sessions:
                before = [k for k in kills if k <= t]
                if before:
                    reconnect_ms.append(round((t - max(before)) * 1000, 1))
        elif came_back is not None and not kills:
            ms = round((came_back - listening) * 1000, 1)
            if slow:
                slow_back_ms = ms
            else:
                reconnect_ms.append(ms)
                moved.append((ms, receiver))
        for key, msg_id, acked_at, _ in acked:
            copies = receiver.got.get(key, 0)
            counts["expected"] += 1
            if copies:
                counts["delivered"] += 1
                counts["duplicated"] += copies - 1
            elif (old := stored_by_old(key, killed)) and any(
                msg_id > cursor for _, cursor in after_kill
            ):
                counts["lost_signalled"] += 1
            else:
                counts["lost_silently"] += 1
                if not old and not after_kill:
                    # Stored by the new process under an id the receiver's old cursor had
                    # already passed: the cursor from before the restart hid it, no gap.
                    counts["lost_silently_stale_cursor"] += 1
                if len(silent) < 20:  # enough to see why
                    silent.append(
                        {
                            "room": receiver.room,
                            "key": key,
                            "id": msg_id,
                            "acked_after_restart_s": round(acked_at - listening, 3),
                            "gaps": [(round(t - listening, 3), c) for t, c in receiver.gaps],
                        }
                    )
        counts["gaps"] += len(receiver.gaps)
        counts["gaps_after_kill"] += len(after_kill)
        counts["delivered_by_resume"] += receiver.by_resume
        counts["slow_consumer_errors"] += receiver.slow_consumer
    return {
        "receivers": len(LEDGER.receivers),
        "connected_at_end": LEDGER.connected_at_end,
        "reconnect_ms": sorted(reconnect_ms),
        "slowest_reconnects": slowest(moved),
        "slow_reader_back_ms": slow_back_ms,
        "slow_reader_reconnects": next(
            (r.session for r in LEDGER.receivers if r.room == SLOW_ROOM), None
        ),
        "restart": restart,
        "survivors": survivors_latency(restart) if restart and restart.get("failover") else None,
        "silent_examples": silent,
        **{
            k: counts[k]
            for k in (
                "expected",
                "delivered",
                "duplicated",
                "lost_signalled",
                "lost_silently",
                "lost_silently_stale_cursor",
                "gaps",
                "gaps_after_kill",
                "delivered_by_resume",
                "slow_consumer_errors",
            )
        },
    }


@events.quitting.add_listener
def _quitting(environment: Any, **kwargs: Any) -> None:
    if is_worker(environment):
        return
    path = plan_path(environment, "faults-restart.json")
    restart = json.loads(path.read_text()) if path is not None and path.exists() else None
    opts = options(environment)
    window = RECORDER.window or (0, 0)
    result = {
        "scenario": SCENARIO,
        "transport": opts.transport,
        "options": opts.as_dict(),
        "users": total_users(environment),
        "window": {"start": window[0] / 1e6, "end": window[1] / 1e6},
        "room_size": opts.room_size or Member.default_room_size,
        "faults": accounting(restart),
        "slow_bytes": opts.slow_bytes,
        "latency": LEDGER.latency.encode(),
        "send_failed": LEDGER.send_failed,
        "load_generator": {
            "processes": 1,
            "missing_processes": 0,
            "cpu_percent_max": [RECORDER.cpu_max],
        },
        "receipt": {"clock": "process"},
        **CONTROLLER.notes,
    }
    for report in REPORTS:
        result |= report()
    out = opts.wirewise_out
    if out:
        RawMessages(rooms=[], receivers=[]).save(Path(out).with_name("messages.npz"))
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
