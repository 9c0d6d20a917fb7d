"""Network conditions: the relay, the namespaces, the measurement and the cleanup, on real
sockets, real processes and (as root) real namespaces, qdiscs and iptables rules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from tests.servers import ServerProcess
from wirewise import netpath
from wirewise.netpath import (
    PROFILES,
    Conditions,
    NeedsRoot,
    NetworkPath,
    cleanup_stale,
    relay_overhead,
    require_root,
    start_relay,
)
from wirewise.registry import parse_ready_line
from wirewise.relay import STATS_PREFIX

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------


def needs_root() -> None:
    """Skip unless namespaces can be made here."""
    if os.geteuid() != 0:
        pytest.skip("namespaces, tbf and iptables need root")
    missing = netpath.missing_programs()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt install iproute2 iptables procps)")


class TcpServer:
    """A thread-per-connection TCP server on an ephemeral loopback port, for the relay's tests:
    ``handle`` gets each accepted socket."""

    def __init__(self, handle: Callable[[socket.socket], None], host: str = "127.0.0.1") -> None:
        self.handle = handle
        self.listener = socket.create_server((host, 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            self.handle(sock)

    def close(self) -> None:
        self.listener.close()


def echo(sock: socket.socket) -> None:
    """Echo until the client's end of stream, then close (a half-close answered in full)."""
    while data := sock.recv(65536):
        sock.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = TcpServer(echo)
    yield server.address
    server.close()


