"""From a run's raw files to typed results: the one summarising step.

``wirewise bench`` leaves, per scenario x backend x repeat, a directory with ``run.json``
(what the bench planned and saw), ``scenario.json`` and ``messages.npz`` (what Locust
measured; :mod:`wirewise.ledger`), ``samples.jsonl`` (the server, the kernel and the load
generator every half second) and ``bytes.jsonl`` (the kernel's TCP counters).
:func:`summarize_run` reads only those and writes ``summary.json``; ``wirewise summarize RUN``
does it again at any time, with the same result.

Every figure is computed here, and so is its validity (:func:`judge`): a repeat whose load
generator saturated, whose publisher lagged, whose ledger did not close or whose server did
not settle is invalid, and says why.
"""

from __future__ import annotations

import itertools
import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wirewise import stats
from wirewise.ledger import Accounting, RawMessages, account
from wirewise.metrics import PERCENTILES, Histogram, too_few_samples
from wirewise.registry import BACKENDS, KILLING, Backend, backend
from wirewise.results import (
    VARIANTS,
    BytesPerMessage,
    Deliveries,
    Latency,
    LoadGenerator,
    Memory,
    Publisher,
    Repeat,
    Result,
    Step,
    Summary,
    Validity,
    write_summary,
)
from wirewise.sampler import Sample

__all__ = [
    "GENERATOR_SATURATED",
    "LAG_FLOOR_MS",
    "judge",
    "summarize_repeat",
    "summarize_run",
]

GENERATOR_SATURATED = 80.0
"""A Locust process above this CPU percent (of its one core) queues work of its own: invalid."""
LAG_FLOOR_MS = 10.0
"""A publisher's lag p99 over max(this, one send period) is a publisher behind its schedule."""
IDLE_CPU_SATURATED = 90.0
"""Server CPU percent at an idle plateau above which its CPU no longer follows connections."""
MIN_R2 = 0.9
"""An idle fit below this does not say what one connection costs."""
SCENARIO_ORDER = (
    "chat",
    "broadcast",
    "idle",
    "saturate",
    "game",
    "faults",
    "failover",
    "rolling",
    "fallback",
)


# -- reading the raw files ------------------------------------------------------------------------


@dataclass
class RawRun:
    """One run directory's files, read."""

    directory: Path
    run: dict[str, Any]
    scenario: dict[str, Any] | None
    messages: RawMessages | None
    samples: list[Sample]
    traffic: list[dict[str, float]]

    @classmethod
    def read(cls, directory: Path) -> RawRun:
        run = json.loads((directory / "run.json").read_text())
        scenario_file = directory / "scenario.json"
        scenario = json.loads(scenario_file.read_text()) if scenario_file.exists() else None
        messages_file = directory / "messages.npz"
        messages = RawMessages.load(messages_file) if messages_file.exists() else None
        return cls(
            directory=directory,
            run=run,
            scenario=scenario,
            messages=messages,
            samples=[Sample(**row) for row in _jsonl(directory / "samples.jsonl")],
            traffic=_jsonl(directory / "bytes.jsonl"),
        )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- series read at a moment -----------------------------------------------------------------------


def interpolate(samples: list[Sample], name: str, when: float) -> float | None:
    """A cumulative figure (CPU seconds) at ``when``, linear between the samples around it.

    The samples come every half second; a window's edges fall between two of them, and
    taking the nearest sample instead would count up to a quarter second too much or too
    little of a 10-20 s window (a few per cent, differently for each run).
    """
    points = [(s.t, getattr(s, name)) for s in samples if getattr(s, name) is not None]
    if len(points) < 2 or when < points[0][0] or when > points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= when <= t1:
            return float(v0 + (v1 - v0) * ((when - t0) / (t1 - t0)) if t1 > t0 else v1)
    return None


def cpu_between(samples: list[Sample], name: str, start: float, end: float) -> float | None:
    """CPU seconds of ``name`` (server_cpu_s, loadgen_cpu_s, bench_cpu_s) in [start, end]."""
    first, last = interpolate(samples, name, start), interpolate(samples, name, end)
    return None if first is None or last is None else max(last - first, 0.0)


def parts_cpu_between(samples: list[Sample], start: float, end: float) -> dict[str, float]:
    """Each part's CPU seconds in [start, end] (several processes), interpolated as
    :func:`cpu_between` is; a part not sampled across the span is left out."""
    series: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        for name, seconds in (sample.parts_cpu_s or {}).items():
            series.setdefault(name, []).append((sample.t, seconds))
    found = {}
    for name, points in series.items():
        ts = [t for t, _ in points]
        if len(points) < 2 or ts[0] > start or ts[-1] < end:
            continue
        values = [v for _, v in points]
        found[name] = max(float(np.interp(end, ts, values) - np.interp(start, ts, values)), 0.0)
    return found


def busiest_generator(samples: list[Sample], spans: list[tuple[float, float]]) -> float | None:
    """The busiest Locust process's CPU percent while measuring. A sample's percentage covers
    the interval since the previous sample, so only intervals wholly inside a span count (the
    next step's ramp starting just after a plateau is not the plateau's)."""
    values = []
    for start, end in spans:
        inside = [
            current.loadgen_cpu_percent_max_single
            for previous, current in itertools.pairwise(samples)
            if previous.t >= start and current.t <= end
        ]
        if not inside:  # a span shorter than one sampling interval: the ones that overlap it
            inside = [
                current.loadgen_cpu_percent_max_single
                for previous, current in itertools.pairwise(samples)
                if current.t > start and previous.t < end
            ]
        values += inside
    return round(max(values), 1) if values else None


def traffic_at(traffic: list[dict[str, float]], when: float) -> dict[str, float] | None:
    """The byte counters at ``when`` (the last reading at or before it)."""
    found = None
    for row in traffic:
        if row["t"] > when:
            break
        found = row
    return found


# -- figures ----------------------------------------------------------------------------------------


