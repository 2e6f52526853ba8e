"""Byte-exact tests of the sans-I/O STOMP parser (app.stomp.parser).

Every vector in ``SIMPLE_CASES`` is fed three ways by ``feed_three_ways`` (whole, one
byte at a time, and followed by the start of another frame) and, because those vectors
are canonical, is also what ``Frame.serialize`` must produce. ``TOLERATED_CASES`` are
inputs the parser accepts that a serializer would spell differently.
"""

from __future__ import annotations

import time

import pytest

from app.errors import FrameTooLarge, InvalidFrame
from app.stomp.frames import ALL_COMMANDS, Frame
from app.stomp.parser import HEARTBEAT_EVENT, FrameParser, Heartbeat, negotiate_version

LIMITS = {"max_frame_bytes": 4096, "max_header_lines": 32, "max_header_bytes": 1024}


def make_parser(*, accepted_commands: frozenset[str] = ALL_COMMANDS, **limits: int) -> FrameParser:
    """A parser with roomy limits; the vector tests also parse the server's own frames."""
    return FrameParser(**{**LIMITS, **limits}, accepted_commands=accepted_commands)


def frames_only(events: list[Frame | Heartbeat]) -> list[Frame]:
    return [event for event in events if isinstance(event, Frame)]


SIMPLE_CASES: list[tuple[bytes, Frame]] = [
    # Client frames. CONNECT headers are never escaped, so ":" and "\n" stay literal.
    (
        b"CONNECT\naccept-version:1.2\nhost:chat.example\nlogin:alice\npasscode:s3:cr\\et\n"
        b"heart-beat:10000,10000\n\n\x00",
        Frame(
            "CONNECT",
            (
                ("accept-version", "1.2"),
                ("host", "chat.example"),
                ("login", "alice"),
                ("passcode", "s3:cr\\et"),
                ("heart-beat", "10000,10000"),
            ),
        ),
    ),
    (
        b"STOMP\naccept-version:1.1,1.2\nhost:chat.example\n\n\x00",
        Frame("STOMP", (("accept-version", "1.1,1.2"), ("host", "chat.example"))),
    ),
    (
        b'SEND\ndestination:/app/chat.send\ncontent-type:application/json\ncontent-length:13\n\n{"text":"hi"}\x00',
        Frame(
            "SEND",
            (
                ("destination", "/app/chat.send"),
                ("content-type", "application/json"),
                ("content-length", "13"),
            ),
            b'{"text":"hi"}',
        ),
    ),
    (
        b"SUBSCRIBE\nid:sub-0\ndestination:/topic/room.42\nack:auto\n\n\x00",
        Frame("SUBSCRIBE", (("id", "sub-0"), ("destination", "/topic/room.42"), ("ack", "auto"))),
    ),
    (b"UNSUBSCRIBE\nid:sub-0\n\n\x00", Frame("UNSUBSCRIBE", (("id", "sub-0"),))),
    (b"ACK\nid:m-1\n\n\x00", Frame("ACK", (("id", "m-1"),))),
    (b"NACK\nid:m-1\ntransaction:tx1\n\n\x00", Frame("NACK", (("id", "m-1"), ("transaction", "tx1")))),
    (b"BEGIN\ntransaction:tx1\n\n\x00", Frame("BEGIN", (("transaction", "tx1"),))),
    (b"COMMIT\ntransaction:tx1\n\n\x00", Frame("COMMIT", (("transaction", "tx1"),))),
    (b"ABORT\ntransaction:tx1\n\n\x00", Frame("ABORT", (("transaction", "tx1"),))),
    (b"DISCONNECT\nreceipt:77\n\n\x00", Frame("DISCONNECT", (("receipt", "77"),))),
    (b"DISCONNECT\n\n\x00", Frame("DISCONNECT")),
    # Server frames.
    (
        b"CONNECTED\nversion:1.2\nheart-beat:10000,10000\nsession:s-1\nserver:smooth\n\n\x00",
        Frame(
            "CONNECTED",
            (("version", "1.2"), ("heart-beat", "10000,10000"), ("session", "s-1"), ("server", "smooth")),
        ),
    ),
    (
        b"MESSAGE\ndestination:/topic/room.42\ncontent-type:text/plain;charset=UTF-8\nsubscription:sub-0\n"
        b"message-id:m-1\ncontent-length:5\n\nhello\x00",
        Frame(
            "MESSAGE",
            (
                ("destination", "/topic/room.42"),
                ("content-type", "text/plain;charset=UTF-8"),
                ("subscription", "sub-0"),
                ("message-id", "m-1"),
                ("content-length", "5"),
            ),
            b"hello",
        ),
    ),
    (b"RECEIPT\nreceipt-id:77\n\n\x00", Frame("RECEIPT", (("receipt-id", "77"),))),
    (
        b"ERROR\nmessage:malformed frame\nreceipt-id:77\ncontent-type:text/plain\ncontent-length:7\n\ndetails\x00",
        Frame(
            "ERROR",
            (
                ("message", "malformed frame"),
                ("receipt-id", "77"),
                ("content-type", "text/plain"),
                ("content-length", "7"),
            ),
            b"details",
        ),
    ),
    # A ":" inside a 1.2 value travels escaped as \c.
    (
        b"SEND\ndestination:/topic/chat\\croom1\n\n\x00",
        Frame("SEND", (("destination", "/topic/chat:room1"),)),
    ),
    # Repeated headers are all kept, in order.
    (
        b"SEND\ndestination:/a\nfoo:first\nfoo:second\n\n\x00",
        Frame("SEND", (("destination", "/a"), ("foo", "first"), ("foo", "second"))),
    ),
    # Every 1.2 escape, in a name and in a value.
    (
        b"SEND\ndestination:/a\nkey\\c\\\\:a\\cb\\nc\\rd\\\\e\n\n\x00",
        Frame("SEND", (("destination", "/a"), ("key:\\", "a:b\nc\rd\\e"))),
    ),
    # content-length lets the body carry NUL octets.
    (
        b"SEND\ndestination:/a\ncontent-length:5\n\na\x00b\x00c\x00",
        Frame("SEND", (("destination", "/a"), ("content-length", "5")), b"a\x00b\x00c"),
    ),
    (b"SEND\ndestination:/a\nempty:\n\n\x00", Frame("SEND", (("destination", "/a"), ("empty", "")))),
    (
        "SEND\ndestination:/topic/café\n\n\x00".encode(),
        Frame("SEND", (("destination", "/topic/café"),)),
    ),
]

