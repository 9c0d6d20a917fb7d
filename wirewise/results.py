"""The results contract between stages: typed objects, ``summary.json``, a versioned schema.

The bench writes raw files; :mod:`wirewise.summarize` turns them into a :class:`Summary`;
report, decide, explain and the console read only that. ``summary.json`` is
``{"schema_version": 2, "metadata": {...}, "results": [...]}``: one :class:`Result` per
scenario x backend, holding the figures of each repeat (:class:`Repeat`) and their
summary (medians with 95 % intervals). Readers call :func:`read_summary`, which refuses a
version it does not know instead of guessing at its meaning.

Version 2 (this one) added: repeats, ``validity``, ``publisher``, ``deliveries.extra`` and its
reasons, ``load_generator`` CPU per delivery against the server's, bytes on the wire with
headers, confidence intervals, and ``settle``/``drain``. Version 1 files are refused: their
numbers were taken with a closed-loop publisher (see the README's measurement notes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "SCHEMA_VERSION",
    "VARIANTS",
    "BytesPerMessage",
    "Deliveries",
    "Latency",
    "LoadGenerator",
    "Memory",
    "Publisher",
    "Repeat",
    "Result",
    "SchemaError",
    "Step",
    "Summary",
    "Validity",
    "collect_metadata",
    "newest_run",
    "read_summary",
    "summaries",
    "write_summary",
]

SCHEMA_VERSION = 2
LIBRARIES = (
    "uvicorn",
    "hypercorn",
    "starlette",
    "websockets",
    "h2",
    "httpx",
    "h11",
    "orjson",
    "locust",
    "gevent",
    "uvloop",
    "httptools",
    "numpy",
)
METADATA_KEYS = (
    "wirewise_version",
    "git_commit",
    "python",
    "platform",
    "cpu_model",
    "cores",
    "kernel",
    "started_at",
    "argv",
)
T = TypeVar("T")


class SchemaError(ValueError):
    """A results file this version of wirewise cannot read."""


# -- the objects -------------------------------------------------------------------------------


@dataclass
class Latency:
    """Percentiles in milliseconds and the sample count; None when nothing was measured.

    ``ci95`` holds the 95 % interval of a percentile (``{"p50": [low, high]}``), resampling
    messages, not deliveries (:mod:`wirewise.stats`).
    """

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None
    count: int = 0
    ci95: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Publisher:
    """Every send the schedule asked for in the window, and how late each was issued."""

    scheduled: int = 0
    sent: int = 0
    unsent: int = 0
    answered: int = 0
    refused: int = 0
    unanswered: int = 0
    lag_ms: dict[str, float | None] = field(default_factory=dict)
    """p50, p99 and max of (issued - scheduled)."""
    period_ms: float | None = None
    """One sender's time between two sends (the lag rule compares with it)."""


@dataclass
class Deliveries:
    """``delivered == expected - lost + extra``; duplicates were dropped, so not delivered."""

    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0
    extra_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadGenerator:
    """The load generator's own cost, so that a saturated one is seen, never trusted."""

    processes: int = 1
    cpu_percent_max: float | None = None
    """The busiest Locust process's CPU while measuring (one process uses one core)."""
    bench_cpu_percent: float | None = None
    """The bench's own sampling work, on the load generator's core(s)."""
    cpu_us_per_delivery: float | None = None
    server_cpu_us_per_delivery: float | None = None
    saturated: bool | None = None
    read_delay_ms: dict[str, float | None] = field(default_factory=dict)
    """How long data waited in a socket for the generator to read it (p50, p99, max)."""
    receipt_clock: str = "kernel"
    """Where receipt times come from: the kernel's socket timestamps, or the process clock."""
    remote_workers: int = 0
    """Workers on other hosts: the bench cannot sample them, so with any, the CPU figures are
    the workers' own reports (from the window's start to their final report)."""


@dataclass
class Validity:
    """Whether the figures may be quoted as facts about the transport, and if not, why."""

    valid: bool = True
    reasons: list[str] = field(default_factory=list)


@dataclass
class BytesPerMessage:
    """Bytes per message: TCP payload (``down`` per delivery, ``up`` per send, ``total`` per
    delivery), and ``wire``: the same with every segment's IP and TCP headers."""

    down: float | None = None
    up: float | None = None
    total: float | None = None
    wire: dict[str, float | None] = field(default_factory=dict)
    header_bytes_per_segment: int | None = None