def latency_of(values_us: np.ndarray) -> Latency:
    """Percentiles of microsecond values, through an HdrHistogram (3 significant digits)."""
    histogram = Histogram()
    if len(values_us):
        unique, counts = np.unique(np.clip(values_us, 1, None), return_counts=True)
        for value, count in zip(unique.tolist(), counts.tolist(), strict=True):
            histogram.record_count(int(value), int(count))
    return latency_from(histogram)


def latency_from(histogram: Histogram) -> Latency:
    """A histogram's millisecond summary as a typed :class:`Latency`."""
    ms = histogram.summary_ms()
    return Latency(
        p50=ms["p50"],
        p90=ms["p90"],
        p99=ms["p99"],
        p999=ms["p999"],
        max=ms["max"],
        mean=ms["mean"],
        count=int(ms["count"] or 0),
    )


def lag_of(values_us: np.ndarray) -> dict[str, float | None]:
    def ms(p: float) -> float | None:
        value = stats.percentile(values_us, p)
        return None if value is None else round(value / 1000, 3)

    return {"p50": ms(50), "p99": ms(99), "max": ms(100)}


def bytes_between(
    traffic: list[dict[str, float]], start: float, end: float, delivered: int, sent: int
) -> BytesPerMessage:
    """TCP bytes per message in [start, end]: down per delivery, up per send, total per delivery."""
    first, last = traffic_at(traffic, start), traffic_at(traffic, end)
    if first is None or last is None or not delivered:
        return BytesPerMessage()

    def per(key_down: str, key_up: str) -> dict[str, float | None]:
        down = last[key_down] - first[key_down]
        up = last[key_up] - first[key_up]
        return {
            "down": round(down / delivered, 1),
            "up": round(up / sent, 1) if sent else None,
            "total": round((down + up) / delivered, 1),
        }

    payload = per("down", "up")
    wire = per("wire_down", "wire_up") if "wire_down" in last else {}
    return BytesPerMessage(
        down=payload["down"],
        up=payload["up"],
        total=payload["total"],
        wire=wire,
        header_bytes_per_segment=int(last["header"]) if "header" in last else None,
    )


def publisher_of(acct: Accounting, period_ms: float | None) -> Publisher:
    return Publisher(**acct.publisher, lag_ms=lag_of(acct.lag_us), period_ms=period_ms)


def deliveries_of(acct: Accounting) -> Deliveries:
    return Deliveries(**acct.deliveries)


def send_period_ms(raw: RawRun) -> float | None:
    """One sender's time between two sends, by the scenario's parameters."""
    params = raw.run.get("parameters", {})
    rate = params.get("rate_per_sender")
    return round(1000 / rate, 3) if rate else None


# -- one repeat ------------------------------------------------------------------------------------


def summarize_repeat(directory: Path) -> tuple[dict[str, Any], Repeat, dict[str, Any]]:
    """(run.json, the repeat's figures, arrays for the interval) of one run directory."""
    run = json.loads((directory / "run.json").read_text())
    repeat = Repeat(repeat=run["repeat"], files=directory.name, headroom=run.get("headroom", {}))
    arrays: dict[str, Any] = {}
    if run.get("failure"):  # the bench gave up on it: its other files may be what broke
        repeat.validity = Validity(False, [f"the run failed: {run['failure']}"])
        return run, repeat, arrays
    try:
        raw = RawRun.read(directory)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        repeat.validity = Validity(False, [f"unreadable raw files: {type(exc).__name__}: {exc}"])
        return run, repeat, arrays
    if raw.scenario is None or raw.messages is None:
        repeat.validity = Validity(
            False, ["the run failed: Locust wrote no results (see locust.log)"]
        )
        _process_warnings(raw, repeat)
        return run, repeat, arrays
    scenario = run["scenario"]
    parameters = run.setdefault("parameters", {})
    parameters["rooms"] = len(raw.scenario.get("rooms") or []) or None
    if raw.scenario.get("payload_bytes"):
        parameters["payload_bytes"] = raw.scenario["payload_bytes"]  # what was really sent
    repeat.window = raw.scenario["window"]
    repeat.path = path_of(run.get("network"))
    repeat.settle = raw.scenario.get("settle", {})
    repeat.drain = raw.scenario.get("drain", {})
    repeat.stopped_by = raw.scenario.get("stopped_by")
    if scenario == "idle":
        _idle(raw, repeat)
    elif scenario == "saturate":
        arrays = _saturate(raw, repeat)
    elif scenario in KILLING:
        _faults(raw, repeat)
    elif scenario == "fallback":
        _fallback(raw, repeat)
    else:
        arrays = _plain(raw, repeat)
    _process_warnings(raw, repeat)
    judge(raw, repeat)
    return run, repeat, arrays


