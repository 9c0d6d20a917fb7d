"""``wirewise.report`` on schema-v2 results: synthetic runs built from the typed results
(:mod:`wirewise.results`) for each rule, and one real quick run (``tests/data``). No bench runs.

Each report is checked the way a reader would meet it: every chart file exists and parses (the PNG
decodes to a sane size, the SVG is XML with an <svg> root); report.html is well formed and
self-contained (images only as data: URLs); report.md marks every invalid result and lists its
reasons; the verdict never quotes an invalid result, names the result behind each figure, and says
"not significant" where two 95 % intervals overlap; an unknown schema version is refused.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wirewise import report
from wirewise.cli import main
from wirewise.ledger import RawMessages
from wirewise.registry import backend
from wirewise.report import ReportFiles, build_report, num, workload
from wirewise.report.charts import base as charts_base
from wirewise.report.charts import cost, latency, memory, polling, saturate
from wirewise.results import (
    SCHEMA_VERSION,
    BytesPerMessage,
    Deliveries,
    Latency,
    LoadGenerator,
    Memory,
    Repeat,
    Result,
    SchemaError,
    Step,
    Summary,
    Validity,
    load_summary,
    read_summary,
    write_summary,
)

DATA = Path(__file__).parent / "data"
CHART_MODULES = (cost, latency, memory, polling, saturate)
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
    "track", "wbr",
}  # fmt: skip


class TagChecker(HTMLParser):
    """A stack of open tags: every element closed, in order; void elements excepted."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, tuple[int, int]]] = []
        self.errors: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.doctype = ""
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data") and value is not None:
                self.urls.append((tag, name, value))
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"end tag for void element </{tag}> at {self.getpos()}")
        elif not self.stack:
            self.errors.append(f"</{tag}> at {self.getpos()} closes nothing")
        elif self.stack[-1][0] != tag:
            open_tag, where = self.stack[-1]
            self.errors.append(
                f"</{tag}> at {self.getpos()} while <{open_tag}> from {where} is open"
            )
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(path: Path) -> TagChecker:
    checker = TagChecker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    assert checker.doctype.lower() == "doctype html", "an HTML5 page starts with <!DOCTYPE html>"
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack[:5]}"
    return checker


def self_contained(checker: TagChecker) -> None:
    """Nothing leaves the page: images are data: URLs, links are anchors within it."""
    for tag, attribute, value in checker.urls:
        if tag == "img":
            assert value.startswith("data:image/png;base64,"), (tag, attribute, value[:60])
        else:
            assert value.startswith("#"), f"<{tag} {attribute}={value!r}> leaves the page"


def check_files(files: ReportFiles) -> None:
    assert files.markdown.name == "report.md" and files.html.name == "report.html"
    for path in files.files:
        assert path.is_file() and path.stat().st_size > 0, path
    for chart in files.charts:
        assert chart.title and chart.caption, chart.name
        image = matplotlib.image.imread(chart.png)
        height, width = image.shape[:2]
        assert 600 <= width <= 3000 and 300 <= height <= 3000, (chart.png, image.shape)
        root = ET.parse(chart.svg).getroot()
        assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), (chart.svg, root.tag)


def plain(text: str) -> str:
    """En dashes and multiplication signs as ASCII, so expectations read plainly."""
    return text.replace("\N{EN DASH}", "-").replace("\N{MULTIPLICATION SIGN}", "x")


def verdict(summary: Summary | dict[str, Any]) -> list[str]:
    return [plain(sentence) for sentence in report.verdict(summary)]


def flat(text: str) -> str:
    return " ".join(text.split())


