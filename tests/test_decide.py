"""``wirewise decide`` and ``wirewise explain`` on the committed reference run (real measurements).

The workloads are the classic system-design cases; each test states the answer a careful
engineer would give and checks that the measured numbers lead there, for the stated reasons.
"""

from __future__ import annotations

import json

import pytest

from wirewise.cli import find_run, main
from wirewise.decide import Workload, decide, profiles
from wirewise.explain import TOPICS, explain
from wirewise.results import read_summary
from wirewise.runner import ROOT

REFERENCE = ROOT / "results" / (ROOT / "results" / "REFERENCE").read_text().strip()
"""The committed reference run (a newer run of yours in results/ does not change these tests)."""


@pytest.fixture(scope="module")
def reference() -> dict:
    return read_summary(REFERENCE)


def ranked(decision: object) -> dict[str, object]:
    return {r.transport: r for r in decision.ranking}  # type: ignore[attr-defined]


def test_every_transport_has_a_profile(reference: dict) -> None:
    found = profiles(reference)
    assert set(found) == {"poll", "longpoll", "sse", "h2", "ws"}
    for profile in found.values():
        assert profile.rss_per_conn and profile.rss_per_conn > 0
        assert profile.cpu_per_delivery_s is not None and profile.cpu_per_delivery_s > 0
        assert profile.p99_ms


def test_notification_feed_needs_no_websocket(reference: dict) -> None:
    """100,000 clients, a notification a minute or two, nobody sends, seconds are fine."""
    decision = decide(
        Workload(clients=100_000, push_rate=0.01, send_rate=0, latency_ms=2000), reference
    )
    assert decision.recommendation == "sse"
    reasons = " ".join(ranked(decision)["ws"].reasons)
    assert "never send" in reasons
    assert decision.estimates["sse"].servers >= 5, "100,000 sockets need several processes"
    assert decision.estimates["sse"].limit == "connections"


def test_chat_with_occasional_sends_is_served_by_sse(reference: dict) -> None:
    decision = decide(
        Workload(clients=10_000, push_rate=1, send_rate=0.05, latency_ms=200), reference
    )
    assert decision.recommendation == "sse"
    # Polling can meet 200 ms only by polling ~6 times a second: feasible, and far costlier.
    poll = ranked(decision)["poll"]
    assert decision.estimates["poll"].servers >= 5 * decision.estimates["sse"].servers
    assert poll.score < ranked(decision)["sse"].score / 5
    assert any("requests/s whether or not anything changed" in r for r in poll.reasons)


def test_twenty_hertz_game_needs_websockets(reference: dict) -> None:
    decision = decide(
        Workload(clients=1000, push_rate=80, send_rate=20, latency_ms=100, payload_bytes=50),
        reference,
    )
    assert decision.recommendation == "ws"
    sse = ranked(decision)["sse"]
    assert any("HTTP request" in r for r in sse.reasons)
    assert decision.estimates["ws"].cpu_cores < decision.estimates["sse"].cpu_cores


def test_collaborative_editing_needs_websockets(reference: dict) -> None:
    decision = decide(Workload(clients=5000, push_rate=5, send_rate=5, latency_ms=200), reference)
    assert decision.recommendation == "ws"


def test_dashboard_refreshed_each_minute_polls(reference: dict) -> None:
    decision = decide(
        Workload(clients=1000, push_rate=1 / 60, send_rate=0, latency_ms=60_000), reference
    )
    assert decision.recommendation == "poll"
    assert decision.estimates["poll"].servers == 1
    assert any("polls every" in r for r in ranked(decision)["poll"].reasons)


def test_blocked_upgrade_rules_out_websockets(reference: dict) -> None:
    workload = Workload(
        clients=1000, push_rate=80, send_rate=20, latency_ms=100, proxy_blocks_upgrade=True
    )
    decision = decide(workload, reference)
    assert decision.recommendation in ("sse", "h2")
    ws = ranked(decision)["ws"]
    assert ws.score == 0 and any("Upgrade" in r for r in ws.reasons)


def test_decide_json_has_the_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "decide",
            "--clients",
            "2000",
            "--push-rate",
            "1",
            "--send-rate",
            "0.1",
            "--latency-ms",
            "500",
            "--json",
        ]
    )
    assert status == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"recommendation", "ranking", "estimates"}
    assert answer["recommendation"] in {"poll", "longpoll", "sse", "h2", "ws"}
    assert {r["transport"] for r in answer["ranking"]} == {"poll", "longpoll", "sse", "h2", "ws"}
    for item in answer["ranking"]:
        assert 0 <= item["score"] <= 100 and item["reasons"]
    for estimate in answer["estimates"].values():
        assert set(estimate) == {
            "memory_bytes",
            "cpu_cores",
            "bandwidth_bytes_per_s",
            "p99_ms",
            "servers",
        }


def test_decide_refuses_missing_flags_without_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["decide", "--clients", "10", "--json"]) == 2
    assert "--push-rate" in capsys.readouterr().err


def test_decide_refuses_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "decide",
        "--clients",
        "0",
        "--push-rate",
        "1",
        "--send-rate",
        "0",
        "--latency-ms",
        "100",
    ]
    assert main(args) == 2


@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_topic_answers_and_quotes_the_run(topic: str, reference: dict) -> None:
    text = explain(topic, reference, "ref")
    assert text.startswith(TOPICS[topic].title)
    assert "Figures: run ref" in text
    assert 400 < len(text) < 4000, "short answers"


@pytest.mark.parametrize("topic", ["memory", "polling", "sse-vs-ws", "http2"])
def test_topics_with_figures_quote_measured_numbers(topic: str, reference: dict) -> None:
    text = explain(topic, reference, "ref")
    assert "not in this run" not in text
    assert any(unit in text for unit in ("KiB", " ms"))


def test_topics_without_results_say_how_to_measure() -> None:
    text = explain("memory", None)
    assert "wirewise bench" in text


def test_explain_cli_lists_topics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in TOPICS)
    assert main(["explain", "nonsense"]) == 2


def test_reference_run_and_its_report_are_committed() -> None:
    assert (REFERENCE / "summary.json").exists()
    assert read_summary(REFERENCE)["metadata"]["plan"]["quick"] is False, "a full run"
    report = ROOT / "reports" / REFERENCE.name
    assert (report / "report.html").exists() and (report / "report.md").exists()
    readme = (ROOT / "README.md").read_text()
    assert f"reports/{REFERENCE.name}/charts/" in readme, "the README shows its main chart"
    assert find_run(None).name >= REFERENCE.name, "decide and explain default to a run"
