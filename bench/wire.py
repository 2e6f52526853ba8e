"""Raw WebSocket (RFC 6455, client side) and STOMP 1.2 frames as bytes, for the load generator.

Owns: the opening handshake on a plain socket, masking client frames by hand, decoding the
server's unmasked frames, the STOMP frames the bench sends, and the message-content stamp
``bench:<sender>:<seq>:<monotonic_ns>:`` (padded to a fixed size) that receivers parse back.

Nothing here imports a WebSocket or STOMP library; the hot path is a regular expression
over the received byte stream (the servers never fragment a MESSAGE across WebSocket frames).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct

__all__ = ["handshake", "ws_frame", "WsDecoder", "stomp_frame", "stamp", "STAMP_RE", "WireError"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STAMP_RE = re.compile(rb"bench:(\d+):(\d+):(\d+):")
_OP_TEXT = 0x1
_OP_CLOSE = 0x8


class WireError(RuntimeError):
    """The peer answered something a well-behaved server would not."""


def handshake(sock: socket.socket, host: str, port: int, path: str, protocol: str = "v12.stomp") -> bytes:
    """Send the HTTP upgrade, read the 101; returns bytes received after the response head."""
    key = base64.b64encode(os.urandom(16))
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n")
    sock.sendall(request.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise WireError(f"closed during handshake: {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise WireError(f"handshake refused: {head[:200]!r}")
    return rest


def ws_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """One final client frame, masked with a random key (XOR done on one big integer)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = os.urandom(4)
    if not size:
        return head + mask
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


def close_frame() -> bytes:
    return ws_frame(struct.pack("!H", 1000), _OP_CLOSE)


class WsDecoder:
    """Splits the server's byte stream into (opcode, payload) frames; used outside the hot path."""

    def __init__(self) -> None:
        self.buf = b""
        self.pending: list[tuple[int, bytes]] = []

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        # One pass with an offset, one slice of the rest at the end: a big read holding a
        # thousand frames (a resume's replay) costs linear time, not a copy of the rest per frame.
        buf = self.buf + data if self.buf else data
        frames, pos = [], 0
        while True:
            frame = self._next(buf, pos)
            if frame is None:
                break
            opcode, payload, pos = frame
            frames.append((opcode, payload))
        self.buf = buf[pos:]
        return frames

    @staticmethod
    def _next(buf: bytes, start: int) -> tuple[int, bytes, int] | None:
        """The frame starting at ``start`` and where the next one starts, or None if incomplete."""
        if len(buf) - start < 2:
            return None
        opcode, size, pos = buf[start] & 0x0F, buf[start + 1] & 0x7F, start + 2
        if size == 126:
            if len(buf) < pos + 2:
                return None
            size, pos = struct.unpack_from("!H", buf, pos)[0], pos + 2
        elif size == 127:
            if len(buf) < pos + 8:
                return None
            size, pos = struct.unpack_from("!Q", buf, pos)[0], pos + 8
        if buf[start + 1] & 0x80:
            raise WireError("server sent a masked frame")
        if len(buf) < pos + size:
            return None
        return opcode, buf[pos:pos + size], pos + size


def stomp_frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A STOMP 1.2 frame (header values must not need escaping here)."""
    lines = [command] + [f"{k}:{v}" for k, v in headers.items()]
    return ("\n".join(lines) + "\n\n").encode() + body + b"\x00"


def stomp_command(payload: bytes) -> str:
    """The command of one STOMP frame payload ('' for a heart-beat)."""
    return payload.lstrip(b"\r\n").split(b"\n", 1)[0].decode(errors="replace").strip()


def stamp(sender: int, seq: int, now_ns: int, size: int) -> str:
    """Message content carrying who sent it, its sequence number and its send time, padded."""
    text = f"bench:{sender}:{seq}:{now_ns}:"
    return text + "x" * max(0, size - len(text))
