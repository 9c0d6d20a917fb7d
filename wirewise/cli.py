"""The ``wirewise`` command line. Each subcommand is a small function; ``main(argv)`` is testable."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from wirewise.results import Summary
    from wirewise.servers.config import Settings

T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Does this application really need WebSockets? Measure it.",
)


@app.callback()
def _root() -> None:
    """Does this application really need WebSockets? Measure it."""


def parse_settings(pairs: list[str], **given: object) -> Settings:
    """``Settings`` from ``--set name=value`` pairs plus explicit options (None = default)."""
    from wirewise.servers.config import Settings

    known = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known or name in ("allow_origins", "secret"):
            raise typer.BadParameter(
                f"--set takes name=value with name one of: {', '.join(sorted(set(known) - {'allow_origins', 'secret'}))}"
            )
        default = getattr(Settings(), name)
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("true", "false", "1", "0", "on", "off"):
                    raise ValueError(raw)
                values[name] = raw.lower() in ("true", "1", "on")
            else:
                values[name] = type(default)(raw)
        except ValueError:
            raise typer.BadParameter(
                f"{name} takes a {type(default).__name__}, not {raw!r}"
            ) from None
    try:
        return Settings(**values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def serve(
    transport: Annotated[str, typer.Argument(help="poll | longpoll | sse | h2 | ws | tcp")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port (0 picks a free one; the line printed says which).")
    ] = 8000,
    server: Annotated[
        str | None, typer.Option(help="uvicorn | hypercorn | websockets (default: by transport)")
    ] = None,
    tls: Annotated[
        bool, typer.Option(help="h2 over TLS with a generated self-signed certificate.")
    ] = False,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) for h2.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS key (PEM) for h2.")] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            help="Token signing key (default: random per process).", envvar="WIREWISE_SECRET"
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None, typer.Option(help="Extra browser origin to allow (repeatable).")
    ] = None,
    presence_timeout: Annotated[
        float | None, typer.Option(help="Seconds before a silent poller leaves.")
    ] = None,
    heartbeat: Annotated[float | None, typer.Option(help="Seconds between SSE heartbeats.")] = None,
    loop: Annotated[str, typer.Option(help="auto | uvloop | asyncio")] = "auto",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any limit as name=value (see servers/config.py)."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            help="memory (rooms in this process; the default for one), redis (a Redis of our"
            " own; the default for --instances) or redis://HOST:PORT."
        ),
    ] = None,
    instances: Annotated[
        int, typer.Option(help="Server processes sharing rooms through Redis, behind a balancer.")
    ] = 1,
    balancer: Annotated[
        str, typer.Option(help="With --instances: haproxy | nginx | reuseport.")
    ] = "haproxy",
    reuse_port: Annotated[
        bool, typer.Option(help="Bind with SO_REUSEPORT (several processes share the port).")
    ] = False,
    sticky: Annotated[
        bool,
        typer.Option(
            help="With --instances: the balancer keeps each session (its token) on one instance."
        ),
    ] = False,
) -> None:
    """Serve the chat over one transport until Ctrl-C / SIGTERM."""
    if sticky and instances < 2:
        raise typer.BadParameter("--sticky chooses among --instances (2 or more)")
    if instances > 1:
        if tls or certfile:
            raise typer.BadParameter("--instances serves cleartext (put TLS on the balancer)")
        shared = [*(f"--set={item}" for item in set_ or []), f"--loop={loop}"]
        shared += [f"--allow-origin={origin}" for origin in allow_origin or []]
        if presence_timeout is not None:
            shared.append(f"--presence-timeout={presence_timeout}")
        if heartbeat is not None:
            shared.append(f"--heartbeat={heartbeat}")
        _serve_cluster(
            transport,
            host,
            port,
            server,
            broker or "redis",
            instances,
            balancer,
            tuple(shared),
            sticky,
        )
        return
    broker = broker or "memory"
    from wirewise.servers.serve import ServerPlan, default_server
    from wirewise.servers.serve import serve as run

    settings = parse_settings(
        set_ or [],
        secret=secret,
        allow_origins=tuple(allow_origin) if allow_origin else None,
        presence_timeout=presence_timeout,
        heartbeat=heartbeat,
    )
    plan = ServerPlan(
        transport=transport,
        server=server or default_server(transport),
        host=host,
        port=port,
        tls=tls,
        certfile=certfile,
        keyfile=keyfile,
        loop=loop,
        broker=broker,
        reuse_port=reuse_port,
    )
    redis = None
    try:
        if broker == "redis":  # a Redis of our own, for as long as we serve
            import tempfile

            from wirewise.cluster import start_redis

            redis = start_redis(Path(tempfile.mkdtemp(prefix="wirewise-")))
            print(redis.line(), file=sys.stderr, flush=True)
            plan = dataclasses.replace(plan, broker=redis.address)
        run(plan, settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except OSError as exc:
        typer.echo(f"wirewise: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except RuntimeError as exc:  # the broker did not answer
        typer.echo(f"wirewise: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if redis is not None:
            redis.stop()
            shutil.rmtree(redis.log.parent, ignore_errors=True)


def _serve_cluster(
    transport: str,
    host: str,
    port: int,
    server: str | None,
    broker: str,
    instances: int,
    balancer: str,
    serve_args: tuple[str, ...],
    sticky: bool = False,
) -> None:
    """Redis, the instances and the balancer; the first line says where clients connect."""
    from wirewise.cluster import ClusterPlan, start_cluster
    from wirewise.registry import ready_line

    if broker == "memory":
        raise typer.BadParameter(
            "instances share rooms through Redis: --broker redis (ours) or redis://HOST:PORT"
        )
    plan = ClusterPlan(
        transport=transport,
        instances=instances,
        balancer=balancer,
        broker=None if broker == "redis" else broker,
        server=server,
        host=host,
        port=port,
        serve_args=serve_args,
        sticky=sticky,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster = start_cluster(plan)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except RuntimeError as exc:
        typer.echo(f"wirewise: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        print(ready_line(transport, cluster.url, balancer, os.getpid()), flush=True)
        for part in cluster.parts:
            print(part.line(), flush=True)
        while not stop.wait(0.5):
            dead = [part for part in cluster.parts if part.proc.poll() is not None]
            if cluster.balancer in dead or cluster.redis in dead:
                typer.echo(f"wirewise: {dead[0].name} exited; stopping", err=True)
                break
    finally:
        cluster.stop()


@app.command()
def bench(
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            help="chat | broadcast | idle | saturate | game | faults | failover | rolling | fallback (repeatable; default: the first six, or chat/broadcast/idle with --quick)",
        ),
    ] = None,
    transport: Annotated[
        list[str] | None,
        typer.Option(
            "--transport",
            help="poll | longpoll | sse | h2 | ws | tcp (repeatable; default: all; ws means both ws servers)",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            help="Every transport over chat, broadcast and idle at small scale (minutes)."
        ),
    ] = False,
    repeat: Annotated[
        int, typer.Option(min=1, help="Runs of each scenario x transport, interleaved (ABC ABC).")
    ] = 1,
    users: Annotated[
        int | None, typer.Option(min=1, help="Users per run (idle: connections at the top step).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Messages per second per sender (saturate: the first step's)."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Seconds measured per run (idle/saturate: over all steps).")
    ] = None,
    poll_interval: Annotated[float, typer.Option(help="Short polling interval, seconds.")] = 1.0,
    payload_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Characters of message text (default: 100; game 50)."),
    ] = None,
    room_size: Annotated[
        int | None, typer.Option(min=1, help="Users per room (default: by scenario).")
    ] = None,
    latency_bound_ms: Annotated[
        float, typer.Option(help="saturate: the p99 bound that ends the ramp.")
    ] = 100.0,
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Locust processes here (worker processes; their ledgers merge at the master;"
            " 0 only with --remote-workers).",
        ),
    ] = 1,
    remote_workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Locust workers started on other hosts (locust -f scenarios/S.py --worker"
            " --master-host THIS_HOST); the master waits for them.",
        ),
    ] = 0,
    master_bind: Annotated[
        str, typer.Option(help="With --remote-workers: where the master listens for workers.")
    ] = "0.0.0.0",
    master_port: Annotated[int, typer.Option(help="With --remote-workers: its port.")] = 5557,
    worker_wait: Annotated[
        float, typer.Option(help="With --remote-workers: seconds to wait for every worker.")
    ] = 300.0,
    server_host: Annotated[
        str,
        typer.Option(help="Where the server under test listens (one the workers can reach)."),
    ] = "127.0.0.1",
    instances: Annotated[
        int,
        typer.Option(
            min=1, help="Server processes per backend, sharing rooms through Redis (failover: 3)."
        ),
    ] = 1,
    balancer: Annotated[
        str, typer.Option(help="With --instances: haproxy | nginx | reuseport.")
    ] = "haproxy",
    sticky: Annotated[
        str,
        typer.Option(
            help="With --instances: off (round robin) | on (each session on one instance,"
            " hashing its token) | both (every run twice, compared)."
        ),
    ] = "off",
    baseline: Annotated[
        bool,
        typer.Option(
            help="With --instances: each run also on one process with the in-memory broker, in"
            " the same run (the extra hop, measured)."
        ),
    ] = False,
    proxy: Annotated[
        str | None,
        typer.Option(
            help="nginx between Locust and one server: nginx-default | nginx-buffered |"
            " nginx-tuned | no-upgrade (h2 and the tcp floor are left out)."
        ),
    ] = None,
    rtt: Annotated[
        list[float] | None,
        typer.Option(
            help="Round-trip time added between Locust and the server, ms (repeatable: one run"
            " each; through a relay, which every --rtt/--loss run passes, 0 included)."
        ),
    ] = None,
    jitter: Annotated[
        float, typer.Option(help="With --rtt: each direction's delay varies by up to this, ms.")
    ] = 0.0,
    loss: Annotated[
        list[float] | None,
        typer.Option(
            help="Packets dropped each way, percent (repeatable; needs root: a network"
            " namespace and iptables)."
        ),
    ] = None,
    bandwidth: Annotated[
        float | None,
        typer.Option(help="Link rate each way, kbit/s (needs root: tbf in a namespace)."),
    ] = None,
    network: Annotated[
        list[str] | None,
        typer.Option(
            help="A named profile instead: lan | wifi | 4g | 3g | lossy (repeatable; sources"
            " in the README)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("results"),
) -> None:
    """Measure: every scenario x transport, each backend alone on one core, Locust on the other."""
    from wirewise.console import print_summary

    plan = make_plan(
        scenario,
        transport,
        quick,
        users,
        rate,
        duration,
        poll_interval,
        payload_bytes,
        room_size,
        latency_bound_ms,
        processes,
        out,
        repeat,
        instances,
        balancer,
        Scale(
            sticky,
            baseline,
            remote_workers,
            master_bind,
            master_port,
            worker_wait,
            server_host,
            proxy,
            network_plan(network, rtt, loss, jitter, bandwidth),
        ),
    )
    console = wide_console()
    if plan.remote_workers:
        console.print(
            f"waiting for {plan.remote_workers} remote Locust worker(s) at each run (up to"
            f" {plan.worker_wait:.0f} s); on each worker host, with wirewise installed:\n"
            f"  while :; do locust --worker -f - --master-host THIS_HOST"
            f" --master-port {plan.master_port}; sleep 1; done"
        )
    started = time.monotonic()
    run_dir, summary = measure(plan, console)
    print_summary(summary, console, title=f"wirewise bench: {run_dir.name}")
    console.print(f"wrote {run_dir / 'summary.json'} ({time.monotonic() - started:.0f} s)")


@dataclasses.dataclass(frozen=True)
class Scale:
    """The bench's options beyond one server and one load generator."""

    sticky: str = "off"
    baseline: bool = False
    remote_workers: int = 0
    master_bind: str = "0.0.0.0"
    master_port: int = 5557
    worker_wait: float = 300.0
    server_host: str = "127.0.0.1"
    proxy: str | None = None
    networks: tuple[Any, ...] = ()
    """wirewise.plan.Network, each scenario x backend run under each."""

    def check_networks(self, instances: int, scenarios: tuple[str, ...]) -> None:
        from wirewise.netpath import NeedsRoot, missing_programs, require_root
        from wirewise.plan import NETWORKED

        if not self.networks:
            return
        if self.proxy is not None or instances > 1 or self.remote_workers:
            raise typer.BadParameter(
                "network conditions stand between this machine's Locust and one server: not"
                " with --proxy, --instances or --remote-workers"
            )
        if other := [s for s in scenarios if s not in NETWORKED]:
            raise typer.BadParameter(
                f"network conditions apply to {', '.join(NETWORKED)}, not {', '.join(other)}"
            )
        for net in self.networks:
            try:
                require_root(net.conditions)
            except NeedsRoot as exc:
                raise typer.BadParameter(str(exc)) from None
            if net.conditions.needs_namespace and (missing := missing_programs()):
                raise typer.BadParameter(
                    f"loss and bandwidth need {', '.join(missing)} (Debian: apt install iproute2"
                    " iptables procps)"
                )

    def check(self, instances: int, balancer: str, processes: int) -> None:
        if self.proxy is not None:
            from wirewise.proxies import check_profile

            if instances > 1:
                raise typer.BadParameter("--proxy stands in front of one server, not --instances")
            try:
                check_profile(self.proxy, "sse")
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None

        if self.sticky not in ("off", "on", "both"):
            raise typer.BadParameter(f"--sticky takes off | on | both, not {self.sticky!r}")
        if instances < 2 and self.sticky != "off":
            raise typer.BadParameter("--sticky chooses among --instances 2 or more")
        if instances < 2 and self.baseline and self.proxy is None:
            raise typer.BadParameter(
                "--baseline compares --instances 2 or more, or --proxy, with one server reached"
                " directly"
            )
        if self.sticky != "off" and balancer == "reuseport":
            raise typer.BadParameter(
                "--sticky needs haproxy or nginx: SO_REUSEPORT spreads by the kernel's hash"
            )
        if processes < 1 and not self.remote_workers:
            raise typer.BadParameter("--processes 0 needs --remote-workers (someone must load)")
        if not (self.worker_wait > 0 and math.isfinite(self.worker_wait)):
            raise typer.BadParameter(f"--worker-wait must be positive, not {self.worker_wait}")


