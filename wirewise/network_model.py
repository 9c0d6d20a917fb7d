"""What a network between the clients and the servers adds to each backend's p99, for
``wirewise decide --rtt-ms --loss``.

Measured first: the newest run that timed chat under network conditions (``wirewise bench
--scenario chat --rtt 0 --rtt 50 --rtt 150 --rtt 300 [--loss 1 --loss 2]``) gives each backend's
p99 at each condition, every point through the same relay, so a point minus the same backend's
rtt-0 point is what the network added. Between measured RTTs the curve is interpolated
linearly; beyond the highest it is extended along its last segment, and the source says so.
Loss adds what the lossy runs at the measured RTT nearest the one asked added over the same RTT
without loss, interpolated in the loss.

SSE and long polling send on an HTTP/1.1 connection of their own, which pays a handshake (one
more round trip before the send reaches the server) whenever it is new: the measured chat opened
it at each user's first send, 1 of 10 sends in its window, and that share sits in its p99. A
workload whose clients send more often than the servers' keep-alive (uvicorn's, 5 s) keeps that
connection warm: one round trip less than measured (never less than the formula). One whose
clients send less often opens it for every send: the measured tail stands, and the formula gets
the round trip added.

Every measured message crossed the network twice (its sender is a client too). A workload whose
clients never send gets its messages from behind the servers: a delivery crosses once, so the
send's half round trip (and SSE's and long polling's handshake) comes off the measured curve,
never below the one-way formula (half an RTT for a push, one for short polling, one and a half
for a long poll: what lands while the next poll is on its way waits for it).

Only without such a run (or for a backend it lacks) the theory's formula stands in, and the
source says that too: a push transport's delivery pays one RTT (its send up, its delivery down),
short polling 1.5 (its period grows by the poll's round trip), a long poll's tail two (what lands
while the next poll is on its way waits for it); a lost segment with nothing behind it waits for
the 200 ms minimum retransmission timeout, which reaches the p99 once about 1.5 % of deliveries
can meet a loss (each crosses two paths, so at a loss of 0.75 % each way).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from wirewise.registry import PUSH_TRANSPORTS
from wirewise.results import Result, Summary

__all__ = [
    "Added",
    "Curve",
    "NetworkModel",
    "chat_points",
    "cold_share",
    "cold_shares",
    "interpolate",
    "sends_per_user",
]

RTT_FACTORS = {"poll": 1.5, "longpoll": 2.0, **{t: 1.0 for t in PUSH_TRANSPORTS}}
"""Round trips a delivery's p99 pays, by theory (see the module's docstring)."""
ONE_WAY_FACTORS = {"poll": 1.0, "longpoll": 1.5, **{t: 0.5 for t in PUSH_TRANSPORTS}}
"""Round trips a delivery's p99 pays when its message does not cross the clients' network."""
OWN_POST_CONNECTION = frozenset({"sse", "longpoll"})
"""Transports whose sends go on an HTTP/1.1 connection of their own (short polling too, but its
tail is its interval's)."""
KEEP_ALIVE_S = 5.0
"""Seconds an idle HTTP/1.1 connection stays open on wirewise's uvicorn servers (uvicorn's
``timeout_keep_alive`` default, which they keep)."""
COLD_IN_P99 = 0.01
"""Share of sends opening a connection above which their extra round trip is in the p99."""
MIN_RTO_MS = 200.0
LOSS_IN_P99 = 0.75
"""Percent lost each way from which the retransmission stall reaches the p99 (by theory)."""
SWEEP = "wirewise bench --scenario chat --rtt 0 --rtt 50 --rtt 150 --rtt 300 --loss 0 --loss 2"


@dataclass(frozen=True)
class Added:
    """Milliseconds the network adds to a p99, and where the figure comes from."""

    ms: float
    source: str
    measured: bool


@dataclass(frozen=True)
class Curve:
    """p99 (ms) against one condition, from one run: points sorted by x, the first at 0."""

    run: str
    points: list[tuple[float, float]]
    cold_share: float = 0.0
    """Share of the measured sends that opened their connection (a user's first in the window)."""


@dataclass
class NetworkModel:
    """Each backend's chat p99 against RTT (the run with the most RTTs; the newest on a tie)
    and against loss at each RTT a run measured loss at (the newest), valid results only."""

    rtt: dict[str, Curve] = field(default_factory=dict)
    loss: dict[str, dict[float, Curve]] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: Iterable[tuple[str, Summary]]) -> NetworkModel:
        """``runs`` newest first (as :func:`wirewise.results.summaries` yields them)."""
        model = cls()
        for name, summary in runs:
            shares = cold_shares(summary)
            for label, found in chat_points(summary).items():
                model._learn(name, label, found, shares.get(label, 0.0))
        return model

    def _learn(
        self, run: str, label: str, found: dict[tuple[float, float], float], cold: float = 0.0
    ) -> None:
        curve = sorted((rtt, p99) for (rtt, loss), p99 in found.items() if not loss)
        known = self.rtt.get(label)
        if (
            len(curve) >= 2
            and curve[0][0] == 0
            and (known is None or len(curve) > len(known.points))
        ):
            self.rtt[label] = Curve(run, curve, cold)
        if label in self.loss:
            return
        lossy = sorted({rtt for rtt, loss in found if loss > 0 and (rtt, 0.0) in found})
        if lossy:
            self.loss[label] = {
                rtt: Curve(run, sorted((loss, p99) for (r, loss), p99 in found.items() if r == rtt))
                for rtt in lossy
            }

    def added_p99(
        self,
        label: str,
        transport: str,
        rtt_ms: float,
        loss_pct: float,
        send_interval_s: float | None = None,
        clients_send: bool = True,
    ) -> Added:
        """What ``rtt_ms`` and ``loss_pct`` add to ``label``'s p99. ``send_interval_s``: how
        often each client sends (None: as in the measured chat), which decides whether SSE's
        and long polling's send connection is warm; ``clients_send`` False: messages come from
        behind the servers (see the module's docstring)."""
        rtt = self._rtt(label, transport, rtt_ms)
        if rtt_ms > 0 and not clients_send:
            rtt = self._one_way(rtt, label, transport, rtt_ms)
        elif transport in OWN_POST_CONNECTION and rtt_ms > 0 and send_interval_s is not None:
            rtt = self._send_connection(rtt, label, transport, rtt_ms, send_interval_s)
        if loss_pct <= 0:
            return rtt
        loss = self._loss(label, rtt_ms, loss_pct)
        return Added(
            round(rtt.ms + loss.ms, 1),
            f"{rtt.source}; {loss.source}",
            rtt.measured and loss.measured,
        )

    def _rtt(self, label: str, transport: str, rtt_ms: float) -> Added:
        if rtt_ms <= 0:
            return Added(0.0, "no RTT added", True)
        curve = self.rtt.get(label)
        if curve is None:
            factor = RTT_FACTORS.get(transport, 1.0)
            return Added(
                round(factor * rtt_ms, 1),
                f"formula: {factor:g} x the {rtt_ms:g} ms RTT (no run measured {label} under an"
                f" added RTT: `{SWEEP}`)",
                False,
            )
        value, how = interpolate(curve.points, rtt_ms)
        measured = ", ".join(f"{r:g} ms: {p:,.1f}" for r, p in curve.points)
        return Added(
            round(value - curve.points[0][1], 1),
            f"{how} from chat/{label}'s p99 at each RTT in {curve.run} ({measured})",
            True,
        )

    def _one_way(self, rtt: Added, label: str, transport: str, rtt_ms: float) -> Added:
        """No client sends: the messages come from behind the servers and cross once."""
        floor = ONE_WAY_FACTORS.get(transport, 0.5) * rtt_ms
        curve = self.rtt.get(label)
        if not rtt.measured or curve is None:
            return Added(
                round(floor, 1),
                f"formula: {ONE_WAY_FACTORS.get(transport, 0.5):g} x the {rtt_ms:g} ms RTT, one"
                " way (clients never send: messages come from behind the servers)",
                False,
            )
        handshake = (
            rtt_ms if transport in OWN_POST_CONNECTION and curve.cold_share > COLD_IN_P99 else 0.0
        )
        less = "half an RTT" + (" and the handshake's RTT" if handshake else "")
        return Added(
            round(max(rtt.ms - rtt_ms / 2 - handshake, floor), 1),
            f"{rtt.source}, less {less}: clients never send here, so a message crosses the"
            f" network once, on its way down (never under {floor:g} ms, the one-way formula)",
            True,
        )

    def _send_connection(
        self, rtt: Added, label: str, transport: str, rtt_ms: float, interval: float
    ) -> Added:
        """The round trip a new send connection costs, as this workload pays it or not."""
        curve = self.rtt.get(label)
        every = f"each client sends every {interval:.3g} s"
        if interval < KEEP_ALIVE_S:
            if not rtt.measured or curve is None or curve.cold_share <= COLD_IN_P99:
                return rtt  # the formula and a warm measurement already assume a warm connection
            floor = RTT_FACTORS.get(transport, 1.0) * rtt_ms
            return Added(
                round(max(rtt.ms - rtt_ms, floor), 1),
                f"{rtt.source}, less one RTT: {curve.cold_share:.0%} of the measured sends opened"
                f" their connection, and their handshake's round trip is in that p99; {every},"
                f" within the servers' {KEEP_ALIVE_S:g} s keep-alive, so theirs stays open after a"
                " session's first send (sessions of over 100 sends keep that one out of the p99)",
                rtt.measured,
            )
        if rtt.measured and curve is not None and curve.cold_share > COLD_IN_P99:
            return Added(
                rtt.ms,
                f"{rtt.source}; {every}, past the servers' {KEEP_ALIVE_S:g} s keep-alive, so every"
                f" send opens its connection, as {curve.cold_share:.0%} did there (in that p99)",
                rtt.measured,
            )
        return Added(
            round(rtt.ms + rtt_ms, 1),
            f"{rtt.source}; + one RTT: {every}, past the servers' {KEEP_ALIVE_S:g} s keep-alive,"
            " so every send opens its connection and pays the handshake",
            False,
        )

    def _loss(self, label: str, rtt_ms: float, loss_pct: float) -> Added:
        curves = self.loss.get(label)
        if not curves:
            stall = MIN_RTO_MS if loss_pct >= LOSS_IN_P99 else 0.0
            return Added(
                stall,
                f"formula: {'+' if stall else 'no'} {MIN_RTO_MS:g} ms retransmission stall in the"
                f" p99 at {loss_pct:g} % lost each way (stalls reach the p99 from"
                f" {LOSS_IN_P99:g} %; no run measured {label} with loss)",
                False,
            )
        rtt = min(curves, key=lambda r: abs(r - rtt_ms))
        curve = curves[rtt]
        value, how = interpolate(curve.points, loss_pct)
        points = ", ".join(f"{loss:g} %: {p:,.1f}" for loss, p in curve.points)
        return Added(
            round(value - curve.points[0][1], 1),
            f"{how} from chat/{label}'s p99 at each loss at rtt {rtt:g} ms in {curve.run}"
            f" ({points})",
            True,
        )


