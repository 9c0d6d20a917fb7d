"""The failover timeline: around the SIGKILL, how fast the killed instance's clients came back
through the balancer, and what every process spent meanwhile (the reconnect storm)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from wirewise.report.charts.base import Chart, Context, colour_of, log_axis, new_figure, save
from wirewise.report.select import of, valid
from wirewise.results import Result

BEFORE_S, AFTER_S = 4.0, 6.0
"""The stretch of the timeline drawn, in seconds around the kill."""


def storm(ctx: Context, result: Result) -> tuple[list[float], list[tuple[float, float]]] | None:
    """The first repeat's reconnect times (ms from the kill) and every process's CPU percent
    per sample (seconds from the kill, percent of one core), from its raw files."""
    repeat = result.repeats[0] if result.repeats else None
    if repeat is None:
        return None
    directory = ctx.run_dir / repeat.files
    try:
        scenario = json.loads((directory / "scenario.json").read_text())
        faults = scenario["faults"]
        killed_at = float(faults["restart"]["killed_at"])
        samples = _samples(directory / "samples.jsonl")
    except (OSError, KeyError, TypeError, ValueError):
        return None
    cpu = []
    for before, after in itertools.pairwise(samples):
        shared = set(before.get("parts_cpu_s") or {}) & set(after.get("parts_cpu_s") or {})
        spent = sum(after["parts_cpu_s"][p] - before["parts_cpu_s"][p] for p in shared)
        seconds = after["t"] - before["t"]
        middle = (after["t"] + before["t"]) / 2 - killed_at
        if seconds > 0 and shared and -BEFORE_S <= middle <= AFTER_S:
            cpu.append((middle, 100 * spent / seconds))
    return sorted(float(v) for v in faults.get("reconnect_ms") or []), cpu


def _samples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chart_failover(ctx: Context) -> Chart | None:
    results = valid(of(ctx.summary, "failover"))
    drawn = [(r, found) for r in results if (found := storm(ctx, r)) is not None]
    if not drawn:
        if of(ctx.summary, "failover"):
            ctx.skipped.append("Failover timeline: no valid failover result with its raw files.")
        return None
    fig = new_figure(3.6, width=10.0)
    back, spend = fig.subplots(1, 2)
    for result, (reconnects, cpu) in drawn:
        colour = colour_of(result.label)
        if reconnects:
            share = np.arange(1, len(reconnects) + 1) / len(reconnects) * 100
            back.step(reconnects, share, where="post", color=colour, lw=1.5, label=result.label)
        if cpu:
            t, percent = zip(*cpu, strict=True)
            spend.plot(t, percent, color=colour, lw=1.3, marker=".", ms=4, label=result.label)
    back.set_xscale("log")
    log_axis(back.xaxis, dense=False)
    back.set_xlabel("ms from the kill to the client's first message on a survivor")
    back.set_ylabel("killed instance's clients back, %")
    back.set_ylim(0, 102)
    spend.legend(loc="upper right", ncols=2)
    spend.axvline(0, color="#aa0000", lw=1, ls="--")
    spend.annotate("SIGKILL", (0, 1), xycoords=("data", "axes fraction"), xytext=(3, -10),
                   textcoords="offset points", fontsize=7.5, color="#aa0000")  # fmt: skip
    spend.set_xlabel("seconds from the kill")
    spend.set_ylabel("CPU of every process, % of one core")
    spend.set_xlim(-BEFORE_S, AFTER_S)
    spend.set_ylim(bottom=0)
    caption = (
        "Failover on three instances behind HAProxy sharing Redis, one killed with SIGKILL"
        f" (first repeat of each; {ctx.machine}). Left: the killed instance's clients back"
        " through the balancer, by time from the kill to their first message on a survivor"
        " (short pollers hold no connection and are not drawn). Right: the CPU of every process"
        " (survivors, Redis, HAProxy) per 0.5 s sample around the kill, every part pinned to one"
        " core. Delivery latency is not timed per message in this scenario, so the storm's"
        " latency is the failover table's, over the whole window."
    )
    return save(fig, caption, ctx.directory, "failover-timeline", "Failover timeline")
