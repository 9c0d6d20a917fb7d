"""Network conditions between the clients and the server: round-trip time, jitter, loss and
bandwidth, applied on this machine and measured, so that nobody has to trust the dial.

This kernel has no ``netem`` (nor ``fq``), so each condition is applied by what there is:

| condition | applied by | needs root |
|---|---|---|
| rtt, jitter | :mod:`wirewise.relay`, a user-space TCP relay on 127.0.0.1 that holds each chunk | no |
| bandwidth | ``tbf`` on the egress of both interfaces of a "wire" namespace (both directions) | yes |
| loss | iptables in the wire namespace: ``FORWARD -m statistic --mode random -j DROP`` | yes |

Topology. With rtt and jitter only, the server stays on 127.0.0.1 and the relay forwards to it.
With loss or bandwidth, two network namespaces are created (named after this process's pid, so
that a crash's leftovers are recognised): the server's, ``wwnet-<pid>-<n>``, and the wire,
``wwnet-<pid>-<n>-wire``, a router between it and the root namespace::

    client ── 127.0.0.1:relay ──► wwP-N ═veth═ wire-root [wire ns: tbf, DROP] wire-srv ═veth═ srv0
    (root namespace)              10.x.y.1/30     .2                          .5   /30       .6

The server runs in its namespace (:attr:`Placement.exec_prefix` is ``ip netns exec NAME``,
which execs, so the pid is the server's) and binds :attr:`Placement.server_host`. Clients reach
it through the relay when rtt > 0, else directly at the namespace's address.

Why a wire namespace and not iptables beside the server: a packet that iptables drops on its
way *out* of a host (``OUTPUT``) is not lost. The sending TCP gets ``EPERM`` from its own
transmit and simply tries again; measured here, an 8 MiB transfer with 5 % of the server's
packets dropped in ``OUTPUT`` took 5-8 ms, as without the rule, and its TCP counted no
retransmission. Dropped while being forwarded, a packet has left its sender and is lost as on a
wire, in both directions (the same transfer with 5 % dropped in the wire: 4.3 s, 776
retransmitted segments). Each packet is one TCP segment (``gso_max_segs 1`` on the two sending
interfaces): otherwise TCP hands a veth 64 KiB TSO bursts, and one drop loses dozens of segments.

Loss is per direction, like netem's: each packet is dropped with probability ``loss_pct / 100``
on its way, so a round trip loses one of its two packets with about twice that probability.
Jitter is per direction too (each chunk's delay is ``rtt / 2 ± jitter``, never reordered).
Bandwidth is symmetric: the profiles' download rate applies both ways (a chat's uploads are
small; WebPageTest's upload rates are in the table's notes).

What this does not model: the relay sits outside the kernel path that loses packets, so the TCP
that recovers a loss runs between the relay and the server with a round trip of about 0: a fast
retransmit costs almost nothing, while a tail loss costs the kernel's 200 ms minimum RTO, where
on the real path both would also cost about one RTT.

tbf: ``burst`` is 10 ms at the rate, at least 4 KiB (it must hold a 1,514-byte frame, and the
kernel needs rate/HZ); ``latency 50ms`` bounds its queue: enough for TCP to keep the rate on a
path whose kernel round trip is about 0, and at most 50 ms of queueing added under a full load.

Profiles (:data:`PROFILES`):

| name | rtt | jitter (each way) | loss (each way) | bandwidth | source |
|---|---|---|---|---|---|
| lan | 1 ms | 0 | 0 | unlimited | wirewise's choice: a switched LAN's round trip |
| wifi | 28 ms | 5 ms | 0.1 % | 5,000 kbit/s | WebPageTest "Cable" (5/1 Mbit/s, 28 ms) behind Wi-Fi; jitter and loss wirewise's choice |
| 4g | 170 ms | 0 | 0 | 9,000 kbit/s | WebPageTest "4G" (9 Mbit/s, 170 ms RTT) |
| 3g | 300 ms | 0 | 0 | 1,600 kbit/s | WebPageTest "3G" (1.6 Mbit/s down, 768 kbit/s up, 300 ms RTT) |
| lossy | 50 ms | 0 | 2 % | unlimited | wirewise's choice: loss alone, at a short RTT |

WebPageTest's figures are from its ``www/settings/connectivity.ini.sample``
(WPO-Foundation/webpagetest); it applies no loss (``plr=0``) in any of them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import h11
import psutil

from wirewise.processes import (
    ROOT,
    Server,
    available_cores,
    await_ready,
    child_setup,
    stop_process,
)
from wirewise.registry import Backend
from wirewise.relay import STATS_PREFIX

__all__ = [
    "PROFILES",
    "ConditionedServer",
    "Conditions",
    "HttpProbe",
    "NeedsRoot",
    "NetworkPath",
    "Placement",
    "Probe",
    "Profile",
    "RelayProcess",
    "cleanup_stale",
    "measure_path",
    "relay_overhead",
    "require_root",
    "start_relay",
]

PREFIX = "wwnet-"
WIRE_SUFFIX = "-wire"
NETNS_DIR = Path("/run/netns")
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)({WIRE_SUFFIX})?$")
"""``wwnet-<pid>-<n>`` (the server's namespace) and ``wwnet-<pid>-<n>-wire``."""
SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")
"""Where the namespaces' addresses are taken from, a /29 each (two /30 links), skipping any
that overlaps an address or route of the root namespace."""
TBF_LATENCY_MS = 50
TBF_MIN_BURST = 4096
PROGRAMS = ("ip", "tc", "iptables", "sysctl")
"""What loss and bandwidth need (Debian: iproute2, iptables, procps)."""
COMMAND_TIMEOUT = 10.0
RELAY_LOG = "wirewise-relay-"
"""The relay's log: ``$TMPDIR/wirewise-relay-<our pid>-*.log``, deleted when it stops (and,
after a crash, by :func:`cleanup_stale`)."""
_numbers = itertools.count(1)


class NeedsRoot(PermissionError):
    """Loss or bandwidth asked for without root."""


@dataclass(frozen=True)
class Conditions:
    """What the path between clients and server adds: milliseconds, percent, kbit/s."""

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    """Each direction's delay varies by up to this, either way (as netem's jitter)."""
    loss_pct: float = 0.0
    """Each packet's chance, in percent, of being dropped on its way (each direction)."""
    bandwidth_kbit: float | None = None
    """Each direction's rate; None is unlimited."""

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "jitter_ms", "loss_pct", "bandwidth_kbit"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.jitter_ms > self.rtt_ms / 2:
            raise ValueError(
                f"jitter_ms ({self.jitter_ms:g}) must be at most half the rtt ({self.rtt_ms:g}"
                " ms): each direction's delay is rtt/2 ± jitter and cannot go below zero"
            )
        if self.loss_pct >= 100:
            raise ValueError(f"loss_pct must be below 100, not {self.loss_pct:g}")
        if self.bandwidth_kbit is not None and self.bandwidth_kbit < 8:
            raise ValueError(f"bandwidth_kbit must be at least 8, not {self.bandwidth_kbit:g}")

    @property
    def none(self) -> bool:
        """Nothing to apply: clients talk to the server directly."""
        return self.rtt_ms == 0 and self.loss_pct == 0 and self.bandwidth_kbit is None

    @property
    def needs_namespace(self) -> bool:
        """Loss and bandwidth need a namespace, tbf and iptables (root); delay does not."""
        return self.loss_pct > 0 or self.bandwidth_kbit is not None

    @property
    def one_way_ms(self) -> float:
        return self.rtt_ms / 2

    def describe(self) -> str:
        """``rtt 100 ms ± 10 each way, loss 1 % each way, 1600 kbit/s``."""
        parts = []
        if self.rtt_ms:
            jitter = f" ± {self.jitter_ms:g} each way" if self.jitter_ms else ""
            parts.append(f"rtt {self.rtt_ms:g} ms{jitter}")
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g} % each way")
        if self.bandwidth_kbit is not None:
            parts.append(f"{self.bandwidth_kbit:g} kbit/s")
        return ", ".join(parts) or "no added conditions"

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class Profile:
    conditions: Conditions
    source: str