def network_plan(
    profiles: list[str] | None,
    rtts: list[float] | None,
    losses: list[float] | None,
    jitter: float,
    bandwidth: float | None,
) -> tuple[Any, ...]:
    """The bench's network conditions from its options (a clear error for a bad one)."""
    from wirewise.plan import networks

    try:
        return networks(profiles, rtts, losses, jitter, bandwidth)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def make_plan(
    scenario: list[str] | None,
    transport: list[str] | None,
    quick: bool,
    users: int | None,
    rate: float | None,
    duration: float | None,
    poll_interval: float,
    payload_bytes: int | None,
    room_size: int | None,
    latency_bound_ms: float,
    processes: int,
    out: Path,
    repeat: int = 1,
    instances: int = 1,
    balancer: str = "haproxy",
    scale: Scale | None = None,
) -> Any:
    from wirewise.cluster import BALANCERS
    from wirewise.plan import DEFAULT_SCENARIOS, QUICK_SCENARIOS, SCENARIOS, Plan
    from wirewise.registry import BACKENDS, TRANSPORTS

    chosen = tuple(scenario or (QUICK_SCENARIOS if quick else DEFAULT_SCENARIOS))
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario {unknown[0]!r}; one of {', '.join(SCENARIOS)}")
    if instances > 1 and balancer not in BALANCERS:
        raise typer.BadParameter(f"--balancer takes {' | '.join(BALANCERS)}, not {balancer!r}")
    scale = scale or Scale()
    scale.check(instances, balancer, processes)
    scale.check_networks(instances, chosen)
    wanted = transport or list(TRANSPORTS)
    if set(wanted) - set(TRANSPORTS):
        raise typer.BadParameter(f"unknown transport in {wanted}; one of {', '.join(TRANSPORTS)}")
    for name, value in (
        ("--rate", rate),
        ("--duration", duration),
        ("--poll-interval", poll_interval),
        ("--latency-bound-ms", latency_bound_ms),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise typer.BadParameter(f"{name} must be a positive number, not {value}")
    return Plan(
        scenarios=chosen,
        backends=tuple(b for b in BACKENDS if b.transport in wanted),
        quick=quick,
        repeat=repeat,
        users=users,
        rate=rate,
        duration=duration,
        poll_interval=poll_interval,
        payload_bytes=payload_bytes,
        room_size=room_size,
        latency_bound_ms=latency_bound_ms,
        processes=processes,
        instances=instances,
        balancer=balancer,
        sticky=scale.sticky,
        baseline=scale.baseline,
        remote_workers=scale.remote_workers,
        master_bind=scale.master_bind,
        master_port=scale.master_port,
        worker_wait=scale.worker_wait,
        server_host=scale.server_host,
        proxy=scale.proxy,
        networks=scale.networks,
        out=out.resolve(),
    )


def wide_console() -> Any:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)  # a log is as wide as a table