def path_of(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures a network run's path was measured at (wirewise/netpath.py's record)."""
    if not record:
        return None
    measured = record.get("measured") or {}
    stats_ = (record.get("delay") or {}).get("stats") or {}
    return {
        "added_rtt_ms": measured.get("added_rtt_ms"),
        "expected_rtt_ms": measured.get("expected_rtt_ms"),
        "relay_overhead_ms": measured.get("relay_overhead_ms"),
        "first_exchange_ms": (measured.get("through_path") or {}).get("first_exchange_ms"),
        "skipped": measured.get("skipped"),
        "relay_cpu_s": stats_.get("cpu_seconds"),
        "namespace": record.get("namespace"),
    }


def measured_end(raw: RawRun) -> float:
    """When the window's deliveries were all in: the window's end plus the drain it took."""
    assert raw.scenario is not None
    drain = raw.scenario.get("drain", {}).get("seconds", 0.0)
    return float(raw.scenario["window"]["end"] + drain)


def _plain(raw: RawRun, repeat: Repeat) -> dict[str, Any]:
    assert raw.scenario is not None and raw.messages is not None
    start, end = raw.scenario["window"]["start"], raw.scenario["window"]["end"]
    acct = account(raw.messages, int(start * 1e6), int(end * 1e6))
    repeat.latency_ms = latency_of(acct.latency_us)
    repeat.send_latency_ms = latency_of(acct.send_latency_us)
    repeat.publisher = publisher_of(acct, send_period_ms(raw))
    repeat.deliveries = deliveries_of(acct)
    delivered = acct.deliveries["delivered"]
    stop = measured_end(raw)
    if delivered and end > start:
        repeat.throughput_msgs_per_s = round(delivered / (end - start), 1)
        server = cpu_between(raw.samples, "server_cpu_s", start, stop)
        if server is not None:
            repeat.server_cpu_ms_per_1k_msgs = round(server * 1e6 / delivered, 3)
        parts = parts_cpu_between(raw.samples, start, stop)
        if parts:
            repeat.parts_cpu_ms_per_1k_msgs = {
                name: round(seconds * 1e6 / delivered, 3) for name, seconds in parts.items()
            }
        repeat.bytes_per_message = bytes_between(
            raw.traffic, start, stop, delivered, acct.publisher["sent"]
        )
    repeat.load_generator = generator_of(raw, [(start, stop)], delivered)
    return {"latency": acct.latency_us, "message_of": acct.message_of}


def generator_of(raw: RawRun, spans: list[tuple[float, float]], delivered: int) -> LoadGenerator:
    """The load generator over the measured spans: its busiest process, its CPU per delivery
    against the server's, and how long data waited for it."""
    assert raw.scenario is not None
    reported = raw.scenario.get("load_generator", {})
    receipt = raw.scenario.get("receipt", {})
    busiest = busiest_generator(raw.samples, spans)
    if busiest is None and reported.get("cpu_percent_max"):
        busiest = max(reported["cpu_percent_max"])  # workers elsewhere: their own figure
    generator = bench = server = 0.0
    measured = True
    for start, end in spans:
        g = cpu_between(raw.samples, "loadgen_cpu_s", start, end)
        b = cpu_between(raw.samples, "bench_cpu_s", start, end)
        s = cpu_between(raw.samples, "server_cpu_s", start, end)
        if g is None or s is None:
            measured = False
            break
        generator += g
        server += s
        bench += b or 0.0
    seconds = sum(end - start for start, end in spans)
    delay = Histogram.decode(receipt["read_delay"]) if receipt.get("read_delay") else Histogram()
    delay_ms = delay.summary_ms()
    remote = int((raw.run.get("locust") or {}).get("remote_workers") or 0)
    if remote:  # not sampled here: the workers' own figures, every worker's
        busiest = max([busiest or 0.0, *(reported.get("cpu_percent_max") or [])])
        own = reported.get("cpu_seconds") or []
        measured = measured and bool(own) and None not in own
        generator = float(sum(v for v in own if v is not None))
    return LoadGenerator(
        remote_workers=remote,
        processes=int(reported.get("processes", 1)),
        cpu_percent_max=busiest,
        bench_cpu_percent=round(bench / seconds * 100, 1) if measured and seconds else None,
        cpu_us_per_delivery=round(generator * 1e6 / delivered, 2)
        if measured and delivered
        else None,
        server_cpu_us_per_delivery=round(server * 1e6 / delivered, 2)
        if measured and delivered
        else None,
        saturated=None if busiest is None else busiest > GENERATOR_SATURATED,
        read_delay_ms={k: delay_ms[k] for k in ("p50", "p99", "max")},
        receipt_clock=receipt.get("clock", "process"),
    )


def _saturate(raw: RawRun, repeat: Repeat) -> dict[str, Any]:
    """Each step's own ledger and latency; the result's figures are the highest step that held."""
    assert raw.scenario is not None and raw.messages is not None
    bound = raw.scenario.get("latency_bound_ms", 100.0)
    knee_cpu = raw.scenario.get("options", {}).get("knee_cpu", 90.0)
    best: tuple[Step, Accounting, dict[str, Any]] | None = None
    holding = True
    for mark in raw.scenario.get("steps", []):
        acct = account(raw.messages, int(mark["start"] * 1e6), int(mark["end"] * 1e6))
        seconds = mark["end"] - mark["start"]
        latency = latency_of(acct.latency_us)
        server = cpu_between(raw.samples, "server_cpu_s", mark["start"], mark["end"])
        delivered = acct.deliveries["delivered"]
        server_percent = None if server is None else round(server / seconds * 100, 1)
        step = Step(
            step=mark["step"],
            rate_per_user=mark["rate_per_user"],
            sent_per_s=round(acct.publisher["sent"] / seconds, 1),
            deliveries_per_s=round(delivered / seconds, 1),
            latency_ms=latency,
            lag_p99_ms=lag_of(acct.lag_us)["p99"],
            deliveries=deliveries_of(acct),
            server_cpu_percent=server_percent,
            server_cpu_ms_per_1k_msgs=round(server * 1e6 / delivered, 3)
            if server and delivered
            else None,
            generator_cpu_percent=busiest_generator(raw.samples, [(mark["start"], mark["end"])]),
        )
        step.why = step_knee(step, bound, knee_cpu, acct)
        step.held = step.why is None
        repeat.steps.append(step)
        if step.held and holding:
            best = (step, acct, mark)
        else:
            holding = False
    spans = [(m["start"], m["end"]) for m in raw.scenario.get("steps", [])]
    if best is None:
        repeat.load_generator = generator_of(raw, spans, 0)
        return {}
    step, acct, mark = best
    repeat.latency_ms = step.latency_ms
    repeat.send_latency_ms = latency_of(acct.send_latency_us)
    repeat.publisher = publisher_of(acct, round(1000 / step.rate_per_user, 3))
    repeat.deliveries = step.deliveries
    repeat.throughput_msgs_per_s = step.deliveries_per_s
    repeat.server_cpu_ms_per_1k_msgs = step.server_cpu_ms_per_1k_msgs
    repeat.highest_rate_held = {
        "rate_per_user": step.rate_per_user,
        "deliveries_per_s": step.deliveries_per_s,
        "latency_bound_ms": bound,
        "step": step.step,
    }
    repeat.bytes_per_message = bytes_between(
        raw.traffic,
        mark["start"],
        mark["end"],
        acct.deliveries["delivered"],
        acct.publisher["sent"],
    )
    held = [(m["start"], m["end"]) for m in raw.scenario["steps"] if m["step"] <= step.step]
    delivered = sum(s.deliveries.delivered for s in repeat.steps if s.step <= step.step)
    repeat.load_generator = generator_of(raw, held, delivered)
    return {"latency": acct.latency_us, "message_of": acct.message_of}


