"""Choosing and ordering a summary's results: which ones a table, chart or sentence may use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wirewise.registry import BACKENDS, FLOOR
from wirewise.report.text import cut, num, value_range
from wirewise.results import Result, Summary
from wirewise.summarize import SCENARIO_ORDER

LATENCY_SCENARIOS = ("chat", "broadcast", "game")


ORDER = tuple(b.label for b in BACKENDS)


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


def run_label(result: Result) -> str:
    """``chat/ws``: the scenario and label every quoted figure is tied to (``chat/ws
    (single)`` for a deployment compared with the run's own)."""
    variant = f" ({result.variant})" if result.variant else ""
    network = f" at {result.network}" if result.network else ""
    return f"{result.scenario}/{result.label}{variant}{network}"


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


def usable(result: Result | None) -> str | None:
    """Why a result cannot be quoted for latency, or None when it can."""
    if result is None:
        return "not measured"
    if not result.valid:
        return f"invalid ({cut(first_reason(result), 70)})"
    if not is_timed(result):
        return "timed no delivery"
    return None


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


def poll_results(summary: Summary) -> list[Result]:
    """Short polling in chat, broadcast and game with its interval recorded (any validity)."""
    return [
        r
        for s in LATENCY_SCENARIOS
        for r in timed(of(summary, s))
        if r.transport == "poll" and r.parameters.get("poll_interval_s")
    ]


def labelled_warnings(results: Iterable[Result]) -> list[tuple[str, str]]:
    """``(run, warning)`` for every warning, in result order: what :func:`.text.group_warnings`
    groups for the report and the console alike."""
    return [(run_label(r), warning) for r in results for warning in r.warnings]


def conditions(result: Result) -> tuple[float, float, float, float | None]:
    """(rtt ms, loss %, jitter ms, bandwidth kbit/s or None) a result ran under."""
    c = result.conditions
    return (
        float(c.get("rtt_ms") or 0.0),
        float(c.get("loss_pct") or 0.0),
        float(c.get("jitter_ms") or 0.0),
        c.get("bandwidth_kbit"),
    )
