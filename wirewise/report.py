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
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
import shlex
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display, no GUI event loop

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from wirewise import stats
from wirewise.ledger import RawMessages
from wirewise.metrics import PERCENTILES, too_few_samples
from wirewise.registry import BACKENDS, FLOOR
from wirewise.results import Latency, Result, Summary, load_summary
from wirewise.summarize import GENERATOR_SATURATED, SCENARIO_ORDER

__all__ = ["Chart", "ReportFiles", "build_report", "verdict"]

LATENCY_SCENARIOS = ("chat", "broadcast", "game")
X = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
FLOOR_FACTOR = 3.0
"""A transport "stays near the floor" when its p50 and p99 are both within this factor of the floor's."""
DPI = 130
WIDTH_IN = 10.0
REASON_CHARS = 90
"""A reason quoted inside a chart is cut here; the tables quote it whole."""

ORDER = tuple(b.label for b in BACKENDS)
# Okabe-Ito: distinguishable with the common colour-vision deficiencies. The floor is grey.
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
PCT_NAMES = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99.9"}
PCT_MARKERS = {"p50": "o", "p90": "s", "p99": "^", "p999": "D"}
PCT_OFFSETS = {"p50": -0.15, "p90": -0.05, "p99": 0.05, "p999": 0.15}
"""Percentiles side by side in a transport's column, so a close p99 and p99.9 both stay visible."""
RC = {
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


# -- numbers as words ---------------------------------------------------------------------------


def digits_for(value: float) -> int:
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


def kib(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value / 1024:,.{digits}f}"


def approx(value: float) -> str:
    """Two significant figures: '≈190,000' rather than a precision the fit does not have."""
    if value <= 0:
        return "0"
    magnitude = 10 ** max(math.floor(math.log10(value)) - 1, 0)
    return f"{round(value / magnitude) * magnitude:,.0f}"


def factor(value: float, base: float) -> str:
    return f"{value / base:.1f}{X}" if base else "-"


def interval_text(low: float, high: float, digits: int) -> str:
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
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"


# -- selecting results --------------------------------------------------------------------------


def as_summary(summary: Summary | dict[str, Any]) -> Summary:
    """The typed summary (``wirewise report`` passes ``read_summary``'s checked JSON)."""
    return summary if isinstance(summary, Summary) else Summary.from_json(summary)


def order_key(result: Result) -> tuple[int, str]:
    return (ORDER.index(result.label) if result.label in ORDER else len(ORDER), result.label)


def of(summary: Summary, scenario: str) -> list[Result]:
    return sorted((r for r in summary.results if r.scenario == scenario), key=order_key)


def find(summary: Summary, scenario: str, name: str) -> Result | None:
    """The result of ``scenario`` whose label is ``name`` ("ws" is the uvicorn one)."""
    return next((r for r in of(summary, scenario) if r.label == name), None)


def is_timed(result: Result) -> bool:
    return bool(result.latency_ms.count) and result.latency_ms.p50 is not None


def timed(results: Iterable[Result]) -> list[Result]:
    """Results with at least one timed delivery."""
    return [r for r in results if is_timed(r)]


def valid(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.valid]


def invalid(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if not r.valid]


def is_floor(result: Result) -> bool:
    return result.transport == FLOOR


def scenarios_in(summary: Summary) -> list[str]:
    present = {r.scenario for r in summary.results}
    known = [s for s in SCENARIO_ORDER if s in present]
    return known + sorted(present - set(known))


def colour_of(name: str, _spare: dict[str, str] = {}) -> str:  # noqa: B006 - a memo on purpose
    if name in COLOURS:
        return COLOURS[name]
    if name not in _spare:
        _spare[name] = SPARE_COLOURS[len(_spare) % len(SPARE_COLOURS)]
    return _spare[name]


def run_label(result: Result) -> str:
    """``chat/ws``: the scenario and label every quoted figure is tied to."""
    return f"{result.scenario}/{result.label}"


def first_reason(result: Result) -> str:
    return result.validity.reasons[0] if result.validity.reasons else "no reason recorded"


def names(results: Iterable[Result]) -> str:
    return ", ".join(run_label(r) for r in results)


def repeat_count(result: Result) -> int:
    return max(len(result.repeats), 1)


def repeat_p99s(result: Result) -> list[float]:
    return [r.latency_ms.p99 for r in result.repeats if r.latency_ms.p99 is not None]


def cpu_range(result: Result) -> list[float] | None:
    """The repeats' lowest and highest server CPU per 1,000 deliveries, when there are several."""
    found = result.server_cpu_ms_per_1k_msgs_range
    return found if found and repeat_count(result) > 1 else None


def cpu_text(result: Result) -> str:
    """'48.3' or, over repeats, '48.3 (45.1-50.2)'."""
    text = num(result.server_cpu_ms_per_1k_msgs)
    spread = value_range(cpu_range(result))
    return f"{text} ({spread})" if spread else text


def memory_total(result: Result) -> float | None:
    m = result.memory_per_connection
    return None if m.rss_bytes is None or m.kernel_bytes is None else m.rss_bytes + m.kernel_bytes


def per_what(result: Result) -> str:
    """What the idle slope is per: a client (fitted against clients) or a server connection."""
    return (
        "connection" if result.memory_per_connection.fitted_against == "connections" else "client"
    )


# -- conditions ---------------------------------------------------------------------------------


def short_commit(commit: str) -> str:
    if not commit or commit == "unknown":
        return "unknown"
    dirty = commit.endswith("+dirty")
    return commit[:7] + ("+dirty" if dirty else "")


def started(metadata: dict[str, Any]) -> str:
    text = str(metadata.get("started_at", ""))
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return text or "unknown date"
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def cores_text(metadata: dict[str, Any]) -> str:
    used = metadata.get("cores_used") or {}
    text = f"{metadata.get('cores', '?')} cores"
    if used.get("server") is not None:
        text += (
            f" (server on core {','.join(map(str, used['server']))},"
            f" Locust on {','.join(map(str, used.get('load_generator', [])))})"
        )
    return text


def machine(metadata: dict[str, Any]) -> str:
    return (
        f"{metadata.get('cpu_model', 'unknown CPU')}, {cores_text(metadata)}; "
        f"commit {short_commit(str(metadata.get('git_commit', '')))}; {started(metadata)}"
    )


def shared_cores(metadata: dict[str, Any]) -> list[int]:
    used = metadata.get("cores_used") or {}
    return sorted(set(used.get("server") or []) & set(used.get("load_generator") or []))


def sampling_text(metadata: dict[str, Any]) -> str:
    """How CPU was measured, from metadata ``sampling``: the resolution of every CPU figure."""
    sampling = metadata.get("sampling") or {}
    if not sampling.get("cpu"):
        return "how CPU was sampled is not recorded in this run's metadata"
    every = sampling.get("interval_s")
    return f"CPU from {sampling['cpu']}" + (f", sampled every {g(every)} s" if every else "")


def repeats_text(summary: Summary) -> str:
    counts = sorted({repeat_count(r) for r in summary.results})
    if not counts:
        return "no repeats"
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}{DASH}{counts[-1]}"
    return f"{text} repeat{'s' if counts[-1] > 1 else ''} a result"


def workload(results: list[Result]) -> str:
    """The scenario's parameters in words (from the first result; they are per scenario)."""
    params = next((r.parameters for r in results if r.parameters), {})
    if not params:
        return "parameters not recorded"
    options = params.get("options") or {}
    scenario = results[0].scenario
    payload = params.get("payload_bytes")
    text_size = f"{g(payload)}-char text"
    if scenario == "game" and payload == 100:
        # scenarios/game.py sends 50-character updates when given the general default of 100,
        # but the parameters record the 100 it was passed: say what was sent, and why it differs.
        text_size = "50-char text (game's own default; the results record 100)"
    room = params.get("room_size")
    where = f" in rooms of {g(room)}" if room else ""
    rate = params.get("rate_per_user")
    if scenario == "idle":
        # Short polling may ramp to fewer clients than the rest.
        sizes: dict[Any, set[str]] = {}
        for r in results:
            size = (r.parameters.get("options") or {}).get("step_users")
            if size is not None:
                sizes.setdefault(size, set()).add(r.label)
        if len(sizes) > 1:
            per = ", ".join(
                f"{g(size)} ({', '.join(sorted(labels))})" for size, labels in sorted(sizes.items())
            )
        else:
            per = g(options.get("step_users"))
        text = (
            f"{per} clients a step {X} {g(options.get('steps'))} steps of"
            f" {g(options.get('step_seconds'))} s"
        )
    elif scenario == "saturate":
        text = (
            f"{g(params.get('users'))} users{where}, rate from {g(rate)} msg/s per user,"
            f" {X}{g(options.get('rate_factor'))} a step, up to {g(options.get('steps'))} steps of"
            f" {g(options.get('step_seconds'))} s, bound p99 ≤"
            f" {g(options.get('latency_bound_ms'))} ms, {text_size}"
        )
    elif scenario == "broadcast":
        text = (
            f"{g(params.get('users'))} users{where}: one publisher sending {g(rate)} msg/s to"
            f" each room, the rest listening, {text_size}, {g(params.get('duration_s'))} s measured"
        )
    else:
        text = (
            f"{g(params.get('users'))} users{where}, {g(rate)} msg/s each, {text_size},"
            f" {g(params.get('duration_s'))} s measured"
        )
        if scenario == "faults" and options.get("kill_at") is not None:
            text += f", the server killed {g(options['kill_at'] * 100)} % into the window"
    intervals = sorted(
        {r.parameters.get("poll_interval_s") for r in results if r.transport == "poll"} - {None}
    )
    if intervals:
        text += f"; poll every {', '.join(f'{t:g}' for t in intervals)} s"
    return text


