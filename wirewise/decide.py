"""``wirewise decide``: a workload in, a backend out, every estimate traced to a measured result.

Only valid results are read (:func:`wirewise.summarize.judge` says why a result is not): an
invalid one measured the load generator, a lagging publisher or a lower bound, not the
transport. Each estimate names the result it comes from; one with no valid source says so, and
a backend without the figures it needs is not ranked as feasible. Backends, not transports, are
ranked: ``ws`` (uvicorn) and ``ws@websockets`` cost different amounts of the same protocol.

The model, per backend:

- **CPU**: deliveries/s x CPU per delivery + sends/s x CPU per send, solved by least squares from
  chat, broadcast and game (their ratios of sends to deliveries differ), + what idle clients
  cost (``idle``; for short polling that is its polls, scaled to the interval the bound needs);
- **memory**: clients x (RSS + kernel bytes per connection) + each server's base RSS (``idle``),
  and the rest of the deployment. On loopback both ends of a connection live in one kernel, and
  the idle fit's kernel bytes are one socket's (half of a client's two); through a balancer
  process a client holds four sockets (its own, the balancer's front and back, the instance's),
  three of them the deployment's, so the kernel figure counts three times. Several instances
  (asked or needed) share rooms through Redis; a balancer (``haproxy``, ``nginx``) is a process.
  Each is RSS = base + clients x per client, fitted by least squares over the plateaus of the
  newest valid idle result that recorded that part (a cluster run; :func:`measured_parts`), one
  base per balancer process. A part no result measured leaves the total unknown, and says so. Not
  modelled: an instance in a cluster holds more than the single process measured (it mirrors
  every room's history; ~10 % of the total in both committed cluster runs);
- **balancer processes**: one holds two descriptors per client, so it proxies fd limit / 2 - 100
  clients; more clients need more processes;
- **bandwidth**: deliveries/s x bytes down + sends/s x bytes up on the wire, from the scenario
  whose ratio of sends to deliveries is nearest the workload's, adjusted for the payload;
- **servers**: a server like the measured one is one process on one core, an instance (at least
  ``--instances``; the CPU counted is theirs, not Redis's or a balancer's). It is full at 70 % of
  the core, 90 % of the file limit, 80 % of its share of memory, or the highest delivery rate a
  saturate ramp held under its bound (only from a ramp that reached its knee: one stopped by the
  load generator or by its last step found a lower bound, and is invalid);
- **p99**: read at the measured point (saturate steps, and the other scenarios' throughput)
  nearest the delivery rate each server carries. When that p99 breaks the bound, servers are
  added, lowering each one's rate, while a measured point under the bound exists. Short
  polling's p99 is modelled instead: 0.99 x the interval + the overhead measured over it, with
  the interval chosen for 80 % of the bound.

Ranking: a backend that cannot serve the workload scores 0. The rest are ordered by servers,
then CPU cores, then HTTP requests per second, each compared with a tolerance (one run's noise
is about 10 %); on a full tie, one that needs no Upgrade comes first, because it passes every
HTTP proxy. The score is 100 x the fewest servers any backend needs / its servers, less up to
10 points for CPU and 5 for requests when it loses that tie-break; it never exceeds the score
of the backend above it, so the score orders the ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wirewise.network_model import NetworkModel
from wirewise.registry import BACKENDS, FLOOR, backend
from wirewise.results import Result, Summary, summaries

__all__ = [
    "BALANCERS",
    "NAMES",
    "Decision",
    "Estimate",
    "PartFit",
    "Profile",
    "Ranked",
    "Workload",
    "WorkloadError",
    "decide",
    "deployment_runs",
    "estimate",
    "fmt_bytes",
    "kernel_share",
    "measured_parts",
    "network_model",
    "profiles",
    "results_dirs",
]

CANDIDATES = tuple(b.label for b in BACKENDS if b.transport != FLOOR)
"""What a client can be served by; the raw-TCP floor is calibration, not a choice."""
NAMES = {
    "poll": "short polling",
    "longpoll": "long polling",
    "sse": "SSE + POST",
    "h2": "HTTP/2 (SSE and POSTs on one connection)",
    "ws": "WebSocket",
    "ws@websockets": "WebSocket (bare websockets server)",
}
TIMED = ("chat", "broadcast", "game")
"""Scenarios whose throughput, CPU and bytes per message were measured at one steady rate."""
POLL_MARGIN = 0.8
"""Short polling's interval is chosen for a p99 of 80 % of the bound, not all of it: every
other backend's p99 is measured, polling's is modelled, and the model gets the margin."""
CPU_HEADROOM = 0.7
FD_HEADROOM = 0.9
MEMORY_HEADROOM = 0.8
DEFAULT_FD_LIMIT = 20_000
KEEPALIVE_S = 5.0
"""uvicorn closes an idle keep-alive connection after this: a slower poller reconnects each time."""
LONGPOLL_WAIT_S = 25.0
"""How long the long-polling client asks the server to hold a request when nothing happens."""
CPU_TIE = (0.10, 0.01)
"""CPU estimates within 10 % or a hundredth of a core of each other are a tie: one run's CPU per
message moves by about that much between repeats."""
REQUESTS_TIE = (0.10, 10.0)
"""Requests per second within 10 % or ten a second of each other are a tie."""
EXTRAPOLATION = 1.1
"""A per-server rate above the highest measured one by more than this is beyond the data."""
BALANCERS = ("haproxy", "nginx", "reuseport", "none")
PROXIES = ("haproxy", "nginx")
"""Balancers that are a process of their own: a client's connection ends there and another
goes on to an instance. ``reuseport`` (the kernel spreads one port) and ``none`` add nothing."""
BROKER = "redis"
"""What several instances share rooms through: one more process, whatever the balancer."""
PROXY_FD_RESERVE = 100
"""Descriptors a balancer process keeps for itself (listeners, logs, checks): wirewise's HAProxy
and nginx configurations proxy at most fd limit / 2 - 100 clients per process."""


class WorkloadError(ValueError):
    """A workload figure out of range; ``field`` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name.replace('_', ' ')} {message}")
        self.field = field_name
        self.message = message


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
    instances: int = 1
    """At least this many server processes (1: as many as the workload needs)."""
    balancer: str = "none"
    """In front of the instances: one of :data:`BALANCERS`."""
    rtt_ms: float = 0.0
    """The round-trip time between the clients and the servers."""
    loss_pct: float = 0.0
    """Packets lost each way, percent."""

    def __post_init__(self) -> None:
        for name, zero_allowed in (
            ("clients", False),
            ("push_rate", False),
            ("send_rate", True),
            ("latency_ms", False),
            ("payload_bytes", False),
            ("instances", False),
            ("rtt_ms", True),
            ("loss_pct", True),
        ):
            check(
                name,
                getattr(self, name),
                zero_allowed,
                integer=name in ("clients", "payload_bytes", "instances"),
            )
        if self.loss_pct >= 100:
            raise WorkloadError("loss_pct", f"must be below 100, not {self.loss_pct:g}")
        if self.balancer not in BALANCERS:
            raise WorkloadError(
                "balancer", f"must be one of {', '.join(BALANCERS)}, not {self.balancer!r}"
            )

    @property
    def proxied(self) -> bool:
        """Each client's connection goes through a balancer process."""
        return self.balancer in PROXIES

    @property
    def deliveries_per_s(self) -> float:
        return self.clients * self.push_rate

    @property
    def sends_per_s(self) -> float:
        return self.clients * self.send_rate