def interrupt_on_sigterm() -> None:
    """SIGTERM (a CI timeout, ``kill``) ends the bench as Ctrl-C does: through the runner's
    ``finally`` blocks, which stop the server and Locust (each in its own process group)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def duration_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def measure(plan: Any, console: Any) -> tuple[Path, Any]:
    """Run the bench: a progress bar with an ETA and a line per finished run on a terminal,
    plain lines otherwise (a log shows each run as it ends)."""
    interrupt_on_sigterm()
    from wirewise.bench import Progress, run_bench

    def line(event: Progress) -> str:
        mark = "ok     " if event.valid else "INVALID"
        return f"[{event.index}/{event.total}] {mark} {event.run.name}: {event.headline}"

    if not console.is_terminal:

        def plain(event: Progress) -> None:
            if event.kind == "start":
                console.print(
                    f"[{event.index + 1}/{event.total}] {event.run.name} ... (about"
                    f" {duration_text(event.eta_s)} left)",
                    highlight=False,
                )
            else:
                console.print(line(event), highlight=False)

        return run_bench(plan, list(ARGV), plain)

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Bar(*columns, console=console) as bar:
        task = bar.add_task("starting", total=len(plan_runs_of(plan)), eta="?")

        def update(event: Progress) -> None:
            if event.kind == "done":
                bar.console.print(line(event), highlight=False)
            bar.update(
                task,
                description=f"{event.run.name:<28}",
                completed=event.index,
                eta=duration_text(event.eta_s),
            )

        return run_bench(plan, list(ARGV), update)


def plan_runs_of(plan: Any) -> list[Any]:
    from wirewise.plan import plan_runs

    return plan_runs(plan)


@app.command()
def summarize(
    run: Annotated[Path, typer.Argument(help="A results run directory (its raw files).")],
) -> None:
    """Rebuild a run's summary.json from its raw files (the same figures, every time)."""
    from wirewise.console import print_summary
    from wirewise.summarize import summarize_run

    if not (run / "metadata.json").is_file():
        raise typer.BadParameter(f"{run} holds no bench run (no metadata.json)")
    summary = summarize_run(run)
    console = wide_console()
    print_summary(summary, console, title=f"wirewise summarize: {run.name}")
    console.print(f"wrote {run / 'summary.json'}")


