"""Results on the terminal: one rich table per run, every caveat printed under it."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table


def label(result: dict[str, Any]) -> str:
    return str(result["label"])


def fmt(value: float | int | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text}{unit}"


def kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:,.1f} KiB"


def results_table(summary: dict[str, Any], title: str = "") -> Table:
    table = Table(title=title or None, show_lines=False, header_style="bold")
    for name, justify in (
        ("scenario", "left"),
        ("transport", "left"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("samples", "right"),
        ("lost", "right"),
        ("msgs/s", "right"),
        ("bytes/msg down", "right"),
        ("bytes/msg up", "right"),
        ("CPU ms/1k", "right"),
        ("gen/server us", "right"),
        ("RSS/conn", "right"),
        ("kernel/conn", "right"),
        ("valid", "left"),
        ("!", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for result in summary["results"]:
        latency = result["latency_ms"]
        memory = result["memory_per_connection"]
        wire = result["bytes_per_message"]
        table.add_row(
            result["scenario"],
            label(result),
            fmt(latency["p50"], digits=2),
            fmt(latency["p99"], digits=2),
            fmt(latency["count"]),
            fmt(result["deliveries"]["lost"]) if result["scenario"] != "idle" else "-",
            fmt(result["throughput_msgs_per_s"], digits=0),
            fmt(wire["down"], digits=0),
            fmt(wire["up"], digits=0),
            fmt(result["server_cpu_ms_per_1k_msgs"], digits=1),
            ratio(result["load_generator"]),
            kib(memory["rss_bytes"]),
            kib(memory["kernel_bytes"]),
            "yes" if result["validity"]["valid"] else "[red]NO[/]",
            str(len(result["warnings"])) if result["warnings"] else "",
        )
    return table


def ratio(generator: dict[str, Any]) -> str:
    """The load generator's CPU per delivery against the server's: "7.1/20.3"."""
    mine, theirs = generator.get("cpu_us_per_delivery"), generator.get("server_cpu_us_per_delivery")
    if mine is None or theirs is None:
        return "-"
    return f"{mine:,.1f}/{theirs:,.1f}"


def grouped_warnings(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Warnings that read the same but for their numbers, with the runs they concern."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for result in summary["results"]:
        for warning in result["warnings"]:
            key = re.sub(r"\d[\d,.]*", "#", warning)
            _, runs = groups.setdefault(key, (warning, []))
            runs.append(f"{result['scenario']}/{label(result)}")
    return list(groups.values())


def print_summary(summary: dict[str, Any], console: Console | None = None, title: str = "") -> None:
    """The table, then every warning (similar ones on one line, naming each run)."""
    console = console or Console()
    console.print(results_table(summary, title))
    for result in summary["results"]:
        if not result["validity"]["valid"]:
            for why in result["validity"]["reasons"]:
                console.print(f"[red]invalid {result['scenario']}/{label(result)}:[/] {why}")
    for text, runs in grouped_warnings(summary):
        where = runs[0] if len(runs) == 1 else f"{len(runs)} runs ({', '.join(runs)})"
        example = text if len(runs) == 1 else f"{text} (numbers vary)"
        console.print(f"[yellow]! {where}:[/] {example}")


def print_decision(decision: Any, console: Console | None = None) -> None:
    """The recommendation, the ranking with reasons, and the estimates at the stated scale."""
    from wirewise.decide import NAMES, fmt_bytes

    console = console or Console()
    w = decision.workload
    console.print(
        f"[bold]Workload:[/] {w.clients:,} clients, {w.push_rate:g} msg/s down and {w.send_rate:g} msg/s up each, "
        f"p99 <= {w.latency_ms:g} ms, {w.payload_bytes} B messages"
        + (", the upgrade is blocked" if w.proxy_blocks_upgrade else "")
    )
    if decision.recommendation:
        console.print(
            f"[bold green]Recommendation: {NAMES[decision.recommendation]} ({decision.recommendation})[/]"
        )
    else:
        console.print("[bold red]No measured transport meets this workload.[/]")
    table = Table(header_style="bold")
    for name in ("transport", "score", "p99 ms", "servers", "CPU cores", "memory", "bandwidth"):
        table.add_column(name, justify="left" if name == "transport" else "right")
    for ranked in decision.ranking:
        e = decision.estimates[ranked.transport]
        table.add_row(
            ranked.transport,
            str(ranked.score),
            fmt(e.p99_ms, digits=1),
            fmt(e.servers),
            fmt(e.cpu_cores, digits=2),
            fmt_bytes(e.memory_bytes) if e.memory_bytes is not None else "-",
            f"{fmt_bytes(e.bandwidth_bytes_per_s)}/s"
            if e.bandwidth_bytes_per_s is not None
            else "-",
        )
    console.print(table)
    for ranked in decision.ranking:
        console.print(f"[bold]{ranked.transport}[/] ({ranked.score}):")
        for reason in ranked.reasons:
            console.print(f"  - {reason}")
    console.print(f"Estimates from results run {decision.source}; `wirewise explain` says why.")
