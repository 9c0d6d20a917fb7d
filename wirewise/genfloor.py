"""What reading one delivery costs the load generator at the least, on this machine.

The bench measures the whole generator (Locust, gevent, the senders, the hub) against the
server, per delivery. This measures the part no Python generator can shed, so that a reader
can tell how far the generator could still fall and what the rest costs:

- ``kernel``: the hub's loop reading loopback TCP sockets (``epoll``, ``recvmsg`` with the
  kernel's receipt timestamp, the ACK it sends back), the data thrown away;
- ``ws`` and ``sse``: the same, with the lean clients' real parse (:class:`WsConn`,
  :class:`SseConn` and :class:`LeanSubscription`) turning each frame into a ledger row.

A writer process, pinned to the server's core, sends ``rounds`` messages to each of
``connections`` sockets (the server's own bytes: websockets' unmasked text frames, the SSE
server's event framing, chunked as uvicorn sends it), one round every ``interval`` seconds,
as a broadcast does. The reader, pinned to the load generator's core, is this process; its
CPU (user and system, every thread) from the first round to the last delivery, over the
deliveries, is the figure. Nothing else runs in it, so this is a floor: Locust and gevent
come on top.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.frames import Frame, Opcode

from wirewise import protocol
from wirewise.clients.lean import Hub
from wirewise.clients.lean.base import LeanSubscription
from wirewise.clients.lean.hub import Conn
from wirewise.clients.lean.sse import SseConn, SseLeanClient
from wirewise.clients.lean.ws import WsConn, WsLeanClient
from wirewise.processes import child_setup, cores
from wirewise.servers.core import Stored
from wirewise.servers.sse import frame as sse_event

__all__ = ["KINDS", "Floor", "against", "measure", "measure_all", "message_bytes", "write_floors"]

KINDS = ("kernel", "ws", "sse")
PAYLOAD = "x" * 100
"""The chat scenarios' message text (100 characters)."""
FIRST_ID = 1_000_000
"""Ids of one width, so every frame has the same size (the drain counts bytes)."""


@dataclass
class Floor:
    """One kind's figure: the reader's CPU per delivery, and what it read."""

    kind: str
    connections: int
    rounds: int
    deliveries: int
    cpu_s: float
    wall_s: float
    us_per_delivery: float
    """The median over the repeats (one repeat: its own figure)."""
    frame_bytes: int
    repeats: list[float] = field(default_factory=list)
    """Each repeat's CPU per delivery, in the order measured."""


def message_bytes(kind: str, msg_id: int) -> bytes:
    """The bytes a wirewise server writes for one ``new_message`` on ``kind``'s stream."""
    message = protocol.NewMessage(
        id=msg_id,
        room="floor",
        sender="floor-user",
        text=PAYLOAD,
        client_msg_id=f"floor-{msg_id}",
        sent_at=time.time_ns() // 1000,
        ts=time.time_ns() // 1_000_000,
    )
    stored = Stored(message)
    if kind == "sse":
        event = sse_event(stored)
        return b"%x\r\n%s\r\n" % (len(event), event)  # a chunk, as uvicorn writes the body
    return Frame(Opcode.TEXT, stored.json.encode()).serialize(mask=False)


class _Drain(Conn):
    """Reads and forgets: the hub's loop and the kernel, no parse."""

    __slots__ = ("read",)

    def __init__(self, hub: Hub, sock: socket.socket) -> None:
        super().__init__(hub, sock)
        self.read = 0

    def on_data(self, data: bytes, received: int) -> None:
        self.read += len(data)


def _reader(kind: str, hub: Hub, sock: socket.socket, index: int) -> Conn:
    if kind == "kernel":
        return _Drain(hub, sock)
    if kind == "ws":
        ws = WsLeanClient("http://127.0.0.1:1", hub)  # never connects: the floor owns the socket
        return WsConn(ws, sock, LeanSubscription(ws, "floor", index, None))
    sse = SseLeanClient("http://127.0.0.1:1", hub)
    return SseConn(hub, sock, LeanSubscription(sse, "floor", index, None), chunked=True)


