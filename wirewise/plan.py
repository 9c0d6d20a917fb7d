"""What one ``wirewise bench`` runs: scenarios x backends x repeats, in what order, with
which parameters. Pure: no process is started here.

Order: scenario by scenario, and within a scenario the repeats *interleaved* (ABC ABC ABC,
not AAA BBB CCC), so that a slow minute of the machine lands on every backend instead of
being mistaken for one backend's property. A several-process plan may also compare
deployments in the same run (``--baseline``: one process with the in-memory broker;
``--sticky both``: the balancer with and without stickiness); they interleave the same way,
each backend's deployments one after the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wirewise.netpath import PROFILES as NETWORK_PROFILES
from wirewise.netpath import Conditions
from wirewise.proxies import NOT_PROXIED
from wirewise.registry import BACKENDS, KILLING, Backend
from wirewise.results import VARIANTS
from wirewise.scenarios._options import ScenarioOptions

__all__ = [
    "FULL",
    "NETWORKED",
    "QUICK",
    "QUICK_SCENARIOS",
    "SCENARIOS",
    "VARIANTS",
    "Network",
    "Plan",
    "Run",
    "deployment",
    "expected_seconds",
    "plan_runs",
    "scenario_options",
]

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "chat", "broadcast", "idle", "saturate", "game", "faults", "failover", "rolling", "fallback"
)  # fmt: skip
DEFAULT_SCENARIOS = SCENARIOS[:6]
"""What a bare ``wirewise bench`` runs: failover and rolling need Redis and HAProxy, and
fallback means something behind ``--proxy no-upgrade``: they are asked for by name."""
FALLBACK_BACKEND = Backend("ws", "uvicorn")
"""fallback's one server: uvicorn answers every transport's routes from one application."""
QUICK_SCENARIOS = ("chat", "broadcast", "idle")
NO_FAULTS = ("tcp",)
"""The raw-TCP floor is calibration, not a transport a client chooses: no faults run."""
NO_SATURATE = ("tcp",)
"""The floor's knee lies past what a Python load generator on one core can drive (it costs
the generator about what it costs the server per delivery): its ramp would measure the
generator. It calibrates latency, not capacity."""
STICKY = ("off", "on", "both")
PLAIN = ("chat", "broadcast", "game", "faults", "failover", "rolling", "fallback")
"""Scenarios with one window (the others step: idle by connections, saturate by rate)."""

QUICK: dict[str, dict[str, Any]] = {
    "chat": {"users": 20, "rate": 4.0, "measure": 2.0},
    "broadcast": {"users": 51, "rate": 20.0, "measure": 2.0},
    "idle": {"step_users": 100, "steps": 3, "step_seconds": 1.0, "ramp_rate": 200.0},
    "saturate": {"users": 20, "rate": 5.0, "steps": 5, "step_seconds": 1.5},
    "game": {"users": 8, "rate": 20.0, "payload_bytes": 50, "measure": 2.0},
    "faults": {"users": 40, "rate": 2.0, "measure": 6.0},
    "failover": {"users": 40, "rate": 2.0, "measure": 6.0},
    "rolling": {"users": 40, "rate": 2.0, "measure": 8.0, "kill_at": 0.2},
    "fallback": {"users": 40, "rate": 2.0, "measure": 4.0, "back_within": 0.0},
}
FULL: dict[str, dict[str, Any]] = {
    "chat": {"users": 200, "rate": 1.0, "measure": 10.0},
    "broadcast": {"users": 501, "rate": 10.0, "measure": 10.0},
    "idle": {"step_users": 1000, "steps": 4, "step_seconds": 2.0, "ramp_rate": 250.0},
    "saturate": {"users": 100, "rate": 2.0, "steps": 14, "step_seconds": 3.0, "rate_factor": 1.4},
    "game": {"users": 40, "rate": 20.0, "payload_bytes": 50, "measure": 10.0},
    "faults": {"users": 300, "rate": 0.5, "measure": 12.0},
    "failover": {"users": 300, "rate": 0.5, "measure": 12.0},
    "rolling": {"users": 300, "rate": 0.5, "measure": 14.0, "kill_at": 0.2},
    "fallback": {"users": 300, "rate": 0.5, "measure": 10.0, "back_within": 0.0},
}
FULL_IDLE_POLL = {"step_users": 300}
"""Short pollers at full scale: 1,200 at T = 1 s are ~1,200 requests/s, a good share of what
one core answers here; 4,000 would measure a busy server, not an idle poller."""
DEFAULT_USERS = 50
DEFAULT_PAYLOAD = 100
"""Characters of message text where the scenario's preset names none (game's says 50)."""


NETWORKED = ("chat", "broadcast", "game", "fallback")
"""Scenarios that run under network conditions: one window of deliveries each. idle and
saturate would measure the relay's own capacity; a kill is not a network condition."""