PROFILES: dict[str, Profile] = {
    "lan": Profile(
        Conditions(rtt_ms=1),
        "wirewise's choice: a switched LAN's round trip is well under 1 ms; 1 ms covers a hop"
        " or two and the other host's stack",
    ),
    "wifi": Profile(
        Conditions(rtt_ms=28, jitter_ms=5, loss_pct=0.1, bandwidth_kbit=5000),
        'WebPageTest "Cable" (5/1 Mbit/s, 28 ms RTT) as the line behind the access point;'
        " jitter 5 ms and loss 0.1 % are wirewise's choice: Wi-Fi retransmits at the link"
        " layer, so TCP sees mostly varying delay and a little residual loss",
    ),
    "4g": Profile(
        Conditions(rtt_ms=170, bandwidth_kbit=9000),
        'WebPageTest "4G" (9 Mbit/s both ways, 170 ms RTT, no loss)',
    ),
    "3g": Profile(
        Conditions(rtt_ms=300, bandwidth_kbit=1600),
        'WebPageTest "3G" (1.6 Mbit/s down, 768 kbit/s up, 300 ms RTT, no loss); the down rate'
        " is applied both ways",
    ),
    "lossy": Profile(
        Conditions(rtt_ms=50, loss_pct=2),
        "wirewise's choice: 2 % loss each way at a short 50 ms RTT, so that what loss costs each"
        " transport is seen apart from long delays",
    ),
}
"""Named conditions; the module docstring has them as a table."""


