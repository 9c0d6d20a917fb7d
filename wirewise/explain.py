"""``wirewise explain``: short, correct answers for learners, quoting measured figures.

Each topic is a few paragraphs of plain text. Where a figure of a results run bears on the
answer, it is quoted with the result it comes from (``chat/ws``: scenario/backend), and only
from a valid result: an invalid one measured the load generator or a lower bound, not the
transport. Where no valid figure exists, the text says which command would measure it, rather
than quoting a number from elsewhere.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from wirewise.decide import results_dirs
from wirewise.network_model import sends_per_user
from wirewise.registry import backend
from wirewise.report.deployments import hop
from wirewise.report.select import first_reason
from wirewise.results import Result, Summary, summaries

__all__ = ["TOPICS", "Facts", "Topic", "explain"]


@dataclass(frozen=True)
class Topic:
    name: str
    title: str
    write: Callable[[Facts], str]


class Facts:
    """The valid results of a run, looked up by scenario and backend label (``ws@websockets``)."""

    def __init__(self, summary: Summary | None, run: str = "", note: str = "") -> None:
        self.summary = summary
        self.run = run
        self.note = note

    def find(self, scenario: str, label: str) -> Result | None:
        if self.summary is None:
            return None
        return self.summary.find(scenario, label)

    def valid(self, scenario: str, label: str) -> Result | None:
        result = self.find(scenario, label)
        return result if result is not None and result.valid else None

    def why_not(self, scenario: str, label: str) -> str:
        """Why ``scenario/label`` is not quoted."""
        result = self.find(scenario, label)
        where = f"{scenario}/{label}"
        if self.summary is None:
            return f"{where}: no results run"
        if result is None:
            return f"{where} is not in this run"
        if not result.valid:
            why = result.validity.reasons[0] if result.validity.reasons else "no reason recorded"
            return f"{where} is invalid: {why}"
        return f"{where} lacks the figure"

    def missing(self, what: str, scenario: str, label: str) -> str:
        command = f"wirewise bench --scenario {scenario} --transport {backend(label).transport}"
        return f"({what}: {self.why_not(scenario, label)}; `{command}` measures it.)"

    def ms(self, scenario: str, label: str, key: str = "p50") -> str | None:
        """A latency percentile with its source, or None."""
        result = self.valid(scenario, label)
        value = None if result is None else getattr(result.latency_ms, key)
        return None if value is None else f"{value:,.1f} ms ({scenario}/{label})"

    def per_connection(self, label: str) -> tuple[float, str] | None:
        """(RSS + kernel bytes per idle connection, its text with its source), or None."""
        result = self.valid("idle", label)
        if result is None or result.memory_per_connection.rss_bytes is None:
            return None
        rss = result.memory_per_connection.rss_bytes
        kernel = result.memory_per_connection.kernel_bytes
        text = f"{rss / 1024:.1f} KiB"
        if kernel is not None:
            text += f" (+{kernel / 1024:.1f} KiB in the kernel)"
        return rss + (kernel or 0), f"{text} (idle/{label})"

    def source(self) -> str:
        if self.summary is None:
            why = f" ({self.note})" if self.note else ""
            return f"No results run was read{why}: `wirewise bench --quick` measures these figures."
        meta = self.summary.metadata
        invalid = sum(not r.valid for r in self.summary.results)
        return (
            f"Figures: run {self.run or '?'} ({meta.get('started_at', '?')},"
            f" {meta.get('cpu_model', '?')}, {meta.get('cores', '?')} cores), each with its"
            " result (scenario/backend)"
            + (
                f"; its {invalid} invalid result(s) are not quoted (`wirewise report` says why)."
                if invalid
                else "."
            )
        )


def _upgrade(f: Facts) -> str:
    send = f.ms("chat", "ws")
    measured = (
        f"Measured: once connected, a chat message reached its room in {send} at the median"
        " over WebSocket."
        if send
        else f.missing("WebSocket chat latency", "chat", "ws")
    )
    return (
        "A WebSocket starts as an ordinary HTTP/1.1 GET with `Connection: Upgrade`, `Upgrade: websocket`\n"
        "and a random `Sec-WebSocket-Key`; the server answers `101 Switching Protocols` with\n"
        "`Sec-WebSocket-Accept` (SHA-1 of the key plus a fixed GUID, base64), and from then on the same\n"
        "TCP connection carries frames both ways.\n\n"
        "Because the handshake is a normal HTTP request, everything HTTP already does for auth carries\n"
        "over: cookies, an `Authorization` header (from non-browser clients) or a token in the query\n"
        "string (browsers cannot set headers on `new WebSocket()`). The server checks them, and the\n"
        "`Origin` header, before it answers 101; a refusal is an ordinary 401/403. wirewise checks the\n"
        "same token on every transport, and refuses foreign origins with 403 `forbidden_origin`: a\n"
        "browser sends cookies with cross-site WebSocket handshakes, so skipping the Origin check invites\n"
        "cross-site WebSocket hijacking.\n\n"
        "After the upgrade there are no more requests, so per-message auth is up to your protocol; a\n"
        "token that expires mid-connection needs the server to close the socket (or re-check on a timer).\n\n"
        f"{measured}\n"
    )


def _format(f: Facts) -> str:
    return (
        "WebSockets, SSE and polling give you a pipe, not a language. You still need: message types\n"
        "(`send_message`, `new_message`, `user_joined`...), ids so a client can resume after a drop\n"
        "(`after=17` / `Last-Event-ID`), idempotency keys so a retried send is stored once\n"
        "(`client_msg_id`), acknowledgements (a WebSocket `send()` returning means the bytes left, not\n"
        "that the server stored them), error codes a program can act on (`rate_limited`,\n"
        "`slow_consumer`), and explicit loss (`gap`) when the history you kept is not enough.\n\n"
        "SSE gives you ids and reconnection for free; a WebSocket gives you none of it, which is why\n"
        "libraries such as Socket.IO exist. wirewise defines one JSON format for every transport, so\n"
        "that the benchmark compares transports and nothing else.\n"
    )


def cluster_runs(bases: Iterable[Path]) -> list[tuple[str, Summary]]:
    """Runs whose servers were several processes (a failover, ``--instances``), newest first;
    the single-process reference run is not among them."""
    return [(name, summary) for name, summary in summaries(bases) if _clustered(summary)]


def _clustered(summary: Summary) -> bool:
    plan = summary.metadata.get("plan") or {}
    killing = {"failover", "rolling"} & set(plan.get("scenarios") or ())
    return (plan.get("instances") or 1) > 1 or bool(killing)


def _newest(
    runs: list[tuple[str, Summary]], keep: Callable[[Result], bool]
) -> tuple[str, list[Result]]:
    for name, summary in runs:
        results = [r for r in summary.results if r.valid and keep(r)]
        if results:
            return name, results
    return "", []


def _span(values: list[float], unit: str, digits: int = 0) -> str:
    low, high = min(values), max(values)
    if f"{low:.{digits}f}" == f"{high:.{digits}f}":
        return f"{low:,.{digits}f} {unit}"
    return f"{low:,.{digits}f}-{high:,.{digits}f} {unit}"


def cluster_sentences(runs: list[tuple[str, Summary]]) -> list[str]:
    """What the measured cluster runs say: a kill, the extra hop, stickiness."""
    said = []
    name, killed = _newest(runs, lambda r: r.scenario == "failover" and bool(r.faults))
    back = [
        r.faults["reconnect_ms"] for r in killed if r.faults and r.faults["reconnect_ms"]["count"]
    ]
    if back:
        lost = sum(r.deliveries.lost + r.deliveries.duplicated for r in killed)
        said.append(
            f"Measured ({name}, failover): one of three instances behind HAProxy killed with"
            f" SIGKILL; its clients were back through the balancer in p50"
            f" {_span([b['p50'] for b in back], 'ms')} (max {_span([b['max'] for b in back], 'ms')})"
            f" over {len(back)} backends, with {lost} deliveries lost or duplicated, because"
            " the history they resumed from was in Redis."
        )
    pairs = _compared(runs, "single")
    for scenario in sorted({own.scenario for own, _, _ in pairs}):
        rows = [row for row in pairs if row[0].scenario == scenario]
        said.append(
            f"Measured ({scenario}, {_names(rows)}, each run comparing both): the balancer and"
            f" Redis added {_differences(rows, +1)} to the delivery p50 against one process."
        )
    pairs = _compared(runs, "sticky")
    if pairs:
        said.append(
            f"Sticky sessions against round robin ({_names(pairs)}), the p50 sticky minus round"
            f" robin: {_differences(pairs, -1)};"
            " with the history shared, stickiness is an option, not a need."
        )
    return said


def _differences(rows: list[tuple[Result, Result, str]], sign: int) -> str:
    """The significant p50 differences (95 % intervals apart) as a signed range over their
    backends, and which backends differed by no more than noise."""
    apart, noise = [], []
    for own, other, _ in rows:
        found = hop(own, other, "p50")
        if found is not None and found[1]:
            apart.append(sign * found[0])
        else:
            noise.append(own.label)
    text = (
        f"{min(apart):+,.1f} to {max(apart):+,.1f} ms over {len(apart)} of {len(rows)} backends"
        if len(apart) > 1
        else f"{apart[0]:+,.1f} ms on one of {len(rows)} backends"
        if apart
        else f"nothing beyond noise on {len(rows)} backends"
    )
    if apart and noise:
        text += f" (not significant: {', '.join(sorted(noise))})"
    return text


def _compared(runs: list[tuple[str, Summary]], variant: str) -> list[tuple[Result, Result, str]]:
    """(the run's own result, the same scenario and backend on ``variant``, the run), the
    newest run's pair for each scenario and backend, both valid with a p50."""
    found: dict[tuple[str, str], tuple[Result, Result, str]] = {}
    for name, summary in runs:
        own = {(r.scenario, r.label): r for r in summary.results if not r.variant and r.valid}
        for other in summary.results:
            key = (other.scenario, other.label)
            mine = own.get(key)
            if (
                other.variant == variant
                and other.valid
                and mine is not None
                and key not in found
                and mine.latency_ms.p50 is not None
                and other.latency_ms.p50 is not None
            ):
                found[key] = (mine, other, name)
    return list(found.values())


def _names(rows: list[tuple[Result, Result, str]]) -> str:
    return ", ".join(sorted({name for _, _, name in rows}))


def _load_balancing(f: Facts) -> str:
    measured = cluster_sentences(cluster_runs(results_dirs()))
    cluster = (
        "\n" + textwrap.fill(" ".join(measured), 96)
        if measured
        else "\n(No cluster run was found: `wirewise bench --scenario failover` and `wirewise"
        " bench --scenario chat --instances 3 --baseline --sticky both` measure it.)"
    )
    return (
        "Long-lived connections break the assumptions of request load balancing: a connection\n"
        "stays on the server it first reached, so least-connections (not round-robin) balances best;\n"
        "a new server gets no traffic until clients reconnect; and a deploy or crash drops every\n"
        "connection of a server at once (a reconnect storm: jittered backoff on the clients, and a\n"
        "server that can take the burst).\n\n"
        "Users of one room land on different servers, so fan-out needs a broker between servers\n"
        "(Redis pub/sub or streams, NATS, Kafka): each server subscribes to the rooms its clients are\n"
        "in. Resume then needs ids that mean the same on every server (a shared stream id), or a\n"
        "reconnect to another server cannot replay from `after`.\n\n"
        "Proxies need long idle timeouts (or heartbeats shorter than them: wirewise sends an SSE\n"
        "comment every 15 s), and for WebSockets they must pass the Upgrade (nginx:\n"
        "`proxy_http_version 1.1` and the Upgrade/Connection headers). Sticky sessions are only\n"
        "needed by protocols that spread one session over several requests (Socket.IO's polling).\n"
        + cluster
        + "\n"
    )


def proxy_runs(bases: Iterable[Path]) -> dict[str, tuple[str, Summary]]:
    """The newest run through each nginx profile (``bench --proxy``)."""
    found: dict[str, tuple[str, Summary]] = {}
    for name, summary in summaries(bases, mentioning='"proxy": "'):
        profile = (summary.metadata.get("plan") or {}).get("proxy")
        chat = any(r.scenario == "chat" for r in summary.results)
        if profile and chat and profile not in found:
            found[profile] = (name, summary)
    return found


def fallback_sentence(bases: Iterable[Path]) -> str | None:
    """The newest fallback run's finding: what the users settled on and what it cost them."""
    for name, summary in summaries(bases, mentioning='"fallback": {'):
        for r in summary.results:
            found = r.fallback
            if r.scenario != "fallback" or r.variant or not r.valid or not found:
                continue
            lost, first = found["lost_ms"], found["first_message_ms"]
            settled = ", ".join(f"{n:,} on {t}" for t, n in found["settled"].items())
            proxy = (r.deployment or {}).get("proxy") or "no proxy"
            return (
                f"The fallback client ({name}, behind {proxy}, {found['clients']:,} users trying"
                f" {', '.join(found['order'])}): {settled}; the failed steps cost p50"
                f" {lost['p50']:,.0f} ms (p99 {lost['p99']:,.0f}), the first message came p50"
                f" {first['p50']:,.0f} ms after the first attempt (p99 {first['p99']:,.0f}),"
                f" figures of the first of {len(r.repeats)} repeat(s), users ramping up."
            )
    return None


def network_sentence(bases: Iterable[Path], labels: tuple[str, ...]) -> str | None:
    """Chat p50/p99 per RTT for ``labels`` from the network sweep with the most RTTs (the
    newest on a tie; ``bench --rtt``)."""
    found = best_sweep(bases, labels)
    if found is None:
        return None
    name, rows = found
    parts = []
    for label in labels:
        points = sorted(
            ((float(r.conditions.get("rtt_ms") or 0), r) for r in rows if r.label == label),
            key=lambda point: point[0],
        )
        each = ", ".join(
            f"{r.latency_ms.p50:,.0f}/{r.latency_ms.p99 or 0:,.0f} at {rtt:g}" for rtt, r in points
        )
        if each:
            parts.append(f"{label} {each}")
    return (
        f"Chat p50/p99 ms at each RTT added ({name}, every point through the same relay):"
        f" {'; '.join(parts)}."
    )


def best_sweep(bases: Iterable[Path], labels: tuple[str, ...]) -> tuple[str, list[Result]] | None:
    """(run, its valid chat results for ``labels`` without loss) of the network sweep with the
    most RTTs, the newest on a tie."""
    best: tuple[int, str, list[Result]] | None = None
    for name, summary in summaries(bases, mentioning='"rtt_ms"'):
        rows = [
            r for r in summary.results
            if r.scenario == "chat" and r.label in labels and r.valid and r.conditions
            and not r.conditions.get("loss_pct") and r.latency_ms.p50 is not None
        ]  # fmt: skip
        rtts = len({r.conditions.get("rtt_ms") for r in rows})
        if rtts >= 2 and (best is None or rtts > best[0]):
            best = (rtts, name, rows)
    return None if best is None else (best[1], best[2])


def proxy_sentences(runs: dict[str, tuple[str, Summary]]) -> list[str]:
    """Per profile: chat over SSE and WebSocket through nginx, as measured."""
    said = []
    for profile, (name, summary) in sorted(runs.items()):
        parts = []
        for label in ("sse", "longpoll", "ws"):
            result = summary.find("chat", label)
            if result is None:
                continue
            if result.valid and result.latency_ms.p50 is not None:
                parts.append(f"{label} p50 {result.latency_ms.p50:,.2f} ms")
            else:
                parts.append(f"{label} failed ({first_reason(result)})")
        if parts:
            said.append(f"{profile} ({name}): {', '.join(parts)}.")
    return said


def _proxy_findings(runs: dict[str, tuple[str, Summary]]) -> list[str]:
    """What the runs show, said only when they show it."""

    def chat(profile: str, label: str) -> Result | None:
        found = runs.get(profile)
        return found[1].find("chat", label) if found else None

    said = []
    buffered = chat("nginx-buffered", "sse")
    if buffered is not None and buffered.valid and (buffered.latency_ms.p50 or 1e9) < 50:
        said.append(
            "Buffering held no SSE event even with the server's `X-Accel-Buffering: no`"
            " ignored (nginx-buffered): nginx forwarded each event as it came."
        )
    tuned = chat("nginx-tuned", "ws")
    refused = [p for p in ("nginx-default", "no-upgrade") if (r := chat(p, "ws")) and not r.valid]
    if tuned is not None and tuned.valid and refused:
        said.append(
            f"WebSockets failed through {' and '.join(refused)} and worked through nginx-tuned:"
            " what breaks them is the missing Upgrade."
        )
    return said


def _proxies(f: Facts) -> str:
    runs = proxy_runs(results_dirs())
    measured = proxy_sentences(runs)
    through = (
        "\nMeasured through nginx, chat (`wirewise bench --proxy P`): "
        + " ".join([*measured, *_proxy_findings(runs)])
        + "\n"
        if measured
        else "\n(No run through nginx was found: `wirewise bench --scenario chat --proxy"
        " nginx-default` measures it.)\n"
    )
    return (
        "Corporate proxies and middleboxes are why 'just use WebSockets' sometimes fails in the\n"
        "field. An HTTP proxy that does not understand Upgrade drops or refuses the handshake; TLS\n"
        "(`wss://`) hides the upgrade from proxies that do not inspect traffic, which is why\n"
        "WebSockets over TLS get through far more often than over plain HTTP. Some inspecting\n"
        "proxies still break them.\n\n"
        "SSE and long polling are plain HTTP responses, so they pass wherever HTTP passes, if the\n"
        "proxy does not buffer the response (SSE sends `Cache-Control: no-store` and nginx's\n"
        "`X-Accel-Buffering: no`) and does not cut long responses (heartbeats keep it alive).\n"
        "Short polling passes everything. That is the fallback ladder Socket.IO and SignalR use:\n"
        "try WebSocket, fall back to SSE or long polling. `wirewise decide --proxy-blocks-upgrade`\n"
        "ranks transports for such a network.\n"
        + textwrap.fill(through, 96, replace_whitespace=False, break_on_hyphens=False)
        + _fallback_text()
    )


def _fallback_text() -> str:
    found = fallback_sentence(results_dirs())
    if found is None:
        return (
            "\n(No fallback run was found: `wirewise bench --scenario fallback --proxy no-upgrade`"
            " measures what the ladder costs.)\n"
        )
    return "\n" + textwrap.fill(found, 96, break_on_hyphens=False) + "\n"


def _http3(f: Facts) -> str:
    return (
        "HTTP/3 runs HTTP over QUIC (UDP) instead of TCP: streams do not block each other when a\n"
        "packet is lost (no TCP head-of-line blocking), connections set up in fewer round trips, and\n"
        "a connection survives a change of network (Wi-Fi to mobile) thanks to connection ids. SSE\n"
        "and POSTs work over it unchanged; WebSockets over HTTP/3 exist as RFC 9220 but are rarely\n"
        "deployed; WebTransport is the HTTP/3-native successor for bidirectional streams and\n"
        "datagrams. UDP is blocked on some networks, so clients fall back to HTTP/2 over TCP.\n\n"
        "wirewise does not measure HTTP/3 (the Python servers it uses do not serve it); on loopback\n"
        "with no packet loss its benefits would not show anyway: they are about lossy, changing\n"
        "networks.\n"
    )


MEMORY_ROWS = (
    ("tcp", "raw TCP (the floor)"),
    ("ws@websockets", "WebSocket, bare websockets server"),
    ("ws", "WebSocket, uvicorn"),
    ("sse", "SSE, uvicorn"),
    ("h2", "HTTP/2 stream, hypercorn"),
    ("longpoll", "held long poll"),
    ("poll", "short polling (keep-alive)"),
)


def _memory(f: Facts) -> str:
    rows, absent = [], []
    worst: tuple[float, str] | None = None
    for label, name in MEMORY_ROWS:
        found = f.per_connection(label)
        if found is None:
            absent.append(f"  {name:<34} not quoted: {f.why_not('idle', label)}")
            continue
        rows.append(f"  {name:<34} {found[1]}")
        if worst is None or found[0] > worst[0]:
            worst = (found[0], label)
    if absent:
        rows += [*absent, "  (`wirewise bench --scenario idle` measures them.)"]
    if worst is not None:
        scale = (
            f"Multiply by your connection count before worrying: 10,000 connections at the"
            f" largest figure here ({worst[0] / 1024:.1f} KiB, idle/{worst[1]}) are"
            f" {worst[0] * 10_000 / (1 << 20):,.0f} MiB."
        )
    else:
        scale = "Multiply by your connection count: each KiB per connection is 10 MiB at 10,000."
    return (
        "Every open connection costs memory twice: in the kernel (the socket and its buffers) and in\n"
        "the server process (the framework's objects for it: a protocol object, buffers, a task or\n"
        "coroutine, your subscription queue). The push transports pay it for as long as a client is\n"
        "connected; polling pays only per-client state between requests.\n\n"
        "Measured per idle connection (slope of RSS against clients):\n"
        + "\n".join(rows)
        + f"\n\n{scale}\n"
        "The limits that bite first are often file descriptors (one per socket) and, in Python, one\n"
        "core per process: scale out with more processes behind a load balancer.\n"
    )


def _http2(f: Facts) -> str:
    found, absent = [], []
    for label, name in (("h2", "HTTP/2"), ("sse", "SSE over HTTP/1.1"), ("ws", "WebSocket")):
        value = f.ms("chat", label)
        if value:
            found.append(f"{name} {value}")
        else:
            absent.append(f.missing(f"{name} chat latency", "chat", label))
    measured = ("Measured chat p50: " + ", ".join(found) + ".") if found else ""
    h2, sse = f.valid("chat", "h2"), f.valid("chat", "sse")
    cpu_h2 = h2.server_cpu_ms_per_1k_msgs if h2 else None
    cpu_sse = sse.server_cpu_ms_per_1k_msgs if sse else None
    if cpu_h2 is not None and cpu_sse is not None:
        measured += (
            f" Server CPU per 1,000 messages: HTTP/2 {cpu_h2:,.0f} ms (chat/h2) vs SSE"
            f" {cpu_sse:,.0f} ms (chat/sse)"
            + (" (hypercorn's pure-Python HTTP/2)." if cpu_h2 > cpu_sse else ".")
        )
    return (
        "HTTP/2 multiplexes many requests on one connection, so an SSE stream and the POSTs that\n"
        "send messages share one TCP (and TLS) connection, and the browser's six-connections-per-host\n"
        "limit on HTTP/1.1 (which caps SSE tabs) disappears. It is not full duplex for one request,\n"
        "though: each message up is still a POST with headers (compressed by HPACK), and server push\n"
        "is gone from browsers. RFC 8441 lets a WebSocket ride an HTTP/2 stream, which few servers do.\n\n"
        "So HTTP/2 makes SSE + POST much better, and for server-to-client feeds it removes most reasons\n"
        "to reach for WebSockets; for chatty client-to-server traffic (games, collaborative editing),\n"
        "a WebSocket frame is still cheaper than a request. Browsers speak HTTP/2 only over TLS.\n\n"
        + "\n".join(line for line in (measured.strip(), *absent) if line)
        + "\n"
    )


def _sse_vs_ws(f: Facts) -> str:
    lines, absent = [], []
    for scenario in ("chat", "broadcast", "game"):
        sse, ws = f.valid(scenario, "sse"), f.valid(scenario, "ws")
        if sse is None or ws is None:
            absent.append(
                f"  {scenario:<9} not quoted: {f.why_not(scenario, 'ws' if sse else 'sse')}"
            )
            continue
        p50_sse, p50_ws = sse.latency_ms.p50, ws.latency_ms.p50
        b_sse, b_ws = sse.bytes_per_message, ws.bytes_per_message
        if p50_sse is None or p50_ws is None or b_sse.down is None or b_ws.down is None:
            absent.append(f"  {scenario:<9} not quoted: {scenario}/sse or {scenario}/ws lacks it")
            continue
        lines.append(
            f"  {scenario:<9} p50 SSE {p50_sse:,.1f} ms vs WS {p50_ws:,.1f} ms; bytes down"
            f" {b_sse.down:,.0f} vs {b_ws.down:,.0f}, up {b_sse.up or 0:,.0f} vs {b_ws.up or 0:,.0f}"
            f" ({scenario}/sse, {scenario}/ws)"
        )
    if absent:
        lines += [
            *absent,
            "  (`wirewise bench --scenario chat --scenario broadcast --scenario game"
            " --transport sse --transport ws` measures them.)",
        ]
    memory, unmeasured = [], []
    for label in ("sse", "ws"):
        found = f.per_connection(label)
        if found:
            memory.append(f"{label} {found[1]}")
        else:
            memory.append(f"{label} not quoted ({f.why_not('idle', label)})")
            unmeasured.append(label)
    if unmeasured:
        transports = " ".join(f"--transport {label}" for label in unmeasured)
        memory.append(f"`wirewise bench --scenario idle {transports}` measures it")
    return (
        "SSE is one long HTTP response the server writes events into; the client sends with ordinary\n"
        "requests. It gives you reconnection and resume (`Last-Event-ID`) for free, passes proxies\n"
        "as plain HTTP, and needs nothing but `EventSource` in the browser. Its limits: text only,\n"
        "one direction, and on HTTP/1.1 a browser allows six connections per host (HTTP/2 lifts it).\n\n"
        "A WebSocket is full duplex with 2-14 bytes of framing per message, binary or text; you build\n"
        "resume, acks and reconnection yourself. It wins when clients send often: each send is a\n"
        "frame, not a request with headers.\n\n"
        "Measured (p50; bytes per message down per delivery, up per send):\n"
        + "\n".join(lines)
        + f"\nMemory per idle connection: {'; '.join(memory)}.\n"
        "Rule of thumb: server-to-client mostly, SSE; both directions often, WebSocket.\n"
        + _sse_network_text()
    )


def _sse_network_text() -> str:
    """Under a round trip SSE's sends pay for their own connection; measured where swept."""
    labels = ("sse", "h2", "ws")
    found = network_sentence(results_dirs(), labels)
    sweep = best_sweep(results_dirs(), labels)
    sends = max(
        (sends_per_user(r) for r in (sweep[1] if sweep else []) if r.label == "sse"), default=0.0
    )
    text = (
        "On a real network a pushed delivery pays one round trip when its sender is a client (half"
        " up, half down), half when it comes from behind the server. SSE's sends go on an HTTP/1.1"
        " connection of their own, and a new one costs one more round trip for its handshake: every"
        " send pays it when clients send less often than the server's keep-alive (uvicorn: 5 s), and"
        " a session's first send always. HTTP/2 puts the POSTs on the stream's connection, a"
        " WebSocket on its socket, so theirs never do."
    )
    if found:
        text += f" {found}"
    if found and sends >= 1:
        text += (
            f" In that chat each user's first send opened the connection, 1 of {sends:.0f}: that"
            " is SSE's second round trip in the p99. `wirewise decide --rtt-ms` reads it against"
            " the workload's send rate."
        )
    return "\n" + textwrap.fill(text, 96, break_on_hyphens=False) + "\n"


def _polling(f: Facts) -> str:
    poll = f.valid("chat", "poll")
    p50 = poll.latency_ms.p50 if poll else None
    interval = poll.parameters.get("poll_interval_s") if poll else None
    if p50 is not None and interval:
        ws = f.ms("chat", "ws")
        measured = (
            f"Measured: with a {interval:g} s interval, short polling's p50 was {p50:,.0f} ms"
            f" (chat/poll; theory: half the\ninterval, {interval * 500:,.0f} ms)"
            + (
                f", against {ws} for a WebSocket.\n"
                if ws
                else f".\n{f.missing('WebSocket chat latency', 'chat', 'ws')}\n"
            )
        )
    else:
        measured = f.missing("polling latency", "chat", "poll") + "\n"
    return (
        "Short polling asks 'anything new since id N?' every T seconds. A message waits for the next\n"
        "poll: T/2 on average, up to T. Every client costs a request every T seconds whether or not\n"
        "anything happened: 10,000 clients polling every 2 s are 5,000 requests per second.\n\n"
        + measured
        + "\nPolling is enough when updates can wait seconds (dashboards, build status, a feed checked\n"
        "each minute), when clients are few, or when the infrastructure is plain HTTP only (serverless,\n"
        "strict proxies, caches: polls can be cached). It stops being enough when latency must be\n"
        "well under T, or when N/T requests per second cost more than N open connections.\n"
        "`wirewise decide` does that arithmetic with the measured figures.\n" + _network_text()
    )


def _network_text() -> str:
    """A round trip costs polling more than a push: measured where a sweep exists."""
    found = network_sentence(results_dirs(), ("poll", "longpoll", "sse", "ws"))
    theory = (
        "On a real network each delivery also pays the path: a push one round trip here (the"
        " send up, the delivery down), short polling about 1.5 (its next poll leaves T after an"
        " answer), and long polling's tail two (what lands while the next poll is on its way"
        " waits for it; RFC 6202 section 2.2)."
    )
    measured = (
        f" {found}"
        if found
        else " (No run measured it: `wirewise bench --scenario chat --rtt 0 --rtt 50 --rtt 150"
        " --rtt 300`.)"
    )
    return "\n" + textwrap.fill(theory.strip() + measured, 96, break_on_hyphens=False) + "\n"


TOPICS = {
    topic.name: topic
    for topic in (
        Topic("upgrade", "The upgrade handshake, and why auth carries over", _upgrade),
        Topic("message-format", "Why you need your own message format", _format),
        Topic("memory", "Memory per connection", _memory),
        Topic("load-balancing", "Load balancing long-lived connections", _load_balancing),
        Topic("proxies", "Proxies and corporate networks", _proxies),
        Topic("http2", "Does HTTP/2 replace WebSockets?", _http2),
        Topic("http3", "HTTP/3", _http3),
        Topic("sse-vs-ws", "SSE vs WebSockets", _sse_vs_ws),
        Topic("polling", "When polling is enough", _polling),
    )
}


def explain(name: str, summary: Summary | None, run: str = "", note: str = "") -> str:
    """The topic's text; ``note`` says why no run was read when ``summary`` is None."""
    topic = TOPICS[name]
    facts = Facts(summary, run, note)
    return f"{topic.title}\n{'=' * len(topic.title)}\n\n{topic.write(facts).rstrip()}\n\n{facts.source()}\n"
