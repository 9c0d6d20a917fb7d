"""Server-Sent Events parsing (pure: bytes in, events out), shared by the SSE and h2 clients.

Written here rather than taken from httpx-sse because that one parses an httpx response line
by line through a text decoder (several Python calls per line, four lines per chat event),
and the h2 client has no httpx response at all, only DATA frames. It follows the WHATWG
event-stream rules: lines end with CRLF, CR or LF; ``data:`` lines join with LF; comments and
unknown fields are ignored; a blank line dispatches; a UTF-8 byte order mark may open the
stream. Like every wirewise client it drops events whose data is empty (keep-alives: httpx-sse
0.4 dispatched an empty event carrying the last id at every comment, which counted as a
duplicate).

A chunk without CR (what every wirewise server sends) is split at LF in one C call; anything
else goes through the general line-ending regex.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["SseEvent", "SseParser"]


class SseEvent(NamedTuple):
    event: str
    data: str
    id: str


_EOL = re.compile(rb"\r\n?|\n")
_BOM = b"\xef\xbb\xbf"


class SseParser:
    """Incremental Server-Sent Events parser: feed it bytes, get the complete events back."""

    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False  # the last chunk ended in CR: a leading LF belongs to it
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = False
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:  # a UTF-8 byte order mark may open the stream: drop it
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        if b"\r" in buffer:
            lines = _EOL.split(buffer)
            self._after_cr = buffer.endswith(b"\r")
        else:
            lines = buffer.split(b"\n")
        self._buffer = lines.pop()  # the unfinished line (b"" after a line end)
        events = []
        for line in lines:
            if line:
                self._field(line)
            elif (event := self._dispatch()) is not None:
                events.append(event)
        return events

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self.last_event_id = value.decode("utf-8", "replace")
        # comments (empty name), "retry" and unknown fields: nothing to do

    def _dispatch(self) -> SseEvent | None:
        """A blank line: the event so far, unless its data is empty (then nothing)."""
        data, self._data = "\n".join(self._data), []
        event, self._event = self._event or "message", ""
        return SseEvent(event, data, self.last_event_id) if data else None