def require_root(conditions: Conditions) -> None:
    """Refuse, with a sentence, loss or bandwidth without root."""
    if conditions.needs_namespace and os.geteuid() != 0:
        raise NeedsRoot(
            "loss and bandwidth need root (a network namespace, tbf and iptables); run as root"
            " or drop --loss/--bandwidth"
        )


def missing_programs() -> list[str]:
    """The programs loss and bandwidth need that are not installed."""
    return [name for name in PROGRAMS if shutil.which(name) is None]


# --- commands ---------------------------------------------------------------------------------


def run(argv: Sequence[str], log: list[list[str]] | None = None) -> str:
    """Run one command, record it, and raise with its own message if it fails."""
    if log is not None:
        log.append(list(argv))
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def in_netns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


# --- namespaces -------------------------------------------------------------------------------


@dataclass
class Namespaces:
    """The two namespaces of one path, their addresses, and every command that built them."""

    server: str
    wire: str
    host_if: str
    subnet: ipaddress.IPv4Network
    commands: list[list[str]] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        """The /29's eight addresses: .1-.2 link root and wire, .5-.6 wire and server."""
        return [str(address) for address in self.subnet]

    @property
    def host_address(self) -> str:
        return self.hosts[1]

    @property
    def server_address(self) -> str:
        return self.hosts[6]

    def names(self) -> list[str]:
        return [self.server, self.wire]


def _used_networks() -> list[ipaddress.IPv4Network]:
    """The root namespace's IPv4 addresses and routes, as networks."""
    used = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for info in entry.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(run(["ip", "-j", "-4", "route", "show"]) or "[]"):
        if route.get("dst") not in (None, "default"):
            used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return used


