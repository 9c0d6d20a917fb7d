"""idle: connections ramped in steps of ``--step-users`` (``--steps`` steps, each held
``--step-seconds`` once every user is subscribed and the server has settled); nobody talks,
except that before each plateau one message goes to every room, so every connection has
carried a message (some servers allocate per connection on the first message, not at
connect) and the ledger checks that every idle connection still delivers.

The runner samples the server's memory at each plateau (``steps`` in the output) and fits
memory against clients: the slope is the cost of one connection. A step that stops gaining
connections (a file limit, a refusal) ends the ramp and ``stopped_by`` says where.

    locust -f scenarios/idle.py --transport ws --host http://127.0.0.1:8000 --step-users 1000 --steps 5 --headless
"""

from __future__ import annotations

import math
import time
from typing import Any

import gevent
from locust import events

from wirewise.scenarios._phases import CONTROLLER, broadcast_control, on_control
from wirewise.scenarios._record import ENV, RECORDER, is_worker, options
from wirewise.scenarios._users import ChatUser

SCENARIO = "idle"
ROOM_SIZE = 100
STALL_SECONDS = 30.0
"""A step that gains no connection for this long ends the ramp (and says how far it got)."""
FAR = 10 * 365 * 24 * 3600.0


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


class Announcer(ChatUser):
    """Sends one message to every room when told (the plateau's "after one message")."""

    scenario = SCENARIO
    receives = False
    fixed_count = 1
    pending: list[float] = []

    def pick_room(self) -> str:
        return f"{SCENARIO}-0"

    def room_at(self, sequence: int) -> tuple[str, int]:
        room = f"{SCENARIO}-{sequence % room_count()}"
        return room, RECORDER.rooms.index(room)

    def act(self) -> None:
        self.sequence = 0
        while True:
            if Announcer.pending:
                at = Announcer.pending.pop(0)
                for _ in range(room_count()):
                    self.send_at(at)
            gevent.sleep(0.05)


@on_control("tick")
def _tick(data: dict[str, Any]) -> None:
    Announcer.pending.append(data["at"])


def control_loop() -> None:
    """Step k holds (k+1) * step_users idlers (plus the ticker) for step_seconds."""
    environment = ENV.environment
    assert environment is not None and environment.runner is not None
    opts = options(environment)
    CONTROLLER.open_window(environment, time.time(), time.time() + FAR)
    for step in range(opts.steps):
        target = opts.step_users * (step + 1)
        environment.runner.start(target + 1, opts.ramp_rate)
        ramp_began = time.time()
        best, since = 0, time.time()
        while (connected := CONTROLLER.merged(environment)["receivers"]) < target:
            if connected > best:
                best, since = connected, time.time()
            elif time.time() - since > STALL_SECONDS:
                CONTROLLER.stopped_by = f"stalled at {connected} of {target} connections"
                finish(environment)
                return
            gevent.sleep(0.25)
        ramp_seconds = time.time() - ramp_began
        settle = CONTROLLER.settle(environment)
        receivers = dict(CONTROLLER.merged(environment)["connected"])
        tick_at = time.time()
        broadcast_control(environment, "tick", {"at": tick_at})
        tick = CONTROLLER.drain(environment, tick_at)
        start = time.time()
        gevent.sleep(opts.step_seconds)
        CONTROLLER.steps.append(
            {
                "step": step,
                "users": target,
                "connected": CONTROLLER.merged(environment)["receivers"],
                "ramp_seconds": round(ramp_seconds, 3),
                "settle": settle,
                "tick": {"at": tick_at, **tick},
                "receivers": receivers,
                "start": start,
                "end": time.time(),
            }
        )
    CONTROLLER.stopped_by = f"max_steps: {opts.step_users * opts.steps} connections held"
    finish(environment)


def finish(environment: Any) -> None:
    opts = options(environment)
    CONTROLLER.open_window(environment, RECORDER.window[0] / 1e6, time.time())  # type: ignore[index]
    CONTROLLER.write(environment, SCENARIO, {"room_size": opts.room_size or ROOM_SIZE})
    environment.runner.quit()


_STARTED: list[bool] = []


@events.spawning_complete.add_listener
def _spawned(user_count: int, **kwargs: Any) -> None:
    if not is_worker(ENV.environment) and not _STARTED:
        _STARTED.append(True)
        gevent.spawn(control_loop)