def step_knee(step: Step, bound: float, knee_cpu: float, acct: Accounting) -> str | None:
    """Why a saturate step did not hold (it is the knee, or past it), or None when it held."""
    if not step.latency_ms.count:
        return "no delivery was timed"
    if step.latency_ms.p99 is not None and step.latency_ms.p99 > bound:
        return f"p99 {step.latency_ms.p99:,.1f} ms over the {bound:g} ms bound"
    if acct.deliveries["lost"]:
        return f"{acct.deliveries['lost']} deliveries lost"
    if step.server_cpu_percent is not None and step.server_cpu_percent >= knee_cpu:
        return f"the server at {step.server_cpu_percent:.0f} % CPU"
    limit = max(LAG_FLOOR_MS, 1000 / step.rate_per_user)
    if step.lag_p99_ms is not None and step.lag_p99_ms > limit:
        # Latency is timed from the schedule, so a late publisher's lag is in the step's p99:
        # the generator, not the transport, would be part of the figure.
        return f"the publisher lagged: lag p99 {step.lag_p99_ms:,.1f} ms over {limit:,.1f} ms"
    return None


def _idle(raw: RawRun, repeat: Repeat) -> None:
    """Memory against clients over the plateaus; every tick delivered to every idle client."""
    assert raw.scenario is not None and raw.messages is not None
    steps = raw.scenario.get("steps", [])
    rooms = raw.messages.rooms
    points = []
    total = Deliveries()
    reasons: Counter[str] = Counter()
    for mark in steps:
        tick = int(mark["tick"]["at"] * 1e6)
        members = [int(mark["receivers"].get(room, 0)) for room in rooms]
        acct = account(raw.messages, tick, tick + 1, members)
        for key in ("expected", "delivered", "lost", "duplicated", "extra"):
            setattr(total, key, getattr(total, key) + acct.deliveries[key])
        reasons.update(acct.deliveries["extra_reasons"])
        point = plateau(raw.samples, mark)
        if point is not None:
            points.append(point)
    total.duplicated = raw.messages.duplicated
    total.extra_reasons = dict(reasons)
    repeat.deliveries = total
    repeat.memory_per_connection = fit_memory(points, repeat.warnings)
    spans = [(m["start"], m["end"]) for m in steps]
    repeat.load_generator = generator_of(raw, spans, total.delivered)


def plateau(samples: list[Sample], mark: dict[str, Any]) -> dict[str, Any] | None:
    """Means over a plateau's second half (the first lets the kernel and allocator settle)."""
    middle = (mark["start"] + mark["end"]) / 2
    inside = [
        s
        for s in samples
        if middle <= s.t <= mark["end"] and s.server_connections is not None and s.server_rss
    ]
    if not inside:
        return None

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    seconds = mark["end"] - mark["start"]
    cpu = cpu_between(samples, "server_cpu_s", mark["start"], mark["end"])
    return {
        "clients": mark["connected"],
        "connections": mean([float(s.server_connections or 0) for s in inside]),
        "cpu_percent": round(cpu / seconds * 100, 2) if cpu is not None and seconds else None,
        "rss_bytes": mean([float(s.server_rss or 0) for s in inside]),
        "uss_bytes": mean(
            [float(s.server_uss) for s in inside if s.server_uss is not None] or [0.0]
        ),
        "kernel_bytes": mean(
            [float((s.kernel_tcp_mem_bytes or 0) + (s.kernel_slab_bytes or 0)) for s in inside]
        ),
        **({"parts_rss_bytes": parts} if (parts := _parts_mean(inside)) else {}),
    }


def _parts_mean(samples: list[Sample]) -> dict[str, float]:
    """Each part's mean RSS (a several-process backend: instances, Redis, the balancer)."""
    seen: dict[str, list[int]] = {}
    for sample in samples:
        for name, rss in (sample.parts_rss or {}).items():
            seen.setdefault(name, []).append(rss)
    return {name: sum(values) / len(values) for name, values in seen.items()}


def fit_memory(points: list[dict[str, Any]], warnings: list[str]) -> Memory:
    """Slopes against clients: what one more client costs the server (and the kernel)."""
    memory = Memory(points=points, fitted_against="clients")
    xs = [float(p["clients"]) for p in points]
    if len(set(xs)) < 2:
        warnings.append("idle: fewer than two plateaus with distinct client counts; no fit")
        return memory
    rss = stats.fit_line(xs, [p["rss_bytes"] for p in points])
    memory.rss_bytes = round(rss["slope"])
    memory.base_rss_bytes = round(rss["intercept"])
    memory.r2 = round(rss["r2"], 4)
    if "slope_low" in rss:
        memory.rss_ci95 = [round(rss["slope_low"]), round(rss["slope_high"])]
    memory.uss_bytes = round(stats.fit_line(xs, [p["uss_bytes"] for p in points])["slope"])
    # Both ends of every loopback connection live in this one kernel: half is the server's.
    memory.kernel_bytes = round(
        stats.fit_line(xs, [p["kernel_bytes"] for p in points])["slope"] / 2
    )
    cpu = [
        (x, p["cpu_percent"])
        for x, p in zip(xs, points, strict=True)
        if p["cpu_percent"] is not None
    ]
    busy = [(x, y) for x, y in cpu if y >= IDLE_CPU_SATURATED]
    if busy:
        warnings.append(
            f"idle: the server's CPU reached {max(y for _, y in busy):.0f} % at"
            f" {min(x for x, _ in busy):,.0f} clients; the idle CPU figure uses only the plateaus"
            f" below {IDLE_CPU_SATURATED:.0f} %"
        )
        cpu = [(x, y) for x, y in cpu if y < IDLE_CPU_SATURATED]
    if len({x for x, _ in cpu}) >= 2:
        slope = stats.fit_line([x for x, _ in cpu], [y for _, y in cpu])["slope"]
        memory.idle_cpu_percent_per_1k_connections = round(max(slope, 0.0) * 1000, 3)
    return memory


