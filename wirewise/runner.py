"""``wirewise bench``: run each scenario against each backend and write ``results/<run-id>/``.

For every scenario x backend: start the backend alone on core 0; start Locust headless on the
other core(s); sample the server, the kernel and the load generator while it runs; read the
kernel's TCP byte counters of the server's connections; then turn the raw files into one
result of ``summary.json`` (see :mod:`wirewise.results` and the README), with a warning
wherever a number needs one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from wirewise.metrics import Deliveries, Histogram, too_few_samples
from wirewise.results import collect_metadata, write_summary
from wirewise.sampler import ByteCounter, Sample, Sampler, fit_line

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS_DIR = ROOT / "scenarios"
SCENARIOS = ("chat", "broadcast", "idle", "saturate", "game", "faults")
QUICK_SCENARIOS = ("chat", "broadcast", "idle")
URL = re.compile(r"serving (\S+) on (\S+) \((\S+), pid (\d+)\)")
GENERATOR_SATURATED = 80.0
"""Load-generator CPU percent (one process, one core) above which its numbers are suspect."""
SERVER_SETTINGS = (
    "--set",
    "send_rate=1000000",
    "--set",
    "send_burst=1000000",
    "--set",
    "max_connections_per_user=1000",
)
"""The bench raises the per-user send limits (the benchmark is not an abuse test) and says so."""


@dataclass(frozen=True)
class Backend:
    """A transport as served by one server."""

    transport: str
    server: str

    @property
    def label(self) -> str:
        return (
            self.transport
            if self.server in ("uvicorn", "hypercorn", "asyncio")
            else f"{self.transport}@{self.server}"
        )


BACKENDS = (
    Backend("poll", "uvicorn"),
    Backend("longpoll", "uvicorn"),
    Backend("sse", "uvicorn"),
    Backend("h2", "hypercorn"),
    Backend("ws", "uvicorn"),
    Backend("ws", "websockets"),
    Backend("tcp", "asyncio"),
)


@dataclass(frozen=True)
class Plan:
    """What one ``wirewise bench`` invocation runs; every field lands in the results."""

    scenarios: tuple[str, ...]
    backends: tuple[Backend, ...]
    quick: bool = False
    users: int | None = None
    rate: float | None = None
    duration: float | None = None
    poll_interval: float = 1.0
    payload_bytes: int = 100
    room_size: int | None = None
    latency_bound_ms: float = 100.0
    processes: int = 1
    out: Path = ROOT / "results"
    extra: dict[str, Any] = field(default_factory=dict)


# -- per-scenario parameters -----------------------------------------------------------------

QUICK = {
    "chat": {"users": 20, "rate": 4.0, "measure": 2.0},
    "broadcast": {"users": 51, "rate": 20.0, "measure": 2.0},
    "idle": {"step_users": 100, "steps": 3, "step_seconds": 1.0, "ramp_rate": 150.0},
    "saturate": {"users": 20, "rate": 5.0, "steps": 4, "step_seconds": 2.0},
    "game": {"users": 8, "rate": 20.0, "measure": 3.0},
    "faults": {"users": 40, "rate": 2.0, "measure": 6.0},
}
FULL = {
    "chat": {"users": 200, "rate": 1.0, "measure": 20.0},
    "broadcast": {"users": 501, "rate": 20.0, "measure": 20.0},
    "idle": {"step_users": 3000, "steps": 5, "step_seconds": 5.0, "ramp_rate": 150.0},
    "saturate": {"users": 100, "rate": 1.0, "steps": 12, "step_seconds": 6.0},
    "game": {"users": 40, "rate": 20.0, "measure": 20.0},
    "faults": {"users": 1000, "rate": 0.2, "measure": 20.0},
}
FULL_IDLE_POLL = {"step_users": 300}
"""Short pollers at full scale: 1,500 at T = 1 s are ~1,500 requests/s, about half of what one
core answers here; 15,000 would saturate the server and say nothing about an idle poller."""
IDLE_CPU_SATURATED = 90.0
"""Server CPU percent at an idle plateau above which its CPU no longer follows connections."""
FAULT_SETTINGS = ("--secret", "wirewise-faults", "--set", "queue=50", "--set", "max_text=32000")
"""faults: tokens must outlive the killed process; a short queue lets one flood overflow it."""
NO_FAULTS = ("tcp",)
"""The raw-TCP floor is calibration, not a transport a client chooses: no faults run."""


def scenario_parameters(plan: Plan, scenario: str, backend: Backend) -> dict[str, Any]:
    """The locust options of one run, from the defaults, ``--quick`` and the plan's overrides."""
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
    params["payload_bytes"] = plan.payload_bytes
    params["poll_interval"] = plan.poll_interval
    if plan.room_size is not None:
        params["room_size"] = plan.room_size
    if scenario == "saturate":
        params["latency_bound_ms"] = plan.latency_bound_ms
    # Polling delivers up to one interval late: wait that long for messages in flight.
    params["drain"] = max(1.0, plan.poll_interval + 0.5) if backend.transport == "poll" else 1.0
    params["warmup"] = 0.5 if plan.quick else 2.0
    return params