@pytest.fixture
def relays() -> Iterator[list[netpath.RelayProcess]]:
    """Relays a test starts, stopped by pid however it ends."""
    started: list[netpath.RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()
        relay.log.unlink(missing_ok=True)


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def round_trips(sock: socket.socket, count: int) -> list[float]:
    """Milliseconds for ``count`` one-byte echoes."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(b"x")
        assert sock.recv(16) == b"x"
        times.append((time.perf_counter() - start) * 1000)
    return times


def gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def namespaces() -> list[str]:
    return sorted(os.listdir(netpath.NETNS_DIR)) if netpath.NETNS_DIR.exists() else []


def interface_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


def start_inside(prefix: tuple[str, ...], argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``argv`` behind ``prefix`` and return it with its first output line (its port or
    its ready line); the rest of its output is drained so that it never blocks."""
    proc = subprocess.Popen(
        [*prefix, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if parse_ready_line(line) or line.strip().isdigit():
            threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
            return proc, line
    proc.wait(5)
    raise RuntimeError(f"{argv} did not start (status {proc.returncode})")


def drain(stream: IO[str]) -> None:
    with stream:
        stream.read()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serve_poll_inside(placement: netpath.Placement) -> tuple[subprocess.Popen[str], int]:
    """A real ``wirewise serve poll`` in the path's namespace."""
    argv = [sys.executable, "-m", "wirewise", "serve", "poll"]
    proc, line = start_inside(
        placement.exec_prefix, [*argv, "--host", placement.server_host, "--port", "0"]
    )
    ready = parse_ready_line(line)
    assert ready is not None
    assert ready[3] == proc.pid, "ip netns exec execs: the pid is the server's"
    return proc, int(ready[1].rsplit(":", 1)[1])


BULK = """
import socket, sys
listener = socket.create_server((sys.argv[1], 0))
print(listener.getsockname()[1], flush=True)
while True:
    sock, _ = listener.accept()
    with sock:
        if sock.recv(1) == b"d":
            sock.sendall(b"x" * int(sys.argv[2]))
        else:
            while sock.recv(65536):
                pass
            sock.sendall(b"k")
"""
"""A bulk server: ``d`` sends SIZE bytes and closes; ``u`` reads to the end, then says ``k``."""


# --- conditions and profiles ------------------------------------------------------------------


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rtt_ms": -1}, "rtt_ms must be a finite number >= 0"),
        ({"rtt_ms": float("nan")}, "rtt_ms must be a finite number"),
        ({"rtt_ms": float("inf")}, "rtt_ms must be a finite number"),
        ({"rtt_ms": 10, "jitter_ms": 6}, "at most half the rtt"),
        ({"loss_pct": 100}, "below 100"),
        ({"loss_pct": -0.5}, "loss_pct must be a finite number >= 0"),
        ({"bandwidth_kbit": 4}, "at least 8"),
    ],
)
def test_conditions_refuse_what_cannot_be_applied(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Conditions(**kwargs)


@pytest.mark.timeout(5)
def test_conditions_say_what_they_need() -> None:
    assert Conditions().none and not Conditions().needs_namespace
    delay = Conditions(rtt_ms=100, jitter_ms=10)
    assert not delay.none and not delay.needs_namespace and delay.one_way_ms == 50
    assert Conditions(loss_pct=1).needs_namespace
    assert Conditions(bandwidth_kbit=1600).needs_namespace
    full = Conditions(rtt_ms=100, jitter_ms=10, loss_pct=1, bandwidth_kbit=1600)
    assert full.describe() == "rtt 100 ms ± 10 each way, loss 1 % each way, 1600 kbit/s"
    assert Conditions().describe() == "no added conditions"
    assert full.as_dict() == {
        "rtt_ms": 100,
        "jitter_ms": 10,
        "loss_pct": 1,
        "bandwidth_kbit": 1600,
    }


@pytest.mark.timeout(5)
def test_every_profile_is_valid_sourced_and_in_the_table() -> None:
    assert set(PROFILES) == {"lan", "wifi", "4g", "3g", "lossy"}
    doc = netpath.__doc__ or ""
    for name, profile in PROFILES.items():
        assert isinstance(profile.conditions, Conditions)
        assert profile.source.strip()
        assert f"| {name} | {profile.conditions.rtt_ms:g} ms |" in doc
    assert PROFILES["3g"].conditions == Conditions(rtt_ms=300, bandwidth_kbit=1600)
    assert PROFILES["4g"].conditions == Conditions(rtt_ms=170, bandwidth_kbit=9000)
    assert "WebPageTest" in PROFILES["3g"].source
    assert "wirewise's choice" in PROFILES["lossy"].source


# --- the relay --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_relay_forwards_megabytes_intact_both_ways_and_a_half_close(
    echo_server: tuple[str, int], relays: list[netpath.RelayProcess]
) -> None:
    relay = start_relay(echo_server)
    relays.append(relay)
    payload = os.urandom(4 << 20)
    with connect((relay.host, relay.port)) as sock:

        def send() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # the echo answers in full after our end of stream

        sender = threading.Thread(target=send)
        sender.start()
        received = recv_all(sock)
        sender.join(10)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    stats = relay.stop()
    assert stats is not None
    assert stats["bytes_up"] == stats["bytes_down"] == len(payload)


@pytest.mark.timeout(30)
def test_relay_adds_the_round_trip_and_charges_a_new_connection_its_handshake(
    echo_server: tuple[str, int], relays: list[netpath.RelayProcess]
) -> None:
    relay = start_relay(echo_server, one_way_ms=50)
    relays.append(relay)
    with connect((relay.host, relay.port)) as sock:
        first = round_trips(sock, 1)[0]
        times = round_trips(sock, 10)
    assert 100 <= statistics.median(times) < 130, times
    assert min(times) >= 100
    # connect() returned at once; the first exchange waited for the handshake's round trip
    assert 200 <= first < 260, first


@pytest.mark.timeout(30)
def test_relay_keeps_order_under_jitter(
    echo_server: tuple[str, int], relays: list[netpath.RelayProcess]
) -> None:
    relay = start_relay(echo_server, one_way_ms=10, jitter_ms=10, handshake=False, seed=7)
    relays.append(relay)
    messages = [f"{n:05d};".encode() for n in range(300)]
    with connect((relay.host, relay.port)) as sock:
        for message in messages:
            sock.sendall(message)
            time.sleep(0.0005)  # separate chunks, each with its own jittered delay
        sock.shutdown(socket.SHUT_WR)
        received = recv_all(sock)
    assert received == b"".join(messages)
    stats = relay.stop()
    assert stats is not None and stats["chunks_up"] > 50, "the messages were not separate chunks"


@pytest.mark.timeout(30)
def test_relay_passes_closes_both_ways(relays: list[netpath.RelayProcess]) -> None:
    seen: list[bytes] = []
    server_saw_eof = threading.Event()

    def greet_and_close(sock: socket.socket) -> None:
        if sock.recv(1) == b"c":  # the client closes first: we see its end of stream
            seen.append(recv_all(sock))
            server_saw_eof.set()
        else:  # we close first: the client sees ours
            sock.sendall(b"bye")

    server = TcpServer(greet_and_close)
    try:
        relay = start_relay(server.address, one_way_ms=5)
        relays.append(relay)
        with connect((relay.host, relay.port)) as sock:
            sock.sendall(b"s")
            assert recv_all(sock) == b"bye"
        with connect((relay.host, relay.port)) as sock:
            sock.sendall(b"c-last words")
        assert server_saw_eof.wait(5)
        assert seen == [b"-last words"]
        assert wait_until(lambda: relay.stop() is not None)
        assert relay.stats is not None and relay.stats["open"] == 0
    finally:
        server.close()


@pytest.mark.timeout(30)
def test_relay_holds_bounded_memory_for_a_reader_that_does_not_read(
    relays: list[netpath.RelayProcess],
) -> None:
    reading = threading.Event()
    received: list[int] = []

    def slow_reader(sock: socket.socket) -> None:
        reading.wait(20)
        received.append(len(recv_all(sock)))

    server = TcpServer(slow_reader)
    offered = 64 << 20
    try:
        relay = start_relay(server.address, one_way_ms=5, handshake=False)
        relays.append(relay)
        before = psutil.Process(relay.pid).memory_info().rss
        sent = 0
        with connect((relay.host, relay.port)) as sock:

            def send() -> None:
                nonlocal sent
                block = b"x" * (1 << 20)
                for _ in range(offered // len(block)):
                    sock.sendall(block)
                    sent += len(block)
                sock.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            time.sleep(1.0)
            growth = psutil.Process(relay.pid).memory_info().rss - before
            assert sent < offered, "the sender was never held back"
            assert growth < 8 << 20, f"the relay grew by {growth >> 20} MiB"
            reading.set()
            sender.join(20)
        assert wait_until(lambda: received == [offered], timeout=20), received
        stats = relay.stop()
        assert stats is not None and stats["pauses"] >= 1
    finally:
        reading.set()
        server.close()


@pytest.mark.timeout(30)
def test_relay_reports_its_cost_on_sigterm(
    echo_server: tuple[str, int], relays: list[netpath.RelayProcess]
) -> None:
    relay = start_relay(echo_server)
    relays.append(relay)
    for _ in range(3):
        with connect((relay.host, relay.port)) as sock:
            round_trips(sock, 5)
    os.kill(relay.pid, signal.SIGTERM)
    assert relay.proc.wait(10) == 0
    assert relay.proc.stdout is not None
    lines = relay.proc.stdout.read().decode().splitlines()
    relay.proc.stdout.close()
    stats_lines = [line for line in lines if line.startswith(STATS_PREFIX)]
    assert len(stats_lines) == 1, lines
    stats = json.loads(stats_lines[0][len(STATS_PREFIX) :])
    assert stats["connections"] == 3
    assert stats["chunks_up"] == stats["chunks_down"] == 15
    assert stats["bytes_up"] == stats["bytes_down"] == 15
    assert stats["cpu_seconds"] > 0
    assert stats["pid"] == relay.pid


@pytest.mark.timeout(30)
def test_relay_overhead_at_zero_delay_is_small(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory("poll")
    port = int(server.url.rsplit(":", 1)[1])
    figures = relay_overhead(("127.0.0.1", port), rounds=40)
    print(json.dumps(figures))  # the figure the report quotes (pytest -s)
    assert -0.5 < figures["relay_overhead_ms"] < 2.0, figures
    assert figures["relay"]["connections"] == 4  # three fresh, one kept alive


# --- root: refusal ----------------------------------------------------------------------------

REFUSAL = """
import sys
from wirewise.netpath import Conditions, NeedsRoot, require_root
try:
    require_root(Conditions(rtt_ms=float(sys.argv[1]), loss_pct=float(sys.argv[2])))
except NeedsRoot as exc:
    sys.exit(str(exc))
print("allowed")
"""


@pytest.mark.timeout(30)
def test_loss_is_refused_without_root_with_one_sentence_and_delay_is_not() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("becoming an unprivileged user needs root and setpriv (util-linux)")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def as_nobody(rtt: str, loss: str) -> subprocess.CompletedProcess[str]:
        argv = [*nobody, sys.executable, "-c", REFUSAL, rtt, loss]
        return subprocess.run(argv, capture_output=True, text=True, cwd="/", env=env, timeout=20)

    refused = as_nobody("50", "1")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        "loss and bandwidth need root (a network namespace, tbf and iptables); run as root or"
        " drop --loss/--bandwidth\n"
    )
    allowed = as_nobody("50", "0")
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == (0, "allowed\n", "")
    with pytest.raises(PermissionError):  # NeedsRoot is one, for callers that catch those
        raise NeedsRoot("x")
    require_root(Conditions(loss_pct=1))  # as root: allowed


# --- root: namespaces -------------------------------------------------------------------------


@pytest.mark.timeout(40)
def test_loss_and_bandwidth_build_a_wire_a_real_server_is_reached_and_close_removes_it() -> None:
    needs_root()
    conditions = Conditions(rtt_ms=20, loss_pct=1, bandwidth_kbit=20000)
    path = NetworkPath(conditions)
    server: subprocess.Popen[str] | None = None
    try:
        placement = path.prepare()
        space = path.namespaces
        assert space is not None and placement.namespace == space.server
        assert placement.exec_prefix == ("ip", "netns", "exec", space.server)
        assert {space.server, space.wire} <= set(namespaces())
        assert space.server.startswith(f"wwnet-{os.getpid()}-")
        assert interface_exists(space.host_if)
        qdiscs = output("ip", "netns", "exec", space.wire, "tc", "qdisc", "show")
        for interface in ("wire-root", "wire-srv"):  # both directions' egress
            assert re.search(rf"qdisc tbf \S+ dev {interface} root .*rate 20Mbit", qdiscs), qdiscs
        rules = output("ip", "netns", "exec", space.wire, "iptables", "-S", "FORWARD")
        for way in ("-i wire-root -o wire-srv", "-i wire-srv -o wire-root"):  # each direction
            rule = re.search(
                rf"-A FORWARD {way} -m statistic --mode random --probability (\S+) -j DROP", rules
            )
            assert rule is not None and float(rule.group(1)) == pytest.approx(0.01), rules

        server, port = serve_poll_inside(placement)
        client = path.attach(port)
        assert client[0] == "127.0.0.1" and path.relay is not None
        figures = path.measure(rounds=15)
        assert 20 <= figures["added_rtt_ms"] < 35, figures
        assert figures["handshake_rtt_ms"] >= 15, figures
        record = path.record()
        assert record["namespace"] == space.server and record["delay"]["pid"] == path.relay.pid
        assert any("tbf rate 20000kbit" in command for command in record["commands"])
        relay_pid = path.relay.pid
    finally:
        path.close()
        if server is not None:
            stop(server)
    assert server is not None
    assert server.returncode is not None, "close() stops what still runs in the namespace"
    assert not {space.server, space.wire} & set(namespaces())
    assert not interface_exists(space.host_if)
    assert gone(relay_pid)
    assert path.record()["delay"]["stats"]["connections"] == 4
    path.close()  # idempotent


@pytest.mark.timeout(30)
def test_bandwidth_limits_a_bulk_transfer_each_way() -> None:
    needs_root()
    size = 1 << 20
    with NetworkPath(Conditions(bandwidth_kbit=8000)) as path:  # 1 MB/s each way
        placement = path.prepare()
        proc, line = start_inside(
            placement.exec_prefix, [sys.executable, "-c", BULK, placement.server_host, str(size)]
        )
        try:
            address = path.attach(int(line))
            assert address == (placement.server_host, int(line)), "no delay: no relay"
            start = time.perf_counter()
            with connect(address) as sock:
                sock.sendall(b"d")
                assert len(recv_all(sock)) == size
            down = time.perf_counter() - start
            start = time.perf_counter()
            with connect(address) as sock:
                sock.sendall(b"u" + b"x" * size)
                sock.shutdown(socket.SHUT_WR)
                assert recv_all(sock) == b"k"
            up = time.perf_counter() - start
        finally:
            stop(proc)
    expected = size * 8 / 8_000_000
    for seconds in (down, up):
        assert 0.7 * expected < seconds < 1.6 * expected, (down, up, expected)


CRASH = """
import json, subprocess, sys, time
from wirewise.netpath import Conditions, NetworkPath
path = NetworkPath(Conditions(rtt_ms=10, loss_pct=1))
placement = path.prepare()
sleeper = subprocess.Popen([*placement.exec_prefix, sys.executable, "-c", "import time; time.sleep(60)"])
path.attach(9)
space = path.namespaces
print(json.dumps({"names": [space.server, space.wire], "host_if": space.host_if,
                  "relay": path.relay.pid, "sleeper": sleeper.pid}), flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(40)
def test_cleanup_stale_removes_what_a_killed_process_left() -> None:
    needs_root()
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    left: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        left = json.loads(proc.stdout.readline())
        names = left["names"]
        assert set(names) <= set(namespaces())
        os.kill(proc.pid, signal.SIGKILL)  # no close(), no atexit, no finalizer
        proc.wait(5)
        assert set(names) <= set(namespaces()), "a SIGKILL leaves the namespaces behind"
        assert wait_until(lambda: gone(left["relay"])), "the relay follows its parent"
        removed = cleanup_stale()
        assert set(names) <= set(removed)
        assert not set(names) & set(namespaces())
        assert not interface_exists(left["host_if"])
        assert wait_until(lambda: gone(left["sleeper"]))
        assert not list(Path(tempfile.gettempdir()).glob(f"wirewise-relay-{proc.pid}-*")), "its log"
        assert not set(cleanup_stale()) & set(names)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        if left:
            netpath.delete_namespaces(left["names"])