TOLERATED_CASES: list[tuple[bytes, Frame]] = [
    # A raw ":" in a value: split at the first colon only.
    (
        b"SUBSCRIBE\nid:0\ndestination:/topic/chat:room1\n\n\x00",
        Frame("SUBSCRIBE", (("id", "0"), ("destination", "/topic/chat:room1"))),
    ),
    # No content-length: the body ends at the first NUL.
    (b"SEND\ndestination:/a\n\nhello\x00", Frame("SEND", (("destination", "/a"),), b"hello")),
    # CRLF line ends, including the blank line.
    (
        b"SEND\r\ndestination:/a\r\ncontent-length:2\r\n\r\nhi\x00",
        Frame("SEND", (("destination", "/a"), ("content-length", "2")), b"hi"),
    ),
    # Leading zeros are still a number.
    (b"SEND\ncontent-length:002\n\nhi\x00", Frame("SEND", (("content-length", "002"),), b"hi")),
]

TRAILING = b"SEND\ndestin"
TRAILING_REST = b"ation:/queue/a\n\n\x00"
TRAILING_FRAME = Frame("SEND", (("destination", "/queue/a"),))


def feed_three_ways(data: bytes, expected: Frame) -> None:
    """Feed ``data`` whole, one byte at a time, and with trailing bytes (h11's ``tr``)."""
    parser = make_parser()
    parser.receive_data(data)
    assert parser.parser_exc is None
    assert parser.events_received() == [expected]

    parser = make_parser()
    for index in range(len(data) - 1):
        parser.receive_data(data[index : index + 1])
        assert frames_only(parser.events_received()) == [], f"frame before byte {index + 1}"
    parser.receive_data(data[-1:])
    assert parser.parser_exc is None
    assert parser.events_received() == [expected]

    parser = make_parser()
    parser.receive_data(data + TRAILING)
    assert parser.events_received() == [expected]
    assert parser.parser_exc is None
    parser.receive_data(TRAILING_REST)
    assert parser.events_received() == [TRAILING_FRAME]
    assert parser.parser_exc is None


