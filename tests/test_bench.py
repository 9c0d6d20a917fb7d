"""``wirewise bench`` end to end (a real, seconds-long run over every backend), ``summarize``
rebuilding it from the raw files, the plan, the headroom model, and the validity rules applied
to raw files made by hand."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import needs
from wirewise.bench import Headroom
from wirewise.cli import main
from wirewise.ledger import OK, Accounting, RawMessages
from wirewise.metrics import Histogram, too_few_samples
from wirewise.plan import Plan, Run, deployment, plan_runs, scenario_options
from wirewise.registry import BACKENDS, backend
from wirewise.results import (
    METADATA_KEYS,
    SCHEMA_VERSION,
    Latency,
    Result,
    SchemaError,
    Step,
    Summary,
    read_summary,
    validate,
)
from wirewise.sampler import Sample
from wirewise.scenarios._options import ScenarioOptions
from wirewise.summarize import (
    GENERATOR_SATURATED,
    fit_memory,
    interpolate,
    parts_cpu_between,
    step_knee,
    summarize_repeat,
    summarize_run,
)

ORDERED = ("p50", "p90", "p99", "max")


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short chat run over every backend (about 50 s), shared by the tests below."""
    out = tmp_path_factory.mktemp("results")
    status = main(
        ["bench", "--scenario", "chat", "--quick", "--duration", "1.5", "--out", str(out)]
    )
    assert status == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return {"dir": run, "summary": read_summary(run)}


@pytest.mark.timeout(300)
def test_bench_covers_every_backend_and_the_floor(chat_run: dict[str, Any]) -> None:
    summary = chat_run["summary"]
    assert summary["schema_version"] == SCHEMA_VERSION
    assert [r["label"] for r in summary["results"]] == [b.label for b in BACKENDS]
    metadata = summary["metadata"]
    assert metadata["cores"] >= 1 and metadata["git_commit"] and metadata["python"]
    assert metadata["argv"][:2] == ["wirewise", "bench"]
    assert metadata["plan"]["repeat"] == 1 and "interpolated" in metadata["sampling"]["cpu"]


@pytest.mark.timeout(300)
def test_every_delivery_is_accounted_for_and_the_run_is_valid(chat_run: dict[str, Any]) -> None:
    for result in chat_run["summary"]["results"]:
        name = result["label"]
        assert result["validity"] == {"valid": True, "reasons": []}, name
        d = result["deliveries"]
        assert d["expected"] > 0 and d["lost"] == 0, name
        assert d["delivered"] == d["expected"] - d["lost"] + d["extra"], name
        publisher = result["publisher"]
        assert publisher["scheduled"] == publisher["sent"] == publisher["answered"] > 0, name
        assert publisher["unsent"] == publisher["unanswered"] == 0, name
        assert publisher["lag_ms"]["p99"] < 10, f"{name}: an open-loop publisher keeps its schedule"
        latency = result["latency_ms"]
        assert latency["count"] == d["delivered"], name
        values = [latency[k] for k in ORDERED]
        assert values == sorted(values), f"{name}: percentiles out of order {values}"
        low, high = latency["ci95"]["p50"]
        assert low <= latency["p50"] <= high, name
        wire = result["bytes_per_message"]
        assert wire["down"] > result["parameters"]["payload_bytes"], f"{name}: carries its text"
        assert wire["wire"]["down"] > wire["down"], f"{name}: headers add to the payload"
        assert result["server_cpu_ms_per_1k_msgs"] > 0 and result["throughput_msgs_per_s"] > 0
        generator = result["load_generator"]
        assert generator["cpu_us_per_delivery"] > 0 and generator["server_cpu_us_per_delivery"] > 0
        assert generator["receipt_clock"] == "kernel"
        assert generator["saturated"] is False


@pytest.mark.timeout(300)
def test_short_polling_latency_follows_its_interval(chat_run: dict[str, Any]) -> None:
    """Theory: a message waits on average half an interval for the next poll."""
    results = {r["label"]: r for r in chat_run["summary"]["results"]}
    poll, ws = results["poll"], results["ws"]
    interval_ms = poll["parameters"]["poll_interval_s"] * 1000
    assert 0.3 * interval_ms < poll["latency_ms"]["p50"] < 0.8 * interval_ms
    assert poll["latency_ms"]["max"] < interval_ms + 500
    assert ws["latency_ms"]["p50"] < poll["latency_ms"]["p50"] / 10


