"""The report's tables, one builder per kind of result, with the notes that explain their columns."""

from __future__ import annotations

import shlex
from typing import Any

from wirewise.metrics import too_few_samples
from wirewise.report.blocks import Block, Bullets, Para, Table
from wirewise.report.conditions import cores_text, repeats_text
from wirewise.report.select import (
    bytes_pair,
    cpu_text,
    invalid,
    labelled_warnings,
    memory_total,
    names,
    of,
    repeat_count,
    repeat_p99s,
    scenarios_in,
    valid,
)
from wirewise.report.text import (
    DASH,
    approx,
    g,
    group_warnings,
    interval_text,
    kib,
    num,
    pct,
    runs_text,
    value_range,
)
from wirewise.results import Latency, Result, Summary
from wirewise.summarize import GENERATOR_SATURATED


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
    if plan.get("proxy"):
        rows.append(["path", f"Locust -> nginx ({plan['proxy']}) -> one server"])
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


def failover_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        f = r.faults or {}
        rec = f.get("reconnect_ms") or {}
        d = r.deliveries
        rows.append(
            [
                r.label,
                validity_cell(r),
                num(f.get("moved"))
                if f.get("on_killed_instance") is None
                else f"{num(f.get('moved'))} of {num(f.get('on_killed_instance'))}",
                num(rec.get("p50"), 0),
                num(rec.get("p99"), 0),
                num(rec.get("max"), 0),
                num(d.expected),
                num(d.lost),
                num(d.duplicated),
                num(f.get("gaps_after_kill")),
                num(f.get("delivered_by_resume")),
                *survivors_cells(f.get("survivors")),
                warnings_cell(r),
            ]
        )
    return Table(
        ["transport", "valid", "clients moved", "reconnect p50 ms", "reconnect p99 ms",
         "reconnect max ms", "deliveries expected", "lost", "duplicated", "gaps after the kill",
         "delivered by resume", "survivors p50 ms before / in storm / after",
         "survivors p99 ms before / in storm / after", "warnings"],
        rows,
        align="ll" + "r" * 12,
        note="Clients moved: those whose subscription reopened after the kill, of the streams,"
        " sockets and held polls the killed instance had (its /stats just before; a short poller"
        " holds none and never notices); in a rolling restart, every reopened subscription."
        " Reconnect: from the kill (or the stop that caused it) to the client's first message on"
        " its new connection; the slow reader, which the server cuts off by design, is left out"
        " of both (its time is `slow_reader_back_ms` in the summary). Delivered by resume: deliveries a client without resume would have"
        " missed. Survivors: the clients no kill moved, their delivery latency (from each"
        " message's schedule) before the first kill (the slow reader's flood included), during"
        " each storm (from the kill to the last moved client's first message; its deliveries"
        " counted) and after the last storm to the window's end (the calm baseline).",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


def fallback_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        f = r.fallback or {}
        lost, first = f.get("lost_ms") or {}, f.get("first_message_ms") or {}
        reasons = "; ".join(f"{n}: {why}" for why, n in (f.get("reasons") or {}).items())
        rows.append(
            [
                r.label,
                validity_cell(r),
                (r.deployment or {}).get("proxy") or "none",
                " → ".join(f.get("order") or []),
                ", ".join(f"{num(n)} {t}" for t, n in (f.get("settled") or {}).items()),
                f"{num(lost.get('p50'), 1)} / {num(lost.get('p99'), 1)} / {num(lost.get('max'), 1)}",
                f"{num(first.get('p50'), 1)} / {num(first.get('p99'), 1)}"
                f" / {num(first.get('max'), 1)}",
                f"{num(r.deliveries.lost)} / {num(r.deliveries.duplicated)}",
                reasons or "-",
                warnings_cell(r),
            ]
        )
    return Table(
        ["server", "valid", "proxy", "order tried", "settled on", "lost to failed steps ms p50 / p99 / max",
         "first message ms p50 / p99 / max", "lost / duplicated", "why steps failed", "warnings"],
        rows,
        align="llll" + "l" + "r" * 3 + "ll",
        note="Lost to failed steps: per user, from the first attempt to the start of the step that"
        " settled (a refused handshake fails at once; a step that hangs lasts its time limit)."
        " First message: from the first attempt to the first message delivered on the settled"
        " transport (the user's own user_joined, or a chat message). Both are timed while the"
        " users ramp up, so they include the load generator's own work then.",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


def survivors_cells(survivors: dict[str, Any] | None) -> list[str]:
    """'before / in the storm / after' for p50 and p99, the storm's delivery count beside."""
    if not survivors:
        return ["-", "-"]
    phases = [survivors[k] for k in ("before_ms", "during_ms", "after_ms") if k in survivors]
    cells = [" / ".join(num(phase[p], 2) for phase in phases) for p in ("p50", "p99")]
    cells[1] += f" ({num(survivors['during_ms']['count'])} in {num(survivors['storm_s'], 2)} s)"
    return cells


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
    rows: list[list[str]] = []
    invalid_rows: set[int] = set()
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
    rows: list[list[str]] = []
    marked: set[int] = set()
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
    """Every warning verbatim, grouped as the console groups them (:func:`.text.group_warnings`),
    so that one cause met in many results reads as one item with its variants under it."""
    items: list[str | tuple[str, list[str]]] = []
    for group in group_warnings(labelled_warnings(summary.results)):
        variants = group.variants
        if len(variants) == 1:
            items.append(f"{runs_text(group.runs)}: {group.example}")
        else:
            items.append(
                (
                    f"{len(group.runs)} results, {len(variants)} variants of: {group.example}",
                    [f"{runs_text(runs)}: {text}" for text, runs in variants.items()],
                )
            )
    return items
