"""Shared plumbing of the wirewise locustfiles: users, the recorder, and the run's phases.

Files whose names start with ``_`` are skipped by ``locust -f scenarios/``; each scenario file
imports what it needs from here and stays a plain locustfile::

    locust -f scenarios/chat.py --transport sse --host http://127.0.0.1:8000 -u 100 -r 50 --headless

How a run is measured
---------------------
1. **Connect.** Users log in and subscribe through the lean clients (:mod:`clients.lean`): every
   connection of a process is read by one hub; nothing is sent.
2. **Settle.** The master (or the single local runner) waits until every receiver is
   subscribed, then until no ``user_joined`` or ``user_left`` has been read for
   ``--settle-quiet`` seconds (plus a poll interval for short polling) *and*, given the
   server's pid, the server's CPU over half a second is below ``--settle-cpu`` %. Each join
   is a room event for every member, so 500 listeners joining one room are ~125,000 frames:
   a window opened during them measures the joins. How long settling took is recorded.
3. **Window.** Senders follow an open-loop schedule inside ``[start, end)`` and stamp
   ``sent_at`` with the *scheduled* time; a send never waits for the previous one's answer,
   so a slow server cannot slow the schedule (no coordinated omission). How late each send
   was issued is its lag; a scheduled send that was never issued is counted as unsent.
4. **Drain.** Senders stop at ``end``; the receivers keep reading until every answer has come
   and every expected delivery has arrived (or ``--drain`` seconds). Only then do receivers
   stop (and leave their rooms): the leaves never load a window.
5. **Collect.** Each process's send table and deliveries (see :mod:`wirewise.ledger`) are
   merged at the master, which writes ``--wirewise-out`` (``scenario.json``) and
   ``messages.npz`` beside it. ``wirewise summarize`` turns them into results.

Latency is the kernel's receipt time minus ``sent_at`` (see :mod:`clients.lean.hub`).
Progress (latency per step, counters) reaches the master with Locust's worker reports, once
a second; the final tables travel in a message of their own at the end.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import gevent
import locust.runners
import numpy as np
import psutil
from locust import User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from clients import ClientError, Refused
from clients.lean import Hub, LeanClient, lean_client_for
from scenarios._options import ScenarioOptions, add_arguments
from wirewise import ledger
from wirewise.metrics import Histogram
from wirewise.sampler import cpu_seconds

locust.runners.WORKER_REPORT_INTERVAL = 1.0  # progress once a second (drain, saturate steps)

WINDOW_MESSAGE = "wirewise_window"
COLLECT_MESSAGE = "wirewise_collect"
DATA_MESSAGE = "wirewise_data"
CONTROL_MESSAGE = "wirewise_control"
LATE_GRACE_US = 10_000_000
"""A send issued this long after its window ended is not issued at all (counted unsent)."""


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    add_arguments(parser)


def options(environment: Environment) -> ScenarioOptions:
    cached = getattr(environment, "_wirewise_options", None)
    if cached is None:
        cached = ScenarioOptions.from_namespace(environment.parsed_options)
        environment._wirewise_options = cached  # type: ignore[attr-defined]
    return cached


def now_us() -> int:
    return time.time_ns() // 1000


# -- what one process records ------------------------------------------------------------------


class Rooms:
    """Room names to small integers (what the hub's delivery rows carry), per process."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def index(self, name: str) -> int:
        found = self._index.get(name)
        if found is None:
            found = self._index[name] = len(self.names)
            self.names.append(name)
        return found


class Sends:
    """This process's send table: one row per scheduled send (see :mod:`wirewise.ledger`)."""

    WIDTH = 6

    def __init__(self) -> None:
        self.rows = array("q")
        self.acked: Counter[int] = Counter()
        """Acknowledged sends per room index (kept as they come, for the drain's check)."""
        self.waiting = 0
        """Sends issued and not answered yet."""

    def __len__(self) -> int:
        return len(self.rows) // self.WIDTH

    def schedule(self, room: int, scheduled_us: int) -> int:
        self.rows.extend((room, scheduled_us, -1, -1, -1, ledger.UNSENT))
        return len(self) - 1

    def issued(self, n: int, at_us: int) -> None:
        self.rows[n * 6 + 2] = at_us
        self.rows[n * 6 + 5] = ledger.UNANSWERED
        self.waiting += 1

    def answered(self, n: int, msg_id: int | None, code: str | None, at_us: int) -> int:
        """Record the answer; returns the scheduled time (for Locust's request event)."""
        rows, base = self.rows, n * 6
        if code == "connection_lost":  # the send may have been stored: not refused
            return rows[base + 1]
        if rows[base + 5] == ledger.UNANSWERED:
            self.waiting -= 1
        rows[base + 3] = at_us
        if msg_id is not None:
            rows[base + 4] = msg_id
            rows[base + 5] = ledger.OK
            self.acked[rows[base]] += 1
        else:
            rows[base + 5] = ledger.REFUSED
        return rows[base + 1]

    def table(self) -> np.ndarray:
        return np.frombuffer(self.rows, dtype=np.int64).reshape(-1, self.WIDTH).copy()

    def recount(self, end_us: int) -> None:
        """The window now ends at ``end_us``: forget what was scheduled after it."""
        table = self.table()
        kept = table[table[:, 1] < end_us]
        self.acked = Counter(kept[kept[:, 5] == ledger.OK][:, 0].tolist())
        self.waiting = int((kept[:, 5] == ledger.UNANSWERED).sum())


class Recorder:
    """Everything one Locust process measures (the master merges them at the end)."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.rooms = Rooms()
        self.sends = Sends()
        self.refusals: Counter[str] = Counter()
        self.chunks: list[np.ndarray] = []
        self.window: tuple[int, int] | None = None
        """(start, end) of the measurement in microseconds since the epoch."""
        self.latency = Histogram()
        self.step_latency: dict[int, Histogram] = {}
        self.step_seconds = 0.0
        self.delivered = 0
        """Deliveries digested whose sent_at lies in the window."""
        self.read_delay = Histogram()
        self.connected: Counter[str] = Counter()
        """Receivers subscribed per room (a gauge)."""
        self.started = 0
        self.failed = 0
        self.senders: list[ChatUser] = []
        self.cpu = psutil.Process()
        self.cpu.cpu_percent(None)
        self.cpu_max = 0.0
        self.cpu_last = 0.0
        self.cpu_at_start: float | None = None
        self.lock = threading.Lock()

    def set_window(self, start_us: int, end_us: int, step_seconds: float) -> None:
        shrinks = self.window is not None and end_us < self.window[1]
        self.window = (start_us, end_us)
        self.step_seconds = step_seconds
        if shrinks:
            self.sends.recount(end_us)

    # -- from the clients ------------------------------------------------------------------

    def answered(
        self, client_msg_id: str, msg_id: int | None, code: str | None, at_us: int
    ) -> None:
        """A send's answer (from the hub); fires Locust's request event for it."""
        n = int(client_msg_id.rsplit("-", 1)[1])
        scheduled = self.sends.answered(n, msg_id, code, at_us)
        if code is not None:
            self.refusals[code] += 1
        environment = ENV.environment
        if environment is not None:
            environment.events.request.fire(
                request_type=options(environment).transport,
                name="send",
                response_time=max(at_us - scheduled, 0) / 1000,
                response_length=0,
                exception=None if code is None else ClientError(code),
            )

    # -- digesting the hub's rows, in batches ------------------------------------------------

    def digest(self) -> None:
        """Take the hub's new deliveries; time those of the window into the histograms."""
        with self.lock:
            rows, delays = self.hub.take()
            if delays:
                for value in delays:
                    self.read_delay.record(max(int(value), 1))
            if not rows:
                return
            table = np.frombuffer(rows, dtype=np.int64).reshape(-1, 4).copy()
            self.chunks.append(table)
            if self.window is None:
                return
            start, end = self.window
            inside = table[(table[:, 2] >= start) & (table[:, 2] < end)]
            if not len(inside):
                return
            self.delivered += len(inside)
            latency = inside[:, 3] - inside[:, 2]
            record_all(self.latency, latency)
            if self.step_seconds:
                steps = (inside[:, 2] - start) // int(self.step_seconds * 1e6)
                for step in np.unique(steps).tolist():
                    histogram = self.step_latency.setdefault(int(step), Histogram())
                    record_all(histogram, latency[steps == step])

    def sample_cpu(self) -> float:
        percent = self.cpu_last = self.cpu.cpu_percent(None)
        if self.window is not None and now_us() >= self.window[0]:
            self.cpu_max = max(self.cpu_max, percent)
            if self.cpu_at_start is None:
                self.cpu_at_start = cpu_seconds(self.cpu.pid)
        return percent

    # -- progress, for the master's decisions --------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """Counters so far (cumulative) and the latency of each step since the last report."""
        self.digest()
        names = self.rooms.names
        acked = {names[room]: count for room, count in self.sends.acked.items()}
        with self.lock:
            steps = {str(k): h.encode() for k, h in self.step_latency.items()}
            self.step_latency = {}
        return {
            "delivered": self.delivered,
            "acked": acked,
            "scheduled": len(self.sends),
            "waiting": self.sends.waiting,
            "connected": dict(self.connected),
            "started": self.started,
            "failed": self.failed,
            "last_membership": self.hub.last_membership,
            "cpu_percent": self.cpu_last,
            "steps": steps,
        }

    # -- the end: this process's tables ----------------------------------------------------------

    def final(self) -> dict[str, Any]:
        """Everything for the master's ledger: tables as bytes, names, counters."""
        self.digest()
        for user in list(self.senders):
            user.unsent_rest()
        deliveries = np.concatenate(self.chunks) if self.chunks else np.zeros((0, 4), np.int64)
        if self.window is not None:
            start, end = self.window
            deliveries = deliveries[(deliveries[:, 2] >= start) & (deliveries[:, 2] < end)]
            sends = self.sends.table()
            sends = sends[(sends[:, 1] >= start) & (sends[:, 1] < end)]
        else:
            sends = self.sends.table()
        cpu_now = cpu_seconds(self.cpu.pid)
        hub = self.hub
        return {
            "rooms": self.rooms.names,
            "sends": sends.tobytes(),
            "deliveries": deliveries.tobytes(),
            "duplicated": hub.duplicates,
            "checked": hub.checked,
            "mismatched": hub.mismatched,
            "shared_stamps": hub.shared_stamps,
            "events": dict(hub.events),
            "refusals": dict(self.refusals),
            "read_delay": self.read_delay.encode(),
            "receipt_clock": "kernel" if hub.timestamps else "process",
            "cpu_percent_max": self.cpu_max,
            "cpu_seconds": None
            if cpu_now is None or self.cpu_at_start is None
            else cpu_now - self.cpu_at_start,
            "connected": dict(self.connected),
        }


def record_all(histogram: Histogram, values_us: np.ndarray) -> None:
    """Record many latencies at once (one HdrHistogram call per distinct value)."""
    values, counts = np.unique(np.clip(values_us, 1, None), return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        histogram.record_count(int(value), int(count))


RECORDER = Recorder()


class _Env:
    environment: Environment | None = None


ENV = _Env()


def is_worker(environment: Environment | None) -> bool:
    return environment is not None and isinstance(environment.runner, WorkerRunner)


def is_master(environment: Environment | None) -> bool:
    return environment is not None and isinstance(environment.runner, MasterRunner)


@events.init.add_listener
def _init(environment: Environment, **kwargs: Any) -> None:
    ENV.environment = environment
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(WINDOW_MESSAGE, _on_window)
        environment.runner.register_message(COLLECT_MESSAGE, _on_collect, concurrent=True)
        environment.runner.register_message(CONTROL_MESSAGE, _on_control)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(DATA_MESSAGE, _on_data)


@events.test_start.add_listener
def _test_start(environment: Environment, **kwargs: Any) -> None:
    if not is_master(environment):
        gevent.spawn(_digest_loop)


def _digest_loop() -> None:
    while True:
        gevent.sleep(0.5)
        RECORDER.digest()
        RECORDER.sample_cpu()


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any]) -> None:
    data["wirewise"] = RECORDER.progress()