def free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /29 of :data:`SUBNETS` nothing on this host uses, starting at ``seed``'s place so
    that paths created at the same moment by different processes rarely collide."""
    used = _used_networks()
    blocks = list(SUBNETS.subnets(new_prefix=29))
    for step in range(len(blocks)):
        block = blocks[(seed + step) % len(blocks)]
        if not any(block.overlaps(other) for other in used):
            return block
    raise RuntimeError(f"no free /29 left in {SUBNETS}")


def _existing() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create_namespaces(conditions: Conditions) -> Namespaces:
    """The server's namespace, the wire between it and the root namespace, and the conditions
    on the wire. Everything created lives in the two namespaces: deleting them undoes it all."""
    pid = os.getpid()
    number = next(_numbers)
    while f"{PREFIX}{pid}-{number}" in _existing():
        number = next(_numbers)
    server = f"{PREFIX}{pid}-{number}"
    host_if = host_interface(server)
    assert host_if is not None
    space = Namespaces(server, server + WIRE_SUFFIX, host_if, free_subnet(pid * 31 + number))
    try:
        _build(space, conditions)
    except BaseException:
        delete_namespaces(space.names())
        raise
    return space


def _build(space: Namespaces, conditions: Conditions) -> None:
    log = space.commands
    hosts, prefix = space.hosts, "/30"
    wire, server = space.wire, space.server
    run(["ip", "netns", "add", server], log)
    run(["ip", "netns", "add", wire], log)
    run(["ip", "link", "add", space.host_if, "type", "veth", "peer", "wire-root", "netns", wire], log)  # fmt: skip
    run(["ip", "-n", wire, "link", "add", "wire-srv", "type", "veth", "peer", "srv0", "netns", server], log)  # fmt: skip
    run(["ip", "addr", "add", hosts[1] + prefix, "dev", space.host_if], log)
    run(["ip", "link", "set", space.host_if, "up"], log)
    run(["ip", "-n", wire, "addr", "add", hosts[2] + prefix, "dev", "wire-root"], log)
    run(["ip", "-n", wire, "addr", "add", hosts[5] + prefix, "dev", "wire-srv"], log)
    run(["ip", "-n", server, "addr", "add", hosts[6] + prefix, "dev", "srv0"], log)
    for name, interfaces in ((wire, ("lo", "wire-root", "wire-srv")), (server, ("lo", "srv0"))):
        for interface in interfaces:
            run(["ip", "-n", name, "link", "set", interface, "up"], log)
    # one segment per packet, as on a link: without it TCP hands the veth 64 KiB TSO bursts,
    # and a drop would lose dozens of segments at once
    run(["ip", "link", "set", "dev", space.host_if, "gso_max_segs", "1"], log)
    run(["ip", "-n", server, "link", "set", "dev", "srv0", "gso_max_segs", "1"], log)
    run(["ip", "-n", server, "route", "add", "default", "via", hosts[5]], log)
    run(["ip", "route", "add", f"{hosts[4]}/30", "via", hosts[2], "dev", space.host_if], log)
    run(in_netns(wire, "sysctl", "-qw", "net.ipv4.ip_forward=1"), log)
    if conditions.bandwidth_kbit is not None:
        for interface in ("wire-root", "wire-srv"):  # each direction's egress
            run(in_netns(wire, "tc", "qdisc", "add", "dev", interface, "root", *tbf(conditions.bandwidth_kbit)), log)  # fmt: skip
    if conditions.loss_pct > 0:
        probability = f"{conditions.loss_pct / 100:.6f}"
        for inbound, outbound in (("wire-root", "wire-srv"), ("wire-srv", "wire-root")):
            run(in_netns(wire, "iptables", "-w", "-A", "FORWARD", "-i", inbound, "-o", outbound, "-m", "statistic", "--mode", "random", "--probability", probability, "-j", "DROP"), log)  # fmt: skip


def tbf(kbit: float) -> list[str]:
    """tbf's arguments for ``kbit``: 10 ms of burst (at least 4 KiB), a 50 ms queue."""
    burst = max(TBF_MIN_BURST, math.ceil(kbit * 1000 / 8 * 0.010))
    return ["tbf", "rate", f"{kbit:g}kbit", "burst", str(burst), "latency", f"{TBF_LATENCY_MS}ms"]


def namespace_pids(name: str) -> list[int]:
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        return [int(pid) for pid in run(["ip", "netns", "pids", name]).split()]
    return []


def delete_namespaces(names: Sequence[str], grace: float = 5.0) -> list[int]:
    """Stop whatever still runs inside (SIGTERM, then SIGKILL), then delete each namespace;
    returns the pids that had to be stopped. A namespace lives while a process is in it."""
    present = [name for name in names if name in _existing()]
    stopped = [pid for name in present for pid in namespace_pids(name)]
    _stop_pids(stopped, grace)
    for name in present:
        host_if = host_interface(name)
        if host_if is not None and Path("/sys/class/net", host_if).exists():
            # the kernel dismantles a deleted namespace later; deleting our end of the veth
            # now takes its peer with it, so no interface outlives this call
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                run(["ip", "link", "delete", host_if])
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            run(["ip", "netns", "delete", name])
    return stopped


