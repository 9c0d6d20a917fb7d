"""``decide --rtt-ms --loss``: what a network adds to each backend's p99, read from a run that
measured chat under network conditions (synthetic here, written as ``summarize`` writes it),
and the theory's formula only where no such run exists, said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_decide import decide_cli, metadata, plausible_run, written
from wirewise.decide import Workload, decide
from wirewise.network_model import NetworkModel, interpolate
from wirewise.results import Latency, Result, Summary, Validity

P99_AT = {  # label -> {(rtt ms, loss %): p99 ms}, as a sweep through the relay measures them
    "sse": {(0, 0): 5.0, (50, 0): 57.0, (150, 0): 160.0, (300, 0): 310.0, (50, 2): 290.0},
    "longpoll": {(0, 0): 6.0, (50, 0): 110.0, (150, 0): 320.0, (300, 0): 640.0},
}


def networked(
    label: str, rtt: float, loss: float, p99: float, valid: bool = True, sends: float = 0.0
) -> Result:
    """``sends``: each user's sends in the window (0: no parameters recorded)."""
    return Result(
        parameters={"rate_per_user": 1.0, "duration_s": sends} if sends else {},
        scenario="chat",
        transport=label,
        server="uvicorn",
        label=label,
        latency_ms=Latency(p50=p99 / 2, p99=p99, count=20_000),
        validity=Validity(valid=valid, reasons=[] if valid else ["load generator saturated"]),
        deployment={
            "variant": "",
            "instances": 1,
            "network": {
                "name": f"rtt{rtt:g}",
                "rtt_ms": rtt,
                "jitter_ms": 0.0,
                "loss_pct": loss,
                "bandwidth_kbit": None,
            },
        },
    )


def sweep() -> Summary:
    return Summary(
        metadata=metadata(),
        results=[
            networked(label, rtt, loss, p99)
            for label, points in P99_AT.items()
            for (rtt, loss), p99 in points.items()
        ],
    )


def test_interpolation_and_extension_past_the_last_point() -> None:
    curve = [(0.0, 5.0), (50.0, 57.0), (150.0, 160.0)]
    assert interpolate(curve, 100.0) == (pytest.approx(108.5), "interpolated")
    assert interpolate(curve, 50.0) == (57.0, "measured")
    value, how = interpolate(curve, 250.0)
    assert value == pytest.approx(263.0) and how.startswith("extrapolated past 150")


def test_the_measured_curve_gives_what_the_network_adds() -> None:
    model = NetworkModel.from_runs([("results/20261201-110000", sweep())])
    added = model.added_p99("sse", "sse", 100.0, 0.0)
    assert added.measured and added.ms == pytest.approx(108.5 - 5.0)
    assert "interpolated from chat/sse's p99 at each RTT in results/20261201-110000" in added.source
    longpoll = model.added_p99("longpoll", "longpoll", 150.0, 0.0)
    assert longpoll.ms == pytest.approx(314.0), "two round trips, as measured"
    lossy = model.added_p99("sse", "sse", 50.0, 2.0)
    assert lossy.ms == pytest.approx(52.0 + 233.0) and "loss at rtt 50 ms" in lossy.source


def test_without_a_measured_curve_the_formula_stands_in_and_says_so() -> None:
    model = NetworkModel.from_runs([])
    push = model.added_p99("ws", "ws", 100.0, 0.0)
    assert (push.ms, push.measured) == (100.0, False) and push.source.startswith("formula: 1 x")
    assert "wirewise bench --scenario chat --rtt 0" in push.source
    assert model.added_p99("longpoll", "longpoll", 100.0, 0.0).ms == 200.0
    assert model.added_p99("poll", "poll", 100.0, 0.0).ms == 150.0
    assert model.added_p99("ws", "ws", 0.0, 1.0).ms == 200.0, "1 % each way reaches the p99"
    assert model.added_p99("ws", "ws", 0.0, 0.1).ms == 0.0, "0.1 % stays under the p99"
    # a backend the sweep did not measure gets the formula, the others their curve
    model = NetworkModel.from_runs([("results/x", sweep())])
    assert not model.added_p99("ws", "ws", 100.0, 0.0).measured