def measure(kind: str, connections: int = 500, rounds: int = 200, interval: float = 0.02) -> Floor:
    """Measure one kind (see the module docstring); bounded: 30 s at most."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    server_cores, generator_cores = cores()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, generator_cores)
    listener = socket.create_server(("127.0.0.1", 0), backlog=connections)
    port = listener.getsockname()[1]
    argv = [sys.executable, "-m", "wirewise.genfloor", kind, str(port)]
    argv += [str(connections), str(rounds), str(interval)]
    writer = subprocess.Popen(argv, preexec_fn=child_setup(server_cores))
    hub = Hub()
    try:
        conns = []
        listener.settimeout(10)
        for index in range(connections):
            sock, _ = listener.accept()
            conns.append(_reader(kind, hub, sock, index))
        for conn in conns:
            hub.add(conn)
        frame_bytes = len(message_bytes(kind, FIRST_ID))
        began_cpu, began = time.process_time(), time.monotonic()
        conns[0].write(b"g")  # the writer's go
        deadline = began + 30
        expected = connections * rounds
        while _read(kind, hub, conns, frame_bytes) < expected and time.monotonic() < deadline:
            time.sleep(0.005)
        cpu, wall = time.process_time() - began_cpu, time.monotonic() - began
        deliveries = _read(kind, hub, conns, frame_bytes)
    finally:
        hub.stop()
        listener.close()
        writer.kill()
        writer.wait()
    if deliveries < expected:
        raise RuntimeError(f"{kind}: {deliveries} of {expected} deliveries read in 30 s")
    if hub.mismatched or hub.duplicates:
        raise RuntimeError(f"{kind}: the parse disagreed with the validating decoder")
    return Floor(
        kind, connections, rounds, deliveries, round(cpu, 6), round(wall, 3),
        round(cpu / deliveries * 1e6, 3), frame_bytes, [round(cpu / deliveries * 1e6, 3)],
    )  # fmt: skip


def measure_all(
    repeat: int = 3, connections: int = 500, rounds: int = 200, interval: float = 0.02
) -> list[Floor]:
    """Every kind ``repeat`` times, interleaved (one pass over the kinds, then the next), so a
    slow moment of the machine lands on every kind; each figure is the median of its repeats
    (single runs here vary by a fifth)."""
    runs: dict[str, list[Floor]] = {kind: [] for kind in KINDS}
    for _ in range(repeat):
        for kind in KINDS:
            runs[kind].append(measure(kind, connections, rounds, interval))
    merged = []
    for kind, floors in runs.items():
        each = [f.us_per_delivery for f in floors]
        merged.append(
            Floor(
                kind=kind,
                connections=connections,
                rounds=rounds,
                deliveries=sum(f.deliveries for f in floors),
                cpu_s=round(sum(f.cpu_s for f in floors), 6),
                wall_s=round(sum(f.wall_s for f in floors), 3),
                us_per_delivery=round(statistics.median(each), 3),
                frame_bytes=floors[0].frame_bytes,
                repeats=each,
            )
        )
    return merged


def _read(kind: str, hub: Hub, conns: list[Conn], frame_bytes: int) -> int:
    if kind == "kernel":
        return sum(conn.read for conn in conns if isinstance(conn, _Drain)) // frame_bytes
    return len(hub.deliveries) // 4


def write_floors(floors: list[Floor], out: Path, metadata: dict[str, Any]) -> Path:
    """``out/generator-floor-<time>/floor.json``: the figures and their conditions."""
    target = out / time.strftime("generator-floor-%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=False)
    path = target / "floor.json"
    record = {"metadata": metadata, "floors": [asdict(f) for f in floors]}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


FLOOR_OF = {
    "longpoll": "kernel",
    "sse": "sse",
    "h2": "sse",
    "ws": "ws",
    "ws@websockets": "ws",
    "tcp": "kernel",
}
"""The floor below each push transport's reader: its own parse where measured, else the
nearest cheaper one (HTTP/2 adds its framing to SSE's, long polling parses whole bodies),
so the comparison can only flatter the generator."""


def against(summary: dict[str, Any], floors: list[Floor], scenario: str) -> list[dict[str, Any]]:
    """Per push transport of ``scenario``: the server's CPU per delivery, a third of it, the
    floor below its reader and what the whole generator spent, from a bench's summary."""
    by_kind = {f.kind: f.us_per_delivery for f in floors}
    rows = []
    for result in summary.get("results", []):
        generator = result.get("load_generator") or {}
        server = generator.get("server_cpu_us_per_delivery")
        kind = FLOOR_OF.get(result["label"])
        if result["scenario"] != scenario or not server or kind not in by_kind:
            continue
        rows.append(
            {
                "label": result["label"],
                "server_us": server,
                "budget_us": round(server / 3, 2),
                "floor": kind,
                "floor_us": by_kind[kind],
                "generator_us": generator.get("cpu_us_per_delivery"),
                "floor_over_budget": round(by_kind[kind] / (server / 3), 2),
            }
        )
    return rows


# -- the writer process ------------------------------------------------------------------------------


def _write(kind: str, port: int, connections: int, rounds: int, interval: float) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    socks[0].recv(1)  # go
    due = time.monotonic()
    for msg_id in range(FIRST_ID, FIRST_ID + rounds):
        data = message_bytes(kind, msg_id)
        for sock in socks:
            sock.sendall(data)
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))
    threading.Event().wait(30)  # keep the sockets open until the reader kills us


if __name__ == "__main__":
    _write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