@events.worker_report.add_listener
def _merge(client_id: str, data: dict[str, Any]) -> None:
    if "wirewise" in data:
        CONTROLLER.progress[client_id] = data["wirewise"]
        for key, encoded in data["wirewise"]["steps"].items():
            CONTROLLER.step_latency.setdefault(int(key), Histogram()).add_encoded(encoded)


def _on_window(environment: Environment, msg: Any, **kwargs: Any) -> None:
    RECORDER.set_window(msg.data["start"], msg.data["end"], msg.data.get("step_seconds", 0.0))


def _on_collect(environment: Environment, msg: Any, **kwargs: Any) -> None:
    environment.runner.send_message(DATA_MESSAGE, RECORDER.final())  # type: ignore[union-attr]


def _on_data(environment: Environment, msg: Any, **kwargs: Any) -> None:
    CONTROLLER.finals[msg.node_id] = msg.data


# -- control messages (master -> every process) ----------------------------------------------

_control_handlers: dict[str, Any] = {}


def on_control(kind: str) -> Any:
    """Register ``handler(data)`` for a control message sent with :func:`broadcast_control`."""

    def register(handler: Any) -> Any:
        _control_handlers[kind] = handler
        return handler

    return register


def broadcast_control(environment: Environment, kind: str, data: dict[str, Any]) -> None:
    """Run the ``kind`` handler here and in every worker."""
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(CONTROL_MESSAGE, {"kind": kind, "data": data})
    handler = _control_handlers.get(kind)
    if handler is not None:
        handler(data)