def host_interface(name: str) -> str | None:
    """The root namespace's end of the veth into namespace ``name`` (None for a wire's)."""
    match = _NAME.match(name)
    if match is None or match.group(3):
        return None
    return f"ww{match.group(1)}-{match.group(2)}"


def _stop_pids(pids: list[int], grace: float) -> None:
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            processes.append(process)
    _gone, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace)


def _owner_gone(pid: int, created: float) -> bool:
    """The creating process has exited, or its pid now belongs to a later process."""
    try:
        return bool(psutil.Process(pid).create_time() > created + 1)
    except psutil.NoSuchProcess:
        return True


def cleanup_stale() -> list[str]:
    """Delete every ``wwnet-<pid>-*`` namespace whose creator is gone (a crash's leftovers,
    with their veths, qdiscs and rules), stopping what still runs in them. Returns the names."""
    stale = []
    for name in _existing():
        match = _NAME.match(name)
        if match is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            if _owner_gone(int(match.group(1)), (NETNS_DIR / name).stat().st_mtime):
                stale.append(name)
    if stale:
        delete_namespaces(stale)
    _remove_stale_logs()
    return stale


def _remove_stale_logs() -> None:
    """The logs of relays whose launcher is gone (the relay follows it within a second)."""
    pattern = re.compile(rf"^{RELAY_LOG}(\d+)-")
    for log in Path(tempfile.gettempdir()).glob(f"{RELAY_LOG}*.log"):
        match = pattern.match(log.name)
        with contextlib.suppress(FileNotFoundError):
            if match is not None and _owner_gone(int(match.group(1)), log.stat().st_ctime):
                log.unlink()


# --- the relay --------------------------------------------------------------------------------


@dataclass
class RelayProcess:
    """A running ``python -m wirewise.relay``: clients connect to ``host:port``."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    argv: list[str]
    log: Path
    stats: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> dict[str, Any] | None:
        """SIGTERM (then SIGKILL); returns the relay's own report (CPU seconds, counters)."""
        if self.proc.returncode is None:
            stop_process(self.proc)
            assert self.proc.stdout is not None
            for line in self.proc.stdout.read().decode(errors="replace").splitlines():
                if line.startswith(STATS_PREFIX):
                    self.stats = json.loads(line[len(STATS_PREFIX) :])
            self.proc.stdout.close()
        return self.stats


def start_relay(
    target: tuple[str, int],
    one_way_ms: float = 0.0,
    jitter_ms: float = 0.0,
    handshake: bool = True,
    cpus: set[int] | None = None,
    seed: int | None = None,
) -> RelayProcess:
    """The relay on a free 127.0.0.1 port, in its own process group, on ``cpus`` (default
    all); returns once it listens. It exits by itself if this process dies."""
    argv = [
        sys.executable, "-m", "wirewise.relay",
        "--listen", "127.0.0.1:0",
        "--target", f"{target[0]}:{target[1]}",
        "--one-way-ms", f"{one_way_ms:g}",
        "--jitter-ms", f"{jitter_ms:g}",
        "--handshake" if handshake else "--no-handshake",
        "--parent", str(os.getpid()),
        *(["--seed", str(seed)] if seed is not None else []),
    ]  # fmt: skip
    descriptor, name = tempfile.mkstemp(prefix=f"{RELAY_LOG}{os.getpid()}-", suffix=".log")
    log = Path(name)
    with os.fdopen(descriptor, "wb") as handle:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=handle,
                preexec_fn=child_setup(cpus or set(available_cores())),
            )
        except OSError:
            log.unlink(missing_ok=True)
            raise
        try:
            url = await_ready(proc, handle, "the relay")
        except RuntimeError as exc:
            stop_process(proc)
            assert proc.stdout is not None
            proc.stdout.close()
            output = log.read_text(errors="replace")[-600:]
            log.unlink(missing_ok=True)
            raise RuntimeError(f"{exc}: {output}") from None
    return RelayProcess(proc, "127.0.0.1", int(url.rsplit(":", 1)[1]), argv, log)


# --- measuring --------------------------------------------------------------------------------


