"""The verdict: one sentence per question, quoting valid results only, each figure named."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wirewise import stats
from wirewise.metrics import PERCENTILES, too_few_samples
from wirewise.report.conditions import sampling_text, shared_cores
from wirewise.report.select import (
    LATENCY_SCENARIOS,
    as_summary,
    bytes_pair,
    cpu_range,
    cpu_text,
    find,
    first_reason,
    invalid,
    is_floor,
    memory_total,
    names,
    of,
    per_what,
    repeat_count,
    run_label,
    scenarios_in,
    timed,
    usable,
    valid,
    wire_total,
)
from wirewise.report.text import (
    PCT_NAMES,
    X,
    approx,
    ci,
    factor,
    g,
    interval_text,
    kib,
    num,
    pct,
    value_range,
)
from wirewise.results import Result, Summary
from wirewise.summarize import GENERATOR_SATURATED

FLOOR_FACTOR = 3.0
"""A transport "stays near the floor" when its p50 and p99 are both within this factor of the floor's."""


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
    if {repeat_count(r) for r in results} == {1}:
        parts.append(
            "every result is one repeat, so the spread between runs is not measured: the"
            " intervals cover sampling within a run only"
        )
    return "Caveats: " + "; ".join(parts) + "."