def _on_control(environment: Environment, msg: Any, **kwargs: Any) -> None:
    handler = _control_handlers.get(msg.data["kind"])
    if handler is not None:
        handler(msg.data["data"])


# -- the phases (master, or the one local runner) -----------------------------------------------


class Controller:
    """Runs a scenario's phases from the master (or the local runner); see the module doc."""

    def __init__(self) -> None:
        self.progress: dict[str, dict[str, Any]] = {}
        self.step_latency: dict[int, Histogram] = {}
        self.finals: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []
        self.stopped_by: str | None = None
        self.drained: tuple[Counter[str], int] = (Counter(), 0)

    # -- merged views --------------------------------------------------------------------------

    def views(self, environment: Environment) -> list[dict[str, Any]]:
        """The latest progress of every load-generating process (this one's when local)."""
        if is_master(environment):
            return list(self.progress.values())
        local = RECORDER.progress()
        for key, encoded in local["steps"].items():
            self.step_latency.setdefault(int(key), Histogram()).add_encoded(encoded)
        return [local]

    def merged(self, environment: Environment) -> dict[str, Any]:
        views = self.views(environment)
        connected: Counter[str] = Counter()
        acked: Counter[str] = Counter()
        for view in views:
            connected.update(view["connected"])
            acked.update(view["acked"])
        return {
            "connected": connected,
            "acked": acked,
            "receivers": sum(connected.values()),
            "started": sum(v["started"] for v in views),
            "failed": sum(v["failed"] for v in views),
            "delivered": sum(v["delivered"] for v in views),
            "scheduled": sum(v["scheduled"] for v in views),
            "waiting": sum(v["waiting"] for v in views),
            "last_membership": max((v["last_membership"] for v in views), default=0.0),
            "cpu_percent": max((v["cpu_percent"] for v in views), default=0.0),
            "processes": len(views),
        }

    # -- phases ---------------------------------------------------------------------------------

    def wait_connected(
        self, environment: Environment, expected: int, timeout: float
    ) -> dict[str, Any]:
        """Until ``expected`` receivers are subscribed (or gave up), at most ``timeout`` s."""
        began = time.time()
        merged = self.merged(environment)
        while time.time() - began < timeout:
            merged = self.merged(environment)
            if merged["receivers"] + merged["failed"] >= expected:
                break
            gevent.sleep(0.1)
        return {
            "receivers_expected": expected,
            "receivers": merged["receivers"],
            "failed": merged["failed"],
            "seconds": round(time.time() - began, 3),
        }

    def settle(self, environment: Environment) -> dict[str, Any]:
        """Until no join or leave for a while and the server's CPU is low (module doc, step 2)."""
        opts = options(environment)
        quiet = opts.settle_quiet + (opts.poll_interval if opts.transport == "poll" else 0.0)
        began = time.time()
        previous = cpu_seconds(opts.server_pid) if opts.server_pid else None
        server_cpu = None
        settled = False
        while time.time() - began < opts.settle_timeout:
            gevent.sleep(0.5)
            if previous is not None:
                current = cpu_seconds(opts.server_pid)
                server_cpu = None if current is None else (current - previous) / 0.5 * 100
                previous = current
            merged = self.merged(environment)
            calm = time.time() - merged["last_membership"] >= quiet
            idle = server_cpu is None or server_cpu < opts.settle_cpu
            if calm and idle:
                settled = True
                break
        return {
            "settled": settled,
            "seconds": round(time.time() - began, 3),
            "quiet_s": quiet,
            "server_cpu_percent": None if server_cpu is None else round(server_cpu, 1),
            "server_cpu_limit": opts.settle_cpu if opts.server_pid else None,
        }

    def open_window(
        self, environment: Environment, start: float, end: float, step_seconds: float = 0.0
    ) -> None:
        """Fix the window everywhere (wall-clock seconds); may be sent again to end it early."""
        data = {"start": int(start * 1e6), "end": int(end * 1e6), "step_seconds": step_seconds}
        RECORDER.set_window(data["start"], data["end"], step_seconds)
        if is_master(environment):
            environment.runner.send_message(WINDOW_MESSAGE, data)  # type: ignore[union-attr]

    def drain(self, environment: Environment, end: float) -> dict[str, Any]:
        """After the window: until every answer and every expected delivery came, or timeout.

        Deliveries expected since the previous drain are its deliveries plus each newly
        acknowledged message times its room's receivers now (an idle ramp drains each tick
        with the plateau's receivers)."""
        opts = options(environment)
        gevent.sleep(max(0.0, end - time.time()))
        began = time.time()
        report = 1.2 if is_master(environment) else 0.25
        before_acked, before_delivered = self.drained
        closed = False
        merged = self.merged(environment)
        while time.time() - began < opts.drain:
            gevent.sleep(report)
            merged = self.merged(environment)
            new = merged["acked"] - before_acked
            expected = before_delivered + sum(
                n * merged["connected"].get(room, 0) for room, n in new.items()
            )
            if merged["waiting"] == 0 and merged["delivered"] >= expected:
                closed = True
                break
        self.drained = (Counter(merged["acked"]), merged["delivered"])
        return {"closed": closed, "seconds": round(time.time() - began, 3)}

    def collect(self, environment: Environment) -> tuple[ledger.RawMessages, dict[str, Any]]:
        """Every process's tables, merged (room names mapped to one index)."""
        finals: list[dict[str, Any]]
        if is_master(environment):
            self.finals = {}
            runner = environment.runner
            assert isinstance(runner, MasterRunner)
            workers = len(runner.clients)
            runner.send_message(COLLECT_MESSAGE, {})
            deadline = time.time() + 30
            while len(self.finals) < workers and time.time() < deadline:
                gevent.sleep(0.1)
            finals = list(self.finals.values())
            missing = workers - len(finals)
        else:
            finals = [RECORDER.final()]
            missing = 0
        return ledger.merge(finals, self.notes.get("receivers_at_open")), {
            "processes": len(finals),
            "missing_processes": missing,
            "finals": finals,
        }

    def write(self, environment: Environment, scenario: str, extra: dict[str, Any]) -> None:
        """Collect, then write ``scenario.json`` and ``messages.npz`` (the master only)."""
        raw, collected = self.collect(environment)
        opts = options(environment)
        finals = collected.pop("finals")
        read_delay = Histogram()
        for final in finals:
            read_delay.add_encoded(final["read_delay"])
        events_seen: Counter[str] = Counter()
        refusals: Counter[str] = Counter()
        for final in finals:
            events_seen.update(final["events"])
            refusals.update(final["refusals"])
        window = RECORDER.window or (0, 0)
        result = {
            "scenario": scenario,
            "transport": opts.transport,
            "options": opts.as_dict(),
            "users": environment.parsed_options.num_users,
            "window": {"start": window[0] / 1e6, "end": window[1] / 1e6},
            "rooms": raw.rooms,
            "receivers": dict(zip(raw.rooms, raw.receivers, strict=True)),
            "steps": self.steps,
            "stopped_by": self.stopped_by,
            "events": dict(events_seen),
            "refusals": dict(refusals),
            "checks": {
                "sampled": sum(f["checked"] for f in finals),
                "mismatched": sum(f["mismatched"] for f in finals),
            },
            "receipt": {
                "clock": finals[0]["receipt_clock"] if finals else "process",
                "read_delay": read_delay.encode(),
                "shared_stamps": sum(f["shared_stamps"] for f in finals),
            },
            "load_generator": {
                "processes": collected["processes"],
                "missing_processes": collected["missing_processes"],
                "cpu_percent_max": [round(f["cpu_percent_max"], 1) for f in finals],
                "cpu_seconds": [f["cpu_seconds"] for f in finals],
            },
            "payload_bytes": PAYLOAD.size or opts.payload_bytes,
            **self.notes,
            **extra,
        }
        path = Path(opts.wirewise_out) if opts.wirewise_out else None
        if path is not None:
            raw.save(path.with_name("messages.npz"))
            path.write_text(json.dumps(result, indent=1) + "\n")


