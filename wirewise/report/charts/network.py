"""Delivery latency against the network's round-trip time and against its loss, per transport
(``bench --rtt ... --loss ...``): measured points joined by lines, invalid ones hollow."""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.axes import Axes

from wirewise.report.charts.base import (
    INVALID_GREY,
    Chart,
    Context,
    colour_of,
    invalid_caption,
    new_figure,
    save,
)
from wirewise.report.select import conditions
from wirewise.results import Result

Key = Callable[[Result], float]


def _scenario(results: list[Result]) -> str | None:
    scenarios = [r.scenario for r in results]
    return "chat" if "chat" in scenarios else (scenarios[0] if scenarios else None)


def _series(results: list[Result], x: Key) -> dict[str, list[tuple[float, Result]]]:
    found: dict[str, list[tuple[float, Result]]] = {}
    for r in results:
        found.setdefault(r.label, []).append((x(r), r))
    return {label: sorted(points, key=lambda p: p[0]) for label, points in found.items()}


def _draw(ax: Axes, series: dict[str, list[tuple[float, Result]]], key: str) -> None:
    for label, points in series.items():
        colour = colour_of(label)
        xs = [x for x, r in points if getattr(r.latency_ms, key) is not None]
        ys = [
            getattr(r.latency_ms, key) for _, r in points if getattr(r.latency_ms, key) is not None
        ]
        ax.plot(xs, ys, color=colour, lw=1.3, label=label)
        for x, r in points:
            value = getattr(r.latency_ms, key)
            if value is None:
                continue
            face = colour if r.valid else "white"
            edge = colour if r.valid else INVALID_GREY
            ax.plot([x], [value], ls="none", marker="o", ms=5, mfc=face, mec=edge, mew=1.3)
    ax.set_yscale("log")
    ax.set_ylabel(f"delivery {key}, ms (log)")


def _chart(
    ctx: Context,
    results: list[Result],
    x: Key,
    xlabel: str,
    name: str,
    title: str,
    caption: str,
) -> Chart:
    fig = new_figure(3.8, width=10.0)
    left, right = fig.subplots(1, 2)
    series = _series(results, x)
    for ax, key in ((left, "p50"), (right, "p99")):
        _draw(ax, series, key)
        ax.set_xlabel(xlabel)
        ax.set_title(key)
    left.legend(loc="upper left", ncols=2)
    caption += invalid_caption(results, "Drawn hollow")
    return save(fig, caption, ctx.directory, name, title)


def chart_network_rtt(ctx: Context, networked: list[Result]) -> Chart | None:
    """p50 and p99 against the RTT dialed, without loss, jitter or a bandwidth limit."""
    scenario = _scenario(networked)
    results = [
        r for r in networked if r.scenario == scenario and conditions(r)[1:] == (0.0, 0.0, None)
    ]
    if len({conditions(r)[0] for r in results}) < 2:
        if networked:
            ctx.skipped.append("Latency against RTT: fewer than two RTTs without loss in this run.")
        return None
    return _chart(
        ctx, results, lambda r: conditions(r)[0], "round-trip time added, ms",
        "network-rtt", f"{scenario}: delivery latency against round-trip time",
        f"{scenario}: each transport's delivery p50 and p99 at each RTT added between Locust and"
        " the server (every run through the same relay, rtt 0 included). A push transport's"
        " delivery pays one RTT (its send up, its delivery down); a long poll's tail two;"
        f" short polling its interval besides. {ctx.machine}.",
    )  # fmt: skip


def chart_network_loss(ctx: Context, networked: list[Result]) -> Chart | None:
    """p50 and p99 against the loss dialed, at the run's most common RTT."""
    scenario = _scenario(networked)
    results = [r for r in networked if r.scenario == scenario]
    lossy = [r for r in results if conditions(r)[1] > 0]
    if not lossy:
        return None
    rtt = conditions(lossy[0])[0]
    results = [r for r in results if conditions(r)[0] == rtt and conditions(r)[2:] == (0.0, None)]
    if len({conditions(r)[1] for r in results}) < 2:
        ctx.skipped.append(f"Latency against loss: fewer than two losses at rtt {rtt:g} ms.")
        return None
    return _chart(
        ctx, results, lambda r: conditions(r)[1], "packets lost each way, %",
        "network-loss", f"{scenario}: delivery latency against loss (rtt {rtt:g} ms)",
        f"{scenario} at rtt {rtt:g} ms: each transport's delivery p50 and p99 as packets are"
        " dropped each way between the relay and the server. A lost segment with nothing behind"
        " it waits for the retransmission timeout (200 ms at least), which the tail shows first."
        f" {ctx.machine}.",
    )  # fmt: skip