def test_the_curve_with_more_rtts_wins_over_a_newer_one_with_fewer() -> None:
    """A newer loss sweep (rtt 0 and 50 only) does not replace the RTT sweep's curve; its loss
    points are still the ones read for loss."""
    newer = Summary(metadata=metadata(), results=[
        networked("sse", 0, 0, 4.0), networked("sse", 50, 0, 60.0), networked("sse", 50, 1, 250.0),
    ])  # fmt: skip
    model = NetworkModel.from_runs([("results/new", newer), ("results/old", sweep())])
    assert model.rtt["sse"].run == "results/old" and len(model.rtt["sse"].points) == 4
    assert model.loss["sse"][50.0].run == "results/new"


def test_invalid_points_are_not_a_curve() -> None:
    run = Summary(
        metadata=metadata(),
        results=[networked("sse", 0, 0, 5.0), networked("sse", 100, 0, 900.0, valid=False)],
    )
    assert not NetworkModel.from_runs([("results/x", run)]).rtt


def test_sse_and_long_polling_send_connection_is_warm_or_cold_by_the_send_rate() -> None:
    """The sweep opened SSE's send connection at 1 of each user's 10 sends, so its p99 paid the
    handshake's round trip: two RTT. Clients sending within the 5 s keep-alive keep theirs warm
    (one RTT, as HTTP/2 and WebSocket measure); clients sending less often pay it every time."""
    points = {0: 3.0, 50: 103.0, 100: 203.0, 300: 603.0}
    run = Summary(metadata=metadata(), results=[
        networked("sse", rtt, 0, p99, sends=10) for rtt, p99 in points.items()
    ])  # fmt: skip
    model = NetworkModel.from_runs([("results/sweep", run)])
    assert model.rtt["sse"].cold_share == pytest.approx(0.1)
    measured = model.added_p99("sse", "sse", 100.0, 0.0)
    assert measured.ms == 200.0, "without a send rate: the curve as measured"
    warm = model.added_p99("sse", "sse", 100.0, 0.0, send_interval_s=1.0)
    assert warm.ms == 100.0 and "less one RTT: 10% of the measured sends" in warm.source
    cold = model.added_p99("sse", "sse", 100.0, 0.0, send_interval_s=10.0)
    assert cold.ms == 200.0 and "every send opens its connection" in cold.source
    # never under the formula: a curve that paid no handshake loses nothing
    flat = Summary(metadata=metadata(), results=[
        networked("sse", 0, 0, 3.0, sends=10), networked("sse", 100, 0, 104.0, sends=10)
    ])  # fmt: skip
    flat_model = NetworkModel.from_runs([("results/flat", flat)])
    assert flat_model.added_p99("sse", "sse", 100.0, 0.0, send_interval_s=1.0).ms == 100.0
    # without a curve the formula assumes a warm connection; a cold one adds its round trip
    formula = NetworkModel.from_runs([])
    assert formula.added_p99("sse", "sse", 100.0, 0.0, send_interval_s=1.0).ms == 100.0
    cold_formula = formula.added_p99("longpoll", "longpoll", 100.0, 0.0, send_interval_s=30.0)
    assert cold_formula.ms == 300.0 and not cold_formula.measured
    # WebSocket and HTTP/2 send on the connection they already hold
    assert formula.added_p99("ws", "ws", 100.0, 0.0, send_interval_s=30.0).ms == 100.0
    assert formula.added_p99("h2", "h2", 100.0, 0.0, send_interval_s=30.0).ms == 100.0


