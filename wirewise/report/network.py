"""Network conditions (``bench --rtt/--loss/--bandwidth/--network``): each transport's delivery
latency under each condition, the path as measured, and the theory's predictions checked.

Every run of such a bench passes the same relay (``rtt 0`` included), so the difference between
two conditions is the condition's, not the relay's. Every Locust user is behind the path, the
senders too: a message crosses it twice, once up (the send) and once down (the delivery). The
predictions are written for that:

- push (sse, h2, ws): p50 = the rtt-0 p50 + RTT (half a round trip up, half down); the p99
  too, except where more than 1 % of sends open a connection: SSE's POSTs go on a connection
  of their own, opened at a user's first send, whose handshake makes that send reach the
  server 1.5 RTT after it left instead of 0.5 (in chat, 1 of each user's 10 sends: p99 =
  floor + 2 RTT). HTTP/2 sends on the stream's connection, WebSocket on its socket;
- short polling: the next poll leaves ``T`` after an answer, so polls reach the server every
  ``T + RTT``: p50 = the rtt-0 p50 + RTT (up and down) + RTT / 2 (half the longer period);
- long polling: after each answer the next poll is a round trip away, and what lands meanwhile
  waits for it (RFC 6202 §2.2): its p99 grows by about two round trips, a push transport's by one;
- loss: a lost segment with nothing behind it is resent after the retransmission timeout,
  200 ms at least on Linux, so the tail (the p99.9: a delivery meets a loss less often than
  its packets do, as a lost ACK stalls nothing and a tail-loss probe recovers some sooner)
  gains at least that over the same RTT without loss; a lost SYN waits the initial 1 s;
- bytes: per delivery, framing orders them: a WebSocket frame, an SSE event, a long poll's
  whole response; short polling pays its headers per poll, shared by the events it carries
  (dominant only where messages are rarer than polls, so it is shown, not ranked).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from wirewise.network_model import COLD_IN_P99, cold_share
from wirewise.report.blocks import Block, Figures, Heading, Para, Table
from wirewise.report.select import conditions, first_reason
from wirewise.report.text import num
from wirewise.results import Result

__all__ = ["Prediction", "network_blocks", "predictions"]

MIN_RTO_MS = 200.0
"""Linux's TCP_RTO_MIN: the least a retransmission timeout waits."""
PUSH = ("sse", "h2", "ws")


@dataclass(frozen=True)
class Prediction:
    """One prediction at one condition: what theory says, what was measured, whether it held."""

    what: str
    where: str
    expected: str
    measured: str
    held: bool | None
    """None: not checkable (an invalid result, or a point missing)."""


def baseline(results: list[Result], result: Result, *, rtt: float | None = None) -> Result | None:
    """The same scenario and backend at ``rtt`` (default: the same RTT) without loss, with the
    same jitter and bandwidth."""
    want_rtt, _, jitter, bandwidth = conditions(result)
    want_rtt = want_rtt if rtt is None else rtt
    for other in results:
        if (other.scenario, other.label) != (result.scenario, result.label):
            continue
        o_rtt, o_loss, o_jitter, o_bw = conditions(other)
        if (o_rtt, o_loss, o_jitter, o_bw) == (want_rtt, 0.0, jitter, bandwidth):
            return other
    return None


def _check(
    what: str,
    result: Result,
    base: Result | None,
    key: str,
    expected_delta: float,
    held: Callable[[float, float], bool],
    expected_text: str,
) -> Prediction:
    """``result``'s percentile ``key`` against ``base``'s plus ``expected_delta``."""
    where = f"{result.scenario}/{result.label} at {result.network}"
    if base is None:
        return Prediction(what, where, expected_text, "no rtt-0 point in this run", None)
    a, b = getattr(result.latency_ms, key), getattr(base.latency_ms, key)
    if a is None or b is None or not (result.valid and base.valid):
        reason = "invalid" if not (result.valid and base.valid) else "nothing timed"
        return Prediction(what, where, expected_text, reason, None)
    expected = b + expected_delta
    return Prediction(
        what,
        where,
        f"{expected_text} = {expected:,.1f}",
        f"{key} {a:,.1f} (+{a - b:,.1f} over {base.network})",
        held(a, expected),
    )


