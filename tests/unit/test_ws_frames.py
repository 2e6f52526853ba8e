"""WebSocket text frames written by the chat server (app/stomp/ws.py ``text_frame``), byte for byte,
and the reason a close frame carries (``close_reason_bytes``).

RFC 6455 5.2: FIN + text opcode (0x81), no mask from a server, and the payload length in 7
bits, or 126 + 16 bits, or 127 + 64 bits; each boundary at the limit and one past it.
"""

import pytest
from geventwebsocket.websocket import Header
from hypothesis import given, strategies as st

from app.stomp.outbox import Outbox, RawFraming
from app.stomp.sockjs import WEBSOCKET_FRAMING
from app.stomp.ws import PushWriter, close_reason_bytes, text_frame


@pytest.mark.parametrize("length, header", [
    (0, b"\x81\x00"),
    (1, b"\x81\x01"),
    (125, b"\x81\x7d"),
    (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"),
    (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_header_bytes_at_each_length_boundary(length, header):
    payload = b"x" * length
    assert text_frame(payload) == header + payload


@pytest.mark.parametrize("length", [0, 5, 125, 126, 300, 65535, 65536, 70000])
def test_same_bytes_as_gevent_websocket_encodes(length):
    payload = b"m" * length
    assert text_frame(payload) == Header.encode_header(True, 0x1, b"", length, 0) + payload


class RecordingSocket:
    """The direct path's non-blocking send: takes everything, records each write."""

    def __init__(self):
        self.writes = []

    def try_send(self, wire):
        self.writes.append(wire)
        return None


def pushed(framing):
    socket = RecordingSocket()
    return PushWriter(Outbox(100), socket, framing), socket  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=3)),
                max_size=30))
def test_each_direct_write_frames_its_own_frames_whatever_came_before(writes):
    """Fan-out hands one frame object to many sockets in a row, raw STOMP and SockJS ones
    mixed, and each framing's bytes are reused for it; a frame that differs (or is equal but
    another object) never gets another's bytes, nor one framing another's."""
    pool = [b"MESSAGE\n\nfirst\x00", b"MESSAGE\n\nfirst\x00"[:-1] + b"\x00", b"x" * 300]
    raw, raw_socket = pushed(RawFraming())
    sockjs, sockjs_socket = pushed(WEBSOCKET_FRAMING)
    for use_sockjs, picks in writes:
        frames = [pool[index] for index in picks]
        writer, socket = (sockjs, sockjs_socket) if use_sockjs else (raw, raw_socket)
        assert writer.send_frames(frames) is None
        messages = WEBSOCKET_FRAMING.encode(frames) if use_sockjs else frames
        assert socket.writes[-1] == b"".join(map(text_frame, messages))


def test_a_sockjs_socket_writes_one_message_of_its_frames():
    writer, socket = pushed(WEBSOCKET_FRAMING)
    writer.send_frames([b"a\x00", b"b\x00"])
    writer.send_frames([b"a\x00"])
    assert socket.writes == [text_frame(b'a["a\\u0000","b\\u0000"]'), text_frame(b'a["a\\u0000"]')]


def test_a_close_reason_is_cut_to_fit_never_mid_character():
    """RFC 6455 5.5: a control frame's payload is at most 125 bytes, the 2-byte code included."""
    assert close_reason_bytes("Go away!") == b"Go away!"
    assert close_reason_bytes("x" * 200) == b"x" * 123
    cut = close_reason_bytes("\u00e9" * 100)  # 2 bytes each: 123 would split the 62nd
    assert cut == ("\u00e9" * 61).encode("utf-8")


# RFC 6455 5.5.1 / 7.4: which client close payloads are valid, and which upgrades are refused.

import struct  # noqa: E402

from app.stomp.ws import _upgrade_refusal, _valid_close_payload  # noqa: E402


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_close_codes_a_client_may_send(code):
    assert _valid_close_payload(struct.pack("!H", code) + "bye ✓".encode())


@pytest.mark.parametrize("payload", [
    b"\x03", struct.pack("!H", 0), struct.pack("!H", 999), struct.pack("!H", 1004), struct.pack("!H", 1005),
    struct.pack("!H", 1006), struct.pack("!H", 1012), struct.pack("!H", 1015), struct.pack("!H", 2000),
    struct.pack("!H", 2999), struct.pack("!H", 5000), struct.pack("!H", 65535), struct.pack("!H", 1000) + b"\xff",
])
def test_close_payloads_that_break_the_rfc(payload):
    assert not _valid_close_payload(payload)


UPGRADE = {"REQUEST_METHOD": "GET", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
           "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.mark.parametrize("changes, version, status, message", [
    ({}, "HTTP/1.0", "400 Bad Request", "websocket upgrade needs HTTP/1.1"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": ""}, "HTTP/1.1", "426 Upgrade Required", "missing Sec-WebSocket-Version"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "12"}, "HTTP/1.1", "400 Bad Request", "unsupported Sec-WebSocket-Version"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "short"}, "HTTP/1.1", "400 Bad Request", "invalid Sec-WebSocket-Key"),
    ({"HTTP_SEC_WEBSOCKET_KEY": ""}, "HTTP/1.1", "400 Bad Request", "invalid Sec-WebSocket-Key"),
])
def test_malformed_upgrades_are_refused_with_a_reason(changes, version, status, message):
    refusal = _upgrade_refusal({**UPGRADE, **changes}, version)
    assert refusal is not None and refusal[:2] == (status, message)


@pytest.mark.parametrize("changes", [{}, {"HTTP_UPGRADE": ""}, {"REQUEST_METHOD": "POST"}, {"HTTP_CONNECTION": "close"}])
def test_valid_upgrades_and_plain_requests_are_not_refused_here(changes):
    assert _upgrade_refusal({**UPGRADE, **changes}, "HTTP/1.1") is None
