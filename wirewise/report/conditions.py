"""The run's conditions and each scenario's workload in words, for captions, tables and the lede."""

from __future__ import annotations

import datetime as dt
from typing import Any

from wirewise.registry import KILLING
from wirewise.report.select import of, repeat_count
from wirewise.report.text import DASH, X, g
from wirewise.results import Result, Summary


def short_commit(commit: str) -> str:
    if not commit or commit == "unknown":
        return "unknown"
    dirty = commit.endswith("+dirty")
    return commit[:7] + ("+dirty" if dirty else "")


def started(metadata: dict[str, Any]) -> str:
    text = str(metadata.get("started_at", ""))
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return text or "unknown date"
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def cores_text(metadata: dict[str, Any]) -> str:
    used = metadata.get("cores_used") or {}
    text = f"{metadata.get('cores', '?')} cores"
    if used.get("server") is not None:
        text += (
            f" (server on core {','.join(map(str, used['server']))},"
            f" Locust on {','.join(map(str, used.get('load_generator', [])))})"
        )
    return text


def machine(metadata: dict[str, Any]) -> str:
    return (
        f"{metadata.get('cpu_model', 'unknown CPU')}, {cores_text(metadata)}; "
        f"commit {short_commit(str(metadata.get('git_commit', '')))}; {started(metadata)}"
    )


def shared_cores(metadata: dict[str, Any]) -> list[int]:
    used = metadata.get("cores_used") or {}
    return sorted(set(used.get("server") or []) & set(used.get("load_generator") or []))


def sampling_text(metadata: dict[str, Any]) -> str:
    """How CPU was measured, from metadata ``sampling``: the resolution of every CPU figure."""
    sampling = metadata.get("sampling") or {}
    if not sampling.get("cpu"):
        return "how CPU was sampled is not recorded in this run's metadata"
    every = sampling.get("interval_s")
    return f"CPU from {sampling['cpu']}" + (f", sampled every {g(every)} s" if every else "")


def repeats_text(summary: Summary) -> str:
    counts = sorted({repeat_count(r) for r in summary.results})
    if not counts:
        return "no repeats"
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}{DASH}{counts[-1]}"
    return f"{text} repeat{'s' if counts[-1] > 1 else ''} a result"


def workload(results: list[Result]) -> str:
    """The scenario's parameters in words (from the first result; they are per scenario)."""
    params = next((r.parameters for r in results if r.parameters), {})
    if not params:
        return "parameters not recorded"
    options = params.get("options") or {}
    scenario = results[0].scenario
    payload = params.get("payload_bytes")
    text_size = f"{g(payload)}-char text"  # each scenario records the payload it really sent
    room = params.get("room_size")
    where = f" in rooms of {g(room)}" if room else ""
    rate = params.get("rate_per_user")
    if scenario == "idle":
        # Short polling may ramp to fewer clients than the rest.
        sizes: dict[Any, set[str]] = {}
        for r in results:
            size = (r.parameters.get("options") or {}).get("step_users")
            if size is not None:
                sizes.setdefault(size, set()).add(r.label)
        if len(sizes) > 1:
            per = ", ".join(
                f"{g(size)} ({', '.join(sorted(labels))})" for size, labels in sorted(sizes.items())
            )
        else:
            per = g(options.get("step_users"))
        text = (
            f"{per} clients a step {X} {g(options.get('steps'))} steps of"
            f" {g(options.get('step_seconds'))} s"
        )
    elif scenario == "saturate":
        text = (
            f"{g(params.get('users'))} users{where}, rate from {g(rate)} msg/s per user,"
            f" {X}{g(options.get('rate_factor'))} a step, up to {g(options.get('steps'))} steps of"
            f" {g(options.get('step_seconds'))} s, bound p99 ≤"
            f" {g(options.get('latency_bound_ms'))} ms, {text_size}"
        )
    elif scenario == "broadcast":
        text = (
            f"{g(params.get('users'))} users{where}: one publisher sending {g(rate)} msg/s to"
            f" each room, the rest listening, {text_size}, {g(params.get('duration_s'))} s measured"
        )
    else:
        text = (
            f"{g(params.get('users'))} users{where}, {g(rate)} msg/s each, {text_size},"
            f" {g(params.get('duration_s'))} s measured"
        )
        if scenario in KILLING and options.get("kill_at") is not None:
            killed = "one of three instances" if scenario == "failover" else "the server"
            text += f", {killed} killed {g(options['kill_at'] * 100)} % into the window"
    intervals = sorted(
        {
            float(interval)
            for r in results
            if r.transport == "poll" and (interval := r.parameters.get("poll_interval_s"))
        }
    )
    if intervals:
        text += f"; poll every {', '.join(f'{t:g}' for t in intervals)} s"
    return text


def samples_text(results: list[Result], what: str = "deliveries timed") -> str:
    counts = {r.label: r.latency_ms.count for r in results}
    if len(set(counts.values())) == 1:
        (count,) = set(counts.values())
        return f"n = {count:,} {what} per transport"
    return f"n ({what}): " + ", ".join(f"{name} {count:,}" for name, count in counts.items())


def counted_deliveries(result: Result) -> float | None:
    """The deliveries a result's CPU and bytes figures are divided by."""
    if result.scenario == "saturate":
        held = result.highest_rate_held or {}
        seconds = (result.parameters.get("options") or {}).get("step_seconds")
        return held["deliveries_per_s"] * seconds if held and seconds else None
    return result.deliveries.delivered or None


def deliveries_text(summary: Summary, scenarios: list[str]) -> str:
    """Sample sizes of the per-delivery figures: deliveries each result divided by, per scenario."""
    parts = []
    for scenario in scenarios:
        counts = sorted(
            {round(n) for r in of(summary, scenario) if (n := counted_deliveries(r)) is not None}
        )
        if counts:
            text = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,}"
            parts.append(f"{scenario} {text}")
    return f"n = deliveries a result: {', '.join(parts)}" if parts else "n not recorded"