def near(tolerance: float) -> Callable[[float, float], bool]:
    """Within ``tolerance`` of the expectation (a fraction of it), or 3 ms."""

    def held(measured: float, expected: float) -> bool:
        return abs(measured - expected) <= max(tolerance * expected, 3.0)

    return held


def at_least(slack: float) -> Callable[[float, float], bool]:
    """No less than the expectation less ``slack`` ms."""

    def held(measured: float, expected: float) -> bool:
        return measured >= expected - slack

    return held


def _push_tail(r: Result, zero: Result | None, rtt: float) -> Prediction:
    """A push transport's p99: one RTT, or two where more than 1 % of sends open a connection
    (SSE's POSTs go on a connection of their own, and a new one pays its handshake: the send
    reaches the server 1.5 RTT after it left, not 0.5)."""
    if r.transport == "sse" and cold_share(r) > COLD_IN_P99:
        return _check(
            f"SSE p99 = floor + 2 RTT ({cold_share(r):.0%} of sends open their connection)",
            r, zero, "p99", 2 * rtt, near(0.15), f"p99 at rtt 0 + 2 x {rtt:g}",
        )  # fmt: skip
    return _check(
        "push p99 = floor + RTT (sends on the held connection)", r, zero, "p99", rtt,
        near(0.15), f"p99 at rtt 0 + {rtt:g}",
    )  # fmt: skip


def _delay(r: Result, zero: Result | None, rtt: float) -> list[Prediction]:
    """What a round trip without loss adds to each kind of transport."""
    if r.transport in PUSH:
        return [
            _check("push p50 = floor + RTT", r, zero, "p50", rtt, near(0.15), f"p50 at rtt 0 + {rtt:g}"),
            _push_tail(r, zero, rtt),
        ]  # fmt: skip
    if r.transport == "poll":
        return [_check(
            "short-poll p50 = floor + 1.5 RTT", r, zero, "p50", 1.5 * rtt, near(0.15),
            f"p50 at rtt 0 + 1.5 x {rtt:g}",
        )]  # fmt: skip
    if r.transport == "longpoll":
        return [_check(
            "long-poll p99 grows by two round trips", r, zero, "p99", 2 * rtt,
            at_least(0.25 * rtt), f"p99 at rtt 0 + 2 x {rtt:g}",
        )]  # fmt: skip
    return []


def _loss(r: Result, results: list[Result], rtt: float) -> Prediction:
    """A lost segment with nothing behind it waits for the retransmission timeout."""
    key = "p999"  # where the stalls are at every loss measured: the p99 only from ~2 %
    return _check(
        f"loss adds a retransmission stall to the {key}", r, baseline(results, r), key,
        MIN_RTO_MS, at_least(0.1 * MIN_RTO_MS), f"{key} at {rtt:g} ms without loss + {MIN_RTO_MS:g}",
    )  # fmt: skip


def predictions(results: list[Result]) -> list[Prediction]:
    """Every prediction the run's conditions can check (see the module's docstring)."""
    found: list[Prediction] = []
    for r in results:
        rtt, loss, jitter, _ = conditions(r)
        if loss == 0 and rtt > 0 and not jitter:
            found += _delay(r, baseline(results, r, rtt=0.0), rtt)
        if loss > 0 and r.transport != "poll":
            found.append(_loss(r, results, rtt))
    return found + _bytes_order(results)


