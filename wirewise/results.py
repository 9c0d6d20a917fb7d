"""The results file, ``summary.json``: self-describing, versioned, refused when unknown.

``{"schema_version": 1, "metadata": {...}, "results": [{...}, ...]}``; the README documents
every field. Readers call :func:`read_summary`, which refuses a version it does not know
instead of guessing at its meaning.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
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
)

RESULT_KEYS = (
    "scenario",
    "transport",
    "server",
    "parameters",
    "latency_ms",
    "send_latency_ms",
    "deliveries",
    "throughput_msgs_per_s",
    "server_cpu_ms_per_1k_msgs",
    "memory_per_connection",
    "bytes_per_message",
    "load_generator",
    "warnings",
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
LATENCY_KEYS = ("p50", "p90", "p99", "p999", "max", "mean", "count")


class SchemaError(ValueError):
    """A results file this version of wirewise cannot read."""


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


FAULTS_KEYS = (
    "killed",
    "outage_s",
    "clients",
    "reconnect_ms",
    "all_back",
    "lost_with_resume",
    "lost_signalled",
    "lost_silently",
    "lost_without_resume",
    "delivered_by_resume",
    "gaps_signalled",
    "slow_consumer_disconnects",
    "server_rss_peak_bytes",
)
"""What a ``faults`` result adds (a failed run, which measured nothing, has none of it)."""


def validate(summary: dict[str, Any]) -> None:
    """Raise :class:`SchemaError` unless ``summary`` is a version-1 results file."""
    version = summary.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"results schema_version {version!r} is not {SCHEMA_VERSION}: use the wirewise that wrote it"
        )
    missing = [k for k in METADATA_KEYS if k not in summary.get("metadata", {})]
    if missing:
        raise SchemaError(f"metadata lacks {', '.join(missing)}")
    if not isinstance(summary.get("results"), list):
        raise SchemaError("results is not a list")
    for i, result in enumerate(summary["results"]):
        absent = [k for k in RESULT_KEYS if k not in result]
        if absent:
            raise SchemaError(f"result {i} lacks {', '.join(absent)}")
        for key in ("latency_ms", "send_latency_ms"):
            if set(LATENCY_KEYS) - set(result[key]):
                raise SchemaError(f"result {i} {key} lacks some of {', '.join(LATENCY_KEYS)}")
        if result.get("scenario") == "faults" and "faults" in result:
            absent = [k for k in FAULTS_KEYS if k not in result["faults"]]
            if absent:
                raise SchemaError(f"result {i} faults lacks {', '.join(absent)}")


def write_summary(
    path: Path, metadata: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    summary = {"schema_version": SCHEMA_VERSION, "metadata": metadata, "results": results}
    validate(summary)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def read_summary(path: Path) -> dict[str, Any]:
    """Read and check a ``summary.json`` (or the one inside a run directory)."""
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


def newest_run(results_dir: Path) -> Path | None:
    """The newest run directory holding a ``summary.json`` (run ids sort by time)."""
    runs = sorted(p.parent for p in results_dir.glob("*/summary.json"))
    return runs[-1] if runs else None
