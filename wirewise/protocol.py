"""The wirewise chat protocol: every message of docs/PROTOCOL.md, validated when built.

This module is the one place the chat "language" is defined. Servers, clients and the
benchmark build messages here and parse JSON only through :func:`decode_client`,
:func:`decode_server` and :func:`decode_poll`. Every way a payload can be wrong maps to one
of the stable error codes in :data:`ERROR_CODES` through :class:`ProtocolError`; nothing in
here raises anything else on bad input.

Messages are frozen dataclasses. Their ``__post_init__`` validates shape and types, so a
message that exists is a valid one; limits that a server may configure (the text length)
are checked by :func:`decode_client`, which knows the server's setting.

What clients receive most, a ``new_message``, has a fast path (:func:`_new_message_fast`):
orjson parses, and the fields are checked inline with the same rules. It only ever *accepts*:
anything it is not sure of (another type, a field out of its common shape, input orjson
refuses or reads differently from :mod:`json`) goes down the validated path, which decides
and raises. A load generator decodes every delivery, so this is most of its CPU.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

import orjson

__all__ = [
    "DEFAULT_MAX_TEXT",
    "ERROR_CODES",
    "MAX_CURSOR",
    "Ack",
    "ClientMessage",
    "Error",
    "Gap",
    "Hello",
    "LoginRequest",
    "NewMessage",
    "ProtocolError",
    "RoomEvent",
    "SendMessage",
    "ServerMessage",
    "UserJoined",
    "UserLeft",
    "decode_client",
    "decode_id",
    "decode_login",
    "decode_poll",
    "decode_server",
    "decode_token",
    "encode",
    "encode_id",
    "encode_poll",
    "encode_token",
    "parse_cursor",
    "valid_room",
    "valid_user",
]

DEFAULT_MAX_TEXT = 4096
"""Default limit on ``text``, in Unicode code points (a server setting)."""

MAX_CLIENT_MSG_ID = 64
MAX_CURSOR = 2**63 - 1
"""Largest event id and cursor: ids are signed 64-bit integers on every platform."""

MAX_TIMESTAMP_US = 2**53 - 1
"""``sent_at`` and ``ts`` must fit a JavaScript number exactly."""

MAX_NESTING = 32
"""JSON nested deeper than this is refused before it reaches the decoder's recursion."""

ERROR_CODES = frozenset(
    {
        "bad_json",
        "bad_message",
        "unknown_type",
        "message_too_large",
        "bad_room",
        "bad_cursor",
        "unauthorized",
        "forbidden_origin",
        "rate_limited",
        "too_many_connections",
        "slow_consumer",
        "unavailable",
    }
)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CURSOR = re.compile(r"[0-9]{1,19}")


