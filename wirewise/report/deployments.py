"""Deployments compared in one run: the plan's own (several instances behind a balancer)
beside one process with the in-memory broker (``bench --baseline``) and beside the balancer made
sticky (``bench --sticky both``). The runs interleave, so the difference is the deployment's,
not the machine's minute: the extra hop, measured."""

from __future__ import annotations

from typing import Any

from wirewise.report.blocks import Block, Heading, Para, Table
from wirewise.report.text import ci, digits_for, interval_text, num
from wirewise.results import Result

__all__ = ["deployment_blocks", "deployment_text", "hop"]


def deployment_text(deployment: dict[str, Any] | None) -> str:
    """'3 instances, haproxy, Redis, sticky' or '1 process, in-memory broker'."""
    if not deployment or (deployment.get("instances") or 1) < 2:
        proxy = (deployment or {}).get("proxy")
        return "1 process, in-memory broker" + (f", behind nginx ({proxy})" if proxy else "")
    text = f"{deployment['instances']} instances, {deployment.get('balancer')}, Redis"
    return text + (", sticky" if deployment.get("sticky") else "")


def all_parts_cpu(result: Result) -> float | None:
    """CPU per 1,000 deliveries of every process that served it (instances, Redis, balancer)."""
    if result.parts_cpu_ms_per_1k_msgs:
        return sum(result.parts_cpu_ms_per_1k_msgs.values())
    return result.server_cpu_ms_per_1k_msgs


def _latency(result: Result, key: str) -> str:
    value = getattr(result.latency_ms, key)
    found = ci(result.latency_ms, key)
    return num(value) + (f" {interval_text(*found, digits_for(value))}" if found else "")


def hop(own: Result, other: Result, key: str) -> tuple[float, bool] | None:
    """``own`` minus ``other`` at percentile ``key`` (ms), and whether the 95 % intervals are
    apart (overlapping intervals: not significant)."""
    a, b = getattr(own.latency_ms, key), getattr(other.latency_ms, key)
    if a is None or b is None:
        return None
    ca, cb = ci(own.latency_ms, key), ci(other.latency_ms, key)
    apart = bool(ca and cb and (ca[0] > cb[1] or cb[0] > ca[1]))
    return a - b, apart


def _difference(own: Result, other: Result, key: str) -> str:
    found = hop(own, other, key)
    if found is None:
        return "-"
    delta, apart = found
    return f"{delta:+,.2f}" + ("" if apart else " (not significant)")


def deployment_blocks(own: list[Result], compared: list[Result]) -> list[Block]:
    """A table per scenario x backend that ran on more than one deployment."""
    if not compared:
        return []
    rows: list[list[str]] = []
    invalid: set[int] = set()
    for result in own:
        others = [r for r in compared if (r.scenario, r.label) == (result.scenario, result.label)]
        for r in [result, *others]:
            if not r.valid:
                invalid.add(len(rows))
            cpu = all_parts_cpu(r)
            rows.append(
                [
                    f"{r.scenario}/{r.label}",
                    deployment_text(r.deployment),
                    _latency(r, "p50"),
                    _latency(r, "p99"),
                    "-" if r is result else _difference(result, r, "p50"),
                    "-" if r is result else _difference(result, r, "p99"),
                    num(cpu, 1) if cpu is not None else "-",
                    "valid" if r.valid else "invalid",
                ]
            )
    return [
        Heading(3, "Deployments compared in this run", "deployments"),
        Para(
            "Each backend ran on each deployment in turn, repeat after repeat, so a slow minute"
            " of the machine lands on both. The difference is the first row's figure less the"
            " row's: through the balancer and Redis against one process, round robin against"
            " sticky sessions, or behind nginx against the server reached directly. Overlapping"
            " 95 % intervals are marked not significant."
        ),
        Table(
            [
                "result",
                "deployment",
                "p50 ms",
                "p99 ms",
                "p50 difference ms",
                "p99 difference ms",
                "CPU ms per 1k (all processes)",
                "validity",
            ],
            rows,
            align="llrrrrrl",
            note="CPU: every process that served the run (instances, Redis and the balancer, or"
            " the one server) per 1,000 deliveries, the repeats' median.",
            invalid_rows=invalid,
        ),
    ]
