"""``wirewise.report``: a report built from a real, seconds-long bench, and from small synthetic runs
for the edge cases (missing scenarios, warnings that need escaping, saturate, no results at all).

Each report is checked the way a reader would meet it: every file listed exists; every PNG decodes
to a sane size; every SVG is XML with an <svg> root; report.html is well formed and self-contained
(images only as data: URLs); report.md names every transport and quotes every warning; the verdict
cites numbers; an unknown schema version is refused.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from wirewise.cli import main
from wirewise.console import label
from wirewise.metrics import Deliveries, Histogram
from wirewise.report import ReportFiles, build_report, num, verdict, workload
from wirewise.results import SCHEMA_VERSION, SchemaError, read_summary, write_summary
from wirewise.runner import Backend, empty_result

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
    assert checker.doctype.lower() == "doctype html", (
        "an HTML5 document starts with <!DOCTYPE html>"
    )
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack[:5]}"
    return checker


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


def self_contained(checker: TagChecker) -> None:
    for tag, attribute, value in checker.urls:
        if tag == "img":
            assert value.startswith("data:image/png;base64,"), (tag, attribute, value[:60])
        else:
            assert value.startswith("#"), f"<{tag} {attribute}={value!r}> leaves the page"


# -- a real bench run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A seconds-long chat + idle bench over ws (both servers), poll and the floor (~30 s)."""
    out = tmp_path_factory.mktemp("results")
    argv = ["bench", "--scenario", "chat", "--scenario", "idle", "--quick", "--duration", "1.5"]
    argv += ["--transport", "ws", "--transport", "tcp", "--transport", "poll", "--out", str(out)]
    assert main(argv) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    report_dir = tmp_path_factory.mktemp("report")
    files = build_report(run, report_dir)
    return {"run": run, "summary": read_summary(run), "files": files}


@pytest.mark.timeout(300)
def test_bench_report_files_exist_and_parse(bench_report: dict[str, Any]) -> None:
    files: ReportFiles = bench_report["files"]
    check_files(files)
    names = {c.name for c in files.charts}
    assert {"latency-chat", "latency-cdf", "memory-per-connection", "memory-fit"} <= names
    assert {"cpu-per-1k", "bytes-per-message", "polling-interval"} <= names
    assert "saturate-hockey-stick" not in names, "no saturate in this run"
    assert any("saturate" in s for s in files.skipped), files.skipped
    assert files.seconds < 60, f"build_report took {files.seconds:.1f} s"


@pytest.mark.timeout(300)
def test_bench_report_html_is_well_formed_and_self_contained(bench_report: dict[str, Any]) -> None:
    files: ReportFiles = bench_report["files"]
    checker = check_html(files.html)
    self_contained(checker)
    images = [v for t, _, v in checker.urls if t == "img"]
    assert len(images) == len(files.charts), "every chart is embedded once"
    text = " ".join(checker.text)
    for sentence in verdict(bench_report["summary"]):
        assert " ".join(sentence.split()) in " ".join(text.split())


@pytest.mark.timeout(300)
def test_bench_report_markdown_names_every_transport_and_warning(
    bench_report: dict[str, Any],
) -> None:
    files: ReportFiles = bench_report["files"]
    summary = bench_report["summary"]
    markdown = files.markdown.read_text(encoding="utf-8")
    for result in summary["results"]:
        assert label(result) in markdown, label(result)
        for warning in result["warnings"]:
            assert warning in markdown, warning
    assert {label(r) for r in summary["results"]} == {"poll", "ws", "ws@websockets", "tcp"}
    for chart in files.charts:
        assert f"]({chart.png.relative_to(files.markdown.parent).as_posix()})" in markdown
    assert summary["metadata"]["cpu_model"] in markdown
    assert summary["metadata"]["git_commit"] in markdown