@dataclass
class Memory:
    """Memory per idle connection: the slopes of RSS, USS and kernel memory against clients."""

    rss_bytes: float | None = None
    uss_bytes: float | None = None
    kernel_bytes: float | None = None
    r2: float | None = None
    base_rss_bytes: float | None = None
    rss_ci95: list[float] | None = None
    fitted_against: str | None = None
    """"clients", or "connections" where the server's connections tracked the clients."""
    idle_cpu_percent_per_1k_connections: float | None = None
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Step:
    """One step of a saturate ramp."""

    step: int
    rate_per_user: float
    sent_per_s: float | None = None
    deliveries_per_s: float | None = None
    latency_ms: Latency = field(default_factory=Latency)
    lag_p99_ms: float | None = None
    deliveries: Deliveries = field(default_factory=Deliveries)
    server_cpu_percent: float | None = None
    server_cpu_ms_per_1k_msgs: float | None = None
    generator_cpu_percent: float | None = None
    held: bool = False
    why: str | None = None
    """Why it did not hold (the knee), when it did not."""


@dataclass
class Repeat:
    """One run of a scenario on a backend: its own figures."""

    repeat: int
    files: str
    """The run's directory inside the results run."""
    window: dict[str, float] = field(default_factory=dict)
    settle: dict[str, Any] = field(default_factory=dict)
    drain: dict[str, Any] = field(default_factory=dict)
    headroom: dict[str, Any] = field(default_factory=dict)
    latency_ms: Latency = field(default_factory=Latency)
    send_latency_ms: Latency = field(default_factory=Latency)
    publisher: Publisher = field(default_factory=Publisher)
    deliveries: Deliveries = field(default_factory=Deliveries)
    throughput_msgs_per_s: float | None = None
    server_cpu_ms_per_1k_msgs: float | None = None
    parts_cpu_ms_per_1k_msgs: dict[str, float] | None = None
    """A several-process backend: each part's CPU per 1,000 deliveries (Redis, the balancer)."""
    bytes_per_message: BytesPerMessage = field(default_factory=BytesPerMessage)
    memory_per_connection: Memory = field(default_factory=Memory)
    steps: list[Step] = field(default_factory=list)
    highest_rate_held: dict[str, Any] | None = None
    stopped_by: str | None = None
    load_generator: LoadGenerator = field(default_factory=LoadGenerator)
    faults: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    """The fallback scenario: what the negotiations settled on and cost."""
    path: dict[str, Any] | None = None
    """Under network conditions: what was measured on the path (added RTT, the relay's
    overhead and CPU)."""
    validity: Validity = field(default_factory=Validity)
    warnings: list[str] = field(default_factory=list)


VARIANTS = ("", "sticky", "single")
"""A run's deployment beside the plan's own (""): its balancer made sticky, or one process
with the in-memory broker (the baseline a scale-out run's extra hop is measured against)."""


@dataclass
class Result:
    """One scenario on one backend: each repeat, and their summary.

    The top-level figures summarise the repeats: medians (latency percentiles with their
    95 % intervals), sums (deliveries, publisher), the worst (load generator) and the
    conjunction (validity: every repeat must be valid).
    """

    scenario: str
    transport: str
    server: str
    label: str
    parameters: dict[str, Any] = field(default_factory=dict)
    repeats: list[Repeat] = field(default_factory=list)
    latency_ms: Latency = field(default_factory=Latency)
    send_latency_ms: Latency = field(default_factory=Latency)
    publisher: Publisher = field(default_factory=Publisher)
    deliveries: Deliveries = field(default_factory=Deliveries)
    throughput_msgs_per_s: float | None = None
    server_cpu_ms_per_1k_msgs: float | None = None
    server_cpu_ms_per_1k_msgs_range: list[float] | None = None
    """Lowest and highest of the repeats' figures."""
    parts_cpu_ms_per_1k_msgs: dict[str, float] | None = None
    """A several-process backend: each part's CPU per 1,000 deliveries, the repeats' median."""
    bytes_per_message: BytesPerMessage = field(default_factory=BytesPerMessage)
    memory_per_connection: Memory = field(default_factory=Memory)
    steps: list[Step] = field(default_factory=list)
    """The steps of the repeat whose highest rate held is the median one."""
    highest_rate_held: dict[str, Any] | None = None
    stopped_by: str | None = None
    load_generator: LoadGenerator = field(default_factory=LoadGenerator)
    faults: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    """The fallback scenario: what the negotiations settled on and cost."""
    path: dict[str, Any] | None = None
    """Under network conditions: what was measured on the path (added RTT, the relay's
    overhead and CPU)."""
    validity: Validity = field(default_factory=Validity)
    warnings: list[str] = field(default_factory=list)
    deployment: dict[str, Any] | None = None
    """What served it: variant, instances, balancer, broker, sticky (None: an older run)."""

    @property
    def valid(self) -> bool:
        return self.validity.valid

    @property
    def variant(self) -> str:
        """Empty for the run's own deployment; "sticky" or "single" for one compared with it."""
        return str((self.deployment or {}).get("variant") or "")

    @property
    def network(self) -> str:
        """The network conditions' name (``rtt100``, ``3g``); empty: loopback, nothing added."""
        return str(((self.deployment or {}).get("network") or {}).get("name") or "")

    @property
    def conditions(self) -> dict[str, Any]:
        """rtt_ms, jitter_ms, loss_pct, bandwidth_kbit as run (empty: none)."""
        return dict((self.deployment or {}).get("network") or {})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return _build(cls, data, "result")


