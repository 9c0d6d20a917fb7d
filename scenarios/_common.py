"""Shared plumbing of the wirewise locustfiles: options, users, the recorder, and reporting.

Files whose names start with ``_`` are skipped by ``locust -f scenarios/``; each scenario file
imports what it needs from here and stays a plain locustfile::

    locust -f scenarios/chat.py --transport sse --host http://127.0.0.1:8000

How a run is measured
---------------------
1. Users connect and subscribe (Locust's spawning); nothing is sent.
2. When spawning completes, the master (or the single local runner) fixes a measurement
   window in wall-clock time: ``warmup`` seconds later, lasting ``measure`` seconds; workers
   learn it by a message. Senders follow an open-loop schedule inside the window and stamp
   ``sent_at`` with the *scheduled* time, so a sender that falls behind cannot hide the delay
   (no coordinated omission); how late each send started is recorded as schedule lag.
3. Receivers record ``receipt - sent_at`` for every message scheduled inside the window into
   an HdrHistogram, and count deliveries per room. Expected deliveries are the messages sent
   inside the window times the receivers of their room; lost = expected - delivered.
4. After ``drain`` seconds for messages in flight, the master stops the run and writes
   ``--wirewise-out`` (the runner's input: histograms, counts, steps, warnings).

Workers send their histograms and counters to the master with Locust's worker reports
(``report_to_master`` / ``worker_report``); the master merges them.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import gevent
import psutil
from locust import User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from clients import Client, ClientError, Refused, client_for
from wirewise.metrics import Deliveries, Histogram
from wirewise.protocol import Error, NewMessage, ServerMessage

TRANSPORTS = ("poll", "longpoll", "sse", "h2", "ws", "tcp")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
WINDOW_MESSAGE = "wirewise_window"
OPEN_ENDED = 365 * 24 * 3600.0
STOP_MARGIN = 2.0
"""A window that lasts until the web UI's stop button."""


# -- options -------------------------------------------------------------------------------


RAMP_RATE = 150.0
"""idle: connections opened per second. Each costs the load generator ~2.6 ms of CPU (login,
then the stream) and the server 1.2 ms (uvicorn SSE) to 4.2 ms (hypercorn HTTP/2): faster, and
connections queue until they time out, which measures the ramp instead of the idle cost."""


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser  # Locust's own parser: its add_argument knows include_in_web_ui
    group.add_argument(
        "--transport", choices=TRANSPORTS, default="ws", help="Transport the users speak"
    )
    group.add_argument(
        "--room-size", type=int, default=0, help="Users per room (0: the scenario's default)"
    )
    group.add_argument(
        "--rate", type=float, default=0.0, help="Messages per second per sender (0: default)"
    )
    group.add_argument("--payload-bytes", type=int, default=100, help="Characters of message text")
    group.add_argument(
        "--poll-interval", type=float, default=1.0, help="Short polling interval, seconds"
    )
    group.add_argument("--longpoll-wait", type=float, default=25.0, help="Long poll hold, seconds")
    group.add_argument(
        "--warmup", type=float, default=1.0, help="Seconds after spawning before measuring"
    )
    group.add_argument("--measure", type=float, default=10.0, help="Seconds of measurement")
    group.add_argument("--drain", type=float, default=2.0, help="Seconds for messages in flight")
    group.add_argument("--step-users", type=int, default=100, help="idle: users added per step")
    group.add_argument(
        "--step-seconds", type=float, default=5.0, help="idle, saturate: seconds per step"
    )
    group.add_argument("--steps", type=int, default=5, help="idle, saturate: number of steps")
    group.add_argument(
        "--ramp-rate",
        type=float,
        default=RAMP_RATE,
        help="idle: connections opened per second while ramping",
    )
    group.add_argument(
        "--rate-factor", type=float, default=1.5, help="saturate: rate multiplier per step"
    )
    group.add_argument("--latency-bound-ms", type=float, default=100.0, help="saturate: p99 bound")
    group.add_argument(
        "--wirewise-out",
        default="",
        help="Where the master writes the results JSON",
        include_in_web_ui=False,
    )


