"""``wirewise demo`` in real Chromium (Debian's, through Playwright's ``executable_path``; never a
downloaded browser): every transport delivers between two pages, the six-connection limit of
HTTP/1.1 and its absence over HTTP/2, recovery after the server drops a page's connection, and a
message that looks like HTML shown as text. The demo runs as its own process on a free port,
stopped by its pid."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api")
ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 8_000
"""EventSource waits its server's ``retry: 3000`` before it reconnects: recovery takes seconds."""
DIALOGS: dict[int, list[str]] = {}
"""Every alert() a page raised (none may: messages are text)."""


def start_demo(*args: str) -> tuple[subprocess.Popen[str], str]:
    argv = [sys.executable, "-m", "wirewise", "demo", "--port", "0", *args]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"open (\S+)/ ", line)
    if found is None:
        stop(proc)
        raise AssertionError(f"the demo did not start: {line!r}")
    return proc, found.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    """By its pid (its own process group), then its pipe closed."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def plain() -> Iterator[str]:
    proc, url = start_demo()
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def tls() -> Iterator[str]:
    proc, url = start_demo("--tls")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser: object, url: str) -> object:
    """A page in a context of its own (its own cookies: two users, as two people have)."""
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    seen = DIALOGS.setdefault(id(page), [])
    page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
    page.goto(url + "/")
    return page


def join(page: object, transport: str, room: str) -> None:
    page.select_option("#transport", transport)
    page.fill("#interval", "200")
    page.fill("#room", room)
    page.click("#join")
    page.wait_for_function(
        "() => /streaming|socket open|polling/.test(document.getElementById('status').textContent)",
        timeout=WAIT_MS,
    )


def send(page: object, text: str) -> None:
    page.fill("#text", text)
    page.click("#send")


def texts(page: object) -> list[str]:
    items = page.query_selector_all("#messages li")  # one item per chat message, nothing else
    return [item.text_content().split(": ", 1)[1] for item in items]


def wait_for_texts(page: object, wanted: list[str]) -> list[str]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        got = texts(page)
        if all(w in got for w in wanted):
            return got
        time.sleep(0.05)
    return texts(page)


def two_pages(browser: object, url: str, transport: str, room: str) -> tuple[object, object]:
    alice, bob = open_page(browser, url), open_page(browser, url)
    join(alice, transport, room)
    join(bob, transport, room)
    time.sleep(0.3)  # a poller's first poll sets its cursor
    return alice, bob


def close(*pages: object) -> None:
    for page in pages:
        page.context.close()


@pytest.mark.parametrize("transport", ["poll", "longpoll", "sse", "ws", "h2"])
def test_every_transport_delivers_between_two_pages(
    browser: object, plain: str, tls: str, transport: str, tmp_path: Path
) -> None:
    url = tls if transport == "h2" else plain
    alice, bob = two_pages(browser, url, transport, f"deliver-{transport}")
    try:
        send(alice, f"hello over {transport}")
        assert wait_for_texts(bob, [f"hello over {transport}"]) == [f"hello over {transport}"]
        bob.wait_for_function(  # the figures are redrawn every 100 ms
            "() => document.getElementById('count').textContent === '1'", timeout=WAIT_MS
        )
        assert float(bob.text_content("#p50")) > 0
        protocol = bob.text_content("#protocol")
        assert protocol == ("HTTP/2" if transport == "h2" else "HTTP/1.1")
        bob.screenshot(path=tmp_path / f"{transport}.png", full_page=True)
        assert (tmp_path / f"{transport}.png").stat().st_size > 20_000
    finally:
        close(alice, bob)


def test_the_seventh_stream_waits_over_http1_and_not_over_http2(
    browser: object, plain: str, tls: str
) -> None:
    opened = {}
    for name, url in (("http/1.1", plain), ("h2", tls)):
        page = open_page(browser, url)
        try:
            page.click("#six")
            page.wait_for_function(
                "() => Number(document.getElementById('six-result').dataset.open) >= 6",
                timeout=WAIT_MS,
            )
            time.sleep(2.0)  # long enough for a seventh to open, were it allowed to
            opened[name] = int(page.get_attribute("#six-result", "data-open"))
        finally:
            close(page)
    assert opened == {"http/1.1": 6, "h2": 7}


@pytest.mark.parametrize("transport", ["longpoll", "sse", "ws", "h2"])
def test_a_dropped_connection_recovers_and_loses_nothing(
    browser: object, plain: str, tls: str, transport: str
) -> None:
    """The server drops the reader's held connection; what was sent meanwhile arrives once,
    in order, after it reconnects from its cursor."""
    url = tls if transport == "h2" else plain
    alice, bob = two_pages(browser, url, transport, f"drop-{transport}")
    try:
        send(alice, "before")
        assert wait_for_texts(bob, ["before"]) == ["before"]
        bob.click("#drop")
        bob.wait_for_function(
            "() => document.getElementById('drop-result').dataset.dropped !== undefined",
            timeout=WAIT_MS,
        )
        assert int(bob.get_attribute("#drop-result", "data-dropped")) == 1
        after = [f"after {i}" for i in range(3)]
        for text in after:
            send(alice, text)
        assert wait_for_texts(bob, after) == ["before", *after]
        bob.wait_for_function(
            "() => Number(document.getElementById('reconnects').textContent) >= 1", timeout=WAIT_MS
        )
    finally:
        close(alice, bob)


def test_a_message_that_looks_like_html_is_shown_as_text(browser: object, plain: str) -> None:
    alice, bob = two_pages(browser, plain, "ws", "inject")
    attack = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    try:
        send(alice, attack)
        assert wait_for_texts(bob, [attack]) == [attack]
        time.sleep(0.3)
        assert bob.query_selector_all("#messages img, #messages script") == []
        assert DIALOGS[id(bob)] == [] and DIALOGS[id(alice)] == []
    finally:
        close(alice, bob)


def test_the_page_forbids_inline_script_and_keeps_the_origin_rules(plain: str) -> None:
    page = httpx.get(plain + "/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and "onclick" not in page.text
    token = httpx.post(plain + "/login", json={"user": "mallory"}).json()["token"]
    foreign = httpx.get(
        plain + "/rooms/general/events",
        headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403 and foreign.json()["code"] == "forbidden_origin"
    assert httpx.post(plain + "/demo/drop").status_code == 401, "a drop needs a token"


def test_a_burst_of_a_thousand_arrives_and_draws_its_histogram(browser: object, plain: str) -> None:
    page = open_page(browser, plain)
    try:
        join(page, "ws", "burst")
        page.click("#burst")
        page.wait_for_function(
            "() => document.getElementById('burst-result').dataset.received !== undefined",
            timeout=40_000,
        )
        assert page.get_attribute("#burst-result", "data-received") == "1000"
        assert "p99" in page.text_content("#burst-result")
    finally:
        close(page)
