"""``wirewise bench``: run every scenario x backend x repeat, write the raw files, summarise.

For each run: start the backend alone on core 0 (or reuse it, ``--quick``); plan the load so
that the generator stays under its CPU limit (:class:`Headroom`); start Locust on the other
core(s); sample the server, the kernel and the load generator while it runs; read the
kernel's TCP counters of the server's connections; write ``run.json``, ``samples.jsonl`` and
``bytes.jsonl`` beside Locust's ``scenario.json`` and ``messages.npz``. At the end,
:func:`wirewise.summarize.summarize_run` turns the raw files into ``summary.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import wirewise.scenarios
from wirewise.clients.base import SOURCES_ENV
from wirewise.faults import FAULT_SETTINGS, ClusterServer, Failover, Faults, Rolling
from wirewise.netpath import ConditionedServer, NetworkPath
from wirewise.plan import (
    ROOT,
    Plan,
    Run,
    deployment,
    expected_seconds,
    plan_runs,
    scenario_options,
)
from wirewise.processes import (
    SERVER_SETTINGS,
    Server,
    child_setup,
    cores,
    process_tree,
    start_server,
    stop_process,
)
from wirewise.proxies import ProxiedServer
from wirewise.registry import KILLING, Backend
from wirewise.results import Repeat, Summary, collect_metadata
from wirewise.sampler import ByteCounter, Sampler
from wirewise.scenarios._options import ScenarioOptions
from wirewise.summarize import summarize_repeat, summarize_run

__all__ = ["Headroom", "Progress", "run_bench", "run_one"]

SCENARIOS_DIR = Path(wirewise.scenarios.__file__).resolve().parent
"""The locustfiles, wherever the package is installed (``scenarios/`` in a checkout)."""
PRIOR_US_PER_EVENT = 50.0
"""Before a backend's first run: a load generator's CPU per event (a delivery or a send), as
the full clients cost here (37-46 us per delivery, several hundred per send); the lean
clients cost less, so this errs on the safe side. Replaced by the bench's own measurement."""
PRIOR_US_PER_CONNECTION = 2600.0
"""An idle ramp's load-generator CPU per connection opened (login, then the stream), as
measured with the full clients; the lean ones cost less."""


@dataclass
class Progress:
    """What the bench tells its caller: a run starts, or a run ended with its headline."""

    kind: str
    """"start" or "done"."""
    run: Run
    index: int
    total: int
    eta_s: float
    headline: str = ""
    valid: bool | None = None


# -- the load generator's headroom -----------------------------------------------------------------


@dataclass
class Headroom:
    """The generator's CPU per event, measured by this bench per backend, and the plan for a run.

    Events are deliveries plus sends. A run is planned so that events/s x cost stays under the
    plan's limit (70 %); above it, the run's send rate is scaled down, and ``run.json`` says
    what was chosen and why. saturate ramps and checks this itself at each step.
    """

    limit: float = 70.0
    costs: dict[str, tuple[float, str]] = field(default_factory=dict)

    def events_per_s(self, run: Run, options: ScenarioOptions, users: int) -> float:
        rate = options.rate or 0.0
        room = options.room_size
        if run.scenario == "broadcast":
            listeners = max(users - 1, 1)
            rooms = math.ceil(listeners / room) if room else 1
            return rate * rooms + rate * listeners
        if run.scenario in ("chat", "game", "saturate", "fallback", *KILLING):
            size = min(room or {"game": 4}.get(run.scenario, 10), users)
            return users * rate * (size + 1)
        return 0.0

    def plan(
        self, run: Run, options: ScenarioOptions, users: int
    ) -> tuple[ScenarioOptions, dict[str, Any]]:
        label = run.backend.label
        cost, source = self.costs.get(label, (PRIOR_US_PER_EVENT, "prior"))
        record: dict[str, Any] = {"limit_percent": self.limit, "cost_source": source}
        if run.scenario == "idle":
            predicted = options.ramp_rate * PRIOR_US_PER_CONNECTION / 1e4
            record.update(
                us_per_connection=PRIOR_US_PER_CONNECTION,
                cost_source="prior",
                connections_per_s=options.ramp_rate,
                predicted_percent=round(predicted, 1),
            )
            if predicted > self.limit:
                scaled = options.ramp_rate * self.limit / predicted
                record["chosen"] = {"ramp_rate": round(scaled, 1)}
                options = replace(options, ramp_rate=round(scaled, 1))
            return options, record
        events = self.events_per_s(run, options, users)
        predicted = events * cost / 1e4
        record.update(
            us_per_event=round(cost, 2),
            events_per_s=round(events, 1),
            predicted_percent=round(predicted, 1),
        )
        if run.scenario != "saturate" and predicted > self.limit and options.rate:
            factor = self.limit / predicted
            rate = round(options.rate * factor, 3)
            record["chosen"] = {"rate": rate, "scaled_by": round(factor, 3)}
            options = replace(options, rate=rate)
        return options, record

    def learn(self, run: Run, repeat: Repeat) -> None:
        """Keep the generator's measured cost per event from a finished run."""
        generator = repeat.load_generator
        delivered = repeat.deliveries.delivered
        if run.scenario == "idle" or not delivered or generator.cpu_us_per_delivery is None:
            return
        events = delivered + repeat.publisher.sent
        cost = generator.cpu_us_per_delivery * delivered / events
        known = self.costs.get(run.backend.label)
        if known is None or cost > known[0]:  # the dearest seen: plans err on the safe side
            self.costs[run.backend.label] = (cost, run.name)


