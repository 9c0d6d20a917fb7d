"""``wirewise report``: charts, Markdown and HTML from one results run, and a verdict from its numbers.

:func:`build_report` reads a run's ``summary.json`` (schema v2, through
:func:`wirewise.results.load_summary`: an unknown ``schema_version`` is refused) and, for the
latency CDFs, each repeat's ``messages.npz``, and writes into ``out_dir``::

    report.md             verdict, conditions, one section per scenario (its table, then its
                          charts), cost per delivery, short polling, every warning
    report.html           the same content, self-contained (inline CSS, charts as data: URLs)
    charts/<name>.png     each chart at 130 dpi ...
    charts/<name>.svg     ... and as SVG

Invalid is invalid: a result whose ``validity.valid`` is false (see
:func:`wirewise.summarize.judge`) is never quoted in the verdict, is drawn hollow and faded
(or left out, with a note under the chart) and is marked in every table, with its reasons. A
figure that has a 95 % interval is printed with it, and when the verdict compares two
transports whose intervals overlap it says "not significant" instead of naming a winner.

Every chart carries its units, a title and, inside the image, a caption with its sample sizes
and conditions (CPU, cores, scenario parameters, commit, date), so that a chart copied out of
the report still says what it shows. A chart the run has no data for is not drawn, and the
report says so.

The report reads results only: it imports neither the bench nor the process helpers (which pin
CPUs), so it runs on any machine the results were copied to.

The package, from the bottom up (each module imports only those above it): ``text`` (numbers
and words), ``select`` (which results), ``conditions`` (the run and workload in words),
``verdict``, ``charts``, ``blocks`` and ``tables``, ``document``, ``render``, ``build``.
"""

from wirewise.report.build import ReportFiles, build_report
from wirewise.report.charts.base import Chart
from wirewise.report.conditions import workload
from wirewise.report.text import num
from wirewise.report.verdict import verdict

__all__ = ["Chart", "ReportFiles", "build_report", "num", "verdict", "workload"]