def locust_argv(
    scenario: str, backend: Backend, url: str, params: dict[str, Any], out: Path, processes: int
) -> list[str]:
    users = params.get("users", 1)
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(SCENARIOS_DIR / f"{scenario}.py"),
        "--headless",
        "--host", url,
        "--transport", backend.transport,
        "--wirewise-out", str(out / "scenario.json"),
        "--csv", str(out / "locust"),
        "--loglevel", "WARNING",
        "--only-summary",
    ]  # fmt: skip
    if scenario == "idle":
        argv += ["-u", "1", "-r", "1"]  # the ticker; the scenario ramps the idlers itself
    else:
        argv += ["-u", str(users), "-r", str(max(users, 50))]
    if processes > 1:
        argv += ["--processes", str(processes)]
    for key, value in params.items():
        if key != "users":
            argv += [f"--{key.replace('_', '-')}", str(value)]
    cap = expected_seconds(scenario, params) * 3 + 60
    argv += ["-t", f"{int(cap)}s"]
    return argv


def expected_seconds(scenario: str, params: dict[str, Any]) -> float:
    """A run's expected length, for the progress bar and the safety cap."""
    if scenario == "idle":
        ramp = params["steps"] * params["step_users"] / params.get("ramp_rate", 150.0)
        return params["steps"] * (params["step_seconds"] + 2.0) + ramp + 2.0
    if scenario == "saturate":
        return params["steps"] * params["step_seconds"] + params["warmup"] + 3.0
    return params["warmup"] + params["measure"] + params["drain"] + 2.5


# -- processes -------------------------------------------------------------------------------


AVAILABLE_CORES = tuple(sorted(os.sched_getaffinity(0)))
"""Read once, before the runner pins itself to the load generator's cores."""


def cores() -> tuple[set[int], set[int]]:
    """(server cores, load-generator cores): the server alone on the first core."""
    available = list(AVAILABLE_CORES)
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


def _child_setup(cpus: set[int]) -> Callable[[], None]:
    def setup() -> None:
        os.sched_setaffinity(0, cpus)
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        os.setsid()  # our own process group: stopped as a whole, never orphaned

    return setup


@dataclass
class Server:
    backend: Backend
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path
    pump: threading.Thread

    def stop(self) -> int | None:
        status = stop_process(self.proc)
        self.pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return status


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int | None:
    """SIGTERM its process group, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def start_server(
    backend: Backend,
    log: Path,
    poll_interval: float,
    extra: tuple[str, ...] = (),
    port: int = 0,
) -> Server:
    server_cores, _ = cores()
    argv = [
        sys.executable,
        "-m",
        "wirewise",
        "serve",
        backend.transport,
        "--port",
        str(port),
        *SERVER_SETTINGS,
        *extra,
    ]
    if backend.server != "asyncio":
        argv += ["--server", backend.server]
    # A poller is present until presence_timeout passes without a poll.
    argv += ["--presence-timeout", str(max(30.0, poll_interval * 3))]
    handle = log.open("wb")
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=handle, preexec_fn=_child_setup(server_cores)
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        handle.write(line)
        match = URL.search(line.decode())
        if match:
            url = match.group(2)
            handle.flush()
            return Server(
                backend, proc, url, int(url.rsplit(":", 1)[1]), log, _forward(proc.stdout, handle)
            )
    stop_process(proc)
    proc.stdout.close()
    handle.close()
    raise RuntimeError(f"{backend.label} did not start: {line!r}; see {log}")


def _forward(stream: Any, handle: Any) -> threading.Thread:
    """Copy the server's remaining output to its log until it exits."""

    def pump() -> None:
        for chunk in stream:
            handle.write(chunk)
        handle.close()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def process_tree(pid: int) -> list[int]:
    try:
        parent = psutil.Process(pid)
        return [pid] + [child.pid for child in parent.children(recursive=True)]
    except psutil.Error:
        return []


# -- one run ---------------------------------------------------------------------------------


@dataclass
class RunFiles:
    """The raw files of one scenario x backend run (``DIR/<scenario>-<backend>/``)."""

    directory: Path

    @property
    def scenario_json(self) -> Path:
        return self.directory / "scenario.json"

    @property
    def samples(self) -> Path:
        return self.directory / "samples.jsonl"

    @property
    def traffic(self) -> Path:
        return self.directory / "bytes.jsonl"