class TestSimpleCases:
    """STOMP 1.2 "STOMP Frames": each vector parses identically however it is chunked."""

    @pytest.mark.parametrize(("data", "expected"), SIMPLE_CASES + TOLERATED_CASES)
    def test_parse(self, data: bytes, expected: Frame) -> None:
        feed_three_ways(data, expected)

    @pytest.mark.parametrize(("data", "expected"), SIMPLE_CASES)
    def test_serialize(self, data: bytes, expected: Frame) -> None:
        assert expected.serialize() == data

    def test_every_client_command_is_covered(self) -> None:
        from app.stomp.frames import CLIENT_COMMANDS, SERVER_COMMANDS

        covered = {frame.command for _, frame in SIMPLE_CASES}
        assert CLIENT_COMMANDS | SERVER_COMMANDS <= covered

    def test_several_frames_in_one_chunk(self) -> None:
        parser = make_parser()
        parser.receive_data(b"".join(data for data, _ in SIMPLE_CASES))
        assert parser.parser_exc is None
        assert parser.events_received() == [frame for _, frame in SIMPLE_CASES]


class TestRepeatedHeaderEntries:
    """STOMP 1.2 "Repeated Header Entries": all kept, the first one wins."""

    def test_first_value_wins(self) -> None:
        parser = make_parser()
        parser.receive_data(b"SEND\ndestination:/a\ndestination:/b\n\n\x00")
        (frame,) = parser.events_received()
        assert isinstance(frame, Frame)
        assert frame.header("destination") == "/a"
        assert frame.headers == (("destination", "/a"), ("destination", "/b"))

    def test_first_content_length_wins(self) -> None:
        parser = make_parser()
        parser.receive_data(b"SEND\ncontent-length:1\ncontent-length:3\n\na\x00")
        assert parser.parser_exc is None
        assert frames_only(parser.events_received())[0].body == b"a"


ERROR_CASES: list[tuple[bytes, type[Exception], str]] = [
    (b"SEND\nfoo:a\\tb\n\n\x00", InvalidFrame, "undefined escape sequence"),
    (b"SEND\nfoo:ends\\\n\n\x00", InvalidFrame, "undefined escape sequence"),
    (b"SEND\nfo\\xo:a\n\n\x00", InvalidFrame, "undefined escape sequence"),
    (b"SEND\ndestination:/\xff\n\n\x00", InvalidFrame, "invalid UTF-8 in header"),
    (b"SE\xc3ND\n\n\x00", InvalidFrame, "invalid UTF-8 in command"),
    (b"FOO\n\n\x00", InvalidFrame, "unknown command"),
    (b"send\n\n\x00", InvalidFrame, "unknown command"),
    (b"THIS-IS-NOT-A-COMMAND", InvalidFrame, "unknown command"),  # caught before any LF
    (b"SEND\nno colon here\n\n\x00", InvalidFrame, "header line without ':'"),
    (b"SEND\n:value\n\n\x00", InvalidFrame, "empty header name"),
    (b"SEND\ncontent-length:abc\n\n\x00", InvalidFrame, "invalid content-length"),
    (b"SEND\ncontent-length:-1\n\n\x00", InvalidFrame, "invalid content-length"),
    (b"SEND\ncontent-length:+1\n\na\x00", InvalidFrame, "invalid content-length"),
    (b"SEND\ncontent-length: 1\n\na\x00", InvalidFrame, "invalid content-length"),
    (b"SEND\ncontent-length:\n\n\x00", InvalidFrame, "invalid content-length"),
    (b"SEND\ncontent-length:1\n\nab\x00", InvalidFrame, "not terminated by NUL"),
    (b"SEND\ncontent-length:" + b"9" * 5000 + b"\n\n", FrameTooLarge, "max_frame_bytes"),
]


