"""Memory charts of the idle scenario: the cost of one connection, and the fits behind it."""

from __future__ import annotations

from typing import Any

from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from wirewise.report.charts.base import (
    INVALID_GREY,
    Chart,
    Context,
    colour_of,
    invalid_caption,
    invalid_handle,
    new_figure,
    save,
)
from wirewise.report.conditions import workload
from wirewise.report.select import invalid, is_floor, names, of, per_what, valid
from wirewise.report.text import X, interval_text, kib
from wirewise.results import Result


def fit_label(result: Result) -> str:
    memory = result.memory_per_connection
    text = result.label if result.valid else f"{result.label}\ninvalid"
    if memory.r2 is None:
        return text
    count = len(memory.points)
    return f"{text}\nR² {memory.r2:.2f}" + (f" ({count} points)" if count < 3 else "")


def chart_memory(ctx: Context) -> Chart | None:
    idle = of(ctx.summary, "idle")
    results = [r for r in idle if r.memory_per_connection.rss_bytes is not None]
    if not results:
        why = "no idle result in this run" if not idle else "no idle result produced a fit"
        ctx.skipped.append(f"Memory per connection: {why}.")
        return None
    fig = new_figure(4.6)
    ax = fig.add_subplot()
    xs = list(range(len(results)))
    tops = []
    for x, r in zip(xs, results, strict=True):
        m = r.memory_per_connection
        colour = colour_of(r.label)
        rss, kernel = (m.rss_bytes or 0) / 1024, (m.kernel_bytes or 0) / 1024
        solid: dict[str, Any] = (
            {"color": colour}
            if r.valid
            else {"facecolor": "white", "edgecolor": colour, "hatch": "///"}
        )
        ax.bar([x], [rss], width=0.6, zorder=2, lw=1.2, **solid)
        ax.bar([x], [kernel], bottom=[rss], width=0.6, zorder=2, color=colour, alpha=0.35,
               hatch="..", edgecolor=colour, lw=0)  # fmt: skip
        if m.rss_ci95:
            low, high = (v / 1024 for v in m.rss_ci95)
            ax.vlines(x, max(low, 0.0), high, color="#222222", lw=1.1, zorder=3)
            ax.plot([x, x], [max(low, 0.0), high], ls="none", marker="_", ms=8, color="#222222",
                    zorder=3)  # fmt: skip
            tops.append(high)
        ax.annotate(f"{rss + kernel:,.1f}", (x, rss + kernel), xytext=(8, 2), textcoords="offset points",
                    ha="left", va="bottom", fontsize=8)  # fmt: skip
        tops.append(rss + kernel)
    ax.set_xticks(xs, labels=[fit_label(r) for r in results])
    for tick, r in zip(ax.get_xticklabels(), results, strict=True):
        tick.set_color(INVALID_GREY if not r.valid else "#222222")
    ax.set_ylim(0, max(tops) * 1.12 if tops else 1)
    ax.grid(axis="x", visible=False)
    against = sorted({r.memory_per_connection.fitted_against or "clients" for r in results})
    ax.set_ylabel(f"KiB per idle {per_what(results[0])}")
    ax.set_xlabel("transport (R² of the RSS fit)")
    title = f"idle: memory per idle {per_what(results[0])} (server RSS + kernel)"
    ax.set_title(title, loc="left")
    handles: list[Any] = [
        Patch(facecolor="#777777", label="server RSS slope"),
        Patch(facecolor="#777777", alpha=0.35, hatch="..", label="kernel TCP memory\n(half the loopback pair)"),
        Line2D([], [], color="#222222", lw=1.1, marker="_", ms=8, label="95 % interval\nof the RSS slope"),
    ]  # fmt: skip
    if invalid(results):
        handles.append(invalid_handle())
    fig.legend(handles=handles, loc="outside right upper")
    plateaus = sorted({len(r.memory_per_connection.points) for r in results})
    clients = sorted(p.get("clients", 0) for r in results for p in r.memory_per_connection.points)
    unfitted = [r for r in idle if r not in results]
    caption = (
        f"Slopes of least-squares fits of memory against {' and '.join(against)} over the idle"
        f" plateaus ({'-'.join(map(str, plateaus))} plateaus a transport"
        + (f", {clients[0]:,}-{clients[-1]:,} clients" if clients else "")
        + "); labels give the total in KiB; error bars the 95 % interval of the RSS slope"
        " (Student's t over the plateaus; drawn from 0 where it goes below)."
        + (" Through 2 plateaus any line fits: R² = 1 says nothing." if 2 in plateaus else "")
        + (f" No fit for {names(unfitted)} (see the warnings)." if unfitted else "")
        + invalid_caption(results, "Hollow, not comparable")
        + f" idle: {workload(idle)}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "memory-per-connection", title)


def chart_memory_fit(ctx: Context) -> Chart | None:
    idle = of(ctx.summary, "idle")
    results = [
        r
        for r in valid(idle)
        if r.memory_per_connection.rss_bytes is not None
        and len(r.memory_per_connection.points) >= 2
    ]
    if not results:
        ctx.skipped.append("Memory fits: no valid idle result with two or more plateaus.")
        return None
    fig = new_figure(4.8)
    ax = fig.add_subplot()
    for r in results:
        m = r.memory_per_connection
        key = m.fitted_against or "clients"
        xs = [float(p.get(key, p.get("clients", 0))) for p in m.points]
        ys = [p["rss_bytes"] for p in m.points]
        colour = colour_of(r.label)
        ax.scatter(xs, [y / 2**20 for y in ys], color=colour, s=28, zorder=3)
        if m.base_rss_bytes is not None and m.rss_bytes is not None:
            ends = [min(xs), max(xs)]
            interval = (
                f" {interval_text(m.rss_ci95[0] / 1024, m.rss_ci95[1] / 1024, 1)}"
                if m.rss_ci95
                else ""
            )
            ax.plot(ends, [(m.base_rss_bytes + m.rss_bytes * x) / 2**20 for x in ends],
                    color=colour, lw=1.5, ls="--" if is_floor(r) else "-",
                    label=f"{r.label}: {kib(m.rss_bytes)}{interval} KiB, R² {m.r2:.2f}")  # fmt: skip
    against = sorted({r.memory_per_connection.fitted_against or "clients" for r in results})
    ax.set_xlabel(f"idle {' / '.join(against)} at each plateau")
    ax.set_ylabel("server RSS (MiB)")
    title = f"idle: server RSS against {' and '.join(against)}, with the fitted lines"
    ax.set_title(title, loc="left")
    fig.legend(loc="outside right upper", title=f"KiB per {per_what(results[0])} [95 %]")
    caption = (
        "Each point is one plateau of the idle ramp (RSS averaged over its second half); each"
        f" line the summary's fit (intercept + slope {X} {' and '.join(against)}), whose slope is"
        f" the RSS cost of one more {per_what(results[0])}."
        + invalid_caption(idle, "Left out")
        + f" idle: {workload(idle)}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "memory-fit", title)