def _faults(raw: RawRun, repeat: Repeat) -> None:
    """Reconnects after the kill, deliveries checked one by one, slow consumers, RSS peak."""
    assert raw.scenario is not None
    scenario = raw.scenario
    ledger = scenario.get("faults") or {}
    injected = raw.run.get("injected") or {}
    restart = injected.get("restart")
    lost_signalled = ledger.get("lost_signalled", 0)
    lost_silently = ledger.get("lost_silently", 0)
    repeat.latency_ms = latency_from(Histogram.decode(scenario.get("latency", "")))
    repeat.deliveries = Deliveries(
        expected=ledger.get("expected", 0),
        delivered=ledger.get("delivered", 0),
        lost=lost_signalled + lost_silently,
        duplicated=ledger.get("duplicated", 0),
    )
    reconnects = ledger.get("reconnect_ms", [])
    receivers = ledger.get("receivers", 0)
    rss = [s.server_rss for s in raw.samples if s.server_rss is not None]

    def server_count(stats_: dict[str, Any] | None) -> int:
        return int((stats_ or {}).get("slow_consumer_disconnects", 0))

    failover = bool(restart and restart.get("failover"))
    # After a failover only the killed instance's clients move, and everyone must be connected
    # at the end; after a restart every client comes back.
    slow_back = ledger.get("slow_reader_back_ms")  # apart: the server cuts it off by design
    came = len(reconnects) + (slow_back is not None)
    back = ledger.get("connected_at_end", 0) if failover else came
    faults: dict[str, Any] = {
        "killed": (restart or {}).get("failover", "the server") if restart else None,
        "outage_s": round(restart["listening_at"] - restart["killed_at"], 3) if restart else None,
        "clients": receivers,
        "moved": len(reconnects) if failover else None,  # the slow reader apart
        "on_killed_instance": _held(injected.get("stats_before_kill")) if failover else None,
        "reconnect_ms": _nearest_ranks(reconnects),
        "all_back": bool(restart) and 0 < receivers == back,
        "lost_with_resume": lost_signalled + lost_silently,
        "lost_signalled": lost_signalled,
        "lost_silently": lost_silently,
        "lost_silently_stale_cursor": ledger.get("lost_silently_stale_cursor", 0),
        "lost_without_resume": ledger.get("delivered_by_resume", 0)
        + lost_signalled
        + lost_silently,
        "delivered_by_resume": ledger.get("delivered_by_resume", 0),
        "gaps_signalled": ledger.get("gaps", 0),
        "gaps_after_kill": ledger.get("gaps_after_kill"),
        "slow_consumer_disconnects": server_count(injected.get("stats_before_kill"))
        + server_count(injected.get("stats_at_end")),
        "slow_consumer_errors_seen": ledger.get("slow_consumer_errors", 0),
        "slow_reader_reconnects": ledger.get("slow_reader_reconnects"),
        "slow_reader_back_ms": slow_back,
        "slowest_reconnects": ledger.get("slowest_reconnects") or [],
        "server_rss_peak_bytes": max(rss) if rss else None,
        "survivors": _survivors(ledger.get("survivors")),
    }
    if raw.run["transport"] in ("poll", "longpoll"):
        faults["slow_consumer_disconnects"] = None  # no live queue: a poll takes what it asks
    repeat.faults = faults
    warnings = repeat.warnings
    if injected.get("error"):
        warnings.append(injected["error"])
    straggler = _straggler(faults)
    if straggler:
        warnings.append(straggler)
    if not restart:
        warnings.append("the server was not killed: no reconnect was measured")
    elif not faults["all_back"]:
        warnings.append(f"only {back} of {receivers} clients came back after the kill")
    if lost_silently:
        warnings.append(f"{lost_silently} deliveries were lost without a gap (silent loss)")
    window = scenario["window"]
    span = (window["start"], window["end"])
    if restart and reconnects:
        # What the generator's own delays would distort here are the reconnect times: judge
        # it from the kill until the last client was back (the slow reader's catch-up on its
        # 19 MB flood, earlier in the window, is part of the scenario, not of the outage).
        span = (restart["killed_at"], restart["listening_at"] + max(reconnects) / 1000 + 0.5)
    repeat.load_generator = generator_of(raw, [span], 0)


def _fallback(raw: RawRun, repeat: Repeat) -> None:
    """What the fallback client's negotiations cost, and the chat on what they settled on."""
    assert raw.scenario is not None
    scenario = raw.scenario
    ledger = scenario.get("faults") or {}
    found = scenario.get("fallback") or {}
    repeat.latency_ms = latency_from(Histogram.decode(scenario.get("latency", "")))
    repeat.deliveries = Deliveries(
        expected=ledger.get("expected", 0),
        delivered=ledger.get("delivered", 0),
        lost=ledger.get("lost_signalled", 0) + ledger.get("lost_silently", 0),
        duplicated=ledger.get("duplicated", 0),
    )
    clients = found.get("clients", 0)
    repeat.fallback = {
        "order": found.get("order"),
        "step_timeout_s": found.get("step_timeout"),
        "clients": clients,
        "settled": found.get("settled", {}),
        "attempts": found.get("attempts", {}),
        "reasons": found.get("reasons", {}),
        "lost_ms": _nearest_ranks(found.get("lost_ms", [])),
        "first_message_ms": _nearest_ranks(found.get("first_message_ms", [])),
    }
    if unsettled := found.get("settled", {}).get("none"):
        repeat.warnings.append(f"{unsettled} of {clients} clients found no transport that opened")
    window = scenario["window"]
    repeat.load_generator = generator_of(raw, [(window["start"], window["end"])], 0)