CONTROLLER = Controller()


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
    default_payload: ClassVar[int] = 0
    """Characters of text when ``--payload-bytes`` is left at its default (0: that default)."""
    scenario: ClassVar[str] = "chat"
    connect_wait: ClassVar[float] = 30.0
    """Seconds a user may take to log in and subscribe before it gives up."""

    def on_start(self) -> None:
        opts = options(self.environment)
        index, count = worker_index(self.environment)
        self.number = next(_user_numbers) * count + index
        self.name = f"{self.scenario[:4]}{self.number}"
        self.room = self.pick_room()
        self.room_index = RECORDER.rooms.index(self.room)
        self.rate = opts.rate or self.default_rate
        size = (
            self.default_payload
            if opts.payload_bytes == 100 and self.default_payload
            else opts.payload_bytes
        )
        PAYLOAD.size = max(1, size)
        self.text = "x" * PAYLOAD.size
        self.client = self.make_client()
        self.sub = None
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
        kwargs: dict[str, Any] = {"timeout": 10.0, "answered": RECORDER.answered}
        if opts.transport == "poll":
            kwargs["interval"] = opts.poll_interval
        elif opts.transport == "longpoll":
            kwargs["wait"] = opts.longpoll_wait
        return lean_client_for(opts.transport, self.host, RECORDER.hub, **kwargs)

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
        users = self.environment.parsed_options.num_users
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


