"""``wirewise decide`` and ``wirewise explain`` on synthetic schema-v2 runs.

The runs are built from the typed result objects and written with ``write_summary``, so they
are exactly what ``wirewise summarize`` writes, with figures chosen to be plausible (the costs
of a Python server on one core) and some results invalid, as real runs have. Each workload is a
classic system-design case, run as a user would run it (``wirewise.cli.main``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from wirewise.cli import main
from wirewise.decide import Workload, WorkloadError, decide, profiles
from wirewise.explain import (
    TOPICS,
    best_sweep,
    cluster_runs,
    cluster_sentences,
    explain,
    fallback_sentence,
    network_sentence,
    proxy_runs,
    proxy_sentences,
)
from wirewise.plan import ROOT
from wirewise.registry import BACKENDS, backend
from wirewise.results import (
    METADATA_KEYS,
    BytesPerMessage,
    Deliveries,
    Latency,
    LoadGenerator,
    Memory,
    Publisher,
    Repeat,
    Result,
    Step,
    Summary,
    Validity,
    load_summary,
    write_summary,
)

# -- a plausible run, built from the typed objects -----------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What a backend costs in the synthetic run (microseconds, bytes, ms)."""

    per_delivery_us: float
    per_send_us: float
    """Short polling: per request (a send or a poll)."""
    p99_floor_ms: float
    knee: float | None
    """Deliveries/s at which p99 reaches floor + 100 ms (None: short polling)."""
    rss: float
    kernel: float
    idle_cpu: float
    """Server CPU percent per 1,000 idle connections."""
    bytes_down: float
    bytes_up: float


COSTS = {
    "poll": Cost(10, 150, 8.0, None, 9_500, 3_300, 1.75, 230, 600),
    "longpoll": Cost(90, 150, 5.0, 4_000, 21_000, 5_800, 0.1, 500, 1_800),
    "sse": Cost(30, 150, 3.0, 12_000, 10_600, 2_900, 0.05, 300, 340),
    "h2": Cost(70, 250, 5.0, 5_000, 36_000, 3_000, 0.1, 290, 230),
    "ws": Cost(28, 60, 2.5, 10_000, 22_000, 3_300, 0.05, 245, 190),
    "ws@websockets": Cost(33, 70, 2.5, 20_000, 7_400, 3_200, 0.05, 270, 210),
    "tcp": Cost(15, 40, 2.0, 40_000, 1_800, 3_100, 0.01, 240, 180),
}
POLL_INTERVAL_S = 1.0
WINDOW_S = 10.0
BOUND_MS = 100.0
GIB = 1 << 30


def p99_at(cost: Cost, rate: float) -> float:
    """A hockey stick: flat, then up steeply towards the knee."""
    if cost.knee is None:
        return round(990 * POLL_INTERVAL_S + cost.p99_floor_ms, 3)
    return round(cost.p99_floor_ms + 100 * (rate / cost.knee) ** 4, 3)


def cpu_us_per_delivery(
    cost: Cost, deliveries: float, sends: float, users: int, poll: bool
) -> float:
    requests = sends + (users / POLL_INTERVAL_S if poll else 0.0)
    return (deliveries * cost.per_delivery_us + requests * cost.per_send_us) / deliveries


def timed(label: str, scenario: str, users: int, sends: float, deliveries: float) -> Result:
    """A chat, broadcast or game result at a steady rate (per second)."""
    cost = COSTS[label]
    which = backend(label)
    poll = which.transport == "poll"
    delivered = int(deliveries * WINDOW_S)
    sent = int(sends * WINDOW_S)
    p99 = p99_at(cost, deliveries)
    latency = Latency(p50=round(p99 / 3, 3), p90=p99 / 1.5, p99=p99, max=p99 * 1.2, count=delivered)
    cpu = round(cpu_us_per_delivery(cost, deliveries, sends, users, poll), 3)
    result = Result(
        scenario=scenario,
        transport=which.transport,
        server=which.server,
        label=label,
        parameters={
            "users": users,
            "payload_bytes": 100,
            "poll_interval_s": POLL_INTERVAL_S if poll else None,
        },
        latency_ms=latency,
        publisher=Publisher(scheduled=sent, sent=sent, answered=sent, period_ms=1000.0),
        deliveries=Deliveries(expected=delivered, delivered=delivered),
        throughput_msgs_per_s=deliveries,
        server_cpu_ms_per_1k_msgs=cpu,
        bytes_per_message=BytesPerMessage(
            down=cost.bytes_down,
            up=cost.bytes_up,
            total=cost.bytes_down + cost.bytes_up * sends / deliveries,
            wire={"down": cost.bytes_down + 60, "up": cost.bytes_up + 200, "total": None},
            header_bytes_per_segment=52,
        ),
        load_generator=LoadGenerator(cpu_percent_max=40.0, saturated=False),
    )
    return with_repeat(result)