def run_one(
    plan: Plan,
    scenario: str,
    backend: Backend,
    run_dir: Path,
    tick: Callable[[str], None],
    shared: Server | None = None,
) -> dict[str, Any]:
    """One scenario against one backend: its own server, or ``shared`` (``--quick``)."""
    files = RunFiles(run_dir / f"{scenario}-{backend.label.replace('@', '-')}")
    files.directory.mkdir(parents=True, exist_ok=True)
    params = scenario_parameters(plan, scenario, backend)
    if scenario == "faults":
        shared = None  # this run kills its server
    server = shared or start_server(
        backend,
        files.directory / "server.log",
        plan.poll_interval,
        FAULT_SETTINGS if scenario == "faults" else (),
    )
    faults = Faults(server, files.directory, plan.poll_interval) if scenario == "faults" else None
    _, loadgen_cores = cores()
    locust: subprocess.Popen[bytes] | None = None
    sampler = Sampler(
        server.proc.pid,
        lambda: process_tree(locust.pid) if locust else [],
        server.port,
        interval=0.5,
        uss=scenario == "idle",  # smaps_rollup: cheap enough at 2 Hz, and only idle needs it
    )
    counter = byte_counter(server.port)
    traffic: list[tuple[float, int, int]] = []
    try:
        sampler.start()
        if counter is not None:
            counter.reset()
        argv = locust_argv(scenario, backend, server.url, params, files.directory, plan.processes)
        with (files.directory / "locust.log").open("wb") as log:
            locust = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup(loadgen_cores),
            )
            deadline = time.monotonic() + expected_seconds(scenario, params) * 3 + 90
            try:
                while locust.poll() is None and time.monotonic() < deadline:
                    if (
                        counter is not None and scenario != "idle"
                    ):  # ss over 15,000 sockets costs a core
                        counter.poll()
                        traffic.append((time.time(), *counter.totals()))
                    if faults is not None:
                        faults.poll(sampler)
                    tick(f"{scenario} / {backend.label}")
                    time.sleep(0.25)
                timed_out = locust.poll() is None
            finally:  # also when the bench itself is interrupted: no Locust left behind
                stop_process(locust)
    finally:
        sampler.stop()
        if faults is not None:
            server = faults.server
            faults.stats_after = server_stats(server)
        server_status = server.stop() if shared is None else server.proc.poll()
    write_jsonl(files.samples, (asdict(s) for s in sampler.samples))
    write_jsonl(files.traffic, ({"t": t, "down": d, "up": u} for t, d, u in traffic))
    raw = json.loads(files.scenario_json.read_text()) if files.scenario_json.exists() else None
    if faults is not None and raw is not None:
        raw["injected"] = faults.report()
    result = summarize(
        scenario,
        backend,
        params,
        raw,
        sampler.samples,
        traffic,
        timed_out=timed_out,
        server_status=server_status,
        files=files,
    )
    if shared is not None:
        result["parameters"]["server_shared"] = (
            "one server process for every scenario of this backend (--quick)"
        )
    return result


def server_stats(server: Server) -> dict[str, Any] | None:
    """The server's ``/stats`` (its own count of slow-consumer disconnects), or None."""
    kwargs: dict[str, Any] = (
        {"http1": False, "http2": True} if server.backend.transport == "h2" else {}
    )
    try:
        with httpx.Client(**kwargs, verify=False, trust_env=False) as client:
            return client.get(f"{server.url}/stats", timeout=5).json()  # type: ignore[no-any-return]
    except (httpx.HTTPError, ValueError):
        return None