@pytest.mark.timeout(300)
def test_summarize_rebuilds_the_same_summary_from_the_raw_files(
    chat_run: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / chat_run["dir"].name
    shutil.copytree(chat_run["dir"], copy)
    (copy / "summary.json").unlink()
    assert main(["summarize", str(copy)]) == 0
    assert read_summary(copy) == chat_run["summary"]
    for result in chat_run["summary"]["results"]:
        files = copy / result["repeats"][0]["files"]
        for name in ("run.json", "scenario.json", "messages.npz", "samples.jsonl", "bytes.jsonl"):
            assert (files / name).exists(), files / name


@pytest.mark.timeout(300)
def test_summarize_marks_a_run_with_unreadable_files_invalid_and_keeps_the_rest(
    chat_run: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / chat_run["dir"].name
    shutil.copytree(chat_run["dir"], copy)
    broken = chat_run["summary"]["results"][1]
    (copy / broken["repeats"][0]["files"] / "scenario.json").write_text('{"window": ')
    summary = summarize_run(copy, write=False).to_json()
    for result in summary["results"]:
        validity = result["validity"]
        if result["label"] == broken["label"]:
            assert not validity["valid"]
            assert validity["reasons"][0].startswith("unreadable raw files: JSONDecodeError")
        else:
            assert validity["valid"], (result["label"], validity)


@pytest.mark.timeout(300)
def test_a_run_that_raises_is_recorded_as_failed_and_the_bench_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only the errors a run expects: any exception costs its run, never the bench."""
    import wirewise.bench

    real = wirewise.bench.summarize_repeat

    def broken_for_poll(directory: Path) -> Any:
        if "-poll-" in directory.name:
            raise KeyError("a bug in the summarizer")
        return real(directory)

    monkeypatch.setattr(wirewise.bench, "summarize_repeat", broken_for_poll)
    flags = ["--scenario", "chat", "--quick", "--duration", "1", "--transport", "poll"]
    main(["bench", *flags, "--transport", "ws", "--out", str(tmp_path)])
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = {r["label"]: r for r in read_summary(run)["results"]}
    assert set(results) == {"poll", "ws", "ws@websockets"}
    failed = results["poll"]["validity"]
    assert not failed["valid"]
    assert failed["reasons"] == ["the run failed: KeyError: 'a bug in the summarizer'"]
    recorded = json.loads((run / results["poll"]["repeats"][0]["files"] / "run.json").read_text())
    assert recorded["failure"].startswith("KeyError") and "Traceback" in recorded["traceback"][0]
    assert recorded["server"]["pid"], "what the run wrote before it failed is kept"
    assert results["ws"]["validity"]["valid"] and results["ws@websockets"]["validity"]["valid"]


# -- the plan and the headroom -------------------------------------------------------------------


def test_repeats_are_interleaved_scenario_by_scenario() -> None:
    ws, sse = backend("ws"), backend("sse")
    plan = Plan(scenarios=("chat", "faults"), backends=(sse, ws, backend("tcp")), repeat=2)
    names = [run.name for run in plan_runs(plan)]
    assert names == [
        "chat-sse-r1", "chat-ws-r1", "chat-tcp-r1",
        "chat-sse-r2", "chat-ws-r2", "chat-tcp-r2",
        "faults-sse-r1", "faults-ws-r1",
        "faults-sse-r2", "faults-ws-r2",
    ]  # fmt: skip


def test_deployments_interleave_and_a_kill_has_no_single_process_baseline() -> None:
    """``--baseline --sticky both``: each backend's deployments one after the other, repeat
    after repeat; a failover needs several instances, so it gets no single-process run."""
    sse, ws = backend("sse"), backend("ws")
    plan = Plan(
        scenarios=("chat", "failover"),
        backends=(sse, ws),
        instances=3,
        sticky="both",
        baseline=True,
    )
    names = [run.name for run in plan_runs(plan)]
    assert names == [
        "chat-sse-r1", "chat-sse-sticky-r1", "chat-sse-single-r1",
        "chat-ws-r1", "chat-ws-sticky-r1", "chat-ws-single-r1",
        "failover-sse-r1", "failover-sse-sticky-r1",
        "failover-ws-r1", "failover-ws-sticky-r1",
    ]  # fmt: skip
    run = plan_runs(plan)[2]
    assert deployment(plan, run) == {
        "variant": "single", "instances": 1, "balancer": None, "broker": "memory",
        "sticky": False, "proxy": None, "network": None,
    }  # fmt: skip
    assert deployment(plan, plan_runs(plan)[1])["sticky"] is True
    assert [r.name for r in plan_runs(Plan(scenarios=("chat",), backends=(sse,)))] == [
        "chat-sse-r1"
    ], "one process: no deployments to compare"


def test_a_proxied_plan_compares_with_the_server_reached_directly() -> None:
    sse = backend("sse")
    plan = Plan(
        scenarios=("chat", "faults"),
        backends=(sse, backend("h2")),
        proxy="nginx-tuned",
        baseline=True,
    )
    runs = plan_runs(plan)
    assert [r.name for r in runs] == ["chat-sse-r1", "chat-sse-single-r1", "faults-sse-r1"]
    assert [deployment(plan, r)["proxy"] for r in runs] == ["nginx-tuned", None, None]


@pytest.mark.parametrize(
    "flags",
    [
        ["--sticky", "on"],  # one instance: nothing to stick to
        ["--baseline"],  # one instance is the baseline already
        ["--instances", "3", "--balancer", "reuseport", "--sticky", "on"],
        ["--instances", "3", "--sticky", "sometimes"],
        ["--processes", "0"],  # nobody to make the load
        ["--remote-workers", "1", "--worker-wait", "0"],
        ["--proxy", "squid"],
        ["--proxy", "nginx-tuned", "--instances", "3"],
    ],
)
def test_bench_refuses_what_cannot_run(tmp_path: Path, flags: list[str]) -> None:
    argv = ["bench", "--scenario", "chat", "--quick", "--transport", "sse", *flags]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir()), "nothing ran"


def test_headroom_scales_a_run_the_generator_could_not_keep_up_with() -> None:
    plan = Plan(scenarios=("broadcast",), rate=100.0)
    run = Run("broadcast", backend("sse"), 1)
    options, users = scenario_options(plan, run)
    headroom = Headroom(limit=70.0)
    headroom.costs["sse"] = (20.0, "chat-sse-r1")
    events = headroom.events_per_s(run, options, users)
    assert events == pytest.approx(100 * (users - 1) + 100)
    planned, record = headroom.plan(run, options, users)
    predicted = events * 20.0 / 1e4
    assert record["predicted_percent"] == pytest.approx(predicted, rel=1e-3)
    assert predicted > 70 and planned.rate == pytest.approx(100 * 70 / predicted, rel=1e-3)
    assert record["chosen"]["rate"] == planned.rate and record["cost_source"] == "chat-sse-r1"
    calm, record = headroom.plan(run, ScenarioOptions(transport="sse", rate=1.0), users)
    assert calm.rate == 1.0 and "chosen" not in record


def test_scenario_options_become_locust_flags() -> None:
    options = ScenarioOptions(transport="h2", rate=2.5, measure=3.0, server_pid=42)
    argv = options.to_argv()
    assert argv == ["--transport", "h2", "--rate", "2.5", "--measure", "3.0", "--server-pid", "42"]


def test_each_scenario_sends_and_records_its_own_payload() -> None:
    """game's players send 50 characters, the rest 100, unless the plan says otherwise; the
    figure the bench records is the one the scenario is given (no rule private to game)."""
    ws = backend("ws")
    for scenario, wanted in (("game", 50), ("chat", 100), ("broadcast", 100)):
        options, _ = scenario_options(Plan(scenarios=(scenario,)), Run(scenario, ws, 1))
        assert options.payload_bytes == wanted, scenario
        argv = options.to_argv()
        assert argv[argv.index("--payload-bytes") + 1] == str(wanted), scenario
    given = Plan(scenarios=("game",), payload_bytes=700)
    options, _ = scenario_options(given, Run("game", ws, 1))
    assert options.payload_bytes == 700


# -- validity, from raw files made by hand --------------------------------------------------------

START = 1_800_000_000.0


def sample(t: float, server_cpu: float, loadgen_cpu: float, busiest: float, **more: Any) -> Sample:
    return Sample(
        t=t,
        server_rss=more.get("rss", 50_000_000),
        server_uss=None,
        server_cpu_s=server_cpu,
        server_fds=20,
        server_connections=more.get("connections", 10),
        kernel_tcp_mem_bytes=4096,
        kernel_tcp_inuse=20,
        kernel_slab_bytes=1000,
        loadgen_cpu_percent=busiest,
        loadgen_cpu_percent_max_single=busiest,
        loadgen_cpu_s=loadgen_cpu,
        bench_cpu_s=0.0,
        parts_cpu_s=more.get("parts_cpu"),
    )


def make_run(
    directory: Path,
    *,
    lag_us: int = 200,
    busiest: float = 30.0,
    deliveries_per_message: int = 4,
    settled: bool = True,
) -> Path:
    """A chat run's raw files: 100 messages in one room of 4 receivers, 10 s window."""
    directory.mkdir(parents=True)
    start_us = int(START * 1e6)
    sends, deliveries = [], []
    for n in range(100):
        scheduled = start_us + n * 100_000
        sends.append([0, scheduled, scheduled + lag_us, scheduled + 2_000, 10 + n, OK])
        for _ in range(deliveries_per_message):
            deliveries.append([0, 10 + n, scheduled, scheduled + 1_500])
    RawMessages(
        rooms=["chat-0"],
        receivers=[4],
        sends=np.array(sends, dtype=np.int64),
        deliveries=np.array(deliveries, dtype=np.int64),
    ).save(directory / "messages.npz")
    scenario = {
        "window": {"start": START, "end": START + 10},
        "settle": {"settled": settled, "seconds": 0.5 if settled else 60.0},
        "drain": {"closed": True, "seconds": 0.5},
        "connect": {"receivers_expected": 4, "receivers": 4, "failed": 0},
        "checks": {"sampled": 10, "mismatched": 0},
        "receipt": {"clock": "kernel", "read_delay": Histogram().encode()},
        "load_generator": {"processes": 1, "missing_processes": 0, "cpu_percent_max": [busiest]},
    }
    (directory / "scenario.json").write_text(json.dumps(scenario))
    (directory / "run.json").write_text(
        json.dumps(
            {
                "scenario": "chat",
                "transport": "ws",
                "label": "ws",
                "repeat": 1,
                "parameters": {"rate_per_sender": 10.0, "payload_bytes": 100},
                "server": {"exit_status": 0},
            }
        )
    )
    rows = [sample(START - 1 + 0.5 * i, 0.01 * i, 0.004 * i, busiest) for i in range(26)]
    (directory / "samples.jsonl").write_text("".join(json.dumps(r.__dict__) + "\n" for r in rows))
    (directory / "bytes.jsonl").write_text("")
    return directory


def test_a_clean_run_is_valid(tmp_path: Path) -> None:
    _, repeat, _ = summarize_repeat(make_run(tmp_path / "chat-ws-r1"))
    assert repeat.validity.valid, repeat.validity.reasons
    assert repeat.deliveries.expected == repeat.deliveries.delivered == 400
    # CPU interpolated at the window's edges: 0.02 s/s over 10.5 s (window + drain), 400 deliveries
    assert repeat.server_cpu_ms_per_1k_msgs == pytest.approx(0.02 * 10.5 * 1e6 / 400, rel=1e-6)
    assert repeat.load_generator.cpu_us_per_delivery == pytest.approx(0.008 * 10.5 * 1e6 / 400)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"busiest": GENERATOR_SATURATED + 5}, "load generator saturated"),
        ({"lag_us": 150_000}, "the publisher lagged"),
        ({"deliveries_per_message": 3}, "the ledger did not close"),
        ({"settled": False}, "did not settle"),
    ],
)
def test_invalid_is_invalid(tmp_path: Path, change: dict[str, Any], reason: str) -> None:
    _, repeat, _ = summarize_repeat(make_run(tmp_path / "chat-ws-r1", **change))
    assert not repeat.validity.valid
    assert any(reason in why for why in repeat.validity.reasons), repeat.validity.reasons