def samples_text(results: list[Result], what: str = "deliveries timed") -> str:
    counts = {r.label: r.latency_ms.count for r in results}
    if len(set(counts.values())) == 1:
        (count,) = set(counts.values())
        return f"n = {count:,} {what} per transport"
    return f"n ({what}): " + ", ".join(f"{name} {count:,}" for name, count in counts.items())


def counted_deliveries(result: Result) -> float | None:
    """The deliveries a result's CPU and bytes figures are divided by."""
    if result.scenario == "saturate":
        held = result.highest_rate_held or {}
        seconds = (result.parameters.get("options") or {}).get("step_seconds")
        return held["deliveries_per_s"] * seconds if held and seconds else None
    return result.deliveries.delivered or None


def deliveries_text(summary: Summary, scenarios: list[str]) -> str:
    """Sample sizes of the per-delivery figures: deliveries each result divided by, per scenario."""
    parts = []
    for scenario in scenarios:
        counts = sorted(
            {round(n) for r in of(summary, scenario) if (n := counted_deliveries(r)) is not None}
        )
        if counts:
            text = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,}"
            parts.append(f"{scenario} {text}")
    return f"n = deliveries a result: {', '.join(parts)}" if parts else "n not recorded"


# -- the verdict --------------------------------------------------------------------------------


def verdict(summary: Summary | dict[str, Any]) -> list[str]:
    """A short verdict from valid results only, each figure named by its scenario/label.

    Where no valid result supports a sentence, the sentence says so instead of quoting one.
    """
    summary = as_summary(summary)
    if not summary.results:
        return ["This run holds no results (0 runs), so nothing is concluded."]
    present = scenarios_in(summary)
    sentences = [s for s in (answer_sentence(summary), validity_sentence(summary)) if s]
    latency = [s for s in LATENCY_SCENARIOS if s in present]
    sentences += [latency_sentence(s, of(summary, s)) for s in latency]
    if not latency:
        sentences.append(
            f"This run has no chat, broadcast or game result (it has {', '.join(present)}),"
            " so delivery latency against the floor is not measured here."
        )
    if "saturate" in present:
        sentences.append(saturate_sentence(of(summary, "saturate")))
    sentences.append(idle_sentence(summary))
    sentences.append(polling_sentence(summary))
    sentences.append(cost_sentence(summary))
    sentences.append(caveats_sentence(summary))
    return sentences


def usable(result: Result | None) -> str | None:
    """Why a result cannot be quoted for latency, or None when it can."""
    if result is None:
        return "not measured"
    if not result.valid:
        return f"invalid ({cut(first_reason(result), 70)})"
    if not is_timed(result):
        return "timed no delivery"
    return None


def compare(a: Result, b: Result, key: str = "p99") -> bool | None:
    """Do two results' intervals of a percentile overlap? None: one has no interval."""
    return stats.overlaps(ci(a.latency_ms, key), ci(b.latency_ms, key))


def quoted(result: Result, key: str = "p99") -> str:
    """'chat/ws p99 2.25 [1.98-3.68] ms'."""
    return f"{run_label(result)} {PCT_NAMES[key]} {pct(result.latency_ms, key)} ms"


def answer_sentence(summary: Summary) -> str | None:
    """The one-line answer to "do I need WebSockets?", from valid SSE and WebSocket results.

    Broadcast first (pushing is its whole traffic), then chat. None when the run has neither.
    """
    scenarios = [s for s in ("broadcast", "chat") if of(summary, s)]
    if not scenarios:
        return None
    pairs: dict[str, tuple[Result, Result]] = {}
    why_not = []
    for scenario in scenarios:
        sse, ws = find(summary, scenario, "sse"), find(summary, scenario, "ws")
        problems = [
            f"{scenario}/{name} {problem}"
            for name, r in (("sse", sse), ("ws", ws))
            if (problem := usable(r))
        ]
        if problems:
            why_not += problems
        else:
            assert sse is not None and ws is not None
            pairs[scenario] = (sse, ws)
    if not pairs:
        return (
            "No answer to “do I need WebSockets?” from this run: it needs a valid SSE and"
            f" WebSocket result in broadcast or chat, and {'; '.join(why_not)}."
        )
    push = next(iter(pairs))
    sse, ws = pairs[push]
    p99_sse, p99_ws = sse.latency_ms.p99, ws.latency_ms.p99
    assert p99_sse is not None and p99_ws is not None
    overlap = compare(sse, ws)
    enough = "Answer: for pushing to clients, SSE + POST is enough on this machine"
    sure = "significantly" if overlap is False else "with no interval to judge the difference"
    if overlap:
        lead, judged = enough, "not significant (the 95 % intervals overlap)"
    elif p99_sse <= p99_ws:
        lead, judged = enough, f"SSE lower, {sure}"
    elif p99_sse <= 2 * p99_ws:
        lead, judged = enough, f"WebSocket lower, {sure}, but within 2{X}"
    else:
        lead = "Answer: WebSockets delivered markedly faster than SSE + POST on this machine"
        judged = f"{factor(p99_sse, p99_ws)} apart, {sure}"
    facts = [f"{quoted(sse)} against {quoted(ws)}, {judged}"]
    idle_sse, idle_ws = find(summary, "idle", "sse"), find(summary, "idle", "ws")
    if idle_sse and idle_ws and idle_sse.valid and idle_ws.valid:
        mem_sse, mem_ws = memory_total(idle_sse), memory_total(idle_ws)
        if mem_sse is not None and mem_ws is not None:
            same = stats.overlaps(
                _tuple(idle_sse.memory_per_connection.rss_ci95),
                _tuple(idle_ws.memory_per_connection.rss_ci95),
            )
            facts.append(
                f"an idle {per_what(idle_sse)} cost {kib(mem_sse)} KiB (idle/sse) against"
                f" {kib(mem_ws)} KiB (idle/ws), server RSS + kernel"
                + (", not significant (the RSS intervals overlap)" if same else "")
            )
    chat_sse, chat_ws = find(summary, "chat", "sse"), find(summary, "chat", "ws")
    tail = ""
    if chat_sse and chat_ws and chat_sse.valid and chat_ws.valid:
        cpu_sse, cpu_ws = chat_sse.server_cpu_ms_per_1k_msgs, chat_ws.server_cpu_ms_per_1k_msgs
        if cpu_sse and cpu_ws:
            same = stats.overlaps(_tuple(cpu_range(chat_sse)), _tuple(cpu_range(chat_ws)))
            facts.append(
                f"with every user sending the server spent {cpu_text(chat_sse)} (chat/sse)"
                f" against {cpu_text(chat_ws)} (chat/ws) ms of CPU per 1,000 deliveries"
                + (", not significant over the repeats" if same else "")
            )
            if cpu_ws < cpu_sse and not same:
                tail = (
                    "; WebSockets earn their keep when clients send often (each send is a frame,"
                    " not an HTTP request) or need full duplex"
                )
    poll = find(summary, push, "poll")
    interval = poll.parameters.get("poll_interval_s") if poll else None
    if poll and interval and usable(poll) is None:
        tail += (
            "; short polling is enough only when waiting about half its interval is fine"
            f" ({quoted(poll, 'p50')} at T = {g(interval)} s)"
        )
    return f"{lead}: {'; '.join(facts)}{tail}."


def _tuple(values: Sequence[float] | None) -> tuple[float, float] | None:
    return (float(values[0]), float(values[1])) if values and len(values) == 2 else None


def validity_sentence(summary: Summary) -> str:
    """Which results are left out as invalid, grouped by their first reason."""
    bad = invalid(summary.results)
    total = len(summary.results)
    if not bad:
        return f"All {total} results passed the validity checks, so every one is quoted below."
    groups: dict[str, list[Result]] = {}
    for r in bad:
        groups.setdefault(first_reason(r), []).append(r)
    parts = [f"{names(rs)}: {reason}" for reason, rs in groups.items()]
    return (
        f"Left out of every sentence here as invalid, {len(bad)} of {total} results: "
        + "; ".join(parts)
        + "."
    )


