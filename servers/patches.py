"""Every change wirewise makes to a third-party library at run time, in one place.

wirewise measures the libraries as they ship; it patches only what would otherwise make a
server unsafe to expose (held forever by an idle client, or growing without bound for a
stalled one), and only in the versions each patch was checked against. Each patch says what
is wrong, how it was seen, and where upstream's code is. None was reported upstream from here
(this machine has no network); the text below is what a report would say.

:func:`apply_hypercorn` and :func:`apply_uvicorn` are called by ``servers/serve.py`` when it
starts that server, never as a side effect of building a configuration. Each patch is applied
at most once per process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = ["PATCHES", "Patch", "apply", "apply_hypercorn", "apply_uvicorn"]


@dataclass(frozen=True)
class Patch:
    name: str
    library: str
    versions: tuple[str, ...]
    """Version prefixes it was checked against (``"0.18."`` covers 0.18.0, 0.18.1, ...)."""
    why: str
    upstream: str
    apply: Callable[[], None]

    def applies_to(self, version: str) -> bool:
        return any(version.startswith(prefix) for prefix in self.versions)


_APPLIED: set[str] = set()


def _h2_idle_deadline() -> None:
    from hypercorn.events import Updated
    from hypercorn.protocol.h2 import H2Protocol

    original = H2Protocol.initiate

    async def initiate(
        self: H2Protocol,
        headers: list[tuple[bytes, bytes]] | None = None,
        settings: bytes | None = None,
    ) -> None:
        await original(self, headers, settings)
        if not self.streams:
            await self.send(Updated(idle=True))

    H2Protocol.initiate = initiate  # type: ignore[method-assign]


def _stream_backpressure() -> None:
    from hypercorn.protocol import h2 as hyper_h2

    async def pop(self: Any, max_length: int) -> bytes:
        length = min(len(self.buffer), max_length)
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        if len(self.buffer) < hyper_h2.BUFFER_LOW_WATER:
            await self._paused.set()
        if len(self.buffer) == 0:
            await self._is_empty.set()
        return data

    hyper_h2.StreamBuffer.pop = pop  # type: ignore[method-assign]


def _data_after_response() -> None:
    import h2.events
    import h2.exceptions
    from hypercorn.protocol.h2 import H2Protocol

    original = H2Protocol._handle_events

    async def _handle_events(self: H2Protocol, events: list[h2.events.Event]) -> None:
        # One at a time: a request's HEADERS and its first DATA come in the same batch, and
        # its stream exists only once the original handler has seen the HEADERS.
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                # The response went out already (a 413 before the whole body, say): drop the
                # data and give its flow-control window back, so the connection goes on.
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                await self._flush()
                continue
            await original(self, [event])

    H2Protocol._handle_events = _handle_events  # type: ignore[method-assign]


def _ws_lingering_close() -> None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    def handle_parser_exception(self: WebSocketsSansIOProtocol) -> None:
        if self.close_sent:
            return  # already closing: what the peer still sends is read and dropped
        assert self.conn.close_sent is not None
        code, reason = self.conn.close_sent.code, self.conn.close_sent.reason
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()  # FIN after the close frame; keep reading until theirs
        self.close_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    WebSocketsSansIOProtocol.handle_parser_exception = handle_parser_exception  # type: ignore[method-assign]


LINGER_SECONDS = 5.0
"""How long a WebSocket closed for a protocol error (an oversized frame) keeps reading what
its peer still sends before the socket is closed regardless."""

PATCHES = (
    Patch(
        name="h2-idle-deadline",
        library="hypercorn",
        versions=("0.18.",),
        why=(
            "hypercorn stops its idle timer when the HTTP/1.1 parser reads the cleartext"
            " 'PRI * HTTP/2.0' preface as a request, then switches to HTTP/2 without"
            " restarting it: a client that sends the preface and then nothing, or trickles a"
            " HEADERS frame, is held forever (an HTTP/2 slowloris; tests/test_hostile.py)."
            " Patched: H2Protocol reports itself idle once initiated with no stream, so"
            " keep_alive_timeout applies, as it already does after each stream closes."
        ),
        upstream="https://github.com/pgjones/hypercorn/blob/main/src/hypercorn/protocol/h2.py",
        apply=_h2_idle_deadline,
    ),
    Patch(
        name="h2-stream-backpressure",
        library="hypercorn",
        versions=("0.18.",),
        why=(
            "hypercorn's StreamBuffer.pop releases a paused writer whenever the chunk it"
            " popped was small, and a stream whose reader grants no flow-control window pops"
            " zero bytes: every write to a stalled HTTP/2 stream returned at once, the buffer"
            " grew without bound (28 MiB of server RSS for 24 MB sent to one stream that read"
            " nothing) and the subscriber was never cut off as a slow consumer"
            " (tests/test_faults.py). Patched: the writer is released only once what is left"
            " is under the low-water mark."
        ),
        upstream="https://github.com/pgjones/hypercorn/blob/main/src/hypercorn/protocol/h2.py",
        apply=_stream_backpressure,
    ),
    Patch(
        name="h2-data-after-response",
        library="hypercorn",
        versions=("0.18.",),
        why=(
            "H2Protocol._handle_events looks up the stream of every DATA frame in its streams"
            " dict, which no longer holds a stream whose response is complete: a client still"
            " sending the body of a request already answered (a 413 for an oversized POST)"
            " raised KeyError, which ended the whole connection and every stream multiplexed on"
            " it (StreamEnded has that guard; DataReceived does not). Patched: such DATA is"
            " dropped and its window given back, so the connection and its other streams go"
            " on. The stream is not reset with NO_ERROR (RFC 9113 section 8.1 allows it): httpx"
            " 0.28 fails a request whose stream is reset after its response has come."
        ),
        upstream="https://github.com/pgjones/hypercorn/blob/main/src/hypercorn/protocol/h2.py",
        apply=_data_after_response,
    ),
    Patch(
        name="ws-lingering-close",
        library="uvicorn",
        versions=("0.54.",),
        why=(
            "When a frame breaks the protocol (one over ws_max_size: close 1009), uvicorn's"
            " websockets-sansio protocol writes the close frame and closes the socket at once."
            " The rest of the offending frame is still unread in the server's socket, so the"
            " kernel answers with RST, and an RST that overtakes the close frame destroys it:"
            " the client sees a reset instead of 1009 (seen under load, tests/test_hostile.py)."
            " Patched: a lingering close, as websockets' own server and nginx do: FIN after the"
            " close frame, then read and drop until the peer closes, for at most 5 s."
        ),
        upstream=(
            "https://github.com/encode/uvicorn/blob/master/uvicorn/protocols/websockets/"
            "websockets_sansio_impl.py"
        ),
        apply=_ws_lingering_close,
    ),
)


def apply_hypercorn() -> list[str]:
    """Apply the hypercorn patches (see :func:`apply`)."""
    return apply("hypercorn")


def apply_uvicorn() -> list[str]:
    """Apply the uvicorn patches (see :func:`apply`)."""
    return apply("uvicorn")


def apply(library: str) -> list[str]:
    """Apply ``library``'s patches that this version needs; returns their names. A version
    they were not checked against is left alone, with a warning on stderr."""
    version = metadata.version(library)
    applied = []
    for patch in PATCHES:
        if patch.library != library or patch.name in _APPLIED:
            continue
        if not patch.applies_to(version):
            print(
                f"wirewise: not applying {patch.name} to {library} {version} (checked against"
                f" {', '.join(patch.versions)}): see servers/patches.py",
                file=sys.stderr,
                flush=True,
            )
            continue
        patch.apply()
        _APPLIED.add(patch.name)
        applied.append(patch.name)
    return applied
