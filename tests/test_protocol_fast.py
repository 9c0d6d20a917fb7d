"""The fast decoding path accepts exactly what the validated path accepts, and builds the same.

``decode_server`` and ``decode_poll`` try orjson and inline checks first (what a load generator
decodes at every delivery) and fall back to the validated path for anything else. These
properties compare both on generated inputs: same message, or same error code and detail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirewise import protocol
from wirewise.protocol import (
    MAX_CLIENT_MSG_ID,
    MAX_CURSOR,
    MAX_NESTING,
    MAX_TIMESTAMP_US,
    NewMessage,
    ProtocolError,
    decode_poll,
    decode_server,
    encode,
)

VALID = NewMessage(
    id=42,
    room="broadcast-0",
    sender="pub",
    text="x" * 100,
    client_msg_id="0123456789abcdef",
    sent_at=1_764_144_000_000_000,
    ts=1_764_144_000_000_150,
)

BOUNDS = [0, 1, -1, MAX_CURSOR, MAX_CURSOR + 1, MAX_TIMESTAMP_US, MAX_TIMESTAMP_US + 1]
INTS = (
    st.sampled_from([*BOUNDS, 2**64 - 1, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, True, False])
    | st.integers()
)
FLOATS = st.sampled_from([0.0, -0.0, 1.0, 42.0, 1e300, 1.5]) | st.floats(allow_nan=False)
NAMES_AT_LIMITS = ["", "a", "broadcast-0", "pub", "a/b", "r" * 64, "r" * 65, "u" * 32, "u" * 33]
STRINGS = st.sampled_from(
    [*NAMES_AT_LIMITS, "c" * MAX_CLIENT_MSG_ID, "c" * (MAX_CLIENT_MSG_ID + 1), "é", "😀", "\ud800"]
) | st.text(st.characters(codec=None, exclude_categories=()), max_size=70)
DEEP = st.integers(MAX_NESTING - 2, MAX_NESTING + 2).map(lambda n: json.loads("[" * n + "]" * n))
VALUES = st.none() | INTS | FLOATS | STRINGS | DEEP | st.lists(INTS, max_size=2)
FIELDS = ["type", "id", "room", "from", "text", "client_msg_id", "sent_at", "ts", "extra"]


@st.composite
def new_message_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid new_message's JSON object with a few fields dropped or replaced."""
    obj = VALID.to_dict()
    for key in draw(st.sets(st.sampled_from(FIELDS), max_size=2)):
        obj.pop(key, None)
    for key, value in draw(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), max_size=3)):
        obj[key] = value
    return obj


NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
VALID_MESSAGES = st.builds(
    NewMessage,
    id=st.integers(1, MAX_CURSOR),
    room=NAMES,
    sender=NAMES.map(lambda name: name[:32]),
    text=st.text(min_size=1, max_size=50),
    client_msg_id=st.none() | st.text(min_size=1, max_size=MAX_CLIENT_MSG_ID),
    sent_at=st.none() | st.integers(0, MAX_TIMESTAMP_US),
    ts=st.integers(0, MAX_TIMESTAMP_US),
)
"""Valid messages of every shape (texts with any code point that is valid Unicode)."""


def wire_forms(obj: object, ascii_only: bool) -> list[bytes | str]:
    """The object as text and as bytes (a lone surrogate becomes invalid UTF-8)."""
    text = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":"))
    return [text, text.encode("utf-8", "surrogatepass")]


def outcome(decode: Any, data: bytes | str) -> tuple[Any, ...]:
    try:
        result = decode(data)
    except ProtocolError as exc:
        return ("refused", exc.code, exc.detail)
    return ("accepted", result)


def assert_same_server(data: bytes | str) -> None:
    assert outcome(decode_server, data) == outcome(protocol._decode_server_checked, data)


def assert_same_poll(data: bytes | str) -> None:
    assert outcome(decode_poll, data) == outcome(protocol._decode_poll_checked, data)


PROPERTY = settings(max_examples=600, deadline=None)


@PROPERTY
@given(new_message_objects(), st.booleans())
def test_fast_and_validated_decode_server_agree(obj: dict[str, Any], ascii_only: bool) -> None:
    for data in wire_forms(obj, ascii_only):
        assert_same_server(data)