def _straggler(faults: dict[str, Any]) -> str | None:
    """The slowest client back, when it took over three times the reconnect p99: what its
    subscription went through (the scenario records it), so the outlier can be traced."""
    slowest = faults.get("slowest_reconnects") or []
    p99 = (faults.get("reconnect_ms") or {}).get("p99")
    if not slowest or not p99 or slowest[0]["reconnect_ms"] <= 3 * p99:
        return None
    first = slowest[0]
    return (
        f"a straggler: one client came back after {first['reconnect_ms']:,.0f} ms (reconnect p99"
        f" {p99:,.0f}), its subscription ended or failed to open {first['ends_and_failed_attempts']}"
        f" time(s), the last because: {first['last_failure']}"
    )


def _survivors(found: dict[str, Any] | None) -> dict[str, Any] | None:
    """The untouched clients' delivery latency before the kill and during the storm (ms)."""
    if not found:
        return None
    return {
        "receivers": found["receivers"],
        "storm_s": max((span for _, span in found["storms_s"]), default=0.0),
        "before_ms": Histogram.decode(found["before"]).summary_ms(),
        "during_ms": Histogram.decode(found["during"]).summary_ms(),
        "after_ms": Histogram.decode(found.get("after", "")).summary_ms(),
        "after_s": found.get("after_s"),
    }


def median_parts(each: list[dict[str, float] | None]) -> dict[str, float] | None:
    """Per part, the median over the repeats that measured it."""
    names = sorted({name for parts in each if parts for name in parts})
    if not names:
        return None
    return {name: stats.median([p[name] for p in each if p and name in p]) or 0.0 for name in names}


def _held(stats_: dict[str, Any] | None) -> int | None:
    """Streams, sockets and held polls an instance had (its ``/stats``), or None."""
    return int(stats_.get("subscriptions", 0)) if stats_ else None


def _nearest_ranks(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1], "count": len(ordered)}


def _process_warnings(raw: RawRun, repeat: Repeat) -> None:
    run = raw.run
    if run.get("timed_out"):
        repeat.warnings.append(
            "the run did not finish in time and was stopped; figures are partial"
        )
    status = run.get("server", {}).get("exit_status")
    if status not in (0, None):
        repeat.warnings.append(f"the server exited with status {status} (see server.log)")
    for error in run.get("sampler_errors") or []:
        repeat.warnings.append(f"a sample failed: {error}")
    if raw.scenario is None:
        return
    for code, count in sorted((raw.scenario.get("refusals") or {}).items()):
        repeat.warnings.append(f"{count} sends were answered '{code}'")
    for kind, count in sorted((raw.scenario.get("events") or {}).items()):
        if kind.startswith(
            ("error:", "refused:", "send_failed", "parse_error", "gave_up", "resume_failed")
        ):
            repeat.warnings.append(f"{count} times {kind} seen by the clients")
        elif kind == "reconnect":
            repeat.warnings.append(f"{count} subscriptions reconnected during the run")
    weak = too_few_samples(repeat.latency_ms.count)
    if weak and repeat.latency_ms.count:
        repeat.warnings.append(
            f"only {repeat.latency_ms.count} deliveries timed: too few for {', '.join(weak)}"
        )


# -- validity ------------------------------------------------------------------------------------


def judge(raw: RawRun, repeat: Repeat) -> None:
    """Mark the repeat invalid, with every reason, when its figures are not the transport's."""
    reasons = repeat.validity.reasons
    scenario = raw.run["scenario"]
    generator = repeat.load_generator
    if generator.saturated:
        reasons.append(
            f"load generator saturated: a Locust process at {generator.cpu_percent_max:.0f} % of"
            f" its core (limit {GENERATOR_SATURATED:.0f} %)"
        )
    assert raw.scenario is not None
    missing = raw.scenario.get("load_generator", {}).get("missing_processes", 0)
    if missing:
        reasons.append(f"{missing} load-generator processes sent no results")
    checks = raw.scenario.get("checks", {})
    if checks.get("mismatched"):
        reasons.append(
            f"the fast parse read {checks['mismatched']} of {checks['sampled']} checked messages"
            " differently from the validating decoder"
        )
    status = raw.run.get("server", {}).get("exit_status")
    if status not in (0, None):
        reasons.append(f"the server exited with status {status}")
    connect = raw.scenario.get("connect") or {}
    if connect and connect.get("receivers", 0) < connect.get("receivers_expected", 0):
        reasons.append(
            f"only {connect['receivers']} of {connect['receivers_expected']} receivers subscribed"
            f" ({connect.get('failed', 0)} gave up)"
        )
    if scenario in (*KILLING, "fallback"):
        if not repeat.deliveries.expected:
            reasons.append("no message was acknowledged: nothing was measured")
        if scenario == "fallback" and repeat.deliveries.lost:
            reasons.append(
                f"the ledger did not close: {repeat.deliveries.lost} of"
                f" {repeat.deliveries.expected} expected deliveries never arrived"
            )
        repeat.validity.valid = not reasons
        return
    settle = repeat.settle
    if settle and not settle.get("settled", True):
        reasons.append(
            f"the server did not settle after the joins within {settle.get('seconds')} s"
        )
    if scenario == "idle":
        _judge_idle(raw, repeat)
    else:
        _judge_timed(repeat, scenario)
    repeat.validity.valid = not reasons