def check(name: str, value: Any, zero_allowed: bool, integer: bool = False) -> None:
    """Raise :class:`WorkloadError` unless ``value`` is a finite number in range.

    A NaN compares false with everything, so it would pass ``value <= 0`` and then poison every
    estimate (and the JSON, which has no NaN); infinity would overflow the server count.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkloadError(name, f"must be a number, not {value!r}")
    if not math.isfinite(value):
        raise WorkloadError(name, f"must be a finite number, not {value}")
    if integer and value != int(value):
        raise WorkloadError(name, f"must be a whole number, not {value}")
    if value < 0 or (value == 0 and not zero_allowed):
        bound = "0 or more" if zero_allowed else "above 0"
        why = ""
        if name == "push_rate" and value == 0:
            why = " (with nothing to deliver there is no latency to meet)"
        raise WorkloadError(name, f"must be {bound}, not {value:g}{why}")


# -- what a backend costs, from the valid results of a run --------------------------------------


@dataclass(frozen=True)
class Point:
    """A measured (deliveries/s one server carried, p99) pair, and the result it comes from."""

    rate: float
    p99_ms: float
    source: str


@dataclass
class Profile:
    """What one backend costs, as measured by the valid results of a run; None = not measured."""

    label: str
    points: list[Point] = field(default_factory=list)
    cpu_per_delivery_s: float | None = None
    cpu_per_send_s: float | None = None
    """Short polling: per request (a send or a poll)."""
    cpu_source: str = ""
    idle_cores_per_client: float | None = None
    idle_poll_interval_s: float | None = None
    rss_per_conn: float | None = None
    kernel_per_conn: float | None = None
    base_rss: float | None = None
    idle_source: str = ""
    bytes_rows: list[tuple[float, float, float | None, int, str]] = field(default_factory=list)
    """(sends per delivery, bytes down, bytes up, payload, source) per timed scenario."""
    rate_held: float | None = None
    rate_held_source: str = ""
    poll_overhead_ms: float | None = None
    poll_source: str = ""
    invalid: dict[str, str] = field(default_factory=dict)
    """scenario -> its first reason, for each invalid result (never used)."""
    present: set[str] = field(default_factory=set)
    warnings: int = 0

    @property
    def transport(self) -> str:
        return backend(self.label).transport

    def why_missing(self, *scenarios: str) -> str:
        """Why no valid figure came from these scenarios, and the command that measures it."""
        parts = []
        for scenario in scenarios:
            where = f"{scenario}/{self.label}"
            if scenario in self.invalid:
                parts.append(f"{where} is invalid ({self.invalid[scenario]})")
            elif scenario not in self.present:
                parts.append(f"{where} is not in this run")
        command = (
            f"`wirewise bench --scenario {scenarios[0]} --transport {self.transport}` measures it"
        )
        return f"no valid source: {'; '.join(parts) or 'nothing measured it'}; {command}"


def profiles(summary: Summary) -> dict[str, Profile]:
    """A profile per candidate backend the run measured (valid or not)."""
    labels = {r.label for r in summary.results}
    return {label: profile_of(summary, label) for label in CANDIDATES if label in labels}


def profile_of(summary: Summary, label: str) -> Profile:
    profile = Profile(label)
    valid: dict[str, Result] = {}
    for result in summary.results:
        if result.label != label:
            continue
        profile.present.add(result.scenario)
        if result.valid:
            valid[result.scenario] = result
            profile.warnings += len(result.warnings)
        else:
            profile.invalid[result.scenario] = (
                result.validity.reasons[0] if result.validity.reasons else "no reason recorded"
            )
    timed = [valid[s] for s in TIMED if s in valid]
    for result in timed:
        p99, rate = result.latency_ms.p99, result.throughput_msgs_per_s
        if p99 is not None and rate:
            profile.points.append(
                Point(rate, p99, f"{result.scenario}/{label} at {rate:,.0f} deliveries/s")
            )
    saturate = valid.get("saturate")
    if saturate is not None:
        _saturate(profile, saturate)
    _cpu(profile, timed)
    _idle(profile, valid.get("idle"))
    _poll_overhead(profile, timed)
    for result in timed:
        wire = result.bytes_per_message
        down, up = wire.down, wire.up
        kind = "payload"
        if wire.wire.get("down") is not None:
            down, up, kind = wire.wire["down"], wire.wire.get("up"), "wire"
        delivered = result.deliveries.delivered
        if down is None or not delivered:
            continue
        profile.bytes_rows.append(
            (
                result.publisher.sent / delivered,
                down,
                up,
                int(result.parameters.get("payload_bytes") or 100),
                f"{result.scenario}/{label} ({kind} bytes per message)",
            )
        )
    return profile


def _saturate(profile: Profile, result: Result) -> None:
    """Each step is a point of the latency curve; the highest rate held is a capacity, because a
    valid ramp ended at its knee (the latency bound or the server's CPU), not before it."""
    label = profile.label
    for step in result.steps:
        latency = step.latency_ms
        if latency.p99 is None or not latency.count or not step.deliveries_per_s:
            continue
        if step.deliveries.lost:
            continue  # its p99 leaves out what never arrived
        profile.points.append(
            Point(
                step.deliveries_per_s,
                latency.p99,
                f"saturate/{label} step {step.step} at {step.deliveries_per_s:,.0f} deliveries/s",
            )
        )
    held = result.highest_rate_held
    if held and held.get("deliveries_per_s"):
        profile.rate_held = float(held["deliveries_per_s"])
        bound = held.get("latency_bound_ms")
        profile.rate_held_source = (
            f"saturate/{label} held {profile.rate_held:,.0f} deliveries/s"
            + (f" at p99 <= {bound:g} ms" if bound else "")
            + (f" (step {held['step']})" if held.get("step") is not None else "")
        )


def _cpu(profile: Profile, results: list[Result]) -> None:
    """CPU per delivery and per send, by least squares over scenarios with different ratios.

    Each result gives cpu/delivery = d + s * (sends/deliveries). Short polling's cost is its
    requests, so there a poll counts as a send (every user polls every T: users/T polls a
    second), and ``s`` is the cost of a request: a delivery's cost depends on how many share a
    poll, which the interval the bound needs changes. With one result (or equal ratios) ``s``
    cannot be separated and is left None; a fit that makes either cost negative is noise, and
    that cost is set to 0 (the constrained optimum).
    """
    poll = profile.transport == "poll"
    rows, used = [], []
    for result in results:
        cpu = result.server_cpu_ms_per_1k_msgs
        delivered = result.deliveries.delivered
        sent = result.publisher.sent
        if cpu is None or not delivered or not sent:
            continue
        x = sent / delivered
        if poll:
            interval = result.parameters.get("poll_interval_s")
            users = result.parameters.get("users")
            if not interval or not users or not result.throughput_msgs_per_s:
                continue
            x += users / interval / result.throughput_msgs_per_s
        rows.append((x, cpu / 1e6))  # seconds per delivery
        used.append(f"{result.scenario}/{profile.label}")
    if not rows:
        return
    xs, ys = [x for x, _ in rows], [y for _, y in rows]
    mean_y = sum(ys) / len(ys)
    unit = "request (a send or a poll)" if poll else "send"
    if len({round(x, 4) for x in xs}) < 2:
        profile.cpu_per_delivery_s = mean_y
        profile.cpu_source = (
            f"CPU per message from {', '.join(used)} (the {unit} cost not separable)"
        )
        return
    mean_x = sum(xs) / len(xs)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in rows) / sxx
    intercept = mean_y - slope * mean_x
    if slope < 0:
        slope, intercept = 0.0, mean_y
    elif intercept < 0:
        slope, intercept = sum(x * y for x, y in rows) / sum(x * x for x in xs), 0.0
    profile.cpu_per_delivery_s, profile.cpu_per_send_s = intercept, slope
    profile.cpu_source = f"CPU per delivery and per {unit} solved from {', '.join(used)}"