def test_when_clients_never_send_a_message_crosses_the_network_once() -> None:
    """A feed published behind the servers: the delivery pays the way down only, so the send's
    half RTT (and SSE's handshake) comes off the measured curve, never below the one-way formula."""
    run = Summary(metadata=metadata(), results=[
        networked("sse", 0, 0, 3.0, sends=10), networked("sse", 100, 0, 203.0, sends=10),
        networked("ws", 0, 0, 2.0, sends=10), networked("ws", 100, 0, 102.0, sends=10),
        networked("longpoll", 0, 0, 5.0, sends=10), networked("longpoll", 100, 0, 290.0, sends=10),
    ])  # fmt: skip
    model = NetworkModel.from_runs([("results/sweep", run)])
    ws = model.added_p99("ws", "ws", 100.0, 0.0, clients_send=False)
    assert ws.ms == 50.0 and "less half an RTT: clients never send" in ws.source
    sse = model.added_p99("sse", "sse", 100.0, 0.0, clients_send=False)
    assert sse.ms == 50.0 and "less half an RTT and the handshake's RTT" in sse.source
    assert model.added_p99("longpoll", "longpoll", 100.0, 0.0, clients_send=False).ms == 150.0
    formula = NetworkModel.from_runs([]).added_p99("h2", "h2", 100.0, 0.0, clients_send=False)
    assert (formula.ms, formula.measured) == (50.0, False) and "one way" in formula.source
    # loss still adds its stall on top
    lossy = NetworkModel.from_runs([]).added_p99("ws", "ws", 100.0, 2.0, clients_send=False)
    assert lossy.ms == 250.0


def test_decide_recommends_a_push_stream_for_a_feed_nobody_sends_to() -> None:
    """Receive-only clients 100 ms away with a 150 ms bound: one way down fits SSE; the
    two-way chat curve would have charged it two round trips and ruled it out."""
    points = {0: 3.0, 50: 103.0, 100: 203.0}
    run = Summary(metadata=metadata(), results=[
        networked(label, rtt, 0, p99 - (100 if label != "sse" and rtt else 0), sends=10)
        for label in ("sse", "ws", "h2") for rtt, p99 in points.items()
    ])  # fmt: skip
    model = NetworkModel.from_runs([("results/sweep", run)])
    feed = Workload(200, 1.0, 0.0, 150.0, rtt_ms=100.0)
    answer = decide(feed, plausible_run(), "base", network=model)
    assert answer.estimates["sse"].network_ms == pytest.approx(50.0)
    assert {r.transport: r for r in answer.ranking}["sse"].feasible


def test_decide_adds_the_measured_network_to_every_p99() -> None:
    """The loopback run decides capacity; the sweep what 150 ms of RTT adds: two round trips
    of long polling leave no room in a 300 ms bound that SSE's one still meets, and each
    estimate says which curve (or formula) its figure came from."""
    base, model = plausible_run(), NetworkModel.from_runs([("results/sweep", sweep())])
    near = Workload(200, 1.0, 0.1, 100.0)
    far = Workload(200, 1.0, 0.1, 300.0, rtt_ms=150.0)
    loopback = decide(near, base, "base", network=model)
    answer = decide(far, base, "base", network=model)
    sse, longpoll = answer.estimates["sse"], answer.estimates["longpoll"]
    assert sse.network_ms == pytest.approx(155.0)
    assert "measured from chat/sse's p99 at each RTT in results/sweep" in sse.sources["network_ms"]
    assert sse.p99_ms == pytest.approx(loopback.estimates["sse"].p99_ms + 155.0, abs=0.2)
    assert longpoll.network_ms == pytest.approx(314.0)
    assert "for the network" in longpoll.sources["p99_ms"]
    assert answer.estimates["ws"].sources["network_ms"].startswith("formula: 1 x the 150 ms")
    ranked = {r.transport: r for r in answer.ranking}
    assert not ranked["longpoll"].feasible, "314 ms of network alone leaves no room in 300"
    assert ranked["sse"].feasible and answer.recommendation != "longpoll"


def test_decide_cli_reads_the_network_and_refuses_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = written(tmp_path / "20261201-100000", plausible_run())
    args = ["--clients", "200", "--push-rate", "1", "--send-rate", "0.1", "--latency-ms", "300"]
    status, answer, _ = decide_cli(base, capsys, *args, "--rtt-ms", "150", "--loss", "1")
    assert status == 0 and answer is not None
    for estimate in answer["estimates"].values():
        assert estimate["network_ms"] > 150 and "loss" in estimate["sources"]["network_ms"]
    assert answer["workload"]["rtt_ms"] == 150 and answer["workload"]["loss_pct"] == 1
    status, _, err = decide_cli(base, capsys, *args, "--loss", "100")
    assert status == 2 and "--loss" in err