@pytest.mark.timeout(300)
def test_bench_verdict_cites_numbers(bench_report: dict[str, Any]) -> None:
    sentences = verdict(bench_report["summary"])
    assert 4 <= len(sentences) <= 9, sentences
    for sentence in sentences:
        assert re.search(r"\d", sentence), f"no number in: {sentence}"
    chat = next(s for s in sentences if s.startswith("In chat"))
    floor = next(
        r
        for r in bench_report["summary"]["results"]
        if r["scenario"] == "chat" and r["transport"] == "tcp"
    )
    assert f"{floor['latency_ms']['p50']:.2f}" in chat, "the floor's p50 is quoted"
    assert any("idle connection costs" in s and "KiB" in s for s in sentences)
    by_transport = {
        r["transport"]: r for r in bench_report["summary"]["results"] if r["scenario"] == "chat"
    }
    if {"sse", "ws"} <= set(by_transport):
        assert sentences[0].startswith(("Answer:", "Tentative answer")), sentences[0]
        assert num(by_transport["sse"]["latency_ms"]["p99"]) in sentences[0], "it quotes SSE's p99"
    else:  # no SSE or no WebSocket result in this bench: no answer is made up
        assert not sentences[0].startswith(("Answer:", "Tentative answer"))


@pytest.mark.parametrize(
    ("sse_ms", "saturated", "opening"),
    [
        (6.0, False, "Answer: for pushing to clients, SSE + POST is enough"),
        (40.0, False, "Answer: WebSockets delivered markedly faster"),
        (6.0, True, "Tentative answer (the load generator was saturated)"),
    ],
)
def test_the_answer_follows_the_numbers(
    tmp_path: Path, sse_ms: float, saturated: bool, opening: str
) -> None:
    run = tmp_path / "run"
    sse = latency_result("broadcast", Backend("sse", "uvicorn"), sse_ms, 2000, run)
    ws = latency_result("broadcast", Backend("ws", "uvicorn"), 5.0, 2000, run)
    chat = [
        latency_result("chat", Backend(t, "uvicorn"), ms, 2000, run)
        for t, ms in (("sse", 9.0), ("ws", 4.0))
    ]
    for result in (sse, ws, *chat):  # with a clean chat, the answer would come from chat
        result["load_generator"]["saturated"] = saturated
    write_run(run, [sse, ws, *chat])
    answer = verdict(read_summary(run))[0]
    assert answer.startswith(opening), answer
    assert f"p99 was {num(sse['latency_ms']['p99'])} ms" in answer
    # chat CPU is 50 + center ms in latency_result: WebSocket's is lower, so sends favour it.
    assert "59.0 against 54.0 ms of CPU" in answer
    assert "earn their keep when clients send often" in answer


def test_the_answer_prefers_a_scenario_measured_below_saturation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = [
        latency_result(scenario, Backend(t, "uvicorn"), ms, 2000, run)
        for scenario in ("broadcast", "chat")
        for t, ms in (("sse", 9.0), ("ws", 4.0))
    ]
    results[0]["load_generator"]["saturated"] = True  # broadcast/sse
    write_run(run, results)
    answer = verdict(read_summary(run))[0]
    assert answer.startswith("Answer:") and "in chat its p99" in answer, answer


def test_no_answer_without_both_sse_and_websocket(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [latency_result("chat", Backend("sse", "uvicorn"), 5.0, 300, run)])
    assert not verdict(read_summary(run))[0].startswith("Answer")


# -- synthetic runs ----------------------------------------------------------------------------

METADATA = {
    "wirewise_version": "0.1.0",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "python": "3.11.7",
    "platform": "Linux-test",
    "cpu_model": "Test CPU <9000> & co",
    "cores": 2,
    "kernel": "6.0.0-test",
    "started_at": "2026-11-26T10:00:00+00:00",
    "argv": ["wirewise", "bench", "--scenario", "game", "--scenario", "saturate"],
    "libraries": {"uvicorn": "0.54.0"},
    "cores_used": {"server": [0], "load_generator": [1]},
    "fd_limit": 20000,
}