class Probe(Protocol):
    """A small request and its response, repeated on one connection."""

    @property
    def name(self) -> str: ...

    def session(self, sock: socket.socket, host: str) -> Callable[[], None]:
        """One exchange per call on ``sock``; raises if the answer is not the expected one."""
        ...


@dataclass(frozen=True)
class HttpProbe:
    """``GET /healthz`` on a kept-alive HTTP/1.1 connection (every wirewise HTTP server answers
    it). Plain sockets and h11 rather than httpx: the figure compared is a fraction of a
    millisecond, and httpx's own per-request work would be in it (twice) as noise."""

    path: str = "/healthz"

    @property
    def name(self) -> str:
        return f"GET {self.path} (HTTP/1.1, kept alive)"

    def session(self, sock: socket.socket, host: str) -> Callable[[], None]:
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=self.path, headers=[("Host", host)])

        def exchange() -> None:
            if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
                connection.start_next_cycle()
            sock.sendall(connection.send(request) + (connection.send(h11.EndOfMessage()) or b""))
            status = 0
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError(f"{self.path}: the server closed the connection")
            if status != 200:
                raise ConnectionError(f"{self.path} answered {status}")

        return exchange


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _ms(start: int) -> float:
    return (time.perf_counter_ns() - start) / 1e6


def probe_target(
    host: str, port: int, probe: Probe, rounds: int = 20, fresh: int = 3, timeout: float = 10.0
) -> dict[str, Any]:
    """``fresh`` new connections with one exchange each (what a connection's first exchange
    costs), then ``rounds`` exchanges on one kept-alive connection (the path's round trip)."""
    connect, first = [], []
    for _ in range(fresh):
        start = time.perf_counter_ns()
        with _connect(host, port, timeout) as sock:
            connect.append(_ms(start))
            probe.session(sock, host)()
            first.append(_ms(start))
    times = []
    with _connect(host, port, timeout) as sock:
        exchange = probe.session(sock, host)
        exchange()  # not counted: the first pays for the handshake
        for _ in range(rounds):
            start = time.perf_counter_ns()
            exchange()
            times.append(_ms(start))
    return {
        "connect_ms": _round(statistics.median(connect)) if connect else None,
        "first_exchange_ms": _round(statistics.median(first)) if first else None,
        "app_rtt_ms": {
            "p50": _round(statistics.median(times)),
            "min": _round(min(times)),
            "max": _round(max(times)),
            "n": len(times),
        },
    }


def _round(value: float) -> float:
    return round(value, 3)


def measure_path(
    through: tuple[str, int],
    direct: tuple[str, int],
    probe: Probe | None = None,
    rounds: int = 20,
    fresh: int = 3,
) -> dict[str, Any]:
    """The same probe through the path and directly to the server: the difference is what
    the path adds. ``probe=None`` is for a backend that does not speak HTTP (the tcp floor)."""
    if probe is None:
        return {"skipped": "no probe for this backend (not HTTP): the path was not measured"}
    path = probe_target(*through, probe, rounds, fresh)
    alone = probe_target(*direct, probe, rounds, fresh)
    added = path["app_rtt_ms"]["p50"] - alone["app_rtt_ms"]["p50"]
    handshake = path["first_exchange_ms"] - path["app_rtt_ms"]["p50"]
    return {
        "probe": probe.name,
        "rounds": rounds,
        "fresh_connections": fresh,
        "through_path": path,
        "direct": alone,
        "added_rtt_ms": _round(added),
        "handshake_rtt_ms": _round(handshake),
        "app_rtt_ms": path["app_rtt_ms"],
    }


def relay_overhead(
    server: tuple[str, int], probe: Probe | None = None, rounds: int = 20
) -> dict[str, Any]:
    """What the relay itself adds, at zero delay: the probe through a relay with no delay and
    no handshake charge, against the probe straight to the server."""
    relay = start_relay(server, handshake=False)
    try:
        figures = measure_path((relay.host, relay.port), server, probe or HttpProbe(), rounds)
    finally:
        stats = relay.stop()
        relay.log.unlink(missing_ok=True)
    return {**figures, "relay_overhead_ms": figures["added_rtt_ms"], "relay": stats}