@dataclass
class Faults:
    """faults: SIGKILL the server when the scenario's plan says, and start it on its port again.

    The scenario writes ``faults-plan.json`` (its window and ``kill_at``) once spawning is
    done; we answer with ``faults-restart.json`` (``killed_at``, ``listening_at``, wall clock)
    so that it can time each client's way back. The sampler follows the new process.
    """

    server: Server
    directory: Path
    poll_interval: float
    restart: dict[str, float] | None = None
    stats_before: dict[str, Any] | None = None
    stats_after: dict[str, Any] | None = None
    killed_status: int | None = None
    error: str | None = None

    def poll(self, sampler: Sampler) -> None:
        if self.restart is not None or self.error is not None:
            return
        try:
            kill_at = json.loads((self.directory / "faults-plan.json").read_text())["kill_at"]
        except (OSError, ValueError, KeyError):
            return  # not written yet (or being written)
        if time.time() < kill_at:
            return
        self.stats_before = server_stats(self.server)
        old = self.server
        killed_at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.proc.pid, signal.SIGKILL)
        self.killed_status = old.stop()
        deadline = time.monotonic() + 15
        while True:
            try:
                self.server = start_server(
                    old.backend,
                    self.directory / "server-restarted.log",
                    self.poll_interval,
                    FAULT_SETTINGS,
                    port=old.port,
                )
                break
            except RuntimeError as exc:  # the port not free yet
                if time.monotonic() > deadline:
                    self.error = f"the server did not start again on port {old.port}: {exc}"
                    return
                time.sleep(0.1)
        listening_at = time.time()
        sampler.server_pid = self.server.proc.pid
        sampler._server = psutil.Process(self.server.proc.pid)  # the sampler follows it
        self.restart = {"killed_at": killed_at, "listening_at": listening_at}
        (self.directory / "faults-restart.json").write_text(json.dumps(self.restart))

    def report(self) -> dict[str, Any]:
        return {
            "restart": self.restart,
            "error": self.error,
            "stats_before_kill": self.stats_before,
            "stats_at_end": self.stats_after,
        }


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


# -- from raw files to a result ---------------------------------------------------------------


def between(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.t <= end]


def at(series: list[tuple[float, int, int]], when: float) -> tuple[int, int]:
    """Byte totals at time ``when`` (the last reading at or before it)."""
    down = up = 0
    for t, d, u in series:
        if t > when:
            break
        down, up = d, u
    return down, up


def measured_spans(scenario: str, raw: dict[str, Any]) -> list[tuple[float, float]]:
    """When the scenario was measuring: its window, its idle plateaus or its saturate steps."""
    if scenario in ("idle", "saturate"):
        return [(mark["start"], mark["end"]) for mark in raw.get("step_marks", [])]
    window = raw.get("window") or {}
    return (
        [(window["start"], window["end"])] if window.get("end", 0) > window.get("start", 0) else []
    )


def loadgen_cpu_max(samples: list[Sample], spans: list[tuple[float, float]]) -> float | None:
    """The busiest Locust process's CPU percent while measuring (spawning and logins excluded).

    A sample's percentage covers the interval before it, so a span's first sample is skipped.
    """
    values = []
    for start, end in spans:
        inside = between(samples, start, end + 0.5)[1:]
        values += [
            s.loadgen_cpu_percent_max_single
            for s in inside
            if s.loadgen_cpu_percent_max_single is not None
        ]
    return round(max(values), 1) if values else None


def wire_cost(
    traffic: list[tuple[float, int, int]], start: float, stop: float, delivered: int, sent: int
) -> dict[str, float | None]:
    """TCP payload bytes per message: down per delivery, up per message sent, total per delivery."""
    down0, up0 = at(traffic, start)
    down1, up1 = at(traffic, stop)
    down, up = down1 - down0, up1 - up0
    return {
        "down": round(down / delivered, 1) if delivered else None,
        "up": round(up / sent, 1) if sent else None,
        "total": round((down + up) / delivered, 1) if delivered else None,
    }


def cpu_seconds(samples: list[Sample], start: float, end: float) -> float | None:
    inside = between(samples, start, end)
    if len(inside) < 2:
        return None
    return inside[-1].server_cpu_s - inside[0].server_cpu_s


