"""The report as one list of blocks: verdict, conditions, a section per scenario, costs, warnings."""

from __future__ import annotations

from pathlib import Path

from wirewise.report.blocks import Block, Bullets, Figures, Heading, Para, slug
from wirewise.report.charts.base import Chart
from wirewise.report.conditions import (
    cores_text,
    repeats_text,
    sampling_text,
    short_commit,
    started,
    workload,
)
from wirewise.report.deployments import deployment_blocks
from wirewise.report.network import network_blocks
from wirewise.report.scaleout import scaleout_blocks
from wirewise.report.select import of, poll_results, scenarios_in, valid
from wirewise.report.tables import (
    conditions_table,
    cost_table,
    failover_table,
    fallback_table,
    idle_table,
    invalid_list,
    latency_table,
    polling_table,
    reliability_table,
    saturate_steps_table,
    saturate_table,
    warning_groups,
)
from wirewise.report.text import X
from wirewise.report.verdict import verdict
from wirewise.results import Result, Summary


def document(
    summary: Summary,
    run_dir: Path,
    charts: dict[str, Chart],
    skipped: list[str],
    reference: Summary | None = None,
    reference_source: str = "",
    compared: list[Result] | None = None,
    networked: list[Result] | None = None,
) -> list[Block]:
    """``reference``: a single-process run whose decide estimates a scale-out run is read
    against; ``compared``: the same scenarios on other deployments in this run."""
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
        if scenario in KILLED:
            title, anchor, text, table = KILLED[scenario]
            blocks.append(Heading(2, f"{title} (scenario: {scenario})", anchor))
            blocks.append(Para(f"{workload(results)}. {text}"))
            blocks.append(table(results))
            blocks += invalid_list(results)
            blocks += figures.place(f"{scenario}-timeline")
            through = (
                "on the settled transport" if scenario == "fallback" else f"through the {scenario}"
            )
            blocks.append(Heading(3, f"{scenario}: delivery latency {through}"))
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
    blocks += network_blocks(networked or [], figures)
    if not summary.results and not networked:
        blocks.append(Para("This run holds no results."))
    costs = cost_table(summary)
    if costs.rows:
        blocks.append(Heading(2, "Cost per delivery", "cost"))
        blocks.append(Para(f"{sampling_text(metadata)}; {repeats_text(summary)}."))
        blocks.append(costs)
        blocks += figures.place("cpu-per-1k", "bytes-per-message")
    scaleout = scaleout_blocks(summary, reference, reference_source)
    blocks += scaleout
    deployments = deployment_blocks(summary.results, compared or [])
    if deployments and not scaleout:
        blocks.append(Heading(2, "Deployments", "deployments-section"))
    blocks += deployments
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
    return without_empty_sections(blocks)


FAILOVER_TEXT = (
    "The same crowd on three server processes behind HAProxy (round robin unless the run was"
    " --sticky),"
    " sharing rooms through Redis; mid-run one instance is killed with SIGKILL and not started"
    " again. Its clients reconnect through the balancer to a survivor and resume from their"
    " cursor, which the survivor answers from the history in Redis; a send whose answer died"
    " with the instance is retried and deduplicated by Redis. Every expected delivery is checked"
    " one by one, as in faults."
)

ROLLING_TEXT = (
    "The same cluster through a deploy: each instance in turn gets SIGTERM (its streams end and"
    " its sockets close with 1001, so its clients reconnect through the balancer) and is"
    " replaced on its port, the next one only once the replacement listens. A client may move"
    " more than once; each reconnection is timed from the stop that caused it."
)

RELIABILITY_TEXT = (
    "Mid-run the server is killed with SIGKILL and started again on the same port; meanwhile one"
    " reader stops reading while a flood of large messages goes to its room. Every expected"
    " delivery is checked one by one: delivered, lost with a gap (the killed process's history,"
    " signalled), or lost silently (the protocol allows none)."
)


def without_empty_sections(blocks: list[Block]) -> list[Block]:
    """The blocks less every heading with nothing under it (the next block is a heading of
    the same or a higher level, or there is none): a title over no content says nothing."""
    kept: list[Block] = []
    for i, block in enumerate(blocks):
        if isinstance(block, Heading):
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            if following is None or (
                isinstance(following, Heading) and following.level <= block.level
            ):
                continue
        kept.append(block)
    return kept


FALLBACK_TEXT = (
    "The same crowd, nothing killed, every user on the fallback client: it tries the order"
    " below, one transport at a time, and settles on the first whose subscription opens within"
    " the step's time limit, as SignalR does after negotiating. Behind a proxy that strips"
    " Upgrade (--proxy no-upgrade) each WebSocket handshake fails; the table shows what each"
    " user lost to that before the chat ran on what it settled on."
)

KILLED = {
    "faults": ("Reliability", "reliability", RELIABILITY_TEXT, reliability_table),
    "failover": ("Failover", "failover", FAILOVER_TEXT, failover_table),
    "rolling": ("Rolling restart", "rolling", ROLLING_TEXT, failover_table),
    "fallback": ("Fallback", "fallback", FALLBACK_TEXT, fallback_table),
}
"""The reliability scenarios (all but fallback kill a server): heading, anchor, what happens,
their table."""
