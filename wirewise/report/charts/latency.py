"""Delivery latency charts: percentiles per transport, and the distribution of every delivery."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.lines import Line2D

from wirewise.metrics import PERCENTILES, too_few_samples
from wirewise.report.charts.base import (
    FLOOR_COLOUR,
    INVALID_GREY,
    Chart,
    Context,
    colour_of,
    invalid_caption,
    log_axis,
    new_figure,
    save,
)
from wirewise.report.conditions import samples_text, workload
from wirewise.report.select import invalid, is_floor, of, run_label, timed, valid
from wirewise.report.text import PCT_NAMES, ci, num

PCT_MARKERS = {"p50": "o", "p90": "s", "p99": "^", "p999": "D"}


PCT_OFFSETS = {"p50": -0.15, "p90": -0.05, "p99": 0.05, "p999": 0.15}
"""Percentiles side by side in a transport's column, so a close p99 and p99.9 both stay visible."""


def chart_latency(ctx: Context, scenario: str) -> Chart | None:
    results = timed(of(ctx.summary, scenario))
    if not results:
        ctx.skipped.append(
            f"Latency percentiles, {scenario}: no {scenario} result timed a delivery."
        )
        return None
    fig = new_figure(4.8)
    ax = fig.add_subplot()
    thin = False
    floor = next((r for r in valid(results) if is_floor(r)), None)
    labels: list[tuple[int, float, float | None]] = []  # (column, p50, p99)
    for i, r in enumerate(results):
        lat = r.latency_ms
        colour = colour_of(r.label) if r.valid else INVALID_GREY
        weak = set(too_few_samples(lat.count))
        keys = [k for k in PERCENTILES if getattr(lat, k) is not None]
        ax.plot(
            [i + PCT_OFFSETS[k] for k in keys], [getattr(lat, k) for k in keys], color=colour,
            lw=2.5 if r.valid else 1.2, alpha=0.35 if r.valid else 0.8,
            ls="-" if r.valid else ":", zorder=2,
        )  # fmt: skip
        for key in keys:
            value = getattr(lat, key)
            interval = ci(lat, key)
            if interval is not None:
                ax.vlines(i + PCT_OFFSETS[key], *interval, color=colour, lw=1.3, zorder=2)
                for end in interval:
                    ax.plot([i + PCT_OFFSETS[key]], [end], ls="none", marker="_", ms=7,
                            mew=1.3, color=colour, zorder=2)  # fmt: skip
            hollow = key in weak or not r.valid
            thin = thin or (key in weak and r.valid)
            ax.plot(
                [i + PCT_OFFSETS[key]], [value], ls="none", marker=PCT_MARKERS[key], ms=7, mew=1.6,
                color=colour, mfc="white" if hollow else colour, zorder=3,
            )  # fmt: skip
        labels.append((i, lat.p50 or 0.0, lat.p99))
    handles: list[Any] = [
        Line2D([], [], ls="none", marker=PCT_MARKERS[k], color="#333333", ms=6, label=PCT_NAMES[k])
        for k in PERCENTILES
    ]
    handles.append(
        Line2D([], [], color="#333333", lw=1.3, marker="_", ms=7, label="95 % interval\n(p50, p99)")
    )
    if floor is not None:
        ax.axhline(floor.latency_ms.p50 or 0, color=FLOOR_COLOUR, ls="--", lw=1.1, zorder=1)
        handles.append(
            Line2D([], [], color=FLOOR_COLOUR, ls="--", lw=1.1,
                   label=f"raw-TCP floor p50\n({num(floor.latency_ms.p50)} ms)")
        )  # fmt: skip
    if thin:
        handles.append(
            Line2D([], [], ls="none", marker="o", color="#333333", mfc="white", ms=6,
                   label="hollow: too few\nsamples to support it")
        )  # fmt: skip
    if invalid(results):
        handles.append(
            Line2D([], [], ls=":", marker="o", color=INVALID_GREY, mfc="white", ms=6,
                   label="grey, hollow: invalid\n(reasons below)")
        )  # fmt: skip
    ax.set_xticks(
        range(len(results)),
        labels=[
            f"{r.label}\nn = {r.latency_ms.count:,}" + ("" if r.valid else "\ninvalid")
            for r in results
        ],
    )
    for tick, r in zip(ax.get_xticklabels(), results, strict=True):
        tick.set_color(
            INVALID_GREY if not r.valid else "#555555" if is_floor(r) else colour_of(r.label)
        )
    ax.set_xlim(-0.7, len(results) - 0.3)
    ax.set_yscale("log")
    log_axis(ax.yaxis)
    _label_percentiles(ax, labels)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("delivery latency (ms, log scale)")
    ax.set_xlabel("transport (n = deliveries timed)")
    title = f"{scenario}: delivery latency percentiles per transport"
    ax.set_title(title, loc="left")
    fig.legend(handles=handles, loc="outside right upper", title="percentile")
    caption = (
        "Delivery latency (receipt minus scheduled send) at p50, p90, p99 and p99.9, log scale;"
        " labels give p50 (left) and p99 (right) in ms; bars are 95 % intervals that resample"
        f" messages. {samples_text(results)}."
        + (
            " Hollow markers: fewer than 10 samples lie beyond that percentile (p99 needs 1,000"
            " samples, p99.9 10,000), so it is an indication only."
            if thin
            else ""
        )
        + (
            " Dashed grey line: the raw-TCP floor's p50."
            if floor
            else " No valid raw-TCP floor in this run."
        )
        + invalid_caption(results, "Grey and hollow, not comparable")
        + f" {scenario}: {workload(of(ctx.summary, scenario))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, f"latency-{scenario}", title)


def _label_percentiles(ax: Any, labels: list[tuple[int, float, float | None]]) -> None:
    """p50 to the left of its column, p99 to the right; a p50 label that would meet the
    previous column's p99 label (about the same height) goes under its marker instead."""
    low, high = (math.log10(v) for v in ax.get_ylim())
    near = (high - low) * 0.06

    def height(value: float) -> float:
        return math.log10(max(value, 1e-9))

    previous: float | None = None
    for column, p50, p99 in labels:
        box = {"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.8}
        x50 = column + PCT_OFFSETS["p50"]
        if previous is not None and abs(height(p50) - previous) < near:
            ax.annotate(num(p50), (x50, p50), xytext=(0, -9), textcoords="offset points",
                        ha="center", va="top", fontsize=7.5, color="#222222", bbox=box)  # fmt: skip
        else:
            ax.annotate(num(p50), (x50, p50), xytext=(-6, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=7.5, color="#222222", bbox=box)  # fmt: skip
        if p99 is not None:
            ax.annotate(num(p99), (column + PCT_OFFSETS["p999"], p99), xytext=(6, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=7.5,
                        color="#222222", bbox=box)  # fmt: skip
        previous = height(p99) if p99 is not None else None


def chart_cdf(ctx: Context, scenario: str) -> Chart | None:
    results = timed(of(ctx.summary, scenario))
    curves = []
    missing = []
    for r in valid(results):
        values = ctx.latencies_ms(r)
        if values is None or not len(values):
            missing.append(run_label(r))
            continue
        curves.append((r, values))
    if not curves:
        why = (
            f"no valid {scenario} result timed a delivery"
            if not valid(results)
            else f"messages.npz missing for {', '.join(missing)}"
        )
        ctx.skipped.append(f"Latency CDF, {scenario}: {why}.")
        return None
    fig = new_figure(4.2)
    ax = fig.add_subplot()
    for r, values in curves:
        ordered = np.sort(np.clip(values, 1e-3, None))
        fraction = np.arange(1, len(ordered) + 1) / len(ordered)
        if len(ordered) > 4000:  # a line of 4,000 steps draws the curve at the figure's size
            keep = np.unique(np.linspace(0, len(ordered) - 1, 4000).astype(int))
            ordered, fraction = ordered[keep], fraction[keep]
        ax.plot(
            np.concatenate(([ordered[0]], ordered)), np.concatenate(([0.0], fraction)),
            color=colour_of(r.label), lw=2.2 if is_floor(r) else 1.6,
            ls="--" if is_floor(r) else "-", drawstyle="steps-post",
            label=f"{r.label}{' (floor)' if is_floor(r) else ''}, n = {len(values):,}",
        )  # fmt: skip
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel("delivery latency (ms, log scale)")
    ax.set_ylabel("fraction of deliveries at or below")
    ax.set_ylim(0, 1.02)
    title = f"{scenario}: delivery latency distribution (CDF)"
    ax.set_title(title, loc="left")
    fig.legend(loc="outside right upper")
    caption = (
        "Cumulative distribution of every timed delivery (receipt minus scheduled send) whose"
        " message was scheduled in the measurement window, all repeats together, from each"
        " repeat's messages.npz; x log scale."
        + (f" No messages.npz for {', '.join(missing)}." if missing else "")
        + invalid_caption(results, "Left out")
        + f" {scenario}: {workload(of(ctx.summary, scenario))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, f"cdf-{scenario}", title)