def _judge_timed(repeat: Repeat, scenario: str) -> None:
    reasons = repeat.validity.reasons
    if scenario == "saturate":
        stopped = repeat.stopped_by or ""
        if not stopped.startswith(("latency_bound", "server_cpu")):
            reasons.append(
                f"the ramp ended before the transport's knee ({stopped or 'no reason recorded'}):"
                " the highest rate held is a lower bound"
            )
        if repeat.highest_rate_held is None:
            if stopped.startswith(("latency_bound", "server_cpu")):
                # A finding, not a failure: short polling at T = 1 s cannot meet a 100 ms p99.
                repeat.warnings.append(
                    "no step held the bound: the first rate tried already broke it"
                )
            else:
                reasons.append("no step held the bound with every message delivered")
            return
    if not repeat.latency_ms.count:
        reasons.append("no delivery was timed")
    publisher = repeat.publisher
    lag = publisher.lag_ms.get("p99")
    limit = max(LAG_FLOOR_MS, publisher.period_ms or 0.0)
    if lag is not None and lag > limit:
        reasons.append(f"the publisher lagged: lag p99 {lag:,.1f} ms over {limit:,.1f} ms")
    deliveries = repeat.deliveries
    if deliveries.lost:
        reasons.append(
            f"the ledger did not close: {deliveries.lost} of {deliveries.expected} expected"
            f" deliveries never arrived (drain {repeat.drain.get('seconds', '?')} s)"
        )
    if publisher.unsent:
        reasons.append(f"{publisher.unsent} scheduled sends were never issued")
    if publisher.unanswered:
        reasons.append(f"{publisher.unanswered} sends were never answered")


def _judge_idle(raw: RawRun, repeat: Repeat) -> None:
    reasons = repeat.validity.reasons
    stopped = repeat.stopped_by or ""
    if stopped.startswith("stalled"):
        reasons.append(f"the ramp {stopped}")
    memory = repeat.memory_per_connection
    if memory.r2 is None:
        reasons.append("no memory fit (fewer than two plateaus)")
    elif memory.r2 < MIN_R2:
        reasons.append(f"memory does not follow clients (r2 {memory.r2:.2f} < {MIN_R2})")
    if repeat.deliveries.lost:
        reasons.append(
            f"{repeat.deliveries.lost} of {repeat.deliveries.expected} plateau messages never"
            " reached an idle client"
        )
    assert raw.scenario is not None
    for mark in raw.scenario.get("steps", []):
        if not mark.get("settle", {}).get("settled", True):
            reasons.append(f"the server did not settle before plateau {mark['step']}")


# -- a whole run --------------------------------------------------------------------------------


def summarize_run(run_dir: Path, write: bool = True) -> Summary:
    """Every repeat of every scenario x backend in ``run_dir``, summarised; writes
    ``summary.json`` unless ``write`` is False."""
    metadata = json.loads((run_dir / "metadata.json").read_text())
    groups: dict[tuple[str, ...], list[tuple[dict[str, Any], Repeat, dict[str, Any]]]] = {}
    for directory in sorted(p.parent for p in run_dir.glob("*/run.json")):
        run, repeat, arrays = summarize_repeat(directory)
        deployed = run.get("deployment") or {}
        network = (deployed.get("network") or {}).get("name", "")
        key = (run["scenario"], run["label"], deployed.get("variant", ""), network)
        groups.setdefault(key, []).append((run, repeat, arrays))
    results = [aggregate(items) for items in groups.values()]
    labels = [b.label for b in BACKENDS]
    network_order = [n["name"] for n in metadata.get("plan", {}).get("networks") or []]
    results.sort(
        key=lambda r: (
            SCENARIO_ORDER.index(r.scenario) if r.scenario in SCENARIO_ORDER else 99,
            labels.index(r.label) if r.label in labels else 99,
            VARIANTS.index(r.variant) if r.variant in VARIANTS else 99,
            network_order.index(r.network) if r.network in network_order else 99,
        )
    )
    summary = Summary(metadata=metadata, results=results)
    if write:
        write_summary(run_dir / "summary.json", summary)
    return summary


def aggregate(items: list[tuple[dict[str, Any], Repeat, dict[str, Any]]]) -> Result:
    """One result from a scenario x backend's repeats (see :class:`wirewise.results.Result`)."""
    items = sorted(items, key=lambda item: item[1].repeat)
    run = items[0][0]
    repeats = [repeat for _, repeat, _ in items]
    which: Backend = backend(run["label"])
    result = Result(
        scenario=run["scenario"],
        transport=which.transport,
        server=which.server,
        label=which.label,
        parameters=run.get("parameters", {}),
        repeats=repeats,
        deployment=run.get("deployment"),
    )
    result.latency_ms = median_latency([r.latency_ms for r in repeats])
    result.send_latency_ms = median_latency([r.send_latency_ms for r in repeats])
    if result.scenario not in KILLING:
        arrays = [
            (a["latency"], a["message_of"]) for _, _, a in items if a.get("latency") is not None
        ]
        if len(arrays) == len(items) and arrays:
            intervals = stats.bootstrap(arrays, (50.0, 99.0))
            result.latency_ms.ci95 = {
                name: [round(lo / 1000, 3), round(hi / 1000, 3)]
                for name, p in (("p50", 50.0), ("p99", 99.0))
                if (found := intervals.get(p)) is not None
                for lo, hi in [found]
            }
    result.publisher = sum_publishers([r.publisher for r in repeats])
    result.deliveries = sum_deliveries([r.deliveries for r in repeats])
    result.throughput_msgs_per_s = stats.median([r.throughput_msgs_per_s for r in repeats])
    cpu = [r.server_cpu_ms_per_1k_msgs for r in repeats if r.server_cpu_ms_per_1k_msgs is not None]
    result.server_cpu_ms_per_1k_msgs = stats.median(cpu)
    result.server_cpu_ms_per_1k_msgs_range = [min(cpu), max(cpu)] if cpu else None
    result.parts_cpu_ms_per_1k_msgs = median_parts([r.parts_cpu_ms_per_1k_msgs for r in repeats])
    result.bytes_per_message = median_bytes([r.bytes_per_message for r in repeats])
    result.memory_per_connection = median_memory([r.memory_per_connection for r in repeats])
    result.load_generator = worst_generator([r.load_generator for r in repeats])
    middle = median_repeat(repeats)
    result.steps = middle.steps
    result.stopped_by = middle.stopped_by
    held = [r.highest_rate_held["deliveries_per_s"] for r in repeats if r.highest_rate_held]
    if middle.highest_rate_held is not None:
        result.highest_rate_held = {
            **middle.highest_rate_held,
            "deliveries_per_s": stats.median(held),
            "range": [min(held), max(held)],
            "repeats_held": len(held),
        }
    result.faults = repeats[0].faults
    result.fallback = repeats[0].fallback
    result.path = repeats[0].path
    several = len(repeats) > 1
    for r in repeats:
        prefix = f"repeat {r.repeat}: " if several else ""
        result.validity.reasons += [prefix + why for why in r.validity.reasons]
        result.warnings += [prefix + w for w in r.warnings]
    result.validity.valid = all(r.validity.valid for r in repeats)
    return result