def idle(label: str) -> Result:
    cost = COSTS[label]
    which = backend(label)
    base = 45_000_000.0
    points = [
        {"clients": n, "connections": n, "cpu_percent": cost.idle_cpu * n / 1000,
         "rss_bytes": base + cost.rss * n, "uss_bytes": base + cost.rss * n,
         "kernel_bytes": 2 * cost.kernel * n}
        for n in (1_000, 2_000, 3_000)
    ]  # fmt: skip
    result = Result(
        scenario="idle",
        transport=which.transport,
        server=which.server,
        label=label,
        parameters={"users": 3_000, "poll_interval_s": POLL_INTERVAL_S},
        memory_per_connection=Memory(
            rss_bytes=cost.rss,
            uss_bytes=cost.rss,
            kernel_bytes=cost.kernel,
            r2=0.999,
            base_rss_bytes=base,
            fitted_against="clients",
            idle_cpu_percent_per_1k_connections=cost.idle_cpu,
            points=points,
        ),
        stopped_by="max_steps: 3,000 connections held",
        load_generator=LoadGenerator(cpu_percent_max=30.0, saturated=False),
    )
    return with_repeat(result)


def saturate(label: str, stop_at_step: int | None = None) -> Result:
    """A ramp from 1,000 deliveries/s, x1.5 a step, to the knee; ``stop_at_step`` ends it there
    as the load generator's limit does (the ramp never reached the knee: invalid)."""
    cost = COSTS[label]
    which = backend(label)
    steps: list[Step] = []
    held: Step | None = None
    stopped_by = "max_steps: no knee within the steps tried"
    for number in range(12):
        rate = 1_000 * 1.5**number
        p99 = p99_at(cost, rate)
        cpu = cpu_us_per_delivery(cost, rate, rate / 10, 100, which.transport == "poll")
        step = Step(
            step=number,
            rate_per_user=1.5**number,
            sent_per_s=rate / 10,
            deliveries_per_s=round(rate, 1),
            latency_ms=Latency(p50=p99 / 3, p99=p99, count=int(rate * 5)),
            deliveries=Deliveries(expected=int(rate * 5), delivered=int(rate * 5)),
            server_cpu_percent=round(rate * cpu / 1e4, 1),
            server_cpu_ms_per_1k_msgs=round(cpu, 3),
            held=p99 <= BOUND_MS,
            why=None if p99 <= BOUND_MS else f"p99 {p99:,.1f} ms over the 100 ms bound",
        )
        steps.append(step)
        if not step.held:
            stopped_by = f"latency_bound: p99 {p99:,.1f} ms over 100 ms"
            break
        held = step
        if stop_at_step is not None and number == stop_at_step:
            stopped_by = "load_generator: the next step would need ~95 % of the generator's core"
            break
    result = Result(
        scenario="saturate",
        transport=which.transport,
        server=which.server,
        label=label,
        parameters={"users": 100, "room_size": 10, "poll_interval_s": POLL_INTERVAL_S},
        steps=steps,
        stopped_by=stopped_by,
        load_generator=LoadGenerator(cpu_percent_max=60.0, saturated=False),
    )
    if held is not None:
        result.latency_ms = held.latency_ms
        result.throughput_msgs_per_s = held.deliveries_per_s
        result.server_cpu_ms_per_1k_msgs = held.server_cpu_ms_per_1k_msgs
        result.highest_rate_held = {
            "rate_per_user": held.rate_per_user,
            "deliveries_per_s": held.deliveries_per_s,
            "latency_bound_ms": BOUND_MS,
            "step": held.step,
        }
    if not stopped_by.startswith("latency_bound"):
        result.validity = Validity(
            False,
            [
                f"the ramp ended before the transport's knee ({stopped_by}): the highest rate"
                " held is a lower bound"
            ],
        )
    return with_repeat(result)