class ProtocolError(ValueError):
    """A payload broke the protocol; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, detail: str) -> None:
        if code not in ERROR_CODES:
            raise AssertionError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def to_message(self) -> Error:
        return Error(self.code, self.detail)


def valid_room(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def valid_user(name: object) -> bool:
    return isinstance(name, str) and _USER.fullmatch(name) is not None


def parse_cursor(raw: str | None) -> int | None:
    """``after`` / ``Last-Event-ID`` as an int, ``None`` when absent; else ``bad_cursor``."""
    if raw is None:
        return None
    raw = raw.strip()
    if _CURSOR.fullmatch(raw) is None or int(raw) > MAX_CURSOR:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ProtocolError("bad_cursor", f"cursor {shown!r} is not an integer in 0..2^63-1")
    return int(raw)


# -- field checks --------------------------------------------------------------------------


def _check_room(room: object) -> None:
    if not valid_room(room):
        raise ProtocolError("bad_room", "room names match [A-Za-z0-9_-]{1,64}")


def _check_user(user: object) -> None:
    if not valid_user(user):
        raise ProtocolError("bad_message", "user names match [A-Za-z0-9_-]{1,32}")


def _is_int(value: object) -> TypeGuard[int]:
    """An integer that is not a bool (JSON ``true`` decodes to one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(name: str, value: object) -> None:
    if not _is_int(value) or not 0 < value <= MAX_CURSOR:
        raise ProtocolError("bad_message", f"{name} must be an integer in 1..2^63-1")


def _check_client_msg_id(value: object) -> None:
    if value is not None:
        _check_text("client_msg_id", value)
        if len(value) > MAX_CLIENT_MSG_ID:  # type: ignore[arg-type]
            raise ProtocolError("bad_message", "client_msg_id is at most 64 characters")


def _check_optional_time(name: str, value: object) -> None:
    if value is not None and (not _is_int(value) or not 0 <= value <= MAX_TIMESTAMP_US):
        raise ProtocolError("bad_message", f"{name} must be microseconds since the epoch")


def _check_text(name: str, value: object, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise ProtocolError("bad_message", f"{name} must be a string")
    if not value and not empty_ok:
        raise ProtocolError("bad_message", f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: valid JSON, not valid Unicode text
        raise ProtocolError("bad_message", f"{name} is not valid Unicode") from None


# -- client to server ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """``send_message``: post ``text`` to ``room`` (``room`` may be left to the URL)."""

    type: ClassVar[str] = "send_message"
    room: str | None
    text: str
    client_msg_id: str | None = None
    sent_at: int | None = None

    def __post_init__(self) -> None:
        if self.room is not None:
            _check_room(self.room)
        _check_text("text", self.text)
        _check_client_msg_id(self.client_msg_id)
        _check_optional_time("sent_at", self.sent_at)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.room is not None:
            d["room"] = self.room
        d["text"] = self.text
        if self.client_msg_id is not None:
            d["client_msg_id"] = self.client_msg_id
        if self.sent_at is not None:
            d["sent_at"] = self.sent_at
        return d


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """``POST /login`` body ``{"user": ...}``."""

    type: ClassVar[str] = "login"
    user: str

    def __post_init__(self) -> None:
        _check_user(self.user)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "user": self.user}


@dataclass(frozen=True, slots=True)
class Hello:
    """Raw-TCP floor only: the first line of a connection, standing in for the URL.

    HTTP transports carry the token, room and cursor in the request; a bare TCP stream has
    no request line, so its first line says the same three things.
    """

    type: ClassVar[str] = "hello"
    token: str
    room: str
    after: int | None = None

    def __post_init__(self) -> None:
        _check_text("token", self.token, empty_ok=True)
        _check_room(self.room)
        if self.after is not None and (
            not _is_int(self.after) or not 0 <= self.after <= MAX_CURSOR
        ):
            raise ProtocolError("bad_cursor", "after must be an integer in 0..2^63-1")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "token": self.token, "room": self.room}
        if self.after is not None:
            d["after"] = self.after
        return d


ClientMessage = SendMessage | Hello | LoginRequest


# -- server to client ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewMessage:
    type: ClassVar[str] = "new_message"
    id: int
    room: str
    sender: str  # "from" on the wire; a Python keyword here
    text: str
    client_msg_id: str | None = None
    sent_at: int | None = None
    ts: int = 0

    def __post_init__(self) -> None:
        _check_id("id", self.id)
        _check_room(self.room)
        _check_user(self.sender)
        _check_text("text", self.text)
        _check_client_msg_id(self.client_msg_id)
        _check_optional_time("sent_at", self.sent_at)
        _check_optional_time("ts", self.ts)
        if self.ts is None:
            raise ProtocolError("bad_message", "ts must be microseconds since the epoch")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "room": self.room,
            "from": self.sender,
            "text": self.text,
            "client_msg_id": self.client_msg_id,
            "sent_at": self.sent_at,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class UserJoined:
    type: ClassVar[str] = "user_joined"
    id: int
    room: str
    user: str

    def __post_init__(self) -> None:
        _check_id("id", self.id)
        _check_room(self.room)
        _check_user(self.user)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "room": self.room, "user": self.user}


@dataclass(frozen=True, slots=True)
class UserLeft:
    type: ClassVar[str] = "user_left"
    id: int
    room: str
    user: str

    def __post_init__(self) -> None:
        _check_id("id", self.id)
        _check_room(self.room)
        _check_user(self.user)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "room": self.room, "user": self.user}