def test_one_invalid_repeat_makes_the_result_invalid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run / "chat-ws-r1")
    make_run(run / "chat-ws-r2", lag_us=150_000)
    run_json = json.loads((run / "chat-ws-r2" / "run.json").read_text())
    (run / "chat-ws-r2" / "run.json").write_text(json.dumps({**run_json, "repeat": 2}))
    (run / "metadata.json").write_text(json.dumps({k: "x" for k in METADATA_KEYS}))
    summary = summarize_run(run)
    (result,) = summary.results
    assert [r.validity.valid for r in result.repeats] == [True, False]
    assert not result.validity.valid
    assert result.validity.reasons[0].startswith("repeat 2: the publisher lagged")
    assert result.deliveries.expected == 800, "repeats add up"
    assert Summary.from_json(read_summary(run)).results[0].validity == result.validity


# -- smaller pieces ---------------------------------------------------------------------------------


def test_cpu_is_interpolated_between_samples() -> None:
    rows = [sample(10.0, 1.0, 0.0, 0.0), sample(10.5, 2.0, 0.0, 0.0)]
    assert interpolate(rows, "server_cpu_s", 10.25) == pytest.approx(1.5)
    assert interpolate(rows, "server_cpu_s", 9.0) is None, "no figure outside the samples"


def test_each_parts_cpu_is_interpolated_and_a_part_not_sampled_throughout_is_left_out() -> None:
    rows = [
        sample(10.0, 0.0, 0.0, 0.0, parts_cpu={"redis": 1.0, "haproxy": 5.0}),
        sample(10.5, 0.0, 0.0, 0.0, parts_cpu={"redis": 2.0, "haproxy": 5.5}),
        sample(11.0, 0.0, 0.0, 0.0, parts_cpu={"redis": 4.0}),  # haproxy gone
    ]
    assert parts_cpu_between(rows, 10.25, 10.75) == {"redis": pytest.approx(1.5)}
    assert parts_cpu_between(rows, 10.0, 10.5) == {
        "redis": pytest.approx(1.0),
        "haproxy": pytest.approx(0.5),
    }
    assert parts_cpu_between(rows[:1], 10.0, 10.5) == {}


