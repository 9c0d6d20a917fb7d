"""``wirewise report``: charts, Markdown and HTML from one results run, and a verdict from its numbers.

:func:`build_report` reads a run's ``summary.json`` with :func:`wirewise.results.read_summary` (an
unknown ``schema_version`` is refused) and the histograms of each run's ``scenario.json``, and
writes into ``out_dir``::

    report.md             verdict, conditions, one table per scenario, every warning, the charts
    report.html           the same content, self-contained (inline CSS, charts as data: URLs)
    charts/<name>.png     each chart at 130 dpi ...
    charts/<name>.svg     ... and as SVG

Every chart carries its units, a title and, inside the image, a caption with its sample sizes and
conditions (CPU, cores, scenario parameters, commit, date), so that a chart copied out of the report
still says what it shows. A chart whose scenario the run lacks is not drawn, and the report says so.

:func:`verdict` turns a summary into a few sentences, each citing the figures it rests on; where a
figure is missing the sentence says that instead of guessing. The CLI prints it too.

Divergence from the console on purpose: the report lists every warning verbatim (grouped as
:func:`wirewise.console.grouped_warnings` groups them), where the console prints one example a group.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import re
import shlex
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: no display, no GUI event loop

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from wirewise.console import label
from wirewise.metrics import PERCENTILES, Histogram, too_few_samples
from wirewise.results import read_summary
from wirewise.runner import BACKENDS, GENERATOR_SATURATED, SCENARIOS
from wirewise.sampler import fit_line

__all__ = ["Chart", "ReportFiles", "build_report", "verdict"]

LATENCY_SCENARIOS = ("chat", "broadcast", "game")
FLOOR = "tcp"
X = "\N{MULTIPLICATION SIGN}"
FLOOR_FACTOR = 3.0
"""A transport "stays near the floor" when its p50 and p99 are both within this factor of the floor's."""
CPU_TICK_S = 0.01
"""The kernel counts process CPU time in 10 ms clock ticks: the resolution of every CPU figure."""
POOR_FIT_R2 = 0.9
DPI = 130
WIDTH_IN = 10.0

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
PCT_NAMES = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99.9"}
PCT_MARKERS = {"p50": "o", "p90": "s", "p99": "^", "p999": "D"}
PCT_OFFSETS = {"p50": -0.15, "p90": -0.05, "p99": 0.05, "p999": 0.15}
"""Percentiles side by side in a transport's column, so a close p99 and p99.9 both stay visible."""
SCENARIO_MARKERS = {"chat": "o", "broadcast": "s", "game": "D", "saturate": "^"}
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


def num(value: float | int | None, digits: int | None = None) -> str:
    """A figure for prose and tables: thousands separated, precision by magnitude; '-' if absent."""
    if value is None:
        return "-"
    if isinstance(value, int) and digits is None:
        return f"{value:,}"
    if digits is None:
        size = abs(value)
        digits = 2 if size < 10 else 1 if size < 100 else 0
    return f"{value:,.{digits}f}"


def g(value: float | int | None) -> str:
    """A parameter as given: 4 rather than 4.00, 0.25 rather than 0.2."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"


def span(values: list[float]) -> str:
    low, high = num(min(values)), num(max(values))
    return low if low == high else f"{low}-{high}"


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


# -- selecting results --------------------------------------------------------------------------


def order_key(result: dict[str, Any]) -> tuple[int, str]:
    name = label(result)
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def of(summary: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return sorted((r for r in summary["results"] if r["scenario"] == scenario), key=order_key)


def timed(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results with at least one timed delivery."""
    return [r for r in results if r["latency_ms"].get("count") and r["latency_ms"]["p50"]]


def is_floor(result: dict[str, Any]) -> bool:
    return result["transport"] == FLOOR


def scenarios_in(summary: dict[str, Any]) -> list[str]:
    present = {r["scenario"] for r in summary["results"]}
    known = [s for s in SCENARIOS if s in present]
    return known + sorted(present - set(known))


def colour_of(name: str, _spare: dict[str, str] = {}) -> str:  # noqa: B006 - a memo on purpose
    if name in COLOURS:
        return COLOURS[name]
    if name not in _spare:
        _spare[name] = SPARE_COLOURS[len(_spare) % len(SPARE_COLOURS)]
    return _spare[name]


def run_label(result: dict[str, Any]) -> str:
    return f"{result['scenario']}/{label(result)}"


def cpu_tick_ms_per_1k(result: dict[str, Any]) -> float | None:
    """How much one 10 ms CPU-clock tick moves this result's 'CPU ms per 1,000 deliveries'."""
    delivered = counted_deliveries(result)
    return CPU_TICK_S * 1e6 / delivered if delivered else None


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


def workload(results: list[dict[str, Any]]) -> str:
    """The scenario's parameters in words (from the first result; they are per scenario)."""
    params = next((r["parameters"] for r in results if r["parameters"]), {})
    if not params:
        return "parameters not recorded"
    scenario = results[0]["scenario"]
    payload = params.get("payload_bytes")
    text_size = f"{g(payload)}-char text"
    if scenario == "game" and payload == 100:
        # scenarios/game.py sends 50-character updates when given the general default of 100,
        # but the runner records the 100 it passed: say what was sent, and why it differs.
        text_size = "50-char text (game's own default; the results record 100)"
    rooms = params.get("rooms")
    where = f" in {rooms} room{'s' if rooms != 1 else ''}" if rooms else ""
    if scenario == "idle":
        # Short polling may ramp to fewer clients than the rest (the runner's FULL_IDLE_POLL).
        steps = sorted(
            {
                (r["parameters"].get("step_users"), r["transport"])
                for r in results
                if r["parameters"]
            }
        )
        sizes = sorted({size for size, _ in steps if size is not None})
        per = ", ".join(
            f"{g(size)} ({', '.join(sorted({t for s2, t in steps if s2 == size}))})"
            for size in sizes
        )
        text = (
            f"{per if len(sizes) > 1 else g(params.get('step_users'))} clients a step"
            f" {X} {g(params.get('steps'))} steps of {g(params.get('step_seconds'))} s"
        )
    elif scenario == "saturate":
        text = (
            f"{g(params.get('users'))} users{where}, rate from {g(params.get('rate_per_user'))}"
            f" msg/s per user, up to {g(params.get('steps'))} steps of {g(params.get('step_seconds'))} s,"
            f" bound p99 ≤ {g(params.get('latency_bound_ms'))} ms, {text_size}"
        )
    else:
        text = (
            f"{g(params.get('users'))} users{where}, {g(params.get('rate_per_user'))} msg/s each,"
            f" {text_size}, {g(params.get('duration_s'))} s measured"
        )
    intervals = sorted(
        {r["parameters"].get("poll_interval_s") for r in results if r["transport"] == "poll"}
        - {None}
    )
    if intervals:
        text += f"; poll every {', '.join(f'{t:g}' for t in intervals)} s"
    return text


def samples_text(results: list[dict[str, Any]], what: str = "deliveries timed") -> str:
    counts = {label(r): r["latency_ms"]["count"] for r in results}
    if len(set(counts.values())) == 1:
        (count,) = set(counts.values())
        return f"n = {count:,} {what} per transport"
    return f"n ({what}): " + ", ".join(f"{name} {count:,}" for name, count in counts.items())


def deliveries_text(summary: dict[str, Any], scenarios: list[str]) -> str:
    """Sample sizes of the per-delivery figures: deliveries each run divided by, per scenario."""
    parts = []
    for scenario in scenarios:
        counts = sorted(
            {round(n) for r in of(summary, scenario) if (n := counted_deliveries(r)) is not None}
        )
        if counts:
            text = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,}"
            parts.append(f"{scenario} {text}")
    return f"n = deliveries a run: {', '.join(parts)}" if parts else "n not recorded"