class TestProtocolErrors:
    """STOMP 1.2 "Value Encoding" and "Augmented BNF": violations are recorded, never raised."""

    @pytest.mark.parametrize(("data", "exc_type", "message"), ERROR_CASES)
    def test_violation_sets_parser_exc(self, data: bytes, exc_type: type[Exception], message: str) -> None:
        parser = make_parser(max_header_bytes=8192, max_frame_bytes=8192)
        parser.receive_data(data)
        assert type(parser.parser_exc) is exc_type
        assert message in str(parser.parser_exc)
        assert parser.events_received() == []

    @pytest.mark.parametrize(("data", "exc_type", "message"), ERROR_CASES)
    def test_violation_byte_by_byte(self, data: bytes, exc_type: type[Exception], message: str) -> None:
        parser = make_parser(max_header_bytes=8192, max_frame_bytes=8192)
        for index in range(len(data)):
            parser.receive_data(data[index : index + 1])
        assert type(parser.parser_exc) is exc_type
        assert message in str(parser.parser_exc)

    def test_server_commands_refused_by_default(self) -> None:
        parser = FrameParser(max_frame_bytes=4096, max_header_lines=32, max_header_bytes=1024)
        parser.receive_data(b"MESSAGE\ndestination:/a\n\n\x00")
        assert isinstance(parser.parser_exc, InvalidFrame)

    def test_frames_before_the_error_are_kept_and_later_data_ignored(self) -> None:
        parser = make_parser()
        parser.receive_data(b"BEGIN\ntransaction:t\n\n\x00BOGUS\n\n\x00BEGIN\n\n\x00")
        assert parser.events_received() == [Frame("BEGIN", (("transaction", "t"),))]
        first_error = parser.parser_exc
        assert isinstance(first_error, InvalidFrame)
        parser.receive_data(b"COMMIT\n\n\x00")
        parser.receive_eof()
        assert parser.events_received() == []
        assert parser.parser_exc is first_error

    def test_unescape_error_message_is_generic(self) -> None:
        parser = make_parser()
        parser.receive_data(b"SEND\nsecret:pass\\qword\n\n\x00")
        assert parser.parser_exc is not None
        assert "pass" not in str(parser.parser_exc)


class TestVersions:
    """STOMP 1.2 "Value Encoding": escapes differ per version; CONNECT is never unescaped."""

    def test_default_version_is_1_2(self) -> None:
        assert make_parser().version == "1.2"

    def test_1_0_does_not_unescape(self) -> None:
        parser = make_parser()
        parser.version = "1.0"
        parser.receive_data(b"SEND\ndestination:/a\\cb\\t\n\n\x00")
        assert parser.events_received() == [Frame("SEND", (("destination", "/a\\cb\\t"),))]

    def test_1_1_has_no_carriage_return_escape(self) -> None:
        parser = make_parser()
        parser.version = "1.1"
        parser.receive_data(b"SEND\nfoo:a\\c\\n\\\\\n\n\x00SEND\nfoo:a\\r\n\n\x00")
        assert parser.events_received() == [Frame("SEND", (("foo", "a:\n\\"),))]
        assert isinstance(parser.parser_exc, InvalidFrame)

    def test_connect_headers_are_never_unescaped(self) -> None:
        parser = make_parser()
        parser.receive_data(b"CONNECT\naccept-version:1.2\npasscode:a\\tb\n\n\x00")
        assert parser.parser_exc is None
        (frame,) = parser.events_received()
        assert isinstance(frame, Frame)
        assert frame.header("passcode") == "a\\tb"

    @pytest.mark.parametrize(
        ("accept_version", "expected"),
        [(None, "1.0"), ("1.0", "1.0"), ("1.0,1.1", "1.1"), ("1.1,1.2", "1.2"), ("9.9", "1.2")],
    )
    def test_connect_adopts_negotiated_version(self, accept_version: str | None, expected: str) -> None:
        # Frames pipelined behind CONNECT are parsed before the handler can set the version.
        header = b"" if accept_version is None else b"accept-version:" + accept_version.encode() + b"\n"
        parser = make_parser()
        parser.receive_data(b"CONNECT\n" + header + b"\n\x00")
        assert parser.version == expected

    def test_frame_pipelined_behind_1_0_connect_is_read_as_1_0(self) -> None:
        parser = make_parser()
        parser.receive_data(b"CONNECT\nhost:x\n\n\x00SEND\ndestination:/a\\b\n\n\x00")
        assert parser.parser_exc is None
        assert frames_only(parser.events_received())[1].header("destination") == "/a\\b"

    def test_unsupported_version_refused(self) -> None:
        with pytest.raises(ValueError):
            make_parser().version = "2.0"


class TestNegotiateVersion:
    """STOMP 1.2 "Protocol Negotiation": the highest version both sides support."""

    @pytest.mark.parametrize(
        ("accept_version", "expected"),
        [
            (None, "1.0"),
            ("1.0", "1.0"),
            ("1.1", "1.1"),
            ("1.2", "1.2"),
            ("1.0,1.1,1.2", "1.2"),
            ("1.2,1.0", "1.2"),
            ("1.0,1.1", "1.1"),
            ("1.1, 1.2", "1.2"),
            ("2.0", None),
            ("", None),
            ("1.3,2.0", None),
        ],
    )
    def test_negotiate(self, accept_version: str | None, expected: str | None) -> None:
        assert negotiate_version(accept_version) == expected