def histogram(center_ms: float, count: int) -> Histogram:
    h = Histogram()
    for i in range(count):
        h.record(int(center_ms * 1000 * (0.5 + i / count)))
    return h


def latency_result(
    scenario: str, backend: Backend, center_ms: float, count: int, run_dir: Path, **extra: Any
) -> dict[str, Any]:
    params = {"users": 8, "rate": 20.0, "payload_bytes": 100, "measure": 3.0, "poll_interval": 1.0}
    result = empty_result(scenario, backend, params)
    h = histogram(center_ms, count)
    result["latency_ms"] = h.summary_ms()
    result["send_latency_ms"] = histogram(1.0, count).summary_ms()
    result["deliveries"] = Deliveries.from_counts(count, count, 0).as_dict()
    result["throughput_msgs_per_s"] = count / 3.0
    result["server_cpu_ms_per_1k_msgs"] = 50.0 + center_ms
    result["bytes_per_message"] = {"down": 250.0 + center_ms, "up": 200.0, "total": 300.0}
    result["load_generator"] = {"cpu_percent_max": 20.0, "saturated": False}
    folder = f"{scenario}-{backend.label.replace('@', '-')}"
    result["files"] = folder
    (run_dir / folder).mkdir(parents=True, exist_ok=True)
    (run_dir / folder / "scenario.json").write_text(json.dumps({"latency": h.encode()}))
    result.update(extra)
    return result


def saturate_result(backend: Backend, base_ms: float, held_steps: int) -> dict[str, Any]:
    params = {"users": 20, "rate": 5.0, "payload_bytes": 100, "steps": 3, "step_seconds": 2.0,
              "latency_bound_ms": 100.0, "poll_interval": 1.0}  # fmt: skip
    result = empty_result("saturate", backend, params)
    steps = []
    for i in range(3):
        p99 = base_ms * (3**i)
        summary = {"p50": p99 / 3, "p90": p99 / 1.5, "p99": p99, "p999": p99 * 1.1,
                   "max": p99 * 1.2, "mean": p99 / 2.5, "count": 2000 * (i + 1)}  # fmt: skip
        steps.append({"step": i, "rate_per_user": 5.0 * 1.5**i, "sent_per_s": 100.0 * 1.5**i,
                      "deliveries_per_s": 1000.0 * 1.5**i, "latency_ms": summary,
                      "lag_p99_ms": 5.0, "server_cpu_ms_per_1k_msgs": 40.0, "held": i < held_steps})  # fmt: skip
    result["steps"] = steps
    result["deliveries"] = Deliveries.from_counts(12000, 12000, 0).as_dict()
    result["stopped_by"] = "latency_bound" if held_steps < 3 else "max_steps"
    if held_steps:
        best = steps[held_steps - 1]
        result["latency_ms"] = best["latency_ms"]
        result["throughput_msgs_per_s"] = best["deliveries_per_s"]
        result["server_cpu_ms_per_1k_msgs"] = 40.0
        result["bytes_per_message"] = {"down": 260.0, "up": 210.0, "total": 280.0}
        result["highest_rate_held"] = {
            "rate_per_user": best["rate_per_user"],
            "deliveries_per_s": best["deliveries_per_s"],
            "latency_bound_ms": 100.0,
        }
    else:
        result["warnings"].append("no step held p99 <= 100 ms")
    result["load_generator"] = {"cpu_percent_max": 91.0, "saturated": True}
    result["warnings"].append(
        "load generator saturated: a Locust process reached 91% CPU while measuring;"
        " latency includes its own queueing"
    )
    return result


def write_run(run_dir: Path, results: list[dict[str, Any]], **metadata: Any) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_summary(run_dir / "summary.json", {**METADATA, **metadata}, results)
    return run_dir


