"""``wirewise serve``: clean shutdown, interop with curl (a client nobody here wrote), CLI checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import TEST_SETTINGS
from tests.servers import BACKENDS, ServerProcess
from wirewise.cli import main
from wirewise.clients import client_for
from wirewise.protocol import NewMessage

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")


@pytest.mark.parametrize("name", list(BACKENDS))
def test_sigterm_ends_streams_and_exits_cleanly(
    server_factory: Callable[..., ServerProcess], name: str
) -> None:
    server = server_factory(name, *TEST_SETTINGS)
    kwargs = {"interval": 0.05} if server.transport == "poll" else {}
    client = client_for(server.transport, server.url, **kwargs)
    try:
        client.login("ada")
        sub = client.subscribe("room", after=0)
        assert sub.wait_connected(5)
        client.send("room", "before the end")
        started = time.monotonic()
        status = server.terminate(timeout=15)
        took = time.monotonic() - started
    finally:
        client.close()
    output = "".join(server.output)
    assert status == 0, output
    assert "Traceback" not in output and "Error" not in output, output
    assert took < 8, f"shutdown took {took:.1f} s with a live subscription"


def curl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    assert CURL is not None
    return subprocess.run([CURL, "-s", *args], capture_output=True, text=True, timeout=timeout)


def login(url: str, *extra: str) -> str:
    answer = curl(
        *extra,
        "-X",
        "POST",
        f"{url}/login",
        "-H",
        "content-type: application/json",
        "-d",
        '{"user":"curly"}',
    )
    return json.loads(answer.stdout)["token"]


@needs_curl
@pytest.mark.parametrize(("name", "extra"), [("sse", ()), ("h2", ("--http2-prior-knowledge",))])
def test_curl_reads_the_event_stream(
    server_factory: Callable[..., ServerProcess], name: str, extra: tuple[str, ...]
) -> None:
    server = server_factory(name, *TEST_SETTINGS)
    token = login(server.url, *extra)
    stream = subprocess.Popen(
        [
            CURL,
            "-sN",
            *extra,
            "--max-time",
            "3",
            "-H",
            f"Authorization: Bearer {token}",
            f"{server.url}/rooms/lobby/stream?after=0",
        ],  # type: ignore[list-item]
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    posted = curl(
        *extra,
        "-w",
        "\n%{http_code} %{http_version}",
        "-X",
        "POST",
        f"{server.url}/rooms/lobby/messages",
        "-H",
        f"Authorization: Bearer {token}",
        "-H",
        "content-type: application/json",
        "-d",
        '{"type":"send_message","text":"two\\nlines"}',
    )
    body, status_line = posted.stdout.rsplit("\n", 1)
    status, version = status_line.split()
    assert status == "201" and json.loads(body)["id"] >= 1
    assert version == ("2" if name == "h2" else "1.1")
    out, _ = stream.communicate(timeout=10)
    assert out.startswith("retry: 3000\n")
    frames = [f for f in out.split("\n\n") if f.startswith("id:")]
    data = [
        json.loads(line[len("data: ") :])
        for f in frames
        for line in f.split("\n")
        if line.startswith("data: ")
    ]
    assert [d["type"] for d in data] == ["user_joined", "new_message"]
    assert data[1]["text"] == "two\nlines"
    assert all(f.count("\ndata: ") == 1 for f in frames), "one data line per event"


@needs_curl
def test_h2_over_tls_negotiates_http2_by_alpn(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory("h2", "--tls", *TEST_SETTINGS)
    assert server.url.startswith("https://")
    answer = curl("-k", "--http2", "-w", "\n%{http_version}", f"{server.url}/healthz")
    body, version = answer.stdout.rsplit("\n", 1)
    assert version == "2" and json.loads(body) == {"ok": True}
    client = client_for("h2", server.url, verify=False)
    try:
        client.login("tls")
        sub = client.subscribe("secure", after=0)
        client.send("secure", "over TLS")
        seen = []
        while not any(isinstance(m, NewMessage) for m in seen):
            message = sub.get(5)
            assert message is not None
            seen.append(message)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "carrier-pigeon"], "unknown transport"),
        (["serve", "sse", "--server", "websockets"], "only the ws transport"),
        (["serve", "h2", "--server", "uvicorn"], "hypercorn"),
        (
            ["serve", "sse", "--server", "nginx"],
            "sse is served by uvicorn or hypercorn, not 'nginx'",
        ),
        (["serve", "sse", "--port", "-1"], "--port takes 0 (a free one) to 65535, not -1"),
        (["serve", "ws", "--tls"], "TLS is offered for h2 only"),
        (["serve", "sse", "--set", "history=lots"], "history takes a int"),
        (["serve", "sse", "--set", "nonsense=1"], "name=value"),
        (["serve", "sse", "--set", "queue=0"], "must be positive"),
    ],
)
def test_serve_refuses_bad_arguments_with_a_sentence(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert says in " ".join(capsys.readouterr().err.split())


GC_PROBE = """
import gc, os, signal, sys
from wirewise.servers.config import Settings
from wirewise.servers.serve import ServerPlan, serve

def ready(line):
    print(gc.get_threshold()[0], gc.get_freeze_count() > 0, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

serve(ServerPlan(sys.argv[1], sys.argv[2], port=0), Settings(gc_threshold=int(sys.argv[3])), ready)
"""


@pytest.mark.parametrize(("transport", "server"), [("sse", "uvicorn"), ("h2", "hypercorn")])
def test_a_ready_server_has_frozen_its_startup_and_set_its_gc_threshold(
    transport: str, server: str
) -> None:
    """Full collections walk every connection's objects: a served process is told how often."""
    done = subprocess.run(
        [sys.executable, "-c", GC_PROBE, transport, server, "12345"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["12345", "True"]
