"""The scale-out section: idle connections held by several processes, what each part costs,
and ``decide``'s estimate for the same workload on the same deployment (instances and balancer
from the run's plan; per connection from a single-process reference run; Redis and the balancer
from the newest idle results that measured them) beside what was measured."""

from __future__ import annotations

from typing import Any

from wirewise.decide import (
    PROXIES,
    Estimate,
    Workload,
    decide,
    deployment_runs,
    kernel_share,
    measured_parts,
    results_dirs,
)
from wirewise.report.blocks import Block, Heading, Para, Table
from wirewise.report.text import kib, num
from wirewise.results import Result, Summary

MiB = 1024 * 1024
OFF_BY = 0.20
"""An estimate further than this from the measurement calls for a model correction."""


def scaled(summary: Summary) -> list[Result]:
    """Idle results whose plateaus recorded several parts (instances, Redis, a balancer)."""
    return [
        r
        for r in summary.results
        if r.scenario == "idle"
        and any("parts_rss_bytes" in p for p in r.memory_per_connection.points)
    ]


def scaleout_blocks(summary: Summary, reference: Summary | None, source: str) -> list[Block]:
    results = scaled(summary)
    costed = [r for r in summary.results if r.parts_cpu_ms_per_1k_msgs]
    if not results and not costed:
        return []
    plan = summary.metadata.get("plan") or {}
    blocks: list[Block] = [
        Heading(2, "Scale-out (several processes)", "scale-out"),
        Para(
            f"{plan.get('instances', '?')} server processes behind"
            f" {plan.get('balancer') or 'a balancer'}, sharing rooms through Redis, every part"
            " on the server's core; the load generator's connections spread over source"
            " addresses in 127.0.0.0/8."
        ),
    ]
    if costed:
        blocks.append(parts_cpu_table(costed))
    if results:
        blocks.append(parts_table(results))
        if reference is not None:
            blocks.append(estimate_table(results, reference, source, plan))
    return blocks


def parts_cpu_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        parts = r.parts_cpu_ms_per_1k_msgs or {}
        instances = sum(v for name, v in parts.items() if name.startswith("instance"))
        others = {name: v for name, v in parts.items() if not name.startswith("instance")}
        rows.append(
            [
                f"{r.scenario}/{r.label}",
                num(instances, 1),
                ", ".join(f"{name} {num(v, 2)}" for name, v in sorted(others.items())) or "-",
                num(instances + sum(others.values()), 1),
            ]
        )
    return Table(
        ["result", "instances ms", "others ms", "all parts ms"],
        rows,
        note="CPU per 1,000 deliveries over the measurement window, per part (the repeats'"
        " median); the cost table's server CPU counts the instances only.",
    )


def _top(result: Result) -> dict[str, Any]:
    return max(result.memory_per_connection.points, key=lambda p: p["clients"])


def parts_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        top, memory = _top(r), r.memory_per_connection
        parts = top.get("parts_rss_bytes", {})
        instances = [v for name, v in parts.items() if name.startswith("instance")]
        others = {name: v for name, v in parts.items() if not name.startswith("instance")}
        clients = top["clients"]
        rows.append(
            [
                r.label,
                num(clients),
                num(len(instances)),
                num(sum(instances) / MiB, 0),
                f"{num(min(instances) / MiB, 0)}-{num(max(instances) / MiB, 0)}"
                if instances
                else "-",
                ", ".join(f"{name} {num(v / MiB, 1)}" for name, v in sorted(others.items())) or "-",
                num(top["kernel_bytes"] * kernel_share(proxied(r)) / MiB, 0),
                kib(memory.rss_bytes),
                kib(memory.kernel_bytes * 2 * kernel_share(proxied(r)))
                if memory.kernel_bytes is not None
                else "-",
            ]
        )
    return Table(
        ["transport", "clients", "instances", "instances' RSS MiB", "each MiB", "others MiB",
         "kernel MiB", "RSS per client KiB", "kernel per client KiB"],
        rows,
        note="Kernel: the deployment's share of the TCP memory and slab, at the top plateau and"
        f" per client (the slope over both ends x that share). {KERNEL}"
        " Others: Redis, and the balancer where there is one (SO_REUSEPORT has none).",
    )  # fmt: skip


KERNEL = (
    "Both ends of every loopback connection live in one kernel: a client directly on an instance"
    " holds 2 sockets, 1 of them the deployment's (half); through a balancer process 4 (the"
    " client's, the balancer's front and back, the instance's), 3 of them the deployment's."
)