def with_repeat(result: Result) -> Result:
    """One repeat holding the same figures, as ``aggregate`` leaves a single run."""
    result.repeats = [
        Repeat(
            repeat=1,
            files=f"{result.scenario}-{result.label.replace('@', '-')}-r1",
            latency_ms=result.latency_ms,
            publisher=result.publisher,
            deliveries=result.deliveries,
            throughput_msgs_per_s=result.throughput_msgs_per_s,
            server_cpu_ms_per_1k_msgs=result.server_cpu_ms_per_1k_msgs,
            bytes_per_message=result.bytes_per_message,
            memory_per_connection=result.memory_per_connection,
            steps=result.steps,
            highest_rate_held=result.highest_rate_held,
            stopped_by=result.stopped_by,
            load_generator=result.load_generator,
            validity=result.validity,
        )
    ]
    return result


def invalidate(result: Result, why: str, **absurd: Any) -> Result:
    """``result`` made invalid (every repeat), with figures that would win if they were used."""
    for name, value in absurd.items():
        setattr(result, name, value)
    result.validity = Validity(False, [why])
    for repeat in result.repeats:
        repeat.validity = Validity(False, [why])
    return result


ABSURD = {
    "latency_ms": Latency(p50=0.001, p99=0.002, count=10),
    "server_cpu_ms_per_1k_msgs": 0.001,
}
GENERATOR_SATURATED = "load generator saturated: a Locust process at 97 % of its core (limit 80 %)"


def plausible_run() -> Summary:
    """Every backend over chat, broadcast, game, idle and saturate. Two results are invalid, as
    in real runs: saturate/sse stopped at the load generator's limit (a lower bound: 5,062/s
    held) and game/h2 measured a saturated load generator (with figures too good to be true)."""
    results = []
    for which in BACKENDS:
        label = which.label
        results += [
            timed(label, "chat", 200, 200, 2_000),
            timed(label, "broadcast", 501, 20, 10_000),
            timed(label, "game", 40, 800, 3_200),
            idle(label),
            saturate(label, stop_at_step=4 if label == "sse" else None),
        ]
    summary = Summary(metadata=metadata(), results=results)
    h2_game = summary.find("game", "h2")
    assert h2_game is not None
    invalidate(h2_game, GENERATOR_SATURATED, **ABSURD)
    return summary


def metadata() -> dict[str, Any]:
    meta: dict[str, Any] = {key: "synthetic" for key in METADATA_KEYS}
    meta.update(
        cores=2, memory_bytes=16 * GIB, fd_limit=20_000, argv=["wirewise", "bench"],
        started_at="2026-12-01T10:00:00+00:00", cpu_model="Synthetic CPU",
    )  # fmt: skip
    return meta