# -- one run -------------------------------------------------------------------------------------


def locust_argv(
    run: Run, options: ScenarioOptions, users: int, url: str, out: Path, plan: Plan, cap: float
) -> list[str]:
    """The master's (or the single runner's) command line."""
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(SCENARIOS_DIR / f"{run.scenario}.py"),
        "--headless",
        "--host", url,
        "--csv", str(out / "locust"),
        "--loglevel", "WARNING",
        "--only-summary",
        "-t", f"{int(cap)}s",
    ]  # fmt: skip
    if run.scenario == "idle":
        argv += ["-u", "1", "-r", "1"]  # the ticker; the scenario ramps the idlers itself
    else:
        argv += ["-u", str(users), "-r", str(min(max(users, 50), 250))]
    if plan.remote_workers:
        argv += [
            "--master",
            "--expect-workers", str(plan.processes + plan.remote_workers),
            "--expect-workers-max-wait", str(int(plan.worker_wait)),
            "--master-bind-host", plan.master_bind,
            "--master-bind-port", str(plan.master_port),
        ]  # fmt: skip
    elif plan.processes > 1:
        argv += ["--processes", str(plan.processes)]
    return argv + options.to_argv()


def worker_argv(plan: Plan) -> list[str]:
    """A local worker beside remote ones: exactly what a remote host runs. ``-f -`` takes
    the locustfile from the master, which also sends the host and the scenario's options, so
    one command serves every scenario; a worker ends with its run's master."""
    master = "127.0.0.1" if plan.master_bind in ("0.0.0.0", "::", "") else plan.master_bind
    return [
        sys.executable, "-m", "locust",
        "-f", "-",
        "--worker",
        "--master-host", master,
        "--master-port", str(plan.master_port),
        "--loglevel", "WARNING",
    ]  # fmt: skip


@dataclass
class LoadGenerator:
    """Locust's processes for one run: one runner (with ``--processes``, its own forked
    workers), or a master with local workers started beside it and remote ones awaited."""

    procs: list[subprocess.Popen[bytes]]
    argv: list[str]

    @classmethod
    def start(
        cls, argv: list[str], workers: list[list[str]], log: Path, env: dict[str, str]
    ) -> LoadGenerator:
        _, loadgen_cores = cores()
        procs: list[subprocess.Popen[bytes]] = []
        with log.open("wb") as handle:
            for command in [argv, *workers]:  # the master first: workers connect to it
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        preexec_fn=child_setup(loadgen_cores),
                        env=env,
                    )
                )
        return cls(procs, argv)

    def pids(self) -> list[int]:
        """Every local Locust process (the sampler's load generator)."""
        return [pid for proc in self.procs for pid in process_tree(proc.pid)]

    def running(self) -> bool:
        return self.procs[0].poll() is None

    def stop(self) -> int | None:
        """Every process by its id, workers after the master; the master's status."""
        statuses = [stop_process(proc) for proc in self.procs]
        return statuses[0]


