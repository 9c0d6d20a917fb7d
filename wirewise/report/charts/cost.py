"""Cost charts: server CPU and bytes per delivery, grouped by scenario."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.patches import Patch

from wirewise.report.charts.base import (
    Chart,
    Context,
    colour_of,
    invalid_caption,
    invalid_handle,
    log_axis,
    new_figure,
    save,
)
from wirewise.report.conditions import deliveries_text, sampling_text, workload
from wirewise.report.select import ORDER, bytes_pair, cpu_range, find, invalid, of, scenarios_in
from wirewise.results import Result


def _grouped_bars(
    ax: Any,
    ctx: Context,
    value: Callable[[Result], float | None],
    text: Callable[[Result], str],
    behind: Callable[[Result], float | None] | None = None,
    spread: Callable[[Result], Sequence[float] | None] | None = None,
    log: bool = False,
) -> tuple[list[str], list[Patch], list[Result], float | None]:
    """Bars grouped by scenario, one colour per transport, invalid ones hollow and hatched;
    ``behind`` draws a wider, lighter bar under each (wire bytes under payload), ``spread``
    an error bar (the repeats' range).

    Valid results set the scale: an invalid bar far above them is cut at a ceiling, its label
    marked with an arrow, so that it cannot flatten the figures that count. Returns the
    scenarios, one legend handle a transport (solid, whatever the validity of its first bar),
    the results drawn and the ceiling (None when nothing was cut).
    """
    scenarios = [
        s
        for s in scenarios_in(ctx.summary)
        if any(value(r) is not None for r in of(ctx.summary, s))
    ]
    labels: list[str] = []
    for s in scenarios:
        for r in of(ctx.summary, s):
            if value(r) is not None and r.label not in labels:
                labels.append(r.label)
    labels.sort(key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    width = 0.84 / max(len(labels), 1)
    bars = []  # (x, result, value, value behind, spread, top)
    for j, name in enumerate(labels):
        for i, s in enumerate(scenarios):
            result = find(ctx.summary, s, name)
            v = value(result) if result else None
            if result is None or v is None:
                continue
            under = behind(result) if behind is not None else None
            found = spread(result) if spread is not None else None
            top = max([v, *([under] if under is not None else []), *(found or [])])
            bars.append((i + (j - (len(labels) - 1) / 2) * width, result, v, under, found, top))
    highest = max((top for _, r, *_, top in bars if r.valid), default=None)
    ceiling = None
    if highest and any(top > highest * 1.5 for _, r, *_, top in bars if not r.valid):
        ceiling = highest * (2.0 if log else 1.3)
    for x, r, v, under, found, top in bars:
        colour = colour_of(r.label)
        if under is not None:
            ax.bar([x], [under], width=width * 0.92, color=colour, alpha=0.3, lw=0, zorder=2)
        style = (
            {"color": colour}
            if r.valid
            else {"facecolor": "white", "edgecolor": colour, "hatch": "///"}
        )
        ax.bar([x], [v], width=width * (0.62 if behind else 0.92), lw=1.0, zorder=3, **style)
        if found:
            ax.vlines(x, min(found), max(found), color="#222222", lw=1.0, zorder=4)
        cut_here = ceiling is not None and top > ceiling
        ax.annotate(("\N{UPWARDS ARROW} " if cut_here else "") + text(r),
                    (x, ceiling if cut_here else top), xytext=(0, 2), textcoords="offset points",
                    rotation=90, ha="center", va="bottom", fontsize=6.5,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.8} if cut_here else None)  # fmt: skip
    ax.set_xticks(
        range(len(scenarios)),
        labels=[s if s != "saturate" else "saturate\n(highest step held)" for s in scenarios],
    )
    ax.grid(axis="x", visible=False)
    handles = [Patch(facecolor=colour_of(n), label=n) for n in labels]
    return scenarios, handles, [b[1] for b in bars], ceiling


CUT_NOTE = " ↑: an invalid bar cut at the top of the axis (its value in the label)."


def chart_cpu(ctx: Context) -> Chart | None:
    def value(r: Result) -> float | None:
        return r.server_cpu_ms_per_1k_msgs

    if not any(value(r) is not None for r in ctx.summary.results):
        ctx.skipped.append("Server CPU per 1,000 messages: no result measured it.")
        return None
    fig = new_figure(4.6)
    ax = fig.add_subplot()
    scenarios, handles, drawn, ceiling = _grouped_bars(
        ax, ctx, value, lambda r: f"{value(r) or 0:,.1f}", spread=cpu_range
    )
    if ceiling is not None:
        ax.set_ylim(0, ceiling * 1.25)
    else:
        ax.margins(y=0.2)
    ax.set_ylabel("server CPU per 1,000 deliveries (ms)")
    title = "Server CPU per 1,000 delivered messages"
    ax.set_title(title, loc="left")
    if invalid(drawn):
        handles.append(invalid_handle())
    several = any(cpu_range(r) for r in drawn)
    fig.legend(handles=handles, loc="outside right upper")
    caption = (
        "Server process CPU (user + system) from the measurement window's start to the end of the"
        " drain, per 1,000 deliveries"
        + ("; saturate at its highest step held" if "saturate" in scenarios else "")
        + f"; {deliveries_text(ctx.summary, scenarios)}. {sampling_text(ctx.summary.metadata)}."
        + (
            " Black bars: the lowest and highest of the repeats."
            if several
            else " One repeat a result: the spread between runs is not measured."
        )
        + invalid_caption(drawn, "Hollow, hatched, not comparable")
        + (CUT_NOTE if ceiling is not None else "")
        + " "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s in scenarios)
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "cpu-per-1k", title)


def chart_bytes(ctx: Context) -> Chart | None:
    def has(r: Result) -> bool:
        return r.bytes_per_message.down is not None or r.bytes_per_message.up is not None

    if not any(has(r) for r in ctx.summary.results):
        ctx.skipped.append("Bytes per message: no result measured them.")
        return None
    fig = new_figure(7.4)
    top, bottom = fig.subplots(2, 1)
    scenarios: list[str] = []
    handles: list[Any] = []
    drawn: list[Result] = []
    cut_any = False
    for ax, key, what in (
        (top, "down", "down: server → clients, per delivery"),
        (bottom, "up", "up: clients → server, per message sent"),
    ):

        def payload(r: Result, key: str = key) -> float | None:
            found: float | None = getattr(r.bytes_per_message, key)
            return found

        def pair(r: Result, key: str = key) -> str:
            return bytes_pair(r, key)

        def wire(r: Result, key: str = key) -> float | None:
            return r.bytes_per_message.wire.get(key)

        shown, transports, results, ceiling = _grouped_bars(
            ax, ctx, payload, pair, behind=wire, log=True
        )
        scenarios = scenarios or shown
        handles = handles or transports
        drawn += [r for r in results if r not in drawn]
        cut_any = cut_any or ceiling is not None
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        values = [v for r in results for v in (payload(r), wire(r)) if v]
        if values:  # bars on a log axis start at a round decade below the data
            ax.set_ylim(10 ** math.floor(math.log10(min(values))), (ceiling or max(values)) * 4)
        ax.set_ylabel("bytes (log scale)")
        ax.set_title(what, loc="left", fontsize=10)
    handles += [
        Patch(facecolor="#777777", label="TCP payload"),
        Patch(facecolor="#777777", alpha=0.3, label="on the wire\n(+ IP/TCP headers)"),
    ]
    if invalid(drawn):
        handles.append(invalid_handle())
    fig.legend(handles=handles, loc="outside right upper")
    title = "Bytes per message: TCP payload and on the wire"
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    headers = sorted(
        {h for r in drawn if (h := r.bytes_per_message.header_bytes_per_segment) is not None}
    )
    caption = (
        "Bytes from the kernel's TCP counters over the window and drain: down per delivery, up"
        " per message sent; labels give payload/wire. Payload (narrow, solid) is what TCP"
        " carried; on the wire (wide, light) adds every segment's IP and TCP headers"
        + (f" ({', '.join(map(str, headers))} bytes a segment)" if headers else "")
        + "; empty polls, heartbeats, pings and HTTP headers count;"
        f" {deliveries_text(ctx.summary, scenarios)}."
        + invalid_caption(drawn, "Hollow, hatched, not comparable")
        + (CUT_NOTE if cut_any else "")
        + " "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s in scenarios)
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "bytes-per-message", title)
