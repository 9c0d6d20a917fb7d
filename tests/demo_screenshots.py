"""Screenshots of ``wirewise demo`` in Debian's Chromium, one per transport after a burst of
1,000 and one per protocol of the six-stream experiment, with what the page measured::

    .venv/bin/python -m tests.demo_screenshots reports/demo

Not a test (pytest collects ``test_*.py``): it writes files for the README and prints figures.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from tests.test_demo import CHROMIUM, join, send, start_demo, stop

TEXTS = ("hello from alice", "what does this cost?", "<img src=x onerror=alert(1)>", "one more")
FIGURES = ("p50", "p99", "count", "requests", "frames", "bytes", "protocol")


def transport_state(browser: Any, url: str, transport: str, out: Path) -> dict[str, str]:
    """Two pages chat, the second sends a burst of 1,000; its figures and its screenshot."""
    pages = [
        browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 900})
        .new_page() for _ in range(2)
    ]  # fmt: skip
    alice, bob = pages
    for page in pages:
        page.goto(url + "/")
        join(page, transport, f"shot-{transport}")
    time.sleep(0.5)
    for text in TEXTS:
        send(alice, text)
        time.sleep(1.2 if transport == "poll" else 0.35)
    time.sleep(1.5)
    bob.click("#burst")
    bob.wait_for_function(
        "() => document.getElementById('burst-result').dataset.received !== undefined",
        timeout=60_000,
    )
    found = {k: bob.text_content(f"#{k}") for k in FIGURES}
    found["burst"] = bob.text_content("#burst-result")
    bob.screenshot(path=out / f"demo-{transport}.png", full_page=True)
    for page in pages:
        page.context.close()
    return found


def six_state(browser: Any, url: str, name: str, out: Path) -> str:
    page = browser.new_context(ignore_https_errors=True).new_page()
    page.goto(url + "/")
    page.click("#six")
    time.sleep(3)
    found = page.text_content("#six-result")
    page.screenshot(path=out / f"demo-six-{name}.png", full_page=True)
    page.context.close()
    return str(found)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (plain, http), (tls, https) = start_demo(), start_demo("--tls")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for transport in ("poll", "longpoll", "sse", "h2", "ws"):
                url = https if transport == "h2" else http
                print(transport, transport_state(browser, url, transport, out))
            for name, url in (("http1", http), ("h2", https)):
                print(f"six-{name}", six_state(browser, url, name, out))
            browser.close()
    finally:
        stop(plain)
        stop(tls)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
