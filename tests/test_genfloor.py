"""The generator-floor calibration: a real writer process, real loopback sockets, the real parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wirewise.cli import main
from wirewise.genfloor import KINDS, Floor, against, measure, message_bytes
from wirewise.protocol import NewMessage, decode_server


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_every_message_written_is_read_and_costs_something(kind: str) -> None:
    floor = measure(kind, connections=20, rounds=10, interval=0.005)
    assert floor.deliveries == 200 and floor.connections == 20 and floor.rounds == 10
    assert floor.cpu_s > 0 and floor.us_per_delivery == pytest.approx(
        floor.cpu_s / 200 * 1e6, rel=0.01
    )


def test_the_floor_reads_the_bytes_a_server_writes() -> None:
    ws = message_bytes("ws", 1_000_001)
    assert ws[0] == 0x81 and not ws[1] & 0x80  # a final text frame, unmasked (server to client)
    message = decode_server(ws[4:])  # 126: a two-byte length follows
    assert isinstance(message, NewMessage) and message.id == 1_000_001
    sse = message_bytes("sse", 1_000_001)
    size, _, rest = sse.partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2 and rest.startswith(b"id: 1000001\nevent: new_message\n")


def test_each_push_transport_is_compared_with_the_floor_below_its_reader() -> None:
    floors = [
        Floor(k, 1, 1, 1, 0.0, 0.0, us, 1) for k, us in zip(KINDS, (5.0, 7.0, 9.0), strict=True)
    ]
    summary = {
        "results": [
            {"scenario": "broadcast", "label": label,
             "load_generator": {"server_cpu_us_per_delivery": 18.0, "cpu_us_per_delivery": 10.0}}
            for label in ("poll", "sse", "h2", "ws", "tcp")
        ] + [{"scenario": "chat", "label": "ws", "load_generator": {}}]
    }  # fmt: skip
    rows = {r["label"]: r for r in against(summary, floors, "broadcast")}
    assert set(rows) == {"sse", "h2", "ws", "tcp"}  # short polling pushes nothing
    assert rows["ws"]["budget_us"] == 6.0 and rows["ws"]["floor_us"] == 7.0
    assert rows["ws"]["floor_over_budget"] == pytest.approx(7 / 6, abs=0.01)
    assert rows["h2"]["floor"] == "sse" and rows["tcp"]["floor"] == "kernel"


@pytest.mark.timeout(120)
def test_the_command_writes_its_figures_and_their_conditions(tmp_path: Path) -> None:
    flags = ["--connections", "10", "--rounds", "5", "--interval-ms", "5", "--repeat", "2"]
    flags += ["--out", str(tmp_path)]
    assert main(["generator-floor", *flags]) == 0
    (written,) = tmp_path.glob("generator-floor-*/floor.json")
    record = json.loads(written.read_text())
    assert [f["kind"] for f in record["floors"]] == list(KINDS)
    assert all(f["deliveries"] == 100 and len(f["repeats"]) == 2 for f in record["floors"])
    assert all(
        min(f["repeats"]) <= f["us_per_delivery"] <= max(f["repeats"]) for f in record["floors"]
    )
    assert record["metadata"]["git_commit"] and record["metadata"]["against"] is None