def section(markdown: str, heading: str) -> str:
    """The Markdown from ``heading`` to the next heading of level 2."""
    return markdown.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def rows(table_text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell."""
    found = {}
    for line in table_text.splitlines():
        if line.startswith("| ") and not line.startswith("| transport") and "---" not in line:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            found.setdefault(cells[0], cells)
    return found


# -- synthetic v2 results, built from the typed dataclasses --------------------------------------

METADATA: dict[str, Any] = {
    "wirewise_version": "0.1.0",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "python": "3.11.7",
    "platform": "Linux-test",
    "cpu_model": "Test CPU <9000> & co",
    "cores": 2,
    "kernel": "6.0.0-test",
    "started_at": "2026-11-30T10:00:00+00:00",
    "argv": ["wirewise", "bench", "--quick"],
    "libraries": {"uvicorn": "0.54.0"},
    "cores_used": {"server": [0], "load_generator": [1]},
    "fd_limit": 20000,
    "sampling": {
        "interval_s": 0.5,
        "cpu": "schedstat nanoseconds, interpolated at the window's edges",
        "bytes": "ss -ti every 0.5 s",
    },
}
WINDOW = {"start": 1000.0, "end": 1002.0}
PARAMETERS: dict[str, dict[str, Any]] = {
    "chat": {"users": 20, "rate_per_user": 4.0, "payload_bytes": 100, "duration_s": 2.0},
    "broadcast": {"users": 51, "rate_per_user": 20.0, "payload_bytes": 100, "duration_s": 2.0},
    "game": {"users": 8, "rate_per_user": 20.0, "payload_bytes": 50, "duration_s": 2.0},
    "faults": {"users": 40, "rate_per_user": 2.0, "payload_bytes": 100, "duration_s": 6.0,
               "options": {"kill_at": 0.6}},
    "idle": {"users": 300, "payload_bytes": 100, "duration_s": 3.0,
             "options": {"step_users": 100, "steps": 3, "step_seconds": 1.0}},
    "saturate": {"users": 20, "rate_per_user": 5.0, "payload_bytes": 100, "duration_s": 4.5,
                 "options": {"steps": 3, "step_seconds": 1.5, "rate_factor": 1.5,
                             "latency_bound_ms": 100.0}},
}  # fmt: skip
SATURATED = "load generator saturated: a Locust process at 93 % of its core (limit 80 %)"
LAGGED = "the publisher lagged: lag p99 55.0 ms over 10.0 ms"
NO_KNEE = (
    "the ramp ended before the transport's knee (max_steps: no knee within the steps tried):"
    " the highest rate held is a lower bound"
)


def params(scenario: str, label: str) -> dict[str, Any]:
    out = json.loads(json.dumps(PARAMETERS[scenario]))
    if backend(label).transport == "poll":
        out["poll_interval_s"] = 1.0
    return out


def latency(p50: float, p99: float, count: int, spread: float | None) -> Latency:
    """Percentiles around p50 and p99; ``spread`` is the half-width of each 95 % interval as a
    fraction of its percentile (None: no interval)."""
    ci = (
        {}
        if spread is None
        else {k: [round(v * (1 - spread), 3), round(v * (1 + spread), 3)] for k, v in
              (("p50", p50), ("p99", p99))}
    )  # fmt: skip
    return Latency(p50=p50, p90=(p50 + p99) / 2, p99=p99, p999=p99 * 1.2, max=p99 * 1.5,
                   mean=p50 * 1.1, count=count, ci95=ci)  # fmt: skip


def write_messages(path: Path, p50: float, p99: float, count: int) -> None:
    """A ``messages.npz`` whose deliveries all fall in the window, latencies from p50/2 to p99."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.arange(count, dtype=np.int64)
    sent_at = int(WINDOW["start"] * 1e6) + ids * int(2e6 // count)
    waited = (np.linspace(p50 / 2, p99, count) * 1000).astype(np.int64)
    deliveries = np.column_stack((np.zeros(count, np.int64), ids, sent_at, sent_at + waited))
    RawMessages(rooms=["room-0"], receivers=[1], deliveries=deliveries).save(path)


def timed_result(
    scenario: str,
    label: str,
    p50: float,
    p99: float,
    *,
    count: int = 2000,
    spread: float | None = 0.1,
    cpu: float = 50.0,
    reasons: tuple[str, ...] = (),
    repeats: int = 1,
    run_dir: Path | None = None,
    warnings: tuple[str, ...] = (),
) -> Result:
    """A chat/broadcast/game/faults result; with ``run_dir``, each repeat's messages.npz too."""
    which = backend(label)
    each = []
    for i in range(repeats):
        files = f"{scenario}-{which.slug}-r{i + 1}"
        each.append(
            Repeat(
                repeat=i + 1,
                files=files,
                window=dict(WINDOW),
                latency_ms=latency(p50, p99 * (0.96 + 0.04 * i), count, None),
                server_cpu_ms_per_1k_msgs=cpu * (0.9 + 0.1 * i) if repeats > 1 else cpu,
                validity=Validity(not reasons, list(reasons)),
            )
        )
        if run_dir is not None:
            write_messages(run_dir / files / "messages.npz", p50, p99, count)
    cpus = [r.server_cpu_ms_per_1k_msgs or 0.0 for r in each]
    return Result(
        scenario=scenario,
        transport=which.transport,
        server=which.server,
        label=which.label,
        parameters=params(scenario, label),
        repeats=each,
        latency_ms=latency(p50, p99, count * repeats, spread),
        deliveries=Deliveries(expected=count * repeats, delivered=count * repeats),
        throughput_msgs_per_s=count / 2,
        server_cpu_ms_per_1k_msgs=sorted(cpus)[len(cpus) // 2],
        server_cpu_ms_per_1k_msgs_range=[min(cpus), max(cpus)],
        bytes_per_message=BytesPerMessage(
            down=250.0,
            up=200.0,
            total=300.0,
            wire={"down": 300.0, "up": 420.0, "total": 360.0},
            header_bytes_per_segment=52,
        ),
        load_generator=LoadGenerator(
            cpu_percent_max=93.0 if SATURATED in reasons else 20.0,
            cpu_us_per_delivery=40.0,
            server_cpu_us_per_delivery=cpu,
            saturated=SATURATED in reasons,
        ),
        validity=Validity(not reasons, list(reasons)),
        warnings=list(warnings),
    )


def idle_result(
    label: str, rss_kib: float, ci_kib: tuple[float, float], reasons: tuple[str, ...] = ()
) -> Result:
    which = backend(label)
    points = [
        {"clients": c, "connections": c + 1.0, "cpu_percent": 1.0,
         "rss_bytes": 40e6 + rss_kib * 1024 * c, "uss_bytes": 30e6 + rss_kib * 1024 * c,
         "kernel_bytes": 3072.0 * c}
        for c in (100, 200, 300)
    ]  # fmt: skip
    memory = Memory(
        rss_bytes=rss_kib * 1024, uss_bytes=rss_kib * 1024, kernel_bytes=3072.0,
        r2=0.42 if reasons else 0.999, base_rss_bytes=40e6,
        rss_ci95=[ci_kib[0] * 1024, ci_kib[1] * 1024], fitted_against="clients",
        idle_cpu_percent_per_1k_connections=0.5, points=points,
    )  # fmt: skip
    return Result(
        scenario="idle",
        transport=which.transport,
        server=which.server,
        label=which.label,
        parameters=params("idle", label),
        repeats=[Repeat(repeat=1, files=f"idle-{which.slug}-r1", memory_per_connection=memory)],
        memory_per_connection=memory,
        load_generator=LoadGenerator(cpu_percent_max=30.0, saturated=False),
        validity=Validity(not reasons, list(reasons)),
    )


def saturate_result(label: str, base_ms: float, held_steps: int, reasons: tuple[str, ...] = ()):
    which = backend(label)
    steps = []
    for i in range(3):
        p99 = base_ms * 3**i
        held = i < held_steps
        steps.append(
            Step(
                step=i, rate_per_user=5.0 * 1.5**i, sent_per_s=100.0 * 1.5**i,
                deliveries_per_s=1000.0 * 1.5**i,
                latency_ms=Latency(p50=p99 / 3, p90=p99 / 1.5, p99=p99, p999=p99 * 1.1,
                                   max=p99 * 1.2, mean=p99 / 2.5, count=2000 * (i + 1)),
                lag_p99_ms=2.0, server_cpu_percent=20.0 * (i + 1), server_cpu_ms_per_1k_msgs=40.0,
                generator_cpu_percent=20.0, held=held,
                why=None if held else f"p99 {p99:,.1f} ms over the 100 ms bound",
            )
        )  # fmt: skip
    best = steps[held_steps - 1] if held_steps else None
    return Result(
        scenario="saturate",
        transport=which.transport,
        server=which.server,
        label=which.label,
        parameters=params("saturate", label),
        repeats=[Repeat(repeat=1, files=f"saturate-{which.slug}-r1", steps=steps)],
        latency_ms=best.latency_ms if best else Latency(),
        deliveries=Deliveries(expected=12000, delivered=12000),
        throughput_msgs_per_s=best.deliveries_per_s if best else None,
        server_cpu_ms_per_1k_msgs=40.0 if best else None,
        steps=steps,
        highest_rate_held={"rate_per_user": best.rate_per_user,
                           "deliveries_per_s": best.deliveries_per_s, "latency_bound_ms": 100.0,
                           "step": best.step, "range": [best.deliveries_per_s] * 2,
                           "repeats_held": 1} if best else None,
        stopped_by="latency_bound: p99 over 100 ms" if held_steps < 3 else "max_steps: no knee",
        load_generator=LoadGenerator(cpu_percent_max=25.0, saturated=False),
        validity=Validity(not reasons, list(reasons)),
    )  # fmt: skip


def faults_result(label: str, silently: int, slow: int | None, reasons: tuple[str, ...] = ()):
    result = timed_result("faults", label, 4.0, 300.0, count=4000, spread=None, reasons=reasons)
    # As the summary writes them: no interval, server CPU or bytes through a kill.
    result.server_cpu_ms_per_1k_msgs = result.server_cpu_ms_per_1k_msgs_range = None
    result.bytes_per_message = BytesPerMessage()
    result.faults = {
        "killed": True, "outage_s": 0.42, "clients": 998,
        "reconnect_ms": {"p50": 123.4, "p99": 2345.6, "max": 3001.0, "count": 998},
        "all_back": True, "lost_with_resume": 17 + silently, "lost_signalled": 17,
        "lost_silently": silently, "lost_silently_stale_cursor": silently,
        "lost_without_resume": 640, "delivered_by_resume": 623 - silently, "gaps_signalled": 998,
        "slow_consumer_disconnects": slow, "slow_consumer_errors_seen": slow or 0,
        "slow_reader_reconnects": 2, "server_rss_peak_bytes": 97 * 2**20,
    }  # fmt: skip
    if silently:
        result.warnings.append(f"{silently} deliveries were lost without a gap (silent loss)")
    return result


def write_run(run_dir: Path, results: list[Result], **metadata: Any) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_summary(run_dir / "summary.json", Summary({**METADATA, **metadata}, results))
    return run_dir


@dataclass
class Built:
    run: Path
    summary: Summary
    files: ReportFiles
    figures: dict[str, Figure]

    @property
    def markdown(self) -> str:
        return plain(self.files.markdown.read_text(encoding="utf-8"))


def build(run: Path, out: Path) -> Built:
    """``build_report``, keeping every figure it saved (to look inside the drawn charts)."""
    figures: dict[str, Figure] = {}
    original = charts_base.save

    def keep(fig: Figure, caption: str, directory: Path, name: str, title: str) -> Any:
        figures[name] = fig
        return original(fig, caption, directory, name, title)

    with pytest.MonkeyPatch.context() as patch:
        for module in CHART_MODULES:  # each chart module holds its own reference to save
            patch.setattr(module, "save", keep)
        files = build_report(run, out)
    return Built(run, load_summary(run), files, figures)


H2_P99 = 4321.0
H2_CPU = 9876.5
ODD = 'odd <script>alert("x")</script> & a | pipe'


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Every scenario; chat/h2, idle/longpoll, saturate/sse and faults/longpoll invalid."""
    run = tmp_path_factory.mktemp("results") / "20261130-100000"
    results = [
        timed_result("chat", "poll", 500.0, 998.0, cpu=60.0, run_dir=run),
        timed_result("chat", "longpoll", 3.0, 8.0, cpu=45.0, run_dir=run),
        timed_result("chat", "sse", 2.0, 5.0, cpu=90.0, run_dir=run),
        timed_result("chat", "h2", 2500.0, H2_P99, cpu=H2_CPU, reasons=(SATURATED, LAGGED),
                     run_dir=run),
        timed_result("chat", "ws", 1.5, 4.6, cpu=50.0, run_dir=run, warnings=(ODD,)),
        timed_result("chat", "ws@websockets", 1.6, 4.4, run_dir=run),
        timed_result("chat", "tcp", 1.0, 3.0, cpu=30.0, run_dir=run),
        timed_result("broadcast", "poll", 490.0, 990.0, run_dir=run),
        timed_result("broadcast", "longpoll", 2.7, 4.1, run_dir=run),
        timed_result("broadcast", "sse", 2.2, 3.1, spread=0.03, run_dir=run),
        timed_result("broadcast", "ws", 2.0, 4.8, spread=0.03, run_dir=run),
        timed_result("broadcast", "tcp", 1.7, 3.7, run_dir=run),
        idle_result("longpoll", 20.0, (19.0, 21.0), ("memory does not follow clients (r2 0.42 < 0.9)",)),
        idle_result("sse", 10.0, (0.1, 20.7)),
        idle_result("ws", 22.0, (20.4, 23.7)),
        idle_result("tcp", 1.8, (1.5, 2.1)),
        saturate_result("sse", 2.0, 3, (NO_KNEE,)),
        saturate_result("ws", 10.0, 2),
        faults_result("poll", 9, None),
        faults_result("longpoll", 0, None, (SATURATED,)),
        faults_result("sse", 0, 1),
    ]  # fmt: skip
    write_run(run, results)
    return build(run, tmp_path_factory.mktemp("report"))


# -- the whole report --------------------------------------------------------------------------


def test_every_chart_exists_parses_and_sits_in_its_section(full: Built) -> None:
    check_files(full.files)
    names = [c.name for c in full.files.charts]
    assert names == [
        "latency-chat", "cdf-chat", "latency-broadcast", "cdf-broadcast",
        "memory-per-connection", "memory-fit", "saturate-hockey-stick",
        "cpu-per-1k", "bytes-per-message", "polling-interval",
    ], "in document order, each in the section of its table"  # fmt: skip
    markdown = full.markdown
    for heading, charts in (
        ("## Scenario: chat", ["latency-chat", "cdf-chat"]),
        ("## Scenario: broadcast", ["latency-broadcast", "cdf-broadcast"]),
        ("## Scenario: idle", ["memory-per-connection", "memory-fit"]),
        ("## Scenario: saturate", ["saturate-hockey-stick"]),
        ("## Cost per delivery", ["cpu-per-1k", "bytes-per-message"]),
        ("## Short polling against its interval", ["polling-interval"]),
    ):
        text = section(markdown, heading)
        table = text.index("\n| ")
        for name in charts:
            assert text.index(f"](charts/{name}.png)") > table, f"{name} follows its table"
    assert "\n## Charts" not in markdown and "\n## Other charts" not in markdown
    assert "Latency, game: no game result in this run." in full.files.skipped
    assert full.files.seconds < 60


def test_the_html_is_well_formed_self_contained_and_says_the_verdict(full: Built) -> None:
    checker = check_html(full.files.html)
    self_contained(checker)
    images = [v for t, _, v in checker.urls if t == "img"]
    assert len(images) == len(full.files.charts), "every chart is embedded once"
    text = flat(" ".join(checker.text))
    for sentence in report.verdict(full.summary):
        assert flat(sentence) in text
    page = full.files.html.read_text(encoding="utf-8")
    assert "<script" not in page, "a string from the results reached the page unescaped"
    assert "odd &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a | pipe" in page
    assert "Test CPU &lt;9000&gt; &amp; co" in page
    assert page.count('<tr class="invalid">') >= 4, "the invalid rows are greyed"


def test_an_invalid_result_is_never_quoted_in_the_verdict(full: Built) -> None:
    sentences = verdict(full.summary)
    text = " ".join(sentences)
    for figure in (num(H2_P99), num(2500.0), num(H2_CPU), f"{H2_P99:g}", f"{H2_CPU:g}"):
        assert figure not in text, figure
    for name in ("chat/h2", "idle/longpoll", "saturate/sse", "faults/longpoll"):
        for sentence in sentences:
            if name in sentence:
                assert "invalid" in sentence, (name, sentence)
    left = next(s for s in sentences if s.startswith("Left out"))
    assert "4 of 21 results" in left and SATURATED in left and "chat/h2" in left
    saturate = next(s for s in sentences if s.startswith("Under saturate"))
    assert "saturate/ws 1,500" in saturate and "saturate/sse 2,250" not in saturate
    idle = next(s for s in sentences if s.startswith("One idle client"))
    assert "idle/longpoll 20.0" not in idle


def test_every_figure_in_the_verdict_is_named_by_its_result(full: Built) -> None:
    sentences = verdict(full.summary)
    chat = next(s for s in sentences if s.startswith("In chat"))
    assert "chat/tcp" in chat and "chat/ws (1.50/4.60 ms)" in chat and "chat/poll" in chat
    assert "the lowest p99 was chat/ws@websockets p99 4.40 [3.96-4.84] ms" in chat
    assert "not significant against chat/ws p99 4.60 [4.14-5.06] ms" in chat
    cost = next(s for s in sentences if s.startswith("Cheapest"))
    assert "server CPU chat/longpoll 45.0 ms per 1,000" in cost and "floor chat/tcp 30.0" in cost
    assert "300/360 B per delivery" in cost, "bytes as payload and on the wire"
    polling = next(s for s in sentences if s.startswith("Short polling"))
    assert "chat/poll p50 500 [450-550] ms" in polling
    assert "broadcast/poll p50 490 [441-539] ms" in polling
    for sentence in sentences:
        assert re.search(r"\d", sentence), f"no number in: {sentence}"


def test_the_answer_compares_with_intervals(full: Built) -> None:
    answer = verdict(full.summary)[0]
    # broadcast/sse 3.10 [3.01-3.19] against broadcast/ws 4.80 [4.66-4.94]: apart, within 2x.
    assert answer.startswith("Answer: for pushing to clients, SSE + POST is enough"), answer
    assert (
        "broadcast/sse p99 3.10 [3.01-3.19] ms against broadcast/ws p99 4.80 [4.66-4.94] ms"
        in answer
    )
    assert "SSE lower, significantly" in answer
    assert "an idle client cost 13.0 KiB (idle/sse) against 25.0 KiB (idle/ws)" in answer
    assert "not significant (the RSS intervals overlap)" in answer
    assert "90.0 (chat/sse) against 50.0 (chat/ws) ms of CPU" in answer


def test_tables_mark_invalid_results_and_list_their_reasons(full: Built) -> None:
    markdown = full.markdown
    chat = section(markdown, "## Scenario: chat")
    table = rows(chat)
    assert table["h2"][1] == "INVALID (2 reasons)" and table["ws"][1] == "yes"
    assert table["sse"][3] == "5.00 [4.50-5.50]", "p99 with its 95 % interval"
    assert "- chat/h2" in chat and SATURATED in chat and LAGGED in chat
    idle = rows(section(markdown, "## Scenario: idle"))
    assert idle["longpoll"][1] == "INVALID (1 reason)"
    assert idle["sse"][2] == "10.0 [0.1-20.7]" and idle["sse"][8] == "clients"
    saturate = section(markdown, "## Scenario: saturate")
    assert rows(saturate)["sse"][1] == "INVALID (1 reason)" and NO_KNEE in saturate
    faults = section(markdown, "## Reliability (scenario: faults)")
    assert rows(faults)["longpoll"][1] == "INVALID (1 reason)" and "- faults/longpoll" in faults
    for result in full.summary.results:
        for warning in result.warnings:
            assert warning in markdown, warning


def test_charts_draw_invalid_results_hollow_and_say_why(full: Built) -> None:
    captions = {c.name: c.caption for c in full.files.charts}
    assert f"chat/h2 invalid: {SATURATED}" in captions["latency-chat"]
    assert "Left out: chat/h2 invalid" in captions["cdf-chat"]
    assert (
        "idle/longpoll invalid: memory does not follow clients" in captions["memory-per-connection"]
    )
    assert "saturate/sse invalid: the ramp ended" in captions["saturate-hockey-stick"]
    assert "chat/h2" in captions["cpu-per-1k"] and "Hollow, hatched" in captions["cpu-per-1k"]
    ticks = [t.get_text() for t in full.figures["latency-chat"].axes[0].get_xticklabels()]
    assert ticks[3] == "h2\nn = 2,000\ninvalid"
    cdf = [t.get_text() for t in full.figures["cdf-chat"].legends[0].get_texts()]
    assert not any(t.startswith("h2") for t in cdf) and len(cdf) == 6
    legend = [t.get_text() for t in full.figures["saturate-hockey-stick"].legends[0].get_texts()]
    assert "sse (invalid)" in legend and "ws" in legend


def test_cpu_and_bytes_say_how_they_were_measured(full: Built) -> None:
    markdown = full.markdown
    assert not re.search(r"\bticks?\b", markdown), "CPU is read from schedstat, not 10 ms ticks"
    cost = section(markdown, "## Cost per delivery")
    assert (
        "CPU from schedstat nanoseconds, interpolated at the window's edges, sampled every 0.5 s"
        in cost
    )
    ws = next(r for r in _cost_rows(cost) if r[:2] == ["chat", "ws"])
    assert ws[6:10] == ["250/300", "200/420", "300/360", "52"], "payload/wire, down, up, total"
    assert not any(r[0] == "faults" for r in _cost_rows(cost)), "faults measured neither"
    caveats = next(s for s in verdict(full.summary) if s.startswith("Caveats"))
    assert "schedstat" in caveats and "every result is one repeat" in caveats
    caption = next(c.caption for c in full.files.charts if c.name == "bytes-per-message")
    assert "(52 bytes a segment)" in caption


def _cost_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split(" | ")]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    ]


def test_idle_memory_is_per_client_with_its_interval(full: Built) -> None:
    idle = next(s for s in verdict(full.summary) if s.startswith("One idle client"))
    assert "fitted against clients" in idle
    assert "idle/tcp 1.8 [1.5-2.1] + 3.0 = 4.8 KiB" in idle
    assert "idle/sse 10.0 [0.1-20.7] + 3.0 = 13.0 KiB" in idle
    # sse [0.1-20.7] and ws [20.4-23.7] overlap: their order is not significant
    assert "the cheapest, idle/sse, is not significantly below idle/ws" in idle


def test_no_empty_faults_heading(full: Built) -> None:
    markdown = full.markdown
    assert "## Scenario: faults" not in markdown
    reliability = section(markdown, "## Reliability (scenario: faults)")
    assert reliability.lstrip().startswith("40 users"), "the section starts with its workload"
    table = rows(reliability)
    cells = table["sse"]
    # valid, outage, back, p50, p99, max, lost without / with resume, with a gap, silently, gaps,
    # cut-offs, RSS
    assert cells[1:14] == ["yes", "0.42", "998 of 998 (all)", "123", "2,346", "3,001", "640", "17",
                           "17", "0", "998", "1", "97"]  # fmt: skip
    assert table["poll"][10] == "9" and table["poll"][12] == "n/a"


def test_the_polling_chart_draws_only_what_was_measured(full: Built) -> None:
    fig = full.figures["polling-interval"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["theory: p50 ≈ T/2", "theory: p99 ≈ 0.99·T", "measured p50", "measured p99",
                      "longpoll p50, same scenario"], "one entry a series"  # fmt: skip
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["chat", "broadcast"]
    assert ax.get_xlabel() == "scenario (poll interval T = 1 s)"


# -- labels that do not collide ------------------------------------------------------------------


def overlapping_texts(fig: Figure) -> list[tuple[str, str]]:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for ax in fig.axes for t in ax.texts if t.get_text()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)]


def test_broadcast_labels_do_not_overlap(tmp_path: Path) -> None:
    """The reference run's broadcast figures: sse's p99 label (3,248) and h2's p50 label (3,127)
    sat side by side at the same height and overprinted each other."""
    run = tmp_path / "run"
    figures = [("poll", 545.0, 1937.0), ("longpoll", 6091.0, 12542.0), ("sse", 22.5, 3248.0),
               ("h2", 3127.0, 4078.0), ("ws", 629.0, 4334.0), ("ws@websockets", 27.5, 1434.0),
               ("tcp", 10.3, 84.2)]  # fmt: skip
    write_run(run, [timed_result("broadcast", n, a, b, count=200_000) for n, a, b in figures])
    built = build(run, tmp_path / "report")
    fig = built.figures["latency-broadcast"]
    assert len(fig.axes[0].texts) == 14, "a p50 and a p99 label a transport"
    assert overlapping_texts(fig) == []


# -- the answer and the significance rule ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sse_p99", "spread", "opening", "judged"),
    [
        (5.0, 0.1, "Answer: for pushing to clients, SSE + POST is enough",
         "not significant (the 95 % intervals overlap)"),
        (6.0, 0.02, "Answer: for pushing to clients, SSE + POST is enough",
         "WebSocket lower, significantly, but within 2x"),
        (40.0, 0.02, "Answer: WebSockets delivered markedly faster", "8.0x apart, significantly"),
        (6.0, None, "Answer: for pushing to clients, SSE + POST is enough",
         "with no interval to judge the difference"),
    ],
)  # fmt: skip
def test_the_answer_follows_the_numbers_and_their_intervals(
    tmp_path: Path, sse_p99: float, spread: float | None, opening: str, judged: str
) -> None:
    results = [
        timed_result("broadcast", "sse", 2.0, sse_p99, spread=spread),
        timed_result("broadcast", "ws", 2.0, 5.0, spread=spread),
    ]
    answer = verdict(Summary(METADATA, results))[0]
    assert answer.startswith(opening), answer
    assert judged in answer, answer
    assert f"broadcast/sse p99 {num(sse_p99)}" in answer and "broadcast/ws p99 5.00" in answer


def test_overlapping_intervals_name_no_winner() -> None:
    results = [
        timed_result("chat", "sse", 2.0, 5.0, spread=0.1),
        timed_result("chat", "ws", 2.0, 4.6, spread=0.1),
        timed_result("chat", "tcp", 1.0, 3.0, spread=0.1),
    ]
    sentences = verdict(Summary(METADATA, results))
    assert "not significant (the 95 % intervals overlap)" in sentences[0]
    chat = next(s for s in sentences if s.startswith("In chat"))
    assert (
        "the lowest p99 was chat/ws p99 4.60 [4.14-5.06] ms, not significant against chat/sse"
        in chat
    )
    apart = [timed_result("chat", "sse", 2.0, 9.0, spread=0.02), *results[1:]]
    chat = next(s for s in verdict(Summary(METADATA, apart)) if s.startswith("In chat"))
    assert "chat/ws p99 4.60 [4.14-5.06] ms, significantly below chat/sse p99 9.00" in chat


def test_the_answer_skips_a_scenario_with_an_invalid_side() -> None:
    results = [
        timed_result("broadcast", "sse", 2.0, 777.0, reasons=(SATURATED,)),
        timed_result("broadcast", "ws", 2.0, 5.0),
        timed_result("chat", "sse", 2.0, 9.0, spread=0.02),
        timed_result("chat", "ws", 2.0, 5.0, spread=0.02),
    ]
    sentences = verdict(Summary(METADATA, results))
    assert sentences[0].startswith("Answer:") and "chat/sse p99 9.00" in sentences[0]
    assert "777" not in " ".join(sentences)


def test_no_valid_pair_means_no_answer_and_no_number() -> None:
    results = [
        timed_result("broadcast", "sse", 2.0, 777.0, reasons=(SATURATED,)),
        timed_result("broadcast", "ws", 2.0, 666.0, reasons=(LAGGED,)),
    ]
    sentences = verdict(Summary(METADATA, results))
    assert sentences[0].startswith("No answer to “do I need WebSockets?”"), sentences[0]
    assert "broadcast/sse invalid" in sentences[0] and "broadcast/ws invalid" in sentences[0]
    broadcast = next(s for s in sentences if s.startswith("In broadcast"))
    assert "no valid result timed a delivery" in broadcast
    text = " ".join(sentences)
    assert "777" not in text and "666" not in text


def test_nothing_valid_is_said_not_quoted() -> None:
    results = [
        saturate_result("sse", 2.0, 3, (NO_KNEE,)),
        saturate_result("ws", 3.0, 3, (NO_KNEE,)),
        idle_result("ws", 22.0, (20.4, 23.7), ("memory does not follow clients (r2 0.42 < 0.9)",)),
    ]
    sentences = verdict(Summary(METADATA, results))
    saturate = next(s for s in sentences if s.startswith("Under saturate"))
    assert "no result is valid, so no highest sustainable rate is quoted" in saturate
    assert "2,250" not in " ".join(sentences)
    idle = next(s for s in sentences if "idle" in s and "memory fit" in s)
    assert "22.0" not in idle and "not quoted" in idle


def test_a_run_without_the_floor_says_so() -> None:
    results = [timed_result("chat", "sse", 5.0, 9.0, count=300)]
    metadata = {**METADATA, "cores_used": {"server": [1], "load_generator": [1]}}
    sentences = verdict(Summary(metadata, results))
    assert any("floor was not measured" in s for s in sentences), sentences
    caveats = sentences[-1]
    assert "same core" in caveats, "a shared core is a caveat"
    assert "too few samples" in caveats, "300 samples cannot support p99"


def test_repeats_show_their_spread(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = [
        timed_result("chat", name, p50, p99, cpu=cpu, repeats=3, run_dir=run)
        for name, p50, p99, cpu in (("sse", 2.0, 5.0, 50.0), ("ws", 1.5, 4.0, 48.0),
                                    ("tcp", 1.0, 3.0, 30.0))
    ]  # fmt: skip
    built = build(write_run(run, results), tmp_path / "report")
    check_files(built.files)
    markdown = built.markdown
    chat = section(markdown, "## Scenario: chat")
    assert "p99 of each repeat" in chat and "4.80, 5.00, 5.20" in chat
    cost = rows(section(markdown, "## Cost per delivery"))
    assert cost["chat"][3] == "50.0 (45.0-55.0)", cost["chat"]
    assert "Black bars: the lowest and highest of the repeats." in next(
        c.caption for c in built.files.charts if c.name == "cpu-per-1k"
    )
    sentences = verdict(built.summary)
    assert "every result is one repeat" not in sentences[-1]
    answer = sentences[0]
    assert "50.0 (45.0-55.0) (chat/sse) against 48.0 (43.2-52.8) (chat/ws)" in answer
    assert "not significant over the repeats" in answer, "the CPU ranges overlap"
    cdf = next(c for c in built.files.charts if c.name == "cdf-chat")
    assert "n = 6,000" in " ".join(
        t.get_text() for t in built.figures["cdf-chat"].legends[0].get_texts()
    )
    assert cdf.png.is_file()


# -- edges ---------------------------------------------------------------------------------------


def test_a_missing_messages_file_is_named_not_fatal(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = [
        timed_result("chat", "ws", 3.0, 8.0, run_dir=run),
        timed_result("chat", "tcp", 2.0, 6.0, run_dir=run),
    ]
    write_run(run, results)
    (run / "chat-tcp-r1" / "messages.npz").unlink()
    files = build_report(run, tmp_path / "report")
    cdf = next(c for c in files.charts if c.name == "cdf-chat")
    assert "No messages.npz for chat/tcp" in cdf.caption


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [])
    files = build_report(run, tmp_path / "report")
    check_files(files)
    assert files.charts == ()
    check_html(files.html)
    assert "no results" in files.markdown.read_text(encoding="utf-8")
    assert verdict(read_summary(run)) == [
        "This run holds no results (0 runs), so nothing is concluded."
    ]


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [])
    summary = json.loads((run / "summary.json").read_text())
    summary["schema_version"] = SCHEMA_VERSION + 1
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SchemaError, match="schema_version"):
        build_report(run, tmp_path / "report")
    assert not (tmp_path / "report" / "report.md").exists()


def test_the_report_reads_no_bench_module() -> None:
    """A report is readable anywhere: it imports neither the bench nor the CPU-pinning helpers."""
    package = Path(report.__file__).parent
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(package.rglob("*.py")))
    imported = set(re.findall(r"^(?:from|import) (wirewise\.\w+)", source, re.MULTILINE))
    assert imported.isdisjoint({"wirewise.bench", "wirewise.processes", "wirewise.runner"})


def test_idle_workload_names_each_ramp_size() -> None:
    small = idle_result("poll", 9.0, (8.0, 10.0))
    small.parameters["options"]["step_users"] = 30
    text = plain(workload([idle_result("sse", 10.0, (9.0, 11.0)), small]))
    assert text.startswith("30 (poll), 100 (sse) clients a step x 3 steps of 1 s"), text


# -- a real run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """``tests/data/quick-saturate-game-faults``: summary.json and the game repeats' messages."""
    run = tmp_path_factory.mktemp("sample") / "quick-saturate-game-faults"
    shutil.copytree(DATA / "quick-saturate-game-faults", run)
    yield build(run, tmp_path_factory.mktemp("sample-report"))


def test_a_real_run_renders(sample: Built) -> None:
    check_files(sample.files)
    self_contained(check_html(sample.files.html))
    assert [c.name for c in sample.files.charts] == [
        "saturate-hockey-stick", "latency-game", "cdf-game", "cpu-per-1k", "bytes-per-message",
        "polling-interval",
    ]  # fmt: skip
    markdown = sample.markdown
    assert "## Scenario: faults" not in markdown
    assert "## Reliability (scenario: faults)" in markdown


def test_a_real_run_marks_and_never_quotes_its_invalid_results(sample: Built) -> None:
    bad = [r for r in sample.summary.results if not r.valid]
    assert len(bad) == 7, "six saturate ramps without a knee, one saturated faults generator"
    sentences = verdict(read_summary(sample.run))  # the CLI passes the checked JSON
    assert sentences == verdict(sample.summary)
    text = " ".join(sentences)
    markdown = sample.markdown
    for result in bad:
        name = f"{result.scenario}/{result.label}"
        for sentence in sentences:
            if name in sentence:
                assert "invalid" in sentence, (name, sentence)
        if result.highest_rate_held:
            assert num(result.highest_rate_held["deliveries_per_s"], 0) not in text
        for reason in result.validity.reasons:
            assert reason in markdown
    saturate = rows(section(markdown, "## Scenario: saturate"))
    assert saturate["ws"][1] == "INVALID (1 reason)" and saturate["poll"][1] == "yes"
    assert "Under saturate" in text and "saturate/poll (first step p99" in text


def test_the_cli_writes_the_report(tmp_path: Path) -> None:
    run = write_run(
        tmp_path / "run",
        [timed_result("chat", "ws", 2.0, 5.0), timed_result("chat", "tcp", 1.0, 3.0)],
    )
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_the_game_workload_quotes_its_recorded_payload() -> None:
    """Each scenario records the payload it sent (game's is 50): no special case rewrites it."""
    text = plain(workload([timed_result("game", "ws", 1.0, 2.0)]))
    assert "50-char text" in text and "100" not in text, text


def test_a_single_polling_column_is_labelled_directly(sample: Built) -> None:
    """One scenario polled: every series is one point, labelled where drawn, with no legend."""
    fig = sample.figures["polling-interval"]
    assert fig.legends == []
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"theory p50 ≈ T/2", "theory p99 ≈ 0.99·T"} <= labels
    assert any(t.startswith("p50 ") for t in labels) and any(t.startswith("p99 ") for t in labels)


def test_no_heading_stands_over_nothing(sample: Built, full: Built) -> None:
    for built in (sample, full):
        lines = [line for line in built.markdown.splitlines() if line.strip()]
        for line, after in itertools.pairwise(lines):
            if line.startswith("#") and after.startswith("#"):
                assert len(after) - len(after.lstrip("#")) > len(line) - len(line.lstrip("#")), line