def counted_deliveries(result: dict[str, Any]) -> float | None:
    """The deliveries a result's CPU and bytes figures are divided by."""
    if result["scenario"] == "saturate":
        held = result.get("highest_rate_held") or {}
        seconds = result["parameters"].get("step_seconds")
        return held["deliveries_per_s"] * seconds if held and seconds else None
    return result["deliveries"].get("delivered") or None


# -- the verdict --------------------------------------------------------------------------------


def verdict(summary: dict[str, Any]) -> list[str]:
    """A short verdict, each sentence citing its numbers; missing figures are said to be missing."""
    if not summary["results"]:
        return ["This run holds no results (0 runs), so nothing is concluded."]
    present = scenarios_in(summary)
    answer = answer_sentence(summary)
    sentences = [answer] if answer else []
    sentences += [
        latency_sentence(scenario, of(summary, scenario))
        for scenario in LATENCY_SCENARIOS
        if scenario in present
    ]
    if not sentences:
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


def find(summary: dict[str, Any], scenario: str, name: str) -> dict[str, Any] | None:
    """The result of ``scenario`` whose label is ``name`` ("ws" is the uvicorn one)."""
    return next((r for r in of(summary, scenario) if label(r) == name), None)


def idle_total(summary: dict[str, Any], name: str) -> float | None:
    """Server RSS + kernel bytes per idle connection of ``name``, if fitted."""
    r = find(summary, "idle", name)
    m = r["memory_per_connection"] if r else None
    if not m or m["rss_bytes"] is None or m["kernel_bytes"] is None:
        return None
    return m["rss_bytes"] + m["kernel_bytes"]


