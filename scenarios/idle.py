"""idle: connections ramped in steps of ``--step-users`` (``--steps`` steps, each held
``--step-seconds`` once every user is subscribed); nobody talks, except that at the start
of each plateau one message goes to every room, so every connection has carried a message
(some servers allocate per connection on the first message, not at connect).

The runner samples the server's memory at each plateau (``step_marks`` in the output) and
fits memory against connections: the slope is the cost of one connection. A step that stops
gaining connections (a file limit, a refusal) ends the ramp and ``stopped_by`` says where.

    locust -f scenarios/idle.py --transport ws --host http://127.0.0.1:8000 --step-users 1000 --steps 5 --headless
"""

from __future__ import annotations

import math
import time
from typing import Any

import gevent
from locust import events

from scenarios._common import (
    ENV,
    RECORDER,
    ChatUser,
    broadcast_control,
    connected_receivers,
    is_worker,
    on_control,
    options,
    write_out,
)

SCENARIO = "idle"
ROOM_SIZE = 100


def room_count() -> int:
    opts = options(ENV.environment)  # type: ignore[arg-type]
    size = opts.room_size or ROOM_SIZE
    return max(1, math.ceil(opts.step_users * opts.steps / size))


class Idler(ChatUser):
    scenario = SCENARIO
    sends = False
    weight = 1
    connect_wait = 120.0  # a ramp queues connections; the stall check below ends a real stall

    def pick_room(self) -> str:
        return f"{SCENARIO}-{self.number % room_count()}"


class Ticker(ChatUser):
    """Sends one message to every room when told (the plateau's "after one message")."""

    scenario = SCENARIO
    receives = False
    fixed_count = 1
    pending: list[int] = []
    started = False

    def pick_room(self) -> str:
        return f"{SCENARIO}-0"

    def act(self) -> None:
        while True:
            if Ticker.pending:
                Ticker.pending.clear()
                for room in range(room_count()):
                    self.room = f"{SCENARIO}-{room}"
                    self.send_one(time.time())
            gevent.sleep(0.1)


@on_control("tick")
def _tick(data: dict[str, Any]) -> None:
    Ticker.pending.append(data["step"])


STALL_SECONDS = 30.0
"""A step that gains no connection for this long ends the ramp (and says how far it got)."""


def control_loop() -> None:
    """Step k holds (k+1) * step_users idlers (plus the ticker) for step_seconds."""
    environment = ENV.environment
    assert environment is not None and environment.runner is not None
    opts = options(environment)
    spawn_rate = opts.ramp_rate
    for step in range(opts.steps):
        target = opts.step_users * (step + 1)
        environment.runner.start(target + 1, spawn_rate)
        best, since = connected_receivers(), time.time()
        while (now_connected := connected_receivers()) < target:
            if now_connected > best:
                best, since = now_connected, time.time()
            elif time.time() - since > STALL_SECONDS:
                RECORDER.stopped_by = f"stalled at {now_connected} of {target} connections"
                environment.runner.quit()
                return
            gevent.sleep(0.05)
        broadcast_control(environment, "tick", {"step": step})
        gevent.sleep(0.5)  # the tick reaches every room
        start = time.time()
        gevent.sleep(opts.step_seconds)
        RECORDER.step_marks.append(
            {
                "step": step,
                "users": target,
                "connected": connected_receivers(),
                "start": start,
                "end": time.time(),
            }
        )
    RECORDER.stopped_by = f"max_steps: {opts.step_users * opts.steps} connections held"
    environment.runner.quit()


@events.spawning_complete.add_listener
def _spawned(user_count: int, **kwargs: Any) -> None:
    if not is_worker(ENV.environment) and not Ticker.started:
        Ticker.started = True
        gevent.spawn(control_loop)


@events.quitting.add_listener
def _quitting(environment: Any, **kwargs: Any) -> None:
    if not is_worker(environment):
        write_out(environment, SCENARIO, {"room_size": options(environment).room_size or ROOM_SIZE})
