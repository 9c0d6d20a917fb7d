"""What one Locust process measures: its send table, the hub's deliveries, its own CPU.

Each load-generating process (the one local runner, or every worker) has one
:data:`RECORDER`: the lean clients' hub reads every connection and leaves deliveries in flat
arrays, which :meth:`Recorder.digest` takes in batches (every half second) into latency
histograms; sends are rows of :class:`Sends`, answered as the answers come. The master
merges every process's tables at the end (:mod:`wirewise.ledger`); progress reaches it with
Locust's worker reports, once a second.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import Counter
from typing import Any

import gevent
import locust.runners
import numpy as np
import psutil
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from wirewise import ledger
from wirewise.clients.lean import Hub
from wirewise.metrics import Histogram
from wirewise.sampler import cpu_seconds
from wirewise.scenarios._options import ScenarioOptions, add_arguments

locust.runners.WORKER_REPORT_INTERVAL = 1.0  # progress once a second (drain, saturate steps)

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


def total_users(environment: Environment) -> int:
    """Users over every load generator. Locust sends a worker the master's own options but
    not ``-u``; a forked worker (``--processes``) inherited it, one started on its own
    (``locust --worker -f -``, another host's) did not, so the bench passes it as an option."""
    given = options(environment).total_users
    return given or int(getattr(environment.parsed_options, "num_users", None) or 1)


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
        """Record the answer; returns the scheduled time."""
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
        self.senders: list[Any] = []
        """The sending users (their ``unsent_rest()`` counts what a stopped schedule left)."""
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
        """A send's answer (from the hub; the client fires Locust's request event itself)."""
        n = int(client_msg_id.rsplit("-", 1)[1])
        self.sends.answered(n, msg_id, code, at_us)
        if code is not None:
            self.refusals[code] += 1

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
        return float(percent)

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
