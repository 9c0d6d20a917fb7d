"""The short-polling chart: measured latency against what its interval predicts."""

from __future__ import annotations

from wirewise.report.charts.base import (
    Chart,
    Context,
    colour_of,
    invalid_caption,
    log_axis,
    new_figure,
    save,
)
from wirewise.report.select import find, poll_results, run_label, valid
from wirewise.report.text import PCT_NAMES, ci, g, num


def chart_polling(ctx: Context) -> Chart | None:
    """Measured p50 and p99 of short polling per scenario, beside theory at its interval.

    Only what was measured is drawn: one column per scenario (and interval) measured, and
    one legend entry per series.
    """
    everything = poll_results(ctx.summary)
    results = valid(everything)
    if not results:
        ctx.skipped.append(
            "Short polling's interval trade-off: no valid short-polling result timed a delivery"
            " in chat, broadcast or game."
        )
        return None
    several = len({r.parameters["poll_interval_s"] for r in results}) > 1
    fig = new_figure(4.4, width=8.0)
    ax = fig.add_subplot()
    colour = colour_of("poll")
    longpoll = colour_of("longpoll")
    named: set[str] = set()

    direct = len(results) == 1
    """One column: every series is a single point, so each is labelled where it is drawn and
    the chart has no legend (a legend of five one-point series only sends the eye away)."""

    def once(name: str) -> str:
        """One legend entry a series, however many columns draw it ('_' hides the rest)."""
        if name in named or direct:
            return "_nolegend_"
        named.add(name)
        return name

    for i, r in enumerate(results):
        interval = r.parameters["poll_interval_s"]
        lat = r.latency_ms
        ax.hlines(interval * 500, i - 0.32, i + 0.32, color=colour, ls="--", lw=1.3,
                  label=once("theory: p50 ≈ T/2"), zorder=1)  # fmt: skip
        ax.hlines(interval * 990, i - 0.32, i + 0.32, color=colour, ls=":", lw=1.6,
                  label=once("theory: p99 ≈ 0.99·T"), zorder=1)  # fmt: skip
        if direct:
            for level, name in (
                (interval * 500, "theory p50 ≈ T/2"),
                (interval * 990, "theory p99 ≈ 0.99·T"),
            ):
                ax.annotate(name, (i + 0.32, level), xytext=(4, 0), textcoords="offset points",
                            ha="left", va="center", fontsize=7.5, color=colour)  # fmt: skip
        for key, dx, face, name in (("p50", -0.08, colour, "measured p50"),
                                    ("p99", 0.08, "white", "measured p99")):  # fmt: skip
            value = getattr(lat, key)
            if value is None:
                continue
            interval_ci = ci(lat, key)
            if interval_ci:
                ax.vlines(i + dx, *interval_ci, color=colour, lw=1.3, zorder=2)
            ax.plot([i + dx], [value], ls="none", marker="o", ms=8, mfc=face, mec=colour,
                    mew=1.6, color=colour, zorder=3, label=once(name))  # fmt: skip
            ax.annotate(f"{PCT_NAMES[key]} {num(value)}" if direct else num(value), (i + dx, value), xytext=(8 if dx > 0 else -8, 0),
                        textcoords="offset points", ha="left" if dx > 0 else "right",
                        va="center", fontsize=7.5, color="#222222",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.8, "alpha": 0.85})  # fmt: skip
        reference = find(ctx.summary, r.scenario, "longpoll")
        if reference is not None and reference.valid and reference.latency_ms.p50 is not None:
            ax.plot([i], [reference.latency_ms.p50], ls="none", marker="D", ms=6, color=longpoll,
                    zorder=3, label=once("longpoll p50, same scenario"))  # fmt: skip
            ax.annotate(("longpoll p50 " if direct else "") + f"{num(reference.latency_ms.p50)} ms", (i, reference.latency_ms.p50),
                        xytext=(8, 0), textcoords="offset points", ha="left", va="center",
                        fontsize=7.5, color=longpoll)  # fmt: skip
    ax.set_xticks(
        range(len(results)),
        labels=[
            r.scenario + (f"\nT = {r.parameters['poll_interval_s']:g} s" if several else "")
            for r in results
        ],
    )
    ax.set_xlim(-0.8, len(results) - 0.2)
    ax.set_yscale("log")
    log_axis(ax.yaxis)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("delivery latency (ms, log scale)")
    intervals = sorted({r.parameters["poll_interval_s"] for r in results})
    ax.set_xlabel("scenario" + ("" if several else f" (poll interval T = {intervals[0]:g} s)"))
    title = "Short polling: measured latency against its interval's theory"
    ax.set_title(title, loc="left")
    if not direct:
        fig.legend(loc="outside right upper")
    measured = "; ".join(
        f"{run_label(r)}: {g(r.parameters.get('users'))} clients polling every"
        f" {g(r.parameters['poll_interval_s'])} s, n = {r.latency_ms.count:,}"
        for r in results
    )
    caption = (
        "Markers are measured (filled p50, hollow p99, bars their 95 % intervals, labels in ms;"
        " the table gives the intervals); the short"
        " lines are theory at the same interval T, not measurement: a message waits for the next"
        " poll, uniformly between 0 and T, so p50 ≈ T/2 and p99 ≈ 0.99·T (plus a round trip)."
        f" {measured}." + invalid_caption(everything, "Left out") + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "polling-interval", title)
