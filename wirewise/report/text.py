"""Numbers and words as the report prints them, and the one grouping of warnings.

Every figure in the tables, sentences and captions goes through these functions, so a number
reads the same wherever it appears (the console reuses them for the same reason).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wirewise.results import Latency

X = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
REASON_CHARS = 90
"""A reason quoted inside a chart is cut here; the tables quote it whole."""
PCT_NAMES = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99.9"}
NUMBERS = re.compile(r"\d[\d,.]*")
"""The numbers in a warning: two warnings that differ only there say the same thing."""


def digits_for(value: float) -> int:
    """Decimals by magnitude: three significant figures up to 100, whole numbers above."""
    size = abs(value)
    return 2 if size < 10 else 1 if size < 100 else 0


def num(value: float | int | None, digits: int | None = None) -> str:
    """A figure for prose and tables: thousands separated, precision by magnitude; '-' if absent."""
    if value is None:
        return "-"
    if isinstance(value, int) and digits is None:
        return f"{value:,}"
    return f"{value:,.{digits_for(value) if digits is None else digits}f}"


def g(value: float | int | None) -> str:
    """A parameter as given: 4 rather than 4.00, 0.25 rather than 0.2."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"


def kib(value: float | None, digits: int = 1, unit: str = "") -> str:
    """Bytes in KiB (1,024 bytes); the tables name the unit in their header, the console after."""
    return "-" if value is None else f"{value / 1024:,.{digits}f}{unit}"


def approx(value: float) -> str:
    """Two significant figures: '≈190,000' rather than a precision the fit does not have."""
    if value <= 0:
        return "0"
    magnitude = 10 ** max(math.floor(math.log10(value)) - 1, 0)
    return f"{round(value / magnitude) * magnitude:,.0f}"


def factor(value: float, base: float) -> str:
    """How many times the base, as '3.2x' (with the multiplication sign); '-' without a base."""
    return f"{value / base:.1f}{X}" if base else "-"


def interval_text(low: float, high: float, digits: int) -> str:
    """'[6.80-7.90]' (with an en dash): a 95 % interval as every table and sentence prints it."""
    return f"[{num(low, digits)}{DASH}{num(high, digits)}]"


def ci(latency: Latency, key: str) -> tuple[float, float] | None:
    """The 95 % interval of a percentile, if the summary has one."""
    found = latency.ci95.get(key)
    return (float(found[0]), float(found[1])) if found and len(found) == 2 else None


def pct(latency: Latency, key: str) -> str:
    """'7.20 [6.80-7.90]': a percentile with its 95 % interval when there is one."""
    value = getattr(latency, key)
    if value is None:
        return "-"
    interval = ci(latency, key)
    text = num(value)
    return f"{text} {interval_text(*interval, digits_for(value))}" if interval else text


def value_range(values: Sequence[float] | None, digits: int | None = None) -> str:
    """'45.1-50.2' over the repeats; '' when there is one repeat (or all agree)."""
    if not values or len(values) < 2:
        return ""
    low, high = num(min(values), digits), num(max(values), digits)
    return "" if low == high else f"{low}{DASH}{high}"


def cut(text: str, limit: int = REASON_CHARS) -> str:
    """The text, or its start and an ellipsis: a chart has no room for a whole reason."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"


# -- warnings ------------------------------------------------------------------------------------


@dataclass
class WarningGroup:
    """Warnings that read the same but for their numbers, each with the run that carries it.

    Kept as (text, run) pairs in the order they were met, so that the report (one line a
    variant) and the console (one line a group) list the runs in the same order.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def example(self) -> str:
        """The first text met: what the group says, with one run's numbers."""
        return self.pairs[0][0]

    @property
    def runs(self) -> list[str]:
        """Every run the group concerns, in order (a run once per warning it carries)."""
        return [run for _, run in self.pairs]

    @property
    def variants(self) -> dict[str, list[str]]:
        """Each distinct text with the runs that carry it, in the order first met."""
        found: dict[str, list[str]] = {}
        for text, run in self.pairs:
            found.setdefault(text, []).append(run)
        return found


def group_warnings(warnings: Iterable[tuple[str, str]]) -> list[WarningGroup]:
    """``(run, warning)`` pairs grouped by the warning with its numbers masked."""
    groups: dict[str, WarningGroup] = {}
    for run, text in warnings:
        groups.setdefault(NUMBERS.sub("#", text), WarningGroup()).pairs.append((text, run))
    return list(groups.values())


def runs_text(runs: list[str], noun: str = "results") -> str:
    """'chat/ws' or '3 results (chat/ws, chat/sse, game/ws)' (the console says 'runs')."""
    return runs[0] if len(runs) == 1 else f"{len(runs)} {noun} ({', '.join(runs)})"