def sse_and_ws(
    summary: dict[str, Any], scenario: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The timed SSE and (uvicorn) WebSocket results of ``scenario``, if both exist."""
    sse, ws = find(summary, scenario, "sse"), find(summary, scenario, "ws")
    if sse is None or ws is None or len(timed([sse, ws])) < 2:
        return None
    return sse, ws


def answer_sentence(summary: dict[str, Any]) -> str | None:
    """The one-line answer to "do I need WebSockets?", from this run's SSE and WebSocket figures.

    None when the run lacks the figures to say it (no SSE or no WebSocket latency).
    """
    pairs = {s: pair for s in ("broadcast", "chat") if (pair := sse_and_ws(summary, s))}
    if not pairs:
        return None

    def saturated(scenario: str) -> bool:
        return any((r.get("load_generator") or {}).get("saturated") for r in pairs[scenario])

    # The first push scenario measured with the load generator under its limit, if any.
    push = next((s for s in pairs if not saturated(s)), next(iter(pairs)))
    sse, ws = pairs[push]
    p99_sse, p99_ws = sse["latency_ms"]["p99"], ws["latency_ms"]["p99"]
    close = p99_sse <= 2 * p99_ws
    lead = (
        "Answer: for pushing to clients, SSE + POST is enough on this machine"
        if close
        else "Answer: WebSockets delivered markedly faster than SSE + POST on this machine"
    )
    if saturated(push):
        lead = lead.replace("Answer:", "Tentative answer (the load generator was saturated):")
    facts = [f"in {push} its p99 was {num(p99_sse)} ms against WebSocket's {num(p99_ws)} ms"]
    mem_sse, mem_ws = idle_total(summary, "sse"), idle_total(summary, "ws")
    if mem_sse is not None and mem_ws is not None:
        facts.append(
            f"an idle connection cost {kib(mem_sse)} against {kib(mem_ws)} KiB (server + kernel)"
        )
    chat_sse, chat_ws = find(summary, "chat", "sse"), find(summary, "chat", "ws")
    cpu_sse = chat_sse["server_cpu_ms_per_1k_msgs"] if chat_sse else None
    cpu_ws = chat_ws["server_cpu_ms_per_1k_msgs"] if chat_ws else None
    tail = ""
    if cpu_sse and cpu_ws:
        facts.append(
            f"with every user sending (chat) the server spent {num(cpu_sse)} against"
            f" {num(cpu_ws)} ms of CPU per 1,000 messages"
        )
        if cpu_ws < cpu_sse:
            tail = (
                "; WebSockets earn their keep when clients send often (each send is a frame,"
                " not an HTTP request) or need full duplex"
            )
    poll = find(summary, push, "poll")
    if poll and timed([poll]) and poll["parameters"].get("poll_interval_s"):
        tail += (
            f"; short polling is enough only when waiting about half its interval is fine"
            f" (p50 {num(poll['latency_ms']['p50'])} ms at T = {g(poll['parameters']['poll_interval_s'])} s)"
        )
    return f"{lead}: {', '.join(facts)}{tail}."


def latency_sentence(scenario: str, results: list[dict[str, Any]]) -> str:
    measured = timed(results)
    if not measured:
        return f"In {scenario} no delivery was timed by any of its {len(results)} runs, so its latency is unknown."
    floor = next((r for r in measured if is_floor(r)), None)
    others = [r for r in measured if not is_floor(r)]

    def pair(r: dict[str, Any]) -> str:
        return f"{num(r['latency_ms']['p50'])}/{num(r['latency_ms']['p99'])} ms"

    if floor is None:
        best = min(others, key=lambda r: r["latency_ms"]["p50"])
        return (
            f"In {scenario} the raw-TCP floor was not measured, so no transport can be read against"
            f" the machine's own cost; the lowest p50/p99 was {label(best)}'s {pair(best)}"
            f" ({best['latency_ms']['count']:,} samples)."
        )
    f50, f99 = floor["latency_ms"]["p50"], floor["latency_ms"]["p99"]
    head = (
        f"In {scenario}, against the raw-TCP floor's p50/p99 of {pair(floor)}"
        f" ({floor['latency_ms']['count']:,} samples)"
    )
    if not others:
        return head + ", no other transport was timed."
    near = [
        r
        for r in others
        if r["latency_ms"]["p50"] <= FLOOR_FACTOR * f50
        and r["latency_ms"]["p99"] <= FLOOR_FACTOR * f99
    ]
    far = [r for r in others if r not in near]
    near.sort(key=lambda r: r["latency_ms"]["p50"])
    far.sort(key=lambda r: r["latency_ms"]["p50"])
    text = head + ", "
    if near:
        text += f"{', '.join(f'{label(r)} ({pair(r)})' for r in near)} stayed within {FLOOR_FACTOR:g}{X} on both"
    else:
        text += f"no transport stayed within {FLOOR_FACTOR:g}{X} on both"
    if far:
        text += "; " if near else ": "
        text += ", ".join(
            f"{label(r)} ({pair(r)}, {factor(r['latency_ms']['p50'], f50)}/{factor(r['latency_ms']['p99'], f99)})"
            for r in far
        )
        text += " did not" if near else ""
    thin = [r for r in measured if "p99" in too_few_samples(r["latency_ms"]["count"])]
    if thin:
        text += (
            f" (p99 of {', '.join(label(r) for r in thin)} rests on fewer than 1,000 samples:"
            f" {', '.join(num(r['latency_ms']['count']) for r in thin)})"
        )
    return text + "."


def saturate_sentence(results: list[dict[str, Any]]) -> str:
    if not results:
        return "No saturate result, so the highest sustainable rate is not measured here."
    bound = next(
        (r["parameters"].get("latency_bound_ms") for r in results if r["parameters"]), None
    )
    held = [r for r in results if r.get("highest_rate_held")]
    failed = [r for r in results if not r.get("highest_rate_held")]
    held.sort(key=lambda r: -r["highest_rate_held"]["deliveries_per_s"])

    def rate(r: dict[str, Any]) -> str:
        return f"{label(r)} {num(r['highest_rate_held']['deliveries_per_s'], 0)}"

    unbounded = [r for r in held if _held_to_end(r)]
    bounded = [r for r in held if not _held_to_end(r)]
    parts = []
    if bounded:
        parts.append(", ".join(rate(r) for r in bounded) + " deliveries/s")
    if unbounded:
        parts.append(
            ", ".join(rate(r) for r in unbounded)
            + " deliveries/s, each still holding at its last step (a lower bound, not a limit)"
        )
    text = (
        f"Under saturate the highest rate that held p99 ≤ {g(bound)} ms with every message"
        " delivered was "
    )
    text += "; ".join(parts) if parts else "reached by no transport"
    if failed:
        bits = []
        for r in failed:
            first = next(
                (s for s in r.get("steps") or [] if s["latency_ms"]["p99"] is not None), None
            )
            bits.append(
                f"{label(r)} (first step p99 {num(first['latency_ms']['p99'])} ms at"
                f" {num(first['deliveries_per_s'], 0)}/s)"
                if first
                else f"{label(r)} (no step timed)"
            )
        text += f"; no step held for {', '.join(bits)}"
    return text + "."


def _held_to_end(result: dict[str, Any]) -> bool:
    steps = result.get("steps") or []
    return bool(steps) and all(s["held"] for s in steps)


def idle_sentence(summary: dict[str, Any]) -> str:
    idle = of(summary, "idle")
    if not idle:
        return "This run has no idle result, so what an idle connection costs is not measured here."
    fitted = [
        r
        for r in idle
        if r["memory_per_connection"]["rss_bytes"] is not None
        and r["memory_per_connection"]["kernel_bytes"] is not None
    ]
    if not fitted:
        return f"None of the {len(idle)} idle runs produced a memory fit, so the cost of a connection is unknown."

    def total(r: dict[str, Any]) -> float:
        m = r["memory_per_connection"]
        return m["rss_bytes"] + m["kernel_bytes"]

    parts = []
    for r in sorted(fitted, key=total):
        m = r["memory_per_connection"]
        per_gib = (2**30 / total(r)) if total(r) > 0 else 0
        parts.append(
            f"{label(r)} {kib(m['rss_bytes'])} + {kib(m['kernel_bytes'])} = {kib(total(r))} KiB"
            f" (≈{approx(per_gib)} per GiB)"
        )
    text = "One idle connection costs, server RSS + kernel (fitted slopes): " + "; ".join(parts)
    thin = [r for r in fitted if len(r["memory_per_connection"]["points"]) < 3]
    if thin:
        text += (
            f"; the fits of {', '.join(label(r) for r in thin)} pass through only"
            f" {' or '.join(sorted({str(len(r['memory_per_connection']['points'])) for r in thin}))}"
            " plateaus, so their R² proves nothing"
        )
    poor = [r for r in fitted if (r["memory_per_connection"]["r2"] or 0) < POOR_FIT_R2]
    if poor:
        text += "; rough fits: " + ", ".join(
            f"{label(r)} R² {r['memory_per_connection']['r2']:.2f}" for r in poor
        )
    ratios = []
    for r in fitted:
        points = r["memory_per_connection"]["points"]
        if points and points[-1].get("clients"):
            ratio = points[-1]["connections"] / points[-1]["clients"]
            if ratio > 1.2:
                ratios.append(f"{label(r)} {ratio:.1f}")
    if ratios:
        text += (
            "; the slope is per server connection, and at the top plateau clients held"
            f" {', '.join(ratios)} connections each, so a client costs that much more"
        )
    unfitted = [r for r in idle if r not in fitted]
    if unfitted:
        text += f"; no fit for {', '.join(label(r) for r in unfitted)} (see its warnings)"
    fd_limit = summary["metadata"].get("fd_limit")
    if fd_limit:
        text += f"; one server process is capped by its {fd_limit:,} open files"
    return text + "."


def polling_sentence(summary: dict[str, Any]) -> str:
    polls = [r for r in summary["results"] if r["transport"] == "poll"]
    if not polls:
        return "This run has no short-polling result, so its latency cannot be compared with its interval."
    measured = [
        r
        for r in timed(polls)
        if r["parameters"].get("poll_interval_s") and r["scenario"] != "saturate"
    ]
    if not measured:
        return (
            f"Short polling timed no delivery outside saturate in its {len(polls)} runs,"
            " so its latency cannot be compared with its interval."
        )
    by_interval: dict[float, list[dict[str, Any]]] = {}
    for r in measured:
        by_interval.setdefault(r["parameters"]["poll_interval_s"], []).append(r)
    parts = []
    for interval, rs in sorted(by_interval.items()):
        half = interval * 500
        ratios = [r["latency_ms"]["p50"] / half for r in rs]
        spread = f"{min(ratios):.2f}" if len(rs) == 1 else f"{min(ratios):.2f}-{max(ratios):.2f}"
        parts.append(
            f"at T = {interval:g} s it measured "
            + ", ".join(
                f"p50 {num(r['latency_ms']['p50'])} ms and max {num(r['latency_ms']['max'])} ms in {r['scenario']}"
                for r in rs
            )
            + f", against theory's p50 ≈ T/2 = {half:,.0f} ms ({spread}{X} of it)"
            f" and max ≈ T = {interval * 1000:,.0f} ms plus a round trip"
        )
    ratios = [r["latency_ms"]["p50"] / (r["parameters"]["poll_interval_s"] * 500) for r in measured]
    head = (
        "Short polling follows its interval"
        if all(0.8 <= x <= 1.25 for x in ratios)
        else "Short polling departs from its interval's theory"
    )
    return f"{head}: " + "; ".join(parts) + "."


def cost_sentence(summary: dict[str, Any]) -> str:
    parts = []
    for scenario in scenarios_in(summary):
        rs = of(summary, scenario)
        cpu = [r for r in rs if r["server_cpu_ms_per_1k_msgs"] is not None and not is_floor(r)]
        wire = [r for r in rs if r["bytes_per_message"]["total"] is not None and not is_floor(r)]
        floor = next((r for r in rs if is_floor(r)), None)
        bits = []
        if cpu:
            best = min(cpu, key=lambda r: r["server_cpu_ms_per_1k_msgs"])
            low = best["server_cpu_ms_per_1k_msgs"]
            tick = cpu_tick_ms_per_1k(best)
            tied = [
                r
                for r in cpu
                if r is not best
                and tick is not None
                and r["server_cpu_ms_per_1k_msgs"] - low <= max(tick, cpu_tick_ms_per_1k(r) or 0)
            ]
            notes = []
            if floor and floor["server_cpu_ms_per_1k_msgs"] is not None:
                notes.append(f"floor {num(floor['server_cpu_ms_per_1k_msgs'])}")
            if tied:
                others = " and ".join(
                    f"{label(r)} {num(r['server_cpu_ms_per_1k_msgs'])}" for r in tied
                )
                notes.append(f"{others} within one {num(tick)} ms clock tick")
            text = f"CPU {label(best)} {num(low)} ms per 1,000"
            text += f" ({'; '.join(notes)})" if notes else ""
            bits.append(text)
        if wire:
            best = min(wire, key=lambda r: r["bytes_per_message"]["total"])
            text = (
                f"bytes {label(best)} {num(best['bytes_per_message']['total'], 0)} B per delivery"
            )
            if floor and floor["bytes_per_message"]["total"] is not None:
                text += f" (floor {num(floor['bytes_per_message']['total'], 0)} B)"
            bits.append(text)
        if bits:
            parts.append(f"in {scenario}, " + ", ".join(bits))
    if not parts:
        return "No run measured server CPU or bytes per message, so the cheapest transport is not known."
    return "Cheapest per delivery, floor aside: " + "; ".join(parts) + "."


def caveats_sentence(summary: dict[str, Any]) -> str:
    results = summary["results"]
    warned = [r for r in results if r["warnings"]]
    parts = [f"{len(warned)} of {len(results)} results carry warnings (listed below)"]
    saturated = [r for r in results if r["load_generator"].get("saturated")]
    loads = [r for r in results if r["load_generator"].get("cpu_percent_max") is not None]
    if saturated:
        parts.append(
            "the load generator saturated in "
            + ", ".join(
                f"{run_label(r)} ({num(r['load_generator']['cpu_percent_max'])} %)"
                for r in saturated
            )
        )
    elif loads:
        busiest = max(loads, key=lambda r: r["load_generator"]["cpu_percent_max"])
        parts.append(
            f"no load generator saturated (busiest: {num(busiest['load_generator']['cpu_percent_max'])} %"
            f" CPU in {run_label(busiest)}, limit {GENERATOR_SATURATED:g} %)"
        )
    else:
        parts.append("the load generator's CPU was not recorded")
    shared = shared_cores(summary["metadata"])
    if shared:
        parts.append(
            f"the server and Locust ran on the same core ({', '.join(map(str, shared))}, per"
            " metadata cores_used), so they competed for it"
        )
    thin = [r for r in timed(results) if too_few_samples(r["latency_ms"]["count"])]
    if thin:
        counts = sorted({r["latency_ms"]["count"] for r in thin})
        weakest = sorted(
            {p for r in thin for p in too_few_samples(r["latency_ms"]["count"])},
            key=list(PERCENTILES).index,
        )
        parts.append(
            f"{len(thin)} results have too few samples ({num(counts[0])}"
            f"{'-' + num(counts[-1]) if len(counts) > 1 else ''}) for {', '.join(PCT_NAMES[p] for p in weakest)}"
        )
    lost = [r for r in results if r["deliveries"].get("lost")]
    if lost:
        parts.append(
            "deliveries were lost in "
            + ", ".join(
                f"{run_label(r)} ({num(r['deliveries']['lost'])} of {num(r['deliveries']['expected'])})"
                for r in lost
            )
        )
    extra = [
        r
        for r in results
        if r["deliveries"].get("delivered", 0) > r["deliveries"].get("expected", 0)
    ]
    if extra:
        parts.append(
            "more deliveries than expected were counted in "
            + ", ".join(
                f"{run_label(r)} ({num(r['deliveries']['delivered'])} of {num(r['deliveries']['expected'])})"
                for r in extra
            )
            + ", which the accounting does not explain"
        )
    ticks = [
        t
        for r in results
        if (t := cpu_tick_ms_per_1k(r)) is not None and r["server_cpu_ms_per_1k_msgs"] is not None
    ]
    if ticks:
        parts.append(
            f"CPU per 1,000 deliveries moves by {span(ticks)} ms per 10 ms clock"
            " tick at these message counts, so smaller differences are noise"
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


@dataclass
class Context:
    summary: dict[str, Any]
    run_dir: Path
    directory: Path
    charts: list[Chart] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _histograms: dict[str, Histogram | None] = field(default_factory=dict)

    @property
    def machine(self) -> str:
        return machine(self.summary["metadata"])

    def histogram(self, result: dict[str, Any]) -> Histogram | None:
        """The latency histogram of one run, from its raw ``scenario.json`` (None if absent)."""
        folder = result.get("files")
        if not folder:
            return None
        if folder not in self._histograms:
            try:
                raw = json.loads((self.run_dir / folder / "scenario.json").read_text())
                encoded = raw.get("latency")
                self._histograms[folder] = Histogram.decode(encoded) if encoded else None
            except (OSError, ValueError, TypeError):
                self._histograms[folder] = None
        return self._histograms[folder]


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
    floor = next((r for r in results if is_floor(r)), None)
    for i, r in enumerate(results):
        lat = r["latency_ms"]
        colour = colour_of(label(r))
        weak = set(too_few_samples(lat["count"]))
        values = [lat[k] for k in PERCENTILES if lat[k] is not None]
        xs = [i + PCT_OFFSETS[k] for k in PERCENTILES if lat[k] is not None]
        ax.plot(xs, values, color=colour, lw=2.5, alpha=0.35, zorder=2)
        for key in PERCENTILES:
            if lat[key] is None:
                continue
            hollow = key in weak
            thin = thin or hollow
            ax.plot(
                [i + PCT_OFFSETS[key]], [lat[key]], ls="none", marker=PCT_MARKERS[key], ms=7, mew=1.6,
                color=colour, mfc="white" if hollow else colour, zorder=3,
            )  # fmt: skip
        for key, at, dx, ha in (("p50", "p50", -7, "right"), ("p99", "p999", 7, "left")):
            if lat[key] is not None:
                ax.annotate(
                    num(lat[key]), (i + PCT_OFFSETS[at], lat[key]), xytext=(dx, 0), textcoords="offset points",
                    ha=ha, va="center", fontsize=7.5, color="#222222",
                )  # fmt: skip
    handles: list[Any] = [
        Line2D([], [], ls="none", marker=PCT_MARKERS[k], color="#333333", ms=6, label=PCT_NAMES[k])
        for k in PERCENTILES
    ]
    if floor is not None:
        ax.axhline(floor["latency_ms"]["p50"], color=FLOOR_COLOUR, ls="--", lw=1.1, zorder=1)
        handles.append(
            Line2D([], [], color=FLOOR_COLOUR, ls="--", lw=1.1,
                   label=f"raw-TCP floor p50\n({num(floor['latency_ms']['p50'])} ms)")
        )  # fmt: skip
    if thin:
        handles.append(
            Line2D([], [], ls="none", marker="o", color="#333333", mfc="white", ms=6,
                   label="hollow: too few\nsamples to support it")
        )  # fmt: skip
    ax.set_xticks(
        range(len(results)),
        labels=[f"{label(r)}\nn = {r['latency_ms']['count']:,}" for r in results],
    )
    for tick, r in zip(ax.get_xticklabels(), results, strict=True):
        tick.set_color(colour_of(label(r)) if not is_floor(r) else "#555555")
    ax.set_xlim(-0.7, len(results) - 0.3)
    ax.set_yscale("log")
    log_axis(ax.yaxis)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("delivery latency (ms, log scale)")
    ax.set_xlabel("transport (n = deliveries timed)")
    title = f"{scenario}: delivery latency percentiles per transport"
    ax.set_title(title, loc="left")
    fig.legend(handles=handles, loc="outside right upper", title="percentile")
    caption = (
        f"Delivery latency (receipt minus scheduled send) at p50, p90, p99 and p99.9, log scale;"
        f" labels give p50 (left) and p99 (right) in ms. {samples_text(results)}."
        + (
            " Hollow markers: fewer than 10 samples lie beyond that percentile (p99 needs 1,000"
            " samples, p99.9 10,000), so it is an indication only."
            if thin
            else ""
        )
        + (
            " Dashed grey line: the raw-TCP floor's p50."
            if floor
            else " No raw-TCP floor in this run."
        )
        + f" {scenario}: {workload(of(ctx.summary, scenario))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, f"latency-{scenario}", title)


def ecdf(histogram: Histogram) -> list[tuple[float, float]]:
    """(ms, fraction at or below) at every recorded bucket: the exact empirical CDF.

    ``Histogram.cdf_ms()`` walks percentile ticks, 10 % apart below the median; the recorded
    buckets (at most one per 0.1 % of value) draw the whole curve at the histogram's precision.
    """
    total = histogram.count
    if not total:
        return []
    points = []
    for item in histogram.hdr.get_recorded_iterator():  # one mutable item, read it in the loop
        points.append((item.value_iterated_to / 1000, item.total_count_to_this_value / total))
    return [(points[0][0], 0.0), *points] if points else []


def chart_cdf(ctx: Context) -> Chart | None:
    panels = []
    missing = []
    for scenario in LATENCY_SCENARIOS:
        curves = []
        for r in timed(of(ctx.summary, scenario)):
            histogram = ctx.histogram(r)
            if histogram is None or histogram.count == 0:
                missing.append(run_label(r))
                continue
            curves.append((r, histogram))
        if curves:
            panels.append((scenario, curves))
    if not panels:
        ctx.skipped.append(
            "Latency CDFs: no chat, broadcast or game histogram in this run"
            + (f" (raw scenario.json missing for {', '.join(missing)})." if missing else ".")
        )
        return None
    fig = new_figure(4.2)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    seen: dict[str, Any] = {}
    for ax, (scenario, curves) in zip(axes, panels, strict=True):
        for r, histogram in curves:
            points = ecdf(histogram)
            name = label(r)
            (line,) = ax.plot(
                [p[0] for p in points], [p[1] for p in points], color=colour_of(name),
                lw=2.2 if is_floor(r) else 1.6, ls="--" if is_floor(r) else "-", label=name,
                drawstyle="steps-post",
            )  # fmt: skip
            seen.setdefault(name, line)
        counts = sorted({h.count for _, h in curves})
        n = f"n = {counts[0]:,}" if len(counts) == 1 else f"n = {counts[0]:,}-{counts[-1]:,}"
        ax.set_title(f"{scenario} ({n} each)", fontsize=10)
        ax.set_xscale("log")
        log_axis(ax.xaxis, dense=len(panels) == 1)
        ax.set_xlabel("delivery latency (ms, log scale)")
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("fraction of deliveries at or below")
    ordered = sorted(seen, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    fig.legend(
        [seen[n] for n in ordered],
        [f"{n} (floor)" if n == FLOOR else n for n in ordered],
        loc="outside right upper",
    )
    title = "Delivery latency distribution (CDF)"
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    caption = (
        "Cumulative distribution of delivery latency, every recorded bucket of each run's merged"
        " HdrHistogram (1 µs to 60 s, 3 significant digits); x log scale. "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s, _ in panels)
        + (f" No histogram for {', '.join(missing)}." if missing else "")
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "latency-cdf", title)


def fit_label(name: str, result: dict[str, Any]) -> str:
    memory = result["memory_per_connection"]
    if memory["r2"] is None:
        return name
    count = len(memory["points"])
    return f"{name}\nR² {memory['r2']:.2f}" + (f" ({count} points)" if count < 3 else "")


def connections_per_client(results: list[dict[str, Any]]) -> str:
    ratios = []
    for r in results:
        points = r["memory_per_connection"]["points"]
        if points and points[-1].get("clients"):
            ratios.append(f"{label(r)} {points[-1]['connections'] / points[-1]['clients']:.2f}")
    return ", ".join(ratios) or "not recorded"


def _memory_results(ctx: Context) -> list[dict[str, Any]]:
    return [
        r for r in of(ctx.summary, "idle") if r["memory_per_connection"]["rss_bytes"] is not None
    ]


def chart_memory(ctx: Context) -> Chart | None:
    results = _memory_results(ctx)
    if not results:
        why = (
            "no idle result in this run"
            if not of(ctx.summary, "idle")
            else "no idle run produced a fit"
        )
        ctx.skipped.append(f"Memory per connection: {why}.")
        return None
    fig = new_figure(4.6)
    ax = fig.add_subplot()
    names = [label(r) for r in results]
    rss = [r["memory_per_connection"]["rss_bytes"] / 1024 for r in results]
    kernel = [(r["memory_per_connection"]["kernel_bytes"] or 0) / 1024 for r in results]
    colours = [colour_of(n) for n in names]
    xs = range(len(results))
    ax.bar(xs, rss, color=colours, width=0.6, zorder=2)
    ax.bar(xs, kernel, bottom=rss, color=colours, alpha=0.35, hatch="///", edgecolor=colours,
           width=0.6, lw=0, zorder=2)  # fmt: skip
    for x, a, b in zip(xs, rss, kernel, strict=True):
        ax.annotate(f"{a + b:,.1f}", (x, a + b), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_xticks(
        list(xs),
        labels=[fit_label(n, r) for n, r in zip(names, results, strict=True)],
    )
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("KiB per idle connection")
    ax.set_xlabel("transport (R² of the RSS fit)")
    ax.margins(y=0.12)
    title = "idle: memory per connection (server RSS + kernel)"
    ax.set_title(title, loc="left")
    fig.legend(
        handles=[
            Patch(facecolor="#777777", label="server RSS"),
            Patch(facecolor="#777777", alpha=0.35, hatch="///", label="kernel TCP memory\n(half the loopback pair)"),
        ],
        loc="outside right upper",
    )  # fmt: skip
    points = [p for r in results for p in r["memory_per_connection"]["points"]]
    conns = sorted(p["connections"] for p in points)
    plateaus = sorted({len(r["memory_per_connection"]["points"]) for r in results})
    unfitted = [label(r) for r in of(ctx.summary, "idle") if r not in results]
    caption = (
        "Slope of the least-squares fit of memory against the server's established connections over"
        f" the idle plateaus ({'-'.join(map(str, plateaus))} plateaus a transport"
        + (f", {conns[0]:,.0f}-{conns[-1]:,.0f} connections" if conns else "")
        + "); labels give the total in KiB."
        + (" Through 2 plateaus any line fits: R² = 1 says nothing." if 2 in plateaus else "")
        + f" Server connections per client at the top plateau: {connections_per_client(results)};"
        " where above 1, a client costs the slope times that."
        + (f" No fit for {', '.join(unfitted)} (see the warnings)." if unfitted else "")
        + f" idle: {workload(of(ctx.summary, 'idle'))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "memory-per-connection", title)


def chart_memory_fit(ctx: Context) -> Chart | None:
    results = [r for r in _memory_results(ctx) if len(r["memory_per_connection"]["points"]) >= 2]
    if not results:
        ctx.skipped.append("Memory fits: no idle result with two or more plateaus.")
        return None
    fig = new_figure(4.8)
    ax = fig.add_subplot()
    for r in results:
        points = r["memory_per_connection"]["points"]
        xs = [p["connections"] for p in points]
        ys = [p["rss_bytes"] for p in points]
        colour = colour_of(label(r))
        try:
            slope, intercept, r2 = fit_line(xs, ys)
        except ValueError:
            slope = None
        ax.scatter(xs, [y / 2**20 for y in ys], color=colour, s=28, zorder=3)
        if slope is not None:
            ends = [min(xs), max(xs)]
            ax.plot(ends, [(slope * x + intercept) / 2**20 for x in ends], color=colour, lw=1.5,
                    ls="--" if is_floor(r) else "-",
                    label=f"{label(r)}: {slope / 1024:,.1f} KiB/conn, R² {r2:.2f}")  # fmt: skip
    ax.set_xlabel("server connections (established TCP, mean of each plateau's second half)")
    ax.set_ylabel("server RSS (MiB)")
    title = "idle: server RSS against connections, with the fitted lines"
    ax.set_title(title, loc="left")
    fig.legend(loc="outside right upper")
    caption = (
        "Each point is one plateau of the idle ramp (RSS averaged over its second half); each"
        " line the least-squares fit whose slope is the RSS cost of a connection."
        f" idle: {workload(of(ctx.summary, 'idle'))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "memory-fit", title)


def chart_saturate(ctx: Context) -> Chart | None:
    results = [r for r in of(ctx.summary, "saturate") if r.get("steps")]
    if not results:
        why = (
            "no saturate result in this run"
            if not of(ctx.summary, "saturate")
            else "no saturate step recorded"
        )
        ctx.skipped.append(f"Throughput against p99: {why}.")
        return None
    bound = next(
        (r["parameters"].get("latency_bound_ms") for r in results if r["parameters"]), None
    )
    fig = new_figure(4.8)
    ax = fig.add_subplot()
    any_failed = False
    for r in results:
        steps = [s for s in r["steps"] if s["latency_ms"]["p99"] is not None]
        if not steps:
            continue
        colour = colour_of(label(r))
        xs = [s["deliveries_per_s"] for s in steps]
        ys = [s["latency_ms"]["p99"] for s in steps]
        ax.plot(
            xs, ys, color=colour, lw=1.6, ls="--" if is_floor(r) else "-", label=label(r), zorder=2
        )
        for s, x, y in zip(steps, xs, ys, strict=True):
            any_failed = any_failed or not s["held"]
            ax.plot([x], [y], ls="none", marker="o" if s["held"] else "X", ms=6 if s["held"] else 9,
                    color=colour, mec="white" if s["held"] else "#222222", mew=0.8, zorder=3)  # fmt: skip
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
    if bound:
        extra.append(
            Line2D([], [], color=BOUND_COLOUR, ls="--", label=f"bound: p99 ≤ {bound:g} ms")
        )
    fig.legend(handles + extra, labels + [h.get_label() for h in extra], loc="outside right upper")
    counts = [
        s["latency_ms"]["count"] for r in results for s in r["steps"] if s["latency_ms"]["count"]
    ]
    caption = (
        "Each point is one step of the ramp: deliveries per second against that step's p99 delivery"
        " latency. A step holds when p99 ≤ the bound and every message is delivered."
        + (f" Samples per step: {min(counts):,}-{max(counts):,}." if counts else "")
        + f" saturate: {workload(of(ctx.summary, 'saturate'))}. {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "saturate-hockey-stick", title)


def _grouped_bars(
    ax: Any,
    ctx: Context,
    value: Callable[[dict[str, Any]], float | None],
    fmt: Callable[[float], str],
) -> tuple[list[str], list[str]]:
    """Bars grouped by scenario, one colour per transport; returns (scenarios, transports) drawn."""
    scenarios = [
        s
        for s in scenarios_in(ctx.summary)
        if any(value(r) is not None for r in of(ctx.summary, s))
    ]
    names: list[str] = []
    for s in scenarios:
        for r in of(ctx.summary, s):
            if value(r) is not None and label(r) not in names:
                names.append(label(r))
    names.sort(key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    width = 0.84 / max(len(names), 1)
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, s in enumerate(scenarios):
            r = next((r for r in of(ctx.summary, s) if label(r) == name), None)
            v = value(r) if r else None
            if v is not None:
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width=width * 0.92, color=colour_of(name), label=name, zorder=2)
        ax.bar_label(bars, labels=[fmt(y) for y in ys], rotation=90, fontsize=6.5, padding=2)
    ax.set_xticks(
        range(len(scenarios)),
        labels=[s if s != "saturate" else "saturate\n(highest step held)" for s in scenarios],
    )
    ax.grid(axis="x", visible=False)
    return scenarios, names


def chart_cpu(ctx: Context) -> Chart | None:
    def value(r: dict[str, Any]) -> float | None:
        return r["server_cpu_ms_per_1k_msgs"]

    if not any(value(r) is not None for r in ctx.summary["results"]):
        ctx.skipped.append("Server CPU per 1,000 messages: no run measured it.")
        return None
    fig = new_figure(4.6)
    ax = fig.add_subplot()
    scenarios, _ = _grouped_bars(ax, ctx, value, lambda v: f"{v:,.1f}")
    ax.margins(y=0.18)
    ax.set_ylabel("server CPU per 1,000 deliveries (ms)")
    title = "Server CPU per 1,000 delivered messages"
    ax.set_title(title, loc="left")
    fig.legend(loc="outside right upper")
    ticks = [
        t for r in ctx.summary["results"] if value(r) is not None and (t := cpu_tick_ms_per_1k(r))
    ]
    caption = (
        "Server process CPU (user + system) from the measurement window's start to the end of the"
        " drain, per 1,000 deliveries"
        + ("; saturate at its highest step held" if "saturate" in scenarios else "")
        + f"; {deliveries_text(ctx.summary, scenarios)}."
        + (
            f" Process CPU is counted in 10 ms ticks: one tick moves these bars by"
            f" {span(ticks)} ms, so smaller differences are noise."
            if ticks
            else ""
        )
        + " "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s in scenarios)
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "cpu-per-1k", title)


def chart_bytes(ctx: Context) -> Chart | None:
    def down(r: dict[str, Any]) -> float | None:
        return r["bytes_per_message"]["down"]

    def up(r: dict[str, Any]) -> float | None:
        return r["bytes_per_message"]["up"]

    if not any(down(r) is not None or up(r) is not None for r in ctx.summary["results"]):
        ctx.skipped.append("Bytes per message: no run measured them.")
        return None
    fig = new_figure(7.2)
    top, bottom = fig.subplots(2, 1)
    scenarios: list[str] = []
    for ax, value, what in (
        (top, down, "down: server → clients, per delivery"),
        (bottom, up, "up: clients → server, per message sent"),
    ):
        drawn, _ = _grouped_bars(ax, ctx, value, lambda v: f"{v:,.0f}")
        scenarios = scenarios or drawn
        ax.set_yscale("log")
        log_axis(ax.yaxis)
        values = [v for r in ctx.summary["results"] if (v := value(r))]
        if values:  # bars on a log axis start at a round decade below the data
            ax.set_ylim(10 ** math.floor(math.log10(min(values))), max(values) * 2.6)
        ax.set_ylabel("TCP payload bytes (log scale)")
        ax.set_title(what, loc="left", fontsize=10)
    handles, labels = top.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper")
    title = "Bytes on the wire per message"
    fig.suptitle(title, x=0.01, ha="left", fontsize=11, fontweight="bold")
    caption = (
        "TCP payload bytes (kernel counters, no IP/TCP headers) over the window and drain: down per"
        " delivery, up per message sent; empty polls, heartbeats, pings and HTTP headers count;"
        f" {deliveries_text(ctx.summary, scenarios)}."
        " "
        + " ".join(f"{s}: {workload(of(ctx.summary, s))}." for s in scenarios)
        + f" {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "bytes-per-message", title)


def chart_polling(ctx: Context) -> Chart | None:
    polls = sorted(
        (
            r
            for r in ctx.summary["results"]
            if r["transport"] == "poll" and r["parameters"].get("poll_interval_s")
        ),
        key=lambda r: SCENARIOS.index(r["scenario"]) if r["scenario"] in SCENARIOS else 99,
    )
    points = []  # (scenario, interval T in s, p50 ms, p99 ms, samples)
    for r in polls:
        interval = r["parameters"]["poll_interval_s"]
        steps = (r.get("steps") or []) if r["scenario"] == "saturate" else [r]
        for item in steps:
            lat = item["latency_ms"]
            if lat["count"] and lat["p50"] is not None:
                points.append((r["scenario"], interval, lat["p50"], lat["p99"], lat["count"]))
    if not points:
        ctx.skipped.append(
            "Short polling's interval trade-off: no short-polling result timed a delivery."
        )
        return None
    fig = new_figure(5.0)
    ax = fig.add_subplot()
    colour = colour_of("poll")
    intervals = [0.1 * (100 ** (i / 120)) for i in range(121)]  # T from 0.1 s to 10 s
    rates = [1 / t for t in intervals]
    ax.plot(rates, [t * 500 for t in intervals], color=colour, ls="--", lw=1.3,
            label="theory: p50 ≈ T/2")  # fmt: skip
    ax.plot(rates, [t * 990 for t in intervals], color=colour, ls=":", lw=1.6,
            label="theory: p99 ≈ 0.99·T")  # fmt: skip
    seen: set[tuple[str, str]] = set()
    for scenario, interval, p50, p99, _count in points:
        marker = SCENARIO_MARKERS.get(scenario, "o")
        for kind, value, face in (("p50", p50, colour), ("p99", p99, "white")):
            if value is None:
                continue
            ax.plot([1 / interval], [value], ls="none", marker=marker, ms=8, mfc=face,
                    mec="#222222" if kind == "p50" else colour, mew=0.8 if kind == "p50" else 1.6,
                    color=colour, zorder=3,
                    label=None if (scenario, kind) in seen else f"measured {kind}, {scenario}")  # fmt: skip
            seen.add((scenario, kind))
    for interval in sorted({t for _, t, *_ in points}):
        here = [p for p in points if p[1] == interval]
        for kind, index in (("p50", 2), ("p99", 3)):
            values = [p[index] for p in here if p[index] is not None]
            if values:
                low, high = min(values), max(values)
                text = f"{kind} {num(low)}" + (f"-{num(high)}" if high != low else "") + " ms"
                ax.annotate(text, (1 / interval, high), xytext=(10, 0), textcoords="offset points",
                            fontsize=7.5, ha="left", va="center", color="#222222",
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0, "alpha": 0.85})  # fmt: skip
    reference = next(
        (
            r
            for s in LATENCY_SCENARIOS
            for r in timed(of(ctx.summary, s))
            if r["transport"] == "longpoll"
        ),
        None,
    )
    lows = [p[2] for p in points] + [t * 500 for t in intervals]
    if reference is not None:
        lows.append(reference["latency_ms"]["p50"])
        ax.axhline(reference["latency_ms"]["p50"], color=colour_of("longpoll"), lw=1, ls="-.",
                   label=f"longpoll p50, {reference['scenario']}"
                   f" ({num(reference['latency_ms']['p50'])} ms)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis)
    log_axis(ax.yaxis)
    ax.set_xlim(0.08, 12.5)
    ax.set_ylim(10 ** math.floor(math.log10(min(lows))), 15_000)
    ax.set_xlabel("polls per second per client (1/T, log scale)")
    ax.set_ylabel("delivery latency (ms, log scale)")
    secondary = ax.secondary_xaxis("top", functions=(_inverse, _inverse))
    secondary.set_xlabel("poll interval T (s)")
    log_axis(secondary.xaxis)
    title = "Short polling: latency against request rate"
    ax.set_title(title, loc="left")
    fig.legend(loc="outside right upper")
    users = {r["scenario"]: r["parameters"].get("users") for r in polls}
    measured = []
    for scenario, interval in dict.fromkeys((p[0], p[1]) for p in points):
        counts = [p[4] for p in points if p[0] == scenario and p[1] == interval]
        clients = users.get(scenario) or 0
        measured.append(
            f"{scenario} at T = {interval:g} s ({g(clients)} clients, so {g(round(clients / interval, 1))}"
            f" polls/s at the server; n = {', '.join(f'{c:,}' for c in counts)}"
            + (
                " deliveries, one marker per ramp step)"
                if scenario == "saturate"
                else " deliveries)"
            )
        )
    caption = (
        "Lines are theory, not measurement: a message waits for the next poll, uniformly between"
        " 0 and T, so p50 ≈ T/2 and p99 ≈ 0.99·T (plus a round trip), for T from 0.1 s to 10 s; a"
        " client makes 1/T polls a second, so N clients make N/T. Markers are measured (filled"
        " p50, hollow p99): " + "; ".join(measured) + f". {ctx.machine}."
    )
    return save(fig, caption, ctx.directory, "polling-interval", title)


def _inverse(values: Any) -> Any:
    import numpy as np

    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(values > 0, 1 / np.where(values > 0, values, 1), np.inf)


def draw_charts(ctx: Context) -> None:
    present = scenarios_in(ctx.summary)
    makers: list[Callable[[], Chart | None]] = []
    for scenario in LATENCY_SCENARIOS:
        if scenario in present:
            makers.append(lambda s=scenario: chart_latency(ctx, s))
        else:
            ctx.skipped.append(
                f"Latency percentiles, {scenario}: no {scenario} result in this run."
            )
    makers += [
        lambda: chart_cdf(ctx),
        lambda: chart_memory(ctx),
        lambda: chart_memory_fit(ctx) if _memory_results(ctx) else None,
        lambda: chart_saturate(ctx),
        lambda: chart_cpu(ctx),
        lambda: chart_bytes(ctx),
        lambda: chart_polling(ctx),
    ]
    with matplotlib.rc_context(RC):
        for make in makers:
            chart = make()
            if chart is not None:
                ctx.charts.append(chart)


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


@dataclass
class Fig:
    number: int
    chart: Chart


Block = Heading | Para | Bullets | Table | Fig


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def document(
    summary: dict[str, Any], run_dir: Path, charts: list[Chart], skipped: list[str]
) -> list[Block]:
    metadata = summary["metadata"]
    blocks: list[Block] = [
        Heading(1, f"wirewise report: run {run_dir.name}"),
        Para(
            f"{len(summary['results'])} results (scenario {X} transport) from {started(metadata)}, on"
            f" {metadata.get('cpu_model', 'an unknown CPU')} ({cores_text(metadata)}), commit"
            f" {short_commit(str(metadata.get('git_commit', '')))}. Latencies in milliseconds,"
            " memory in KiB (1,024 bytes), wire figures in bytes of TCP payload."
        ),
        Heading(2, "Verdict", "verdict"),
        Bullets(list(verdict(summary))),
        Heading(2, "Conditions", "conditions"),
        conditions_table(summary),
    ]
    for scenario in scenarios_in(summary):
        results = of(summary, scenario)
        blocks.append(Heading(2, f"Scenario: {scenario}", slug(f"scenario {scenario}")))
        blocks.append(Para(f"{workload(results)}."))
        if scenario == "idle":
            blocks.append(idle_table(results))
        elif scenario == "faults":
            blocks[-1] = Heading(2, "Reliability (scenario: faults)", "reliability")
            blocks.append(Para(f"{workload(results)}. {RELIABILITY_TEXT}"))
            blocks.append(reliability_table(results))
            blocks.append(Heading(3, "faults: delivery latency through the faults"))
            blocks.append(latency_table(results))
        elif scenario == "saturate":
            blocks.append(saturate_table(results))
            steps = saturate_steps_table(results)
            if steps.rows:
                blocks.append(Heading(3, "saturate: every ramp step"))
                blocks.append(steps)
        else:
            blocks.append(latency_table(results))
    if not summary["results"]:
        blocks.append(Para("This run holds no results."))
    blocks.append(Heading(2, "Warnings", "warnings"))
    groups = warning_groups(summary)
    blocks.append(Bullets(groups) if groups else Para("No result carries a warning."))
    blocks.append(Heading(2, "Charts", "charts"))
    for i, chart in enumerate(charts, 1):
        blocks.append(Fig(i, chart))
    if skipped:
        blocks.append(Heading(3, "Not drawn"))
        blocks.append(Bullets(list(skipped)))
    return blocks


def conditions_table(summary: dict[str, Any]) -> Table:
    m = summary["metadata"]
    plan = m.get("plan") or {}
    settings: dict[str, Any] = {}
    shared_note = ""
    for r in summary["results"]:
        settings = settings or r["parameters"].get("server_settings") or {}
        shared_note = shared_note or r["parameters"].get("server_shared", "")
    rows = [
        ["CPU", f"{m.get('cpu_model')}, {cores_text(m)}"],
        ["kernel", str(m.get("kernel"))],
        ["platform", str(m.get("platform"))],
        ["Python", str(m.get("python"))],
        ["wirewise", f"{m.get('wirewise_version')}, commit {m.get('git_commit')}"],
        ["started", str(m.get("started_at"))],
        ["command", shlex.join(str(a) for a in m.get("argv") or [])],
    ]
    if m.get("libraries"):
        rows.append(["libraries", ", ".join(f"{k} {v}" for k, v in m["libraries"].items())])
    if plan:
        rows.append(
            ["plan", ", ".join(f"{k}={_plain(v)}" for k, v in plan.items() if k not in ("out",))]
        )
    if settings:
        rows.append(["server settings", ", ".join(f"{k}={v}" for k, v in settings.items())])
    if shared_note:
        rows.append(["servers", shared_note])
    if m.get("fd_limit"):
        rows.append(["open-file limit", f"{m['fd_limit']:,}"])
    return Table(["", ""], rows, align="ll", key_value=True)


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(map(str, value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def pct_cell(latency: dict[str, Any], key: str) -> str:
    value = latency.get(key)
    if value is None:
        return "-"
    return num(value) + (" †" if key in too_few_samples(latency.get("count") or 0) else "")


THIN_NOTE = (
    "† fewer than 10 samples lie beyond this percentile (p99 needs 1,000 samples, p99.9 10,000):"
    " an indication only."
)


def latency_table(results: list[dict[str, Any]]) -> Table:
    rows = []
    for r in results:
        lat, d, w = r["latency_ms"], r["deliveries"], r["bytes_per_message"]
        rows.append(
            [
                label(r),
                pct_cell(lat, "p50"),
                pct_cell(lat, "p99"),
                pct_cell(lat, "p999"),
                num(lat.get("count")),
                num(d.get("expected")),
                num(d.get("delivered")),
                num(d.get("lost")),
                num(r["throughput_msgs_per_s"], 0),
                num(r["server_cpu_ms_per_1k_msgs"], 1),
                num(w["down"], 0),
                num(w["up"], 0),
                num(r["load_generator"].get("cpu_percent_max"), 0),
                str(len(r["warnings"])) if r["warnings"] else "",
            ]
        )
    return Table(
        ["transport", "p50 ms", "p99 ms", "p99.9 ms", "samples", "expected", "delivered", "lost",
         "msgs/s", "CPU ms/1k", "bytes down", "bytes up", "Locust CPU %", "warnings"],
        rows,
        note=THIN_NOTE + " msgs/s: deliveries a second in the window (the offered load when none is"
        " lost). Bytes: TCP payload, down per delivery, up per message sent.",
    )  # fmt: skip


def idle_table(results: list[dict[str, Any]]) -> Table:
    rows = []
    for r in results:
        m = r["memory_per_connection"]
        total = (
            m["rss_bytes"] + m["kernel_bytes"]
            if m["rss_bytes"] is not None and m["kernel_bytes"] is not None
            else None
        )
        points = m["points"]
        plateaus = ", ".join(f"{p['connections']:,.0f}" for p in points) or "-"
        top = points[-1].get("clients") if points else None
        rows.append(
            [
                label(r),
                kib(m["rss_bytes"]),
                kib(m["uss_bytes"]),
                kib(m["kernel_bytes"]),
                kib(total),
                approx(2**30 / total) if total and total > 0 else "-",
                f"{m['r2']:.3f}" if m["r2"] is not None else "-",
                plateaus,
                num(top),
                num(r["load_generator"].get("cpu_percent_max"), 0),
                str(len(r["warnings"])) if r["warnings"] else "",
            ]
        )
    return Table(
        ["transport", "RSS KiB/conn", "USS KiB/conn", "kernel KiB/conn", "RSS+kernel KiB",
         "conns per GiB", "R²", "server connections at plateaus", "clients at top", "Locust CPU %",
         "warnings"],
        rows,
        note="Slopes of least-squares fits against the server's established connections; kernel:"
        " half the slope of sockstat pages plus TCP slab objects (both ends of a loopback connection"
        " live in one kernel). conns per GiB: 1 GiB / (RSS + kernel), two significant figures.",
    )  # fmt: skip


RELIABILITY_TEXT = (
    "Mid-run the server is killed with SIGKILL and started again on the same port; meanwhile one"
    " reader stops reading while a flood of large messages goes to its room. Every expected"
    " delivery is checked one by one: delivered, lost with a gap (the killed process's history,"
    " signalled), or lost silently (the protocol allows none)."
)


def reliability_table(results: list[dict[str, Any]]) -> Table:
    rows = []
    for r in results:
        f = r.get("faults") or {}
        rec = f.get("reconnect_ms") or {}
        clients = f.get("clients")
        back = rec.get("count")
        rows.append(
            [
                label(r),
                num(f.get("outage_s"), 2),
                f"{num(back)} of {num(clients)}" + (" (all)" if f.get("all_back") else ""),
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
                str(len(r["warnings"])) if r["warnings"] else "",
            ]
        )
    return Table(
        ["transport", "outage s", "clients back", "reconnect p50 ms", "reconnect p99 ms",
         "reconnect max ms", "lost without resume", "lost with resume", "of which with a gap",
         "silently", "gaps", "slow-consumer cut-offs", "RSS peak MiB", "warnings"],
        rows,
        note="Reconnect: from the new process listening to each client's first message on a new"
        " connection (outage: from the kill until it listened). Lost without resume: what a client"
        " that reconnects from 'now' would have missed (the deliveries replayed by resume plus those"
        " lost anyway). slow-consumer cut-offs: the server's own count (n/a for polling: no live"
        " queue). RSS peak: the highest server RSS sampled (every 0.5 s), both processes.",
    )  # fmt: skip


def saturate_table(results: list[dict[str, Any]]) -> Table:
    rows = []
    for r in results:
        best = r.get("highest_rate_held") or {}
        lat, d, w = r["latency_ms"], r["deliveries"], r["bytes_per_message"]
        steps = r.get("steps") or []
        rows.append(
            [
                label(r),
                num(best.get("deliveries_per_s"), 0),
                num(best.get("rate_per_user")),
                pct_cell(lat, "p50"),
                pct_cell(lat, "p99"),
                pct_cell(lat, "p999"),
                num(lat.get("count")),
                f"{sum(s['held'] for s in steps)} of {len(steps)}",
                str(r.get("stopped_by") or "-"),
                num(d.get("expected")),
                num(d.get("delivered")),
                num(d.get("lost")),
                num(r["server_cpu_ms_per_1k_msgs"], 1),
                num(w["down"], 0),
                num(w["up"], 0),
                num(r["load_generator"].get("cpu_percent_max"), 0),
                str(len(r["warnings"])) if r["warnings"] else "",
            ]
        )
    return Table(
        ["transport", "highest deliveries/s held", "msg/s per user", "p50 ms", "p99 ms", "p99.9 ms",
         "samples", "steps held", "stopped by", "expected", "delivered", "lost", "CPU ms/1k",
         "bytes down", "bytes up", "Locust CPU %", "warnings"],
        rows,
        align="lrrrrrrrlrrrrrrrr",
        note="Latency, CPU and bytes of the highest step that held (p99 ≤ bound, every message"
        " delivered); deliveries over the whole ramp. " + THIN_NOTE,
    )  # fmt: skip


def saturate_steps_table(results: list[dict[str, Any]]) -> Table:
    rows = []
    for r in results:
        for s in r.get("steps") or []:
            lat = s["latency_ms"]
            rows.append(
                [
                    label(r),
                    str(s["step"]),
                    num(s["rate_per_user"]),
                    num(s["sent_per_s"], 1),
                    num(s["deliveries_per_s"], 1),
                    pct_cell(lat, "p50"),
                    pct_cell(lat, "p99"),
                    num(lat.get("count")),
                    num(s.get("lag_p99_ms")),
                    num(s.get("server_cpu_ms_per_1k_msgs"), 1),
                    "yes" if s["held"] else "no",
                ]
            )
    return Table(
        ["transport", "step", "msg/s per user", "sent/s", "deliveries/s", "p50 ms", "p99 ms",
         "samples", "schedule lag p99 ms", "CPU ms/1k", "held"],
        rows,
    )  # fmt: skip


def warning_groups(summary: dict[str, Any]) -> list[str | tuple[str, list[str]]]:
    """Every warning verbatim, grouped like :func:`wirewise.console.grouped_warnings`."""
    groups: dict[str, dict[str, list[str]]] = {}
    for r in summary["results"]:
        for warning in r["warnings"]:
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
                    f"{total} runs, {len(texts)} variants of: {example}",
                    [f"{_runs(runs)}: {text}" for text, runs in texts.items()],
                )
            )
    return items


def _runs(runs: list[str]) -> str:
    return runs[0] if len(runs) == 1 else f"{len(runs)} runs ({', '.join(runs)})"


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
            lines += [
                f"### Figure {block.number}. {chart.title}",
                "",
                f"![{chart.title}]({path})",
                "",
                f"Figure {block.number}: {chart.caption} (SVG: [{chart.svg.name}]({chart.svg.relative_to(out_dir).as_posix()}))",
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
td.l { min-width: 7.5rem; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
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
        for row in table.rows:
            parts.append(
                "<tr>"
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
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    summary = read_summary(run_dir)
    out_dir = Path(out_dir)
    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(summary, run_dir, charts_dir)
    draw_charts(ctx)
    blocks = document(summary, run_dir, ctx.charts, ctx.skipped)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks, out_dir))
    page = out_dir / "report.html"
    page.write_text(render_html(blocks, f"wirewise report: run {run_dir.name}"))
    return ReportFiles(
        markdown, page, tuple(ctx.charts), tuple(ctx.skipped), time.monotonic() - began
    )