def options(environment: Environment) -> Any:
    return environment.parsed_options


# -- the recorder --------------------------------------------------------------------------


class Step:
    """What happened in one step of a stepped scenario (idle plateaus, saturate rates)."""

    def __init__(self) -> None:
        self.latency = Histogram()
        self.sent = 0
        self.delivered = 0
        self.expected = 0
        self.lag = Histogram()

    def report(self) -> dict[str, Any]:
        return {
            "latency": self.latency.encode(),
            "lag": self.lag.encode(),
            "sent": self.sent,
            "delivered": self.delivered,
            "expected": self.expected,
        }

    def merge(self, data: dict[str, Any]) -> None:
        self.latency.add_encoded(data["latency"])
        self.lag.add_encoded(data["lag"])
        self.sent += data["sent"]
        self.delivered += data["delivered"]
        self.expected += data["expected"]


class Recorder:
    """Everything one Locust process measured; the master's copy merges the workers'."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.window = None
        self.latency = Histogram()
        self.send_latency = Histogram()
        self.lag = Histogram()
        self.sent: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.expected = 0
        self.send_failed = 0
        self.duplicated = 0
        self.errors: Counter[str] = Counter()
        self.steps: dict[int, Step] = {}
        self.receivers: Counter[str] = Counter()  # a gauge: subscribed receivers per room
        self.receivers_peak: Counter[str] = Counter()
        self.worker_receivers: dict[str, Counter[str]] = {}
        self.worker_gauges: dict[str, Counter[str]] = {}
        self.cpu = psutil.Process()
        self.cpu.cpu_percent(None)
        self.cpu_max = 0.0
        self.step_marks: list[dict[str, Any]] = []
        self.stopped_by: str | None = None
        self.delivered_total = 0
        self.started = time.time()

    @property
    def window(self) -> tuple[float, float] | None:
        """(start, end) of the measurement, wall-clock seconds; None until it is fixed."""
        return self._window

    @window.setter
    def window(self, window: tuple[float, float] | None) -> None:
        self._window = window
        self._window_us = None if window is None else (window[0] * 1e6, window[1] * 1e6)

    # -- recording (hot path: keep it short) -------------------------------------------

    def in_window(self, scheduled_us: int) -> bool:
        bounds = self._window_us  # in microseconds, computed once when the window is set
        return bounds is not None and bounds[0] <= scheduled_us < bounds[1]

    def delivery(self, room: str, message: NewMessage, received_us: int, step: int | None) -> None:
        sent_at = message.sent_at
        if sent_at is None or not self.in_window(sent_at):
            return
        latency = received_us - sent_at
        self.latency.record(latency)
        self.delivered[room] += 1
        self.delivered_total += 1
        if step is not None:
            self._step(step).latency.record(latency)
            self._step(step).delivered += 1

    def sent_ok(
        self, room: str, scheduled_us: int, took_us: int, lag_us: int, step: int | None
    ) -> None:
        self.send_latency.record(took_us)
        self.lag.record(lag_us)
        if self.in_window(scheduled_us):
            self.sent[room] += 1
            if step is not None:
                data = self._step(step)
                data.sent += 1
                data.lag.record(lag_us)

    def _step(self, step: int) -> Step:
        data = self.steps.get(step)
        if data is None:
            data = self.steps[step] = Step()
        return data

    def joined(self, room: str) -> None:
        """A receiver is in ``room``; the per-room peak is what deliveries are expected to."""
        with self.lock:
            self.receivers[room] += 1
            self.receivers_peak[room] = max(self.receivers_peak[room], self.receivers[room])

    def sample_cpu(self) -> float:
        percent = self.cpu.cpu_percent(None)
        self.cpu_max = max(self.cpu_max, percent)
        return percent

    # -- worker -> master ----------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """This process's measurements since the last report (then forgotten, but gauges)."""
        with self.lock:
            data = {
                "latency": self.latency.encode(),
                "send_latency": self.send_latency.encode(),
                "lag": self.lag.encode(),
                "sent": dict(self.sent),
                "delivered": dict(self.delivered),
                "send_failed": self.send_failed,
                "duplicated": self.duplicated,
                "errors": dict(self.errors),
                "steps": {str(k): v.report() for k, v in self.steps.items()},
                "receivers": dict(self.receivers_peak),
                "gauge": dict(self.receivers),
                "cpu_max": self.cpu_max,
            }
            window = self.window
            receivers, peak = self.receivers, self.receivers_peak
            marks, stopped = self.step_marks, self.stopped_by
            self.reset()
            self.window, self.receivers, self.receivers_peak = window, receivers, peak
            self.step_marks, self.stopped_by = marks, stopped
        return data

    def merge(self, worker: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.latency.add_encoded(data["latency"])
            self.send_latency.add_encoded(data["send_latency"])
            self.lag.add_encoded(data["lag"])
            self.sent.update(data["sent"])
            self.delivered.update(data["delivered"])
            self.send_failed += data["send_failed"]
            self.duplicated += data["duplicated"]
            self.errors.update(data["errors"])
            for key, step in data["steps"].items():
                self._step(int(key)).merge(step)
            self.worker_receivers[worker] = Counter(data["receivers"])
            self.worker_gauges[worker] = Counter(data["gauge"])
            self.cpu_max = max(self.cpu_max, data["cpu_max"])

    def all_receivers(self) -> Counter[str]:
        total = Counter(self.receivers_peak)
        for counts in self.worker_receivers.values():
            total.update(counts)
        return total

    def deliveries(self) -> Deliveries:
        receivers = self.all_receivers()
        expected = sum(count * receivers.get(room, 0) for room, count in self.sent.items())
        return Deliveries.from_counts(expected, sum(self.delivered.values()), self.duplicated)

    def result(
        self, environment: Environment, scenario: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        opts = options(environment)
        window = self.window or (0.0, 0.0)
        return {
            "scenario": scenario,
            "transport": opts.transport,
            "window": {"start": window[0], "end": window[1]},
            "latency": self.latency.encode(),
            "send_latency": self.send_latency.encode(),
            "lag": self.lag.encode(),
            "clamped": self.latency.clamped,
            "sent": sum(self.sent.values()),
            "send_failed": self.send_failed,
            "deliveries": self.deliveries().as_dict(),
            "receivers": sum(self.all_receivers().values()),
            "rooms": len(self.all_receivers()) or len(self.sent),
            "errors": dict(self.errors),
            "steps": {str(k): v.report() for k, v in sorted(self.steps.items())},
            "step_marks": self.step_marks,
            "stopped_by": self.stopped_by,
            "load_generator_cpu_max": self.cpu_max,
            "processes": 1 + len(self.worker_receivers),
            "payload_bytes": PAYLOAD.size or opts.payload_bytes,
            **extra,
        }


RECORDER = Recorder()


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any]) -> None:
    RECORDER.sample_cpu()
    data["wirewise"] = RECORDER.report()


