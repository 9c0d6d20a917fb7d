"""The scale-out section: idle connections held by several processes, what each part costs,
and ``decide``'s estimate for the same workload (from a single-process reference run) beside
what was measured."""

from __future__ import annotations

from typing import Any

from wirewise.decide import Workload, decide
from wirewise.report.blocks import Block, Heading, Para, Table
from wirewise.report.text import kib, num
from wirewise.results import Result, Summary

MiB = 1024 * 1024
OFF_BY = 0.20
"""An estimate further than this from the measurement calls for a model correction."""


def scaled(summary: Summary) -> list[Result]:
    """Idle results whose plateaus recorded several parts (instances, Redis, a balancer)."""
    return [
        r
        for r in summary.results
        if r.scenario == "idle"
        and any("parts_rss_bytes" in p for p in r.memory_per_connection.points)
    ]


def scaleout_blocks(summary: Summary, reference: Summary | None, source: str) -> list[Block]:
    results = scaled(summary)
    costed = [r for r in summary.results if r.parts_cpu_ms_per_1k_msgs]
    if not results and not costed:
        return []
    plan = summary.metadata.get("plan") or {}
    blocks: list[Block] = [
        Heading(2, "Scale-out (several processes)", "scale-out"),
        Para(
            f"{plan.get('instances', '?')} server processes behind"
            f" {plan.get('balancer') or 'a balancer'}, sharing rooms through Redis, every part"
            " on the server's core; the load generator's connections spread over source"
            " addresses in 127.0.0.0/8."
        ),
    ]
    if costed:
        blocks.append(parts_cpu_table(costed))
    if results:
        blocks.append(parts_table(results))
        if reference is not None:
            blocks.append(estimate_table(results, reference, source))
    return blocks


def parts_cpu_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        parts = r.parts_cpu_ms_per_1k_msgs or {}
        instances = sum(v for name, v in parts.items() if name.startswith("instance"))
        others = {name: v for name, v in parts.items() if not name.startswith("instance")}
        rows.append(
            [
                f"{r.scenario}/{r.label}",
                num(instances, 1),
                ", ".join(f"{name} {num(v, 2)}" for name, v in sorted(others.items())) or "-",
                num(instances + sum(others.values()), 1),
            ]
        )
    return Table(
        ["result", "instances ms", "others ms", "all parts ms"],
        rows,
        note="CPU per 1,000 deliveries over the measurement window, per part (the repeats'"
        " median); the cost table's server CPU counts the instances only.",
    )


def _top(result: Result) -> dict[str, Any]:
    return max(result.memory_per_connection.points, key=lambda p: p["clients"])


def parts_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        top, memory = _top(r), r.memory_per_connection
        parts = top.get("parts_rss_bytes", {})
        instances = [v for name, v in parts.items() if name.startswith("instance")]
        others = {name: v for name, v in parts.items() if not name.startswith("instance")}
        clients = top["clients"]
        rows.append(
            [
                r.label,
                num(clients),
                num(len(instances)),
                num(sum(instances) / MiB, 0),
                f"{num(min(instances) / MiB, 0)}-{num(max(instances) / MiB, 0)}"
                if instances
                else "-",
                ", ".join(f"{name} {num(v / MiB, 1)}" for name, v in sorted(others.items())) or "-",
                num(top["kernel_bytes"] / 2 / MiB, 0),
                kib(memory.rss_bytes),
                kib(memory.kernel_bytes),
            ]
        )
    return Table(
        ["transport", "clients", "instances", "instances' RSS MiB", "each MiB", "others MiB",
         "kernel MiB", "RSS per client KiB", "kernel per client KiB"],
        rows,
        note="Kernel: half of the TCP memory and slab at the top plateau (both ends of a loopback"
        " connection live in one kernel). Others: Redis, and the balancer where there is one"
        " (SO_REUSEPORT has none).",
    )  # fmt: skip


def measured_bytes(result: Result) -> float:
    """Everything the backend held at the top plateau: every process's RSS and the kernel's
    share of the server side."""
    top = _top(result)
    return float(sum(top.get("parts_rss_bytes", {}).values()) + top["kernel_bytes"] / 2)


def estimate_table(results: list[Result], reference: Summary, source: str) -> Table:
    rows = []
    for r in results:
        clients = int(_top(r)["clients"])
        workload = Workload(clients=clients, push_rate=0.01, send_rate=0.0, latency_ms=1000.0)
        est = decide(workload, reference).estimates.get(r.label)
        measured = measured_bytes(r)
        guess = est.memory_bytes if est is not None else None
        ratio = guess / measured if guess and measured else None
        verdict = "-"
        if ratio is not None:
            verdict = "within 20 %" if abs(ratio - 1) <= OFF_BY else "off by more than 20 %"
        rows.append(
            [
                r.label,
                num(clients),
                num(est.servers) if est is not None else "-",
                num(guess / MiB, 0) if guess else "-",
                num(measured / MiB, 0),
                f"{ratio:.2f}" if ratio is not None else "-",
                verdict,
            ]
        )
    return Table(
        ["transport", "clients", "decide: servers", "decide: MiB", "measured MiB",
         "estimate / measured", "model"],
        rows,
        note=f"decide's estimate from {source} (one process per server, its idle fit: clients x"
        " (RSS + kernel per connection) + each server's base RSS) for the same idle workload."
        " Measured: every process's RSS (instances, Redis, balancer) plus the kernel's share.",
    )  # fmt: skip
