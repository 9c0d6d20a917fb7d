"""saturate: a fixed crowd of chatters whose send rate grows by ``--rate-factor`` every
``--step-seconds``, until the transport's knee: a step whose p99 delivery latency breaks
``--latency-bound-ms``, or during which the server's CPU reached ``--knee-cpu`` % (given
``--server-pid``). The ramp never lets the load generator become the limit: before each step
it predicts its own CPU from the last steps' mean (rates grow by the factor) and stops short of
``--generator-limit`` %, saying so, because past it the generator would measure itself.

The highest step below the knee with every message delivered is the throughput at the
latency bound; the steps together draw the "hockey stick" of latency against load.

    locust -f scenarios/saturate.py --transport ws --host http://127.0.0.1:8000 -u 50 -r 50 --rate 2 --headless
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import gevent
from locust import events

from wirewise.metrics import Histogram
from wirewise.sampler import cpu_seconds
from wirewise.scenarios._phases import CONTROLLER, expected_receivers
from wirewise.scenarios._record import ENV, RECORDER, is_worker, options
from wirewise.scenarios._users import ChatUser
from wirewise.stats import power_law_at

FIT_STEPS = 4
"""Steps the generator's CPU line is fitted to: enough to average out one noisy step."""

SCENARIO = "saturate"
EVALUATE_AFTER = 0.5
"""Seconds after a step's end before its latency is read (its last deliveries in flight)."""


def step_rate(base: float, factor: float, step: int) -> float:
    return base * factor**step


class Saturator(ChatUser):
    scenario = SCENARIO
    default_rate = 2.0
    default_room_size = 10

    def rate_at(self, scheduled: float) -> float:
        opts = options(self.environment)
        window = RECORDER.window
        step = (
            0 if window is None else max(0, int((scheduled - window[0] / 1e6) // opts.step_seconds))
        )
        return step_rate(self.rate, opts.rate_factor, step)


def control_loop() -> None:
    environment = ENV.environment
    assert environment is not None
    opts = options(environment)
    base = opts.rate or Saturator.default_rate
    CONTROLLER.notes["connect"] = CONTROLLER.wait_connected(
        environment, expected_receivers(environment), 120.0
    )
    CONTROLLER.notes["settle"] = CONTROLLER.settle(environment)
    CONTROLLER.notes["receivers_at_open"] = dict(CONTROLLER.merged(environment)["connected"])
    start = time.time() + 0.2
    end = start + opts.step_seconds * opts.steps
    CONTROLLER.open_window(environment, start, end, opts.step_seconds)
    gevent.sleep(max(0.0, start - time.time()))
    server_cpu = cpu_seconds(opts.server_pid) if opts.server_pid else None
    server_at = time.time()
    history: list[tuple[float, float]] = []  # (rate per user, generator CPU %) of each step
    for step in range(opts.steps):
        step_start = start + step * opts.step_seconds
        step_end = step_start + opts.step_seconds
        rate = step_rate(base, opts.rate_factor, step)
        readings: list[float] = []
        while time.time() < step_end:
            gevent.sleep(min(0.5, max(0.0, step_end - time.time())))
            readings.append(CONTROLLER.merged(environment)["cpu_percent"])
        # The mean predicts the next step; one busy half-second (a GC pass, a burst of
        # reconnects) would stop the ramp far below the generator's real limit.
        generator = statistics.fmean(readings) if readings else 0.0
        server = None
        if server_cpu is not None:  # over exactly this step: read at its two edges
            now_cpu, now = cpu_seconds(opts.server_pid), time.time()
            if now_cpu is not None:
                server = (now_cpu - server_cpu) / max(now - server_at, 1e-3) * 100
                server_cpu, server_at = now_cpu, now
        history.append((rate, generator))
        gevent.sleep(max(opts.latency_bound_ms / 1000, EVALUATE_AFTER))
        CONTROLLER.merged(environment)  # folds the latest step latencies in
        latency = CONTROLLER.step_latency.get(step, Histogram())
        p99 = latency.hdr.get_value_at_percentile(99) / 1000 if latency.count else None
        CONTROLLER.steps.append(
            {
                "step": step,
                "start": step_start,
                "end": step_end,
                "rate_per_user": rate,
                "server_cpu_percent": None if server is None else round(server, 1),
                "generator_cpu_percent": round(generator, 1),
                "generator_cpu_percent_peak": round(max(readings, default=0.0), 1),
                "p99_ms_online": p99,
            }
        )
        reason = knee(opts, p99, server, latency.count)
        upcoming = predicted(history, step_rate(base, opts.rate_factor, step + 1))
        if reason is None and step + 1 < opts.steps and upcoming > opts.generator_limit:
            reason = (
                f"load_generator: the next step would need ~{upcoming:.0f} % of"
                f" the generator's core (limit {opts.generator_limit:g} %)"
            )
        if reason is not None:
            CONTROLLER.stopped_by = reason
            CONTROLLER.open_window(environment, start, step_end, opts.step_seconds)
            end = step_end
            break
    else:
        CONTROLLER.stopped_by = "max_steps: no knee within the steps tried"
    CONTROLLER.notes["drain"] = CONTROLLER.drain(environment, end)
    CONTROLLER.write(
        environment,
        SCENARIO,
        {
            "latency_bound_ms": opts.latency_bound_ms,
            "rate_factor": opts.rate_factor,
            "base_rate": base,
        },
    )
    if environment.runner is not None:
        environment.runner.quit()


def predicted(history: list[tuple[float, float]], next_rate: float) -> float:
    """The generator's CPU percent at ``next_rate``, from a power law fitted to the last steps'
    means: its cost per delivery falls as the load rises, so scaling one step by the rate, or a
    line through the last two, overstates it, and several steps average out one noisy step."""
    recent = [(rate, max(cpu, 0.1)) for rate, cpu in history[-FIT_STEPS:]]
    return power_law_at(recent, next_rate)


def knee(opts: Any, p99: float | None, server_cpu: float | None, count: int) -> str | None:
    """Why a step is the knee, or None when it held."""
    if not count:
        return "latency_bound: no delivery was timed in the step"
    if p99 is not None and p99 > opts.latency_bound_ms:
        return f"latency_bound: p99 {p99:.1f} ms over {opts.latency_bound_ms:g} ms"
    if server_cpu is not None and server_cpu >= opts.knee_cpu:
        return f"server_cpu: the server used {server_cpu:.0f} % of its core"
    return None


_STARTED: list[bool] = []


@events.spawning_complete.add_listener
def _spawned(user_count: int, **kwargs: Any) -> None:
    if not is_worker(ENV.environment) and not _STARTED:
        _STARTED.append(True)
        gevent.spawn(control_loop)