@pytest.fixture
def game_and_saturate(tmp_path: Path) -> Path:
    """game over poll, ws and the floor (one warning needing escaping), saturate over ws and sse."""
    run = tmp_path / "20261126-100000"
    run.mkdir()
    odd = 'odd <script>alert("x")</script> & a | pipe'
    results = [
        latency_result("game", Backend("poll", "uvicorn"), 500.0, 1920, run,
                       parameters={"users": 8, "rooms": 2, "rate_per_user": 20.0, "payload_bytes": 50,
                                   "duration_s": 3.0, "poll_interval_s": 1.0}),
        latency_result("game", Backend("ws", "uvicorn"), 3.0, 1920, run, warnings=[odd]),
        latency_result("game", Backend("tcp", "asyncio"), 2.0, 1920, run),
        saturate_result(Backend("ws", "uvicorn"), 10.0, 2),
        saturate_result(Backend("sse", "uvicorn"), 150.0, 0),
    ]  # fmt: skip
    return write_run(run, results)


def test_game_and_saturate_report(game_and_saturate: Path, tmp_path: Path) -> None:
    files = build_report(game_and_saturate, tmp_path / "report")
    check_files(files)
    names = {c.name for c in files.charts}
    assert {"latency-game", "latency-cdf", "saturate-hockey-stick", "polling-interval"} <= names
    assert not names & {"latency-chat", "latency-broadcast", "memory-per-connection", "memory-fit"}
    skipped = " ".join(files.skipped)
    assert "chat" in skipped and "broadcast" in skipped and "idle" in skipped
    markdown = files.markdown.read_text(encoding="utf-8")
    assert "Not drawn" in markdown
    summary = read_summary(game_and_saturate)
    for result in summary["results"]:
        for warning in result["warnings"]:
            assert warning in markdown, warning
    checker = check_html(files.html)
    self_contained(checker)
    page = files.html.read_text(encoding="utf-8")
    assert "<script" not in page, "a string from the results reached the page unescaped"
    assert "odd &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a | pipe" in page
    assert "Test CPU &lt;9000&gt; &amp; co" in page


def test_verdict_says_what_is_missing(game_and_saturate: Path) -> None:
    sentences = verdict(read_summary(game_and_saturate))
    text = " ".join(sentences)
    assert "no idle result" in text, "the idle cost is said to be unmeasured, not guessed"
    assert "In game" in text
    saturate = next(s for s in sentences if s.startswith("Under saturate"))
    assert "ws 1,500" in saturate and "no step held for sse" in saturate
    caveats = next(s for s in sentences if s.startswith("Caveats"))
    assert "saturated" in caveats and "91" in caveats
    for sentence in sentences:
        assert re.search(r"\d", sentence) or "not measured" in sentence, sentence


def test_a_chat_run_without_the_floor_says_so(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = [latency_result("chat", Backend("sse", "uvicorn"), 5.0, 300, run)]
    write_run(run, results, cores_used={"server": [1], "load_generator": [1]})
    sentences = verdict(read_summary(run))
    assert any("floor was not measured" in s for s in sentences), sentences
    assert any("same core" in s for s in sentences), "a shared core is a caveat"
    assert any("too few samples" in s for s in sentences), "300 samples cannot support p99"
    files = build_report(run, tmp_path / "report")
    check_files(files)
    self_contained(check_html(files.html))


def test_a_missing_histogram_is_named_not_fatal(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = [
        latency_result("chat", Backend("ws", "uvicorn"), 3.0, 1600, run),
        latency_result("chat", Backend("tcp", "asyncio"), 2.0, 1600, run),
    ]
    write_run(run, results)
    (run / "chat-tcp" / "scenario.json").unlink()
    files = build_report(run, tmp_path / "report")
    cdf = next(c for c in files.charts if c.name == "latency-cdf")
    assert "No histogram for chat/tcp" in cdf.caption


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [])
    files = build_report(run, tmp_path / "report")
    check_files(files)
    assert files.charts == ()
    check_html(files.html)
    assert "no results" in files.markdown.read_text(encoding="utf-8")
    assert verdict(read_summary(run))


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [])
    summary = json.loads((run / "summary.json").read_text())
    summary["schema_version"] = SCHEMA_VERSION + 1
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SchemaError, match="schema_version"):
        build_report(run, tmp_path / "report")
    assert not (tmp_path / "report" / "report.md").exists()


