"""The blocks a report is made of, shared by the document builder and both renderers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wirewise.report.charts.base import Chart


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str
    style: str = ""  # "note" for small print


@dataclass
class Bullets:
    items: list[str | tuple[str, list[str]]]
    ordered: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one letter a column, "l" or "r"; default: first left, the rest right
    note: str = ""
    key_value: bool = False
    invalid_rows: set[int] = field(default_factory=set)
    """Rows of invalid results: greyed in HTML (Markdown says so in their validity column)."""


@dataclass
class Fig:
    number: int
    chart: Chart


Block = Heading | Para | Bullets | Table | Fig


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Figures:
    """Charts placed where they belong, numbered in the order they appear."""

    def __init__(self, charts: dict[str, Chart]) -> None:
        self.charts = dict(charts)
        self.count = 0

    def place(self, *chart_names: str) -> list[Block]:
        blocks: list[Block] = []
        for name in chart_names:
            chart = self.charts.pop(name, None)
            if chart is not None:
                self.count += 1
                blocks.append(Fig(self.count, chart))
        return blocks

    def rest(self) -> list[Block]:
        return self.place(*list(self.charts))
