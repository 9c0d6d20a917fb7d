"""Results on the terminal: one rich table per run, every caveat printed under it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from wirewise.report.select import labelled_warnings, run_label
from wirewise.report.text import group_warnings, kib, runs_text
from wirewise.results import LoadGenerator, Summary

COLUMNS = (
    "scenario",
    "transport",
    "p50 ms",
    "p99 ms",
    "samples",
    "lost",
    "msgs/s",
    "bytes/msg down",
    "bytes/msg up",
    "CPU ms/1k",
    "gen/server us",
    "RSS/conn",
    "kernel/conn",
    "valid",
    "!",
)
LEFT = {"scenario", "transport", "valid"}
"""Columns of words; the rest are figures, aligned right."""


def fmt(value: float | int | None, unit: str = "", digits: int = 1) -> str:
    """A figure with ``digits`` decimals (a count as a whole number) and its unit; '-' if absent."""
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text}{unit}"


def results_table(summary: Summary, title: str = "") -> Table:
    """One row per result: the figures a reader scans first, invalid ones in red."""
    table = Table(title=title or None, show_lines=False, header_style="bold")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in LEFT else "right")
    for result in summary.results:
        latency = result.latency_ms
        memory = result.memory_per_connection
        wire = result.bytes_per_message
        table.add_row(
            result.scenario,
            result.label
            + (f" ({result.variant})" if result.variant else "")
            + (f" {result.network}" if result.network else ""),
            fmt(latency.p50, digits=2),
            fmt(latency.p99, digits=2),
            fmt(latency.count),
            fmt(result.deliveries.lost) if result.scenario != "idle" else "-",
            fmt(result.throughput_msgs_per_s, digits=0),
            fmt(wire.down, digits=0),
            fmt(wire.up, digits=0),
            fmt(result.server_cpu_ms_per_1k_msgs, digits=1),
            ratio(result.load_generator),
            kib(memory.rss_bytes, unit=" KiB"),
            kib(memory.kernel_bytes, unit=" KiB"),
            "yes" if result.valid else "[red]NO[/]",
            str(len(result.warnings)) if result.warnings else "",
        )
    return table


def ratio(generator: LoadGenerator) -> str:
    """The load generator's CPU per delivery against the server's: "7.1/20.3"."""
    mine, theirs = generator.cpu_us_per_delivery, generator.server_cpu_us_per_delivery
    if mine is None or theirs is None:
        return "-"
    return f"{mine:,.1f}/{theirs:,.1f}"


def print_summary(summary: Summary, console: Console | None = None, title: str = "") -> None:
    """The table, then every warning (similar ones on one line, naming each run; the grouping
    is the report's, :func:`wirewise.report.text.group_warnings`)."""
    console = console or Console()
    console.print(results_table(summary, title))
    for result in summary.results:
        if not result.valid:
            for why in result.validity.reasons:
                console.print(f"[red]invalid {run_label(result)}:[/] {why}")
    for group in group_warnings(labelled_warnings(summary.results)):
        runs = group.runs
        example = group.example if len(runs) == 1 else f"{group.example} (numbers vary)"
        console.print(f"[yellow]! {runs_text(runs, 'runs')}:[/] {example}")


def print_decision(decision: Any, console: Console | None = None) -> None:
    """The recommendation, the ranking with reasons, and the estimates at the stated scale."""
    from wirewise.decide import NAMES, fmt_bytes

    console = console or Console()
    w = decision.workload
    console.print(
        f"[bold]Workload:[/] {w.clients:,} clients, {w.push_rate:g} msg/s down and {w.send_rate:g} msg/s up each, "
        f"p99 <= {w.latency_ms:g} ms, {w.payload_bytes} B messages"
        + (", the upgrade is blocked" if w.proxy_blocks_upgrade else "")
        + (f", RTT {w.rtt_ms:g} ms" if w.rtt_ms else "")
        + (f", {w.loss_pct:g} % lost each way" if w.loss_pct else "")
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
