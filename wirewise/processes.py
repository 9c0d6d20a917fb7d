"""The bench's processes: the server under test and Locust, each pinned, each in its own
process group, always stopped (by pid) however the bench ends.

The server runs alone on the first available core, Locust on the others: a server and a load
generator sharing a core measure each other.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO

import psutil

from wirewise.registry import Backend, parse_ready_line

__all__ = [
    "Server",
    "await_ready",
    "child_setup",
    "cores",
    "forward",
    "process_tree",
    "start_server",
    "stop_process",
]

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0
SERVER_SETTINGS = (
    "--set",
    "send_rate=1000000",
    "--set",
    "send_burst=1000000",
    "--set",
    "max_connections_per_user=1000",
)
"""The bench raises the per-user send limits (the benchmark is not an abuse test) and says so."""


@cache
def available_cores() -> tuple[int, ...]:
    """The cores this process may use, read once (before the bench pins itself)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def cores() -> tuple[set[int], set[int]]:
    """(server cores, load-generator cores): the server alone on the first core."""
    available = list(available_cores())
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


def child_setup(cpus: set[int]) -> Callable[[], None]:
    """For ``Popen(preexec_fn=...)``: pin, raise the file limit to its hard cap, own group."""

    def setup() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        os.setsid()  # our own process group: stopped as a whole, never orphaned

    return setup


@dataclass
class Server:
    """A ``wirewise serve`` process the bench started."""

    backend: Backend
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path
    pump: threading.Thread

    @property
    def pid(self) -> int:
        return self.proc.pid

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
    host: str = "127.0.0.1",
    prefix: tuple[str, ...] = (),
) -> Server:
    """Start ``wirewise serve`` for ``backend`` on its core; returns once it listens.
    ``prefix`` runs it through a program that execs it (``ip netns exec NAME``: same pid)."""
    server_cores, _ = cores()
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "wirewise",
        "serve",
        backend.transport,
        "--host",
        host,
        "--port",
        str(port),
        *SERVER_SETTINGS,
        *extra,
    ]
    if backend.transport != "tcp":
        argv += ["--server", backend.server]
    # A poller is present until presence_timeout passes without a poll.
    argv += ["--presence-timeout", str(max(30.0, poll_interval * 3))]
    handle = log.open("wb")
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=handle, preexec_fn=child_setup(server_cores)
    )
    assert proc.stdout is not None
    try:
        url = await_ready(proc, handle, backend.label)
    except RuntimeError as exc:
        stop_process(proc)
        proc.stdout.close()
        handle.close()
        raise RuntimeError(f"{exc}; see {log}") from None
    return Server(backend, proc, url, int(url.rsplit(":", 1)[1]), log, forward(proc.stdout, handle))


def await_ready(proc: subprocess.Popen[bytes], handle: IO[bytes], label: str) -> str:
    """Copy ``wirewise serve``'s output to ``handle`` up to its ready line; returns its URL."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        handle.write(line)
        ready = parse_ready_line(line.decode(errors="replace"))
        if ready is not None:
            handle.flush()
            return ready[1]
    raise RuntimeError(f"{label} did not start: {line!r}")


def forward(stream: IO[bytes], handle: IO[bytes]) -> threading.Thread:
    """Copy the server's remaining output to its log until it exits."""

    def pump() -> None:
        for chunk in stream:
            handle.write(chunk)
        handle.close()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Locust's workers)."""
    try:
        parent = psutil.Process(pid)
        return [pid] + [child.pid for child in parent.children(recursive=True)]
    except psutil.Error:
        return []
