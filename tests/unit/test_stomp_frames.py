"""Byte-exact tests of the STOMP frame model and encoders (app.stomp.frames)."""

from __future__ import annotations

import pytest

from app.stomp.frames import (
    ALL_COMMANDS,
    CLIENT_COMMANDS,
    HEARTBEAT,
    SERVER_COMMANDS,
    Frame,
    MessageTemplate,
    connected,
    error,
    escape_header,
    receipt,
)
from app.stomp.parser import FrameParser


def parse_one(data: bytes, version: str = "1.2") -> Frame:
    parser = FrameParser(
        max_frame_bytes=1 << 20, max_header_lines=64, max_header_bytes=1 << 16, accepted_commands=ALL_COMMANDS
    )
    parser.version = version
    parser.receive_data(data)
    assert parser.parser_exc is None
    (frame,) = parser.events_received()
    assert isinstance(frame, Frame)
    return frame


class TestCommands:
    """STOMP 1.2 "Client Frames" and "Server Frames"."""

    def test_command_sets(self) -> None:
        assert CLIENT_COMMANDS == {
            "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
            "BEGIN", "COMMIT", "ABORT", "DISCONNECT",
        }  # fmt: skip
        assert SERVER_COMMANDS == {"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}
        assert not CLIENT_COMMANDS & SERVER_COMMANDS

    def test_heartbeat_is_one_eol(self) -> None:
        assert HEARTBEAT == b"\n"


class TestRepeatedHeaderEntries:
    """STOMP 1.2 "Repeated Header Entries": only the first entry is used."""

    frame = Frame("SEND", (("foo", "1"), ("bar", "x"), ("foo", "2")))

    def test_header_first_wins(self) -> None:
        assert self.frame.header("foo") == "1"

    def test_header_default(self) -> None:
        assert self.frame.header("missing") is None
        assert self.frame.header("missing", "d") == "d"

    def test_header_dict_first_wins(self) -> None:
        assert self.frame.header_dict() == {"foo": "1", "bar": "x"}

    def test_serialize_keeps_every_entry(self) -> None:
        assert self.frame.serialize() == b"SEND\nfoo:1\nbar:x\nfoo:2\n\n\x00"

    def test_frame_is_immutable(self) -> None:
        with pytest.raises(AttributeError):
            self.frame.command = "ACK"  # type: ignore[misc]


TRICKY = "a:b\nc\rd\\e"

ESCAPE_CASES: list[tuple[str, str, bytes]] = [
    # (command, version, expected wire header line for name "k:" and value TRICKY)
    ("SEND", "1.2", b"k\\c:a\\cb\\nc\\rd\\\\e"),
    ("SEND", "1.1", b"k\\c:a\\cb\\nc\rd\\\\e"),  # 1.1 has no \r escape
    ("MESSAGE", "1.2", b"k\\c:a\\cb\\nc\\rd\\\\e"),
]


class TestValueEncoding:
    """STOMP 1.2 "Value Encoding": escapes per version; CONNECT/CONNECTED never escaped."""

    @pytest.mark.parametrize(("command", "version", "line"), ESCAPE_CASES)
    def test_escapes(self, command: str, version: str, line: bytes) -> None:
        frame = Frame(command, (("k:", TRICKY),))
        wire = frame.serialize(version)
        assert wire == command.encode() + b"\n" + line + b"\n\n\x00"
        assert parse_one(wire, version) == frame

    def test_1_0_does_not_escape(self) -> None:
        frame = Frame("SEND", (("destination", "/a:b\\c"),))
        assert frame.serialize("1.0") == b"SEND\ndestination:/a:b\\c\n\n\x00"

    @pytest.mark.parametrize("command", ["CONNECT", "STOMP", "CONNECTED"])
    def test_connect_and_connected_are_not_escaped(self, command: str) -> None:
        frame = Frame(command, (("passcode", "a:b\\c"),))
        assert frame.serialize("1.2") == command.encode() + b"\npasscode:a:b\\c\n\n\x00"

    @pytest.mark.parametrize(("command", "version"), [("SEND", "1.0"), ("CONNECTED", "1.2"), ("CONNECT", "1.1")])
    @pytest.mark.parametrize("breaker", ["\n", "\r"])
    def test_unescapable_line_break_is_refused(self, command: str, version: str, breaker: str) -> None:
        # Sending it raw would let the rest of the value inject headers.
        with pytest.raises(ValueError):
            Frame(command, (("x", f"a{breaker}evil:1"),)).serialize(version)

    def test_unknown_version_is_refused(self) -> None:
        with pytest.raises(ValueError):
            Frame("SEND").serialize("2.0")

    def test_escape_header(self) -> None:
        assert escape_header("a:b") == "a\\cb"
        assert escape_header("a:b", "1.0") == "a:b"
        assert escape_header("a:b", "1.2", "CONNECTED") == "a:b"


class TestContentLength:
    """STOMP 1.2 "Header content-length": added for non-empty bodies."""

    def test_added_for_a_body(self) -> None:
        assert Frame("SEND", (("destination", "/a"),), b"a\x00b").serialize() == (
            b"SEND\ndestination:/a\ncontent-length:3\n\na\x00b\x00"
        )

    def test_not_added_for_an_empty_body(self) -> None:
        assert Frame("SEND", (("destination", "/a"),)).serialize() == b"SEND\ndestination:/a\n\n\x00"

    def test_given_one_is_kept_not_duplicated(self) -> None:
        frame = Frame("SEND", (("content-length", "2"), ("destination", "/a")), b"hi")
        assert frame.serialize() == b"SEND\ncontent-length:2\ndestination:/a\n\nhi\x00"

    def test_body_bytes_counted_not_characters(self) -> None:
        body = "café".encode()
        assert b"content-length:5\n" in Frame("SEND", (), body).serialize()

    def test_round_trip_with_nul_in_body(self) -> None:
        frame = Frame("MESSAGE", (("destination", "/a"),), b"\x00\x00")
        parsed = parse_one(frame.serialize())
        assert parsed.body == b"\x00\x00"
        assert parsed.header("content-length") == "2"


class TestServerFrameBuilders:
    """STOMP 1.2 "CONNECTED Frame", "RECEIPT", "ERROR"."""

    def test_connected(self) -> None:
        frame = connected("1.2", (10000, 0), "s-1")
        assert frame.serialize() == b"CONNECTED\nversion:1.2\nheart-beat:10000,0\nsession:s-1\nserver:smooth\n\n\x00"

    def test_connected_server_name(self) -> None:
        assert connected("1.1", (0, 0), "s", server="smooth/2").header("server") == "smooth/2"

    def test_receipt(self) -> None:
        assert receipt("77").serialize() == b"RECEIPT\nreceipt-id:77\n\n\x00"

    def test_error_without_body(self) -> None:
        assert error("not connected").serialize() == b"ERROR\nmessage:not connected\n\n\x00"

    def test_error_with_body_and_receipt(self) -> None:
        assert error("bad frame", receipt_id="r:1", body="détails").serialize() == (
            b"ERROR\nmessage:bad frame\nreceipt-id:r\\c1\ncontent-type:text/plain\ncontent-length:8\n\n"
            + "détails".encode()
            + b"\x00"
        )

    def test_error_message_is_one_line(self) -> None:
        assert error("a\r\nb\nc\rd").header("message") == "a b c d"

    def test_error_message_is_truncated(self) -> None:
        message = error("x" * 1000).header("message")
        assert message == "x" * 256

    def test_error_frame_serializes_in_1_0(self) -> None:
        assert error("line1\nline2").serialize("1.0") == b"ERROR\nmessage:line1 line2\n\n\x00"


class TestMessageTemplate:
    """STOMP 1.2 "MESSAGE": fan-out encoding equals Frame.serialize byte for byte."""

    def test_bytes(self) -> None:
        template = MessageTemplate("/topic/room.42", "m-1", b"hello")
        assert template.for_subscription("sub-0") == (
            b"MESSAGE\ndestination:/topic/room.42\ncontent-type:text/plain;charset=UTF-8\n"
            b"subscription:sub-0\nmessage-id:m-1\ncontent-length:5\n\nhello\x00"
        )

    @pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
    @pytest.mark.parametrize("body", [b"", b"hello", b"a\x00b", "ünïcode".encode()])
    @pytest.mark.parametrize("subscription_id", ["sub-0", "7", ""])
    def test_equals_frame_serialize(self, version: str, body: bytes, subscription_id: str) -> None:
        template = MessageTemplate("/topic/room.1", "m-9", body, "application/json", version)
        frame = Frame(
            "MESSAGE",
            (
                ("destination", "/topic/room.1"),
                ("content-type", "application/json"),
                ("subscription", subscription_id),
                ("message-id", "m-9"),
                ("content-length", str(len(body))),
            ),
            body,
        )
        assert template.for_subscription(subscription_id) == frame.serialize(version)

    @pytest.mark.parametrize("version", ["1.1", "1.2"])
    def test_escaped_values_round_trip(self, version: str) -> None:
        template = MessageTemplate("/topic/a:b", "id\\1", b"x", version=version)
        frame = parse_one(template.for_subscription("s:1\n"), version)
        assert frame.header("destination") == "/topic/a:b"
        assert frame.header("message-id") == "id\\1"
        assert frame.header("subscription") == "s:1\n"
        assert frame.body == b"x"

    def test_1_0_keeps_colons_raw(self) -> None:
        wire = MessageTemplate("/topic/a:b", "m", b"", version="1.0").for_subscription("s:1")
        assert b"destination:/topic/a:b\n" in wire
        assert b"subscription:s:1\n" in wire

    def test_1_0_refuses_line_breaks(self) -> None:
        template = MessageTemplate("/topic/a", "m", b"", version="1.0")
        with pytest.raises(ValueError):
            template.for_subscription("s\nevil:1")
        with pytest.raises(ValueError):
            MessageTemplate("/topic/a\n", "m", b"", version="1.0")

    def test_each_call_builds_fresh_bytes(self) -> None:
        template = MessageTemplate("/topic/a", "m", b"body")
        assert template.for_subscription("a") != template.for_subscription("b")
        assert not hasattr(template, "__dict__")  # slots

    def test_subscribers_sharing_an_id_share_one_frame(self) -> None:
        """One join per distinct id: every later subscriber with that id gets the same object
        (so the transport frames it once), equal to what ``for_subscription`` builds."""
        template = MessageTemplate("/topic/a", "m", b"body")
        first = template.for_subscription_bytes(b"sub-0")
        again = template.for_subscription_bytes(bytes(bytearray(b"sub-0")))  # equal, not the same object
        other = template.for_subscription_bytes(b"sub-1")
        assert again is first and first == template.for_subscription("sub-0")
        assert other == template.for_subscription("sub-1") and other is not first


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_an_acked_message_template_equals_the_frame_with_its_ack_header(version):
    template = MessageTemplate("/topic/direct/7", "m-1", b'{"a":1}', version=version)
    expected = Frame("MESSAGE", (("destination", "/topic/direct/7"), ("content-type", "text/plain;charset=UTF-8"),
                                 ("subscription", "sub-0"), ("ack", "42"), ("message-id", "m-1"),
                                 ("content-length", "7")), b'{"a":1}').serialize(version)
    assert template.for_acked_subscription(template.subscription_bytes("sub-0"), "42") == expected