@dataclass(frozen=True, slots=True)
class Ack:
    type: ClassVar[str] = "ack"
    client_msg_id: str | None
    id: int

    def __post_init__(self) -> None:
        _check_client_msg_id(self.client_msg_id)
        _check_id("id", self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "client_msg_id": self.client_msg_id, "id": self.id}


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    detail: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or self.code not in ERROR_CODES:
            raise ProtocolError("bad_message", f"unknown error code {self.code!r}")
        _check_text("detail", self.detail, empty_ok=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "code": self.code, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Gap:
    """Events after ``requested_after`` and before ``oldest_available`` are gone for good."""

    type: ClassVar[str] = "gap"
    requested_after: int
    oldest_available: int

    def __post_init__(self) -> None:
        for name in ("requested_after", "oldest_available"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value <= MAX_CURSOR:
                raise ProtocolError("bad_message", f"{name} must be an integer in 0..2^63-1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "requested_after": self.requested_after,
            "oldest_available": self.oldest_available,
        }


RoomEvent = NewMessage | UserJoined | UserLeft
ServerMessage = NewMessage | UserJoined | UserLeft | Ack | Error | Gap


# -- encoding ------------------------------------------------------------------------------


def encode(message: Any) -> str:
    """Compact JSON for any message; never contains a raw newline (SSE relies on that)."""
    return json.dumps(message.to_dict(), ensure_ascii=False, separators=(",", ":"))


def encode_poll(events_json: list[str], last_id: int) -> str:
    """A polling answer ``{"events": [...], "last_id": M}`` from already-encoded events."""
    return '{"events":[' + ",".join(events_json) + '],"last_id":' + str(last_id) + "}"


# -- decoding ------------------------------------------------------------------------------


def _too_deep(text: str) -> bool:
    """True when brackets nest deeper than MAX_NESTING (cheap, before json recursion)."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _load_object(data: bytes | str) -> dict[str, Any]:
    """Bytes or text to a JSON object, every failure a ``bad_json`` / ``bad_message``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("bad_json", "body is not valid UTF-8") from None
    else:
        text = data
    if _too_deep(text):
        raise ProtocolError("bad_json", f"JSON nests deeper than {MAX_NESTING} levels")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # includes int digit limits and NaN
        raise ProtocolError("bad_json", f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", "a message is a JSON object")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad_message", f"{name!r} is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError("bad_message", f"{name!r} has the wrong type")
    return value


def decode_client(data: bytes | str, *, max_text: int = DEFAULT_MAX_TEXT) -> ClientMessage:
    """Parse one client-to-server message, enforcing the server's text limit."""
    obj = _load_object(data)
    kind = obj.get("type")
    if kind == "send_message":
        text = _field(obj, "text", str, True)
        if len(text) > max_text:
            raise ProtocolError(
                "message_too_large", f"text is {len(text)} characters; the limit is {max_text}"
            )
        room = obj.get("room")
        if room is not None and not valid_room(room):
            raise ProtocolError("bad_room", "room names match [A-Za-z0-9_-]{1,64}")
        return SendMessage(
            room=room,
            text=text,
            client_msg_id=_field(obj, "client_msg_id", str, False),
            sent_at=_field(obj, "sent_at", int, False),
        )
    if kind == "login":
        return LoginRequest(user=obj.get("user"))  # type: ignore[arg-type]  # validated there
    if kind == "hello":
        after = obj.get("after")
        if after is not None and (not _is_int(after) or not 0 <= after <= MAX_CURSOR):
            raise ProtocolError("bad_cursor", "after must be an integer in 0..2^63-1")
        return Hello(
            token=_field(obj, "token", str, False) or "",
            room=obj.get("room"),  # type: ignore[arg-type]  # validated by Hello
            after=after,
        )
    if isinstance(kind, str):
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise ProtocolError("unknown_type", f"unknown message type {shown!r}")
    raise ProtocolError("bad_message", "a message needs a string 'type'")


def decode_login(data: bytes | str) -> LoginRequest:
    obj = _load_object(data)
    return LoginRequest(user=obj.get("user"))  # type: ignore[arg-type]  # validated by LoginRequest


def encode_token(token: str) -> str:
    """The answer to a login: ``{"token": "..."}``."""
    return json.dumps({"token": token})


def decode_token(data: bytes | str) -> str:
    """The token from a login answer."""
    token = _load_object(data).get("token")
    if not isinstance(token, str) or not token:
        raise ProtocolError("bad_message", "a login answer carries a 'token' string")
    return token


def encode_id(msg_id: int) -> str:
    """The answer to ``POST /rooms/{room}/messages``: ``{"id": N}``."""
    return '{"id":%d}' % msg_id


def decode_id(data: bytes | str) -> int:
    msg_id = _load_object(data).get("id")
    if not _is_int(msg_id) or not 0 < msg_id <= MAX_CURSOR:
        raise ProtocolError("bad_message", "a send answer carries an integer 'id'")
    return msg_id


def _load_fast(data: bytes | str) -> Any:
    """orjson's parse of ``data``, or None when the validated path must decide.

    orjson and :mod:`json` agree on every document orjson accepts but two kinds: integers
    past 64 bits (orjson makes floats) and nesting, which :func:`_load_object` caps. The fast
    path accepts no float, and brackets are counted first, as :func:`_too_deep` does.
    """
    if isinstance(data, str):
        brackets = data.count("[") + data.count("{")
    elif isinstance(data, bytes):
        brackets = data.count(b"[") + data.count(b"{")
    else:
        return None
    if brackets > MAX_NESTING:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _new_message_fast(obj: dict[str, Any]) -> NewMessage | None:
    """``obj`` as a NewMessage when every field has its common shape, checked as
    ``NewMessage.__post_init__`` does; None sends it down the validated path.

    Texts must be ASCII here: ASCII is valid UTF-8 without :func:`_check_text`'s round trip.
    """
    get = obj.get
    msg_id, room, sender, text = get("id"), get("room"), get("from"), get("text")
    client_msg_id, sent_at, ts = get("client_msg_id"), get("sent_at"), get("ts", 0)
    if not (
        type(msg_id) is int
        and 0 < msg_id <= MAX_CURSOR
        and type(room) is str
        and _NAME.fullmatch(room) is not None
        and type(sender) is str
        and _USER.fullmatch(sender) is not None
        and type(text) is str
        and text != ""
        and text.isascii()
        and (
            client_msg_id is None
            or (
                type(client_msg_id) is str
                and 0 < len(client_msg_id) <= MAX_CLIENT_MSG_ID
                and client_msg_id.isascii()
            )
        )
        and (sent_at is None or (type(sent_at) is int and 0 <= sent_at <= MAX_TIMESTAMP_US))
        and type(ts) is int
        and 0 <= ts <= MAX_TIMESTAMP_US
    ):
        return None
    message = object.__new__(NewMessage)
    values = (msg_id, room, sender, text, client_msg_id, sent_at, ts)
    for setter, value in zip(_NEW_MESSAGE_SETTERS, values, strict=True):
        setter(message, value)  # checked above: __init__ would check it all again
    return message


_NEW_MESSAGE_SETTERS = tuple(NewMessage.__dict__[name].__set__ for name in NewMessage.__slots__)
"""The slots' own setters, in field order: a frozen dataclass is built without __init__."""


def _server_fast(data: bytes | str) -> ServerMessage | None:
    obj = _load_fast(data)
    if type(obj) is dict and obj.get("type") == "new_message":
        return _new_message_fast(obj)
    return None


def _poll_fast(data: bytes | str) -> tuple[list[ServerMessage], int] | None:
    obj = _load_fast(data)
    if type(obj) is not dict:
        return None
    events, last_id = obj.get("events"), obj.get("last_id")
    if type(events) is not list or type(last_id) is not int:
        return None
    out: list[ServerMessage] = []
    for item in events:
        message = None
        if type(item) is dict and item.get("type") == "new_message":
            message = _new_message_fast(item)
        if message is None:
            return None
        out.append(message)
    return out, last_id


def _server_from_dict(obj: dict[str, Any]) -> ServerMessage:
    kind = obj.get("type")
    try:
        if kind == "new_message":
            return NewMessage(
                id=obj["id"],
                room=obj["room"],
                sender=obj["from"],
                text=obj["text"],
                client_msg_id=obj.get("client_msg_id"),
                sent_at=obj.get("sent_at"),
                ts=obj.get("ts", 0),
            )
        if kind == "user_joined":
            return UserJoined(id=obj["id"], room=obj["room"], user=obj["user"])
        if kind == "user_left":
            return UserLeft(id=obj["id"], room=obj["room"], user=obj["user"])
        if kind == "ack":
            return Ack(client_msg_id=obj.get("client_msg_id"), id=obj["id"])
        if kind == "error":
            return Error(code=obj["code"], detail=obj.get("detail", ""))
        if kind == "gap":
            return Gap(
                requested_after=obj["requested_after"], oldest_available=obj["oldest_available"]
            )
    except KeyError as exc:
        raise ProtocolError("bad_message", f"{kind} without {exc.args[0]!r}") from None
    if isinstance(kind, str):
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise ProtocolError("unknown_type", f"unknown message type {shown!r}")
    raise ProtocolError("bad_message", "a message needs a string 'type'")


def decode_server(data: bytes | str) -> ServerMessage:
    """Parse one server-to-client message (what clients receive)."""
    return _server_fast(data) or _decode_server_checked(data)


def _decode_server_checked(data: bytes | str) -> ServerMessage:
    """The validated path: decides every input, and raises for every bad one."""
    return _server_from_dict(_load_object(data))


def decode_poll(data: bytes | str) -> tuple[list[ServerMessage], int]:
    """Parse a polling answer into its messages and ``last_id``."""
    return _poll_fast(data) or _decode_poll_checked(data)


def _decode_poll_checked(data: bytes | str) -> tuple[list[ServerMessage], int]:
    """The validated path of :func:`decode_poll`."""
    obj = _load_object(data)
    events, last_id = obj.get("events"), obj.get("last_id")
    if not isinstance(events, list) or not _is_int(last_id):
        raise ProtocolError("bad_message", "a poll answer has 'events' and 'last_id'")
    out = []
    for item in events:
        if not isinstance(item, dict):
            raise ProtocolError("bad_message", "poll events are JSON objects")
        out.append(_server_from_dict(item))
    return out, last_id