def _idle(profile: Profile, idle: Result | None) -> None:
    if idle is None:
        return
    memory = idle.memory_per_connection
    profile.rss_per_conn = memory.rss_bytes
    profile.kernel_per_conn = memory.kernel_bytes
    profile.base_rss = memory.base_rss_bytes
    if memory.idle_cpu_percent_per_1k_connections is not None:
        profile.idle_cores_per_client = memory.idle_cpu_percent_per_1k_connections / 100 / 1000
    profile.idle_poll_interval_s = idle.parameters.get("poll_interval_s")
    profile.idle_source = f"idle/{profile.label}"


def _poll_overhead(profile: Profile, results: list[Result]) -> None:
    """Short polling's p99 above 0.99 x its interval: the largest of the valid timed results."""
    if profile.transport != "poll":
        return
    for result in results:
        interval = result.parameters.get("poll_interval_s")
        p99 = result.latency_ms.p99
        if not interval or p99 is None:
            continue
        overhead = max(0.0, p99 - 990 * interval)
        if profile.poll_overhead_ms is None or overhead > profile.poll_overhead_ms:
            profile.poll_overhead_ms = overhead
            profile.poll_source = (
                f"{result.scenario}/{profile.label}: p99 {p99:,.1f} ms at a {interval:g} s interval"
            )


# -- the other processes of a deployment: Redis, a balancer ----------------------------------------


def kernel_share(proxied: bool) -> float:
    """The deployment's share of a loopback kernel's TCP memory, where both ends of every
    connection live: 1 of a client's 2 sockets direct; through a balancer process 3 of 4 (the
    client's, the balancer's front and back, the instance's)."""
    return deployment_sockets(proxied) / (deployment_sockets(proxied) + 1)


def deployment_sockets(proxied: bool) -> int:
    """Sockets per client on the deployment's side: the instance's, and the balancer's two."""
    return 3 if proxied else 1


@dataclass(frozen=True)
class PartFit:
    """A process beside the instances (Redis, a balancer): RSS = base + clients x per client,
    by least squares over the plateaus of one measured idle result (``source`` names it)."""

    per_client: float
    base: float
    source: str

    def rss(self, clients: int, processes: int = 1) -> float:
        return processes * self.base + clients * self.per_client


def results_dirs(*first: Path) -> list[Path]:
    """Where measured runs are looked for, as the CLI finds runs: ``first`` (the run's own
    directory), ./results, then the checkout's results/."""
    found: list[Path] = []
    for base in (*first, Path("results"), Path(__file__).resolve().parent.parent / "results"):
        if base.is_dir() and all(base.resolve() != f.resolve() for f in found):
            found.append(base)
    return found


