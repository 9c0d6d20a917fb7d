"""``wirewise decide``: a workload in, a transport out, with reasons and estimates from measurements.

The model is deliberately simple, and every input is a measured figure of a results run:

- **memory**: clients x (server RSS + kernel bytes per connection, from ``idle``) + the
  server's base RSS;
- **CPU**: deliveries/s x CPU per delivery + sends/s x CPU per send (solved from ``chat`` and
  ``broadcast``, whose ratios of sends to deliveries differ) + what idle clients cost
  (short polling's empty polls, scaled to the interval the latency needs);
- **bandwidth**: deliveries/s x bytes down + sends/s x bytes up (payload size adjusted);
- **p99**: the measured p99 of the scenario closest to the workload (short polling: the
  interval plus its measured overhead);
- **servers**: "servers like the measured one" are one process on one core (Python servers
  are single-threaded), with the machine's file limit and its memory per core; a server is
  full at 70 % of its core, 90 % of its file limit, 80 % of its memory, or the highest
  delivery rate that held the latency bound in ``saturate``. The binding limit is named.

Transports that cannot serve the workload (the latency is out of reach, the upgrade is
blocked) score 0. Among the rest, fewer servers wins; when the servers needed are the same,
the simpler transport wins (short polling, SSE, long polling, HTTP/2, WebSocket, in that
order), because inside one run's noise operational simplicity is the better tie-breaker.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

TRANSPORTS = ("poll", "longpoll", "sse", "h2", "ws")
SIMPLICITY = {"poll": 0, "sse": 1, "longpoll": 2, "h2": 3, "ws": 4}
NAMES = {
    "poll": "short polling",
    "longpoll": "long polling",
    "sse": "SSE + POST",
    "h2": "HTTP/2 (SSE and POSTs on one connection)",
    "ws": "WebSocket",
}
POLL_MARGIN = 0.8
"""Short polling's interval is chosen for a p99 of 80 % of the bound, not all of it: every
other transport's p99 is measured, polling's is modelled, and the model gets the margin."""
CPU_HEADROOM = 0.7
FD_HEADROOM = 0.9
MEMORY_HEADROOM = 0.8
DEFAULT_FD_LIMIT = 20_000


@dataclass(frozen=True)
class Workload:
    clients: int
    push_rate: float
    """Messages per second each client receives (server to client)."""
    send_rate: float
    """Messages per second each client sends (client to server)."""
    latency_ms: float
    """The p99 delivery latency the application needs."""
    payload_bytes: int = 100
    proxy_blocks_upgrade: bool = False

    def __post_init__(self) -> None:
        if self.clients <= 0 or self.latency_ms <= 0 or self.payload_bytes <= 0:
            raise ValueError("clients, latency and payload must be positive")
        if self.push_rate < 0 or self.send_rate < 0:
            raise ValueError("rates cannot be negative")


@dataclass
class Profile:
    """What one transport costs, as measured in a results run."""

    transport: str
    server: str
    rss_per_conn: float | None = None
    kernel_per_conn: float | None = None
    base_rss: float | None = None
    idle_cores_per_conn: float = 0.0
    cpu_per_delivery_s: float | None = None
    cpu_per_send_s: float | None = None
    bytes_down: float | None = None
    bytes_up: float | None = None
    measured_payload: int = 100
    p99_ms: dict[str, float] = field(default_factory=dict)
    p50_ms: dict[str, float] = field(default_factory=dict)
    max_deliveries_per_s: float | None = None
    poll_interval_s: float | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Estimate:
    memory_bytes: int | None
    cpu_cores: float | None
    bandwidth_bytes_per_s: float | None
    p99_ms: float | None
    servers: int | None
    limit: str = ""
    poll_interval_s: float | None = None
    connections: int = 0


@dataclass
class Ranked:
    transport: str
    score: int
    reasons: list[str]
    feasible: bool
    servers_fraction: float = math.inf


@dataclass
class Decision:
    recommendation: str | None
    ranking: list[Ranked]
    estimates: dict[str, Estimate]
    workload: Workload
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "recommendation": self.recommendation,
            "ranking": [
                {"transport": r.transport, "score": r.score, "reasons": r.reasons}
                for r in self.ranking
            ],
            "estimates": {
                t: {
                    k: v
                    for k, v in asdict(e).items()
                    if k
                    in ("memory_bytes", "cpu_cores", "bandwidth_bytes_per_s", "p99_ms", "servers")
                }
                for t, e in self.estimates.items()
            },
        }


# -- profiles from a results run ---------------------------------------------------------------


def _preferred(results: list[dict[str, Any]], transport: str) -> list[dict[str, Any]]:
    """A transport's results, on its framework server (uvicorn/hypercorn) when there is a choice."""
    mine = [r for r in results if r["transport"] == transport]
    framework = [r for r in mine if r["server"] in ("uvicorn", "hypercorn")]
    return framework or mine