@dataclass(frozen=True)
class Network:
    """Conditions between the load generator and the server, under a name the results use."""

    name: str
    conditions: Conditions
    source: str | None = None
    """Where a named profile's figures come from (wirewise/netpath.py)."""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.conditions.as_dict(), "source": self.source}


def networks(
    profiles: list[str] | None,
    rtts: list[float] | None,
    losses: list[float] | None,
    jitter: float = 0.0,
    bandwidth: float | None = None,
) -> tuple[Network, ...]:
    """``--network`` profiles, or every ``--rtt`` with every ``--loss`` (one run each, with the
    same jitter and bandwidth); empty when none is asked for. The path with nothing added
    (``rtt0``: the relay at zero delay) always comes first: every condition is read against it,
    measured in the same run. Raises ValueError for a bad one."""
    found = _asked_networks(profiles, rtts, losses, jitter, bandwidth)
    if found and not any(n.conditions.none for n in found):
        found = (Network("rtt0", Conditions(), "the same path with nothing added"), *found)
    return found


def _asked_networks(
    profiles: list[str] | None,
    rtts: list[float] | None,
    losses: list[float] | None,
    jitter: float,
    bandwidth: float | None,
) -> tuple[Network, ...]:
    if profiles:
        unknown = [p for p in profiles if p not in NETWORK_PROFILES]
        if unknown or rtts or losses or jitter or bandwidth:
            raise ValueError(
                f"--network takes {', '.join(NETWORK_PROFILES)}, alone (not {', '.join(unknown)})"
                if unknown
                else "--network names whole profiles: leave out --rtt, --loss, --jitter, --bandwidth"
            )
        return tuple(
            Network(p, NETWORK_PROFILES[p].conditions, NETWORK_PROFILES[p].source)
            for p in dict.fromkeys(profiles)
        )
    if not (rtts or losses or jitter or bandwidth):
        return ()
    found = []
    for rtt in dict.fromkeys(rtts or [0.0]):
        for loss in dict.fromkeys(losses or [0.0]):
            conditions = Conditions(rtt, jitter, loss, bandwidth)
            name = f"rtt{rtt:g}" + (f"-loss{loss:g}" if loss else "")
            name += f"-jitter{jitter:g}" if jitter else ""
            name += f"-{bandwidth:g}kbit" if bandwidth else ""
            found.append(Network(name, conditions))
    return tuple(found)


