"""What every chart shares: the figure, its colours, log axes, the caption inside the image, and saving."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display, no GUI event loop

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.typing import RcKeyType

from wirewise.ledger import RawMessages
from wirewise.report.conditions import machine
from wirewise.report.select import first_reason, invalid, names
from wirewise.report.text import cut
from wirewise.results import Result, Summary

DPI = 130


WIDTH_IN = 10.0


COLOURS = {
    "poll": "#E69F00",
    "longpoll": "#D55E00",
    "sse": "#0072B2",
    "h2": "#CC79A7",
    "ws": "#009E73",
    "ws@websockets": "#56B4E9",
    "tcp": "#8C8C8C",
}


SPARE_COLOURS = ("#332288", "#882255", "#117733", "#999933", "#44AA99", "#AA4499")


FLOOR_COLOUR = COLOURS["tcp"]


BOUND_COLOUR = "#B2182B"


INVALID_GREY = "#9A9A9A"
"""An invalid result in the latency chart: grey and hollow, never in its transport's colour."""


RC: dict[RcKeyType, Any] = {
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.labelsize": 9,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "svg.hashsalt": "wirewise",  # stable ids: the same run gives the same SVG
    "svg.fonttype": "path",
}


@dataclass(frozen=True)
class Chart:
    """One chart: its files and the words that go with it."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def colour_of(name: str, _spare: dict[str, str] = {}) -> str:  # noqa: B006 - a memo on purpose
    if name in COLOURS:
        return COLOURS[name]
    if name not in _spare:
        _spare[name] = SPARE_COLOURS[len(_spare) % len(SPARE_COLOURS)]
    return _spare[name]


def _tick_text(value: float, _pos: object = None) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:g}"
    return f"{value:.3g}"


def log_axis(axis: Any, dense: bool = True) -> None:
    """Log axis labelled 1, 2, 5, 10, ... (or 1, 10, 100 when ``dense`` is False), no 10^x."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if dense else (1.0,)))
    axis.set_major_formatter(FuncFormatter(_tick_text))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_minor_formatter(NullFormatter())


def new_figure(height: float, width: float = WIDTH_IN) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, caption: str, directory: Path, name: str, title: str) -> Chart:
    """Write PNG and SVG, with the caption set under the axes inside the image."""
    width_in = fig.get_figwidth()
    wrapped = "\n".join(textwrap.wrap(caption, width=int(width_in * 15.5)))
    fig.text(0.005, -0.01, wrapped, ha="left", va="top", fontsize=7.5, color="#444444")
    png, svg = directory / f"{name}.png", directory / f"{name}.svg"
    fig.savefig(png, dpi=DPI, bbox_inches="tight", pad_inches=0.12, facecolor="white")
    fig.savefig(
        svg, bbox_inches="tight", pad_inches=0.12, facecolor="white", metadata={"Date": None}
    )
    return Chart(name, title, caption, png, svg)


def invalid_caption(results: Iterable[Result], how: str) -> str:
    """' Drawn hollow: invalid, not comparable: a, b (reason); c (reason).' or ''."""
    groups: dict[str, list[Result]] = {}
    for r in invalid(results):
        groups.setdefault(cut(first_reason(r)), []).append(r)
    if not groups:
        return ""
    return (
        f" {how}: "
        + "; ".join(f"{names(rs)} invalid: {reason}" for reason, rs in groups.items())
        + " (every reason in the tables)."
    )


def invalid_handle(label: str = "hollow, hatched: invalid\n(reasons below)") -> Patch:
    return Patch(facecolor="white", edgecolor="#666666", hatch="///", label=label)


@dataclass
class Context:
    summary: Summary
    run_dir: Path
    directory: Path
    charts: dict[str, Chart] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def machine(self) -> str:
        return machine(self.summary.metadata)

    def latencies_ms(self, result: Result) -> np.ndarray | None:
        """Every timed delivery of the result's repeats (ms), from each ``messages.npz``: the
        deliveries whose message was scheduled in the repeat's window, as the summary counts
        them. None when a repeat's file is missing or unreadable."""
        parts = []
        for repeat in result.repeats:
            path = self.run_dir / repeat.files / "messages.npz"
            start, end = repeat.window.get("start"), repeat.window.get("end")
            if start is None or end is None or not path.is_file():
                return None
            try:
                raw = RawMessages.load(path)
            except ValueError:
                return None
            sent_at = raw.deliveries[:, 2]
            inside = raw.deliveries[(sent_at >= int(start * 1e6)) & (sent_at < int(end * 1e6))]
            parts.append((inside[:, 3] - inside[:, 2]) / 1000)
        return np.concatenate(parts) if parts else None