def network_model(bases: Iterable[Path]) -> NetworkModel:
    """The newest measured curves of chat's p99 against RTT and loss (only files that mention
    an RTT are parsed)."""
    return NetworkModel.from_runs(summaries(bases, mentioning='"rtt_ms"'))


def deployment_runs(bases: Iterable[Path]) -> list[tuple[str, Summary]]:
    """The runs that recorded the parts of a several-process deployment, newest first within
    each directory (run ids sort by time), named ``results/<run id>``. Only files that mention
    parts are parsed: a full reference run is large and has none."""
    return list(summaries(bases, mentioning='"parts_rss_bytes"'))


def measured_parts(runs: Iterable[tuple[str, Summary]]) -> dict[str, PartFit]:
    """Each part other than an instance, fitted from the first (newest) run whose valid idle
    result recorded it."""
    found: dict[str, PartFit] = {}
    for name, summary in runs:
        for result in summary.results:
            if result.scenario != "idle" or not result.valid:
                continue
            points = result.memory_per_connection.points
            parts = {p for point in points for p in point.get("parts_rss_bytes", {})}
            for part in sorted(parts - set(found)):
                if not part.startswith("instance"):
                    fit = _part_fit(part, points, f"idle/{result.label} in {name}")
                    if fit is not None:
                        found[part] = fit
    return found


def _part_fit(part: str, points: list[dict[str, Any]], where: str) -> PartFit | None:
    rows = [
        (float(p["clients"]), float(p["parts_rss_bytes"][part]))
        for p in points
        if part in p.get("parts_rss_bytes", {}) and p.get("clients")
    ]
    if not rows:
        return None
    per_client, base = least_squares(rows)
    clients = sorted(int(x) for x, _ in rows)
    return PartFit(
        per_client,
        base,
        f"{where}: {part} {fmt_bytes(per_client)} per client + {fmt_bytes(base)} base"
        f" ({len(rows)} plateaus, {clients[0]:,}-{clients[-1]:,} clients)",
    )