@dataclass(frozen=True)
class Plan:
    """What one ``wirewise bench`` invocation runs; every field lands in the results."""

    scenarios: tuple[str, ...]
    backends: tuple[Backend, ...] = BACKENDS
    quick: bool = False
    repeat: int = 1
    users: int | None = None
    rate: float | None = None
    duration: float | None = None
    poll_interval: float = 1.0
    payload_bytes: int | None = None
    """Characters of message text (None: each scenario's own, 100; game 50)."""
    room_size: int | None = None
    latency_bound_ms: float = 100.0
    processes: int = 1
    """Locust worker processes on this machine (1 with no remote workers: a local runner)."""
    remote_workers: int = 0
    """Locust workers started on other hosts (``locust --worker --master-host ...``): the
    master waits for them, and their ledgers merge with the local ones."""
    master_bind: str = "127.0.0.1"
    """Where the Locust master listens for workers (0.0.0.0 for workers on other hosts)."""
    master_port: int = 5557
    worker_wait: float = 300.0
    """Seconds the master waits for every worker before the run fails."""
    server_host: str = "127.0.0.1"
    """Where the server under test listens (an address remote workers can reach)."""
    instances: int = 1
    """Server processes per backend, sharing rooms through Redis (1: one process, no Redis)."""
    balancer: str = "haproxy"
    """In front of several instances: haproxy, nginx or reuseport."""
    sticky: str = "off"
    """The balancer's stickiness: off (round robin), on, or both (each run twice)."""
    baseline: bool = False
    """With several instances: each run also on one process with the in-memory broker, so
    that the extra hop (balancer, Redis) is measured in the same run."""
    proxy: str | None = None
    """An nginx profile between the load generator and one server (wirewise/proxies.py)."""
    networks: tuple[Network, ...] = ()
    """Network conditions (wirewise/netpath.py): each scenario x backend runs once under each,
    interleaved; empty: loopback, nothing in between."""
    generator_limit: float = 70.0
    """Most load-generator CPU percent a run is planned for (the bench scales rates to it)."""
    out: Path = ROOT / "results"
    overrides: dict[str, Any] = field(default_factory=dict)
    """Scenario options set by hand (tests use them for very short runs)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "scenarios": list(self.scenarios),
            "backends": [b.label for b in self.backends],
            "quick": self.quick,
            "repeat": self.repeat,
            "users": self.users,
            "rate": self.rate,
            "duration": self.duration,
            "poll_interval": self.poll_interval,
            "payload_bytes": self.payload_bytes,
            "room_size": self.room_size,
            "latency_bound_ms": self.latency_bound_ms,
            "processes": self.processes,
            "remote_workers": self.remote_workers,
            "server_host": self.server_host,
            "instances": self.instances,
            "balancer": self.balancer if self.instances > 1 else None,
            "sticky": self.sticky if self.instances > 1 else None,
            "baseline": self.baseline,
            "proxy": self.proxy,
            "networks": [n.as_json() for n in self.networks],
            "generator_limit": self.generator_limit,
            "overrides": self.overrides,
        }


@dataclass(frozen=True)
class Run:
    """One scenario x backend x repeat."""

    scenario: str
    backend: Backend
    repeat: int
    variant: str = ""
    """Empty (the plan's deployment), "sticky" or "single" (see :data:`VARIANTS`)."""
    network: Network | None = None
    """The network conditions it runs under (None: loopback, nothing in between)."""

    @property
    def name(self) -> str:
        """The run's directory: ``chat-ws-websockets-r1``, ``chat-sse-single-r2``,
        ``chat-sse-rtt100-r1``."""
        variant = f"-{self.variant}" if self.variant else ""
        network = f"-{self.network.name}" if self.network else ""
        return f"{self.scenario}-{self.backend.slug}{variant}{network}-r{self.repeat}"


CLUSTERED = ("failover", "rolling")
"""Scenarios that need several instances: always three behind HAProxy, sharing Redis."""


def variants(plan: Plan, scenario: str) -> tuple[str, ...]:
    """The deployments each backend runs ``scenario`` on (a kill needs several instances;
    faults kills and restarts its one process). ``--baseline`` compares a proxied server with
    the same server reached directly too."""
    if scenario in KILLING and plan.proxy:
        return ("",)
    if plan.proxy and plan.baseline:
        return ("", "single")
    if plan.instances < 2 or scenario == "faults":
        return ("",)
    found = ["", *(["sticky"] if plan.sticky == "both" else [])]
    if plan.baseline and scenario not in KILLING:
        found.append("single")
    return tuple(found)


def deployment(plan: Plan, run: Run) -> dict[str, Any]:
    """What served ``run``: processes, balancer, broker, stickiness (``run.json`` keeps it)."""
    clustered = run.scenario in CLUSTERED
    killing = run.scenario in KILLING
    alone = plan.instances < 2 and not clustered
    if run.variant == "single" or run.scenario == "faults" or alone:
        proxied = alone and not killing and run.variant != "single"
        return {"variant": run.variant, "instances": 1, "balancer": None, "broker": "memory",
                "sticky": False, "proxy": plan.proxy if proxied else None,
                "network": run.network.as_json() if run.network else None}  # fmt: skip
    return {
        "variant": run.variant,
        "instances": 3 if clustered else plan.instances,
        "balancer": "haproxy" if clustered else plan.balancer,
        "broker": "redis",
        "sticky": run.variant == "sticky" or plan.sticky == "on",
    }


def plan_runs(plan: Plan) -> list[Run]:
    """Every run, scenario by scenario, repeats interleaved across backends (and each
    backend's deployments one after the other)."""
    return [
        Run(scenario, backend, repeat, variant, network)
        for scenario in plan.scenarios
        for repeat in range(1, plan.repeat + 1)
        for backend in plan.backends
        for variant in variants(plan, scenario)
        for network in plan.networks or (None,)
        if not (scenario in KILLING and backend.transport in NO_FAULTS)
        and not (scenario == "saturate" and backend.transport in NO_SATURATE)
        and not (plan.proxy and backend.transport in NOT_PROXIED)
        and (scenario != "fallback" or backend == FALLBACK_BACKEND)
    ]


def scenario_options(plan: Plan, run: Run) -> tuple[ScenarioOptions, int]:
    """The scenario's options and Locust user count for ``run``, from the presets, ``--quick``
    and the plan's overrides."""
    scenario, backend = run.scenario, run.backend
    params: dict[str, Any] = dict((QUICK if plan.quick else FULL)[scenario])
    if scenario == "idle" and not plan.quick and backend.transport == "poll":
        params.update(FULL_IDLE_POLL)
    if plan.users is not None:
        if scenario == "idle":
            params["step_users"] = max(1, plan.users // params["steps"])
        else:
            params["users"] = plan.users
    if plan.rate is not None:
        params["rate"] = plan.rate
    if plan.duration is not None:
        if scenario in ("idle", "saturate"):
            params["step_seconds"] = plan.duration / params["steps"]
        else:
            params["measure"] = plan.duration
    if plan.room_size is not None:
        params["room_size"] = plan.room_size
    if plan.payload_bytes is not None:
        params["payload_bytes"] = plan.payload_bytes
    params.setdefault("payload_bytes", DEFAULT_PAYLOAD)
    users = int(params.pop("users", 1))
    options = ScenarioOptions(
        transport=backend.transport,
        poll_interval=plan.poll_interval,
        latency_bound_ms=plan.latency_bound_ms,
        generator_limit=plan.generator_limit,
        drain=max(5.0, 3 * plan.poll_interval),
        **{k: v for k, v in params.items() if k != "users"},
    )
    if plan.overrides:
        options = replace(options, **plan.overrides)
    return options, users


def expected_seconds(run: Run, options: ScenarioOptions, users: int) -> float:
    """A run's expected length in seconds, for the progress bar's ETA and the safety cap."""
    startup = 6.0  # server and Locust start, settling, collecting, stopping
    if run.scenario == "idle":
        ramp = options.steps * options.step_users / options.ramp_rate
        return startup + ramp + options.steps * (options.step_seconds + 2.5)
    if run.scenario == "saturate":
        return startup + users / 100 + options.steps * (options.step_seconds + 0.2) + 2.0
    spawn = math.ceil(users / 250)
    return startup + spawn + options.measure + 1.5
