"""Fault injection for ``wirewise bench --scenario faults``: SIGKILL the server when the
scenario's plan says, and start it again on the same port; for ``--scenario failover``,
SIGKILL one instance of a cluster (:class:`Failover`) and leave the survivors to take over.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wirewise.cluster import Cluster, ClusterPlan, start_cluster
from wirewise.processes import SERVER_SETTINGS, Server, cores, start_server
from wirewise.registry import Backend
from wirewise.sampler import Sampler

__all__ = ["FAULT_SETTINGS", "ClusterServer", "Failover", "Faults", "Rolling", "server_stats"]

INSTANCES = 3

FAULT_SETTINGS = ("--secret", "wirewise-faults", "--set", "queue=50", "--set", "max_text=32000")
"""faults: tokens must outlive the killed process; a short queue lets one flood overflow it."""


def kill_due(directory: Path) -> bool:
    """Has the time the scenario planned for the kill (``faults-plan.json``) come?"""
    try:
        kill_at = json.loads((directory / "faults-plan.json").read_text())["kill_at"]
    except (OSError, ValueError, KeyError):
        return False  # not written yet (or being written)
    return time.time() >= float(kill_at)


def server_stats(server: Server | ClusterServer) -> dict[str, Any] | None:
    """The server's ``/stats`` (its own count of slow-consumer disconnects), or None."""
    return stats_at(server.url, server.backend.transport)


def stats_at(url: str, transport: str) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"http1": False, "http2": True} if transport == "h2" else {}
    try:
        with httpx.Client(**kwargs, verify=False, trust_env=False) as client:
            answer: dict[str, Any] = client.get(f"{url}/stats", timeout=5).json()
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
        if not kill_due(self.directory):
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
                    host=old.url.split("://", 1)[1].rsplit(":", 1)[0],
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

    def finish(self) -> None:
        """Before the server stops: its counts at the end."""
        self.stats_after = server_stats(self.server)

    def report(self) -> dict[str, Any]:
        return {
            "restart": self.restart,
            "error": self.error,
            "stats_before_kill": self.stats_before,
            "stats_at_end": self.stats_after,
        }


@dataclass
class ClusterServer:
    """A cluster as the bench's one server: clients and the byte counter use the balancer;
    the sampler follows the last instance, which the failover never kills."""

    backend: Backend
    cluster: Cluster

    @classmethod
    def start(
        cls,
        backend: Backend,
        poll_interval: float,
        instances: int = INSTANCES,
        balancer: str = "haproxy",
        settings: tuple[str, ...] = FAULT_SETTINGS,
        sticky: bool = False,
        host: str = "127.0.0.1",
    ) -> ClusterServer:
        presence = ("--presence-timeout", str(max(30.0, poll_interval * 3)))
        plan = ClusterPlan(
            transport=backend.transport,
            instances=instances,
            balancer=balancer,
            server=None if backend.transport == "tcp" else backend.server,
            serve_args=(*SERVER_SETTINGS, *settings, *presence),
            sticky=sticky,
            host=host,
        )
        try:
            server = cls(backend, start_cluster(plan))
        except ValueError as exc:  # a part not installed: this run fails, the bench goes on
            raise RuntimeError(str(exc)) from None
        for pid in server.parts.values():
            server.pin(pid)
        return server

    @staticmethod
    def pin(pid: int) -> None:
        """Every part on the server's core, as one server is: the same hardware either way."""
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cores()[0])

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.cluster.instances[-1].pid

    @property
    def instance_pids(self) -> list[int]:
        return [part.pid for part in self.cluster.instances]

    @property
    def parts(self) -> dict[str, int]:
        return {part.name: part.pid for part in self.cluster.parts}

    def stop(self) -> int | None:
        self.cluster.stop()
        return None


@dataclass
class Failover:
    """Kill the first instance at the planned time; the survivors take its clients."""

    server: ClusterServer
    directory: Path
    restart: dict[str, Any] | None = None
    stats_before: dict[str, Any] | None = None
    survivors: list[dict[str, Any] | None] = field(default_factory=list)
    error: str | None = None

    def poll(self, sampler: Sampler) -> None:
        if self.restart is not None:
            return
        if not kill_due(self.directory):
            return
        victim = self.server.cluster.instances[0]
        self.stats_before = stats_at(victim.address, self.server.backend.transport)
        killed_at = time.time()
        victim.kill()
        # The survivors listened all along: reconnect times count from the kill.
        self.restart = {
            "killed_at": killed_at,
            "listening_at": killed_at,
            "failover": victim.name,
            "instances": len(self.server.cluster.instances),
        }
        (self.directory / "faults-restart.json").write_text(json.dumps(self.restart))

    def finish(self) -> None:
        """Before the cluster stops: each survivor's counts (the killed one's are from just
        before the kill)."""
        transport = self.server.backend.transport
        self.survivors = [
            stats_at(part.address, transport) for part in self.server.cluster.instances[1:]
        ]

    def report(self) -> dict[str, Any]:
        return {
            "restart": self.restart,
            "error": self.error,
            "stats_before_kill": self.stats_before,
            "stats_at_end": _summed(self.survivors),
            "survivors_at_end": self.survivors,
        }


@dataclass
class Rolling(Failover):
    """A deploy: each instance in turn gets SIGTERM and is replaced on its port, the next one
    only once the replacement listens. Its clients are told (streams end, sockets close with
    1001) and reconnect through the balancer. The bench's loop waits meanwhile (a few
    seconds: the sampler, a thread of its own, does not)."""

    def poll(self, sampler: Sampler) -> None:
        if self.restart is not None:
            return
        if not kill_due(self.directory):
            return
        cluster = self.server.cluster
        steps: list[dict[str, Any]] = []
        for index, old in enumerate(list(cluster.instances)):
            stopped_at = time.time()
            try:
                new = cluster.replace(index)
            except RuntimeError as exc:
                self.error = f"{old.name} was not replaced: {exc}"
                break
            self.server.pin(new.pid)
            steps.append({"instance": old.name, "at": stopped_at, "ready_at": time.time()})
            if index == len(cluster.instances) - 1:
                sampler.follow(new.pid)  # the sampled one (see ClusterServer.pid)
        first = steps[0]["at"] if steps else time.time()
        self.restart = {
            "killed_at": first,
            "listening_at": first,
            "failover": f"rolling restart of {len(steps)} instances",
            "kills": [step["at"] for step in steps],
            "steps": steps,
            "instances": len(cluster.instances),
        }
        (self.directory / "faults-restart.json").write_text(json.dumps(self.restart))

    def finish(self) -> None:
        transport = self.server.backend.transport
        self.survivors = [stats_at(p.address, transport) for p in self.server.cluster.instances]


def _summed(stats: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The survivors' counters added up (what one server's /stats would say)."""
    keys = ("slow_consumer_disconnects", "events_stored", "deliveries", "subscriptions")
    return {key: sum(int((s or {}).get(key, 0)) for s in stats) for key in keys}
