"""A TCP relay that delays each direction of every connection: the round-trip time of a network
path, added in user space because this kernel has no ``netem``.

Run it as ``python -m wirewise.relay --listen 127.0.0.1:0 --target HOST:PORT --one-way-ms 50
--jitter-ms 5``; it prints one ready line (:func:`wirewise.registry.ready_line`, transport
``relay``) with the port it bound, and on SIGTERM one stats line (``wirewise: relay stats
{json}``) with its CPU seconds and counters, so the bench can report what the relay cost.

Written here rather than taken: netem, which does this in the kernel, is missing, and
toxiproxy's latency toxic is a Go server that is not installed (``toxiproxy-python`` on PyPI is
only its client); Python's TCP proxies forward without delaying.

Theory of operation. Each chunk read from one side is written to the other at
``max(previous chunk's time in that direction, arrival + one_way + uniform(-jitter, jitter))``:
delayed and jittered, never reordered (a TCP byte stream cannot be). A chunk is what one
``recv`` returned, not a packet: the relay delays reads, so a burst the kernel coalesced moves as
one. Jitter is per direction, as netem's is on one interface: a round trip varies by up to twice
it.

What a relay cannot do, and what it does instead:

- The client's ``connect()`` completes at once (the relay's kernel accepts it). To charge a new
  connection its handshake anyway, the relay opens its own connection to the target 1.5 round
  trips after accepting (SYN, SYN-ACK, then the first data's way): the client's first bytes and a
  server's greeting arrive when they would over the path; ``--no-handshake`` turns this off.
- A refused target shows as a connection accepted and then closed, not as ``ECONNREFUSED``.

Limits: each direction holds at most ``--max-held`` bytes (1 MiB) not yet written, counting the
writer's own buffer; past it the relay stops reading that side until it drains, so a slow reader
slows its sender as TCP would. Half-close propagates (after the data before it), and so do
close and reset. The relay exits when its parent process dies (it polls ``os.getppid()``; a
``PR_SET_PDEATHSIG`` would follow the parent's thread, not its process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from wirewise.registry import ready_line

__all__ = ["STATS_PREFIX", "Counters", "Delay", "Relay", "main", "parse_address", "serve"]

MAX_HELD = 1 << 20
"""Bytes one direction may hold unwritten before the relay stops reading its source."""
PARENT_POLL = 0.5
"""Seconds between checks that the parent still lives."""
STATS_PREFIX = "wirewise: relay stats "


@dataclass
class Counters:
    """What the relay did, reported on exit (bytes and chunks each way)."""

    connections: int = 0
    open: int = 0
    failed_connects: int = 0
    chunks_up: int = 0
    chunks_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    pauses: int = 0


@dataclass(frozen=True)
class Delay:
    """How long a chunk waits, per direction."""

    one_way_ms: float = 0.0
    jitter_ms: float = 0.0
    handshake: bool = True

    def sample(self, rng: random.Random) -> float:
        """One chunk's delay in seconds (never negative: jitter is at most the one-way delay)."""
        jitter = rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.one_way_ms + jitter) / 1000

    @property
    def connect_after(self) -> float:
        """Seconds between accepting a client and connecting to the target: 1.5 round trips."""
        return 3 * self.one_way_ms / 1000 if self.handshake else 0.0


EOF = "eof"
RESET = "reset"
Item = bytes | str
"""A chunk, or how its stream ended: ``EOF`` (a FIN, passed on as one) or ``RESET``."""


