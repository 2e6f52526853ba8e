"""Byte-exact tests of the presence line codec (app.tcp_presence.codec).

protocol.md §7.1 (CRLF framing), §7.2 (the pseudo-JSON the Java servers send, every
line of which is parsed here verbatim), §7.3 (reply texts). Framing vectors are fed
three ways: whole, one byte at a time, and split in two at every position.
"""

from __future__ import annotations

import pytest

from app.tcp_presence.codec import (
    CRLF,
    DEFAULT_REPLY,
    NODE_ID_PATTERN,
    LineReader,
    LineTooLongEvent,
    Reply,
    Request,
    RequestError,
    format_error,
    format_reply,
    legacy_id_list,
    legacy_pair,
    occupancy_json,
    parse_request,
)


def feed_three_ways(data: bytes, max_line_bytes: int = 64) -> list[list[bytes | LineTooLongEvent]]:
    """The events of ``data`` fed whole, byte by byte, and split at every position."""
    results = []
    whole = LineReader(max_line_bytes)
    results.append(whole.feed(data))
    by_byte = LineReader(max_line_bytes)
    results.append([event for i in range(len(data)) for event in by_byte.feed(data[i:i + 1])])
    for cut in range(len(data) + 1):
        split = LineReader(max_line_bytes)
        results.append(split.feed(data[:cut]) + split.feed(data[cut:]))
    return results


# -- §7.1 framing -------------------------------------------------------------------------------


FRAMING_CASES: list[tuple[bytes, list[bytes | LineTooLongEvent]]] = [
    (b"one\r\n", [b"one"]),
    (b"one\r\ntwo\r\n", [b"one", b"two"]),
    (b"one\r\ntwo", [b"one"]),  # an unterminated line stays buffered
    (b"\r\n", [b""]),
    (b"bare lf\n", [b"bare lf"]),
    (b"a\rb\r\n", [b"a\rb"]),  # a lone CR is data
    (b"x" * 64 + b"\r\n", [b"x" * 64]),  # exactly the limit
    (b"x" * 65 + b"\r\nnext\r\n", [LineTooLongEvent(b"x" * 16), b"next"]),
    (b"x" * 200 + b"\r\nnext\r\n", [LineTooLongEvent(b"x" * 16), b"next"]),
]


@pytest.mark.parametrize("data,expected", FRAMING_CASES)
def test_line_reader_vectors_fed_three_ways(data: bytes, expected: list[bytes | LineTooLongEvent]) -> None:
    for events in feed_three_ways(data):
        assert events == expected


def test_oversize_line_is_reported_before_its_end_arrives() -> None:
    reader = LineReader(16)
    assert reader.feed(b"y" * 17) == []  # 17 bytes may still be 16 + CR
    assert reader.feed(b"y") == [LineTooLongEvent(b"y" * 16)]
    assert reader.feed(b"z" * 1000) == []  # discarded, not buffered
    assert reader.feed(b"\r\n{ok}\r\n") == [b"{ok}"]


def test_limit_plus_cr_is_not_too_long() -> None:
    reader = LineReader(4)
    assert reader.feed(b"abcd\r") == []
    assert reader.feed(b"\n") == [b"abcd"]


def test_too_long_event_remembers_the_syntax_of_its_sender() -> None:
    assert LineTooLongEvent(b'{"type":"sync","').syntax == "json"
    assert LineTooLongEvent(b"{type='direct', s").syntax == "legacy"


# -- §7.2 requests ------------------------------------------------------------------------------


LEGACY_LINES = {
    "login": b"{type='login', session_id='3kf9a2xq', user_id='5', channel_id='null', community_id='null', ids=null}",
    "logout": b"{type='logout', session_id='3kf9a2xq', user_id='null', channel_id='null', community_id='null', ids=null}",
    "state": b"{type='state', session_id='null', user_id='5', channel_id='c-12', community_id='null', ids=null}",
    "direct": b"{type='direct', session_id='null', user_id='null', channel_id='null', community_id='r-17', ids=[9, 12]}",
    "community": b"{type='community', session_id='null', user_id='null', channel_id='null', community_id='c-8', "
                 b"ids=[9, 12, 30]}",
    "before-enter": b"{type='before-enter', session_id='null', user_id='5', channel_id='null', community_id='3', "
                    b"ids=null}",
    "enter": b"{type='enter', session_id='null', user_id='5', channel_id='c-12', community_id='3', ids=null}",
    "signaling": b"{type='signaling', user_id='5', community_id='3', channel_id='c-12'}",
    "signaling-dm": b"{type='signaling', user_id='5', community_id='null', channel_id='r-17'}",
}

LEGACY_FIELDS = {
    "login": {"type": "login", "session_id": "3kf9a2xq", "user_id": "5"},
    "logout": {"type": "logout", "session_id": "3kf9a2xq"},
    "state": {"type": "state", "user_id": "5", "channel_id": "c-12"},
    "direct": {"type": "direct", "community_id": "r-17", "ids": [9, 12]},
    "community": {"type": "community", "community_id": "c-8", "ids": [9, 12, 30]},
    "before-enter": {"type": "before-enter", "user_id": "5", "community_id": "3"},
    "enter": {"type": "enter", "user_id": "5", "channel_id": "c-12", "community_id": "3"},
    "signaling": {"type": "signaling", "user_id": "5", "community_id": "3", "channel_id": "c-12"},
    "signaling-dm": {"type": "signaling", "user_id": "5", "channel_id": "r-17"},
}


