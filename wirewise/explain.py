"""``wirewise explain``: short, correct answers for learners, quoting the newest measurements.

Each topic is a few paragraphs of plain text. Where a figure of the newest results run bears
on the answer, it is quoted with its run; where none exists, the text says which command
would measure it, rather than quoting a number from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Topic:
    name: str
    title: str
    write: Callable[[Facts], str]


class Facts:
    """Figures of a results run, looked up by scenario, transport and server."""

    def __init__(self, summary: dict[str, Any] | None, run: str = "") -> None:
        self.summary = summary
        self.run = run

    def result(
        self, scenario: str, transport: str, server: str | None = None
    ) -> dict[str, Any] | None:
        if self.summary is None:
            return None
        for result in self.summary["results"]:
            if result["scenario"] != scenario or result["transport"] != transport:
                continue
            if server is not None and result["server"] != server:
                continue
            if server is None and transport == "ws" and result["server"] != "uvicorn":
                continue  # plain "ws" means the framework server; the lean one is named
            return result
        return None

    def get(self, scenario: str, transport: str, *path: str, server: str | None = None) -> Any:
        value: Any = self.result(scenario, transport, server)
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def kib(self, transport: str, server: str | None = None) -> str | None:
        rss = self.get("idle", transport, "memory_per_connection", "rss_bytes", server=server)
        kernel = self.get("idle", transport, "memory_per_connection", "kernel_bytes", server=server)
        if rss is None:
            return None
        text = f"{rss / 1024:.1f} KiB"
        if kernel is not None:
            text += f" (+{kernel / 1024:.1f} KiB in the kernel)"
        return text

    def ms(
        self, scenario: str, transport: str, key: str = "p50", server: str | None = None
    ) -> str | None:
        value = self.get(scenario, transport, "latency_ms", key, server=server)
        return None if value is None else f"{value:,.1f} ms"

    def source(self) -> str:
        if self.summary is None:
            return "No results run was found: `wirewise bench --quick` measures these figures."
        meta = self.summary["metadata"]
        return f"Figures: run {self.run or '?'} ({meta.get('started_at', '?')}, {meta.get('cpu_model', '?')}, {meta.get('cores', '?')} cores)."


def missing(what: str, command: str) -> str:
    return f"({what} not in this run: `{command}` measures it.)"


def _upgrade(f: Facts) -> str:
    send = f.ms("chat", "ws", "p50")
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
        "token that expires mid-connection needs the server to close the socket (or re-check on a timer).\n"
        + (
            f"\nMeasured: once connected, a chat message reached its room in {send} (p50) over WebSocket.\n"
            if send
            else ""
        )
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


def _memory(f: Facts) -> str:
    rows = []
    for transport, server, label in (
        ("tcp", "asyncio", "raw TCP (the floor)"),
        ("ws", "websockets", "WebSocket, bare websockets server"),
        ("ws", "uvicorn", "WebSocket, uvicorn"),
        ("sse", None, "SSE, uvicorn"),
        ("h2", None, "HTTP/2 stream, hypercorn"),
        ("longpoll", None, "held long poll"),
    ):
        value = f.kib(transport, server)
        if value:
            rows.append(f"  {label:<36} {value}")
    measured = (
        "\n".join(rows)
        if rows
        else missing("memory per connection", "wirewise bench --scenario idle")
    )
    return (
        "Every open connection costs memory twice: in the kernel (the socket and its buffers) and in\n"
        "the server process (the framework's objects for it: a protocol object, buffers, a task or\n"
        "coroutine, your subscription queue). The push transports pay it for as long as a client is\n"
        "connected; polling pays only per-client state between requests.\n\n"
        f"Measured per idle connection (slope of RSS against connections):\n{measured}\n\n"
        "Multiply by your connection count before worrying: 10,000 connections at 30 KiB are 300 MiB.\n"
        "The limits that bite first are often file descriptors (one per socket) and, in Python, one\n"
        "core per process: scale out with more processes behind a load balancer.\n"
    )


def _load_balancing(f: Facts) -> str:
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
    )


def _proxies(f: Facts) -> str:
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
    )


def _http2(f: Facts) -> str:
    h2 = f.ms("chat", "h2")
    sse = f.ms("chat", "sse")
    ws = f.ms("chat", "ws")
    cpu_h2 = f.get("chat", "h2", "server_cpu_ms_per_1k_msgs")
    cpu_sse = f.get("chat", "sse", "server_cpu_ms_per_1k_msgs")
    measured = (
        f"\nMeasured chat p50: HTTP/2 {h2}, SSE over HTTP/1.1 {sse}, WebSocket {ws}."
        + (
            f" Server CPU per 1,000 messages: HTTP/2 {cpu_h2:.0f} ms vs SSE {cpu_sse:.0f} ms (hypercorn's pure-Python HTTP/2)."
            if cpu_h2 and cpu_sse
            else ""
        )
        + "\n"
        if h2 and sse and ws
        else "\n"
        + missing("HTTP/2 latency", "wirewise bench --scenario chat --transport h2")
        + "\n"
    )
    return (
        "HTTP/2 multiplexes many requests on one connection, so an SSE stream and the POSTs that\n"
        "send messages share one TCP (and TLS) connection, and the browser's six-connections-per-host\n"
        "limit on HTTP/1.1 (which caps SSE tabs) disappears. It is not full duplex for one request,\n"
        "though: each message up is still a POST with headers (compressed by HPACK), and server push\n"
        "is gone from browsers. RFC 8441 lets a WebSocket ride an HTTP/2 stream, which few servers do.\n\n"
        "So HTTP/2 makes SSE + POST much better, and for server-to-client feeds it removes most reasons\n"
        "to reach for WebSockets; for chatty client-to-server traffic (games, collaborative editing),\n"
        "a WebSocket frame is still cheaper than a request. Browsers speak HTTP/2 only over TLS.\n"
        + measured
    )


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


def _sse_vs_ws(f: Facts) -> str:
    lines = []
    for scenario in ("chat", "broadcast", "game"):
        sse, ws = f.ms(scenario, "sse"), f.ms(scenario, "ws")
        down_sse = f.get(scenario, "sse", "bytes_per_message", "down")
        down_ws = f.get(scenario, "ws", "bytes_per_message", "down")
        up_sse = f.get(scenario, "sse", "bytes_per_message", "up")
        up_ws = f.get(scenario, "ws", "bytes_per_message", "up")
        if sse and ws and down_sse and down_ws:
            lines.append(
                f"  {scenario:<9} p50 SSE {sse} vs WS {ws}; bytes down {down_sse:.0f} vs {down_ws:.0f}, up {up_sse or 0:.0f} vs {up_ws or 0:.0f}"
            )
    memory = [(t, f.kib(t)) for t in ("sse", "ws")]
    measured = (
        "\n".join(lines)
        if lines
        else missing("SSE and WebSocket figures", "wirewise bench --quick")
    )
    mem = ", ".join(f"{t} {v}" for t, v in memory if v)
    return (
        "SSE is one long HTTP response the server writes events into; the client sends with ordinary\n"
        "requests. It gives you reconnection and resume (`Last-Event-ID`) for free, passes proxies\n"
        "as plain HTTP, and needs nothing but `EventSource` in the browser. Its limits: text only,\n"
        "one direction, and on HTTP/1.1 a browser allows six connections per host (HTTP/2 lifts it).\n\n"
        "A WebSocket is full duplex with 2-14 bytes of framing per message, binary or text; you build\n"
        "resume, acks and reconnection yourself. It wins when clients send often: each send is a\n"
        "frame, not a request with headers.\n\n"
        f"Measured (p50; bytes per message down per delivery, up per send):\n{measured}\n"
        + (f"Memory per idle connection: {mem}.\n" if mem else "")
        + "Rule of thumb: server-to-client mostly, SSE; both directions often, WebSocket.\n"
    )


def _polling(f: Facts) -> str:
    p50 = f.get("chat", "poll", "latency_ms", "p50")
    interval = f.get("chat", "poll", "parameters", "poll_interval_s")
    measured = (
        f"Measured: with a {interval:g} s interval, short polling's p50 was {p50:,.0f} ms (theory: half the\n"
        f"interval, {interval * 500:,.0f} ms), against {f.ms('chat', 'ws')} for a WebSocket.\n"
        if p50 is not None and interval
        else missing("polling latency", "wirewise bench --scenario chat --transport poll") + "\n"
    )
    return (
        "Short polling asks 'anything new since id N?' every T seconds. A message waits for the next\n"
        "poll: T/2 on average, up to T. Every client costs a request every T seconds whether or not\n"
        "anything happened: 10,000 clients polling every 2 s are 5,000 requests per second.\n\n"
        + measured
        + "\nPolling is enough when updates can wait seconds (dashboards, build status, a feed checked\n"
        "each minute), when clients are few, or when the infrastructure is plain HTTP only (serverless,\n"
        "strict proxies, caches: polls can be cached). It stops being enough when latency must be\n"
        "well under T, or when N/T requests per second cost more than N open connections.\n"
        "`wirewise decide` does that arithmetic with the measured figures.\n"
    )


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


def explain(name: str, summary: dict[str, Any] | None, run: str = "") -> str:
    topic = TOPICS[name]
    facts = Facts(summary, run)
    return f"{topic.title}\n{'=' * len(topic.title)}\n\n{topic.write(facts).rstrip()}\n\n{facts.source()}\n"
