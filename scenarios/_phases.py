"""Shared plumbing of the wirewise locustfiles: users, the recorder, and the run's phases.

Files whose names start with ``_`` are skipped by ``locust -f scenarios/``; each scenario file
imports what it needs from here and stays a plain locustfile::

    locust -f scenarios/chat.py --transport sse --host http://127.0.0.1:8000 -u 100 -r 50 --headless

How a run is measured
---------------------
1. **Connect.** Users log in and subscribe through the lean clients (:mod:`wirewise.clients.lean`): every
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

Latency is the kernel's receipt time minus ``sent_at`` (see :mod:`wirewise.clients.lean.hub`).
Progress (latency per step, counters) reaches the master with Locust's worker reports, once
a second; the final tables travel in a message of their own at the end.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from wirewise import ledger
from wirewise.metrics import Histogram
from wirewise.sampler import cpu_seconds
from wirewise.scenarios._record import ENV, RECORDER, is_master, is_worker, options
from wirewise.scenarios._users import PAYLOAD

WINDOW_MESSAGE = "wirewise_window"
COLLECT_MESSAGE = "wirewise_collect"
DATA_MESSAGE = "wirewise_data"
CONTROL_MESSAGE = "wirewise_control"


@events.init.add_listener
def _init(environment: Environment, **kwargs: Any) -> None:
    ENV.environment = environment
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(WINDOW_MESSAGE, _on_window)
        environment.runner.register_message(COLLECT_MESSAGE, _on_collect, concurrent=True)
        environment.runner.register_message(CONTROL_MESSAGE, _on_control)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(DATA_MESSAGE, _on_data)


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
        start_us, end_us = int(start * 1e6), int(end * 1e6)
        data = {"start": start_us, "end": end_us, "step_seconds": step_seconds}
        RECORDER.set_window(start_us, end_us, step_seconds)
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
            "users": getattr(environment.parsed_options, "num_users", None),
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