@PROPERTY
@given(VALID_MESSAGES, st.booleans())
def test_fast_and_validated_agree_on_valid_messages(message: NewMessage, ascii_only: bool) -> None:
    for data in wire_forms(message.to_dict(), ascii_only):
        assert_same_server(data)
        assert decode_server(data) == message


@PROPERTY
@given(st.lists(new_message_objects(), max_size=3), INTS | FLOATS | st.none(), st.booleans())
def test_fast_and_validated_decode_poll_agree(
    objs: list[dict[str, Any]], last_id: object, ascii_only: bool
) -> None:
    for data in wire_forms({"events": objs, "last_id": last_id}, ascii_only):
        assert_same_poll(data)


@PROPERTY
@given(st.data())
def test_fast_and_validated_agree_on_edited_bytes(data: st.DataObject) -> None:
    """Byte-level edits of a valid message: truncations, stray bytes, doubled keys."""
    wire = bytearray(encode(VALID).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire)))
        edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.binary(min_size=1, max_size=4) | st.sampled_from(SNIPPETS))
        if edit == "insert":
            wire[at:at] = piece
        elif edit == "delete":
            del wire[at : at + len(piece)]
        else:
            wire[at : at + len(piece)] = piece
    assert_same_server(bytes(wire))
    assert_same_server(bytes(wire).decode("utf-8", "replace"))
    poll = protocol.encode_poll([bytes(wire).decode("utf-8", "replace")], 7).encode()
    assert_same_poll(poll)
    assert_same_poll(bytes(wire))  # not a poll answer at all: both paths refuse alike


SNIPPETS = [
    b'"id":7,',
    b'"id":1e2,',
    b'"ts":-0,',
    b'"id":18446744073709551616,',
    b"\\ud800",
    b"\xef\xbb\xbf",
    b" \t\r\n",
    b"\x0c",
    b"[[[[",
    b"]]]]",
    b"1e400",
    b"NaN",
]


@pytest.mark.parametrize(
    "data",
    [
        encode(VALID),
        encode(VALID).replace('"id":42', '"id":42.0'),
        encode(VALID).replace('"id":42', '"id":18446744073709551658'),
        encode(VALID).replace('"id":42', '"id":9223372036854775808'),
        encode(VALID).replace('"ts":', '"ts":-0,"x":'),
        encode(VALID).replace('"ts":', '"big":1' + "0" * 30 + ',"ts":'),
        encode(VALID).replace('"ts":', '"inf":1e400,"ts":'),
        encode(VALID).replace('"ts":', '"deep":' + "[" * 40 + "]" * 40 + ',"ts":'),
        encode(VALID).replace('"ts":', '"ok":' + "[" * 20 + "]" * 20 + ',"ts":'),
        encode(VALID).replace('"id":42', '"id":42,"id":43'),
        encode(VALID).replace('"id":42', '"id":true'),
        encode(VALID).replace('"text":"x', '"text":"\\ud800x'),
        encode(VALID).replace('"text":"x', '"text":"\\ud83d\\ude00x'),
        encode(VALID).replace('"text":"x', '"text":"\tx'),
        encode(VALID).replace('"client_msg_id":"0123456789abcdef"', '"client_msg_id":""'),
        encode(VALID).replace('"sent_at":1764144000000000', '"sent_at":null'),
        encode(VALID).replace('"ts":1764144000000150', '"ts":null'),
        "\ufeff" + encode(VALID),
        encode(VALID) + " ",
        encode(VALID) + "x",
    ],
)
def test_edge_cases_agree(data: str) -> None:
    poll = protocol.encode_poll([data], 7)
    for text in (data, poll):
        assert_same_server(text)
        assert_same_server(text.encode("utf-8", "surrogatepass"))
        assert_same_poll(text)
        assert_same_poll(text.encode("utf-8", "surrogatepass"))


def test_the_common_shape_takes_the_fast_path() -> None:
    """Guards the speed-up itself: a typical delivery must not fall back."""
    assert protocol._server_fast(encode(VALID)) == VALID
    assert protocol._server_fast(encode(VALID).encode()) == VALID
    assert protocol._poll_fast(protocol.encode_poll([encode(VALID)] * 2, 42)) == ([VALID] * 2, 42)