def test_memory_is_fitted_against_clients() -> None:
    points = [
        {
            "clients": n,
            "connections": n + 1,
            "cpu_percent": 1.0,
            "rss_bytes": 5e7 + 30_000 * n,
            "uss_bytes": 4e7 + 25_000 * n,
            "kernel_bytes": 7_000 * n + 1e6,
        }
        for n in (1_000, 2_000, 3_000, 4_000)
    ]
    warnings: list[str] = []
    memory = fit_memory(points, warnings)
    assert memory.fitted_against == "clients"
    assert memory.rss_bytes == 30_000 and memory.uss_bytes == 25_000
    assert memory.kernel_bytes == 3_500, "half of the loopback pair is the server's"
    assert memory.r2 == pytest.approx(1.0) and memory.rss_ci95 == [30_000, 30_000]
    assert not warnings


def test_readers_refuse_unknown_versions(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"schema_version": 1, "metadata": {}, "results": []}))
    with pytest.raises(SchemaError, match="schema_version 1 is not 2"):
        read_summary(path)
    with pytest.raises(SchemaError, match="lacks"):
        validate({"schema_version": SCHEMA_VERSION, "metadata": {}, "results": []})


def test_results_round_trip_through_json() -> None:
    result = Result(scenario="chat", transport="ws", server="uvicorn", label="ws")
    result.latency_ms = Latency(p50=1.0, p90=2.0, p99=3.0, p999=4.0, max=5.0, mean=1.5, count=10)
    result.latency_ms.ci95 = {"p50": [0.9, 1.1]}
    assert Result.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_thin_samples_are_named_and_histograms_merge() -> None:
    assert too_few_samples(100) == ["p99", "p999"]
    assert too_few_samples(10_000) == []
    a, b = Histogram(), Histogram()
    for value in range(1, 1001):
        a.record(value * 1000)
        b.record(value * 1000)
    merged = Histogram.decode(a.encode())
    merged.add_encoded(b.encode())
    assert merged.count == 2000
    assert merged.summary_ms()["p99"] == pytest.approx(990, rel=0.01)
    big = Histogram()
    big.record(120_000_000)
    assert big.clamped == 1 and math.isclose(big.summary_ms()["max"], 60_000, rel_tol=0.01)


