"""The saturate chart: p99 against throughput for every ramp step (the hockey stick)."""

from __future__ import annotations

from matplotlib.lines import Line2D

from wirewise.report.charts.base import (
    BOUND_COLOUR,
    Chart,
    Context,
    colour_of,
    invalid_caption,
    log_axis,
    new_figure,
    save,
)
from wirewise.report.conditions import workload
from wirewise.report.select import invalid, is_floor, of


def chart_saturate(ctx: Context) -> Chart | None:
    everything = of(ctx.summary, "saturate")
    results = [r for r in everything if r.steps]
    if not results:
        why = "no saturate result in this run" if not everything else "no saturate step recorded"
        ctx.skipped.append(f"Throughput against p99: {why}.")
        return None
    bound = next(
        ((r.parameters.get("options") or {}).get("latency_bound_ms") for r in results), None
    )
    fig = new_figure(4.8)
    ax = fig.add_subplot()
    any_failed = False
    for r in results:
        steps = [s for s in r.steps if s.latency_ms.p99 is not None]
        if not steps:
            continue
        colour = colour_of(r.label)
        xs = [s.deliveries_per_s or 0 for s in steps]
        ys = [p99 for s in steps if (p99 := s.latency_ms.p99) is not None]
        ax.plot(
            xs, ys, color=colour, lw=1.6 if r.valid else 1.1,
            ls=("--" if is_floor(r) else "-") if r.valid else ":",
            alpha=1.0 if r.valid else 0.7,
            label=r.label if r.valid else f"{r.label} (invalid)", zorder=2,
        )  # fmt: skip
        for s, x, y in zip(steps, xs, ys, strict=True):
            any_failed = any_failed or not s.held
            face = colour if r.valid else "white"
            ax.plot([x], [y], ls="none", marker="o" if s.held else "X", ms=6 if s.held else 9,
                    color=colour, mfc=face if s.held else colour,
                    mec=("white" if r.valid else colour) if s.held else "#222222", mew=0.8 if r.valid else 1.3,
                    zorder=3)  # fmt: skip
    if bound:
        ax.axhline(bound, color=BOUND_COLOUR, ls="--", lw=1.1, zorder=1)
    ax.set_yscale("log")
    log_axis(ax.yaxis)
    ax.set_xlabel("deliveries per second (whole server, per ramp step)")
    ax.set_ylabel("p99 delivery latency (ms, log scale)")
    title = "saturate: p99 latency against throughput, per ramp step"
    ax.set_title(title, loc="left")
    handles, _ = ax.get_legend_handles_labels()
    extra = [Line2D([], [], ls="none", marker="o", color="#444444", ms=6, label="step held")]
    if any_failed:
        extra.append(Line2D([], [], ls="none", marker="X", color="#444444", ms=8,
                            label="step did not hold"))  # fmt: skip
    if invalid(results):
        extra.append(Line2D([], [], ls=":", marker="o", color="#444444", mfc="white", ms=6,
                            label="dotted, hollow: invalid\n(reasons below)"))  # fmt: skip
    if bound:
        extra.append(
            Line2D([], [], color=BOUND_COLOUR, ls="--", label=f"bound: p99 ≤ {bound:g} ms")
        )
    fig.legend(handles=[*handles, *extra], loc="outside right upper")  # each carries its label
    counts = [s.latency_ms.count for r in results for s in r.steps if s.latency_ms.count]
    caption = (
        "Each point is one step of the ramp: deliveries per second against that step's p99 delivery"
        " latency. A step holds when p99 ≤ the bound, every message is delivered, the server stays under the knee's CPU and the publisher keeps its schedule."
        + (f" Samples per step: {min(counts):,}-{max(counts):,}." if counts else "")
        + invalid_caption(results, "Dotted and hollow, not comparable")
        + f" saturate: {workload(everything)}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "saturate-hockey-stick", title)
