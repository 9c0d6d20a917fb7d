"""One backend on several processes: Redis for the shared rooms, N ``wirewise serve`` instances,
and a balancer in front (HAProxy, nginx, or the kernel's ``SO_REUSEPORT``).

Every part is a child process in its own process group, started on a free loopback port and
stopped by its pid (SIGTERM, then SIGKILL); each one also gets SIGTERM from the kernel if this
process dies first (``PR_SET_PDEATHSIG``), so nothing outlives the launcher. The balancer
configurations are generated here, with the settings every transport needs: WebSocket upgrades
tunnelled, event streams and long polls never buffered, timeouts longer than the heartbeat and
the long-poll wait, and a failed instance skipped for new connections.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from wirewise.processes import ROOT, await_ready, forward, stop_process

__all__ = ["BALANCERS", "Cluster", "ClusterPlan", "Part", "start_cluster", "start_redis"]

BALANCERS = ("haproxy", "nginx", "reuseport")
START_TIMEOUT = 20.0
FILE_LIMIT = 20_000
"""Open files per process on this machine (the hard limit)."""
MAX_PROXIED = FILE_LIMIT // 2 - 100
"""Client connections one balancer process can proxy: each holds two descriptors."""
PROGRAMS = {"redis": "redis-server", "haproxy": "haproxy", "nginx": "nginx"}
"""Debian's programs for each part (``apt install redis-server haproxy nginx-light``)."""


@dataclass
class Part:
    """One process of a cluster: what it is, where it answers, its pid and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    address: str
    log: Path
    pump: threading.Thread | None = None
    """Copies its output to ``log`` (a full pipe would stall it)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self) -> str:
        return f"wirewise: {self.name} at {self.address} (pid {self.pid})"

    def stop(self, grace: float = 10.0) -> int | None:
        status = stop_process(self.proc, grace)
        self._release()
        return status

    def kill(self) -> None:
        """SIGKILL, as a crash would (no clean shutdown, no goodbyes to clients)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self._release()

    def _release(self) -> None:
        if self.pump is not None:
            self.pump.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass(frozen=True)
class ClusterPlan:
    transport: str
    instances: int = 3
    balancer: str = "haproxy"
    broker: str | None = None
    """A ``redis://`` URL to share; None starts a Redis of our own."""
    server: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    serve_args: tuple[str, ...] = ()
    """More ``wirewise serve`` options for every instance (``--set``, ``--presence-timeout``)."""
    sticky: bool = False
    """The balancer sends each session to one instance (hashing its token, or for the tcp floor
    its source address) instead of round robin. No transport needs it: any instance resumes
    any stream from the shared history."""