def faults_result(backend: Backend, run: Path, silently: int, slow: int | None) -> dict[str, Any]:
    result = latency_result("faults", backend, 4.0, 1500, run)
    result["faults"] = {
        "killed": True,
        "outage_s": 0.42,
        "clients": 998,
        "reconnect_ms": {"p50": 123.4, "p99": 2345.6, "max": 3001.0, "count": 998},
        "all_back": True,
        "lost_with_resume": 17 + silently,
        "lost_signalled": 17,
        "lost_silently": silently,
        "lost_silently_stale_cursor": silently,
        "lost_without_resume": 640,
        "delivered_by_resume": 623 - silently,
        "gaps_signalled": 998,
        "slow_consumer_disconnects": slow,
        "slow_consumer_errors_seen": slow or 0,
        "slow_reader_reconnects": 2,
        "server_rss_peak_bytes": 97 * 2**20,
    }
    if silently:
        result["warnings"].append(f"{silently} deliveries were lost without a gap (silent loss)")
    return result


def test_reliability_section_only_with_faults_results(tmp_path: Path) -> None:
    run = tmp_path / "faults-run"
    run.mkdir()
    results = [
        latency_result("chat", Backend("sse", "uvicorn"), 5.0, 1500, run),
        faults_result(Backend("sse", "uvicorn"), run, 0, 1),
        faults_result(Backend("poll", "uvicorn"), run, 9, None),
    ]
    files = build_report(write_run(run, results), tmp_path / "report")
    check_files(files)
    markdown = files.markdown.read_text(encoding="utf-8")
    section = markdown.split("## Reliability (scenario: faults)", 1)[1].split("\n#", 1)[0]
    rows = {
        line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")
    }
    assert {"sse", "poll"} <= set(rows)
    cells = [c.strip() for c in rows["sse"].split("|")[1:-1]]
    # outage, back, p50, p99, max, lost without / with resume, with a gap, silently, gaps, cut-offs, RSS
    assert cells[1:13] == ["0.42", "998 of 998 (all)", "123", "2,346", "3,001", "640", "17", "17",
                           "0", "998", "1", "97"]  # fmt: skip
    poll = [c.strip() for c in rows["poll"].split("|")[1:-1]]
    assert poll[9] == "9" and poll[11] == "n/a"
    checker = check_html(files.html)
    self_contained(checker)
    page = files.html.read_text(encoding="utf-8")
    assert "Reliability (scenario: faults)" in page and "2,346" in page and "n/a" in page
    # Without faults results there is no such section.
    plain = tmp_path / "plain"
    plain.mkdir()
    files = build_report(
        write_run(plain, [latency_result("chat", Backend("sse", "uvicorn"), 5.0, 1500, plain)]),
        tmp_path / "plain-report",
    )
    assert "Reliability" not in files.markdown.read_text(encoding="utf-8")
    assert "Reliability" not in files.html.read_text(encoding="utf-8")


def test_idle_workload_names_each_ramp_size() -> None:
    params = {"step_users": 3000, "steps": 5, "step_seconds": 5.0, "payload_bytes": 100,
              "poll_interval": 1.0}  # fmt: skip
    results = [
        empty_result("idle", Backend("sse", "uvicorn"), params),
        empty_result("idle", Backend("poll", "uvicorn"), {**params, "step_users": 300}),
    ]
    text = workload(results)
    assert text.startswith("300 (poll), 3,000 (sse) clients a step"), text