@app.command("generator-floor")
def generator_floor(
    connections: Annotated[int, typer.Option(min=1, max=5000, help="Sockets read.")] = 500,
    rounds: Annotated[int, typer.Option(min=1, max=2000, help="Messages per socket.")] = 200,
    interval_ms: Annotated[
        float, typer.Option(min=1.0, max=1000.0, help="Between two rounds (a broadcast's pace).")
    ] = 20.0,
    repeat: Annotated[
        int, typer.Option(min=1, max=20, help="Runs of each reader, interleaved; the median.")
    ] = 3,
    against_run: Annotated[
        Path | None,
        typer.Option(
            "--against",
            help="A results run to compare with (default: the one results/REFERENCE names).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write generator-floor-<time>/.")] = Path(
        "results"
    ),
) -> None:
    """What reading one delivery costs a Python load generator at the least (no Locust)."""
    from rich.table import Table

    from wirewise.genfloor import against, measure_all, write_floors
    from wirewise.results import collect_metadata, read_summary

    console = wide_console()
    with console.status(f"measuring each reader {repeat} time(s), interleaved"):
        floors = measure_all(repeat, connections, rounds, interval_ms / 1000)
    table = Table("reader", "deliveries", "CPU s", "µs per delivery (median)", "each repeat")
    for floor in floors:
        table.add_row(
            floor.kind,
            f"{floor.deliveries:,}",
            f"{floor.cpu_s:.3f}",
            f"{floor.us_per_delivery:.2f}",
            " ".join(f"{value:.2f}" for value in floor.repeats),
        )
    console.print(table)
    run = against_run or named_reference(out)
    metadata = collect_metadata(sys.argv)
    metadata["against"] = str(run) if run else None
    if run is not None and (run / "summary.json").is_file():
        summary = read_summary(run)
        for scenario in ("broadcast", "saturate"):
            rows = against(summary, floors, scenario)
            metadata[f"against_{scenario}"] = rows
            compared = Table(
                "transport", "server µs", "a third", "floor", "floor / a third", "generator µs",
                title=f"{scenario} in {run.name}: the server's CPU per delivery against the floor",
            )  # fmt: skip
            for row in rows:
                compared.add_row(
                    row["label"],
                    f"{row['server_us']:.2f}",
                    f"{row['budget_us']:.2f}",
                    f"{row['floor']} {row['floor_us']:.2f}",
                    f"{row['floor_over_budget']:.2f}",
                    f"{row['generator_us']:.2f}" if row["generator_us"] else "-",
                )
            console.print(compared)
    console.print(f"wrote {write_floors(floors, out, metadata)}")