class Direction:
    """One way through a connection: chunks wait in order until their time, then go out."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: Delay,
        rng: random.Random,
        counters: Counters,
        upward: bool,
        max_held: int,
    ) -> None:
        self.loop = loop
        self.delay = delay
        self.rng = rng
        self.counters = counters
        self.upward = upward
        self.max_held = max_held
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        self.queue: deque[tuple[float, Item]] = deque()
        self.queued = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.sink_paused = False
        self.reading_paused = False
        self.ended = False
        """The source has ended (its EOF or reset is queued)."""
        self.finished = False
        """Nothing more goes to the sink: its end was delivered, or it is gone."""
        self.on_finish: Callable[[], None] = lambda: None

    def push(self, item: Item, now: float) -> None:
        """Queue a chunk (or the end) for ``now`` + its delay, never before the previous one."""
        if self.finished or self.ended:
            return  # nobody to deliver it to (the other side is gone): TCP would drop it too
        due = max(self.last_due, now + self.delay.sample(self.rng))
        self.last_due = due
        if isinstance(item, bytes):
            self._count(len(item))
            self.queued += len(item)
        else:
            self.ended = True
        self.queue.append((due, item))
        self.flush()
        self.update_reading()

    def flush(self) -> None:
        """Write every chunk whose time has come; wake up again for the next one."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sink is None or self.finished:
            return
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            _due, item = self.queue.popleft()
            if isinstance(item, str):
                self._finish(item)
                return
            self.queued -= len(item)
            self.sink.write(item)
        if self.queue:
            # uvloop's timers count whole milliseconds and may fire a little early: flush then
            # finds nothing due and waits again, so a chunk is never early (measured here: a
            # 100 ms round trip takes 100.4-100.8 ms). Chunks are timed on time.monotonic(),
            # not on the loop's millisecond clock, for the same reason.
            self.timer = self.loop.call_later(self.queue[0][0] - now, self.flush)
        self.update_reading()

    def _count(self, size: int) -> None:
        if self.upward:
            self.counters.chunks_up += 1
            self.counters.bytes_up += size
        else:
            self.counters.chunks_down += 1
            self.counters.bytes_down += size

    def _finish(self, end: str) -> None:
        self.finished = True
        assert self.sink is not None
        if end == RESET:
            self.sink.abort()
        elif self.sink.can_write_eof():
            self.sink.write_eof()
        else:
            self.sink.close()
        self.on_finish()

    def held(self) -> int:
        buffered = self.sink.get_write_buffer_size() if self.sink is not None else 0
        return self.queued + buffered

    def update_reading(self) -> None:
        """Stop reading the source while too much waits; start again below half of it."""
        if self.source is None or self.source.is_closing():
            return
        held = self.held()
        if not self.reading_paused and (held > self.max_held or self.sink_paused):
            self.source.pause_reading()
            self.reading_paused = True
            self.counters.pauses += 1
        elif self.reading_paused and held <= self.max_held // 2 and not self.sink_paused:
            self.source.resume_reading()
            self.reading_paused = False

    def drop(self) -> None:
        """The sink is gone: nothing more can be written."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0
        self.finished = True


class Side(asyncio.Protocol):
    """One socket of a relayed connection: what it reads goes out by ``outgoing``; ``incoming``
    writes to it."""

    def __init__(self, pair: Pair, outgoing: Direction, incoming: Direction) -> None:
        self.pair = pair
        self.outgoing = outgoing
        self.incoming = incoming
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.outgoing.source = self.incoming.sink = transport
        self.pair.connected(self)

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data, time.monotonic())

    def eof_received(self) -> bool:
        self.outgoing.push(EOF, time.monotonic())
        return True  # keep our write side open: a half-close is passed on, not made a close

    def pause_writing(self) -> None:
        self.incoming.sink_paused = True
        self.incoming.update_reading()

    def resume_writing(self) -> None:
        self.incoming.sink_paused = False
        self.incoming.update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pair.lost(self, exc)


class Pair:
    """A client's connection and the relay's connection to the target, joined by two
    directions: ``up`` (client to target) and ``down``."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.loop = relay.loop
        args = (self.loop, relay.delay, relay.rng, relay.counters)
        self.up = Direction(*args, upward=True, max_held=relay.max_held)
        self.down = Direction(*args, upward=False, max_held=relay.max_held)
        self.up.on_finish = self.down.on_finish = self._maybe_close
        self.client = Side(self, self.up, self.down)
        self.target: Side | None = None

    def connected(self, side: Side) -> None:
        if side is self.client:
            self.relay.counters.connections += 1
            self.relay.counters.open += 1
            self.relay.pairs.add(self)
            self.loop.call_later(self.relay.delay.connect_after, self._dial)
        else:
            self.up.flush()  # what the client sent meanwhile, when its time has come

    def _dial(self) -> None:
        task = self.loop.create_task(self._connect())
        self.relay.tasks.add(task)
        task.add_done_callback(self.relay.tasks.discard)

    async def _connect(self) -> None:
        host, port = self.relay.target
        try:
            await self.loop.create_connection(self._target_side, host, port)
        except OSError:
            self.relay.counters.failed_connects += 1
            self.down.drop()
            if self.client.transport is not None:
                self.client.transport.close()
            self._forget()

    def _target_side(self) -> Side:
        self.target = Side(self, self.down, self.up)
        return self.target

    def lost(self, side: Side, exc: Exception | None) -> None:
        """One socket closed: what it sent still goes out, then its close (or reset), as late
        as it would arrive; what was on its way to it is dropped."""
        side.incoming.drop()
        side.outgoing.push(RESET if exc is not None else EOF, time.monotonic())
        self._maybe_close()
        if self.client.closed and (self.target is None or self.target.closed):
            self._forget()

    def _maybe_close(self) -> None:
        """Both directions have ended: close both sockets (each after its buffered data)."""
        if not (self.up.finished and self.down.finished):
            return
        for side in (self.client, self.target):
            if side is not None and side.transport is not None and not side.closed:
                side.transport.close()

    def _forget(self) -> None:
        if self in self.relay.pairs:
            self.relay.pairs.discard(self)
            self.relay.counters.open -= 1

    def abort(self) -> None:
        for side in (self.client, self.target):
            if side is not None and side.transport is not None:
                side.transport.abort()