@dataclass
class Cluster:
    plan: ClusterPlan
    url: str = ""
    redis: Part | None = None
    instances: list[Part] = field(default_factory=list)
    balancer: Part | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wirewise-")))
    broker: str = ""
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    """One signer: a token from any instance works on all (never on a command line)."""

    def replace(self, index: int) -> Part:
        """A deploy's step: SIGTERM instance ``index`` (its clients are told to reconnect),
        wait until it has exited, and start its replacement on the same port."""
        old = self.instances[index]
        port = int(old.address.rsplit(":", 1)[1])
        old.stop()
        number = int(old.name.split()[-1])
        new = start_instance(self.plan, number, self.broker, self.secret, port, self.workdir)
        self.instances[index] = new
        return new

    @property
    def parts(self) -> list[Part]:
        front = [self.balancer] if self.balancer is not None else []
        back = [self.redis] if self.redis is not None else []
        return [*front, *self.instances, *back]

    def stop(self) -> None:
        """Front to back: the balancer, the instances (clients see them end), then Redis."""
        for part in self.parts:
            part.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def check_plan(plan: ClusterPlan) -> None:
    """Refuse what cannot work, with a sentence that says why."""
    if plan.instances < 1:
        raise ValueError(f"--instances takes 1 or more, not {plan.instances}")
    if plan.balancer not in BALANCERS:
        raise ValueError(f"--balancer takes {' | '.join(BALANCERS)}, not {plan.balancer!r}")
    if plan.broker is not None and not plan.broker.startswith(("redis://", "unix://")):
        raise ValueError(
            "several instances share rooms through Redis: --broker redis or redis://HOST:PORT"
        )
    if plan.sticky and plan.balancer == "reuseport":
        raise ValueError(
            "--sticky needs a balancer that reads the request: SO_REUSEPORT spreads connections"
            " by the kernel's hash of addresses and ports"
        )
    if plan.balancer == "nginx" and plan.transport == "h2":
        raise ValueError(
            "h2 is balanced by haproxy or reuseport: nginx 1.22 serves cleartext HTTP/2 only as"
            " prior knowledge, refusing the client's HTTP/1.1 login"
        )
    if plan.balancer == "nginx" and plan.transport == "tcp":
        raise ValueError(
            "the tcp floor is balanced by haproxy or reuseport (nginx-light has no stream module)"
        )
    for name in ("redis", plan.balancer):
        if (
            name in PROGRAMS
            and shutil.which(PROGRAMS[name]) is None
            and (name != "redis" or plan.broker is None)
        ):
            raise ValueError(
                f"{PROGRAMS[name]} is not installed (Debian: apt install "
                f"{'nginx-light' if name == 'nginx' else PROGRAMS[name]})"
            )


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the part that takes it binds it next)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _own_group_dying_with_us() -> None:
    """For ``Popen(preexec_fn=...)``: its own process group, and SIGTERM when we die."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    handle = log.open("wb")
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_own_group_dying_with_us,
    )
    return proc, handle


def _follow(proc: subprocess.Popen[bytes], handle: IO[bytes]) -> threading.Thread:
    assert proc.stdout is not None
    return forward(proc.stdout, handle)


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer in {START_TIMEOUT:g} s")


def _connects(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def start_redis(workdir: Path, host: str = "127.0.0.1") -> Part:
    """Debian's ``redis-server`` on a free port, in memory only (no snapshots, no AOF): ids stay
    unique across its restarts anyway (see servers/redis_broker.py)."""
    port = free_port(host)
    log = workdir / "redis.log"
    argv = [
        PROGRAMS["redis"],
        "--bind", host,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--protected-mode", "no",
        "--maxclients", "10000",
        "--dir", str(workdir),
        "--loglevel", "warning",
    ]  # fmt: skip
    proc, handle = _spawn(argv, log)
    part = Part("redis", proc, f"redis://{host}:{port}", log, _follow(proc, handle))
    try:
        _wait_for(lambda: _pong(host, port), proc, "redis-server")
    except RuntimeError:
        part.stop()
        raise
    return part


def _pong(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def start_instance(
    plan: ClusterPlan, number: int, broker: str, secret: str, port: int, workdir: Path
) -> Part:
    """``wirewise serve`` number ``number``, sharing rooms through ``broker``."""
    argv = [
        sys.executable, "-m", "wirewise", "serve", plan.transport,
        "--host", plan.host,
        "--port", str(port),
        "--broker", broker,
        *(["--reuse-port"] if plan.balancer == "reuseport" else []),
        *(["--server", plan.server] if plan.server else []),
        *plan.serve_args,
    ]  # fmt: skip
    log = workdir / f"instance-{number}.log"
    again = 1
    while log.exists():  # a replacement (a rolling restart) keeps its predecessor's log
        again += 1
        log = workdir / f"instance-{number}.{again}.log"
    proc, handle = _spawn(argv, log, {"WIREWISE_SECRET": secret})  # not on a command line
    try:
        url = await_ready(proc, handle, f"instance {number}")
    except RuntimeError:
        stop_process(proc)
        handle.close()
        assert proc.stdout is not None
        proc.stdout.close()
        raise
    return Part(f"instance {number}", proc, url, log, _follow(proc, handle))


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _address_of(url: str) -> str:
    """An instance's host:port as its ready line gave it (it listens where --host said)."""
    return url.split("://", 1)[1]


def haproxy_balance(plan: ClusterPlan, mode: str) -> str:
    """Round robin, or (sticky) a consistent hash of the session's token: an instance's loss
    moves only its own sessions; a request with no token (a login) goes round robin."""
    if not plan.sticky:
        return "    balance roundrobin\n"
    if mode == "tcp":
        return "    balance source\n    hash-type consistent\n"
    return (
        "    http-request set-var(txn.session) req.hdr(authorization),word(2,' ')\n"
        "    http-request set-var(txn.session) url_param(token) if !{ var(txn.session) -m found }\n"
        "    http-request set-var(txn.session) req.cook(wirewise_token)"
        " if !{ var(txn.session) -m found }\n"
        "    balance hash var(txn.session)\n"
        "    hash-type consistent\n"
    )