@app.command()
def report(
    run: Annotated[Path | None, typer.Argument(help="A results run (default: the newest).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write (default: reports/<run-id>/).")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="A single-process run for decide's estimates beside a scale-out run's"
            " measurements (default: the one results/REFERENCE names)."
        ),
    ] = None,
) -> None:
    """Charts, report.md and a self-contained report.html, with a verdict from the numbers."""
    run_dir, _ = load_run(run)
    console = wide_console()
    write_report(run_dir, out, console, reference or reference_run(run_dir))


def named_reference(results: Path) -> Path | None:
    """The run ``results/REFERENCE`` names, when there is one."""
    pointer = results / "REFERENCE"
    if not pointer.is_file():
        return None
    found = results / pointer.read_text().strip()
    return found if found.is_dir() else None


def reference_run(run_dir: Path) -> Path | None:
    """The run ``results/REFERENCE`` names, unless it is ``run_dir`` itself."""
    found = named_reference(run_dir.parent)
    return found if found is not None and found.resolve() != run_dir.resolve() else None


def write_report(
    run_dir: Path, out: Path | None, console: Any, reference: Path | None = None
) -> Any:
    from wirewise.report import build_report, verdict
    from wirewise.results import read_summary

    target = out or Path("reports") / run_dir.name
    files = build_report(run_dir, target, reference)
    console.print("[bold]Verdict[/]")
    for sentence in verdict(read_summary(run_dir)):
        console.print(f"  {sentence}")
    console.print(
        f"wrote {files.html} and {files.markdown} ({len(files.charts)} charts in {files.html.parent / 'charts'})"
    )
    return files