def latency_sentence(scenario: str, results: list[Result]) -> str:
    measured = valid(timed(results))
    left = invalid(results)
    dropped = f" (left out as invalid: {names(left)})" if left else ""
    if not measured:
        if left:
            return (
                f"In {scenario} no valid result timed a delivery{dropped}, so its latency is not"
                " quoted."
            )
        return (
            f"In {scenario} no delivery was timed by any of its {len(results)} results, so its"
            " latency is unknown."
        )
    floor = next((r for r in measured if is_floor(r)), None)
    others = [r for r in measured if not is_floor(r)]

    def pair(r: Result) -> str:
        return f"{num(r.latency_ms.p50)}/{num(r.latency_ms.p99)} ms"

    if floor is None:
        head = (
            f"In {scenario} the raw-TCP floor was not measured (or not validly), so no transport"
            " can be read against the machine's own cost"
        )
        text = head + best_clause(others) + dropped
        return text + "."
    f50, f99 = floor.latency_ms.p50, floor.latency_ms.p99
    assert f50 is not None and f99 is not None
    head = (
        f"In {scenario}, against the raw-TCP floor's p50/p99 of {pair(floor)}"
        f" ({run_label(floor)}, {floor.latency_ms.count:,} samples)"
    )
    if not others:
        return head + f", no other transport was validly timed{dropped}."
    near = [
        r
        for r in others
        if (r.latency_ms.p50 or 0) <= FLOOR_FACTOR * f50
        and (r.latency_ms.p99 or 0) <= FLOOR_FACTOR * f99
    ]
    far = [r for r in others if r not in near]
    near.sort(key=lambda r: r.latency_ms.p50 or 0)
    far.sort(key=lambda r: r.latency_ms.p50 or 0)
    text = head + ", "
    if near:
        text += (
            f"{', '.join(f'{run_label(r)} ({pair(r)})' for r in near)} stayed within"
            f" {FLOOR_FACTOR:g}{X} on both"
        )
    else:
        text += f"no transport stayed within {FLOOR_FACTOR:g}{X} on both"
    if far:
        text += "; " if near else ": "
        text += ", ".join(
            f"{run_label(r)} ({pair(r)}, {factor(r.latency_ms.p50 or 0, f50)}/"
            f"{factor(r.latency_ms.p99 or 0, f99)})"
            for r in far
        )
        text += " did not" if near else ""
    text += best_clause(others)
    thin = [r for r in measured if "p99" in too_few_samples(r.latency_ms.count)]
    if thin:
        text += (
            f" (p99 of {names(thin)} rests on fewer than 1,000 samples:"
            f" {', '.join(num(r.latency_ms.count) for r in thin)})"
        )
    return text + dropped + "."


def best_clause(results: list[Result]) -> str:
    """'; the lowest p99 was chat/ws's 2.25 [1.98-3.68] ms, not significantly below ...'."""
    ranked = sorted(
        (r for r in results if r.latency_ms.p99 is not None), key=lambda r: r.latency_ms.p99 or 0
    )
    if not ranked:
        return ""
    best = ranked[0]
    text = f"; the lowest p99 was {quoted(best)}"
    if len(ranked) == 1:
        return text
    second = ranked[1]
    overlap = compare(best, second)
    if overlap is None:
        return text + f", ahead of {quoted(second)} (no interval to judge the difference)"
    if overlap:
        return text + f", not significant against {quoted(second)} (the 95 % intervals overlap)"
    return text + f", significantly below {quoted(second)}"


def saturate_sentence(results: list[Result]) -> str:
    if not results:
        return "No saturate result, so the highest sustainable rate is not measured here."
    good = valid(results)
    left = invalid(results)
    dropped = f"left out as invalid: {names(left)}" if left else ""
    bound = next(
        (
            (r.parameters.get("options") or {}).get("latency_bound_ms")
            for r in results
            if r.parameters
        ),
        None,
    )
    held = sorted(
        (r for r in good if r.highest_rate_held),
        key=lambda r: -float((r.highest_rate_held or {}).get("deliveries_per_s") or 0),
    )
    broke = [r for r in good if not r.highest_rate_held]
    if not good:
        return (
            f"Under saturate no result is valid, so no highest sustainable rate is quoted"
            f" ({dropped}; see the saturate section)."
        )

    def rate(r: Result) -> str:
        best = r.highest_rate_held or {}
        text = f"{run_label(r)} {num(best.get('deliveries_per_s'), 0)}"
        spread = value_range(best.get("range"), 0)
        return text + (f" ({spread} over {repeat_count(r)} repeats)" if spread else "")

    text = (
        f"Under saturate the highest rate that held p99 ≤ {g(bound)} ms with every message"
        " delivered was "
    )
    text += (
        ", ".join(rate(r) for r in held) + " deliveries/s" if held else "reached by no valid result"
    )
    if broke:
        bits = []
        for r in broke:
            first = next((s for s in r.steps if s.latency_ms.p99 is not None), None)
            bits.append(
                f"{run_label(r)} (first step p99 {num(first.latency_ms.p99)} ms at"
                f" {num(first.deliveries_per_s, 0)} deliveries/s)"
                if first
                else f"{run_label(r)} (no step timed)"
            )
        text += f"; the first rate tried already broke the bound for {', '.join(bits)}"
    return text + (f"; {dropped}" if dropped else "") + "."


def idle_sentence(summary: Summary) -> str:
    idle = of(summary, "idle")
    if not idle:
        return "This run has no idle result, so what an idle connection costs is not measured here."
    left = invalid(idle)
    fitted = [r for r in valid(idle) if memory_total(r) is not None]
    dropped = f"; left out as invalid: {names(left)}" if left else ""
    if not fitted:
        return (
            f"None of the {len(idle)} idle results has a valid memory fit, so the cost of an idle"
            f" connection is not quoted{dropped}."
        )
    fitted.sort(key=lambda r: memory_total(r) or 0)
    parts = []
    for r in fitted:
        m = r.memory_per_connection
        total = memory_total(r) or 0
        interval = (
            f" {interval_text(m.rss_ci95[0] / 1024, m.rss_ci95[1] / 1024, 1)}" if m.rss_ci95 else ""
        )
        parts.append(
            f"{run_label(r)} {kib(m.rss_bytes)}{interval} + {kib(m.kernel_bytes)} ="
            f" {kib(total)} KiB (≈{approx(2**30 / total) if total > 0 else '-'} per GiB)"
        )
    against = sorted({r.memory_per_connection.fitted_against or "clients" for r in fitted})
    text = (
        f"One idle {per_what(fitted[0])} costs, server RSS slope [95 % interval] + kernel, fitted"
        f" against {' and '.join(against)}: " + "; ".join(parts)
    )
    others = [r for r in fitted if not is_floor(r)]
    if len(others) >= 2:
        a, b = others[0], others[1]
        same = stats.overlaps(
            _tuple(a.memory_per_connection.rss_ci95), _tuple(b.memory_per_connection.rss_ci95)
        )
        if same:
            text += (
                f"; the cheapest, {run_label(a)}, is not significantly below {run_label(b)}"
                " (their RSS intervals overlap)"
            )
        elif same is False:
            text += f"; the cheapest, {run_label(a)}, is significantly below {run_label(b)}"
    thin = [r for r in fitted if len(r.memory_per_connection.points) < 3]
    if thin:
        text += (
            f"; the fits of {names(thin)} pass through fewer than 3 plateaus, so their R² proves"
            " nothing"
        )
    fd_limit = summary.metadata.get("fd_limit")
    if fd_limit:
        text += f"; one server process is capped by its {fd_limit:,} open files"
    return text + dropped + "."


def polling_sentence(summary: Summary) -> str:
    polls = [r for r in summary.results if r.transport == "poll"]
    if not polls:
        return (
            "This run has no short-polling result, so its latency cannot be compared with its"
            " interval."
        )
    measured = [
        r
        for r in valid(timed(polls))
        if r.parameters.get("poll_interval_s") and r.scenario in LATENCY_SCENARIOS
    ]
    if not measured:
        return (
            f"Short polling has no valid timed result in chat, broadcast or game (of its"
            f" {len(polls)} results), so its latency is not compared with its interval."
        )
    by_interval: dict[float, list[Result]] = {}
    for r in measured:
        by_interval.setdefault(r.parameters["poll_interval_s"], []).append(r)
    parts = []
    ratios = []
    for interval, rs in sorted(by_interval.items()):
        half = interval * 500
        here = [(r.latency_ms.p50 or 0) / half for r in rs]
        ratios += here
        spread = f"{min(here):.2f}" if len(rs) == 1 else f"{min(here):.2f}-{max(here):.2f}"
        parts.append(
            f"at T = {interval:g} s it measured "
            + ", ".join(f"{quoted(r, 'p50')} and max {num(r.latency_ms.max)} ms" for r in rs)
            + f", against theory's p50 ≈ T/2 = {half:,.0f} ms ({spread}{X} of it)"
            f" and max ≈ T = {interval * 1000:,.0f} ms plus a round trip"
        )
    head = (
        "Short polling follows its interval"
        if all(0.8 <= x <= 1.25 for x in ratios)
        else "Short polling departs from its interval's theory"
    )
    return f"{head}: " + "; ".join(parts) + "."


def cost_sentence(summary: Summary) -> str:
    parts = []
    for scenario in scenarios_in(summary):
        rs = valid(of(summary, scenario))
        cpu = [r for r in rs if r.server_cpu_ms_per_1k_msgs is not None and not is_floor(r)]
        wire = [r for r in rs if r.bytes_per_message.total is not None and not is_floor(r)]
        floor = next((r for r in rs if is_floor(r)), None)
        bits = []
        if cpu:
            cpu.sort(key=lambda r: r.server_cpu_ms_per_1k_msgs or 0)
            best = cpu[0]
            text = f"server CPU {run_label(best)} {cpu_text(best)} ms per 1,000"
            notes = []
            if len(cpu) > 1:
                same = stats.overlaps(_tuple(cpu_range(best)), _tuple(cpu_range(cpu[1])))
                if same:
                    notes.append(
                        f"not significant against {run_label(cpu[1])} {cpu_text(cpu[1])} over"
                        " the repeats"
                    )
            if floor and floor.server_cpu_ms_per_1k_msgs is not None:
                notes.append(f"floor {run_label(floor)} {cpu_text(floor)}")
            bits.append(text + (f" ({'; '.join(notes)})" if notes else ""))
        if wire:
            best = min(wire, key=wire_total)
            text = f"bytes {run_label(best)} {bytes_pair(best)} B per delivery"
            if floor and floor.bytes_per_message.total is not None:
                text += f" (floor {run_label(floor)} {bytes_pair(floor)} B)"
            bits.append(text)
        if bits:
            parts.append(f"in {scenario}, " + ", ".join(bits))
    if not parts:
        return (
            "No valid result measured server CPU or bytes per message, so the cheapest transport"
            " is not known."
        )
    return (
        "Cheapest per delivery, floor aside (bytes as TCP payload/on the wire with headers): "
        + "; ".join(parts)
        + "."
    )