@pytest.mark.timeout(120)
def test_faults_run_kills_restarts_and_accounts_for_every_delivery(tmp_path: Path) -> None:
    """``faults`` on sse (~20 s): SIGKILL and restart mid-run, a slow consumer, the ledger."""
    argv = ["bench", "--scenario", "faults", "--quick", "--users", "20", "--duration", "4"]
    assert main([*argv, "--transport", "sse", "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (result,) = read_summary(run)["results"]
    faults, deliveries = result["faults"], result["deliveries"]
    assert faults["killed"] and 0 < faults["outage_s"] < 15
    assert faults["all_back"] and faults["reconnect_ms"]["count"] == faults["clients"] - 1 > 0
    assert faults["slow_reader_back_ms"] is not None, "the slow reader came back, counted apart"
    reconnect = faults["reconnect_ms"]
    assert 0 <= reconnect["p50"] <= reconnect["p99"] <= reconnect["max"] < 15_000
    # The one silent loss this can meet is the known stale-cursor hole (test_faults.py).
    assert faults["lost_silently"] == faults["lost_silently_stale_cursor"]
    assert faults["lost_signalled"] + faults["lost_silently"] == deliveries["lost"]
    assert deliveries["delivered"] + deliveries["lost"] == deliveries["expected"] > 0
    assert faults["lost_without_resume"] >= faults["lost_with_resume"]
    assert faults["gaps_signalled"] > 0, "clients heard of the restart"
    assert faults["slow_consumer_disconnects"] >= 1
    assert (run / "faults-sse-r1" / "server-restarted.log").exists()


def test_a_cluster_run_records_each_part_and_reads_against_decide(tmp_path: Path) -> None:
    """idle on three instances sharing one port (~10 s): the instances' memory summed, each
    part's apart, and the report sets decide's estimate (from the reference) beside it."""
    needs("redis")
    argv = ["bench", "--scenario", "idle", "--quick", "--transport", "sse", "--instances", "3"]
    assert main([*argv, "--balancer", "reuseport", "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = read_summary(run)
    assert summary["metadata"]["plan"]["instances"] == 3
    (result,) = summary["results"]
    memory = result["memory_per_connection"]
    top = max(memory["points"], key=lambda p: p["clients"])
    parts = top["parts_rss_bytes"]
    assert sorted(parts) == ["instance 1", "instance 2", "instance 3", "redis"]
    instances = sum(v for name, v in parts.items() if name.startswith("instance"))
    assert instances == pytest.approx(top["rss_bytes"], rel=0.01)  # the instances, summed
    assert memory["rss_bytes"] > 0 and top["connections"] >= top["clients"]
    results = Path(__file__).resolve().parent.parent / "results"
    reference = results / (results / "REFERENCE").read_text().strip()
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--reference", str(reference)]) == 0
    text = (out / "report.md").read_text()
    assert "## Scale-out (several processes)" in text
    assert "| sse | 300 | 3 |" in text  # 300 clients on 3 instances
    assert "| estimate / measured |" in text  # decide's estimate beside the measurement


def test_a_cluster_run_compares_its_deployments_in_the_same_run(tmp_path: Path) -> None:
    """chat on sse (~20 s): three instances behind HAProxy, round robin and sticky, and one
    process with the in-memory broker, interleaved; the report sets them side by side."""
    needs("redis")
    needs("haproxy")
    argv = ["bench", "--scenario", "chat", "--quick", "--transport", "sse", "--duration", "1"]
    flags = ["--instances", "3", "--baseline", "--sticky", "both"]
    assert main([*argv, *flags, "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = read_summary(run)["results"]
    deployed = {r["deployment"]["variant"]: r for r in results}
    assert sorted(deployed) == ["", "single", "sticky"]
    assert deployed[""]["deployment"]["balancer"] == "haproxy"
    assert deployed["sticky"]["deployment"]["sticky"] is True
    assert deployed["single"]["deployment"]["instances"] == 1
    assert deployed["single"]["parts_cpu_ms_per_1k_msgs"] is None  # one process: no parts
    assert set(deployed[""]["parts_cpu_ms_per_1k_msgs"]) >= {"haproxy", "redis", "instance 1"}
    for result in results:
        assert result["validity"]["valid"], result["validity"]
        deliveries = result["deliveries"]
        assert deliveries["delivered"] == deliveries["expected"] > 0
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "### Deployments compared in this run" in text
    for deployment_name in (
        "| 3 instances, haproxy, Redis |",
        "| 3 instances, haproxy, Redis, sticky |",
        "| 1 process, in-memory broker |",
    ):
        assert deployment_name in text
    scenario = text.split("## Scenario: chat")[1].split("## ")[0]
    assert scenario.count("| sse |") == 1, "the compared deployments stay out of the chat table"


@pytest.mark.timeout(180)
def test_the_master_waits_for_a_worker_started_elsewhere_and_merges_its_ledger(
    tmp_path: Path,
) -> None:
    """``--remote-workers 1``: a worker started on its own, the way another host starts one
    (``locust --worker -f -``: the locustfile and options come from the master), joins the
    bench's local worker; their ledgers merge and every delivery is accounted for."""
    port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "locust", "--worker", "-f", "-", "--master-host", "127.0.0.1",
         "--master-port", str(port), "--loglevel", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        argv = ["bench", "--scenario", "chat", "--quick", "--transport", "sse", "--duration", "1"]
        flags = ["--remote-workers", "1", "--master-bind", "127.0.0.1", "--master-port", str(port)]
        assert main([*argv, *flags, "--worker-wait", "60", "--out", str(tmp_path)]) == 0
        assert worker.wait(30) == 0, "the worker ends with its run's master"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(5)
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (result,) = read_summary(run)["results"]
    generator = result["load_generator"]
    assert generator["processes"] == 2 and generator["remote_workers"] == 1
    assert generator["cpu_us_per_delivery"] > 0  # the workers' own figures, both of them
    scenario = json.loads((run / "chat-sse-r1" / "scenario.json").read_text())
    assert len(scenario["load_generator"]["cpu_seconds"]) == 2
    deliveries = result["deliveries"]
    assert deliveries["delivered"] == deliveries["expected"] > 0
    assert deliveries["lost"] == deliveries["duplicated"] == 0
    assert result["validity"]["valid"], result["validity"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_failover_run_moves_the_killed_instances_clients_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """``failover`` on sse (~15 s): three instances behind HAProxy sharing Redis, one killed."""
    needs("redis")
    needs("haproxy")
    argv = ["bench", "--scenario", "failover", "--quick", "--users", "20", "--duration", "4"]
    assert main([*argv, "--transport", "sse", "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (result,) = read_summary(run)["results"]
    faults, deliveries = result["faults"], result["deliveries"]
    assert result["validity"]["valid"], result["validity"]
    assert faults["killed"] == "instance 1" and faults["outage_s"] == 0
    assert 0 < faults["moved"] <= faults["on_killed_instance"] < faults["clients"]
    assert faults["all_back"]
    assert faults["reconnect_ms"]["max"] < 15_000
    assert deliveries["lost"] == deliveries["duplicated"] == faults["gaps_after_kill"] == 0
    assert deliveries["delivered"] == deliveries["expected"] > 0
    assert faults["delivered_by_resume"] > 0, "the moved clients resumed from their cursor"
    survivors = faults["survivors"]
    assert 0 < survivors["receivers"] <= faults["clients"] - faults["moved"]
    assert 0 < survivors["storm_s"] <= faults["reconnect_ms"]["max"] / 1000 + 0.01
    assert survivors["before_ms"]["count"] > 0 and survivors["during_ms"]["count"] > 0
    assert survivors["after_ms"]["count"] > 0 and survivors["after_s"] > 0
    assert 0 < survivors["during_ms"]["p50"] <= survivors["during_ms"]["max"]
    slowest = faults["slowest_reconnects"]
    assert 1 <= len(slowest) <= 3 and slowest[0]["reconnect_ms"] == faults["reconnect_ms"]["max"]
    assert slowest[0]["ends_and_failed_attempts"] >= 1 and slowest[0]["last_failure"]
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Failover (scenario: failover)" in text
    assert "![Failover timeline](charts/failover-timeline.png)" in text
    assert (out / "charts" / "failover-timeline.png").stat().st_size > 10_000
    assert "survivors p50 ms before / in storm / after" in text
    assert f"({survivors['during_ms']['count']:,} in " in text


def test_fallback_behind_a_proxy_that_strips_upgrade_settles_on_sse(tmp_path: Path) -> None:
    """``fallback`` through nginx's no-upgrade profile (~12 s): every user's WebSocket step
    fails on the refused handshake, every user settles on SSE, and the chat loses nothing."""
    needs("nginx")
    argv = ["bench", "--scenario", "fallback", "--proxy", "no-upgrade", "--quick"]
    assert main([*argv, "--users", "20", "--duration", "2", "--out", str(tmp_path)]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (result,) = read_summary(run)["results"]
    found, deliveries = result["fallback"], result["deliveries"]
    assert result["label"] == "ws" and result["validity"]["valid"], result["validity"]
    assert found["order"] == ["ws", "sse", "longpoll", "poll"]
    assert found["settled"] == {"sse": 20}
    assert found["attempts"] == {"ws failed": 20, "sse settled": 20}
    assert found["lost_ms"]["count"] == 20 and 0 < found["lost_ms"]["max"] < 3000
    assert found["first_message_ms"]["p50"] >= found["lost_ms"]["p50"]
    assert deliveries["delivered"] == deliveries["expected"] > 0
    assert deliveries["lost"] == deliveries["duplicated"] == 0
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Fallback (scenario: fallback)" in text
    assert "| ws | yes | no-upgrade | ws → sse → longpoll → poll | 20 sse |" in text


def test_network_conditions_each_get_a_run_beside_the_same_path_with_nothing_added() -> None:
    from wirewise.plan import networks

    asked = networks(None, [100.0, 300.0], [0.0, 1.0])
    assert [n.name for n in asked] == [
        "rtt0", "rtt100", "rtt100-loss1", "rtt300", "rtt300-loss1"
    ]  # fmt: skip
    assert asked[0].conditions.none and asked[2].conditions.loss_pct == 1.0
    assert [n.name for n in networks(["3g", "lan"], None, None)] == ["rtt0", "3g", "lan"]
    assert networks(None, None, None) == ()
    for bad in ((["5g"], None, None), (["3g"], [100.0], None)):
        with pytest.raises(ValueError, match="--network"):
            networks(*bad)
    with pytest.raises(ValueError, match="jitter"):
        networks(None, [10.0], None, jitter=20.0)


def test_a_bench_under_an_added_rtt_checks_the_predictions(tmp_path: Path) -> None:
    """chat on sse and short polling at rtt 0 and 100 ms through the relay (~40 s): the path
    is measured, each transport pays what theory says, and the report shows it."""
    argv = ["bench", "--scenario", "chat", "--quick", "--rtt", "100", "--out", str(tmp_path)]
    assert main([*argv, "--transport", "sse", "--transport", "poll"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = read_summary(run)
    rows = {(r["label"], r["deployment"]["network"]["name"]): r for r in summary["results"]}
    assert sorted(rows) == [
        ("poll", "rtt0"),
        ("poll", "rtt100"),
        ("sse", "rtt0"),
        ("sse", "rtt100"),
    ]
    assert all(r["validity"]["valid"] for r in rows.values()), [
        r["validity"] for r in rows.values()
    ]
    path = rows["sse", "rtt100"]["path"]
    assert 95 <= path["added_rtt_ms"] <= 110 and path["relay_cpu_s"] > 0
    assert abs(rows["sse", "rtt0"]["path"]["added_rtt_ms"]) < 2, "the relay alone adds little"
    sse = rows["sse", "rtt100"]["latency_ms"]["p50"] - rows["sse", "rtt0"]["latency_ms"]["p50"]
    assert 85 <= sse <= 115, "a push delivery pays one RTT: its send up, its delivery down"
    run_json = json.loads((run / "chat-sse-rtt100-r1" / "run.json").read_text())
    assert run_json["network"]["delay"]["by"] == "wirewise.relay"
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Network conditions" in text and "### Predictions checked" in text
    assert "| push p50 = floor + RTT | chat/sse at rtt100 |" in text
    assert (out / "charts" / "network-rtt.png").stat().st_size > 10_000


def test_loss_without_root_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """As an unprivileged user: a clear error, exit 2, no run directory; delay alone passes
    the check (it needs no namespace)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("becoming an unprivileged user needs root and setpriv (util-linux)")
    tmp_path.chmod(0o777)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv = [*nobody, sys.executable, "-m", "wirewise", "bench", "--scenario", "chat",
            "--transport", "sse", "--out", str(tmp_path), "--loss", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert done.returncode == 2, done.stderr
    assert "loss and bandwidth need root" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


def test_a_saturate_step_whose_publisher_lagged_did_not_hold() -> None:
    """Latency is timed from the schedule, so a step whose publisher fell a send period behind
    would quote the generator's lag as the transport's: it is not a step that held."""
    ledger = Accounting(
        deliveries={"lost": 0},
        publisher={},
        latency_us=np.array([], dtype=np.int64),
        message_of=np.array([], dtype=np.int64),
        lag_us=np.array([], dtype=np.int64),
        send_latency_us=np.array([], dtype=np.int64),
    )
    on_time = Step(step=10, rate_per_user=57.85, latency_ms=Latency(count=100, p99=50.0))
    on_time.lag_p99_ms = 17.0  # within one period (17.3 ms)
    assert step_knee(on_time, 100.0, 90.0, ledger) is None
    late = replace(on_time, lag_p99_ms=18.1)
    assert (
        step_knee(late, 100.0, 90.0, ledger) == "the publisher lagged: lag p99 18.1 ms over 17.3 ms"
    )
    slow = replace(on_time, rate_per_user=2.0, lag_p99_ms=9.0)  # the 10 ms floor at low rates
    assert step_knee(slow, 100.0, 90.0, ledger) is None


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_saturate_ramps_to_the_transports_knee(tmp_path: Path, transport: str) -> None:
    """Full-scale saturate (about a minute each): the ramp ends at the server (its CPU at the
    knee, or p99 over the bound), never at the generator, and the result is valid."""
    argv = ["bench", "--scenario", "saturate", "--transport", transport, "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = read_summary(run)["results"]
    for result in results:
        assert result["stopped_by"].startswith(("latency_bound", "server_cpu")), result[
            "stopped_by"
        ]
        assert result["validity"]["valid"], result["validity"]["reasons"]
        held = result["highest_rate_held"]
        assert held["deliveries_per_s"] > 0 and not result["load_generator"]["saturated"]


def test_a_straggler_after_a_kill_is_named_with_what_its_subscription_went_through() -> None:
    from wirewise.summarize import _straggler

    slow = {"reconnect_ms": 11_365.3, "ends_and_failed_attempts": 4, "last_failure": "no answer"}
    faults = {"reconnect_ms": {"p50": 173.1, "p99": 891.4}, "slowest_reconnects": [slow]}
    said = _straggler(faults)
    assert said is not None and "11,365 ms (reconnect p99 891)" in said
    assert "4 time(s), the last because: no answer" in said
    assert _straggler({**faults, "reconnect_ms": {"p99": 4_000.0}}) is None, "not an outlier"
    assert _straggler({"reconnect_ms": {}, "slowest_reconnects": []}) is None