class TestHeartbeats:
    """STOMP 1.2 "Heart-beating": EOLs between frames are heart-beat events."""

    @pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
    def test_single_eol(self, eol: bytes) -> None:
        parser = make_parser()
        parser.receive_data(eol)
        assert parser.events_received() == [HEARTBEAT_EVENT]
        assert parser.parser_exc is None

    def test_eols_between_frames(self) -> None:
        data = b"\n\nBEGIN\n\n\x00\r\n\nCOMMIT\r\n\r\n\x00\n"
        expected = [HEARTBEAT_EVENT, Frame("BEGIN"), HEARTBEAT_EVENT, Frame("COMMIT"), HEARTBEAT_EVENT]
        parser = make_parser()
        parser.receive_data(data)
        assert parser.events_received() == expected
        # Undrained, byte-at-a-time feeding coalesces the same way.
        parser = make_parser()
        for index in range(len(data)):
            parser.receive_data(data[index : index + 1])
        assert parser.events_received() == expected

    def test_burst_of_eols_is_one_event(self) -> None:
        parser = make_parser()
        parser.receive_data(b"\r\n\n" * 500_000)
        assert parser.events_received() == [HEARTBEAT_EVENT]

    def test_half_crlf_waits(self) -> None:
        parser = make_parser()
        parser.receive_data(b"\r")
        assert parser.events_received() == []
        parser.receive_data(b"\n")
        assert parser.events_received() == [HEARTBEAT_EVENT]

    def test_lone_cr_before_a_frame_is_invalid(self) -> None:
        parser = make_parser()
        parser.receive_data(b"\rSEND\n\n\x00")
        assert isinstance(parser.parser_exc, InvalidFrame)


class TestEndOfStream:
    """STOMP 1.2 "STOMP Frames": a frame ends with NUL; EOF inside one is an error."""

    @pytest.mark.parametrize(
        "partial", [b"S", b"SEND\n", b"SEND\nfoo:bar", b"SEND\n\nbody", b"SEND\ncontent-length:3\n\nab"]
    )
    def test_truncated_frame(self, partial: bytes) -> None:
        parser = make_parser()
        parser.receive_data(partial)
        parser.receive_eof()
        assert isinstance(parser.parser_exc, InvalidFrame)
        assert "truncated frame" in str(parser.parser_exc)

    @pytest.mark.parametrize("complete", [b"", b"SEND\n\n\x00", b"SEND\n\n\x00\n", b"\r"])
    def test_clean_eof(self, complete: bytes) -> None:
        parser = make_parser()
        parser.receive_data(complete)
        parser.receive_eof()
        assert parser.parser_exc is None


def sized_send(total: int, *, content_length: bool) -> bytes:
    """A SEND frame exactly ``total`` bytes long on the wire, NUL included."""
    if content_length:
        head = b"SEND\ndestination:/a\ncontent-length:"
        # The body length has as many digits as fit; adjust until the sizes agree.
        for digits in range(1, 8):
            body_length = total - len(head) - digits - 3
            if len(str(body_length)) == digits:
                return head + str(body_length).encode() + b"\n\n" + b"x" * body_length + b"\x00"
        raise AssertionError("no size fits")
    head = b"SEND\ndestination:/a\n\n"
    return head + b"x" * (total - len(head) - 1) + b"\x00"


