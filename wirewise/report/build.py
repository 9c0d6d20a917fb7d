"""``build_report``: reads one run, draws its charts, and writes report.md and report.html."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from wirewise.report.blocks import Fig
from wirewise.report.charts import draw_charts
from wirewise.report.charts.base import Chart, Context
from wirewise.report.document import document
from wirewise.report.render import render_html, render_markdown
from wirewise.results import load_summary


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`build_report` wrote."""

    markdown: Path
    html: Path
    charts: tuple[Chart, ...]
    skipped: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        return [
            self.markdown,
            self.html,
            *(c.png for c in self.charts),
            *(c.svg for c in self.charts),
        ]


def build_report(run_dir: Path, out_dir: Path, reference: Path | None = None) -> ReportFiles:
    """Read one results run and write its charts, ``report.md`` and ``report.html`` to ``out_dir``.

    ``run_dir`` is a run directory (or its ``summary.json``); raises
    :class:`wirewise.results.SchemaError` for a results file this version cannot read.
    ``reference``: a single-process run that decide's estimates for a scale-out run come from.
    """
    began = time.monotonic()
    source = Path(run_dir)
    run_dir = source.parent if source.is_file() else source
    loaded = load_summary(source)
    # the run's own deployment everywhere; the ones compared with it (--baseline, --sticky
    # both) only in their own table, never mistaken for another backend's figures
    summary = replace(
        loaded, results=[r for r in loaded.results if not r.variant and not r.network]
    )
    compared = [r for r in loaded.results if r.variant and not r.network]
    # network conditions have their own section: each transport under each condition
    networked = [r for r in loaded.results if r.network]
    out_dir = Path(out_dir)
    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(summary, run_dir, charts_dir)
    draw_charts(ctx, networked)
    against = load_summary(reference) if reference is not None else None
    named = f"run {Path(reference).name}" if reference is not None else ""
    blocks = document(
        summary, run_dir, ctx.charts, ctx.skipped, against, named, compared, networked
    )
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(blocks, f"wirewise report: run {run_dir.name}"), encoding="utf-8")
    placed = tuple(b.chart for b in blocks if isinstance(b, Fig))
    return ReportFiles(markdown, page, placed, tuple(ctx.skipped), time.monotonic() - began)