def haproxy_config(plan: ClusterPlan, port: int, backends: list[str]) -> str:
    """Round robin (or sticky) over the instances; a refused connection is retried elsewhere."""
    mode = "tcp" if plan.transport == "tcp" else "http"
    proto = " proto h2" if plan.transport == "h2" else ""
    servers = "\n".join(
        f"    server i{n} {_address_of(url)}{proto} check inter 1s fall 1 rise 1"
        for n, url in enumerate(backends, 1)
    )
    # HTTP checks speak HTTP/1.1, which an h2c-only server refuses: h2 and tcp get TCP checks
    health = "" if mode == "tcp" or proto else "    option httpchk GET /healthz\n"
    # forward each event as it comes: without it HAProxy corks a chunked response while it
    # expects more (MSG_MORE), and an SSE event waited ~200 ms here
    no_delay = "" if mode == "tcp" else "    option http-no-delay\n"
    return f"""\
global
    # two descriptors per proxied connection under the 20,000-file limit
    maxconn {MAX_PROXIED}
    nbthread 1

defaults
    mode {mode}
    timeout connect 2s
    # longer than the SSE heartbeat (15 s) and the longest long poll (30 s)
    timeout client 65s
    timeout server 65s
    # an upgraded WebSocket, or the tcp floor's socket, idles up to an hour
    timeout tunnel 1h
    timeout client-fin 5s
    option redispatch
{no_delay}    # a client that closes its event stream or long poll closes the server's side too (without
    # it the instance learns only at the next heartbeat's write, up to 15 s later)
    option abortonclose
    retries 3

frontend chat
    # no "proto h2": HAProxy tells an h2c preface from HTTP/1.1 itself, so a client that logs
    # in over HTTP/1.1 and streams over h2 (as one process serves them both) gets both
    bind {plan.host}:{port}
    default_backend instances

backend instances
{haproxy_balance(plan, mode)}{health}{servers}
"""


NGINX_TUNED = """\
proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            # event streams and long polls go out as they are written
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;"""
"""What every transport needs of nginx in front of it (a location's directives after
``proxy_pass``): the README's recommended configuration."""


def nginx_main(workdir: Path, http: str) -> str:
    """A whole nginx configuration around ``http`` (upstreams and servers): one worker in the
    foreground, its files in ``workdir``, two descriptors per proxied client."""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {FILE_LIMIT};
pid {workdir / "nginx.pid"};
error_log {workdir / "nginx-error.log"} warn;

events {{
    worker_connections {2 * MAX_PROXIED};
}}

http {{
    access_log off;
{temp}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
{http}
}}
"""


def nginx_config(plan: ClusterPlan, port: int, backends: list[str], workdir: Path) -> str:
    """Round robin (or a consistent hash of the session's token), upgrades passed through,
    nothing buffered, a failed instance skipped."""
    servers = "\n".join(
        f"        server {_address_of(url)} max_fails=1 fail_timeout=2s;" for url in backends
    )
    sticky = "        hash $session consistent;\n" if plan.sticky else ""
    return nginx_main(
        workdir,
        f"""\
    map $http_authorization $session {{
        "~^Bearer +(?<bearer>.+)$" $bearer;
        default $token_or_cookie;
    }}
    map $arg_token $token_or_cookie {{
        ''      $cookie_wirewise_token;
        default $arg_token;
    }}
    upstream instances {{
{sticky}{servers}
        keepalive 64;
    }}
    server {{
        listen {plan.host}:{port};
        location / {{
            proxy_pass http://instances;
            {NGINX_TUNED}
            proxy_next_upstream error timeout;
        }}
    }}""",
    )


def start_balancer(plan: ClusterPlan, backends: list[str], workdir: Path) -> Part:
    port = plan.port or free_port(plan.host)
    scheme = "tcp" if plan.transport == "tcp" else "http"
    if plan.balancer == "haproxy":
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(plan, port, backends))
        argv = [PROGRAMS["haproxy"], "-db", "-f", str(config)]
    else:
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(plan, port, backends, workdir))
        argv = [PROGRAMS["nginx"], "-e", str(workdir / "nginx-error.log"), "-c", str(config)]
    log = workdir / f"{plan.balancer}.log"
    proc, handle = _spawn(argv, log)
    address = f"{scheme}://{plan.host}:{port}"
    part = Part(plan.balancer, proc, address, log, _follow(proc, handle))
    try:
        _wait_for(lambda: _connects(plan.host, port), proc, plan.balancer)
    except RuntimeError as exc:
        part.stop()
        raise RuntimeError(f"{exc}: {log.read_text(errors='replace')[-600:]}") from None
    return part


def start_cluster(plan: ClusterPlan) -> Cluster:
    """Redis (unless given), the instances, then the balancer; everything stopped on failure."""
    check_plan(plan)
    cluster = Cluster(plan)
    try:
        cluster.broker = plan.broker or ""
        if not cluster.broker:
            cluster.redis = start_redis(cluster.workdir, plan.host)
            cluster.broker = cluster.redis.address
        shared = (plan.port or free_port(plan.host)) if plan.balancer == "reuseport" else 0
        for number in range(1, plan.instances + 1):
            cluster.instances.append(
                start_instance(
                    plan, number, cluster.broker, cluster.secret, shared, cluster.workdir
                )
            )
        if plan.balancer == "reuseport":
            cluster.url = cluster.instances[0].address
        else:
            backends = [part.address for part in cluster.instances]
            cluster.balancer = start_balancer(plan, backends, cluster.workdir)
            cluster.url = cluster.balancer.address
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running(plan: ClusterPlan) -> Iterator[Cluster]:
    cluster = start_cluster(plan)
    try:
        yield cluster
    finally:
        cluster.stop()