def memory_per_connection(
    raw: dict[str, Any], samples: list[Sample]
) -> tuple[dict[str, Any], list[str]]:
    """Fit memory against connections over the idle plateaus (their second halves)."""
    warnings: list[str] = []
    points = []
    for mark in raw.get("step_marks", []):
        middle = (mark["start"] + mark["end"]) / 2
        inside = [
            s for s in between(samples, middle, mark["end"]) if s.server_connections is not None
        ]
        if not inside:
            continue

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        kernel = [s.kernel_tcp_mem_bytes + (s.kernel_slab_bytes or 0) for s in inside]
        whole = between(samples, mark["start"], mark["end"] + 0.5)  # CPU needs two readings
        seconds = whole[-1].t - whole[0].t if whole else 0.0
        cpu = (
            (whole[-1].server_cpu_s - whole[0].server_cpu_s) / seconds * 100
            if seconds > 0
            else None
        )
        points.append(
            {
                "connections": mean([s.server_connections for s in inside]),  # type: ignore[misc]
                "clients": mark["connected"],
                "cpu_percent": round(cpu, 2) if cpu is not None else None,
                "rss_bytes": mean([s.server_rss for s in inside]),
                "uss_bytes": mean(
                    [s.server_uss for s in inside if s.server_uss is not None] or [0]
                ),
                "kernel_bytes": mean(kernel),
            }
        )
    result: dict[str, Any] = {
        "rss_bytes": None,
        "uss_bytes": None,
        "kernel_bytes": None,
        "r2": None,
        "points": points,
    }
    xs = [p["connections"] for p in points]
    if len({round(x) for x in xs}) < 2:
        warnings.append("idle: fewer than two plateaus with distinct connection counts; no fit")
        return result, warnings
    rss_slope, rss_base, r2 = fit_line(xs, [p["rss_bytes"] for p in points])
    uss_slope, _, _ = fit_line(xs, [p["uss_bytes"] for p in points])
    kernel_slope, _, _ = fit_line(xs, [p["kernel_bytes"] for p in points])
    result.update(
        rss_bytes=round(rss_slope),
        uss_bytes=round(uss_slope),
        # Both ends of every loopback connection live in this one kernel: half is the server's.
        kernel_bytes=round(kernel_slope / 2),
        r2=round(r2, 4),
        base_rss_bytes=round(rss_base),
    )
    cpu_points = [
        (p["connections"], p["cpu_percent"]) for p in points if p["cpu_percent"] is not None
    ]
    busy = [(x, y) for x, y in cpu_points if y >= IDLE_CPU_SATURATED]
    if busy:
        # A saturated server answers polls late, not more often: its CPU stops growing with
        # connections, and a slope over those plateaus would make them look free.
        warnings.append(
            f"idle: the server's CPU reached {max(y for _, y in busy):.0f} % at {min(x for x, _ in busy):,.0f}"
            " connections; the idle CPU figure uses only the plateaus below"
            f" {IDLE_CPU_SATURATED:.0f} %"
        )
        cpu_points = [(x, y) for x, y in cpu_points if y < IDLE_CPU_SATURATED]
    if len({round(x) for x, _ in cpu_points}) >= 2:
        # What idle connections cost in CPU: polls, heartbeats, pings (decide scales it).
        slope, _, _ = fit_line([x for x, _ in cpu_points], [y for _, y in cpu_points])
        result["idle_cpu_percent_per_1k_connections"] = round(max(slope, 0.0) * 1000, 3)
    if r2 < 0.9:
        warnings.append(
            f"idle: memory against connections fits poorly (r2 {r2:.2f}); treat bytes per connection as rough"
        )
    return result, warnings


def empty_result(scenario: str, backend: Backend, params: dict[str, Any]) -> dict[str, Any]:
    """A result with every field present and nothing measured yet (None, not zero)."""
    empty_latency = Histogram().summary_ms()
    parameters: dict[str, Any] = {}
    if params:
        parameters = {
            "users": params.get("users", params.get("step_users", 0) * params.get("steps", 0)),
            "rooms": None,
            "rate_per_user": params.get("rate"),
            "payload_bytes": params["payload_bytes"],
            "duration_s": params.get(
                "measure", params.get("step_seconds", 0) * params.get("steps", 0)
            ),
            "poll_interval_s": params["poll_interval"] if backend.transport == "poll" else None,
            "server_settings": dict(pair.split("=") for pair in SERVER_SETTINGS[1::2]),
            **{
                k: v
                for k, v in params.items()
                if k not in ("users", "rate", "payload_bytes", "measure", "poll_interval")
            },
        }
    return {
        "scenario": scenario,
        "transport": backend.transport,
        "server": backend.server,
        "parameters": parameters,
        "latency_ms": empty_latency,
        "send_latency_ms": empty_latency,
        "deliveries": Deliveries().as_dict(),
        "throughput_msgs_per_s": None,
        "server_cpu_ms_per_1k_msgs": None,
        "memory_per_connection": {
            "rss_bytes": None,
            "uss_bytes": None,
            "kernel_bytes": None,
            "r2": None,
            "points": [],
        },
        "bytes_per_message": {"down": None, "up": None, "total": None},
        "load_generator": {"cpu_percent_max": None, "saturated": None},
        "warnings": [],
    }