@pytest.mark.parametrize("name", sorted(LEGACY_LINES))
def test_parses_every_line_the_java_servers_send(name: str) -> None:
    request = parse_request(LEGACY_LINES[name])
    assert request.syntax == "legacy"
    assert dict(request.fields) == LEGACY_FIELDS[name]


def test_parses_json_and_treats_null_as_absent() -> None:
    request = parse_request(b'{"type":"login","session_id":"s1","user_id":5,"node_id":"n1","channel_id":null}')
    assert request.syntax == "json"
    assert dict(request.fields) == {"type": "login", "session_id": "s1", "user_id": 5, "node_id": "n1"}


@pytest.mark.parametrize("line", [
    b"{type=\"login\"; user_id=5}",  # double quotes, ';' separators, bare number
    b"{ 'type' : 'login' , 'user_id' : '5' }",  # quoted names, ':' and spaces
    b"{type=>'login', user_id='5'}",  # Gson's '=>'
])
def test_accepts_the_lenient_variants_gson_accepted(line: bytes) -> None:
    request = parse_request(line)
    assert request.type == "login"
    assert request.text("user_id") == "5"


def test_nested_lists_parse_for_sync() -> None:
    request = parse_request(b"{type='sync', node_id='n1', sessions=[['a', '5'], [b, 6]]}")
    assert request.fields["sessions"] == [["a", "5"], ["b", 6]]


@pytest.mark.parametrize("line,syntax", [
    (b"", "legacy"),
    (b"garbage", "legacy"),
    (b"{type='login'", "legacy"),
    (b"{type='login'} trailing", "legacy"),
    (b"{type='it''s'}", "legacy"),  # W-6: a quote inside a value breaks the line
    (b"{type=}", "legacy"),
    (b"[1, 2]", "legacy"),
    (b"{" * 50 + b"}" * 50, "legacy"),
    (b'{"type":"login",}', "json"),
    (b'{"type": "login"', "json"),
    (b'{"type":"\xff"}', "json"),
])
def test_malformed_lines_raise_with_the_syntax_they_seemed_to_use(line: bytes, syntax: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(line)
    assert caught.value.reason == "malformed request"
    assert caught.value.syntax == syntax


def test_untyped_field_accessors() -> None:
    """Ids, room keys and locations are typed by app.tcp_presence.fields (test_presence_fields)."""
    request = Request("json", {"community_id": 3, "node_id": "n 1", "flag": "yes", "on": True})
    with pytest.raises(RequestError, match="missing field session_id"):
        request.text("session_id")
    with pytest.raises(RequestError, match="invalid field node_id"):
        request.matching("node_id", NODE_ID_PATTERN)
    with pytest.raises(RequestError, match="invalid field flag"):
        request.flag("flag", True)
    assert request.text("community_id") == "3"
    assert request.text("absent", required=False) is None
    assert request.flag("on", False) is True
    assert request.flag("absent", False) is False


def test_booleans_are_not_text() -> None:
    with pytest.raises(RequestError, match="invalid field user_id"):
        Request("json", {"user_id": True}).text("user_id")


# -- §7.3 replies -------------------------------------------------------------------------------


def test_default_reply_bytes_are_exactly_the_originals() -> None:
    assert format_reply(Reply(), "legacy") == bytes.fromhex("eb b0 98 ed 99 98 eb a9 94 ec 84 b8 ec a7 80 0d 0a")
    assert DEFAULT_REPLY.encode("utf-8") + CRLF == format_reply(Reply(), "legacy")


def test_json_replies_are_one_compact_ascii_line() -> None:
    line = format_reply(Reply("ignored", {"first_session": True}), "json")
    assert line == b'{"ok":true,"first_session":true}\r\n'
    assert format_reply(Reply("x", {"state": '{"12":["5"]}'}), "json") == b'{"ok":true,"state":"{\\"12\\":[\\"5\\"]}"}\r\n'


def test_error_replies_in_kind() -> None:
    assert format_error("missing field user_id", "legacy") == b"ERROR missing field user_id\r\n"
    assert format_error("unknown type", "json") == b'{"ok":false,"error":"unknown type"}\r\n'


def test_json_reply_escapes_line_breaks_inside_values() -> None:
    line = format_reply(Reply(fields={"location": "a\r\nb"}), "json")
    assert line.count(b"\r\n") == 1 and line.endswith(b"\r\n")


@pytest.mark.parametrize("first,second,text", [
    (5, "c-12", "5,c-12"),
    (5, "com3,c-7", "5,com3,c-7"),
    (None, None, "null,null"),
    (None, "c-12", "null,c-12"),
])
def test_legacy_pairs(first: object, second: object, text: str) -> None:
    assert legacy_pair(first, second) == text


def test_legacy_id_list_is_a_java_list() -> None:
    assert legacy_id_list([2, 3]) == "[2, 3]"
    assert legacy_id_list([]) == "[]"


def test_occupancy_json_has_no_spaces_and_string_ids() -> None:
    assert occupancy_json({14: [], 12: [9, 5]}) == '{"12":["5","9"],"14":[]}'
    assert occupancy_json({}) == "{}"