def written(directory: Path, summary: Summary) -> Path:
    """The summary as a run directory, the way ``summarize`` leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    write_summary(directory / "summary.json", summary)
    return directory


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return written(tmp_path / "20261201-100000", plausible_run())


def decide_cli(
    run: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any] | None, str]:
    """(exit status, the JSON printed or None, stderr) of ``wirewise decide ... --json``."""
    capsys.readouterr()
    status = main(["decide", *args, "--results", str(run), "--json"])
    out, err = capsys.readouterr()
    return status, (strict_json(out) if out.strip() else None), err


def plain(err: str) -> str:
    """An error message out of its box: the box's borders and the line breaks it wrapped at go."""
    return " ".join(err.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def ranking(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["transport"]: r for r in answer["ranking"]}


def position(answer: dict[str, Any], label: str) -> int:
    return [r["transport"] for r in answer["ranking"]].index(label)


WORKLOADS = {
    "chat": ["--clients", "200", "--push-rate", "1", "--send-rate", "0.1", "--latency-ms", "100"],
    "feed": ["--clients", "100000", "--push-rate", "0.01", "--send-rate", "0", "--latency-ms", "2000"],
    "trading": ["--clients", "1000", "--push-rate", "50", "--send-rate", "2", "--latency-ms", "50"],
    "game": ["--clients", "1000", "--push-rate", "80", "--send-rate", "20", "--latency-ms", "100",
             "--payload-bytes", "50"],
}  # fmt: skip


# -- the model's rules -------------------------------------------------------------------------


def test_a_run_built_from_the_objects_reads_back(run: Path) -> None:
    summary = load_summary(run)
    assert len(summary.results) == 5 * len(BACKENDS)
    assert {label for label, p in profiles(summary).items()} == {
        b.label for b in BACKENDS if b.transport != "tcp"
    }, "the raw-TCP floor is calibration, not a candidate"


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_the_score_orders_the_ranking(
    workload: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, answer, _ = decide_cli(run, capsys, *WORKLOADS[workload])
    assert status == 0 and answer is not None
    scores = [r["score"] for r in answer["ranking"]]
    assert scores == sorted(scores, reverse=True), scores
    feasible = [r["feasible"] for r in answer["ranking"]]
    assert feasible == sorted(feasible, reverse=True), "feasible ones first"
    for item in answer["ranking"]:
        assert (item["score"] >= 1) == item["feasible"]
    assert answer["recommendation"] == answer["ranking"][0]["transport"]


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_invalid_results_are_never_used(
    workload: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """saturate/sse (a lower bound at 5,062/s) and game/h2 (too good) never feed an estimate."""
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS[workload])
    assert answer is not None
    for label, estimate in answer["estimates"].items():
        for what, source in estimate["sources"].items():
            used = source.split("no valid source")[0]
            assert "saturate/sse" not in used, (label, what, source)
            assert "game/h2" not in used, (label, what, source)
    sse = answer["estimates"]["sse"]
    assert "highest rate held" not in sse["limit"]
    assert "not used, invalid: saturate/sse" in " ".join(ranking(answer)["sse"]["reasons"])


def test_an_invalid_result_with_an_absurd_p99_does_not_win(tmp_path: Path) -> None:
    """Every latency and CPU figure of h2 invalid, and each better than anything valid."""
    summary = plausible_run()
    for scenario in ("chat", "broadcast", "game", "saturate"):
        result = summary.find(scenario, "h2")
        assert result is not None
        invalidate(result, GENERATOR_SATURATED, **ABSURD)
    decision = decide(
        Workload(clients=200, push_rate=1, send_rate=0.1, latency_ms=100),
        load_summary(written(tmp_path / "run", summary)),
    )
    h2 = next(r for r in decision.ranking if r.transport == "h2")
    assert decision.recommendation != "h2"
    assert not h2.feasible and h2.score == 0
    reasons = " ".join(h2.reasons)
    assert "no valid source" in reasons and "chat/h2 is invalid" in reasons
    assert "wirewise bench --scenario chat --transport h2" in reasons
    assert decision.estimates["h2"].p99_ms is None
    assert decision.estimates["h2"].cpu_cores is None


def test_an_estimate_with_no_valid_source_says_so(tmp_path: Path) -> None:
    summary = plausible_run()
    for scenario in ("idle",):
        result = summary.find(scenario, "sse")
        assert result is not None
        invalidate(result, "memory does not follow clients (r2 0.42 < 0.9)")
    decision = decide(
        Workload(clients=1000, push_rate=1, send_rate=0, latency_ms=500),
        load_summary(written(tmp_path / "run", summary)),
    )
    sse = decision.estimates["sse"]
    assert sse.memory_bytes is None
    assert sse.sources["memory_bytes"].startswith("no valid source: idle/sse is invalid")
    ranked = next(r for r in decision.ranking if r.transport == "sse")
    assert not ranked.feasible, "a backend without its memory figure is not ranked as feasible"
    assert any("memory per connection is unknown" in r for r in ranked.reasons)


def test_p99_is_read_near_the_rate_each_server_carries(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trading: 50,000 deliveries/s. SSE's CPU fits 4 servers, but at 12,500/s each its nearest
    valid point (broadcast/sse at 10,000/s) breaks the 50 ms bound: servers are added until each
    carries a rate measured under it. The bare websockets server holds 17,086/s at the knee
    (p99 ~56 ms), so it too needs more servers than its capacity for a 50 ms bound."""
    status, answer, _ = decide_cli(run, capsys, *WORKLOADS["trading"])
    assert status == 0 and answer is not None
    sse = answer["estimates"]["sse"]
    assert sse["limit"] == "the p99"
    assert sse["p99_ms"] <= 50
    assert "broadcast/sse at 10,000 deliveries/s measured 51.2 ms" in sse["sources"]["servers"]
    assert sse["servers"] == math.ceil(50_000 / 3_200), "each at game/sse's 3,200/s"
    assert sse["sources"]["p99_ms"].startswith("game/sse at 3,200 deliveries/s")
    lean = answer["estimates"]["ws@websockets"]
    assert lean["limit"] == "the p99" and lean["servers"] == 5
    assert (
        "saturate/ws@websockets step 7 at 17,086 deliveries/s measured 55.8 ms"
        in (lean["sources"]["servers"])
    )
    assert lean["sources"]["p99_ms"].startswith("broadcast/ws@websockets at 10,000 deliveries/s")
    assert lean["p99_ms"] <= 50


def test_trading_is_not_decided_by_the_load_generators_limit(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 clients x 50/s: saturate/sse stopped at the load generator's 5,062/s would mean 10
    servers "limited by the rate held"; that was a lower bound, and only a knee sizes servers."""
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS["trading"])
    assert answer is not None
    for label, estimate in answer["estimates"].items():
        assert "load_generator" not in json.dumps(estimate["sources"]), label
        assert "saturate/sse" not in json.dumps(estimate["sources"]), label
    sse = answer["estimates"]["sse"]
    assert sse["limit"] != "the highest rate held"
    assert sse["servers"] != math.ceil(50_000 / 5_062.5), "sized by the generator's lower bound"
    ws = answer["estimates"]["ws"]
    assert ws["limit"] == "the highest rate held", "a valid ramp's knee is a capacity"
    assert "saturate/ws held 7,594 deliveries/s" in ws["sources"]["servers"]
    assert ws["servers"] == math.ceil(50_000 / 7_593.75)
    assert answer["recommendation"] in ("ws", "ws@websockets")


def test_polling_loses_a_tie_in_servers_on_cpu_and_requests(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """200 clients at 1/s with a 100 ms p99: short polling needs an interval of ~73 ms, ~2,700
    requests/s. It fits the same one server as SSE, and loses on CPU, not on a fixed order."""
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS["chat"])
    assert answer is not None
    poll, sse = answer["estimates"]["poll"], answer["estimates"]["sse"]
    assert poll["servers"] == sse["servers"] == 1
    assert 0.07 < poll["poll_interval_s"] < 0.075
    assert 2_600 < poll["requests_per_s"] < 2_900
    assert sse["cpu_cores"] < 0.02 < poll["cpu_cores"]
    assert answer["recommendation"] != "poll"
    assert position(answer, "sse") < position(answer, "poll")
    assert ranking(answer)["sse"]["score"] > ranking(answer)["poll"]["score"]
    reasons = " ".join(ranking(answer)["poll"]["reasons"])
    assert "requests/s whether or not anything changed" in reasons
    assert "but more CPU" in reasons


def test_notification_feed_needs_no_websocket(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000 clients, a notification every 100 s, nobody sends, seconds are fine: every push
    backend needs the same servers (file descriptors) and CPU within noise; SSE needs no
    Upgrade, so it comes first."""
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS["feed"])
    assert answer is not None
    assert answer["recommendation"] == "sse"
    sse = answer["estimates"]["sse"]
    assert sse["limit"] == "connections" and sse["servers"] == 6, "100,000 sockets, 18,000 each"
    ws = ranking(answer)["ws"]
    assert any("never send" in r for r in ws["reasons"])
    assert any("needs no Upgrade" in r for r in ws["reasons"])
    assert answer["estimates"]["poll"]["servers"] > sse["servers"], "62,000 polls/s"


def test_twenty_hertz_game_needs_websockets(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS["game"])
    assert answer is not None
    assert answer["recommendation"] in ("ws", "ws@websockets")
    best = answer["estimates"][answer["recommendation"]]
    assert best["servers"] < answer["estimates"]["sse"]["servers"]
    assert best["cpu_cores"] < answer["estimates"]["sse"]["cpu_cores"]
    assert any("HTTP request" in r for r in ranking(answer)["sse"]["reasons"])


def test_blocked_upgrade_rules_out_websockets(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS["game"], "--proxy-blocks-upgrade")
    assert answer is not None
    assert answer["workload"]["proxy_blocks_upgrade"] is True
    assert backend(answer["recommendation"]).transport != "ws"
    for label in ("ws", "ws@websockets"):
        item = ranking(answer)[label]
        assert item["score"] == 0 and not item["feasible"]
        assert any("Upgrade" in r for r in item["reasons"])


def test_each_estimate_names_its_source(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, answer, _ = decide_cli(run, capsys, *WORKLOADS["chat"])
    assert answer is not None
    assert answer["run"] == run.name
    for label, estimate in answer["estimates"].items():
        sources = estimate["sources"]
        assert {"p99_ms", "cpu_cores", "memory_bytes", "bandwidth_bytes_per_s", "servers"} <= set(
            sources
        ), label
        assert f"idle/{label}" in sources["memory_bytes"]
        assert f"/{label}" in sources["p99_ms"]
    assert answer["estimates"]["poll"]["sources"]["p99_ms"].startswith("modelled")
    assert "chat/poll" in answer["estimates"]["poll"]["sources"]["p99_ms"]
    sse = answer["estimates"]["sse"]["sources"]
    assert sse["cpu_cores"].startswith("CPU per delivery and per send solved from chat/sse")
    assert "200 deliveries/s each server carries" in sse["p99_ms"]


def test_the_terminal_shows_the_sources(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decide", *WORKLOADS["chat"], "--results", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Recommendation:" in out
    assert "idle/sse" in out and "deliveries/s each" in out


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--push-rate", "nan"),
        ("--push-rate", "inf"),
        ("--push-rate", "-1"),
        ("--push-rate", "0"),
        ("--send-rate", "-0.5"),
        ("--send-rate", "nan"),
        ("--latency-ms", "0"),
        ("--latency-ms", "-inf"),
        ("--clients", "0"),
        ("--payload-bytes", "0"),
    ],
)
def test_bad_numbers_exit_2_and_print_no_json(
    flag: str, value: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = dict(zip(WORKLOADS["chat"][::2], WORKLOADS["chat"][1::2], strict=True))
    args[flag] = value
    status, answer, err = decide_cli(run, capsys, *[x for kv in args.items() for x in kv])
    assert status == 2
    assert answer is None, "stdout holds JSON or nothing"
    assert flag in err and "must be" in err


def test_json_is_a_plain_flag(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decide", "--help"]) == 0
    help_text = capsys.readouterr().out
    for line in help_text.splitlines():
        if "--json" in line or "--proxy-blocks-upgrade" in line:
            assert "<bool>" not in line, line
    assert main(["decide", *WORKLOADS["chat"], "--results", str(run), "--json"]) == 0
    strict_json(capsys.readouterr().out)


def test_workload_refuses_non_finite_numbers() -> None:
    with pytest.raises(WorkloadError) as caught:
        Workload(clients=10, push_rate=math.nan, send_rate=0, latency_ms=100)
    assert caught.value.field == "push_rate"
    with pytest.raises(WorkloadError):
        Workload(clients=10, push_rate=1, send_rate=0, latency_ms=math.inf)
    with pytest.raises(WorkloadError):
        Workload(clients=10, push_rate=1, send_rate=-1, latency_ms=100)
    Workload(clients=10, push_rate=1, send_rate=0, latency_ms=100)  # sending nothing is fine


def test_decide_refuses_missing_flags_without_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["decide", "--clients", "10", "--json"]) == 2
    assert "--push-rate" in capsys.readouterr().err


def test_decide_refuses_a_missing_or_old_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing"
    assert main(["decide", *WORKLOADS["chat"], "--results", str(missing)]) == 2
    assert "nothing:nosuchfile" in plain(capsys.readouterr().err).replace(" ", "")
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({"schema_version": 1, "results": []}))
    assert main(["decide", *WORKLOADS["chat"], "--results", str(old), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "schema_version" in err


def test_a_run_with_no_valid_result_recommends_nothing(tmp_path: Path) -> None:
    summary = plausible_run()
    for result in summary.results:
        invalidate(result, GENERATOR_SATURATED)
    decision = decide(
        Workload(clients=200, push_rate=1, send_rate=0.1, latency_ms=100),
        load_summary(written(tmp_path / "run", summary)),
    )
    assert decision.recommendation is None
    assert all(r.score == 0 and not r.feasible for r in decision.ranking)
    json.dumps(decision.as_json(), allow_nan=False)


# -- explain -----------------------------------------------------------------------------------


def test_explain_refuses_a_missing_results_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "polling", "--results", "/nonexistent"]) == 2
    assert "/nonexistent: no such file" in plain(capsys.readouterr().err)


def test_explain_refuses_a_run_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 1, "results": []}))
    assert main(["explain", "memory", "--results", str(tmp_path)]) == 2
    assert "schema_version" in capsys.readouterr().err


def test_explain_without_results_falls_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "polling"]) == 0
    assert "When polling is enough" in capsys.readouterr().out


def test_explain_cli_lists_topics(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in TOPICS)
    assert main(["explain", "nonsense"]) == 2


@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_topic_answers_and_names_the_run(topic: str, run: Path) -> None:
    text = explain(topic, load_summary(run), run.name)
    assert text.startswith(TOPICS[topic].title)
    assert f"Figures: run {run.name}" in text
    assert 400 < len(text) < 4000, "short answers"


@pytest.mark.parametrize(
    ("topic", "sources"),
    [
        ("memory", ["(idle/sse)", "(idle/ws)", "(idle/ws@websockets)"]),
        ("polling", ["(chat/poll;", "(chat/ws)"]),
        ("sse-vs-ws", ["(chat/sse, chat/ws)", "(idle/sse)"]),
        ("http2", ["(chat/h2)", "(chat/sse)"]),
        ("upgrade", ["(chat/ws)"]),
    ],
)
def test_every_quoted_figure_names_its_result(topic: str, sources: list[str], run: Path) -> None:
    text = explain(topic, load_summary(run), run.name)
    for source in sources:
        assert source in text, source
    assert "not quoted:" not in text and "measures it" not in text


def test_explain_quotes_only_valid_results(tmp_path: Path) -> None:
    summary = plausible_run()
    idle_h2 = summary.find("idle", "h2")
    chat_poll = summary.find("chat", "poll")
    assert idle_h2 is not None and chat_poll is not None
    invalidate(
        idle_h2,
        "memory does not follow clients (r2 0.42 < 0.9)",
        memory_per_connection=replace(idle_h2.memory_per_connection, rss_bytes=99_999.0),
    )
    invalidate(chat_poll, GENERATOR_SATURATED, latency_ms=Latency(p50=1.0, p99=2.0, count=9))
    facts = load_summary(written(tmp_path / "run", summary))
    memory = explain("memory", facts, "run")
    assert "97.7 KiB" not in memory, "the invalid figure is not quoted"
    assert "idle/h2 is invalid: memory does not follow clients" in memory
    assert "`wirewise bench --scenario idle`" in memory
    polling = explain("polling", facts, "run")
    assert "chat/poll is invalid: load generator saturated" in polling
    assert "`wirewise bench --scenario chat --transport poll` measures it" in polling
    assert "1 ms" not in polling
    assert "invalid result(s) are not quoted" in polling


def test_memory_scale_comes_from_the_run(run: Path) -> None:
    """No figure is written into the text: 10,000 connections at the largest measured cost."""
    text = explain("memory", load_summary(run), run.name)
    largest = max((c.rss + c.kernel, label) for label, c in COSTS.items())
    mib = largest[0] * 10_000 / (1 << 20)
    assert f"({largest[0] / 1024:.1f} KiB, idle/{largest[1]}) are {mib:,.0f} MiB" in text
    assert "30 KiB" not in text


def test_topics_without_results_say_how_to_measure() -> None:
    for topic in ("memory", "polling", "http2", "sse-vs-ws", "upgrade"):
        text = explain(topic, None)
        assert "wirewise bench" in text, topic


# -- the committed reference run ---------------------------------------------------------------


REFERENCE_FILE = ROOT / "results" / "REFERENCE"


def reference_run() -> Path:
    """The committed reference run, if it is a schema-v2 run (else the test is skipped)."""
    if not REFERENCE_FILE.exists():
        pytest.skip("no results/REFERENCE file")
    path = ROOT / "results" / REFERENCE_FILE.read_text().strip()
    try:
        version = json.loads((path / "summary.json").read_text()).get("schema_version")
    except (OSError, json.JSONDecodeError) as exc:
        pytest.skip(f"results/REFERENCE names {path.name}, whose summary.json is unreadable: {exc}")
    if version != 2:
        pytest.skip(
            f"results/REFERENCE names {path.name}, a schema-v{version} run: decide reads v2 only"
            " (re-run the reference bench to test on real measurements)"
        )
    return path


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_decide_on_the_reference_run(workload: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = reference_run()
    status, answer, _ = decide_cli(path, capsys, *WORKLOADS[workload])
    assert status == 0 and answer is not None
    scores = [r["score"] for r in answer["ranking"]]
    assert scores == sorted(scores, reverse=True)
    summary = load_summary(path)
    invalid = {f"{r.scenario}/{r.label}" for r in summary.results if not r.valid}
    for estimate in answer["estimates"].values():
        used = estimate["sources"].get("p99_ms", "").split("no valid source")[0]
        assert not any(f"{name} " in used for name in invalid), used


def test_decide_reads_the_newest_run_that_has_its_scenarios(tmp_path: Path) -> None:
    """A newer run of failover only is no basis for decide, nor a newer chat run on three
    instances behind a balancer, nor one behind nginx: the newest direct run with chat is."""
    from wirewise.results import newest_run

    for run_id, scenario, instances in (
        ("20260101-000000", "chat", 1),
        ("20260102-000000", "failover", 3),
        ("20260103-000000", "chat", 3),
        ("20260104-000000", "chat", 0),  # 0: one server behind nginx
    ):
        (tmp_path / run_id).mkdir()
        proxy = "nginx-default" if instances == 0 else None
        rows = {
            "metadata": {"plan": {"instances": instances or 1, "proxy": proxy}},
            "results": [{"scenario": scenario, "transport": "ws"}],
        }
        (tmp_path / run_id / "summary.json").write_text(json.dumps(rows))
    assert newest_run(tmp_path) == tmp_path / "20260104-000000"
    assert newest_run(tmp_path, having="chat") == tmp_path / "20260101-000000"
    assert newest_run(tmp_path, having="idle") is None


def test_load_balancing_quotes_the_committed_cluster_runs() -> None:
    """The kill, the extra hop and stickiness, each from the newest cluster run that measured
    it (never the single-process reference, which has none of them)."""
    committed = Path(__file__).resolve().parent.parent / "results"
    runs = cluster_runs([committed])
    reference = (committed / "REFERENCE").read_text().strip()
    assert runs and all(not name.endswith(reference) for name, _ in runs)
    said = cluster_sentences(runs)
    kill, *hops, sticky = said
    assert "failover" in kill and "0 deliveries lost or duplicated" in kill
    assert [h.split(",")[0] for h in hops] == ["Measured (broadcast", "Measured (chat"]
    assert all("added +" in h and "against one process" in h for h in hops)
    assert "(not significant: poll)" in hops[1], "short polling's interval hides the hop"
    assert sticky.startswith("Sticky sessions against round robin (results/")
    assert cluster_sentences([]) == []


def test_proxies_quotes_the_committed_nginx_runs() -> None:
    """Each profile's newest run, and a finding only where the runs show it."""
    committed = Path(__file__).resolve().parent.parent / "results"
    runs = proxy_runs([committed])
    assert sorted(runs) == ["nginx-buffered", "nginx-default", "nginx-tuned", "no-upgrade"]
    said = {line.split(" (")[0]: line for line in proxy_sentences(runs)}
    assert "ws failed (only 0 of" in said["nginx-default"]
    assert "ws p50" in said["nginx-tuned"] and "sse p50" in said["nginx-buffered"]
    reference = committed / (committed / "REFERENCE").read_text().strip()
    text = explain("proxies", load_summary(reference), reference.name)
    assert "Buffering held no SSE event" in text and "the missing Upgrade" in text
    assert proxy_sentences({}) == []


def test_proxies_and_polling_quote_the_committed_fallback_and_network_runs() -> None:
    """The fallback run behind no-upgrade (every user on SSE after the refused upgrade), and
    the newest network sweep's p50/p99 at each RTT; neither where no such run exists."""
    committed = Path(__file__).resolve().parent.parent / "results"
    fallback = fallback_sentence([committed])
    assert fallback is not None and "behind no-upgrade" in fallback and " on sse;" in fallback
    network = network_sentence([committed], ("poll", "sse"))
    assert network is not None and network.startswith("Chat p50/p99 ms at each RTT added")
    assert " at 0, " in network and " at 300" in network
    assert fallback_sentence([]) is None and network_sentence([], ("sse",)) is None


def test_sse_vs_ws_says_why_sse_paid_a_second_round_trip_in_the_committed_sweep() -> None:
    """The sweep's SSE p99 is two RTT, HTTP/2's and WebSocket's one: the explanation names the
    cold send connection, with the share of sends that opened it read from the sweep."""
    committed = Path(__file__).resolve().parent.parent / "results"
    reference = committed / (committed / "REFERENCE").read_text().strip()
    text = " ".join(explain("sse-vs-ws", load_summary(reference), reference.name).split())
    assert "a new one costs one more round trip for its handshake" in text
    assert "sse 1/3 at 0" in text and "; h2 " in text and "; ws " in text
    sweep = best_sweep([committed], ("sse",))
    assert sweep is not None
    sends = {r.parameters["rate_per_user"] * r.parameters["duration_s"] for r in sweep[1]}
    (count,) = sends
    assert f"each user's first send opened the connection, 1 of {count:.0f}" in text