def _bytes_order(results: list[Result]) -> list[Prediction]:
    """Wire bytes down per delivery at each condition: a WebSocket frame < an SSE event < a
    long poll's whole response (one per delivery at chat's rates). Short polling is shown,
    not ranked: its headers are per poll, shared by every event the poll carries, so it
    dominates only where messages are rarer than polls."""
    found = []
    order = ("ws", "sse", "longpoll")
    for network in dict.fromkeys(r.network for r in results):
        chat = {
            r.transport: r.bytes_per_message.wire.get("down")
            for r in results
            if r.network == network and r.scenario == "chat" and r.server == "uvicorn"
        }
        values = [chat.get(t) for t in order]
        if any(v is None for v in values):
            continue
        measured = " < ".join(f"{t} {num(v, 0)}" for t, v in zip(order, values, strict=True))
        if chat.get("poll") is not None:
            measured += f" (poll {num(chat['poll'], 0)})"
        held = all(a < b for a, b in itertools.pairwise(values))  # type: ignore[operator]
        found.append(
            Prediction(
                "wire bytes per delivery ordered by framing",
                f"chat at {network}",
                "ws < sse < longpoll",
                measured,
                held,
            )
        )
    return found


def network_table(results: list[Result]) -> Table:
    rows = []
    for r in results:
        path = r.path or {}
        parts = r.parts_cpu_ms_per_1k_msgs or {}
        rows.append(
            [
                f"{r.scenario}/{r.label}",
                r.network,
                "yes" if r.valid else f"no: {first_reason(r)}",
                num(path.get("added_rtt_ms"), 1) if not path.get("skipped") else "not probed",
                num(r.latency_ms.p50, 2),
                num(r.latency_ms.p99, 2),
                num(r.latency_ms.p999, 2),
                num(r.latency_ms.count),
                num(r.bytes_per_message.wire.get("down"), 0),
                num(r.server_cpu_ms_per_1k_msgs, 1),
                num(parts.get("relay"), 1),
            ]
        )
    return Table(
        ["scenario/transport", "network", "valid", "RTT added, measured ms", "p50 ms", "p99 ms",
         "p99.9 ms", "samples", "wire bytes down/delivery", "server CPU ms/1k", "relay CPU ms/1k"],
        rows,
        align="lll" + "r" * 8,
        note="Every run passes the same relay (wirewise/relay.py), rtt 0 included, so two rows"
        " differ by their condition only. RTT added, measured: a GET /healthz round trip through"
        " the path minus the same straight to the server (median of 20, kept alive). Loss and"
        " bandwidth are applied in a network namespace between the relay and the server (tbf,"
        " iptables); the relay's TCP to the server has a round trip near zero, so a loss there"
        " costs a retransmission timeout, not an extra RTT.",
        invalid_rows={i for i, r in enumerate(results) if not r.valid},
    )  # fmt: skip


def held_text(held: bool | None) -> str:
    return "not checked" if held is None else ("yes" if held else "NO")


def predictions_table(found: list[Prediction]) -> Table:
    return Table(
        ["prediction", "where", "expected ms", "measured ms", "held"],
        [
            [
                p.what,
                p.where,
                p.expected,
                p.measured,
                "not checked" if p.held is None else ("yes" if p.held else "NO"),
            ]
            for p in found
        ],
        align="lllll",
        note="Tolerance: push and short polling within 15 % of the expectation or 3 ms; long"
        " polling at least 2 RTT less a quarter RTT; loss at least 90 % of the 200 ms minimum"
        " RTO. Each check compares runs of this bench, interleaved.",
    )


NETWORK_TEXT = (
    "The same scenarios with conditions between Locust and the server. Every user is behind the"
    " path, senders included, so a message crosses it twice (its send up, its delivery down):"
    " a push transport's delivery pays one RTT, and every prediction below is written for that."
)


def network_blocks(results: list[Result], figures: Figures) -> list[Block]:
    """The section, when the run measured network conditions."""
    if not results:
        return []
    blocks: list[Block] = [
        Heading(2, "Network conditions", "network"),
        Para(NETWORK_TEXT),
        network_table(results),
    ]
    blocks += figures.place("network-rtt", "network-loss")
    found = predictions(results)
    if found:
        blocks.append(Heading(3, "Predictions checked", "predictions"))
        blocks.append(predictions_table(found))
    return blocks
