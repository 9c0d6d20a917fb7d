"""Every chart of a report, drawn with matplotlib (Agg) from the typed summary."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

from wirewise.report.charts.base import RC, Chart, Context
from wirewise.report.charts.cost import chart_bytes, chart_cpu
from wirewise.report.charts.failover import chart_failover
from wirewise.report.charts.latency import chart_cdf, chart_latency
from wirewise.report.charts.memory import chart_memory, chart_memory_fit
from wirewise.report.charts.network import chart_network_loss, chart_network_rtt
from wirewise.report.charts.polling import chart_polling
from wirewise.report.charts.saturate import chart_saturate
from wirewise.report.select import LATENCY_SCENARIOS, of, scenarios_in
from wirewise.results import Result


def draw_charts(ctx: Context, networked: list[Result] | None = None) -> None:
    """Draw every chart the run has data for into ``ctx.charts``; the rest are named in
    ``ctx.skipped`` (absent latency scenarios first, then each chart's own reason).
    ``networked``: results under network conditions, drawn against RTT and loss."""
    present = scenarios_in(ctx.summary)
    if ctx.summary.results or not networked:
        for scenario in LATENCY_SCENARIOS:
            if scenario not in present:
                ctx.skipped.append(f"Latency, {scenario}: no {scenario} result in this run.")
    with matplotlib.rc_context(RC):
        for chart in each_chart(ctx, present):
            if chart is not None:
                ctx.charts[chart.name] = chart
        if networked:
            for chart in (chart_network_rtt(ctx, networked), chart_network_loss(ctx, networked)):
                if chart is not None:
                    ctx.charts[chart.name] = chart


def each_chart(ctx: Context, present: list[str]) -> Iterator[Chart | None]:
    """The charts in report order, each drawn only when the generator reaches it (inside
    the caller's style context)."""
    for scenario in LATENCY_SCENARIOS:
        if scenario in present:
            yield chart_latency(ctx, scenario)
            yield chart_cdf(ctx, scenario)
    yield chart_memory(ctx)
    if of(ctx.summary, "idle"):
        yield chart_memory_fit(ctx)
    yield chart_saturate(ctx)
    yield chart_cpu(ctx)
    yield chart_bytes(ctx)
    if any(r.transport == "poll" for r in ctx.summary.results):
        yield chart_polling(ctx)
    if of(ctx.summary, "failover"):
        yield chart_failover(ctx)