def proxied(result: Result) -> bool:
    """A balancer process held each client's connection (its RSS was recorded)."""
    return any(name in PROXIES for name in _top(result).get("parts_rss_bytes", {}))


def measured_parts_bytes(result: Result) -> dict[str, float]:
    """What the deployment held at the top plateau, by decide's parts: the instances' RSS, the
    kernel's share for the deployment's sockets, then Redis and the balancer."""
    top = _top(result)
    parts = top.get("parts_rss_bytes", {})
    found = {
        "instances": float(sum(v for name, v in parts.items() if name.startswith("instance"))),
        "kernel": top["kernel_bytes"] * kernel_share(proxied(result)),
    }
    found.update({name: float(v) for name, v in parts.items() if not name.startswith("instance")})
    return found


def measured_bytes(result: Result) -> float:
    """Everything the deployment held at the top plateau: every process's RSS and the kernel's
    share of its sockets (:func:`wirewise.decide.kernel_share`)."""
    return sum(measured_parts_bytes(result).values())


def deployment(result: Result, plan: dict[str, Any]) -> tuple[int, str]:
    """(instances, balancer) of the run: its plan, else what its parts show."""
    parts = _top(result).get("parts_rss_bytes", {})
    instances = plan.get("instances") or sum(name.startswith("instance") for name in parts) or 1
    balancer = plan.get("balancer") or next((p for p in PROXIES if p in parts), None)
    return int(instances), balancer or ("reuseport" if instances > 1 else "none")


def idle_workload(clients: int, instances: int, balancer: str) -> Workload:
    """An idle run as a decide workload: clients that hold a connection and hardly talk."""
    return Workload(
        clients=clients,
        push_rate=0.01,
        send_rate=0.0,
        latency_ms=1000.0,
        instances=instances,
        balancer=balancer,
    )


def estimate_table(
    results: list[Result], reference: Summary, source: str, plan: dict[str, Any] | None = None
) -> Table:
    """decide's estimate for the run's own deployment beside the measurement, part by part."""
    parts = measured_parts(deployment_runs(results_dirs()))
    rows, fits = [], []
    for r in results:
        clients = int(_top(r)["clients"])
        instances, balancer = deployment(r, plan or {})
        workload = idle_workload(clients, instances, balancer)
        est = decide(workload, reference, parts=parts).estimates.get(r.label)
        measured = measured_bytes(r)
        guess = est.memory_bytes if est is not None else None
        ratio = guess / measured if guess and measured else None
        verdict = "-"
        if ratio is not None:
            verdict = "within 20 %" if abs(ratio - 1) <= OFF_BY else "off by more than 20 %"
        elif est is not None and est.memory_parts:
            verdict = "not estimated: " + est.sources.get("memory_bytes", "").split(";")[0]
        if est is not None:
            fits += [est.sources[k] for k in ("redis", *PROXIES) if k in est.sources]
        rows.append(
            [
                r.label,
                num(clients),
                f"{instances} instances, {balancer}",
                num(est.servers) if est is not None else "-",
                num(guess / MiB, 0) if guess else "-",
                num(measured / MiB, 0),
                f"{ratio:.2f}" if ratio is not None else "-",
                side_by_side(est, measured_parts_bytes(r)),
                verdict,
            ]
        )
    named = "; ".join(dict.fromkeys(fits))
    return Table(
        ["transport", "clients", "deployment", "decide: servers", "decide: MiB", "measured MiB",
         "estimate / measured", "parts MiB (decide / measured)", "model"],
        rows,
        note=f"decide's estimate for the run's own deployment (its instances and balancer), per"
        f" connection from {source}: clients x (RSS + kernel per socket x the deployment's"
        " sockets) + each instance's base RSS, + Redis when there are several instances and the"
        " balancer's process"
        + (f" ({named})" if named else "")
        + ". Measured: every process's RSS (instances, Redis, balancer) plus the kernel's"
        f" share. {KERNEL} Not modelled: an instance in a cluster holds more than the single"
        " process measured (it mirrors every room's history, and its base RSS is larger): the"
        " instances' part is where estimate and measurement differ.",
    )  # fmt: skip


def side_by_side(est: Estimate | None, measured: dict[str, float]) -> str:
    """Each part as decide's MiB / the measured MiB."""
    guessed = est.memory_parts if est is not None else {}
    names = list(dict.fromkeys([*guessed, *measured]))
    return ", ".join(
        f"{name} {num(guessed[name] / MiB, 0) if name in guessed else '-'}"
        f" / {num(measured[name] / MiB, 0) if name in measured else '-'}"
        for name in names
    )