def summarize(
    scenario: str,
    backend: Backend,
    params: dict[str, Any],
    raw: dict[str, Any] | None,
    samples: list[Sample],
    traffic: list[tuple[float, int, int]],
    *,
    timed_out: bool,
    server_status: int | None,
    files: RunFiles,
) -> dict[str, Any]:
    result = empty_result(scenario, backend, params)
    result["files"] = files.directory.name
    warnings: list[str] = result["warnings"]
    if timed_out:
        warnings.append("the run did not finish in time and was stopped; figures are partial")
    if server_status not in (0, None):
        warnings.append(f"the server exited with status {server_status} (see server.log)")
    if raw is None:
        warnings.append("Locust wrote no results (see locust.log)")
        return result
    result["parameters"]["rooms"] = raw.get("rooms")
    if raw.get("payload_bytes"):
        result["parameters"]["payload_bytes"] = raw["payload_bytes"]  # what was really sent
    cpu_max = loadgen_cpu_max(samples, measured_spans(scenario, raw))
    saturated = cpu_max is not None and cpu_max > GENERATOR_SATURATED
    result["load_generator"] = {"cpu_percent_max": cpu_max, "saturated": saturated}
    if saturated:
        warnings.append(
            f"load generator saturated: a Locust process reached {cpu_max:.0f}% CPU while measuring;"
            " latency includes its own queueing"
        )
    if raw.get("processes", 1) > 1:
        result["parameters"]["locust_processes"] = raw["processes"]
    if scenario == "idle":
        memory, more = memory_per_connection(raw, samples)
        result["memory_per_connection"] = memory
        warnings.extend(more)
        return result
    if scenario == "saturate":
        return summarize_saturate(result, raw, samples, traffic)
    if scenario == "faults":
        return summarize_faults(result, raw, samples)
    latency = Histogram.decode(raw["latency"])
    result["latency_ms"] = latency.summary_ms()
    result["send_latency_ms"] = Histogram.decode(raw["send_latency"]).summary_ms()
    result["deliveries"] = raw["deliveries"]
    result["messages_sent"] = raw["sent"]
    start, end = raw["window"]["start"], raw["window"]["end"]
    delivered = raw["deliveries"]["delivered"]
    if end > start and delivered:
        result["throughput_msgs_per_s"] = round(delivered / (end - start), 1)
        # Senders send only inside the window and its messages arrive by the end of the drain,
        # so the traffic and CPU of [start, end + drain] are those deliveries' (plus the
        # overhead that is part of each transport's cost: empty polls, heartbeats, pings).
        stop = end + params["drain"] - 0.1
        cpu = cpu_seconds(samples, start, stop)
        if cpu is not None:
            result["server_cpu_ms_per_1k_msgs"] = round(cpu * 1e6 / delivered, 3)
        if traffic:
            result["bytes_per_message"] = wire_cost(traffic, start, stop, delivered, raw["sent"])
        else:
            warnings.append("bytes per message not measured: `ss` (iproute2) is not installed")
    warnings.extend(accounting_warnings(raw, latency))
    return result


