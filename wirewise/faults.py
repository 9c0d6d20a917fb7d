"""Fault injection for ``wirewise bench --scenario faults``: SIGKILL the server when the
scenario's plan says, and start it again on the same port.

The scenario writes ``faults-plan.json`` (its window and ``kill_at``) once spawning is done;
:class:`Faults` answers with ``faults-restart.json`` (``killed_at``, ``listening_at``, wall
clock) so that the scenario can time each client's way back. The sampler follows the new
process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from wirewise.processes import Server, start_server
from wirewise.sampler import Sampler

__all__ = ["FAULT_SETTINGS", "Faults", "server_stats"]

FAULT_SETTINGS = ("--secret", "wirewise-faults", "--set", "queue=50", "--set", "max_text=32000")
"""faults: tokens must outlive the killed process; a short queue lets one flood overflow it."""


def server_stats(server: Server) -> dict[str, Any] | None:
    """The server's ``/stats`` (its own count of slow-consumer disconnects), or None."""
    kwargs: dict[str, Any] = (
        {"http1": False, "http2": True} if server.backend.transport == "h2" else {}
    )
    try:
        with httpx.Client(**kwargs, verify=False, trust_env=False) as client:
            answer: dict[str, Any] = client.get(f"{server.url}/stats", timeout=5).json()
            return answer
    except (httpx.HTTPError, ValueError):
        return None


@dataclass
class Faults:
    """Kill the server at the planned time and restart it on its port (see the module doc)."""

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
        sampler.follow(self.server.pid)
        self.restart = {"killed_at": killed_at, "listening_at": listening_at}
        (self.directory / "faults-restart.json").write_text(json.dumps(self.restart))

    def report(self) -> dict[str, Any]:
        return {
            "restart": self.restart,
            "error": self.error,
            "stats_before_kill": self.stats_before,
            "stats_at_end": self.stats_after,
        }