def profiles(summary: dict[str, Any]) -> dict[str, Profile]:
    results = summary["results"]
    out = {}
    for transport in TRANSPORTS:
        mine = _preferred(results, transport)
        if mine:
            out[transport] = profile_of(transport, mine)
    return out


def _saturated(result: dict[str, Any]) -> bool:
    return bool((result.get("load_generator") or {}).get("saturated"))


def profile_of(transport: str, results: list[dict[str, Any]]) -> Profile:
    profile = Profile(transport, results[0]["server"])
    by_scenario = {r["scenario"]: r for r in results}
    idle = by_scenario.get("idle")
    if idle:
        memory = idle["memory_per_connection"]
        profile.rss_per_conn = memory.get("rss_bytes")
        profile.kernel_per_conn = memory.get("kernel_bytes")
        profile.base_rss = memory.get("base_rss_bytes")
        profile.idle_cores_per_conn = (
            (memory.get("idle_cpu_percent_per_1k_connections") or 0.0) / 100 / 1000
        )
    timed = [n for n in ("chat", "broadcast", "game") if n in by_scenario]
    clean = [n for n in timed if not _saturated(by_scenario[n])]
    for name in ("chat", "broadcast", "game", "saturate"):
        result = by_scenario.get(name)
        if result is None:
            continue
        latency = result["latency_ms"]
        if clean and name in timed and name not in clean:
            # A saturated load generator queued deliveries itself: its p99 is not the
            # transport's, and taken as such it would rule transports out on our own lag.
            profile.warnings.append(f"{name}: latency not used (load generator saturated)")
        elif latency.get("p99") is not None:
            profile.p99_ms[name] = latency["p99"]
            profile.p50_ms[name] = latency["p50"]
        if result["parameters"].get("poll_interval_s"):
            profile.poll_interval_s = result["parameters"]["poll_interval_s"]
        profile.warnings += [f"{name}: {w}" for w in result["warnings"]]
    solve_cpu(profile, [by_scenario[n] for n in ("chat", "broadcast", "game") if n in by_scenario])
    wire = next(
        (
            by_scenario[n]["bytes_per_message"]
            for n in ("chat", "broadcast", "game")
            if n in by_scenario and by_scenario[n]["bytes_per_message"]["down"]
        ),
        None,
    )
    if wire:
        profile.bytes_down, profile.bytes_up = wire["down"], wire["up"]
        source = next(n for n in ("chat", "broadcast", "game") if n in by_scenario)
        profile.measured_payload = by_scenario[source]["parameters"].get("payload_bytes", 100)
    saturate = by_scenario.get("saturate")
    if (
        saturate
        and saturate.get("highest_rate_held")
        and saturate.get("stopped_by") == "latency_bound"
    ):
        # Only a ramp that broke the bound found the server's limit; one that ran out of steps
        # or of load generator found a lower bound, which would understate capacity.
        profile.max_deliveries_per_s = saturate["highest_rate_held"]["deliveries_per_s"]
    return profile


def solve_cpu(profile: Profile, results: list[dict[str, Any]]) -> None:
    """CPU per delivery and per send, by least squares over scenarios with different ratios.

    Each result gives cpu/delivery = d + s * (sends/deliveries). With one result (or equal
    ratios) the send cost cannot be separated: all of it is charged to deliveries.
    """
    rows = []
    for result in results:
        cpu = result.get("server_cpu_ms_per_1k_msgs")
        delivered = result["deliveries"]["delivered"]
        sent = result.get("messages_sent")
        if cpu is None or not delivered or not sent:
            continue
        rows.append((sent / delivered, cpu / 1e6))  # seconds per delivery
    if not rows:
        return
    if len({round(x, 4) for x, _ in rows}) < 2:
        profile.cpu_per_delivery_s = sum(y for _, y in rows) / len(rows)
        profile.cpu_per_send_s = 0.0
        return
    n = len(rows)
    mx = sum(x for x, _ in rows) / n
    my = sum(y for _, y in rows) / n
    sxx = sum((x - mx) ** 2 for x, _ in rows)
    slope = sum((x - mx) * (y - my) for x, y in rows) / sxx
    intercept = my - slope * mx
    if slope < 0 or intercept < 0:  # noise: fall back to the cheapest consistent reading
        profile.cpu_per_delivery_s = max(min(y for _, y in rows), 0.0)
        profile.cpu_per_send_s = max(slope, 0.0) if intercept >= 0 else 0.0
        return
    profile.cpu_per_delivery_s = intercept
    profile.cpu_per_send_s = slope