def percentiles_ms(values: list[float]) -> dict[str, float | int | None]:
    """p50/p99/max of a short list (nearest rank), and the count."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p99": rank(0.99), "max": ordered[-1], "count": len(ordered)}


def summarize_faults(
    result: dict[str, Any], raw: dict[str, Any], samples: list[Sample]
) -> dict[str, Any]:
    """Reconnects after the kill, deliveries checked one by one, slow consumers, RSS peak.

    Server CPU and bytes per message stay null: the kill splits them over two processes.
    """
    warnings = result["warnings"]
    ledger = raw.get("faults") or {}
    injected = raw.get("injected") or {}
    restart = injected.get("restart")
    result["latency_ms"] = Histogram.decode(raw["latency"]).summary_ms()
    result["send_latency_ms"] = Histogram.decode(raw["send_latency"]).summary_ms()
    result["messages_sent"] = raw["sent"]
    lost_signalled = ledger.get("lost_signalled", 0)
    lost_silently = ledger.get("lost_silently", 0)
    result["deliveries"] = {
        "expected": ledger.get("expected", 0),
        "delivered": ledger.get("delivered", 0),
        "lost": lost_signalled + lost_silently,
        "duplicated": ledger.get("duplicated", 0),
    }
    window = raw["window"]
    if window["end"] > window["start"] and ledger.get("delivered"):
        result["throughput_msgs_per_s"] = round(
            ledger["delivered"] / (window["end"] - window["start"]), 1
        )
    reconnects = ledger.get("reconnect_ms", [])
    receivers = ledger.get("receivers", 0)

    def server_count(stats: dict[str, Any] | None) -> int:
        return int((stats or {}).get("slow_consumer_disconnects", 0))

    rss = [s.server_rss for s in samples if s.server_rss is not None]
    result["faults"] = {
        "killed": restart is not None,
        "outage_s": round(restart["listening_at"] - restart["killed_at"], 3) if restart else None,
        "clients": receivers,
        "reconnect_ms": percentiles_ms(reconnects),
        "all_back": bool(restart) and 0 < receivers == len(reconnects),
        "lost_with_resume": lost_signalled + lost_silently,
        "lost_signalled": lost_signalled,
        "lost_silently": lost_silently,
        "lost_silently_stale_cursor": ledger.get("lost_silently_stale_cursor", 0),
        "lost_without_resume": ledger.get("delivered_by_resume", 0)
        + lost_signalled
        + lost_silently,
        "delivered_by_resume": ledger.get("delivered_by_resume", 0),
        "gaps_signalled": ledger.get("gaps", 0),
        "slow_consumer_disconnects": server_count(injected.get("stats_before_kill"))
        + server_count(injected.get("stats_at_end")),
        "slow_consumer_errors_seen": ledger.get("slow_consumer_errors", 0),
        "slow_reader_reconnects": ledger.get("slow_reader_reconnects"),
        "server_rss_peak_bytes": max(rss) if rss else None,
    }
    faults = result["faults"]
    if injected.get("error"):
        warnings.append(injected["error"])
    if not restart:
        warnings.append("the server was not killed: no reconnect was measured")
    elif not faults["all_back"]:
        warnings.append(f"only {len(reconnects)} of {receivers} clients came back after the kill")
    if lost_silently:
        stale = ledger.get("lost_silently_stale_cursor", 0)
        warnings.append(
            f"{lost_silently} deliveries were lost without a gap (silent loss); {stale} of them"
            " were stored by the new process under ids a cursor from the old one had passed"
        )
    if result["deliveries"]["duplicated"]:
        warnings.append(
            f"{result['deliveries']['duplicated']} deliveries arrived twice (a send retried"
            " across the kill was stored by both processes)"
        )
    if result["transport"] in ("poll", "longpoll"):
        faults["slow_consumer_disconnects"] = None  # no live queue: a poll takes what it asks
    elif not faults["slow_consumer_disconnects"]:
        warnings.append(
            "the stalled reader was not cut off as a slow consumer"
            + (
                " (the HTTP/2 client acknowledges data as it arrives: one stalled stream of a"
                " connection never holds back the server)"
                if result["transport"] == "h2"
                else ""
            )
        )
    if raw.get("send_failed"):
        warnings.append(f"{raw['send_failed']} sends failed")
    return result


def accounting_warnings(raw: dict[str, Any], latency: Histogram) -> list[str]:
    warnings = []
    deliveries = raw["deliveries"]
    if deliveries["lost"]:
        warnings.append(
            f"{deliveries['lost']} of {deliveries['expected']} expected deliveries were lost"
        )
    extra = deliveries["delivered"] - deliveries["expected"]
    if extra > 0:
        warnings.append(
            f"{extra} more deliveries than expected: a send the client gave up on (timeout) was"
            " still stored and delivered by the server"
        )
    if deliveries["duplicated"]:
        warnings.append(
            f"{deliveries['duplicated']} duplicate deliveries were dropped by the clients"
        )
    if raw.get("send_failed"):
        warnings.append(f"{raw['send_failed']} sends failed")
    if raw.get("clamped"):
        warnings.append(f"{raw['clamped']} latencies exceeded 60 s and were clamped")
    for code, count in (raw.get("errors") or {}).items():
        warnings.append(f"{count} '{code}' errors reached the clients")
    weak = too_few_samples(latency.count)
    if weak and latency.count:
        warnings.append(f"only {latency.count} samples: too few for {', '.join(weak)}")
    if not latency.count:
        warnings.append("no delivery was measured")
    return warnings


def summarize_saturate(
    result: dict[str, Any],
    raw: dict[str, Any],
    samples: list[Sample],
    traffic: list[tuple[float, int, int]],
) -> dict[str, Any]:
    """Per-step figures; the result's own are those of the highest step that held."""
    warnings = result["warnings"]
    bound = raw.get("latency_bound_ms", 100.0)
    per_room = raw.get("receivers", 0) / max(raw.get("rooms") or 1, 1)  # rooms are equal here
    steps: list[dict[str, Any]] = []
    total = Deliveries()
    for mark in raw.get("step_marks", []):
        data = raw["steps"].get(str(mark["step"]))
        if data is not None:
            step, deliveries = saturate_step(mark, data, per_room, bound, samples)
            steps.append(step)
            total.add(deliveries)
    best = next((step for step in reversed(steps) if step["held"]), None)
    result["steps"] = steps
    result["stopped_by"] = raw.get("stopped_by")
    result["deliveries"] = total.as_dict()  # the evaluated steps; the unfinished last is not
    result["send_latency_ms"] = Histogram.decode(raw["send_latency"]).summary_ms()
    if best is None:
        warnings.append(f"no step held p99 <= {bound:g} ms with every message delivered")
        return result
    result["latency_ms"] = best["latency_ms"]
    result["throughput_msgs_per_s"] = best["deliveries_per_s"]
    result["server_cpu_ms_per_1k_msgs"] = best["server_cpu_ms_per_1k_msgs"]
    result["highest_rate_held"] = {
        "rate_per_user": best["rate_per_user"],
        "deliveries_per_s": best["deliveries_per_s"],
        "latency_bound_ms": bound,
    }
    mark = next(m for m in raw["step_marks"] if m["step"] == best["step"])
    data = raw["steps"][str(best["step"])]
    result["bytes_per_message"] = wire_cost(
        traffic, mark["start"], mark["end"], data["delivered"], data["sent"]
    )
    stopped = result["stopped_by"] or ""
    if stopped.startswith("max_steps"):
        warnings.append(
            "the bound held at every rate tried: the throughput is a lower bound, not the limit"
        )
    elif stopped:
        warnings.append(f"the ramp stopped after step {steps[-1]['step']}: {stopped}")
    return result