class Relay:
    """The listening socket and every pair it relays."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: tuple[str, int],
        delay: Delay,
        seed: int | None = None,
        max_held: int = MAX_HELD,
    ) -> None:
        self.loop = loop
        self.target = target
        self.delay = delay
        self.rng = random.Random(seed)
        self.max_held = max_held
        self.counters = Counters()
        self.pairs: set[Pair] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def accept(self) -> Side:
        return Pair(self).client

    def close_all(self) -> None:
        for pair in list(self.pairs):
            pair.abort()


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) as a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def cpu_seconds() -> float:
    usage = os.times()
    return round(usage.user + usage.system, 3)


async def serve(args: argparse.Namespace) -> Counters:
    """Listen, say so, relay until SIGTERM (or the parent's death), then report."""
    loop = asyncio.get_running_loop()
    delay = Delay(args.one_way_ms, args.jitter_ms, args.handshake)
    relay = Relay(loop, args.target, delay, args.seed, args.max_held)
    host, port = args.listen
    server = await loop.create_server(relay.accept, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()
    line = ready_line("relay", f"tcp://{host}:{bound[1]}", loop_name(), os.getpid())
    if args.ready_file:
        write_atomically(Path(args.ready_file), line + "\n")
    print(line, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = loop.create_task(watch_parent(args.parent or os.getppid(), stop))
    await stop.wait()
    watcher.cancel()
    server.close()
    relay.close_all()
    await server.wait_closed()
    return relay.counters


async def watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once ``parent`` is no longer our parent: it died and we were re-parented."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL)
    stop.set()


def write_atomically(path: Path, text: str) -> None:
    """A reader polling ``path`` sees the whole line or nothing."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def loop_name() -> str:
    return "uvloop" if "uvloop" in sys.modules else "asyncio"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m wirewise.relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listen", type=parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--target", type=parse_address, required=True)
    parser.add_argument("--one-way-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument(
        "--handshake",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="charge a new connection its 1.5 round trips before the target sees it",
    )
    parser.add_argument("--max-held", type=int, default=MAX_HELD)
    parser.add_argument("--seed", type=int, default=None, help="the jitter's random seed")
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--stats-file", default=None)
    parser.add_argument(
        "--parent",
        type=int,
        default=None,
        help="exit when this pid is no longer our parent (default: the parent at start; given,"
        " it also covers a parent that died before the relay started watching)",
    )
    args = parser.parse_args(argv)
    if args.one_way_ms < 0 or not 0 <= args.jitter_ms <= args.one_way_ms:
        parser.error("--one-way-ms must be >= 0 and --jitter-ms between 0 and --one-way-ms")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        import uvloop
    except ImportError:  # plain asyncio works, a little slower
        counters = asyncio.run(serve(args))
    else:
        counters = uvloop.run(serve(args))
    stats = {**asdict(counters), "cpu_seconds": cpu_seconds(), "pid": os.getpid()}
    text = STATS_PREFIX + json.dumps(stats, sort_keys=True)
    if args.stats_file:
        write_atomically(Path(args.stats_file), text + "\n")
    try:
        print(text, flush=True)
    except BrokenPipeError:  # the parent is gone (often why we stop): nobody left to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