LOOPBACK_SOURCES = ",".join(f"127.0.0.{n}" for n in range(2, 10))
"""Eight source addresses: ~8 x 28,000 ports towards one loopback port (clients/base.py)."""


def locust_env(url: str, spread: bool) -> dict[str, str]:
    """Locust's environment: towards a loopback cluster (``spread``), connections spread over
    source addresses, so that more than one address's ephemeral ports can be open at once."""
    env = dict(os.environ)
    if spread and "//127." in url:
        env.setdefault(SOURCES_ENV, LOOPBACK_SOURCES)
    return env


def parameters_of(run: Run, options: ScenarioOptions, users: int) -> dict[str, Any]:
    """What a run's result says it was given (the README documents each)."""
    rate = options.rate or None
    return {
        "users": users if run.scenario != "idle" else options.step_users * options.steps,
        "rate_per_user": rate,
        "rate_per_sender": (rate or 0)
        * (math.ceil(max(users - 1, 1) / options.room_size) if options.room_size else 1)
        if run.scenario == "broadcast"
        else rate,
        "payload_bytes": options.payload_bytes,
        "room_size": options.room_size or None,
        "duration_s": options.measure
        if run.scenario not in ("idle", "saturate")
        else options.step_seconds * options.steps,
        "poll_interval_s": options.poll_interval if run.backend.transport == "poll" else None,
        **(
            {"step_users": options.step_users, "ramp_rate": options.ramp_rate}
            if run.scenario == "idle"
            else {}
        ),
        **(
            {"rate_factor": options.rate_factor, "latency_bound_ms": options.latency_bound_ms}
            if run.scenario == "saturate"
            else {}
        ),
        **(
            {"steps": options.steps, "step_seconds": options.step_seconds}
            if run.scenario in ("idle", "saturate")
            else {}
        ),
        "server_settings": dict(pair.split("=") for pair in SERVER_SETTINGS[1::2]),
        "options": options.as_dict(),
    }


