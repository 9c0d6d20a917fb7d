"""Start real wirewise servers on ephemeral loopback ports for tests, and stop them by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wirewise.registry import BACKENDS as REGISTERED
from wirewise.registry import SERVERS, parse_ready_line

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0

# Every backend the bench measures, by its label (``ws@websockets``), and how to serve it.
BACKENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    backend.label: (
        backend.transport,
        () if backend.server == SERVERS[backend.transport][0] else ("--server", backend.server),
    )
    for backend in REGISTERED
}


@dataclass
class ServerProcess:
    """A ``wirewise serve`` child process; ``url`` is where it listens."""

    transport: str
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = None

    def start(self) -> ServerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wirewise", "serve", self.transport, "--port", "0", *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            ready = parse_ready_line(line)
            if ready is not None:
                self.url = ready[1]
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        self.stop()
        raise RuntimeError(f"server {self.transport} did not start:\n{''.join(self.output)}")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def http_url(self) -> str:
        """The base URL for HTTP requests (every server but the tcp floor answers them)."""
        return self.url

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stats(self) -> dict[str, object]:
        kwargs = {"http1": False, "http2": True} if self.transport == "h2" else {}
        with httpx.Client(**kwargs, verify=False) as client:  # type: ignore[arg-type]
            return client.get(f"{self.http_url}/stats", timeout=5).json()

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait: the clean-shutdown path. Returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        status = self.proc.wait(timeout)
        self._close_pipe()
        return status

    def _close_pipe(self) -> None:
        assert self.proc is not None
        if self._drainer is not None:
            self._drainer.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        """Stop it whatever it takes (SIGTERM, then SIGKILL), by its pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._close_pipe()


def start(name: str, *extra: str) -> ServerProcess:
    transport, args = BACKENDS[name]
    return ServerProcess(transport, (*args, *extra)).start()