# --- the path ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the server must run: bind ``server_host``, start with ``exec_prefix`` first."""

    server_host: str
    exec_prefix: tuple[str, ...] = ()
    namespace: str | None = None


class NetworkPath:
    """The conditions between clients and one server, from setup to cleanup::

        with NetworkPath(PROFILES["3g"].conditions) as path:
            placement = path.prepare()          # before the server starts
            ...start the server: placement.exec_prefix + argv, --host placement.server_host
            host, port = path.attach(server_port)   # where clients connect
            figures = path.measure()
            record = path.record()              # for the result file

    ``close()`` (also on exit, at interpreter exit, and when the object is collected) stops the
    relay, stops what still runs in the namespace, and deletes it.
    """

    def __init__(
        self,
        conditions: Conditions,
        relay_cpus: set[int] | None = None,
        seed: int | None = None,
        always_relay: bool = False,
    ) -> None:
        """``always_relay``: through the relay even at rtt 0, so that every point of a sweep
        pays the relay's own cost and only the delay differs between them."""
        self.conditions = conditions
        self.always_relay = always_relay
        self.relay_cpus = relay_cpus
        self.seed = seed
        self.placement: Placement | None = None
        self.namespaces: Namespaces | None = None
        self.relay: RelayProcess | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.measurement: dict[str, Any] | None = None
        self.relay_stats: dict[str, Any] | None = None
        self.stopped_pids: list[int] = []
        self.stale_removed: list[str] = []
        self._finalizer = weakref.finalize(self, _cleanup, [], [])

    def __enter__(self) -> NetworkPath:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def prepare(self) -> Placement:
        """Create the namespaces if loss or bandwidth are asked for; say where the server runs.
        As root, first delete what crashed runs left (:func:`cleanup_stale`). Once only."""
        if self.placement is not None:
            return self.placement
        require_root(self.conditions)
        if os.geteuid() == 0 and shutil.which("ip") is not None:
            self.stale_removed = cleanup_stale()
        if not self.conditions.needs_namespace:
            self.placement = Placement("127.0.0.1")
            return self.placement
        missing = missing_programs()
        if missing:
            raise RuntimeError(
                f"loss and bandwidth need {', '.join(missing)} (Debian: apt install iproute2"
                " iptables procps)"
            )
        self.namespaces = create_namespaces(self.conditions)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self.namespaces.names(), [])
        self.placement = Placement(
            self.namespaces.server_address,
            tuple(in_netns(self.namespaces.server)),
            self.namespaces.server,
        )
        return self.placement

    def attach(self, server_port: int) -> tuple[str, int]:
        """The server listens on ``server_port``: start the relay if there is a delay, and
        return where clients connect."""
        placement = self.placement or self.prepare()
        self.server = (placement.server_host, server_port)
        if self.conditions.rtt_ms > 0 or self.always_relay:
            self.relay = start_relay(
                self.server,
                self.conditions.one_way_ms,
                self.conditions.jitter_ms,
                cpus=self.relay_cpus,
                seed=self.seed,
            )
            self._finalizer.detach()
            names = self.namespaces.names() if self.namespaces else []
            self._finalizer = weakref.finalize(self, _cleanup, names, [self.relay])
            self.client = (self.relay.host, self.relay.port)
        else:
            self.client = self.server
        return self.client

    def measure(
        self, probe: Probe | None = None, rounds: int = 20, fresh: int = 3
    ) -> dict[str, Any]:
        """Time the probe through the path and straight to the server (past the relay, still
        through the namespaces): what the path adds, measured. The default probe is
        :class:`HttpProbe`; a raw-TCP backend passes a probe of its own, or calls
        :meth:`skip_measurement` with the reason."""
        if self.client is None or self.server is None:
            raise RuntimeError("attach() the server before measuring the path")
        figures = measure_path(self.client, self.server, probe or HttpProbe(), rounds, fresh)
        if "added_rtt_ms" in figures:
            figures["expected_rtt_ms"] = self.conditions.rtt_ms
            figures["relay_overhead_ms"] = _round(figures["added_rtt_ms"] - self.conditions.rtt_ms)
        self.measurement = figures
        return figures

    def skip_measurement(self, reason: str) -> dict[str, Any]:
        """For a backend no probe speaks (the tcp floor): the record says why not."""
        self.measurement = {"skipped": reason}
        return self.measurement

    def record(self) -> dict[str, Any]:
        """How each condition was applied, and what was measured: for the result file. After
        :meth:`close` it also holds the relay's own report (CPU seconds, counters)."""
        space = self.namespaces
        return {
            "conditions": self.conditions.as_dict(),
            "describe": self.conditions.describe(),
            "delay": {
                "by": "wirewise.relay" if self.relay else None,
                "argv": self.relay.argv if self.relay else None,
                "pid": self.relay.pid if self.relay else None,
                "stats": self.relay_stats,
            },
            "namespace": space.server if space else None,
            "wire_namespace": space.wire if space else None,
            "addresses": {"host": space.host_address, "server": space.server_address}
            if space
            else None,
            "bandwidth": {
                "qdisc": tbf(self.conditions.bandwidth_kbit),
                "on": ["wire-root", "wire-srv"],
            }
            if space and self.conditions.bandwidth_kbit is not None
            else None,
            "loss": {
                "rule": "iptables FORWARD -m statistic --mode random -j DROP",
                "each_way": True,
                "segments_per_packet": 1,
            }
            if space and self.conditions.loss_pct > 0
            else None,
            "commands": [" ".join(argv) for argv in space.commands] if space else [],
            "server": list(self.server) if self.server else None,
            "client": list(self.client) if self.client else None,
            "stale_removed": self.stale_removed,
            "stopped_at_close": self.stopped_pids,
            "measured": self.measurement,
        }

    def close(self) -> None:
        """Stop the relay, then what runs in the namespaces, then delete them. Idempotent."""
        if self.relay is not None and self.relay_stats is None:
            self.relay_stats = self.relay.stop()
            self.relay.log.unlink(missing_ok=True)
        if self.namespaces is not None:
            self.stopped_pids = delete_namespaces(self.namespaces.names()) or self.stopped_pids
        self._finalizer.detach()