@dataclass
class Summary:
    """A whole results run."""

    metadata: dict[str, Any]
    results: list[Result]
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "metadata": self.metadata,
            "results": [r.to_json() for r in self.results],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        validate(data)
        return cls(
            metadata=data["metadata"],
            results=[Result.from_json(r) for r in data["results"]],
            schema_version=data["schema_version"],
        )

    def find(self, scenario: str, label: str) -> Result | None:
        for result in self.results:
            if result.scenario == scenario and result.label == label:
                return result
        return None


# -- JSON <-> objects ----------------------------------------------------------------------------


def _build(cls: type[T], data: Any, where: str) -> T:
    """``cls`` from its JSON, checking that every field without a default is present."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where} is not an object")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{where} lacks {f.name}")
            continue
        values[f.name] = _value(hints[f.name], data[f.name], f"{where}.{f.name}")
    return cls(**values)


def _value(hint: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(inner[0], value, where) if len(inner) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise SchemaError(f"{where} is not a list")
        return [_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)  # type: ignore[arg-type]
    return value


# -- metadata ----------------------------------------------------------------------------------


def git_commit(root: Path | None = None) -> str:
    """The commit the code ran from, ``+dirty`` when the tree had changes, or ``unknown``."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _total_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except (ImportError, OSError):
        return None


def collect_metadata(argv: list[str] | None = None) -> dict[str, Any]:
    from wirewise import __version__

    return {
        "wirewise_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 0,
        "kernel": platform.release(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv if argv is not None else sys.argv),
        "memory_bytes": _total_memory(),
        "libraries": library_versions(),
    }


# -- files -----------------------------------------------------------------------------------------


def validate(summary: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` unless ``summary`` is a version-2 results file."""
    version = summary.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"results schema_version {version!r} is not {SCHEMA_VERSION}: use the wirewise that"
            " wrote it, or `wirewise summarize RUN` to rebuild it from its raw files"
        )
    missing = [k for k in METADATA_KEYS if k not in summary.get("metadata", {})]
    if missing:
        raise SchemaError(f"metadata lacks {', '.join(missing)}")
    if not isinstance(summary.get("results"), list):
        raise SchemaError("results is not a list")
    for i, result in enumerate(summary["results"]):
        Result.from_json(result) if isinstance(result, dict) else _build(
            Result, result, f"result {i}"
        )


def write_summary(path: Path, summary: Summary) -> dict[str, Any]:
    data = summary.to_json()
    validate(data)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


def read_summary(path: Path) -> dict[str, Any]:
    """Read and check a ``summary.json`` (or the one inside a run directory), as JSON."""
    if path.is_dir():
        path = path / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read {path}: {exc}") from None
    if not isinstance(summary, dict):
        raise SchemaError(f"{path} is not a results file")
    validate(summary)
    return summary


def load_summary(path: Path) -> Summary:
    """Read, check and build a :class:`Summary`."""
    return Summary.from_json(read_summary(path))


def summaries(
    bases: Iterable[Path], mentioning: str | None = None
) -> Iterator[tuple[str, Summary]]:
    """Every readable run under ``bases``, newest first within each (run ids sort by time),
    named ``<base>/<run id>``; with ``mentioning``, only files whose text holds it (a cheap
    test before parsing: the reference run is large). Unreadable ones are skipped."""
    for base in bases:
        for path in sorted(base.glob("*/summary.json"), reverse=True):
            try:
                if mentioning is None or mentioning in path.read_text():
                    yield f"{base.name}/{path.parent.name}", load_summary(path)
            except (OSError, ValueError):  # SchemaError included: not a run this reads
                continue


def newest_run(results_dir: Path, having: str | None = None) -> Path | None:
    """The newest run directory holding a ``summary.json`` (run ids sort by time); with
    ``having``, the newest single-process run that has a result of that scenario (a
    failover-only run is no basis for ``decide``, nor one whose servers were several processes
    behind a balancer, or one server behind a proxy: decide's model is one process per server,
    reached directly)."""
    runs = sorted((p.parent for p in results_dir.glob("*/summary.json")), reverse=True)
    for run in runs:
        if having is None or _has_scenario(run / "summary.json", having):
            return run
    return None


def _has_scenario(path: Path, scenario: str) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    plan = (data.get("metadata") or {}).get("plan") or {}
    if (plan.get("instances") or 1) > 1 or plan.get("proxy") or plan.get("networks"):
        # not one server as clients reach it directly on loopback: not decide's model
        return False
    return any(row.get("scenario") == scenario for row in data.get("results", []))