def wire_total(result: Result) -> float:
    """Bytes per delivery on the wire (headers included), or the payload where not recorded."""
    b = result.bytes_per_message
    return float(b.wire.get("total") or b.total or 0)


def bytes_pair(result: Result, key: str = "total") -> str:
    """'263/356': payload and on-the-wire bytes (with IP and TCP headers)."""
    b = result.bytes_per_message
    payload = getattr(b, key)
    wire = b.wire.get(key)
    return f"{num(payload, 0)}/{num(wire, 0)}" if wire is not None else num(payload, 0)


def caveats_sentence(summary: Summary) -> str:
    results = summary.results
    good = valid(results)
    warned = [r for r in results if r.warnings]
    parts = [f"{len(warned)} of {len(results)} results carry warnings (listed below)"]
    loads = [r for r in good if r.load_generator.cpu_percent_max is not None]
    if loads:
        busiest = max(loads, key=lambda r: r.load_generator.cpu_percent_max or 0)
        parts.append(
            f"the busiest load generator among valid results ran at"
            f" {num(busiest.load_generator.cpu_percent_max)} % of its core in {run_label(busiest)}"
            f" (limit {GENERATOR_SATURATED:g} %)"
        )
    elif good:
        parts.append("the load generator's CPU was not recorded")
    shared = shared_cores(summary.metadata)
    if shared:
        parts.append(
            f"the server and Locust ran on the same core ({', '.join(map(str, shared))}, per"
            " metadata cores_used), so they competed for it"
        )
    thin = [r for r in timed(good) if too_few_samples(r.latency_ms.count)]
    if thin:
        counts = sorted({r.latency_ms.count for r in thin})
        weakest = sorted(
            {p for r in thin for p in too_few_samples(r.latency_ms.count)},
            key=list(PERCENTILES).index,
        )
        parts.append(
            f"{len(thin)} valid results have too few samples ({num(counts[0])}"
            f"{'-' + num(counts[-1]) if len(counts) > 1 else ''}) for"
            f" {', '.join(PCT_NAMES[p] for p in weakest)}"
        )
    extra = [r for r in good if r.deliveries.extra]
    if extra:
        parts.append(
            "deliveries nobody expected were counted in "
            + ", ".join(
                f"{run_label(r)} ({num(r.deliveries.extra)}: "
                + (
                    ", ".join(f"{why} {n:,}" for why, n in r.deliveries.extra_reasons.items())
                    or "no reason recorded"
                )
                + ")"
                for r in extra
            )
        )
    parts.append(sampling_text(summary.metadata))
    counts = {repeat_count(r) for r in results}
    if counts == {1}:
        parts.append(
            "every result is one repeat, so the spread between runs is not measured: the"
            " intervals cover sampling within a run only"
        )
    return "Caveats: " + "; ".join(parts) + "."


# -- charts -------------------------------------------------------------------------------------


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