class TestLimits:
    """Size limits (max_frame_bytes, max_header_lines, max_header_bytes): limit passes, limit+1 fails."""

    @pytest.mark.parametrize("content_length", [False, True])
    @pytest.mark.parametrize("byte_by_byte", [False, True])
    def test_frame_bytes(self, content_length: bool, byte_by_byte: bool) -> None:
        for total, too_large in [(1000, False), (1001, True)]:
            data = sized_send(total, content_length=content_length)
            assert len(data) == total
            parser = make_parser(max_frame_bytes=1000)
            chunks = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
            for chunk in chunks:
                parser.receive_data(chunk)
            if too_large:
                assert isinstance(parser.parser_exc, FrameTooLarge)
                assert "max_frame_bytes" in str(parser.parser_exc)
            else:
                assert parser.parser_exc is None
                assert len(frames_only(parser.events_received())) == 1

    def test_declared_content_length_over_limit_fails_before_the_body(self) -> None:
        parser = make_parser(max_frame_bytes=1000)
        parser.receive_data(b"SEND\ncontent-length:1000\n\n")
        assert isinstance(parser.parser_exc, FrameTooLarge)

    def test_frame_without_nul_fails_as_soon_as_it_is_too_long(self) -> None:
        parser = make_parser(max_frame_bytes=1000)
        parser.receive_data(b"SEND\n\n")
        parser.receive_data(b"x" * (999 - 6))  # 999 bytes buffered: a NUL would still fit
        assert parser.parser_exc is None
        parser.receive_data(b"x")
        assert isinstance(parser.parser_exc, FrameTooLarge)
        assert "max_frame_bytes" in str(parser.parser_exc)

    def test_frame_without_nul_that_never_ends(self) -> None:
        parser = make_parser(max_frame_bytes=1000, max_header_bytes=1000)
        parser.receive_data(b"SEND\n\n")
        for _ in range(100):
            parser.receive_data(b"y" * 100)
        assert isinstance(parser.parser_exc, FrameTooLarge)
        assert len(parser._buffer) == 0  # the buffered garbage was released

    def test_header_line_that_never_ends(self) -> None:
        parser = make_parser(max_frame_bytes=100_000, max_header_bytes=1000)
        parser.receive_data(b"SEND\nfoo:")
        for _ in range(100):
            parser.receive_data(b"y" * 100)
        assert isinstance(parser.parser_exc, FrameTooLarge)
        assert "max_header_bytes" in str(parser.parser_exc)

    @pytest.mark.parametrize(("lines", "too_large"), [(3, False), (4, True)])
    def test_header_lines(self, lines: int, too_large: bool) -> None:
        data = b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(lines)) + b"\n\x00"
        parser = make_parser(max_header_lines=3)
        parser.receive_data(data)
        if too_large:
            assert isinstance(parser.parser_exc, FrameTooLarge)
            assert "max_header_lines" in str(parser.parser_exc)
        else:
            assert parser.parser_exc is None

    @pytest.mark.parametrize(("block", "too_large"), [(100, False), (101, True)])
    @pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
    @pytest.mark.parametrize("byte_by_byte", [False, True])
    def test_header_bytes(self, block: int, too_large: bool, eol: bytes, byte_by_byte: bool) -> None:
        # Header block = header lines with their EOLs, without command line or blank line.
        first = b"a:" + b"v" * 40 + eol
        second = b"b:" + b"w" * (block - len(first) - 2 - len(eol)) + eol
        assert len(first + second) == block
        data = b"SEND" + eol + first + second + eol + b"\x00"
        parser = make_parser(max_header_bytes=100)
        chunks = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
        for chunk in chunks:
            parser.receive_data(chunk)
        if too_large:
            assert isinstance(parser.parser_exc, FrameTooLarge)
            assert "max_header_bytes" in str(parser.parser_exc)
        else:
            assert parser.parser_exc is None


class CountingBuffer(bytearray):
    """A bytearray that counts how many bytes ``find`` is asked to search."""

    searched = 0

    def find(self, sub: object, start: int = 0, *args: object) -> int:  # type: ignore[override]
        CountingBuffer.searched += len(self) - start
        return super().find(sub, start, *args)  # type: ignore[arg-type]


class TestLinearTime:
    """Parsing is O(bytes): a frame fed one byte at a time is never rescanned from the start."""

    @pytest.mark.parametrize("body_bytes", [1 << 12, 1 << 16])
    def test_bytes_searched_is_linear(self, body_bytes: int) -> None:
        data = b"SEND\ndestination:/a\n\n" + b"x" * body_bytes + b"\x00"
        parser = make_parser(max_frame_bytes=1 << 20)
        # White box: swap in a counting buffer to measure the searching work.
        parser._buffer = CountingBuffer()
        CountingBuffer.searched = 0
        for index in range(len(data)):
            parser.receive_data(data[index : index + 1])
        assert frames_only(parser.events_received())[0].body == b"x" * body_bytes
        assert body_bytes <= CountingBuffer.searched <= 2 * len(data)

    def test_64k_frame_one_byte_at_a_time_is_fast(self) -> None:
        data = b"SEND\ndestination:/a\n\n" + b"x" * 65536 + b"\x00"
        parser = make_parser(max_frame_bytes=1 << 20)
        started = time.perf_counter()
        for index in range(len(data)):
            parser.receive_data(data[index : index + 1])
        assert len(frames_only(parser.events_received())) == 1
        assert time.perf_counter() - started < 10  # generous: linear is well under a second