# -- estimates ------------------------------------------------------------------------------


def closest_scenario(workload: Workload) -> tuple[str, ...]:
    """The measured scenarios most like the workload, best first."""
    if workload.send_rate >= 5 and workload.push_rate >= 5:
        return ("game", "chat", "broadcast")
    if workload.send_rate <= workload.push_rate / 20:
        return ("broadcast", "chat", "game")
    return ("chat", "broadcast", "game")


def machine_of(summary: dict[str, Any]) -> tuple[int, int | None]:
    """(file limit, memory per core in bytes) of the measured machine."""
    meta = summary["metadata"]
    fds = meta.get("fd_limit") or DEFAULT_FD_LIMIT
    memory = meta.get("memory_bytes")
    cores = meta.get("cores") or 1
    return fds, (memory // cores if memory else None)


def poll_interval_for(workload: Workload, profile: Profile) -> float:
    """The short-polling interval whose p99 (~ interval + measured overhead) is 80 % of the bound."""
    measured = profile.p99_ms.get("chat") or profile.p99_ms.get("broadcast")
    interval = profile.poll_interval_s or 1.0
    overhead_ms = max(0.0, (measured or interval * 1000) - 0.99 * interval * 1000)
    return max((POLL_MARGIN * workload.latency_ms - overhead_ms) / 990, 0.01)


def estimate(workload: Workload, profile: Profile, summary: dict[str, Any]) -> Estimate:
    n = workload.clients
    deliveries = n * workload.push_rate
    sends = n * workload.send_rate
    result = Estimate(None, None, None, None, None, connections=n)
    if profile.rss_per_conn is not None:
        per_conn = profile.rss_per_conn + (profile.kernel_per_conn or 0)
        result.memory_bytes = int(n * per_conn + (profile.base_rss or 0))
    idle_cores = n * profile.idle_cores_per_conn
    if profile.transport == "poll":
        interval = poll_interval_for(workload, profile)
        result.poll_interval_s = round(interval, 3)
        measured_interval = profile.poll_interval_s or 1.0
        idle_cores *= measured_interval / interval  # idle cost is polls: scales with 1/T
        overhead = (
            profile.p99_ms.get("chat") or measured_interval * 1000
        ) - 0.99 * measured_interval * 1000
        result.p99_ms = round(0.99 * interval * 1000 + max(overhead, 0.0), 1)
    else:
        for scenario in closest_scenario(workload):
            if scenario in profile.p99_ms:
                result.p99_ms = profile.p99_ms[scenario]
                break
    if profile.cpu_per_delivery_s is not None:
        result.cpu_cores = round(
            deliveries * profile.cpu_per_delivery_s
            + sends * (profile.cpu_per_send_s or 0)
            + idle_cores,
            4,
        )
    if profile.bytes_down is not None:
        extra = workload.payload_bytes - profile.measured_payload
        down = max(profile.bytes_down + extra, 1.0)
        up = max((profile.bytes_up or 0) + extra, 1.0)
        result.bandwidth_bytes_per_s = round(deliveries * down + sends * up, 1)
    result.servers, result.limit = servers_needed(workload, profile, result, summary)
    return result


def servers_needed(
    workload: Workload, profile: Profile, est: Estimate, summary: dict[str, Any]
) -> tuple[int | None, str]:
    """How many servers like the measured one, and which limit binds."""
    fds, memory_per_core = machine_of(summary)
    held = workload.clients if profile.transport != "poll" or (est.poll_interval_s or 0) < 5 else 0
    needs: dict[str, float] = {"connections": held / (fds * FD_HEADROOM)}
    if est.cpu_cores is not None:
        needs["CPU"] = est.cpu_cores / CPU_HEADROOM
    if est.memory_bytes is not None and memory_per_core:
        needs["memory"] = est.memory_bytes / (memory_per_core * MEMORY_HEADROOM)
    if profile.max_deliveries_per_s:
        needs["the delivery rate that held the bound"] = (
            workload.clients * workload.push_rate / profile.max_deliveries_per_s
        )
    if "CPU" not in needs:
        return None, "no CPU figure measured"
    limit = max(needs, key=lambda k: needs[k])
    return max(1, math.ceil(needs[limit])), limit


# -- ranking -------------------------------------------------------------------------------


def fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def decide(workload: Workload, summary: dict[str, Any], source: str = "") -> Decision:
    found = profiles(summary)
    estimates = {t: estimate(workload, p, summary) for t, p in found.items()}
    ranking = [judge(workload, found[t], estimates[t]) for t in found]
    feasible = [r for r in ranking if r.feasible]
    if feasible:
        best_servers = min(estimates[r.transport].servers or math.inf for r in feasible)
        for r in feasible:
            servers = estimates[r.transport].servers or math.inf
            r.score = max(1, round(100 * best_servers / servers) - 2 * SIMPLICITY[r.transport])
    ranking.sort(
        key=lambda r: (
            not r.feasible,
            estimates[r.transport].servers or math.inf,
            SIMPLICITY[r.transport],
        )
    )
    recommendation = ranking[0].transport if ranking and ranking[0].feasible else None
    if recommendation and len(feasible) > 1:
        top = ranking[0]
        runner_up = ranking[1]
        same = (estimates[top.transport].servers or 0) == (
            estimates[runner_up.transport].servers or 0
        )
        if same:
            top.reasons.append(
                f"needs as many servers as {NAMES[runner_up.transport]}, and is the simpler of the two to run"
            )
    return Decision(recommendation, ranking, estimates, workload, source)


def judge(workload: Workload, profile: Profile, est: Estimate) -> Ranked:
    """Reasons in plain words; infeasible transports score 0."""
    t = profile.transport
    reasons: list[str] = []
    feasible = True
    if t == "ws" and workload.proxy_blocks_upgrade:
        feasible = False
        reasons.append(
            "the network blocks the Upgrade: a WebSocket cannot connect there (the other transports are plain HTTP)"
        )
    if est.p99_ms is None:
        feasible = False
        reasons.append("no latency was measured for it in this run")
    elif est.p99_ms > workload.latency_ms:
        feasible = False
        reasons.append(
            f"measured p99 {est.p99_ms:,.0f} ms is above the {workload.latency_ms:,.0f} ms needed"
        )
    else:
        reasons.append(f"p99 {est.p99_ms:,.1f} ms meets the {workload.latency_ms:,.0f} ms needed")
    if t == "poll" and profile.idle_cores_per_conn == 0.0:
        feasible = False
        reasons.append(
            "this run has no idle CPU figure for polling, so the cost of its polls is unknown"
        )
    if t == "poll" and est.poll_interval_s is not None:
        polls = workload.clients / est.poll_interval_s
        reasons.append(
            f"polls every {est.poll_interval_s:g} s to meet it: {polls:,.0f} requests/s whether or not anything changed"
        )
    if workload.send_rate == 0 and t in ("ws",):
        reasons.append("clients never send: full duplex buys nothing here")
    elif workload.send_rate >= 1 and t in ("poll", "longpoll", "sse"):
        reasons.append(
            f"every send is an HTTP request ({workload.send_rate:g}/s per client), costlier than a frame"
        )
    if t == "longpoll" and workload.push_rate >= 1:
        reasons.append(
            "a new request per delivery batch: the reconnect cost grows with the push rate"
        )
    if t == "sse":
        reasons.append(
            "plain HTTP through proxies (they must not buffer: the stream says X-Accel-Buffering: no)"
        )
    if t == "h2":
        reasons.append(
            "one connection per client carries the stream and every POST; browsers need TLS for it"
        )
    if est.servers is not None:
        memory = (
            f", {fmt_bytes(est.memory_bytes)} of memory" if est.memory_bytes is not None else ""
        )
        reasons.append(
            f"{est.servers} server(s) like the measured one (limited by {est.limit}): "
            f"{est.cpu_cores or 0:,.2f} cores{memory} for {workload.clients:,} clients"
        )
    else:
        feasible = False
        reasons.append("no CPU figure for it in this run: cannot size it")
    if profile.warnings:
        reasons.append(f"its measurements carry {len(profile.warnings)} warning(s); see the report")
    ranked = Ranked(t, 0, reasons, feasible)
    return ranked
