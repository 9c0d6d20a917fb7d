"""An HTTP proxy between the clients and one server: Debian's nginx, configured as people leave
it, as wirewise recommends it, and as a corporate proxy that strips ``Upgrade``.

Profiles (:data:`PROFILES`):

- ``nginx-default``: ``proxy_pass`` and nothing else, so every nginx default applies: HTTP/1.0
  to the server, responses buffered, ``Upgrade`` not passed, a 60 s read timeout. wirewise's
  SSE responses carry ``X-Accel-Buffering: no``, which nginx honours, so their events are not
  held; long polls and short polls are whole responses, which buffering does not delay; a
  WebSocket handshake reaches the server without ``Upgrade`` and fails.
- ``nginx-buffered``: the default, but ``X-Accel-Buffering`` ignored: what a server that does not
  send it gets, so that the header's effect is measured, not assumed.
- ``nginx-tuned``: the configuration the README recommends: HTTP/1.1 with ``Upgrade`` passed,
  no buffering either way, timeouts past the SSE heartbeat and the long poll, and idle
  connections to the server kept for the next request.
- ``no-upgrade``: the tuned one with ``Upgrade`` and ``Connection`` cleared, as some corporate
  proxies do: every HTTP transport works and WebSocket handshakes fail.

HTTP/2 is not proxied: nginx 1.22 speaks cleartext HTTP/2 only as prior knowledge on a port of
its own, where the client's HTTP/1.1 login is refused (HAProxy tells them apart; see
``wirewise serve h2 --instances``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from wirewise.cluster import (
    NGINX_TUNED,
    PROGRAMS,
    Part,
    _address_of,
    _connects,
    _follow,
    _spawn,
    _wait_for,
    free_port,
    nginx_main,
)
from wirewise.processes import Server, cores
from wirewise.registry import Backend

__all__ = ["PROFILES", "ProxiedServer", "Proxy", "nginx_proxy_config", "start_proxy"]

PROFILES = ("nginx-default", "nginx-buffered", "nginx-tuned", "no-upgrade")
NOT_PROXIED = ("h2", "tcp")
"""Transports a profile does not carry: h2 (above) and the raw-TCP floor (not HTTP)."""

DEFAULT = "proxy_pass http://upstream;"
TUNED = f"{DEFAULT}\n            {NGINX_TUNED}"
TUNED_PROFILES = ("nginx-tuned", "no-upgrade")
KEEPALIVE = "\n        keepalive 64;"
"""The tuned profiles keep idle connections to the server for the next request (HTTP/1.1
and ``Connection`` cleared unless upgrading make them reusable); nginx's default opens one
per request."""
LOCATIONS = {
    "nginx-default": DEFAULT,
    "nginx-buffered": DEFAULT + "\n            proxy_ignore_headers X-Accel-Buffering;",
    "nginx-tuned": TUNED,
    "no-upgrade": TUNED.replace("$http_upgrade;", '"";').replace("$connection_upgrade;", '"";'),
}


def check_profile(profile: str, transport: str) -> None:
    """Refuse, with a sentence, what a profile cannot carry or this machine cannot run."""
    if profile not in PROFILES:
        raise ValueError(f"--proxy takes {' | '.join(PROFILES)}, not {profile!r}")
    if transport in NOT_PROXIED:
        raise ValueError(
            f"{transport} is not proxied by nginx here: "
            + (
                "nginx 1.22 serves cleartext HTTP/2 only as prior knowledge, refusing the"
                " client's HTTP/1.1 login"
                if transport == "h2"
                else "the raw-TCP floor is not HTTP"
            )
        )
    if shutil.which(PROGRAMS["nginx"]) is None:
        raise ValueError("nginx is not installed (Debian: apt install nginx-light)")


def nginx_proxy_config(profile: str, port: int, upstream: str, workdir: Path) -> str:
    """One server block in front of ``upstream`` (a URL), as ``profile`` says."""
    return nginx_main(
        workdir,
        f"""\
    upstream upstream {{
        server {_address_of(upstream)};{KEEPALIVE if profile in TUNED_PROFILES else ""}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {LOCATIONS[profile]}
        }}
    }}""",
    )


@dataclass
class Proxy:
    """nginx in front of one server: ``url`` is where clients connect."""

    profile: str
    part: Part
    url: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wirewise-")))

    def stop(self) -> None:
        self.part.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_proxy(profile: str, upstream: str, transport: str) -> Proxy:
    """nginx with ``profile``'s configuration on a free loopback port, in front of
    ``upstream``; returns once it accepts connections."""
    check_profile(profile, transport)
    workdir = Path(tempfile.mkdtemp(prefix="wirewise-proxy-"))
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(nginx_proxy_config(profile, port, upstream, workdir))
    log = workdir / "nginx.log"
    argv = [PROGRAMS["nginx"], "-e", str(workdir / "nginx-error.log"), "-c", str(config)]
    proc, handle = _spawn(argv, log)
    part = Part("nginx", proc, f"http://127.0.0.1:{port}", log, _follow(proc, handle))
    try:
        _wait_for(lambda: _connects("127.0.0.1", port), proc, "nginx")
    except RuntimeError as exc:
        part.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"{exc}: {log.read_text(errors='replace')[-600:]}") from None
    return Proxy(profile, part, part.address, workdir)


@dataclass
class ProxiedServer:
    """The bench's one server behind nginx: clients and the byte counter use the proxy, the
    sampler follows the server, and both are parts (nginx pinned to the server's core)."""

    server: Server
    proxy: Proxy

    @classmethod
    def start(cls, server: Server, profile: str) -> ProxiedServer:
        try:
            proxy = start_proxy(profile, server.url, server.backend.transport)
        except (ValueError, RuntimeError) as exc:
            server.stop()
            raise RuntimeError(str(exc)) from None
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proxy.part.pid, cores()[0])
        return cls(server, proxy)

    @property
    def backend(self) -> Backend:
        return self.server.backend

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def parts(self) -> dict[str, int]:
        return {"nginx": self.proxy.part.pid, "instance 1": self.server.pid}

    def stop(self) -> int | None:
        self.proxy.stop()
        return self.server.stop()