def _cleanup(names: list[str], relays: list[RelayProcess]) -> None:
    """The safety net (``weakref.finalize`` runs it at exit or collection): no reference to
    the path, so that it can be collected at all."""
    for relay in relays:
        with contextlib.suppress(Exception):
            relay.stop()
    if names:
        with contextlib.suppress(Exception):
            delete_namespaces(names)


# --- the bench's server behind the path ------------------------------------------------------


@dataclass
class ConditionedServer:
    """The bench's one server behind the network conditions: clients and the byte counter use
    the relay's port, the sampler follows the server, and the relay is a part (pinned to the
    server's core, as a proxy is: the load generator's core stays the generator's)."""

    server: Server
    path: NetworkPath

    @classmethod
    def start(cls, start: Callable[[Placement], Server], network: NetworkPath) -> ConditionedServer:
        """``start(placement)`` starts the server where the path says; then the relay."""
        placement = network.prepare()
        try:
            server = start(placement)
        except BaseException:
            network.close()
            raise
        try:
            network.attach(server.port)
            if server.backend.transport == "tcp":
                network.skip_measurement("the tcp floor speaks no HTTP: the path was not probed")
            else:
                try:
                    network.measure()
                except (OSError, h11.ProtocolError) as exc:
                    # the bare websockets server closes after each HTTP answer: no kept-alive
                    # probe; the run goes on, and its record says why the path is unmeasured
                    network.skip_measurement(f"the path was not probed: {exc}")
        except BaseException:
            server.stop()
            network.close()
            raise
        return cls(server, network)

    @property
    def backend(self) -> Backend:
        return self.server.backend

    @property
    def url(self) -> str:
        assert self.path.client is not None
        host, port = self.path.client
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        assert self.path.client is not None
        return self.path.client[1]

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def parts(self) -> dict[str, int]:
        relay = {"relay": self.path.relay.pid} if self.path.relay else {}
        return {**relay, "instance 1": self.server.pid}

    def stop(self) -> int | None:
        status = self.server.stop()
        self.path.close()
        return status