def median_repeat(repeats: list[Repeat]) -> Repeat:
    """The repeat whose highest rate held (or p99) is the median one."""

    def key(r: Repeat) -> float:
        if r.highest_rate_held:
            return float(r.highest_rate_held["deliveries_per_s"] or 0)
        return float(r.latency_ms.p99 or 0)

    ordered = sorted(repeats, key=key)
    return ordered[(len(ordered) - 1) // 2]


def median_latency(latencies: list[Latency]) -> Latency:
    present = [lat for lat in latencies if lat.count]
    if not present:
        return Latency()
    out = Latency(count=sum(lat.count for lat in present))
    for name in (*PERCENTILES, "mean"):
        setattr(out, name, stats.median([getattr(lat, name) for lat in present]))
    out.max = max(lat.max for lat in present if lat.max is not None)
    return out


def sum_publishers(publishers: list[Publisher]) -> Publisher:
    out = Publisher(period_ms=publishers[0].period_ms if publishers else None)
    for key in ("scheduled", "sent", "unsent", "answered", "refused", "unanswered"):
        setattr(out, key, sum(getattr(p, key) for p in publishers))
    out.lag_ms = {
        "p50": stats.median([p.lag_ms.get("p50") for p in publishers]),
        "p99": _largest(p.lag_ms.get("p99") for p in publishers),
        "max": _largest(p.lag_ms.get("max") for p in publishers),
    }
    return out


def sum_deliveries(all_: list[Deliveries]) -> Deliveries:
    out = Deliveries()
    reasons: Counter[str] = Counter()
    for d in all_:
        for key in ("expected", "delivered", "lost", "duplicated", "extra"):
            setattr(out, key, getattr(out, key) + getattr(d, key))
        reasons.update(d.extra_reasons)
    out.extra_reasons = dict(reasons)
    return out


def median_bytes(all_: list[BytesPerMessage]) -> BytesPerMessage:
    out = BytesPerMessage()
    for key in ("down", "up", "total"):
        setattr(out, key, stats.median([getattr(b, key) for b in all_]))
    out.wire = (
        {key: stats.median([b.wire.get(key) for b in all_]) for key in ("down", "up", "total")}
        if any(b.wire for b in all_)
        else {}
    )
    out.header_bytes_per_segment = next(
        (b.header_bytes_per_segment for b in all_ if b.header_bytes_per_segment), None
    )
    return out


def median_memory(all_: list[Memory]) -> Memory:
    fitted = [m for m in all_ if m.rss_bytes is not None]
    if not fitted:
        return all_[0] if all_ else Memory()
    middle = sorted(fitted, key=lambda m: m.rss_bytes or 0)[(len(fitted) - 1) // 2]
    out = Memory(
        rss_bytes=stats.median([m.rss_bytes for m in fitted]),
        uss_bytes=stats.median([m.uss_bytes for m in fitted]),
        kernel_bytes=stats.median([m.kernel_bytes for m in fitted]),
        r2=min(m.r2 for m in fitted if m.r2 is not None),
        base_rss_bytes=stats.median([m.base_rss_bytes for m in fitted]),
        fitted_against=middle.fitted_against,
        idle_cpu_percent_per_1k_connections=stats.median(
            [m.idle_cpu_percent_per_1k_connections for m in fitted]
        ),
        points=middle.points,
    )
    lows = [m.rss_ci95[0] for m in fitted if m.rss_ci95]
    highs = [m.rss_ci95[1] for m in fitted if m.rss_ci95]
    if lows and highs:
        out.rss_ci95 = [min(lows), max(highs)]
    return out


def worst_generator(all_: list[LoadGenerator]) -> LoadGenerator:
    if not all_:
        return LoadGenerator()
    busiest = [g.cpu_percent_max for g in all_ if g.cpu_percent_max is not None]
    return LoadGenerator(
        processes=max(g.processes for g in all_),
        cpu_percent_max=max(busiest) if busiest else None,
        bench_cpu_percent=max(
            (g.bench_cpu_percent for g in all_ if g.bench_cpu_percent is not None), default=None
        ),
        cpu_us_per_delivery=stats.median([g.cpu_us_per_delivery for g in all_]),
        server_cpu_us_per_delivery=stats.median([g.server_cpu_us_per_delivery for g in all_]),
        saturated=any(g.saturated for g in all_)
        if any(g.saturated is not None for g in all_)
        else None,
        read_delay_ms={
            key: largest
            for key in ("p50", "p99", "max")
            if (largest := _largest(g.read_delay_ms.get(key) for g in all_)) is not None
        },
        receipt_clock=all_[0].receipt_clock,
        remote_workers=max(g.remote_workers for g in all_),
    )


def _largest(values: Iterable[float | None]) -> float | None:
    """The largest of the values measured (None when none was)."""
    return max((v for v in values if v is not None), default=None)