def least_squares(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of y against x; one x only (or a falling fit, which is noise for a
    process that only grows): no slope, the mean."""
    mean_x = sum(x for x, _ in rows) / len(rows)
    mean_y = sum(y for _, y in rows) / len(rows)
    sxx = sum((x - mean_x) ** 2 for x, _ in rows)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in rows) / sxx if sxx else 0.0
    if slope < 0:
        return 0.0, mean_y
    intercept = mean_y - slope * mean_x
    if intercept < 0:  # no process has a negative size: the fit through the origin
        return sum(x * y for x, y in rows) / sum(x * x for x, _ in rows), 0.0
    return slope, intercept


# -- estimates -----------------------------------------------------------------------------------


@dataclass
class Machine:
    """The measured machine: what one server like the measured one may use."""

    fd_limit: int
    memory_per_core: float | None

    @classmethod
    def of(cls, summary: Summary) -> Machine:
        meta = summary.metadata
        memory = meta.get("memory_bytes")
        cores = meta.get("cores") or 1
        return cls(
            int(meta.get("fd_limit") or DEFAULT_FD_LIMIT), memory / cores if memory else None
        )


@dataclass
class Estimate:
    memory_bytes: int | None = None
    cpu_cores: float | None = None
    bandwidth_bytes_per_s: float | None = None
    p99_ms: float | None = None
    servers: int | None = None
    """Server processes (instances): what the workload needs, and at least the instances asked."""
    limit: str = ""
    """What sets the server count: CPU, connections, memory, the highest rate held, the p99,
    the instances asked."""
    memory_per_server_bytes: int | None = None
    """One instance: its base RSS and its share of the clients (RSS + its sockets' kernel)."""
    memory_parts: dict[str, int] = field(default_factory=dict)
    """What ``memory_bytes`` sums: the instances' RSS, the deployment's kernel share, Redis,
    the balancer; a part with no measurement is missing here, and then so is the total."""
    balancer_processes: int | None = None
    """Balancer processes the clients need (a process proxies fd limit / 2 - 100 clients)."""
    poll_interval_s: float | None = None
    connections: int = 0
    requests_per_s: float | None = None
    """HTTP requests per second: polls, long polls re-asked, and sends made as POSTs."""
    per_server_deliveries_per_s: float | None = None
    network_ms: float = 0.0
    """What the clients' network (--rtt-ms, --loss) adds to the p99, already in ``p99_ms``."""
    extrapolated: bool = False
    """The per-server rate is beyond every valid measured point."""
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Why this backend cannot be ranked as feasible (missing figures, a bound out of reach)."""


def estimate(
    workload: Workload,
    profile: Profile,
    machine: Machine,
    parts: dict[str, PartFit] | None = None,
    network: NetworkModel | None = None,
) -> Estimate:
    """``parts``: Redis and balancer fits (:func:`measured_parts`); a deployment that needs one
    absent there gets no memory total, and its sources say what would measure it. ``network``:
    what an RTT and loss add to each p99 (measured curves; the formula without them)."""
    est = Estimate(connections=workload.clients)
    added = (network or NetworkModel()).added_p99(
        profile.label,
        profile.transport,
        workload.rtt_ms,
        workload.loss_pct,
        1 / workload.send_rate if workload.send_rate > 0 else None,
        clients_send=workload.send_rate > 0,
    )
    if added.ms or workload.rtt_ms or workload.loss_pct:
        est.network_ms = added.ms
        est.sources["network_ms"] = added.source
    poll = profile.transport == "poll"
    if poll:
        _poll_interval(workload, profile, est)
    _cpu_estimate(workload, profile, est)
    _memory_estimate(workload, profile, est)
    _bandwidth(workload, profile, est)
    est.requests_per_s = round(requests_per_s(workload, profile.transport, est.poll_interval_s), 1)
    _balancer_processes(workload, est, machine)
    needs = capacity(workload, profile, est, machine)
    if needs is not None:
        servers, limit = _instances_asked(workload, est, *needs)
        if poll:
            est.servers, est.limit = servers, limit
            est.per_server_deliveries_per_s = round(workload.deliveries_per_s / servers, 1)
        else:
            _p99_and_servers(workload, profile, est, servers, limit)
    _deployment_memory(workload, profile, est, parts or {})
    if est.cpu_cores is not None and ((est.servers or 1) > 1 or workload.proxied):
        est.sources["cpu_cores"] += (
            "; the instances' CPU only: Redis's and a balancer's are not in it (a cluster run's"
            " report measures each part's)"
        )
    return est


def _instances_asked(
    workload: Workload, est: Estimate, servers: int, limit: str
) -> tuple[int, str]:
    """At least the instances asked: more than capacity needs lowers each one's share."""
    if workload.instances <= servers:
        return servers, limit
    est.sources["servers"] = (
        f"{workload.instances} instances asked (--instances); capacity alone:"
        f" {est.sources['servers']}"
    )
    return workload.instances, "the instances asked"


def _balancer_processes(workload: Workload, est: Estimate, machine: Machine) -> None:
    """A balancer process holds two descriptors per client (its front and back connections):
    under the file limit it proxies fd limit / 2 - 100 clients, and more need more processes."""
    if not workload.proxied:
        return
    each = machine.fd_limit // 2 - PROXY_FD_RESERVE
    est.balancer_processes = max(1, math.ceil(workload.clients / each))
    est.sources["balancer_processes"] = (
        f"{each:,} clients per {workload.balancer} process: 2 descriptors each under the"
        f" measured file limit ({machine.fd_limit:,}), {PROXY_FD_RESERVE} kept for itself"
    )


def _poll_interval(workload: Workload, profile: Profile, est: Estimate) -> None:
    if profile.poll_overhead_ms is None:
        est.problems.append(
            "its latency overhead over the interval is unknown: " + profile.why_missing(*TIMED)
        )
        est.sources["p99_ms"] = profile.why_missing(*TIMED)
        return
    target = POLL_MARGIN * workload.latency_ms - profile.poll_overhead_ms - est.network_ms
    if target <= 0:
        network = f" and the network's {est.network_ms:,.1f} ms" if est.network_ms else ""
        est.problems.append(
            f"the {workload.latency_ms:g} ms needed is within short polling's measured overhead"
            f" ({profile.poll_overhead_ms:,.1f} ms, {profile.poll_source}){network}: no"
            " interval meets it"
        )
        est.sources["p99_ms"] = profile.poll_source
        return
    interval = target / 990
    est.poll_interval_s = round(interval, 4)
    est.p99_ms = round(990 * interval + profile.poll_overhead_ms + est.network_ms, 1)
    est.sources["p99_ms"] = (
        f"modelled: 0.99 x the {interval:.3g} s interval + the overhead measured in"
        f" {profile.poll_source}" + _network_part(est)
    )


def _cpu_estimate(workload: Workload, profile: Profile, est: Estimate) -> None:
    if profile.cpu_per_delivery_s is None:
        est.problems.append("its CPU per message is unknown: " + profile.why_missing(*TIMED))
        est.sources["cpu_cores"] = profile.why_missing(*TIMED)
        return
    if profile.transport == "poll":
        _poll_cpu(workload, profile, est)
        return
    idle = profile.idle_cores_per_client
    idle_source = f"idle clients' CPU from {profile.idle_source}"
    if idle is None:
        idle, idle_source = 0.0, f"idle clients counted as free ({profile.why_missing('idle')})"
    est.cpu_cores = round(
        workload.deliveries_per_s * profile.cpu_per_delivery_s
        + workload.sends_per_s * (profile.cpu_per_send_s or 0.0)
        + workload.clients * idle,
        4,
    )
    est.sources["cpu_cores"] = f"{profile.cpu_source}; {idle_source}"


def _poll_cpu(workload: Workload, profile: Profile, est: Estimate) -> None:
    """Deliveries plus requests: the sends, and a poll from every client each interval."""
    if est.poll_interval_s is None:
        return  # no interval meets the bound (said already): its polls cannot be counted
    per_request, source = profile.cpu_per_send_s, profile.cpu_source
    per_delivery = profile.cpu_per_delivery_s or 0.0
    if per_request is None:
        # One timed result cannot split deliveries from requests: an empty poll's cost comes
        # from idle (its CPU slope against clients, each polling every T of the idle run).
        if profile.idle_cores_per_client is None or not profile.idle_poll_interval_s:
            why = profile.why_missing("idle")
            est.problems.append(f"the cost of a poll is unknown: {why}")
            est.sources["cpu_cores"] = why
            return
        per_request = profile.idle_cores_per_client * profile.idle_poll_interval_s
        source += f"; a poll's cost from {profile.idle_source}"
    polls = workload.clients / est.poll_interval_s
    est.cpu_cores = round(
        workload.deliveries_per_s * per_delivery + (workload.sends_per_s + polls) * per_request, 4
    )
    est.sources["cpu_cores"] = f"{source}; {polls:,.0f} polls/s at the interval the bound needs"


def _memory_estimate(workload: Workload, profile: Profile, est: Estimate) -> None:
    """The instances' connections (RSS + kernel), what sizing by memory needs; the rest of the
    deployment is added once the server count is known (:func:`_deployment_memory`)."""
    if profile.rss_per_conn is None:
        est.problems.append("its memory per connection is unknown: " + profile.why_missing("idle"))
        est.sources["memory_bytes"] = profile.why_missing("idle")
        return
    per_conn = profile.rss_per_conn + (profile.kernel_per_conn or 0)
    est.memory_bytes = int(workload.clients * per_conn)
    est.sources["memory_bytes"] = (
        f"{profile.idle_source}: {fmt_bytes(per_conn)} per connection (RSS + kernel)"
        f" + {fmt_bytes(profile.base_rss or 0)} base RSS per server"
    )


def _deployment_memory(
    workload: Workload, profile: Profile, est: Estimate, parts: dict[str, PartFit]
) -> None:
    """Everything the deployment holds: each instance's base and its clients' RSS; the kernel's
    memory for the deployment's sockets (the idle fit's kernel per connection is one socket:
    the server's half of a loopback connection); Redis when there are several instances; and
    a balancer process's RSS. A part never measured leaves the total unknown."""
    if est.memory_bytes is None or profile.rss_per_conn is None:
        return
    clients, base = workload.clients, profile.base_rss or 0.0
    n = est.servers or workload.instances
    est.memory_per_server_bytes = int(est.memory_bytes / n + base)
    sockets = deployment_sockets(workload.proxied)
    est.memory_parts = {
        "instances": int(n * base + clients * profile.rss_per_conn),
        "kernel": int(clients * (profile.kernel_per_conn or 0) * sockets),
    }
    if sockets > 1:
        est.sources["memory_bytes"] += (
            f"; through {workload.balancer} the kernel per connection x {sockets} (the"
            " instance's socket and the balancer's front and back)"
        )
    needed = [(BROKER, 1)] if n > 1 else []
    if workload.proxied:
        needed.append((workload.balancer, est.balancer_processes or 1))
    missing = []
    for name, processes in needed:
        fit = parts.get(name)
        if fit is None:
            est.sources[name] = _unmeasured(workload, profile, name, n)
            missing.append(name)
            continue
        est.memory_parts[name] = int(fit.rss(clients, processes))
        est.sources[name] = fit.source + (f", x {processes} processes" if processes > 1 else "")
    if missing:
        est.memory_bytes = None
        est.sources["memory_bytes"] = (
            f"not summed: {' and '.join(missing)} never measured ({est.sources[missing[0]]});"
            f" the rest from {est.sources['memory_bytes']}"
        )
        return
    est.memory_bytes = sum(est.memory_parts.values())


def _unmeasured(workload: Workload, profile: Profile, part: str, instances: int) -> str:
    """Why a part has no figure, and the command that measures it."""
    balancer = workload.balancer if workload.proxied else "reuseport"
    return (
        f"no valid idle result recorded {part}'s memory: `wirewise bench --scenario idle"
        f" --transport {profile.transport} --instances {max(instances, 2)}"
        f" --balancer {balancer}` measures it"
    )


def _bandwidth(workload: Workload, profile: Profile, est: Estimate) -> None:
    if not profile.bytes_rows:
        est.sources["bandwidth_bytes_per_s"] = profile.why_missing(*TIMED)
        return
    ratio = workload.send_rate / workload.push_rate

    def distance(row: tuple[float, float, float | None, int, str]) -> float:
        return abs(math.log((row[0] + 1e-3) / (ratio + 1e-3)))

    measured_ratio, down, up, payload, source = min(profile.bytes_rows, key=distance)
    extra = workload.payload_bytes - payload
    down_now = max(down + extra, 1.0)
    up_now = max((up or 0.0) + extra, 1.0)
    est.bandwidth_bytes_per_s = round(
        workload.deliveries_per_s * down_now + workload.sends_per_s * up_now, 1
    )
    est.sources["bandwidth_bytes_per_s"] = f"{source}, {measured_ratio:.2g} sends per delivery" + (
        f", {payload} B payload adjusted to {workload.payload_bytes} B" if extra else ""
    )


def requests_per_s(workload: Workload, transport: str, poll_interval_s: float | None) -> float:
    """HTTP requests per second the backend serves: a WebSocket's frames are none."""
    sends = 0.0 if transport == "ws" else workload.sends_per_s
    if transport == "poll":
        return workload.clients / poll_interval_s + sends if poll_interval_s else sends
    if transport == "longpoll":
        # A held request answers each delivery (or times out) and is asked again at once.
        return workload.deliveries_per_s + workload.clients / LONGPOLL_WAIT_S + sends
    return sends


def capacity(
    workload: Workload, profile: Profile, est: Estimate, machine: Machine
) -> tuple[int, str] | None:
    """Servers like the measured one by capacity, and which limit binds; None without CPU."""
    if est.cpu_cores is None:
        est.sources["servers"] = "cannot size without a CPU figure"
        return None
    held = workload.clients
    if profile.transport == "poll" and (est.poll_interval_s or 0) >= KEEPALIVE_S:
        held = 0  # keep-alive closes between polls: no connection is held
    needs: dict[str, tuple[float, str]] = {
        "CPU": (est.cpu_cores / CPU_HEADROOM, f"{CPU_HEADROOM:.0%} of a core each"),
        "connections": (
            held / (machine.fd_limit * FD_HEADROOM),
            f"{FD_HEADROOM:.0%} of the measured file limit ({machine.fd_limit:,})",
        ),
    }
    if est.memory_bytes is not None and machine.memory_per_core:
        budget = machine.memory_per_core * MEMORY_HEADROOM - (profile.base_rss or 0)
        if budget <= 0:
            est.problems.append("its base RSS alone fills a server's share of memory")
            return None
        needs["memory"] = (
            est.memory_bytes / budget,
            f"{MEMORY_HEADROOM:.0%} of {fmt_bytes(machine.memory_per_core)} per core",
        )
    if profile.rate_held and profile.transport != "poll":
        needs["the highest rate held"] = (
            workload.deliveries_per_s / profile.rate_held,
            profile.rate_held_source,
        )
    elif profile.transport != "poll":
        needs_note = "no valid saturate result: capacity from CPU, connections and memory only"
        est.sources["capacity"] = needs_note
    limit = max(needs, key=lambda k: needs[k][0])
    share, detail = needs[limit]
    est.sources["servers"] = (
        f"limited by {limit}: {detail}"
        if share > 1
        else f"one suffices; its nearest limit is {limit}, {share:.0%} used ({detail})"
    )
    return max(1, math.ceil(share - 1e-9)), limit


def nearest(points: list[Point], rate: float) -> Point:
    """The point nearest ``rate`` on a log scale (rates span orders of magnitude); on a tie the
    higher p99."""
    if rate <= 0:
        return min(points, key=lambda p: (p.rate, -p.p99_ms))
    return min(points, key=lambda p: (abs(math.log(p.rate / rate)), -p.p99_ms))


def _p99_and_servers(
    workload: Workload, profile: Profile, est: Estimate, servers: int, limit: str
) -> None:
    """p99 near the rate each server carries; more servers while that breaks the bound and a
    measured point under the bound, at a lower rate, exists."""
    est.servers, est.limit = servers, limit
    deliveries = workload.deliveries_per_s
    if not profile.points:
        why = profile.why_missing(*TIMED, "saturate")
        est.problems.append("no latency was measured validly: " + why)
        est.sources["p99_ms"] = why
        est.per_server_deliveries_per_s = round(deliveries / servers, 1)
        return
    bound = workload.latency_ms - est.network_ms  # servers cannot take the network's share off
    rate = deliveries / servers
    point = nearest(profile.points, rate)
    if point.p99_ms > bound:
        lower = sorted(
            (p for p in profile.points if p.p99_ms <= bound and p.rate < rate),
            key=lambda p: -p.rate,
        )
        for candidate in lower:
            n = max(servers, math.ceil(deliveries / candidate.rate - 1e-9))
            found = nearest(profile.points, deliveries / n)
            if found.p99_ms <= bound:
                est.sources["servers"] = (
                    f"limited by the p99: {point.source} measured {point.p99_ms:,.1f} ms at"
                    f" {rate:,.0f} deliveries/s per server, over the {bound:g} ms needed;"
                    f" {n} servers carry {deliveries / n:,.0f} each"
                )
                servers, point, rate = n, found, deliveries / n
                est.servers, est.limit = n, "the p99"
                break
    est.per_server_deliveries_per_s = round(rate, 1)
    est.p99_ms = round(point.p99_ms + est.network_ms, 1)
    top = max(profile.points, key=lambda p: p.rate)
    est.extrapolated = rate > top.rate * EXTRAPOLATION
    est.sources["p99_ms"] = (
        f"{point.source}, nearest the {rate:,.0f} deliveries/s each server carries"
        + (
            f" (beyond the highest rate measured validly, {top.rate:,.0f}/s: the p99 there"
            " is not measured)"
            if est.extrapolated
            else ""
        )
        + _network_part(est)
    )


def _network_part(est: Estimate) -> str:
    """The network's share of a p99, with its source (empty on a network adding nothing)."""
    if "network_ms" not in est.sources:
        return ""
    return f"; + {est.network_ms:,.1f} ms for the network ({est.sources['network_ms']})"


# -- ranking ---------------------------------------------------------------------------------


@dataclass
class Ranked:
    transport: str
    """The backend's label: the transport, or ``transport@server`` for a non-default server."""
    score: int
    reasons: list[str]
    feasible: bool


@dataclass
class Decision:
    recommendation: str | None
    ranking: list[Ranked]
    estimates: dict[str, Estimate]
    workload: Workload
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: no NaN or infinity (JSON has neither), every estimate with its sources."""
        estimates = {}
        for label, e in self.estimates.items():
            data = asdict(e)
            data.pop("problems")
            estimates[label] = finite(data)
        return {
            "run": self.source,
            "workload": finite(asdict(self.workload)),
            "recommendation": self.recommendation,
            "ranking": [
                {
                    "transport": r.transport,
                    "score": r.score,
                    "feasible": r.feasible,
                    "reasons": r.reasons,
                }
                for r in self.ranking
            ],
            "estimates": estimates,
        }


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def decide(
    workload: Workload,
    summary: Summary,
    source: str = "",
    parts: dict[str, PartFit] | None = None,
    network: NetworkModel | None = None,
) -> Decision:
    """``parts``: what Redis and the balancers cost (:func:`measured_parts`); none given, a
    deployment that needs them is left without a memory total. ``network``: the measured
    curves of latency against RTT and loss (:class:`NetworkModel`; the formula without)."""
    machine = Machine.of(summary)
    found = profiles(summary)
    estimates = {
        label: estimate(workload, p, machine, parts, network) for label, p in found.items()
    }
    judged = {label: judge(workload, found[label], estimates[label]) for label in found}
    ranking = rank(workload, judged, estimates)
    recommendation = ranking[0].transport if ranking and ranking[0].feasible else None
    return Decision(recommendation, ranking, estimates, workload, source)


def judge(workload: Workload, profile: Profile, est: Estimate) -> Ranked:
    """Reasons in plain words, each figure with its source; infeasible backends score 0."""
    t = profile.transport
    reasons: list[str] = []
    feasible = not est.problems
    if t == "ws" and workload.proxy_blocks_upgrade:
        feasible = False
        reasons.append(
            "the network blocks the Upgrade: a WebSocket cannot connect there (the other"
            " transports are plain HTTP)"
        )
    reasons += est.problems
    if est.p99_ms is not None:
        meets = est.p99_ms <= workload.latency_ms
        feasible = feasible and meets
        reasons.append(
            f"p99 {est.p99_ms:,.1f} ms ({est.sources['p99_ms']})"
            + (" meets" if meets else " is above")
            + f" the {workload.latency_ms:g} ms needed"
        )
    if t == "poll" and est.poll_interval_s is not None:
        reasons.append(
            f"polls every {est.poll_interval_s:.3g} s to meet it:"
            f" {workload.clients / est.poll_interval_s:,.0f} requests/s whether or not anything"
            " changed"
        )
    if workload.send_rate == 0 and t == "ws":
        reasons.append("clients never send: full duplex buys nothing here")
    elif workload.send_rate > 0 and t != "ws":
        reasons.append(
            f"every send is an HTTP request ({workload.sends_per_s:,.0f}/s in all), costlier than"
            " a frame"
        )
    if t == "longpoll":
        reasons.append(
            f"a new request per delivery: {workload.deliveries_per_s:,.0f} deliveries/s are as many"
            " requests"
        )
    if t == "sse":
        reasons.append(
            "plain HTTP through proxies (they must not buffer: the stream says X-Accel-Buffering: no)"
        )
    if t == "h2":
        reasons.append(
            "one connection per client carries the stream and every POST; browsers need TLS for it"
        )
    if est.servers is not None and est.cpu_cores is not None:
        memory = (
            f", {fmt_bytes(est.memory_bytes)} of memory" if est.memory_bytes is not None else ""
        )
        reasons.append(
            f"{est.servers:,} server(s) like the measured one ({est.sources['servers']}):"
            f" {est.cpu_cores:,.2f} cores ({est.sources['cpu_cores']}){memory}"
            f" for {workload.clients:,} clients"
        )
    if est.memory_parts and ((est.servers or workload.instances) > 1 or workload.proxied):
        reasons.append(memory_reason(workload, est))
    if est.balancer_processes is not None:
        reasons.append(
            f"{est.balancer_processes:,} {workload.balancer} process(es) for"
            f" {workload.clients:,} clients ({est.sources['balancer_processes']})"
        )
    if est.extrapolated:
        reasons.append(
            f"each server would carry more than any valid measurement did:"
            f" `wirewise bench --scenario saturate --transport {t}` finds its limit"
        )
    elif "capacity" in est.sources and feasible:
        reasons.append(est.sources["capacity"])
    if profile.invalid:
        reasons.append(
            "not used, invalid: "
            + ", ".join(f"{s}/{profile.label}" for s in profile.invalid)
            + " (`wirewise report` says why)"
        )
    if profile.warnings:
        reasons.append(f"its valid results carry {profile.warnings} warning(s); see the report")
    return Ranked(profile.label, 0, reasons, feasible)


def memory_reason(workload: Workload, est: Estimate) -> str:
    """The memory total as its parts, each extra process with its source."""
    n = est.servers or workload.instances
    parts = ", ".join(f"{name} {fmt_bytes(v)}" for name, v in est.memory_parts.items())
    total = (
        f" = {fmt_bytes(est.memory_bytes)}"
        if est.memory_bytes is not None
        else f"; no total: {est.sources['memory_bytes'].split(';')[0]}"
    )
    others = [est.sources[k] for k in (BROKER, *PROXIES) if k in est.sources]
    return (
        f"memory on {n:,} instance(s), {fmt_bytes(est.memory_per_server_bytes or 0)} each"
        f" (base + its clients): {parts}{total}" + (f" ({'; '.join(others)})" if others else "")
    )


def _bucket(value: float, best: float, tie: tuple[float, float]) -> int:
    """0 when ``value`` ties ``best`` (within the tolerance), else how many 10 % steps worse."""
    relative, absolute = tie
    if value - best <= max(relative * max(value, best), absolute):
        return 0
    return max(
        1, math.floor(math.log((value + absolute) / (best + absolute)) / math.log(1 + relative))
    )


def rank(
    workload: Workload, judged: dict[str, Ranked], estimates: dict[str, Estimate]
) -> list[Ranked]:
    """Feasible backends by servers, CPU, requests and Upgrade; then the rest, with score 0."""
    feasible = [r for r in judged.values() if r.feasible]
    others = [r for r in judged.values() if not r.feasible]
    if not feasible:
        return sorted(others, key=lambda r: CANDIDATES.index(r.transport))
    servers = {r.transport: estimates[r.transport].servers or 1 for r in feasible}
    cpu = {r.transport: estimates[r.transport].cpu_cores or 0.0 for r in feasible}
    requests = {r.transport: estimates[r.transport].requests_per_s or 0.0 for r in feasible}
    fewest = min(servers.values())
    best_cpu = {n: min(cpu[t] for t in servers if servers[t] == n) for n in set(servers.values())}
    best_req = {
        n: min(requests[t] for t in servers if servers[t] == n) for n in set(servers.values())
    }

    def key(r: Ranked) -> tuple[int, int, int, bool, int]:
        t = r.transport
        n = servers[t]
        return (
            n,
            _bucket(cpu[t], best_cpu[n], CPU_TIE),
            _bucket(requests[t], best_req[n], REQUESTS_TIE),
            backend(t).transport == "ws",
            CANDIDATES.index(t),
        )

    feasible.sort(key=key)
    previous: Ranked | None = None
    for r in feasible:
        t = r.transport
        k = key(r)
        n = servers[t]
        proposal = 100 * fewest / n
        if k[1]:
            proposal -= 10 * (1 - best_cpu[n] / cpu[t]) if cpu[t] else 0
        if k[2]:
            proposal -= 5 * (1 - (best_req[n] + 1) / (requests[t] + 1))
        score = max(1, round(proposal))
        if previous is not None:
            ahead = key(previous)
            score = min(score, previous.score - (1 if k[:4] != ahead[:4] else 0))
            score = max(score, 1)
            r.reasons.append(_against(previous, r, estimates, k, ahead))
        r.score = score
        previous = r
    if len(feasible) > 1 and servers[feasible[1].transport] == servers[feasible[0].transport]:
        feasible[0].reasons.append(
            f"ties with {feasible[1].transport} on servers ({servers[feasible[0].transport]:,});"
            " see its reasons for what decided"
        )
    others.sort(key=lambda r: CANDIDATES.index(r.transport))
    return feasible + others


def _against(
    ahead: Ranked,
    r: Ranked,
    estimates: dict[str, Estimate],
    key: tuple[int, int, int, bool, int],
    ahead_key: tuple[int, int, int, bool, int],
) -> str:
    """Why ``r`` ranks below ``ahead``, in numbers."""
    mine, theirs = estimates[r.transport], estimates[ahead.transport]
    name = ahead.transport
    if key[0] != ahead_key[0]:
        return f"needs {mine.servers:,} servers against {theirs.servers:,} for {name}"
    same = f"as many servers as {name} ({mine.servers:,})"
    if key[1] != ahead_key[1]:
        return (
            f"{same}, but more CPU: {mine.cpu_cores or 0:,.3g} cores against"
            f" {theirs.cpu_cores or 0:,.3g}"
        )
    if key[2] != ahead_key[2]:
        return (
            f"{same} and CPU within noise, but more HTTP requests: {mine.requests_per_s or 0:,.0f}/s"
            f" against {theirs.requests_per_s or 0:,.0f}/s"
        )
    if key[3] != ahead_key[3]:
        return (
            f"costs the same as {name} within the measurements' noise; {name} needs no Upgrade,"
            " so it passes every HTTP proxy"
        )
    return f"costs the same as {name} within the measurements' noise"