def run_one(
    plan: Plan, run: Run, run_dir: Path, headroom: Headroom, shared: Server | None = None
) -> Path:
    """One scenario x backend x repeat: its own server (or ``shared``), Locust, the files."""
    directory = run_dir / run.name
    directory.mkdir(parents=True, exist_ok=True)
    options, users = scenario_options(plan, run)
    options, planned = headroom.plan(run, options, users)
    faulty = run.scenario in KILLING
    deployed = deployment(plan, run)
    if faulty or deployed["instances"] > 1 or deployed.get("proxy") or run.network:
        shared = None  # this run kills its server, runs several, or puts nginx in front
    server: Server | ClusterServer | ProxiedServer | ConditionedServer
    faults: Faults | Failover | None = None
    if run.scenario in ("failover", "rolling"):
        server = ClusterServer.start(
            run.backend, plan.poll_interval, sticky=deployed["sticky"], host=plan.server_host
        )
        faults = (Rolling if run.scenario == "rolling" else Failover)(server, directory)
    elif deployed["instances"] > 1:
        server = ClusterServer.start(
            run.backend,
            plan.poll_interval,
            deployed["instances"],
            deployed["balancer"],
            (),
            sticky=deployed["sticky"],
            host=plan.server_host,
        )
    elif deployed.get("proxy"):
        alone = start_server(
            run.backend, directory / "server.log", plan.poll_interval, host=plan.server_host
        )
        server = ProxiedServer.start(alone, deployed["proxy"])
    elif run.network is not None:
        path = NetworkPath(run.network.conditions, relay_cpus=cores()[0], always_relay=True)
        server = ConditionedServer.start(
            lambda where: start_server(
                run.backend,
                directory / "server.log",
                plan.poll_interval,
                host=where.server_host,
                prefix=where.exec_prefix,
            ),
            path,
        )
    else:
        server = shared or start_server(
            run.backend,
            directory / "server.log",
            plan.poll_interval,
            FAULT_SETTINGS if faulty else (),
            host=plan.server_host,
        )
        faults = Faults(server, directory, plan.poll_interval) if faulty else None
    options = replace(
        options,
        server_pid=server.pid,
        wirewise_out=str(directory / "scenario.json"),
        total_users=0 if run.scenario == "idle" else users,  # idle ramps its own
    )
    locust: LoadGenerator | None = None
    instances = parts = None
    if isinstance(server, ClusterServer):
        # A failover's figures are one survivor's (the killed one would drop out of a sum).
        instances, parts = (None if faulty else server.instance_pids), server.parts
    elif isinstance(server, (ProxiedServer, ConditionedServer)):
        parts = server.parts
    sampler = Sampler(
        server.pid,
        lambda: locust.pids() if locust else [],
        server.port,
        interval=0.5,
        uss=run.scenario == "idle",  # smaps_rollup: cheap enough at 2 Hz, and only idle needs it
        instances=instances,
        parts=parts,
    )
    counter = byte_counter(server.port) if run.scenario != "idle" else None
    traffic: list[dict[str, float]] = []
    cap = expected_seconds(run, options, users) * 3 + 60
    started = time.time()
    timed_out = False
    status: int | None = None
    locust_status: int | None = None
    argv: list[str] = []
    try:
        sampler.start()
        if counter is not None:
            counter.reset()
        argv = locust_argv(run, options, users, server.url, directory, plan, cap)
        workers = [worker_argv(plan)] * plan.processes if plan.remote_workers else []
        env = locust_env(server.url, spread=isinstance(server, ClusterServer))
        locust = LoadGenerator.start(argv, workers, directory / "locust.log", env)
        deadline = time.monotonic() + cap + 30 + (plan.worker_wait if plan.remote_workers else 0)
        try:
            while locust.running() and time.monotonic() < deadline:
                if counter is not None:
                    counter.poll()
                    traffic.append(
                        {
                            "t": time.time(),
                            **counter.all_totals(),
                            "header": counter.header or 0,
                        }
                    )
                if faults is not None:
                    faults.poll(sampler)
                time.sleep(0.5)
            timed_out = locust.running()
        finally:  # also when the bench itself is interrupted: no Locust left behind
            locust_status = locust.stop()
    finally:
        sampler.stop()
        if faults is not None:
            server = faults.server
            faults.finish()
        status = server.stop() if shared is None else shared.proc.poll()
    write_jsonl(directory / "samples.jsonl", (asdict(s) for s in sampler.samples))
    write_jsonl(
        directory / "bytes.jsonl",
        (
            {
                "t": row["t"],
                "down": row["sent"],
                "up": row["received"],
                "wire_down": row["wire_sent"],
                "wire_up": row["wire_received"],
                "header": row["header"],
            }
            for row in traffic
        ),
    )
    record = {
        "scenario": run.scenario,
        "transport": run.backend.transport,
        "server_name": run.backend.server,
        "label": run.backend.label,
        "repeat": run.repeat,
        "deployment": deployed,
        "users": users,
        "parameters": parameters_of(run, options, users),
        "headroom": planned,
        "server": {
            "pid": server.pid,
            "url": server.url,
            "exit_status": status,
            "shared": shared is not None,
        },
        "locust": {
            "argv": argv,
            "exit_status": locust_status,
            "local_processes": plan.processes,
            "remote_workers": plan.remote_workers,
        },
        "timed_out": timed_out,
        "started_at": started,
        "ended_at": time.time(),
        "traffic_measured": counter is not None,
        "sampler_errors": sampler.errors[:20],
        "injected": faults.report() if faults is not None else None,
        "network": server.path.record() if isinstance(server, ConditionedServer) else None,
    }
    (directory / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    return directory


def byte_counter(port: int) -> ByteCounter | None:
    """The kernel's byte counters, or None without ``ss`` (bytes per message then stay null)."""
    try:
        return ByteCounter(port)
    except RuntimeError:
        return None


def write_jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> None:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


# -- the whole bench -------------------------------------------------------------------------------


def run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S")


def headline(run: Run, repeat: Repeat) -> str:
    """A finished run in a few words: its main figure, for the progress lines."""
    if run.scenario == "idle":
        memory = repeat.memory_per_connection
        if memory.rss_bytes is None:
            return "no memory fit"
        return f"{memory.rss_bytes / 1024:,.1f} KiB per client (r2 {memory.r2:.2f})"
    if run.scenario == "saturate":
        held = repeat.highest_rate_held
        if held is None:
            return "no step held"
        return f"held {held['deliveries_per_s']:,.0f} deliveries/s ({repeat.stopped_by or ''})"
    if run.scenario in KILLING and repeat.faults:
        back = repeat.faults["reconnect_ms"]
        line = f"reconnect p50 {back['p50']} ms, lost {repeat.deliveries.lost}"
        if (survivors := repeat.faults.get("survivors")) and survivors["during_ms"]["count"]:
            during, after = survivors["during_ms"]["p99"], survivors["after_ms"]["p99"]
            line += f", survivors p99 {during} ms in the storm, {after} ms after"
        return line
    if run.scenario == "fallback" and repeat.fallback:
        found = repeat.fallback
        settled = ", ".join(f"{n} on {t}" for t, n in found["settled"].items())
        return f"settled {settled}; lost p50 {found['lost_ms']['p50']} ms to failed steps"
    latency = repeat.latency_ms
    if not latency.count:
        return "no delivery timed"
    return f"p50 {latency.p50:,.2f} ms, p99 {latency.p99:,.2f} ms over {latency.count:,} deliveries"


def record_failure(directory: Path, run: Run, exc: Exception) -> str:
    """Write why ``run`` failed into its ``run.json`` (kept, if the run wrote one) and say it.

    Any exception counts, not only the ones a run expects (a server that would not start): a
    bug met in hour one of a long bench costs that run, not the hour. ``summarize`` marks the
    result invalid with this reason; the traceback is kept for whoever fixes it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.json"
    record: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text())
    why = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
    record.update(
        {
            "scenario": run.scenario,
            "transport": run.backend.transport,
            "label": run.backend.label,
            "repeat": run.repeat,
            "failure": why,
            "traceback": traceback.format_exception(exc),
        }
    )
    path.write_text(json.dumps(record, indent=1) + "\n")
    return why


def run_bench(
    plan: Plan, argv: list[str], progress: Callable[[Progress], None] | None = None
) -> tuple[Path, Summary]:
    """Run every scenario x backend x repeat; returns the run directory and its summary."""
    run_dir = plan.out / run_id()
    run_dir.mkdir(parents=True, exist_ok=False)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores()[1])  # our own sampling work stays off the server's core
    metadata = collect_metadata(argv)
    metadata["plan"] = plan.as_json()
    metadata["cores_used"] = {"server": sorted(cores()[0]), "load_generator": sorted(cores()[1])}
    metadata["fd_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    metadata["sampling"] = {
        "interval_s": 0.5,
        "cpu": "schedstat nanoseconds, interpolated at the window's edges",
        "bytes": "ss -ti every 0.5 s (a connection's last half second before it closes is missed)",
    }
    (run_dir / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    runs = plan_runs(plan)
    estimates = [expected_seconds(r, *scenario_options(plan, r)) for r in runs]
    headroom = Headroom(limit=plan.generator_limit)
    shared: dict[Backend, Server] = {}
    try:
        for index, run in enumerate(runs):
            eta = sum(estimates[index:])
            if progress:
                progress(Progress("start", run, index, len(runs), eta))
            server = shared.get(run.backend)
            if (
                plan.quick
                and server is None
                and run.scenario not in KILLING
                and deployment(plan, run)["instances"] == 1
                and not plan.proxy
                and run.network is None
            ):
                # --quick keeps one server per backend (startup is much of a quick run); a
                # full bench gives every run a fresh server.
                server = shared[run.backend] = start_server(
                    run.backend,
                    run_dir / f"server-{run.backend.slug}.log",
                    plan.poll_interval,
                    host=plan.server_host,
                )
            try:
                directory = run_one(plan, run, run_dir, headroom, server)
                _, repeat, _ = summarize_repeat(directory)
                headroom.learn(run, repeat)
                line, valid = headline(run, repeat), repeat.validity.valid
            except Exception as exc:  # one broken run must not end the bench
                line, valid = f"failed: {record_failure(run_dir / run.name, run, exc)}", False
            if progress:
                progress(
                    Progress(
                        "done", run, index + 1, len(runs), sum(estimates[index + 1 :]), line, valid
                    )
                )
    finally:
        for server in shared.values():
            with contextlib.suppress(Exception):
                server.stop()
    summary = summarize_run(run_dir)
    return run_dir, summary
