"""wirewise.protocol without a network: round trips, validation, and every bad input's code."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirewise.protocol import (
    DEFAULT_MAX_TEXT,
    ERROR_CODES,
    MAX_CURSOR,
    Ack,
    ClientMessage,
    Error,
    Gap,
    Hello,
    LoginRequest,
    NewMessage,
    ProtocolError,
    SendMessage,
    ServerMessage,
    UserJoined,
    UserLeft,
    decode_client,
    decode_id,
    decode_login,
    decode_poll,
    decode_server,
    decode_token,
    encode,
    encode_id,
    encode_poll,
    encode_token,
    parse_cursor,
)

TS = 1_764_144_000_000_150
SENT_AT = 1_764_144_000_000_000
ROOM_64 = "r" * 64
USER_32 = "u" * 32


def refused(code: str, build: Callable[[], object]) -> ProtocolError:
    """Run ``build``, expect a ProtocolError with ``code``, return it."""
    with pytest.raises(ProtocolError) as info:
        build()
    assert info.value.code == code, info.value
    return info.value


def client_code(data: bytes | str, **kwargs: Any) -> str:
    """The error code decode_client answers ``data`` with (fails if it accepts it)."""
    with pytest.raises(ProtocolError) as info:
        decode_client(data, **kwargs)
    return info.value.code


def send_json(**fields: object) -> str:
    return json.dumps({"type": "send_message", **fields})


# -- round trips ---------------------------------------------------------------------------

SERVER_MESSAGES: list[ServerMessage] = [
    NewMessage(
        id=17,
        room="general",
        sender="ada",
        text="Hi there!",
        client_msg_id="c0ffee-1",
        sent_at=SENT_AT,
        ts=TS,
    ),
    NewMessage(id=1, room=ROOM_64, sender=USER_32, text="x"),
    NewMessage(id=MAX_CURSOR, room="r", sender="b", text='é 😀 "quoted" \\ \x00', ts=0),
    UserJoined(id=18, room="general", user="bob"),
    UserLeft(id=19, room="general", user="bob"),
    Ack(client_msg_id="c0ffee-1", id=17),
    Ack(client_msg_id=None, id=1),
    Error(code="message_too_large", detail="text is 9000 characters; the limit is 4096"),
    Error(code="slow_consumer"),
    Gap(requested_after=3, oldest_available=412),
    Gap(requested_after=0, oldest_available=MAX_CURSOR),
]

CLIENT_MESSAGES: list[ClientMessage] = [
    SendMessage(room="general", text="Hello!", client_msg_id="c0ffee-1", sent_at=SENT_AT),
    SendMessage(room=None, text="room left to the URL"),
    SendMessage(room=ROOM_64, text="😀" * DEFAULT_MAX_TEXT, client_msg_id="c" * 64, sent_at=0),
    SendMessage(room="r", text="x", sent_at=2**53 - 1),
    LoginRequest(user="ada"),
    LoginRequest(user=USER_32),
    Hello(token="tok.en", room="general", after=5),
    Hello(token="", room="general"),
    Hello(token="t", room="r", after=0),
    Hello(token="t", room="r", after=MAX_CURSOR),
]


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: m.type)
def test_server_message_round_trips(message: ServerMessage) -> None:
    wire = encode(message)
    assert decode_server(wire) == message
    assert decode_server(wire.encode("utf-8")) == message
    assert json.loads(wire)["type"] == message.type


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=lambda m: m.type)
def test_client_message_round_trips(message: ClientMessage) -> None:
    wire = encode(message)
    assert decode_client(wire) == message
    assert decode_client(wire.encode("utf-8")) == message


def test_new_message_sender_is_from_on_the_wire() -> None:
    wire = json.loads(encode(SERVER_MESSAGES[0]))
    assert wire == {
        "type": "new_message",
        "id": 17,
        "room": "general",
        "from": "ada",
        "text": "Hi there!",
        "client_msg_id": "c0ffee-1",
        "sent_at": SENT_AT,
        "ts": TS,
    }
    decoded = decode_server(json.dumps(wire))
    assert isinstance(decoded, NewMessage)
    assert decoded.sender == "ada"


def test_new_message_without_from_is_bad_message() -> None:
    wire = json.loads(encode(SERVER_MESSAGES[0]))
    wire["sender"] = wire.pop("from")
    refused("bad_message", lambda: decode_server(json.dumps(wire)))


def test_login_round_trips_through_decode_login() -> None:
    assert decode_login(encode(LoginRequest(user="ada"))) == LoginRequest(user="ada")
    assert decode_login(b'{"user": "ada"}') == LoginRequest(user="ada")
    refused("bad_message", lambda: decode_login(b'{"user": "a/b"}'))
    refused("bad_message", lambda: decode_login(b"{}"))
    refused("bad_json", lambda: decode_login(b"{"))


# -- validation on construction ------------------------------------------------------------

BAD_ROOMS = ["", "r" * 65, "a/b", "../x", "a b", "café", "a\x00b", "a\nb", "a.b"]


@pytest.mark.parametrize("room", BAD_ROOMS)
@pytest.mark.parametrize(
    "build",
    [
        lambda room: SendMessage(room=room, text="x"),
        lambda room: NewMessage(id=1, room=room, sender="ada", text="x"),
        lambda room: UserJoined(id=1, room=room, user="ada"),
        lambda room: UserLeft(id=1, room=room, user="ada"),
        lambda room: Hello(token="t", room=room),
    ],
    ids=["SendMessage", "NewMessage", "UserJoined", "UserLeft", "Hello"],
)
def test_bad_room_is_refused_on_construction(room: str, build: Callable[[str], object]) -> None:
    refused("bad_room", lambda: build(room))


@pytest.mark.parametrize("user", ["", "u" * 33, "a/b", "a b", "ünï", None, 5])
@pytest.mark.parametrize(
    "build",
    [
        lambda user: LoginRequest(user=user),
        lambda user: NewMessage(id=1, room="r", sender=user, text="x"),
        lambda user: UserJoined(id=1, room="r", user=user),
        lambda user: UserLeft(id=1, room="r", user=user),
    ],
    ids=["LoginRequest", "NewMessage", "UserJoined", "UserLeft"],
)
def test_bad_user_is_bad_message(user: object, build: Callable[[object], object]) -> None:
    refused("bad_message", lambda: build(user))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: SendMessage(room="r", text=""), id="empty text"),
        pytest.param(lambda: SendMessage(room="r", text=5), id="int text"),
        pytest.param(lambda: SendMessage(room="r", text=None), id="None text"),
        pytest.param(lambda: SendMessage(room="r", text=b"x"), id="bytes text"),
        pytest.param(lambda: SendMessage(room="r", text="\ud800"), id="lone surrogate text"),
        pytest.param(lambda: NewMessage(id=1, room="r", sender="a", text=""), id="empty new"),
        pytest.param(lambda: SendMessage(room="r", text="x", client_msg_id="c" * 65), id="cmid 65"),
        pytest.param(lambda: SendMessage(room="r", text="x", client_msg_id=""), id="cmid empty"),
        pytest.param(lambda: SendMessage(room="r", text="x", client_msg_id=7), id="cmid int"),
        pytest.param(lambda: SendMessage(room="r", text="x", sent_at=True), id="sent_at bool"),
        pytest.param(lambda: SendMessage(room="r", text="x", sent_at=-1), id="sent_at negative"),
        pytest.param(lambda: SendMessage(room="r", text="x", sent_at=1.0), id="sent_at float"),
        pytest.param(lambda: SendMessage(room="r", text="x", sent_at=2**53), id="sent_at 2**53"),
        pytest.param(lambda: SendMessage(room="r", text="x", sent_at="1"), id="sent_at str"),
        pytest.param(
            lambda: NewMessage(id=1, room="r", sender="a", text="x", ts=2**53), id="ts 2**53"
        ),
        pytest.param(lambda: NewMessage(id=1, room="r", sender="a", text="x", ts=-1), id="ts -1"),
        pytest.param(lambda: NewMessage(id=0, room="r", sender="a", text="x"), id="new id 0"),
        pytest.param(lambda: NewMessage(id=-1, room="r", sender="a", text="x"), id="new id -1"),
        pytest.param(lambda: NewMessage(id=True, room="r", sender="a", text="x"), id="id bool"),
        pytest.param(lambda: NewMessage(id=1.0, room="r", sender="a", text="x"), id="id float"),
        pytest.param(
            lambda: NewMessage(id=MAX_CURSOR + 1, room="r", sender="a", text="x"), id="id 2**63"
        ),
        pytest.param(lambda: UserJoined(id=0, room="r", user="a"), id="joined id 0"),
        pytest.param(lambda: UserLeft(id=-5, room="r", user="a"), id="left id -5"),
        pytest.param(lambda: Ack(client_msg_id="c", id=0), id="ack id 0"),
        pytest.param(lambda: Ack(client_msg_id=3, id=1), id="ack cmid int"),
        pytest.param(lambda: Error(code="nope"), id="unknown error code"),
        pytest.param(lambda: Error(code="bad_json", detail=5), id="error detail int"),
        pytest.param(lambda: Gap(requested_after=-1, oldest_available=1), id="gap -1"),
        pytest.param(lambda: Gap(requested_after=0, oldest_available=1.5), id="gap float"),
        pytest.param(lambda: Gap(requested_after=MAX_CURSOR + 1, oldest_available=1), id="gap big"),
    ],
)
def test_bad_field_is_bad_message(build: Callable[[], object]) -> None:
    refused("bad_message", build)


@pytest.mark.parametrize("after", [-1, MAX_CURSOR + 1, True, 1.0, "3"])
def test_hello_bad_after_is_bad_cursor(after: object) -> None:
    refused("bad_cursor", lambda: Hello(token="t", room="r", after=after))


def test_limits_are_inclusive() -> None:
    SendMessage(room=ROOM_64, text="x", client_msg_id="c" * 64, sent_at=2**53 - 1)
    NewMessage(id=MAX_CURSOR, room=ROOM_64, sender=USER_32, text="x", ts=2**53 - 1)
    Gap(requested_after=MAX_CURSOR, oldest_available=0)


def test_protocol_error_carries_code_and_converts_to_error() -> None:
    exc = ProtocolError("rate_limited", "slow down")
    assert (exc.code, exc.detail) == ("rate_limited", "slow down")
    assert exc.to_message() == Error(code="rate_limited", detail="slow down")
    with pytest.raises(AssertionError):
        ProtocolError("no_such_code", "a programming error, not a protocol one")


# -- decode_client: every bad input has its code -------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        # not JSON at all
        (b"{", "bad_json"),
        (b"", "bad_json"),
        ("not json", "bad_json"),
        ('{"type": "send_message", "text": "x",}', "bad_json"),
        ("{'type': 'send_message'}", "bad_json"),
        # not UTF-8
        (b"\xff\xfe{}", "bad_json"),
        (b'{"type": "send_message", "text": "\xc3"}', "bad_json"),
        (b'{"type": "send_message", "text": "\xed\xa0\x80"}', "bad_json"),  # CESU surrogate
        (b"\xef\xbb\xbf{}", "bad_json"),  # UTF-8 BOM: json.loads refuses it
        # JSON, but not an object
        ("[]", "bad_message"),
        ("1", "bad_message"),
        ('"send_message"', "bad_message"),
        ("null", "bad_message"),
        ('[{"type": "send_message", "text": "x"}]', "bad_message"),
        # type
        ("{}", "bad_message"),
        ('{"type": null, "text": "x"}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": ["send_message"]}', "bad_message"),
        ('{"type": "nope"}', "unknown_type"),
        ('{"type": "new_message", "id": 1}', "unknown_type"),  # a server message
        ('{"type": "SEND_MESSAGE", "text": "x"}', "unknown_type"),
        (json.dumps({"type": "x" * 10_000}), "unknown_type"),
        # wrong types
        (send_json(), "bad_message"),
        (send_json(text=None), "bad_message"),
        (send_json(text=5), "bad_message"),
        (send_json(text=["x"]), "bad_message"),
        (send_json(text={"x": 1}), "bad_message"),
        (send_json(text=True), "bad_message"),
        (send_json(text=""), "bad_message"),
        (send_json(text="x", client_msg_id=5), "bad_message"),
        (send_json(text="x", client_msg_id=""), "bad_message"),
        (send_json(text="x", client_msg_id="c" * 65), "bad_message"),
        (send_json(text="x", sent_at="1"), "bad_message"),
        (send_json(text="x", sent_at=1.5), "bad_message"),
        (send_json(text="x", sent_at=1.0), "bad_message"),
        (send_json(text="x", sent_at=True), "bad_message"),
        (send_json(text="x", sent_at=-1), "bad_message"),
        (send_json(text="x", sent_at=2**53), "bad_message"),
        ('{"type": "send_message", "text": "x", "sent_at": 1e400}', "bad_message"),  # inf
        ('{"type": "login"}', "bad_message"),
        ('{"type": "login", "user": 5}', "bad_message"),
        (json.dumps({"type": "login", "user": "u" * 33}), "bad_message"),
        ('{"type": "hello", "room": "r", "token": 5}', "bad_message"),
        # rooms
        (send_json(text="x", room=""), "bad_room"),
        (send_json(text="x", room="a/b"), "bad_room"),
        (send_json(text="x", room="../x"), "bad_room"),
        (send_json(text="x", room="r" * 65), "bad_room"),
        (send_json(text="x", room="a b"), "bad_room"),
        (send_json(text="x", room="café"), "bad_room"),
        (send_json(text="x", room="a\x00b"), "bad_room"),
        (send_json(text="x", room=5), "bad_room"),
        ('{"type": "hello", "token": "t"}', "bad_room"),
        ('{"type": "hello", "token": "t", "room": "a/b"}', "bad_room"),
        ('{"type": "hello", "token": "t", "room": "r", "after": -1}', "bad_cursor"),
        (json.dumps({"type": "hello", "room": "r", "after": 2**63}), "bad_cursor"),
        # non-JSON constants
        ('{"type": "send_message", "text": "x", "sent_at": NaN}', "bad_json"),
        ('{"type": "send_message", "text": "x", "sent_at": Infinity}', "bad_json"),
        ('{"type": "send_message", "text": "x", "sent_at": -Infinity}', "bad_json"),
        ("NaN", "bad_json"),
        # lone surrogates: valid JSON escapes, not Unicode text
        (r'{"type": "send_message", "text": "\ud800"}', "bad_message"),
        (r'{"type": "send_message", "text": "a\udfffb"}', "bad_message"),
        (r'{"type": "send_message", "text": "x", "client_msg_id": "\ud800"}', "bad_message"),
        (r'{"type": "send_message", "text": "x", "room": "\ud800"}', "bad_room"),
    ],
)
def test_decode_client_error_codes(data: bytes | str, code: str) -> None:
    assert client_code(data) == code
    if isinstance(data, str):
        assert client_code(data.encode("utf-8", "surrogatepass")) == code


def test_hello_after_of_wrong_type_is_refused() -> None:
    # bad_message (a wrong type) and bad_cursor (not a cursor) are both defensible here.
    assert client_code('{"type": "hello", "room": "r", "after": "1"}') in {
        "bad_cursor",
        "bad_message",
    }
    assert client_code('{"type": "hello", "room": "r", "after": true}') in {
        "bad_cursor",
        "bad_message",
    }


def test_text_limit_default_counts_code_points() -> None:
    ok = decode_client(send_json(text="😀" * DEFAULT_MAX_TEXT, room="r"))
    assert isinstance(ok, SendMessage)
    assert len(ok.text) == DEFAULT_MAX_TEXT
    # 4096 emoji are 16 KiB of UTF-8 and 8192 UTF-16 units: neither is what is counted.
    ok_bytes = decode_client(send_json(text="😀" * DEFAULT_MAX_TEXT).encode("utf-8"))
    assert isinstance(ok_bytes, SendMessage)
    too_large = refused(
        "message_too_large", lambda: decode_client(send_json(text="😀" * (DEFAULT_MAX_TEXT + 1)))
    )
    assert "4097" in too_large.detail
    assert "4096" in too_large.detail
    assert client_code(send_json(text="a" * (DEFAULT_MAX_TEXT + 1))) == "message_too_large"


def test_text_limit_is_configurable() -> None:
    assert decode_client(send_json(text="é" * 10), max_text=10) == SendMessage(
        room=None, text="é" * 10
    )
    assert client_code(send_json(text="é" * 11), max_text=10) == "message_too_large"
    big = "x" * 10_000
    assert decode_client(send_json(text=big), max_text=10_000) == SendMessage(room=None, text=big)
    assert client_code(send_json(text=big + "x"), max_text=10_000) == "message_too_large"


def test_null_optional_fields_mean_absent() -> None:
    decoded = decode_client(send_json(text="x", room=None, client_msg_id=None, sent_at=None))
    assert decoded == SendMessage(room=None, text="x")


def test_unknown_fields_are_ignored() -> None:
    decoded = decode_client(send_json(text="x", extra={"a": [1, 2]}, id=5))
    assert decoded == SendMessage(room=None, text="x")


def _nested(depth: int) -> str:
    return '{"type": "login", "user": "ada", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_up_to_32_levels_is_accepted() -> None:
    assert decode_client(_nested(32)) == LoginRequest(user="ada")
    assert client_code(_nested(33)) == "bad_json"


@pytest.mark.parametrize(
    "data",
    [
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"type": "send_message", "text": "x", "x": ' + "[{" * 50_000 + "}]" * 50_000 + "}",
        "]" * 40 + "[" * 100_000,
    ],
    ids=["lists", "unclosed", "objects", "mixed", "unbalanced"],
)
def test_deep_nesting_is_bad_json_quickly(data: str) -> None:
    start = time.perf_counter()
    assert client_code(data) == "bad_json"
    assert client_code(data.encode("ascii")) == "bad_json"
    assert time.perf_counter() - start < 1.0


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 1000 + '\\"' + "{" * 1000
    decoded = decode_client('{"type": "send_message", "text": "' + text + '"}')
    assert decoded == SendMessage(room=None, text="[" * 1000 + '"' + "{" * 1000)


@pytest.mark.parametrize(
    "data",
    [
        "1" + "0" * 5000,
        "-" + "9" * 5000,
        '{"type": "send_message", "text": "x", "sent_at": 1' + "0" * 5000 + "}",
        '{"type": "hello", "room": "r", "after": 1' + "0" * 5000 + "}",
        '{"type": "send_message", "text": "x", "sent_at": 1' + "0" * 4000 + "}",
        '{"type": 1' + "0" * 4000 + "}",
        '{"type": "send_message", "text": "x", "sent_at": 1' + "0" * 100_000 + "}",
    ],
    ids=["top 5000", "negative", "sent_at 5000", "after 5000", "sent_at 4000", "type", "100k"],
)
def test_huge_integers_are_refused_not_crashing(data: str) -> None:
    start = time.perf_counter()
    code = client_code(data)
    assert code in {"bad_json", "bad_message", "bad_cursor"}
    assert time.perf_counter() - start < 1.0


# -- parse_cursor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("0", 0),
        ("17", 17),
        (" 17 ", 17),  # lenient: surrounding whitespace is stripped
        ("0017", 17),
        (str(MAX_CURSOR), MAX_CURSOR),
    ],
)
def test_parse_cursor_accepts(raw: str | None, expected: int | None) -> None:
    assert parse_cursor(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "-1",
        "+1",
        "1.5",
        "abc",
        "",
        "   ",
        str(MAX_CURSOR + 1),
        str(2**64),
        "1e3",
        "0x10",
        "1_000",
        "\u0661\u0667",  # Arabic-Indic 17: int() takes it, the protocol does not
        "\uff11\uff17",  # fullwidth 17
        "1 7",
        "9" * 10_000,
        "1" * 20,
    ],
)
def test_parse_cursor_refuses(raw: str) -> None:
    exc = refused("bad_cursor", lambda: parse_cursor(raw))
    assert len(exc.detail) < 200  # a 10000-digit cursor is not echoed back in full


# -- encoding ------------------------------------------------------------------------------

NEWLINE_TEXTS = ["a\nb", "a\r\nb", "\r", "a\u2028b", "\u2029", "\x85", "\x0b\x0c\x1c", "\n\n"]
SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@pytest.mark.parametrize("text", NEWLINE_TEXTS)
def test_encode_never_emits_a_raw_newline(text: str) -> None:
    messages: list[Any] = [
        NewMessage(id=1, room="r", sender="a", text=text, client_msg_id=text),
        SendMessage(room="r", text=text, client_msg_id=text),
        Error(code="bad_json", detail=text),
        Hello(token=text, room="r"),
    ]
    for message in messages:
        wire = encode(message)
        assert "\n" not in wire
        assert "\r" not in wire
        # What an SSE parser (and a TCP readline) splits on: one line, one data: field.
        assert SSE_LINE_BREAK.split(wire) == [wire]
        assert b"\n" not in wire.encode("utf-8")
    assert decode_server(encode(messages[0])) == messages[0]
    assert decode_client(encode(messages[1])) == messages[1]


def test_encode_is_compact_and_keeps_unicode() -> None:
    wire = encode(SendMessage(room="r", text="é😀"))
    assert wire == '{"type":"send_message","room":"r","text":"é😀"}'


def test_decode_poll_parses_encode_poll() -> None:
    events = [
        SERVER_MESSAGES[0],
        UserJoined(id=18, room="general", user="bob"),
        UserLeft(id=19, room="general", user="bob"),
    ]
    gap = Gap(requested_after=3, oldest_available=17)
    answer = encode_poll([encode(gap)] + [encode(e) for e in events], 19)
    assert decode_poll(answer) == ([gap, *events], 19)
    assert decode_poll(answer.encode("utf-8")) == ([gap, *events], 19)
    assert decode_poll(encode_poll([], 0)) == ([], 0)
    assert json.loads(encode_poll([], 7)) == {"events": [], "last_id": 7}


@pytest.mark.parametrize(
    "data",
    [
        "{}",
        '{"events": []}',
        '{"last_id": 1}',
        '{"events": {}, "last_id": 1}',
        '{"events": [], "last_id": "1"}',
        '{"events": [], "last_id": true}',
        '{"events": [], "last_id": 1.0}',
        '{"events": [1], "last_id": 1}',
        '{"events": [{"type": "user_joined", "id": 1, "room": "r"}], "last_id": 1}',
        "[]",
    ],
)
def test_decode_poll_refuses_bad_answers(data: str) -> None:
    refused("bad_message", lambda: decode_poll(data))


@pytest.mark.parametrize("msg_id", [1, 17, MAX_CURSOR])
def test_id_round_trips(msg_id: int) -> None:
    assert encode_id(msg_id) == '{"id":%d}' % msg_id
    assert decode_id(encode_id(msg_id)) == msg_id
    assert decode_id(encode_id(msg_id).encode("ascii")) == msg_id


@pytest.mark.parametrize(
    "data",
    [
        '{"id": 0}',
        '{"id": -1}',
        '{"id": "1"}',
        '{"id": true}',
        '{"id": 1.0}',
        "{}",
        "[1]",
        json.dumps({"id": MAX_CURSOR + 1}),
    ],
)
def test_decode_id_refuses(data: str) -> None:
    refused("bad_message", lambda: decode_id(data))


@pytest.mark.parametrize("token", ["abc", "eyJ1c2VyIjoiYWRhIn0.Zx-_1", 'quo"te\\', "é😀"])
def test_token_round_trips(token: str) -> None:
    assert decode_token(encode_token(token)) == token
    assert decode_token(encode_token(token).encode("utf-8")) == token


@pytest.mark.parametrize("data", ['{"token": ""}', '{"token": 5}', "{}", '"abc"', "{"])
def test_decode_token_refuses(data: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_token(data)
    assert info.value.code in {"bad_json", "bad_message"}


# -- regressions ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["[]", "{}", '["bad_json"]'])
def test_decode_server_error_with_unhashable_code_is_bad_message(code: str) -> None:
    data = '{"type": "error", "code": ' + code + "}"
    refused("bad_message", lambda: decode_server(data))


def test_decode_poll_error_with_unhashable_code_is_bad_message() -> None:
    data = '{"events": [{"type": "error", "code": []}], "last_id": 1}'
    refused("bad_message", lambda: decode_poll(data))


# -- properties ----------------------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates included
ANY_TEXT = st.text() | st.text(ANY_CHAR, max_size=30)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _field_values(*interesting: object) -> st.SearchStrategy[Any]:
    return st.sampled_from(interesting) | JSON_VALUES


CLIENT_FIELDS: dict[str, tuple[object, ...]] = {
    "type": ("send_message", "login", "hello", "new_message", "nope"),
    "room": ("general", "r" * 64, "r" * 65, "a/b", ""),
    "text": ("hi", "", "x" * 6, "😀" * 5),
    "client_msg_id": ("c1", "", "c" * 64, "c" * 65),
    "sent_at": (0, 1, -1, 2**53 - 1, 2**53, 1.5, True),
    "user": ("ada", "", "u" * 32, "u" * 33),
    "token": ("t", ""),
    "after": (0, -1, MAX_CURSOR, MAX_CURSOR + 1),
}

SERVER_FIELDS: dict[str, tuple[object, ...]] = {
    "type": ("new_message", "user_joined", "user_left", "ack", "error", "gap", "nope"),
    "id": (0, 1, MAX_CURSOR, MAX_CURSOR + 1, True),
    "room": ("general", "a/b"),
    "from": ("ada", "u" * 33),
    "user": ("ada", ""),
    "text": ("hi", ""),
    "client_msg_id": ("c1",),
    "sent_at": (0, -1, 2**53),
    "ts": (0, 2**53 - 1, 2**53),
    "code": tuple(sorted(ERROR_CODES)),
    "detail": ("why", ""),
    "requested_after": (0, -1, MAX_CURSOR),
    "oldest_available": (1, MAX_CURSOR + 1),
}


def _mutants(valid: list[Any], fields: dict[str, tuple[object, ...]]) -> st.SearchStrategy[Any]:
    """A valid message's JSON object with a few fields dropped, replaced or added.

    Starting from valid messages keeps a good share of examples decodable, so the property
    checks the success path as well as the refusals.
    """
    keys = sorted(fields)
    override = st.sampled_from(keys).flatmap(
        lambda key: st.tuples(st.just(key), _field_values(*fields[key]))
    )

    def mutate(
        base: dict[str, Any], drop: set[str], changes: list[tuple[str, Any]], extra: Any
    ) -> dict[str, Any]:
        obj = {**extra, **base}
        for key in drop:
            obj.pop(key, None)
        obj.update(changes)
        return obj

    return st.builds(
        mutate,
        st.sampled_from([message.to_dict() for message in valid]),
        st.sets(st.sampled_from(keys), max_size=2),
        st.lists(override, max_size=3),
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2),
    )


CLIENT_OBJECTS = _mutants([m for m in CLIENT_MESSAGES if len(encode(m)) < 1000], CLIENT_FIELDS)
SERVER_OBJECTS = _mutants(SERVER_MESSAGES, SERVER_FIELDS)


def _wire_forms(obj: object, ascii_only: bool) -> list[bytes | str]:
    text = json.dumps(obj, ensure_ascii=ascii_only)
    # surrogatepass: a lone surrogate in the text becomes invalid UTF-8, which must be bad_json
    return [text, text.encode("utf-8", "surrogatepass")]


def assert_client_total(data: bytes | str, max_text: int = DEFAULT_MAX_TEXT) -> None:
    """decode_client returns a valid message or raises ProtocolError with a known code."""
    try:
        message = decode_client(data, max_text=max_text)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        return
    assert isinstance(message, (SendMessage, LoginRequest, Hello))
    if isinstance(message, SendMessage):
        assert 1 <= len(message.text) <= max_text
    assert decode_client(encode(message), max_text=max_text) == message


def assert_server_total(data: bytes | str) -> None:
    """decode_server returns a valid message or raises ProtocolError with a known code."""
    try:
        message = decode_server(data)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        return
    assert isinstance(message, (NewMessage, UserJoined, UserLeft, Ack, Error, Gap))
    assert decode_server(encode(message)) == message


PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(st.binary())
def test_decode_any_bytes(data: bytes) -> None:
    assert_client_total(data)
    assert_server_total(data)


@PROPERTY
@given(ANY_TEXT)
def test_decode_any_text(data: str) -> None:
    assert_client_total(data)
    assert_server_total(data)


@PROPERTY
@given(JSON_VALUES, st.booleans())
def test_decode_any_json_value(value: object, ascii_only: bool) -> None:
    for data in _wire_forms(value, ascii_only):
        assert_client_total(data)
        assert_server_total(data)


@PROPERTY
@given(CLIENT_OBJECTS, st.booleans(), st.sampled_from([1, 5, DEFAULT_MAX_TEXT]))
def test_decode_client_any_object(obj: dict[str, Any], ascii_only: bool, max_text: int) -> None:
    for data in _wire_forms(obj, ascii_only):
        assert_client_total(data, max_text)


@PROPERTY
@given(SERVER_OBJECTS, st.booleans())
def test_decode_server_any_object(obj: dict[str, Any], ascii_only: bool) -> None:
    for data in _wire_forms(obj, ascii_only):
        assert_server_total(data)
    _assert_poll_total(encode_poll([json.dumps(obj)], 1))


def _assert_poll_total(data: bytes | str) -> None:
    try:
        events, last_id = decode_poll(data)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        return
    assert isinstance(last_id, int)
    assert all(decode_server(encode(e)) == e for e in events)


@PROPERTY
@given(st.binary() | ANY_TEXT)
def test_decode_poll_any_input(data: bytes | str) -> None:
    """Any bytes or text: a poll answer, or a clean ProtocolError (fast path included)."""
    _assert_poll_total(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(SERVER_OBJECTS, max_size=3), st.integers(0, 10) | JSON_VALUES)
def test_decode_poll_any_answer(objs: list[dict[str, Any]], last_id: object) -> None:
    _assert_poll_total(json.dumps({"events": objs, "last_id": last_id}))
