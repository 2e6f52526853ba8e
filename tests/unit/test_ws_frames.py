"""WebSocket text frames written by the chat server (app/stomp/ws.py ``text_frame``), byte for byte,
and the reason a close frame carries (``close_reason_bytes``).

RFC 6455 5.2: FIN + text opcode (0x81), no mask from a server, and the payload length in 7
bits, or 126 + 16 bits, or 127 + 64 bits; each boundary at the limit and one past it.
"""

import pytest
from geventwebsocket.websocket import Header

from app.stomp.ws import close_reason_bytes, text_frame


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


def test_a_close_reason_is_cut_to_fit_never_mid_character():
    """RFC 6455 5.5: a control frame's payload is at most 125 bytes, the 2-byte code included."""
    assert close_reason_bytes("Go away!") == b"Go away!"
    assert close_reason_bytes("x" * 200) == b"x" * 123
    cut = close_reason_bytes("\u00e9" * 100)  # 2 bytes each: 123 would split the 62nd
    assert cut == ("\u00e9" * 61).encode("utf-8")