@events.worker_report.add_listener
def _merge(client_id: str, data: dict[str, Any]) -> None:
    if "wirewise" in data:
        RECORDER.merge(client_id, data["wirewise"])


# -- the window ------------------------------------------------------------------------------


def _on_window(environment: Environment, msg: Any, **kwargs: Any) -> None:
    RECORDER.window = tuple(msg.data["window"])  # type: ignore[assignment]


class _Env:
    environment: Environment | None = None


ENV = _Env()


@events.init.add_listener
def _init(environment: Environment, **kwargs: Any) -> None:
    ENV.environment = environment
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(WINDOW_MESSAGE, _on_window)


@events.test_start.add_listener
def _test_start(environment: Environment, **kwargs: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        RECORDER.reset()
        gevent.spawn(_cpu_watch)


def _cpu_watch() -> None:
    while True:
        gevent.sleep(1.0)
        RECORDER.sample_cpu()


@events.test_stop.add_listener
def _test_stop(environment: Environment, **kwargs: Any) -> None:
    window = RECORDER.window
    if window is not None and window[1] - window[0] >= OPEN_ENDED and not is_worker(environment):
        # Users are killed at stop, sends in flight with them: the last seconds are not
        # counted, or a killed send that the server stored would count as a spare delivery.
        open_window(environment, window[0], max(window[0], time.time() - STOP_MARGIN))


def open_window(environment: Environment, start: float, end: float) -> None:
    """Fix the measurement window everywhere (master and workers, or the local runner)."""
    RECORDER.window = (start, end)
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(WINDOW_MESSAGE, {"window": [start, end]})


def stop_at(environment: Environment, when: float) -> None:
    """Quit the run at wall-clock ``when`` (headless runs end by themselves)."""

    def quit_later() -> None:
        gevent.sleep(max(0.0, when - time.time()))
        if environment.runner is not None:
            environment.runner.quit()

    gevent.spawn(quit_later)


def write_out(environment: Environment, scenario: str, extra: dict[str, Any] | None = None) -> None:
    path = options(environment).wirewise_out
    if not path or isinstance(environment.runner, WorkerRunner):
        return
    result = RECORDER.result(environment, scenario, extra or {})
    Path(path).write_text(json.dumps(result) + "\n")


# -- users -----------------------------------------------------------------------------------

_user_numbers = itertools.count()


def worker_index(environment: Environment) -> tuple[int, int]:
    """(index of this process among the load generators, how many there are)."""
    runner = environment.runner
    opts = options(environment)
    count = (
        max(1, int(getattr(opts, "expect_workers", 1) or 1))
        if isinstance(runner, WorkerRunner)
        else 1
    )
    processes = getattr(opts, "processes", None)
    if isinstance(runner, WorkerRunner) and processes and processes > 0:
        count = processes
    index = getattr(runner, "worker_index", 0) or 0
    return index, count


def make_client(environment: Environment, host: str) -> Client:
    opts = options(environment)
    kwargs: dict[str, Any] = {"timeout": 10.0}
    if opts.transport == "poll":
        kwargs["interval"] = opts.poll_interval
    elif opts.transport == "longpoll":
        kwargs["wait"] = opts.longpoll_wait
    return client_for(opts.transport, host, **kwargs)


class _Payload:
    size = 0
    """The message size the users actually sent (a scenario may change the default)."""


PAYLOAD = _Payload()


def payload(size: int) -> str:
    PAYLOAD.size = max(1, size)
    return "x" * PAYLOAD.size


class ChatUser(User):
    """A chat participant: subscribes to its room and, if ``sends``, sends on a schedule.

    Subclasses set ``sends`` / ``receives`` and the scenario's defaults; ``schedule`` gives
    the send times. The transport is a parameter (``--transport``), never a subclass.
    """

    abstract = True
    sends: ClassVar[bool] = True
    receives: ClassVar[bool] = True
    default_rate: ClassVar[float] = 1.0
    default_room_size: ClassVar[int] = 10
    scenario: ClassVar[str] = "chat"
    connect_wait: ClassVar[float] = 10.0
    """Seconds a receiver waits for its subscription before the user gives up."""

    def on_start(self) -> None:
        opts = options(self.environment)
        index, count = worker_index(self.environment)
        self.number = next(_user_numbers) * count + index
        self.name = f"{self.scenario[:4]}{self.number}"
        self.room = self.pick_room()
        self.client = make_client(self.environment, self.host)
        self.counted = False
        self.sub = None
        deadline = time.monotonic() + self.connect_wait
        self.login(deadline)
        if self.receives:
            self.sub = self.client.subscribe(self.room, after=None, on_message=self.on_message)
            if not self.sub.wait_connected(max(0.0, deadline - time.monotonic())):
                raise ClientError(f"{self.name} could not subscribe to {self.room}")
            RECORDER.joined(self.room)
            self.counted = True
        self.rate = opts.rate or self.default_rate
        self.text = payload(opts.payload_bytes)

    def login(self, deadline: float) -> None:
        """Log in, retrying with the client's backoff until ``deadline`` (a busy ramp times out)."""
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

    def pick_room(self) -> str:
        opts = options(self.environment)
        size = opts.room_size or self.default_room_size
        rooms = max(1, math.ceil(self.environment.parsed_options.num_users / size)) if size else 1
        return f"{self.scenario}-{self.number % rooms}"

    def on_stop(self) -> None:
        if self.counted:
            RECORDER.receivers[self.room] -= 1
            self.counted = False
        if self.sub is not None:
            RECORDER.duplicated += getattr(self.sub, "duplicates", 0)
        self.client.close()

    def on_message(self, message: ServerMessage) -> None:
        received = time.time_ns() // 1000
        if isinstance(message, NewMessage):
            RECORDER.delivery(self.room, message, received, self.step_of(message.sent_at))
        elif isinstance(message, Error):
            RECORDER.errors[message.code] += 1

    def step_of(self, scheduled_us: int | None) -> int | None:
        """Stepped scenarios map a scheduled time to its step; others have none."""
        return None

    def rate_at(self, scheduled: float) -> float:
        return self.rate

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
        start, end = RECORDER.window
        next_at = start + random.uniform(0, 1.0 / self.rate_at(start))
        while next_at < end:
            now = time.time()
            if next_at > now:
                gevent.sleep(next_at - now)
            self.send_one(next_at)
            next_at += 1.0 / self.rate_at(next_at)
        gevent.sleep(3600)  # the run ends before this does

    def send_one(self, scheduled: float) -> None:
        scheduled_us = int(scheduled * 1_000_000)
        began = time.time()
        lag_us = max(0, int((began - scheduled) * 1_000_000))
        try:
            self.client.send(self.room, self.text, sent_at=scheduled_us)
        except ClientError as exc:
            RECORDER.send_failed += 1
            self.environment.events.request.fire(
                request_type=self.environment.parsed_options.transport,
                name="send",
                response_time=(time.time() - began) * 1000,
                response_length=0,
                exception=exc,
            )
            return
        took = time.time() - began
        RECORDER.sent_ok(
            self.room, scheduled_us, int(took * 1_000_000), lag_us, self.step_of(scheduled_us)
        )
        self.environment.events.request.fire(
            request_type=self.environment.parsed_options.transport,
            name="send",
            response_time=took * 1000,
            response_length=len(self.text),
            exception=None,
        )


def spawned_window(environment: Environment) -> None:
    """The plain scenarios' timeline: window after warmup, stop after drain."""
    opts = options(environment)
    start = time.time() + opts.warmup
    if not opts.headless:
        # With the web UI the person running it decides when to stop: the window stays open
        # until then (the test_stop listener closes it).
        open_window(environment, start, start + OPEN_ENDED)
        return
    end = start + opts.measure
    open_window(environment, start, end)
    stop_at(environment, end + opts.drain)


def is_worker(environment: Environment | None) -> bool:
    return environment is not None and isinstance(environment.runner, WorkerRunner)


def plain_scenario(name: str) -> None:
    """Wire a scenario with the plain timeline: window after spawning, results at quit."""

    @events.spawning_complete.add_listener
    def _spawned(user_count: int, **kwargs: Any) -> None:
        if (
            not is_worker(ENV.environment)
            and RECORDER.window is None
            and ENV.environment is not None
        ):
            spawned_window(ENV.environment)

    @events.quitting.add_listener
    def _quitting(environment: Environment, **kwargs: Any) -> None:
        write_out(environment, name)


# -- control messages (master -> every process) ----------------------------------------------

CONTROL_MESSAGE = "wirewise_control"
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


def _on_control_message(environment: Environment, msg: Any, **kwargs: Any) -> None:
    handler = _control_handlers.get(msg.data["kind"])
    if handler is not None:
        handler(msg.data["data"])


@events.init.add_listener
def _init_control(environment: Environment, **kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(CONTROL_MESSAGE, _on_control_message)


def connected_receivers() -> int:
    """Receivers subscribed right now, over every process (the master's view lags ~3 s)."""
    total = sum(RECORDER.receivers.values())
    for counts in RECORDER.worker_gauges.values():
        total += sum(counts.values())
    return total