def saturate_step(
    mark: dict[str, Any], data: dict[str, Any], per_room: float, bound: float, samples: list[Sample]
) -> tuple[dict[str, Any], Deliveries]:
    """One step of the ramp: its rate, latency, losses, and whether it held the bound."""
    latency = Histogram.decode(data["latency"])
    summary = latency.summary_ms()
    seconds = mark["end"] - mark["start"]
    deliveries = Deliveries.from_counts(round(data["sent"] * per_room), data["delivered"], 0)
    held = (
        latency.count > 0
        and summary["p99"] is not None
        and summary["p99"] <= bound
        and deliveries.lost == 0
    )
    cpu = cpu_seconds(samples, mark["start"], mark["end"])
    step = {
        "step": mark["step"],
        "rate_per_user": mark["rate_per_user"],
        "sent_per_s": round(data["sent"] / seconds, 1),
        "deliveries_per_s": round(data["delivered"] / seconds, 1),
        "latency_ms": summary,
        "lag_p99_ms": Histogram.decode(data["lag"]).summary_ms()["p99"],
        "deliveries": deliveries.as_dict(),
        "server_cpu_ms_per_1k_msgs": round(cpu * 1e6 / data["delivered"], 3)
        if cpu and data["delivered"]
        else None,
        "held": held,
    }
    return step, deliveries


# -- the whole bench -------------------------------------------------------------------------


def run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    return now.strftime("%Y%m%d-%H%M%S")


def plan_runs(plan: Plan) -> list[tuple[str, Backend]]:
    return [
        (scenario, backend)
        for scenario in plan.scenarios
        for backend in plan.backends
        if not (scenario == "faults" and backend.transport in NO_FAULTS)
    ]


def run_bench(
    plan: Plan, argv: list[str], progress: Callable[[str, float], None] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Run every scenario x backend; returns the run directory and the summary written."""
    run_dir = plan.out / run_id()
    run_dir.mkdir(parents=True, exist_ok=False)
    os.sched_setaffinity(0, cores()[1])  # our own sampling work stays off the server's core
    metadata = collect_metadata(argv)
    metadata["plan"] = {
        **asdict(replace(plan, out=Path(plan.out))),
        "out": str(plan.out),
        "backends": [b.label for b in plan.backends],
    }
    metadata["cores_used"] = {"server": sorted(cores()[0]), "load_generator": sorted(cores()[1])}
    metadata["fd_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    results: list[dict[str, Any]] = []
    runs = set(plan_runs(plan))
    done = 0
    for backend in plan.backends:
        # --quick keeps one server per backend for its scenarios (startup is most of a quick
        # run); a full bench gives every run a fresh server.
        shared = (
            start_server(
                backend,
                run_dir / f"server-{backend.label.replace('@', '-')}.log",
                plan.poll_interval,
            )
            if plan.quick
            else None
        )
        try:
            for scenario in plan.scenarios:
                if (scenario, backend) not in runs:
                    continue
                label = f"{scenario} / {backend.label}"
                if progress:
                    progress(label, done)
                try:
                    results.append(
                        run_one(plan, scenario, backend, run_dir, lambda text: None, shared)
                    )
                except RuntimeError as exc:
                    results.append(failed_result(scenario, backend, str(exc)))
                done += 1
                if progress:
                    progress(label, done)
        finally:
            if shared is not None:
                shared.stop()
    order = {name: i for i, name in enumerate(plan.scenarios)}
    results.sort(key=lambda r: order[r["scenario"]])  # stable: backends keep their order
    summary = write_summary(run_dir / "summary.json", metadata, results)
    return run_dir, summary


def failed_result(scenario: str, backend: Backend, why: str) -> dict[str, Any]:
    result = empty_result(scenario, backend, {})
    result["warnings"].append(f"the run failed: {why}")
    return result