def expected_receivers(environment: Environment) -> int:
    """Receivers the spawned users will be (classes with ``receives``)."""
    counts = environment.runner.target_user_classes_count if environment.runner else {}
    total = 0
    for cls in environment.user_classes:
        if getattr(cls, "receives", False) and not getattr(cls, "abstract", False):
            total += counts.get(cls.__name__, 0)
    return total


def plain_flow(
    environment: Environment, scenario: str, extra: dict[str, Any] | None = None
) -> None:
    """The plain scenarios' phases (module doc): connect, settle, window, drain, collect."""
    opts = options(environment)
    CONTROLLER.notes["connect"] = CONTROLLER.wait_connected(
        environment, expected_receivers(environment), 120.0
    )
    CONTROLLER.notes["settle"] = CONTROLLER.settle(environment)
    merged = CONTROLLER.merged(environment)
    CONTROLLER.notes["receivers_at_open"] = dict(merged["connected"])
    start = time.time() + 0.2  # the window message reaches every worker first
    end = start + opts.measure
    CONTROLLER.open_window(environment, start, end)
    CONTROLLER.notes["drain"] = CONTROLLER.drain(environment, end)
    CONTROLLER.write(environment, scenario, extra or {})
    if environment.runner is not None:
        environment.runner.quit()


def plain_scenario(name: str) -> None:
    """Wire a scenario with :func:`plain_flow`, started once spawning completes."""
    started = [False]

    @events.spawning_complete.add_listener
    def _spawned(user_count: int, **kwargs: Any) -> None:
        environment = ENV.environment
        if environment is None or is_worker(environment) or started[0]:
            return
        started[0] = True
        gevent.spawn(plain_flow, environment, name)
