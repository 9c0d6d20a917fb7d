"""saturate: a fixed crowd of chatters whose send rate grows by ``--rate-factor`` every
``--step-seconds``, until a step's p99 delivery latency breaks ``--latency-bound-ms``, a
message is lost, or the load generator itself saturates (it says which stopped it).

The highest step that held the bound with every message delivered is the throughput at the
latency bound; the steps together draw the "hockey stick" of latency against load.

    locust -f scenarios/saturate.py --transport ws --host http://127.0.0.1:8000 -u 50 -r 50 --rate 2 --headless
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from locust import events

from scenarios._common import (
    ENV,
    RECORDER,
    ChatUser,
    is_worker,
    open_window,
    options,
    stop_at,
    write_out,
)

SCENARIO = "saturate"
GENERATOR_CPU_LIMIT = 90.0
"""A load generator above this CPU percent measures itself, not the server."""


def step_rate(base: float, factor: float, step: int) -> float:
    return base * factor**step


class Saturator(ChatUser):
    scenario = SCENARIO
    default_rate = 2.0
    default_room_size = 10

    def step_of(self, scheduled_us: int | None) -> int | None:
        window = RECORDER.window
        if window is None or scheduled_us is None:
            return None
        step_seconds = options(self.environment).step_seconds
        return max(0, int((scheduled_us / 1e6 - window[0]) // step_seconds))

    def rate_at(self, scheduled: float) -> float:
        opts = options(self.environment)
        step = self.step_of(int(scheduled * 1e6)) or 0
        return step_rate(self.rate, opts.rate_factor, step)


def verdict(step: int, bound_ms: float, report_wait: float) -> str | None:
    """Why step ``step`` ends the ramp, or None when it held."""
    data = RECORDER.steps.get(step)
    if data is None or data.sent == 0:
        return "load_generator: no message was sent in the step"
    latency = data.latency
    if latency.count and latency.hdr.get_value_at_percentile(99) / 1000 > bound_ms:
        return "latency_bound"
    lag = data.lag
    if lag.count and lag.hdr.get_value_at_percentile(99) / 1000 > bound_ms:
        return "load_generator: senders fell behind their schedule"
    if RECORDER.cpu_max > GENERATOR_CPU_LIMIT:
        return f"load_generator: CPU above {GENERATOR_CPU_LIMIT:g}%"
    return None


def control_loop() -> None:
    environment = ENV.environment
    assert environment is not None
    opts = options(environment)
    distributed = (
        environment.runner is not None and type(environment.runner).__name__ == "MasterRunner"
    )
    report_wait = 3.5 if distributed else 0.5  # worker reports come every 3 s
    start = time.time() + opts.warmup
    end = start + opts.step_seconds * opts.steps
    open_window(environment, start, end)
    for step in range(opts.steps):
        step_end = start + (step + 1) * opts.step_seconds
        gevent.sleep(max(0.0, step_end + report_wait - time.time()))
        RECORDER.cpu_max = max(RECORDER.cpu_max, RECORDER.sample_cpu())
        reason = verdict(step, opts.latency_bound_ms, report_wait)
        RECORDER.step_marks.append(
            {
                "step": step,
                "start": step_end - opts.step_seconds,
                "end": step_end,
                "rate_per_user": step_rate(
                    opts.rate or Saturator.default_rate, opts.rate_factor, step
                ),
            }
        )
        if reason is not None:
            RECORDER.stopped_by = reason
            break
    else:
        RECORDER.stopped_by = "max_steps: the bound held at every rate tried"
    if opts.headless:
        stop_at(environment, time.time() + 0.1)


@events.spawning_complete.add_listener
def _spawned(user_count: int, **kwargs: Any) -> None:
    if not is_worker(ENV.environment) and RECORDER.window is None:
        gevent.spawn(control_loop)


@events.quitting.add_listener
def _quitting(environment: Any, **kwargs: Any) -> None:
    if not is_worker(environment):
        opts = options(environment)
        write_out(
            environment,
            SCENARIO,
            {
                "latency_bound_ms": opts.latency_bound_ms,
                "rate_factor": opts.rate_factor,
                "base_rate": opts.rate or Saturator.default_rate,
            },
        )
