"""Property tests of the codecs and validators that face hostile input (issue 14 item 9).

For any input, the STOMP codec (app/stomp/parser.py, frames.py), the presence line codec
(app/tcp_presence/codec.py) and the SEND payload validators (app/chat/payloads.py) raise
nothing but their own errors (the STOMP parser raises nothing at all: it records
``parser_exc``), however the bytes are chunked; and what the server writes, it reads back.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.chat import payloads
from app.errors import BadRequest, ProtocolError
from app.stomp.frames import CLIENT_COMMANDS, CONNECT, STOMP, Frame
from app.stomp.parser import HEARTBEAT_EVENT, FrameParser, Heartbeat
from app.tcp_presence.codec import (LineReader, LineTooLongEvent, RequestError, format_error, parse_request)

MAX_FRAME, MAX_LINES, MAX_HEADER_BYTES = 4096, 16, 1024
SETTINGS = settings(max_examples=300, deadline=None)


def parser(version: str = "1.2") -> FrameParser:
    parsed = FrameParser(max_frame_bytes=MAX_FRAME, max_header_lines=MAX_LINES, max_header_bytes=MAX_HEADER_BYTES)
    parsed.version = version
    return parsed


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


STOMPISH = st.lists(st.sampled_from([b"SEND\n", b"CONNECT\n", b"a:b\n", b"\\", b"\\c", b"\r\n", b"\n", b"\x00",
                                     b"content-length:5\n", b"content-length:99999999999\n", b"\xff",
                                     b"destination:/x\n", b"x" * 300]) | st.binary(max_size=20),
                    max_size=40).map(b"".join)


# -- STOMP ----------------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=2000) | STOMPISH, st.lists(st.integers(min_value=0), max_size=8),
       st.sampled_from(["1.0", "1.1", "1.2"]))
def test_the_stomp_parser_never_raises_whatever_the_bytes(data, cuts, version):
    stomp = parser(version)
    events = []
    for piece in chunked(data, cuts):
        stomp.receive_data(piece)
        events += stomp.events_received()
    stomp.receive_eof()
    assert stomp.parser_exc is None or isinstance(stomp.parser_exc, ProtocolError)
    assert all(isinstance(event, (Frame, Heartbeat)) for event in events)
    assert all(event.command in CLIENT_COMMANDS for event in events if isinstance(event, Frame))


HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@SETTINGS
@given(st.sampled_from(sorted(CLIENT_COMMANDS - {CONNECT, STOMP})),
       st.lists(st.tuples(HEADER_TEXT, HEADER_TEXT), max_size=6),
       st.binary(max_size=500), st.sampled_from(["1.1", "1.2"]), st.lists(st.integers(min_value=0), max_size=6))
def test_stomp_frames_round_trip_in_any_chunking(command, headers, body, version, cuts):
    assume(all(name != "content-length" for name, _ in headers))
    if version == "1.1":  # 1.1 cannot escape CR
        assume(all("\r" not in name + value for name, value in headers))
    frame = Frame(command, tuple(headers), body)
    wire = frame.serialize(version) + b"\n"  # and a heart-beat after it
    stomp = parser(version)
    events = []
    for piece in chunked(wire, cuts):
        stomp.receive_data(piece)
        events += stomp.events_received()
    if len(wire) > MAX_FRAME or sum(len(f"{n}:{v}") for n, v in headers) * 2 > MAX_HEADER_BYTES:
        return  # limits may refuse it; the first property covers that it fails cleanly
    assert stomp.parser_exc is None, stomp.parser_exc
    expected = headers + ([("content-length", str(len(body)))] if body else [])
    assert events == [Frame(command, tuple(expected), body), HEARTBEAT_EVENT]


# -- presence lines ------------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=10), st.integers(16, 256))
def test_the_line_reader_never_raises_and_bounds_every_line(data, cuts, max_line):
    reader = LineReader(max_line)
    for piece in chunked(data, cuts):
        for event in reader.feed(piece):
            assert isinstance(event, LineTooLongEvent) or (isinstance(event, bytes) and len(event) <= max_line)


PSEUDO = st.lists(st.sampled_from(["{", "}", "[", "]", "=", ",", "'", '"', "type", "null", "login", "5", " ",
                                   "\\", "'a'", "{type='login'", "session_id=", "ids=[1, 2]"]), max_size=30).map("".join)


@SETTINGS
@given(st.binary(max_size=500) | PSEUDO.map(str.encode))
def test_any_request_line_parses_or_is_a_request_error(line):
    try:
        request = parse_request(line)
    except RequestError as error:
        assert format_error(error.reason, error.syntax).endswith(b"\r\n")
        assert format_error(error.reason, error.syntax).count(b"\n") == 1
        return
    assert isinstance(request.fields, dict)


FIELD_VALUES = st.one_of(st.text(max_size=20), st.integers(-10**6, 10**12), st.booleans(),
                         st.lists(st.integers(0, 10**6), max_size=5))


@SETTINGS
@given(st.dictionaries(st.text(min_size=1, max_size=12), FIELD_VALUES, max_size=6))
def test_json_request_lines_round_trip(fields):
    line = json.dumps({"type": "login", **fields}).encode()
    request = parse_request(line)
    assert request.syntax == "json"
    # The text "null" means absent, as the Java servers write a missing value (codec docstring).
    assert dict(request.fields) == {"type": "login", **{k: v for k, v in fields.items() if v != "null"}}


# -- SEND payload validators ----------------------------------------------------------------------

KEYS = ["channelId", "communityId", "content", "name", "profileImage", "parentId", "id", "nonce", "channel_id",
        "community_id", "type", "userId"]
ANY_JSON: Any = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                             lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                             max_leaves=8)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), ANY_JSON | st.sampled_from(["5", "c-12", "r-7", "home", "a" * 24,
                                                                               "Optional(5)", "0", "-1"]), max_size=8)
VALIDATORS = [
    lambda body: payloads.parse_send_message(body, "direct", 100),
    lambda body: payloads.parse_send_message(body, "community", 100, "key"),
    lambda body: payloads.parse_send_reply(body, "community", 100),
    lambda body: payloads.parse_typing(body, "direct"),
    lambda body: payloads.parse_modify(body, "direct", 100),
    lambda body: payloads.parse_delete(body, "community"),
    payloads.parse_join,
    payloads.parse_community_signaling,
    payloads.parse_voice_signaling,
]


@SETTINGS
@given(st.sampled_from(range(len(VALIDATORS))), st.binary(max_size=300) | OBJECTS.map(lambda o: json.dumps(o).encode()))
def test_validators_accept_or_refuse_with_bad_request_nothing_else(which, body):
    try:
        VALIDATORS[which](body)
    except BadRequest as error:
        assert error.message and "\n" not in error.message


@SETTINGS
@given(st.integers(1, 2**53), st.text(min_size=1, max_size=100).filter(lambda t: t.strip()),
       st.none() | st.text(max_size=20), st.none() | st.text(max_size=20, alphabet="abc-_0123456789"))
def test_a_valid_message_round_trips(channel, content, name, nonce):
    body = {"channelId": channel, "content": content, "name": name}
    if nonce:
        body["nonce"] = nonce
    try:
        parsed = payloads.parse_send_message(json.dumps(body).encode(), "direct", 100)
    except BadRequest:
        assume(False)  # e.g. control characters the validator refuses on purpose
    assert (parsed.room.channel_id, parsed.content, parsed.name) == (channel, content, name)
    assert parsed.nonce == (nonce or None)