@app.command()
def demo(
    port: Annotated[
        int, typer.Option(help="Port (0 picks a free one; the line says which).")
    ] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    tls: Annotated[
        bool,
        typer.Option(
            help="HTTPS with a generated self-signed certificate (hypercorn): the browser then"
            " speaks HTTP/2, which the page's HTTP/2 transport and six-stream experiment need."
        ),
    ] = False,
) -> None:
    """A page that chats over every transport in the browser, with what each costs."""
    from wirewise.demo import run_demo

    run_demo(host, port, tls, announce=lambda line: print(line, flush=True))


@app.command()
def compare(
    quick: Annotated[
        bool,
        typer.Option(
            help="Small scale: every transport over chat, broadcast and idle, in minutes."
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("results"),
    reports: Annotated[
        Path | None, typer.Option(help="Where the report goes (default: reports/<run-id>/).")
    ] = None,
) -> None:
    """The whole comparison: bench every transport, write the report, print the verdict."""
    from wirewise.console import print_summary

    plan = make_plan(None, None, quick, None, None, None, 1.0, 100, None, 100.0, 1, out)
    console = wide_console()
    started = time.monotonic()
    run_dir, summary = measure(plan, console)
    print_summary(summary, console, title=f"wirewise compare: {run_dir.name}")
    write_report(run_dir, reports, console)
    console.print(f"results in {run_dir}; {time.monotonic() - started:.0f} s in all")


def find_run(results: Path | None, having: str | None = None) -> Path:
    """The run to read: the one given, else the newest under ./results, else the bundled one
    (with ``having``: the newest with a result of that scenario)."""
    from wirewise.plan import ROOT
    from wirewise.results import newest_run

    if results is not None:
        if not results.exists():
            raise typer.BadParameter(f"{results}: no such file or directory")
        return results
    for base in (Path("results"), ROOT / "results"):
        run = newest_run(base, having)
        if run is not None:
            return run
    raise typer.BadParameter("no results run found: run `wirewise bench --quick` or pass --results")


def load_run(results: Path | None, having: str | None = None) -> tuple[Path, Summary]:
    """The run and its checked, typed summary; an unreadable one is a usage error (exit 2)."""
    from wirewise.results import SchemaError, load_summary

    run = find_run(results, having)
    try:
        return run, load_summary(run)
    except SchemaError as exc:
        raise typer.BadParameter(f"{run}: {exc}") from None


def ask(value: T | None, question: str, kind: type[T]) -> T:
    """A workload figure from its flag, or asked at the terminal when the flag was not given."""
    return value if value is not None else typer.prompt(question, type=kind)


@app.command()
def decide(
    clients: Annotated[int | None, typer.Option(help="Concurrent clients.")] = None,
    push_rate: Annotated[
        float | None, typer.Option(help="Messages per second each client receives.")
    ] = None,
    send_rate: Annotated[
        float | None, typer.Option(help="Messages per second each client sends (0 or more).")
    ] = None,
    latency_ms: Annotated[
        float | None, typer.Option(help="The p99 delivery latency needed, ms.")
    ] = None,
    payload_bytes: Annotated[int, typer.Option(help="Typical message size.")] = 100,
    proxy_blocks_upgrade: Annotated[
        bool,
        typer.Option(
            "--proxy-blocks-upgrade",
            metavar="",
            help="The clients' network blocks the WebSocket upgrade.",
        ),
    ] = False,
    instances: Annotated[
        int,
        typer.Option(
            help="At least this many server processes (default 1: as many as the workload needs)."
        ),
    ] = 1,
    balancer: Annotated[
        str,
        typer.Option(
            metavar="haproxy|nginx|reuseport|none",
            help="In front of the instances: haproxy or nginx (a process of its own, its memory"
            " and its sockets counted), reuseport or none (no process).",
        ),
    ] = "none",
    rtt_ms: Annotated[
        float,
        typer.Option(
            help="Round-trip time between the clients and the servers, ms: added to each p99"
            " from the measured curves (bench --rtt), the formula without them."
        ),
    ] = 0.0,
    loss: Annotated[
        float, typer.Option(help="Packets lost each way, percent (as bench --loss).")
    ] = 0.0,
    proxy: Annotated[
        str | None,
        typer.Option(
            metavar="nginx-default|nginx-buffered|nginx-tuned|no-upgrade",
            help="An HTTP proxy the clients pass (bench --proxy's profiles): all but"
            " nginx-tuned drop the WebSocket upgrade.",
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="A results run (default: the newest with a chat result, or the bundled reference)."
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", metavar="", help="Print the decision as JSON instead of tables."),
    ] = False,
) -> None:
    """Recommend a transport for a workload, with reasons and estimates from measured numbers.

    Several instances share rooms through Redis, and a balancer process holds its own memory:
    both come from the newest idle results that measured them (a cluster run)."""
    import json

    from wirewise.decide import (
        Workload,
        WorkloadError,
        deployment_runs,
        measured_parts,
        network_model,
        results_dirs,
    )
    from wirewise.decide import decide as run_decide

    asked = {
        "clients": clients,
        "push_rate": push_rate,
        "send_rate": send_rate,
        "latency_ms": latency_ms,
    }
    interactive = any(v is None for v in asked.values())
    if interactive and (not sys.stdin.isatty() or json_out):
        missing = ", ".join(f"--{k.replace('_', '-')}" for k, v in asked.items() if v is None)
        raise typer.BadParameter(f"give {missing} (or run in a terminal to be asked)")
    figures = (
        ask(clients, "How many clients are connected at once", int),
        ask(push_rate, "Messages per second each client receives", float),
        ask(send_rate, "Messages per second each client sends", float),
        ask(latency_ms, "p99 latency the application needs, in ms", float),
    )
    if interactive:
        proxy_blocks_upgrade = proxy_blocks_upgrade or typer.confirm(
            "Does the clients' network block WebSocket upgrades?", default=False
        )
    if proxy is not None:
        from wirewise.proxies import PROFILES

        if proxy not in PROFILES:
            raise typer.BadParameter(f"--proxy takes {' | '.join(PROFILES)}, not {proxy!r}")
        proxy_blocks_upgrade = proxy_blocks_upgrade or proxy != "nginx-tuned"
    try:
        workload = Workload(
            *figures,
            payload_bytes,
            proxy_blocks_upgrade,
            instances=instances,
            balancer=balancer,
            rtt_ms=rtt_ms,
            loss_pct=loss,
        )
    except WorkloadError as exc:
        flag = f"'--{ {'loss_pct': 'loss'}.get(exc.field, exc.field).replace('_', '-') }'"
        raise typer.BadParameter(exc.message, param_hint=flag) from None
    run, summary = load_run(results, having="chat")
    parts = measured_parts(deployment_runs(results_dirs(run.parent)))
    network = network_model(results_dirs(run.parent)) if rtt_ms or loss else None
    decision = run_decide(workload, summary, run.name, parts, network)
    if json_out:
        # allow_nan=False: JSON has no NaN or Infinity; as_json has replaced any by null.
        typer.echo(json.dumps(decision.as_json(), indent=2, allow_nan=False))
        return
    from wirewise.console import print_decision

    print_decision(decision)
    if instances > 1 or balancer != "none":
        typer.echo(
            f"Deployment asked: at least {instances} instance(s), balancer {balancer}; each"
            " transport's reasons give its memory by part and the sources of Redis's and the"
            " balancer's figures."
        )


@app.command()
def explain(
    topic: Annotated[str | None, typer.Argument(help="A topic; without one, the list.")] = None,
    results: Annotated[
        Path | None, typer.Option(help="A results run to quote (default: the newest).")
    ] = None,
) -> None:
    """Short answers for learners and interview preparation, quoting measured numbers."""
    from wirewise.explain import TOPICS
    from wirewise.explain import explain as write

    if topic is None:
        typer.echo("Topics (wirewise explain TOPIC):")
        for name, item in TOPICS.items():
            typer.echo(f"  {name:<16} {item.title}")
        return
    if topic not in TOPICS:
        raise typer.BadParameter(f"unknown topic {topic!r}; one of {', '.join(TOPICS)}")
    summary: Summary | None = None
    note = ""
    run = Path("")
    try:
        run, summary = load_run(results, having="chat")
    except typer.BadParameter as exc:
        if results is not None:  # asked for this run: not reading it is an error, not a fallback
            raise
        note = exc.message
    typer.echo(write(topic, summary, run.name if summary is not None else "", note))


ARGV: list[str] = []
"""The command line as given (recorded in results)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status instead of exiting (tests call it directly)."""
    args = argv if argv is not None else sys.argv[1:]
    ARGV[:] = ["wirewise", *args]
    try:
        app(args=args, prog_name="wirewise")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