def chart_latency(ctx: Context, scenario: str) -> Chart | None:
    results = timed(of(ctx.summary, scenario))
    if not results:
        ctx.skipped.append(
            f"Latency percentiles, {scenario}: no {scenario} result timed a delivery."
        )
        return None
    fig = new_figure(4.8)
    ax = fig.add_subplot()
    thin = False
    floor = next((r for r in valid(results) if is_floor(r)), None)
    labels: list[tuple[int, float, float | None]] = []  # (column, p50, p99)
    for i, r in enumerate(results):
        lat = r.latency_ms
        colour = colour_of(r.label) if r.valid else INVALID_GREY
        weak = set(too_few_samples(lat.count))
        keys = [k for k in PERCENTILES if getattr(lat, k) is not None]
        ax.plot(
            [i + PCT_OFFSETS[k] for k in keys], [getattr(lat, k) for k in keys], color=colour,
            lw=2.5 if r.valid else 1.2, alpha=0.35 if r.valid else 0.8,
            ls="-" if r.valid else ":", zorder=2,
        )  # fmt: skip
        for key in keys:
            value = getattr(lat, key)
            interval = ci(lat, key)
            if interval is not None:
                ax.vlines(i + PCT_OFFSETS[key], *interval, color=colour, lw=1.3, zorder=2)
                for end in interval:
                    ax.plot([i + PCT_OFFSETS[key]], [end], ls="none", marker="_", ms=7,
                            mew=1.3, color=colour, zorder=2)  # fmt: skip
            hollow = key in weak or not r.valid
            thin = thin or (key in weak and r.valid)
            ax.plot(
                [i + PCT_OFFSETS[key]], [value], ls="none", marker=PCT_MARKERS[key], ms=7, mew=1.6,
                color=colour, mfc="white" if hollow else colour, zorder=3,
            )  # fmt: skip
        labels.append((i, lat.p50 or 0.0, lat.p99))
    handles: list[Any] = [
        Line2D([], [], ls="none", marker=PCT_MARKERS[k], color="#333333", ms=6, label=PCT_NAMES[k])
        for k in PERCENTILES
    ]
    handles.append(
        Line2D([], [], color="#333333", lw=1.3, marker="_", ms=7, label="95 % interval\n(p50, p99)")
    )
    if floor is not None:
        ax.axhline(floor.latency_ms.p50 or 0, color=FLOOR_COLOUR, ls="--", lw=1.1, zorder=1)
        handles.append(
            Line2D([], [], color=FLOOR_COLOUR, ls="--", lw=1.1,
                   label=f"raw-TCP floor p50\n({num(floor.latency_ms.p50)} ms)")
        )  # fmt: skip
    if thin:
        handles.append(
            Line2D([], [], ls="none", marker="o", color="#333333", mfc="white", ms=6,
                   label="hollow: too few\nsamples to support it")
        )  # fmt: skip
    if invalid(results):
        handles.append(
            Line2D([], [], ls=":", marker="o", color=INVALID_GREY, mfc="white", ms=6,
                   label="grey, hollow: invalid\n(reasons below)")
        )  # fmt: skip
    ax.set_xticks(
        range(len(results)),
        labels=[
            f"{r.label}\nn = {r.latency_ms.count:,}" + ("" if r.valid else "\ninvalid")
            for r in results
        ],
    )
    for tick, r in zip(ax.get_xticklabels(), results, strict=True):
        tick.set_color(
            INVALID_GREY if not r.valid else "#555555" if is_floor(r) else colour_of(r.label)
        )
    ax.set_xlim(-0.7, len(results) - 0.3)
    ax.set_yscale("log")
    log_axis(ax.yaxis)
    _label_percentiles(ax, labels)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("delivery latency (ms, log scale)")
    ax.set_xlabel("transport (n = deliveries timed)")
    title = f"{scenario}: delivery latency percentiles per transport"
    ax.set_title(title, loc="left")
    fig.legend(handles=handles, loc="outside right upper", title="percentile")
    caption = (
        "Delivery latency (receipt minus scheduled send) at p50, p90, p99 and p99.9, log scale;"
        " labels give p50 (left) and p99 (right) in ms; bars are 95 % intervals that resample"
        f" messages. {samples_text(results)}."
        + (
            " Hollow markers: fewer than 10 samples lie beyond that percentile (p99 needs 1,000"
            " samples, p99.9 10,000), so it is an indication only."
            if thin
            else ""
        )
        + (
            " Dashed grey line: the raw-TCP floor's p50."
            if floor
            else " No valid raw-TCP floor in this run."
        )
        + invalid_caption(results, "Grey and hollow, not comparable")
        + f" {scenario}: {workload(of(ctx.summary, scenario))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, f"latency-{scenario}", title)


def _label_percentiles(ax: Any, labels: list[tuple[int, float, float | None]]) -> None:
    """p50 to the left of its column, p99 to the right; a p50 label that would meet the
    previous column's p99 label (about the same height) goes under its marker instead."""
    low, high = (math.log10(v) for v in ax.get_ylim())
    near = (high - low) * 0.06

    def height(value: float) -> float:
        return math.log10(max(value, 1e-9))

    previous: float | None = None
    for column, p50, p99 in labels:
        box = {"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.8}
        x50 = column + PCT_OFFSETS["p50"]
        if previous is not None and abs(height(p50) - previous) < near:
            ax.annotate(num(p50), (x50, p50), xytext=(0, -9), textcoords="offset points",
                        ha="center", va="top", fontsize=7.5, color="#222222", bbox=box)  # fmt: skip
        else:
            ax.annotate(num(p50), (x50, p50), xytext=(-6, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=7.5, color="#222222", bbox=box)  # fmt: skip
        if p99 is not None:
            ax.annotate(num(p99), (column + PCT_OFFSETS["p999"], p99), xytext=(6, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=7.5,
                        color="#222222", bbox=box)  # fmt: skip
        previous = height(p99) if p99 is not None else None


def chart_cdf(ctx: Context, scenario: str) -> Chart | None:
    results = timed(of(ctx.summary, scenario))
    curves = []
    missing = []
    for r in valid(results):
        values = ctx.latencies_ms(r)
        if values is None or not len(values):
            missing.append(run_label(r))
            continue
        curves.append((r, values))
    if not curves:
        why = (
            f"no valid {scenario} result timed a delivery"
            if not valid(results)
            else f"messages.npz missing for {', '.join(missing)}"
        )
        ctx.skipped.append(f"Latency CDF, {scenario}: {why}.")
        return None
    fig = new_figure(4.2)
    ax = fig.add_subplot()
    for r, values in curves:
        ordered = np.sort(np.clip(values, 1e-3, None))
        fraction = np.arange(1, len(ordered) + 1) / len(ordered)
        if len(ordered) > 4000:  # a line of 4,000 steps draws the curve at the figure's size
            keep = np.unique(np.linspace(0, len(ordered) - 1, 4000).astype(int))
            ordered, fraction = ordered[keep], fraction[keep]
        ax.plot(
            np.concatenate(([ordered[0]], ordered)), np.concatenate(([0.0], fraction)),
            color=colour_of(r.label), lw=2.2 if is_floor(r) else 1.6,
            ls="--" if is_floor(r) else "-", drawstyle="steps-post",
            label=f"{r.label}{' (floor)' if is_floor(r) else ''}, n = {len(values):,}",
        )  # fmt: skip
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel("delivery latency (ms, log scale)")
    ax.set_ylabel("fraction of deliveries at or below")
    ax.set_ylim(0, 1.02)
    title = f"{scenario}: delivery latency distribution (CDF)"
    ax.set_title(title, loc="left")
    fig.legend(loc="outside right upper")
    caption = (
        "Cumulative distribution of every timed delivery (receipt minus scheduled send) whose"
        " message was scheduled in the measurement window, all repeats together, from each"
        " repeat's messages.npz; x log scale."
        + (f" No messages.npz for {', '.join(missing)}." if missing else "")
        + invalid_caption(results, "Left out")
        + f" {scenario}: {workload(of(ctx.summary, scenario))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, f"cdf-{scenario}", title)


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
        solid = (
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
        ys = [s.latency_ms.p99 for s in steps]
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
    handles, labels = ax.get_legend_handles_labels()
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
    fig.legend(handles + extra, labels + [h.get_label() for h in extra], loc="outside right upper")
    counts = [s.latency_ms.count for r in results for s in r.steps if s.latency_ms.count]
    caption = (
        "Each point is one step of the ramp: deliveries per second against that step's p99 delivery"
        " latency. A step holds when p99 ≤ the bound and every message is delivered."
        + (f" Samples per step: {min(counts):,}-{max(counts):,}." if counts else "")
        + invalid_caption(results, "Dotted and hollow, not comparable")
        + f" saturate: {workload(everything)}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "saturate-hockey-stick", title)


def _grouped_bars(
    ax: Any,
    ctx: Context,
    value: Callable[[Result], float | None],
    text: Callable[[Result], str],
    behind: Callable[[Result], float | None] | None = None,
    spread: Callable[[Result], Sequence[float] | None] | None = None,
    log: bool = False,
) -> tuple[list[str], list[Patch], list[Result], float | None]:
    """Bars grouped by scenario, one colour per transport, invalid ones hollow and hatched;
    ``behind`` draws a wider, lighter bar under each (wire bytes under payload), ``spread``
    an error bar (the repeats' range).

    Valid results set the scale: an invalid bar far above them is cut at a ceiling, its label
    marked with an arrow, so that it cannot flatten the figures that count. Returns the
    scenarios, one legend handle a transport (solid, whatever the validity of its first bar),
    the results drawn and the ceiling (None when nothing was cut).
    """
    scenarios = [
        s
        for s in scenarios_in(ctx.summary)
        if any(value(r) is not None for r in of(ctx.summary, s))
    ]
    labels: list[str] = []
    for s in scenarios:
        for r in of(ctx.summary, s):
            if value(r) is not None and r.label not in labels:
                labels.append(r.label)
    labels.sort(key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    width = 0.84 / max(len(labels), 1)
    bars = []  # (x, result, value, value behind, spread, top)
    for j, name in enumerate(labels):
        for i, s in enumerate(scenarios):
            r = find(ctx.summary, s, name)
            v = value(r) if r else None
            if r is None or v is None:
                continue
            under = behind(r) if behind is not None else None
            found = spread(r) if spread is not None else None
            top = max([v, *([under] if under is not None else []), *(found or [])])
            bars.append((i + (j - (len(labels) - 1) / 2) * width, r, v, under, found, top))
    highest = max((top for _, r, *_, top in bars if r.valid), default=None)
    ceiling = None
    if highest and any(top > highest * 1.5 for _, r, *_, top in bars if not r.valid):
        ceiling = highest * (2.0 if log else 1.3)
    for x, r, v, under, found, top in bars:
        colour = colour_of(r.label)
        if under is not None:
            ax.bar([x], [under], width=width * 0.92, color=colour, alpha=0.3, lw=0, zorder=2)
        style = (
            {"color": colour}
            if r.valid
            else {"facecolor": "white", "edgecolor": colour, "hatch": "///"}
        )
        ax.bar([x], [v], width=width * (0.62 if behind else 0.92), lw=1.0, zorder=3, **style)
        if found:
            ax.vlines(x, min(found), max(found), color="#222222", lw=1.0, zorder=4)
        cut_here = ceiling is not None and top > ceiling
        ax.annotate(("\N{UPWARDS ARROW} " if cut_here else "") + text(r),
                    (x, ceiling if cut_here else top), xytext=(0, 2), textcoords="offset points",
                    rotation=90, ha="center", va="bottom", fontsize=6.5,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.8} if cut_here else None)  # fmt: skip
    ax.set_xticks(
        range(len(scenarios)),
        labels=[s if s != "saturate" else "saturate\n(highest step held)" for s in scenarios],
    )
    ax.grid(axis="x", visible=False)
    handles = [Patch(facecolor=colour_of(n), label=n) for n in labels]
    return scenarios, handles, [b[1] for b in bars], ceiling


CUT_NOTE = " ↑: an invalid bar cut at the top of the axis (its value in the label)."


def chart_cpu(ctx: Context) -> Chart | None:
    def value(r: Result) -> float | None:
        return r.server_cpu_ms_per_1k_msgs

    if not any(value(r) is not None for r in ctx.summary.results):
        ctx.skipped.append("Server CPU per 1,000 messages: no result measured it.")
        return None
    fig = new_figure(4.6)
    ax = fig.add_subplot()
    scenarios, handles, drawn, ceiling = _grouped_bars(
        ax, ctx, value, lambda r: f"{value(r) or 0:,.1f}", spread=cpu_range
    )
    if ceiling is not None:
        ax.set_ylim(0, ceiling * 1.25)
    else:
        ax.margins(y=0.2)
    ax.set_ylabel("server CPU per 1,000 deliveries (ms)")
    title = "Server CPU per 1,000 delivered messages"
    ax.set_title(title, loc="left")
    if invalid(drawn):
        handles.append(invalid_handle())
    several = any(cpu_range(r) for r in drawn)
    fig.legend(handles=handles, loc="outside right upper")
    caption = (
        "Server process CPU (user + system) from the measurement window's start to the end of the"
        " drain, per 1,000 deliveries"
        + ("; saturate at its highest step held" if "saturate" in scenarios else "")
        + f"; {deliveries_text(ctx.summary, scenarios)}. {sampling_text(ctx.summary.metadata)}."
        + (
            " Black bars: the lowest and highest of the repeats."
            if several
            else " One repeat a result: the spread between runs is not measured."
        )
        + invalid_caption(drawn, "Hollow, hatched, not comparable")
        + (CUT_NOTE if ceiling is not None else "")
        + " "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s in scenarios)
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "cpu-per-1k", title)


def chart_bytes(ctx: Context) -> Chart | None:
    def has(r: Result) -> bool:
        return r.bytes_per_message.down is not None or r.bytes_per_message.up is not None

    if not any(has(r) for r in ctx.summary.results):
        ctx.skipped.append("Bytes per message: no result measured them.")
        return None
    fig = new_figure(7.4)
    top, bottom = fig.subplots(2, 1)
    scenarios: list[str] = []
    handles: list[Any] = []
    drawn: list[Result] = []
    cut_any = False
    for ax, key, what in (
        (top, "down", "down: server → clients, per delivery"),
        (bottom, "up", "up: clients → server, per message sent"),
    ):

        def payload(r: Result, key: str = key) -> float | None:
            return getattr(r.bytes_per_message, key)

        def wire(r: Result, key: str = key) -> float | None:
            return r.bytes_per_message.wire.get(key)

        shown, transports, results, ceiling = _grouped_bars(
            ax, ctx, payload, lambda r, key=key: bytes_pair(r, key), behind=wire, log=True
        )
        scenarios = scenarios or shown
        handles = handles or transports
        drawn += [r for r in results if r not in drawn]
        cut_any = cut_any or ceiling is not None
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        values = [v for r in results for v in (payload(r), wire(r)) if v]
        if values:  # bars on a log axis start at a round decade below the data
            ax.set_ylim(10 ** math.floor(math.log10(min(values))), (ceiling or max(values)) * 4)
        ax.set_ylabel("bytes (log scale)")
        ax.set_title(what, loc="left", fontsize=10)
    handles += [
        Patch(facecolor="#777777", label="TCP payload"),
        Patch(facecolor="#777777", alpha=0.3, label="on the wire\n(+ IP/TCP headers)"),
    ]
    if invalid(drawn):
        handles.append(invalid_handle())
    fig.legend(handles=handles, loc="outside right upper")
    title = "Bytes per message: TCP payload and on the wire"
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    headers = sorted(
        {h for r in drawn if (h := r.bytes_per_message.header_bytes_per_segment) is not None}
    )
    caption = (
        "Bytes from the kernel's TCP counters over the window and drain: down per delivery, up"
        " per message sent; labels give payload/wire. Payload (narrow, solid) is what TCP"
        " carried; on the wire (wide, light) adds every segment's IP and TCP headers"
        + (f" ({', '.join(map(str, headers))} bytes a segment)" if headers else "")
        + "; empty polls, heartbeats, pings and HTTP headers count;"
        f" {deliveries_text(ctx.summary, scenarios)}."
        + invalid_caption(drawn, "Hollow, hatched, not comparable")
        + (CUT_NOTE if cut_any else "")
        + " "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s in scenarios)
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "bytes-per-message", title)


def poll_results(summary: Summary) -> list[Result]:
    """Short polling in chat, broadcast and game with its interval recorded (any validity)."""
    return [
        r
        for s in LATENCY_SCENARIOS
        for r in timed(of(summary, s))
        if r.transport == "poll" and r.parameters.get("poll_interval_s")
    ]


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

    def once(name: str) -> str | None:
        """One legend entry a series, however many columns draw it."""
        if name in named:
            return None
        named.add(name)
        return name

    for i, r in enumerate(results):
        interval = r.parameters["poll_interval_s"]
        lat = r.latency_ms
        ax.hlines(interval * 500, i - 0.32, i + 0.32, color=colour, ls="--", lw=1.3,
                  label=once("theory: p50 ≈ T/2"), zorder=1)  # fmt: skip
        ax.hlines(interval * 990, i - 0.32, i + 0.32, color=colour, ls=":", lw=1.6,
                  label=once("theory: p99 ≈ 0.99·T"), zorder=1)  # fmt: skip
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
            ax.annotate(num(value), (i + dx, value), xytext=(8 if dx > 0 else -8, 0),
                        textcoords="offset points", ha="left" if dx > 0 else "right",
                        va="center", fontsize=7.5, color="#222222",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.8, "alpha": 0.85})  # fmt: skip
        reference = find(ctx.summary, r.scenario, "longpoll")
        if reference is not None and reference.valid and reference.latency_ms.p50 is not None:
            ax.plot([i], [reference.latency_ms.p50], ls="none", marker="D", ms=6, color=longpoll,
                    zorder=3, label=once("longpoll p50, same scenario"))  # fmt: skip
            ax.annotate(f"{num(reference.latency_ms.p50)} ms", (i, reference.latency_ms.p50),
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


def draw_charts(ctx: Context) -> None:
    present = scenarios_in(ctx.summary)
    makers: list[Callable[[], Chart | None]] = []
    for scenario in LATENCY_SCENARIOS:
        if scenario in present:
            makers.append(lambda s=scenario: chart_latency(ctx, s))
            makers.append(lambda s=scenario: chart_cdf(ctx, s))
        else:
            ctx.skipped.append(f"Latency, {scenario}: no {scenario} result in this run.")
    makers += [
        lambda: chart_memory(ctx),
        lambda: chart_memory_fit(ctx) if of(ctx.summary, "idle") else None,
        lambda: chart_saturate(ctx),
        lambda: chart_cpu(ctx),
        lambda: chart_bytes(ctx),
        lambda: (
            chart_polling(ctx) if any(r.transport == "poll" for r in ctx.summary.results) else None
        ),
    ]
    with matplotlib.rc_context(RC):
        for make in makers:
            chart = make()
            if chart is not None:
                ctx.charts[chart.name] = chart


# -- the document: one model, rendered to Markdown and to HTML ----------------------------------


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


def document(
    summary: Summary, run_dir: Path, charts: dict[str, Chart], skipped: list[str]
) -> list[Block]:
    metadata = summary.metadata
    figures = Figures(charts)
    good = len(valid(summary.results))
    blocks: list[Block] = [
        Heading(1, f"wirewise report: run {run_dir.name}"),
        Para(
            f"{len(summary.results)} results (scenario {X} transport; {good} valid) from"
            f" {started(metadata)}, on {metadata.get('cpu_model', 'an unknown CPU')}"
            f" ({cores_text(metadata)}), commit {short_commit(str(metadata.get('git_commit', '')))}."
            " Latencies in milliseconds with 95 % intervals in brackets, memory in KiB (1,024"
            " bytes), bytes per message as TCP payload and on the wire (with IP/TCP headers)."
        ),
        Heading(2, "Verdict", "verdict"),
        Bullets(list(verdict(summary))),
        Heading(2, "Conditions", "conditions"),
        conditions_table(summary),
    ]
    for scenario in scenarios_in(summary):
        results = of(summary, scenario)
        if scenario == "faults":
            blocks.append(Heading(2, "Reliability (scenario: faults)", "reliability"))
            blocks.append(Para(f"{workload(results)}. {RELIABILITY_TEXT}"))
            blocks.append(reliability_table(results))
            blocks += invalid_list(results)
            blocks.append(Heading(3, "faults: delivery latency through the faults"))
            blocks.append(latency_table(results, with_ci=False))
            continue
        blocks.append(Heading(2, f"Scenario: {scenario}", slug(f"scenario {scenario}")))
        blocks.append(Para(f"{workload(results)}."))
        if scenario == "idle":
            blocks.append(idle_table(results))
            blocks += invalid_list(results)
            blocks += figures.place("memory-per-connection", "memory-fit")
        elif scenario == "saturate":
            blocks.append(saturate_table(results))
            blocks += invalid_list(results)
            blocks += figures.place("saturate-hockey-stick")
            steps = saturate_steps_table(results)
            if steps.rows:
                blocks.append(Heading(3, "saturate: every ramp step"))
                blocks.append(steps)
        else:
            blocks.append(latency_table(results))
            blocks += invalid_list(results)
            blocks += figures.place(f"latency-{scenario}", f"cdf-{scenario}")
    if not summary.results:
        blocks.append(Para("This run holds no results."))
    costs = cost_table(summary)
    if costs.rows:
        blocks.append(Heading(2, "Cost per delivery", "cost"))
        blocks.append(Para(f"{sampling_text(metadata)}; {repeats_text(summary)}."))
        blocks.append(costs)
        blocks += figures.place("cpu-per-1k", "bytes-per-message")
    polls = poll_results(summary)
    if polls:
        blocks.append(Heading(2, "Short polling against its interval", "polling"))
        blocks.append(polling_table(polls))
        blocks += figures.place("polling-interval")
    blocks.append(Heading(2, "Warnings", "warnings"))
    groups = warning_groups(summary)
    blocks.append(Bullets(groups) if groups else Para("No result carries a warning."))
    leftover = figures.rest()
    if leftover:
        blocks.append(Heading(2, "Other charts", "charts"))
        blocks += leftover
    if skipped:
        blocks.append(Heading(3, "Charts not drawn"))
        blocks.append(Bullets(list(skipped)))
    return blocks


def conditions_table(summary: Summary) -> Table:
    m = summary.metadata
    plan = m.get("plan") or {}
    settings: dict[str, Any] = {}
    for r in summary.results:
        settings = settings or r.parameters.get("server_settings") or {}
    rows = [
        ["CPU", f"{m.get('cpu_model')}, {cores_text(m)}"],
        ["kernel", str(m.get("kernel"))],
        ["platform", str(m.get("platform"))],
        ["Python", str(m.get("python"))],
        ["wirewise", f"{m.get('wirewise_version')}, commit {m.get('git_commit')}"],
        ["started", str(m.get("started_at"))],
        ["command", shlex.join(str(a) for a in m.get("argv") or [])],
        ["repeats", repeats_text(summary)],
        ["validity", f"{len(valid(summary.results))} of {len(summary.results)} results valid"],
    ]
    sampling = m.get("sampling") or {}
    rows.append(
        [
            "sampling",
            "; ".join(
                f"{k.replace('_', ' ')}: {g(v) if isinstance(v, float) else v}"
                for k, v in sampling.items()
            )
            or "not recorded",
        ]
    )
    if m.get("libraries"):
        rows.append(["libraries", ", ".join(f"{k} {v}" for k, v in m["libraries"].items())])
    if plan:
        rows.append(
            ["plan", ", ".join(f"{k}={_plain(v)}" for k, v in plan.items() if k not in ("out",))]
        )
    if settings:
        rows.append(["server settings", ", ".join(f"{k}={v}" for k, v in settings.items())])
    if m.get("fd_limit"):
        rows.append(["open-file limit", f"{m['fd_limit']:,}"])
    return Table(["", ""], rows, align="ll", key_value=True)


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(map(str, value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def validity_cell(result: Result) -> str:
    if result.valid:
        return "yes"
    count = len(result.validity.reasons)
    return f"INVALID ({count} reason{'s' if count != 1 else ''})"


def invalid_list(results: list[Result]) -> list[Block]:
    """Under a table: every reason of every invalid result in it (results with the same
    reasons together)."""
    groups: dict[tuple[str, ...], list[Result]] = {}
    for r in invalid(results):
        groups.setdefault(tuple(r.validity.reasons) or ("no reason recorded",), []).append(r)
    if not groups:
        return []
    return [
        Para("Invalid, not comparable (every reason):", "note"),
        Bullets([(names(rs), list(reasons)) for reasons, rs in groups.items()]),
    ]


def pct_cell(latency: Latency, key: str, with_ci: bool = True) -> str:
    value = getattr(latency, key)
    if value is None:
        return "-"
    text = pct(latency, key) if with_ci else num(value)
    return text + (" †" if key in too_few_samples(latency.count or 0) else "")


THIN_NOTE = (
    "† fewer than 10 samples lie beyond this percentile (p99 needs 1,000 samples, p99.9 10,000):"
    " an indication only."
)
CI_NOTE = (
    f"[low{DASH}high]: the 95 % interval of the percentile, resampling messages (a message's"
    " deliveries move together), over every repeat."
)


def warnings_cell(result: Result) -> str:
    return str(len(result.warnings)) if result.warnings else ""


def latency_table(results: list[Result], with_ci: bool = True) -> Table:
    several = any(repeat_count(r) > 1 for r in results)
    rows = []
    for r in results:
        lat, d = r.latency_ms, r.deliveries
        row = [
            r.label,
            validity_cell(r),
            pct_cell(lat, "p50", with_ci),
            pct_cell(lat, "p99", with_ci),
            pct_cell(lat, "p999", False),
        ]
        if several:
            row.append(", ".join(num(v) for v in repeat_p99s(r)) or "-")
        row += [
            num(lat.count),
            num(d.expected),
            num(d.delivered),
            num(d.lost),
            num(d.extra),
            num(r.throughput_msgs_per_s, 0),
            num(r.load_generator.cpu_percent_max, 0),
            warnings_cell(r),
        ]
        rows.append(row)
    header = ["transport", "valid", "p50 ms", "p99 ms", "p99.9 ms"]
    if several:
        header.append("p99 of each repeat")
    header += ["samples", "expected", "delivered", "lost", "extra", "msgs/s", "Locust CPU %",
               "warnings"]  # fmt: skip
    return Table(
        header,
        rows,
        align="ll" + "r" * (len(header) - 2),
        note=THIN_NOTE
        + (f" {CI_NOTE}" if with_ci else "")
        + " msgs/s: deliveries a second in the window. extra: deliveries nobody expected (their"
        " reasons are in the warnings or the summary). Locust CPU %: the busiest load-generator"
        f" process (over {GENERATOR_SATURATED:g} % it saturates, and the result is invalid)."
        " Server CPU and bytes are under Cost per delivery.",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )


def idle_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        m = r.memory_per_connection
        total = memory_total(r)
        rss = kib(m.rss_bytes)
        if m.rss_ci95:
            rss += f" {interval_text(m.rss_ci95[0] / 1024, m.rss_ci95[1] / 1024, 1)}"
        points = m.points
        plateaus = ", ".join(f"{p.get('clients', 0):,}" for p in points) or "-"
        top = points[-1] if points else {}
        per_client = (
            f"{top['connections'] / top['clients']:.2f}"
            if top.get("clients") and top.get("connections") is not None
            else "-"
        )
        rows.append(
            [
                r.label,
                validity_cell(r),
                rss,
                kib(m.uss_bytes),
                kib(m.kernel_bytes),
                kib(total),
                approx(2**30 / total) if total and total > 0 else "-",
                f"{m.r2:.3f}" if m.r2 is not None else "-",
                m.fitted_against or "-",
                plateaus,
                per_client,
                num(m.idle_cpu_percent_per_1k_connections),
                num(r.load_generator.cpu_percent_max, 0),
                warnings_cell(r),
            ]
        )
    return Table(
        ["transport", "valid", "RSS KiB [95 %]", "USS KiB", "kernel KiB", "RSS+kernel KiB",
         "per GiB", "R²", "fitted against", "clients at plateaus", "connections per client (top)",
         "idle CPU % per 1k", "Locust CPU %", "warnings"],
        rows,
        align="ll" + "r" * 6 + "lr" + "rrrr",
        note="Per idle client: slopes of least-squares fits against the clients at each plateau"
        " (fitted against), with the RSS slope's 95 % interval (Student's t over the plateaus)."
        " kernel: half the slope of sockstat pages plus TCP slab objects (both ends of a loopback"
        " connection live in one kernel). per GiB: 1 GiB / (RSS + kernel), two significant"
        " figures. connections per client: the server's connections over the clients at the top"
        " plateau (above 1, a client holds more than one).",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


RELIABILITY_TEXT = (
    "Mid-run the server is killed with SIGKILL and started again on the same port; meanwhile one"
    " reader stops reading while a flood of large messages goes to its room. Every expected"
    " delivery is checked one by one: delivered, lost with a gap (the killed process's history,"
    " signalled), or lost silently (the protocol allows none)."
)


def reliability_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        f = r.faults or {}
        rec = f.get("reconnect_ms") or {}
        clients = f.get("clients")
        rows.append(
            [
                r.label,
                validity_cell(r),
                num(f.get("outage_s"), 2),
                f"{num(rec.get('count'))} of {num(clients)}"
                + (" (all)" if f.get("all_back") else ""),
                num(rec.get("p50"), 0),
                num(rec.get("p99"), 0),
                num(rec.get("max"), 0),
                num(f.get("lost_without_resume")),
                num(f.get("lost_with_resume")),
                num(f.get("lost_signalled")),
                num(f.get("lost_silently")),
                num(f.get("gaps_signalled")),
                "n/a"
                if f.get("slow_consumer_disconnects") is None
                else num(f["slow_consumer_disconnects"]),
                kib(f["server_rss_peak_bytes"] / 1024, 0)
                if f.get("server_rss_peak_bytes")
                else "-",
                warnings_cell(r),
            ]
        )
    return Table(
        ["transport", "valid", "outage s", "clients back", "reconnect p50 ms", "reconnect p99 ms",
         "reconnect max ms", "lost without resume", "lost with resume", "of which with a gap",
         "silently", "gaps", "slow-consumer cut-offs", "RSS peak MiB", "warnings"],
        rows,
        align="ll" + "r" * 13,
        note="Reconnect: from the new process listening to each client's first message on a new"
        " connection (outage: from the kill until it listened). Lost without resume: what a client"
        " that reconnects from 'now' would have missed (the deliveries replayed by resume plus those"
        " lost anyway). slow-consumer cut-offs: the server's own count (n/a for polling: no live"
        " queue). RSS peak: the highest server RSS sampled (every 0.5 s), both processes.",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


def saturate_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        best = r.highest_rate_held or {}
        lat, d = r.latency_ms, r.deliveries
        held = num(best.get("deliveries_per_s"), 0)
        spread = value_range(best.get("range"), 0)
        if spread:
            held += f" ({spread}, {best.get('repeats_held', '?')} of {repeat_count(r)} held)"
        rows.append(
            [
                r.label,
                validity_cell(r),
                held,
                num(best.get("rate_per_user")),
                pct_cell(lat, "p50"),
                pct_cell(lat, "p99"),
                num(lat.count),
                f"{sum(s.held for s in r.steps)} of {len(r.steps)}",
                str(r.stopped_by or "-"),
                num(d.expected),
                num(d.delivered),
                num(d.lost),
                cpu_text(r),
                num(r.load_generator.cpu_percent_max, 0),
                warnings_cell(r),
            ]
        )
    return Table(
        ["transport", "valid", "highest deliveries/s held", "msg/s per user", "p50 ms", "p99 ms",
         "samples", "steps held", "stopped by", "expected", "delivered", "lost", "CPU ms/1k",
         "Locust CPU %", "warnings"],
        rows,
        align="llrrrrrrlrrrrrr",
        note="Latency, deliveries and CPU of the highest step that held (p99 ≤ bound, every message"
        " delivered). A ramp that ended before the transport's knee is invalid: its highest rate"
        f" held is only a lower bound. {THIN_NOTE} {CI_NOTE}",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


def saturate_steps_table(results: list[Result]) -> Table:
    rows = []
    invalid_rows = set()
    for r in results:
        for s in r.steps:
            if not r.valid:
                invalid_rows.add(len(rows))
            rows.append(
                [
                    r.label + ("" if r.valid else " (invalid)"),
                    str(s.step),
                    num(s.rate_per_user),
                    num(s.sent_per_s, 1),
                    num(s.deliveries_per_s, 1),
                    pct_cell(s.latency_ms, "p50", False),
                    pct_cell(s.latency_ms, "p99", False),
                    num(s.latency_ms.count),
                    num(s.lag_p99_ms),
                    num(s.server_cpu_percent, 1),
                    num(s.generator_cpu_percent, 1),
                    "yes" if s.held else f"no: {s.why}" if s.why else "no",
                ]
            )
    return Table(
        ["transport", "step", "msg/s per user", "sent/s", "deliveries/s", "p50 ms", "p99 ms",
         "samples", "schedule lag p99 ms", "server CPU %", "Locust CPU %", "held"],
        rows,
        align="lrrrrrrrrrrl",
        invalid_rows=invalid_rows,
    )  # fmt: skip


def cost_table(summary: Summary) -> Table:
    """Server CPU and bytes per delivery, every result that measured them."""
    rows = []
    marked = set()
    for scenario in scenarios_in(summary):
        for r in of(summary, scenario):
            b, gen = r.bytes_per_message, r.load_generator
            if r.server_cpu_ms_per_1k_msgs is None and b.total is None:
                continue
            if not r.valid:
                marked.add(len(rows))
            rows.append(
                [
                    scenario,
                    r.label,
                    validity_cell(r),
                    cpu_text(r),
                    num(gen.server_cpu_us_per_delivery),
                    num(gen.cpu_us_per_delivery),
                    bytes_pair(r, "down"),
                    bytes_pair(r, "up"),
                    bytes_pair(r, "total"),
                    num(b.header_bytes_per_segment),
                ]
            )
    return Table(
        ["scenario", "transport", "valid", "server CPU ms/1k (repeats)", "server µs/delivery",
         "Locust µs/delivery", "bytes down payload/wire", "bytes up payload/wire",
         "bytes total payload/wire", "header bytes/segment"],
        rows,
        align="lll" + "r" * 7,
        note="CPU ms/1k: server CPU per 1,000 deliveries (saturate: its highest step held); in"
        " brackets the lowest and highest of the repeats when there are several. Locust µs per"
        " delivery against the server's: what the load generator paid to measure what the server"
        " did. Bytes: payload is TCP payload; wire adds every segment's IP and TCP headers. down"
        " per delivery, up per message sent, total per delivery.",
        invalid_rows=marked,
    )  # fmt: skip


def polling_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        interval = r.parameters["poll_interval_s"]
        half = interval * 500
        rows.append(
            [
                r.scenario,
                validity_cell(r),
                g(interval),
                pct_cell(r.latency_ms, "p50"),
                f"{half:,.0f}",
                f"{(r.latency_ms.p50 or 0) / half:.2f}",
                pct_cell(r.latency_ms, "p99"),
                f"{interval * 990:,.0f}",
                num(r.latency_ms.max),
                num(r.latency_ms.count),
            ]
        )
    return Table(
        ["scenario", "valid", "T s", "p50 ms", "theory T/2 ms", "p50 / theory", "p99 ms",
         "theory 0.99·T ms", "max ms", "samples"],
        rows,
        align="llrrrrrrrr",
        note="A message waits for the next poll, uniformly between 0 and T: p50 ≈ T/2 and p99 ≈"
        f" 0.99·T, plus a round trip. {CI_NOTE}",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


def warning_groups(summary: Summary) -> list[str | tuple[str, list[str]]]:
    """Every warning verbatim, grouped like :func:`wirewise.console.grouped_warnings`."""
    groups: dict[str, dict[str, list[str]]] = {}
    for r in summary.results:
        for warning in r.warnings:
            key = re.sub(r"\d[\d,.]*", "#", warning)
            groups.setdefault(key, {}).setdefault(warning, []).append(run_label(r))
    items: list[str | tuple[str, list[str]]] = []
    for texts in groups.values():
        if len(texts) == 1:
            ((text, runs),) = texts.items()
            items.append(f"{_runs(runs)}: {text}")
        else:
            total = sum(len(runs) for runs in texts.values())
            example = next(iter(texts))
            items.append(
                (
                    f"{total} results, {len(texts)} variants of: {example}",
                    [f"{_runs(runs)}: {text}" for text, runs in texts.items()],
                )
            )
    return items


def _runs(runs: list[str]) -> str:
    return runs[0] if len(runs) == 1 else f"{len(runs)} results ({', '.join(runs)})"


# -- Markdown -----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], out_dir: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Para):
            lines += [f"*{block.text}*" if block.style == "note" else block.text, ""]
        elif isinstance(block, Bullets):
            for i, item in enumerate(block.items, 1):
                mark = f"{i}." if block.ordered else "-"
                if isinstance(item, tuple):
                    lines.append(f"{mark} {item[0]}")
                    lines += [f"    - {sub}" for sub in item[1]]
                else:
                    lines.append(f"{mark} {item}")
            lines.append("")
        elif isinstance(block, Table):
            align = block.align or "l" + "r" * (len(block.header) - 1)
            if block.key_value:
                lines += ["| | |", "|---|---|"]
                lines += [f"| **{_md_cell(k)}** | {_md_cell(v)} |" for k, v in block.rows]
            else:
                lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
                lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
            if block.note:
                lines += [block.note, ""]
        elif isinstance(block, Fig):
            chart = block.chart
            path = chart.png.relative_to(out_dir).as_posix()
            svg = chart.svg.relative_to(out_dir).as_posix()
            lines += [
                f"**Figure {block.number}. {chart.title}**",
                "",
                f"![{chart.title}]({path})",
                "",
                f"Figure {block.number}: {chart.caption} (SVG: [{chart.svg.name}]({svg}))",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# -- HTML ---------------------------------------------------------------------------------------

CSS = """
:root { --ink: #1d2329; --muted: #5b6570; --rule: #d9dee3; --band: #f5f7f9; --accent: #0b5cad; }
* { box-sizing: border-box; }
html { font-size: 15px; }
body { margin: 0; color: var(--ink); background: #fff;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; letter-spacing: -.01em; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.02rem; margin: 1.6rem 0 .5rem; }
p { margin: .4rem 0 .8rem; }
.lede { color: var(--muted); }
nav { margin: .8rem 0 0; font-size: .9rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: 1.1em; white-space: nowrap; }
ul, ol { padding-left: 1.3rem; margin: .4rem 0 1rem; }
li { margin: .25rem 0; }
#verdict + ul { background: var(--band); border-left: 4px solid var(--accent); padding: .7rem 1rem .7rem 2.1rem;
  border-radius: 3px; }
.wide { overflow-x: auto; margin: .4rem 0 .4rem; }
table { border-collapse: collapse; font-size: .82rem; font-variant-numeric: tabular-nums; }
th, td { padding: .28rem .45rem; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { background: var(--band); font-weight: 600; text-align: left; vertical-align: bottom;
  line-height: 1.25; }
td.r, th.r { text-align: right; }
td.r { white-space: nowrap; }
td.l { min-width: 5rem; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tbody tr.invalid td { color: #8a8f95; background: repeating-linear-gradient(135deg, #fff, #fff 6px, #f6f6f6 6px, #f6f6f6 12px); }
table.kv th { width: 11rem; background: none; vertical-align: top; }
table.kv td { word-break: break-word; }
.note { color: var(--muted); font-size: .82rem; max-width: 62rem; }
figure { margin: 1.2rem 0 2rem; break-inside: avoid; page-break-inside: avoid; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: .85rem; margin-top: .45rem; max-width: 62rem; }
figcaption b { color: var(--ink); }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .85em; }
@media print {
  html { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table { font-size: 7.5pt; }
  .wide { overflow: visible; }
  tr, figure { break-inside: avoid; page-break-inside: avoid; }
}
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
    ]
    sections = [b for b in blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    before_sections = True
    for block in blocks:
        if isinstance(block, Heading):
            if block.level == 2 and before_sections:
                before_sections = False
                links = "".join(f'<a href="#{esc(h.anchor)}">{esc(h.text)}</a>' for h in sections)
                out.append(f"<nav>{links}</nav>")
            anchor = f' id="{esc(block.anchor)}"' if block.anchor else ""
            out.append(f"<h{block.level}{anchor}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            css = "lede" if before_sections else "note" if block.style == "note" else ""
            out.append(
                f'<p class="{css}">{esc(block.text)}</p>' if css else f"<p>{esc(block.text)}</p>"
            )
        elif isinstance(block, Bullets):
            tag = "ol" if block.ordered else "ul"
            out.append(f"<{tag}>")
            for item in block.items:
                if isinstance(item, tuple):
                    subs = "".join(f"<li>{esc(s)}</li>" for s in item[1])
                    out.append(f"<li>{esc(item[0])}<ul>{subs}</ul></li>")
                else:
                    out.append(f"<li>{esc(item)}</li>")
            out.append(f"</{tag}>")
        elif isinstance(block, Table):
            out.append(render_html_table(block))
        elif isinstance(block, Fig):
            chart = block.chart
            out.append(
                f'<figure id="{esc(chart.name)}">'
                f'<img src="{data_url(chart.png)}" alt="{esc(chart.title)}">'
                f"<figcaption><b>Figure {block.number}. {esc(chart.title)}.</b> {esc(chart.caption)}</figcaption>"
                "</figure>"
            )
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_html_table(table: Table) -> str:
    align = table.align or "l" + "r" * (len(table.header) - 1)
    parts = ['<div class="wide">']
    if table.key_value:
        parts.append('<table class="kv"><tbody>')
        for key, value in table.rows:
            cell = f"<code>{esc(value)}</code>" if key == "command" else esc(value)
            parts.append(f"<tr><th>{esc(key)}</th><td>{cell}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<table><thead><tr>")
        parts += [
            f'<th class="{a}">{esc(h)}</th>' for h, a in zip(table.header, align, strict=True)
        ]
        parts.append("</tr></thead><tbody>")
        for i, row in enumerate(table.rows):
            css = ' class="invalid"' if i in table.invalid_rows else ""
            parts.append(
                f"<tr{css}>"
                + "".join(f'<td class="{a}">{esc(c)}</td>' for c, a in zip(row, align, strict=True))
                + "</tr>"
            )
        parts.append("</tbody></table>")
    parts.append("</div>")
    if table.note:
        parts.append(f'<p class="note">{esc(table.note)}</p>')
    return "".join(parts)


# -- the whole report ---------------------------------------------------------------------------


def build_report(run_dir: Path, out_dir: Path) -> ReportFiles:
    """Read one results run and write its charts, ``report.md`` and ``report.html`` to ``out_dir``.

    ``run_dir`` is a run directory (or its ``summary.json``); raises
    :class:`wirewise.results.SchemaError` for a results file this version cannot read.
    """
    began = time.monotonic()
    source = Path(run_dir)
    run_dir = source.parent if source.is_file() else source
    summary = load_summary(source)
    out_dir = Path(out_dir)
    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(summary, run_dir, charts_dir)
    draw_charts(ctx)
    blocks = document(summary, run_dir, ctx.charts, ctx.skipped)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(blocks, f"wirewise report: run {run_dir.name}"), encoding="utf-8")
    placed = tuple(b.chart for b in blocks if isinstance(b, Fig))
    return ReportFiles(markdown, page, placed, tuple(ctx.skipped), time.monotonic() - began)