def chat_points(summary: Summary) -> dict[str, dict[tuple[float, float], float]]:
    """label -> {(rtt ms, loss %): p99} of the run's valid chat results under conditions
    (neither jitter nor a bandwidth limit: the curves are of RTT and loss alone)."""
    points: dict[str, dict[tuple[float, float], float]] = {}
    for r in summary.results:
        c = r.conditions
        if r.scenario != "chat" or not r.valid or not c or r.latency_ms.p99 is None:
            continue
        if c.get("jitter_ms") or c.get("bandwidth_kbit"):
            continue
        key = (float(c.get("rtt_ms") or 0.0), float(c.get("loss_pct") or 0.0))
        points.setdefault(r.label, {})[key] = r.latency_ms.p99
    return points


def sends_per_user(result: Result) -> float:
    """Each user's sends in the measured window: ``rate x duration`` (0 when not recorded)."""
    params = result.parameters
    return float((params.get("rate_per_user") or 0) * (params.get("duration_s") or 0))


def cold_share(result: Result) -> float:
    """The share of a sender's sends that opened a connection: its first (the HTTP/1.1
    transports send on a second connection, opened at the first send) of those in the window."""
    sends = sends_per_user(result)
    return 1 / sends if sends >= 1 else 1.0


def cold_shares(summary: Summary) -> dict[str, float]:
    """label -> :func:`cold_share` of its chat results under conditions (the largest)."""
    shares: dict[str, float] = {}
    for r in summary.results:
        if r.scenario == "chat" and r.conditions:
            shares[r.label] = max(shares.get(r.label, 0.0), cold_share(r))
    return shares


def interpolate(curve: list[tuple[float, float]], x: float) -> tuple[float, str]:
    """y at ``x`` on the polyline ``curve`` (sorted by x, at least two points), and how:
    interpolated, or extended along the last segment past the highest x."""
    xs = [p[0] for p in curve]
    if x >= xs[-1]:
        (x0, y0), (x1, y1) = curve[-2], curve[-1]
        how = "measured" if x == xs[-1] else f"extrapolated past {x1:g} along the last segment"
    else:
        i = max(1, bisect.bisect_right(xs, x))
        (x0, y0), (x1, y1) = curve[i - 1], curve[i]
        how = "measured" if x in xs else "interpolated"
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0), how
