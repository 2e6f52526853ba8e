"""The sans-I/O STOMP decoder: bytes in, frames and heart-beats out.

Owns: :class:`FrameParser` (``receive_data`` / ``receive_eof`` / ``events_received``),
header unescaping per protocol version, the size limits that protect the server from a
hostile peer, and :func:`negotiate_version`.

Theory of operation. The parser is a small state machine whose state is the method that
reads the next piece of the current frame: EOLs between frames, the command line, one
header line, the body. Each step either consumes bytes from the front of the buffer and
moves on, or finds it needs more data and remembers how far it has already searched
(``_scan_from``), so every byte is looked at a bounded number of times however the input
is chunked: parsing is O(bytes). Consumed bytes are deleted from the front of a
``bytearray``, which CPython does in amortised constant time.

Errors never escape ``receive_data``: the first violation is stored in ``parser_exc``,
the buffer is dropped and later data is ignored. Events parsed before the violation are
still returned by ``events_received``, so the caller handles them first, then the error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from app.errors import FrameTooLarge, InvalidFrame, ProtocolError

from .frames import CLIENT_COMMANDS, CONNECT, STOMP, SUPPORTED_VERSIONS, Frame

__all__ = ["FrameParser", "Heartbeat", "HEARTBEAT_EVENT", "negotiate_version"]

_LF = 0x0A
_CR = 0x0D
_NUL = b"\x00"

# "Value Encoding": the escapes each version defines. Anything else after a backslash
# is a fatal protocol error, as the spec requires.
_UNESCAPES: Final[dict[str, dict[str, str]]] = {
    "1.1": {"n": "\n", "c": ":", "\\": "\\"},
    "1.2": {"n": "\n", "c": ":", "\\": "\\", "r": "\r"},
}
# ``.?`` so that a lone backslash at the end is caught as an (empty) undefined escape.
_ESCAPE_SEQUENCE = re.compile(r"\\(.?)", re.DOTALL)
_ASCII_DIGITS = re.compile(r"[0-9]+")

# CONNECT headers are never escaped: the version is not agreed yet when they are sent.
_UNESCAPED_COMMANDS = frozenset({CONNECT, STOMP})


class Heartbeat:
    """The event for EOLs received between frames: proof the peer is alive, nothing more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT_EVENT"


HEARTBEAT_EVENT: Final = Heartbeat()


def negotiate_version(accept_version: str | None) -> str | None:
    """The protocol version to speak, from a CONNECT frame's ``accept-version`` header.

    No header means a STOMP 1.0 client. Otherwise the highest version both sides
    support wins; ``None`` when there is none (the server then sends ERROR and closes).
    """
    if accept_version is None:
        return "1.0"
    offered = {version.strip() for version in accept_version.split(",")}
    common = [version for version in SUPPORTED_VERSIONS if version in offered]
    return common[-1] if common else None


def _empty_or_half_eol(buffer: bytearray) -> bool:
    # Between frames or before a blank line, a lone CR may still become a CRLF.
    return not buffer or buffer == b"\r"


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidFrame(f"invalid UTF-8 in {what}") from None


def _unescape(text: str, table: dict[str, str]) -> str:
    if "\\" not in text:  # the common case pays for one scan only
        return text

    def replace(match: re.Match[str]) -> str:
        try:
            return table[match.group(1)]
        except KeyError:
            raise InvalidFrame("undefined escape sequence") from None

    return _ESCAPE_SEQUENCE.sub(replace, text)


def _content_length(value: str, max_frame_bytes: int) -> int:
    if not _ASCII_DIGITS.fullmatch(value):  # rejects signs, spaces, "_" that int() allows
        raise InvalidFrame("invalid content-length")
    significant = value.lstrip("0") or "0"
    # Compare digit counts first: int() of a huge digit string is slow, then refused.
    if len(significant) > len(str(max_frame_bytes)):
        raise FrameTooLarge("content-length over max_frame_bytes")
    return int(significant)


class FrameParser:
    """Turns a client's byte stream into :class:`Frame` and :data:`HEARTBEAT_EVENT` events.

    Args:
        max_frame_bytes: largest frame on the wire, command line to NUL inclusive.
        max_header_lines: most header lines in one frame.
        max_header_bytes: largest header block: the header lines with their EOLs, not
            the command line nor the blank line that ends the block.
        accepted_commands: commands that may arrive; anything else is an InvalidFrame.
            Defaults to the client commands, which is what a server receives.

    ``version`` selects header unescaping. The handler sets it after negotiation; the
    parser also applies :func:`negotiate_version` to each CONNECT/STOMP frame itself,
    because frames pipelined behind CONNECT may be parsed in the same ``receive_data``
    call, before the handler has seen the CONNECT.
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        max_header_lines: int,
        max_header_bytes: int,
        accepted_commands: frozenset[str] = CLIENT_COMMANDS,
    ) -> None:
        self.parser_exc: ProtocolError | None = None
        self._max_frame_bytes = max_frame_bytes
        self._max_header_lines = max_header_lines
        self._max_header_bytes = max_header_bytes
        self._accepted_commands = accepted_commands
        # The longest command line that can still be valid: longest command plus CR.
        self._max_command_line = max(map(len, accepted_commands)) + 1
        self._version = "1.2"
        self._buffer = bytearray()
        self._scan_from = 0  # bytes of the buffer already searched for LF/NUL
        self._events: list[Frame | Heartbeat] = []
        self._start_frame()

    @property
    def version(self) -> str:
        return self._version

    @version.setter
    def version(self, version: str) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported STOMP version {version!r}")
        self._version = version

    # Driving the parser --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer ``data`` and parse as many events as it completes. Never raises."""
        if self.parser_exc is not None:
            return
        self._buffer += data
        try:
            while self._step():
                pass
        except ProtocolError as exc:
            self._fail(exc)

    def receive_eof(self) -> None:
        """The peer closed its side; a frame cut short is a protocol error."""
        if self.parser_exc is None and self._inside_frame():
            self._fail(InvalidFrame("truncated frame"))

    def events_received(self) -> list[Frame | Heartbeat]:
        """Return the events parsed so far, in order, and forget them."""
        events, self._events = self._events, []
        return events

    def _fail(self, exc: ProtocolError) -> None:
        self.parser_exc = exc
        self._buffer = bytearray()  # nothing more will be parsed; free the memory now

    def _inside_frame(self) -> bool:
        # A lone CR between frames is half an EOL, not half a frame.
        return self._step != self._skip_eols or not _empty_or_half_eol(self._buffer)

    # Frame state ----------------------------------------------------------------------

    def _start_frame(self) -> None:
        self._step: Callable[[], bool] = self._skip_eols
        self._command = ""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._frame_bytes = 0  # bytes of the current frame already consumed
        self._body_length = 0  # set from content-length before _read_body_of_length runs

    def _finish_frame(self, body: bytes) -> None:
        frame = Frame(self._command, tuple(self._headers), body)
        self._events.append(frame)
        if frame.command in _UNESCAPED_COMMANDS:
            # If None, the handler rejects this CONNECT anyway.
            self._version = negotiate_version(frame.header("accept-version")) or self._version
        self._start_frame()

    def _note_heartbeat(self) -> None:
        # Coalesce: consecutive heart-beats add one event, so a flood of EOLs cannot grow
        # the event list; the caller only needs to know the peer was active.
        if not self._events or self._events[-1] is not HEARTBEAT_EVENT:
            self._events.append(HEARTBEAT_EVENT)

    # Limits -------------------------------------------------------------------------

    def _check_frame_bytes(self, at_least: int) -> None:
        """Fail once the current frame is certain to end up ``at_least`` bytes long or more."""
        if at_least > self._max_frame_bytes:
            raise FrameTooLarge("frame over max_frame_bytes")

    def _check_header_bytes(self, header_bytes: int) -> None:
        if header_bytes > self._max_header_bytes:
            raise FrameTooLarge("header block over max_header_bytes")

    # Steps: each returns True when it consumed something and parsing may go on ----------

    def _skip_eols(self) -> bool:
        buffer, end, index = self._buffer, len(self._buffer), 0
        while index < end:
            if buffer[index] == _LF:
                index += 1
            elif buffer[index] == _CR and index + 1 < end and buffer[index + 1] == _LF:
                index += 2
            else:
                break
        if index:
            del buffer[:index]
            self._note_heartbeat()
        if _empty_or_half_eol(buffer):  # nothing yet, or half of a CRLF
            return False
        self._step = self._read_command
        return True

    def _take_line(self) -> bytes | None:
        """Consume the next line and return it without its LF (a CR is left on it)."""
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            # The unfinished line, its LF and the frame's NUL are a certain minimum.
            self._check_frame_bytes(self._frame_bytes + len(self._buffer) + 2)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        self._frame_bytes += end + 1
        return line

    def _read_command(self) -> bool:
        line = self._take_line()
        if line is None:
            # Stop a garbage "command" early instead of buffering up to max_frame_bytes.
            if len(self._buffer) > self._max_command_line:
                raise InvalidFrame("unknown command")
            return False
        command = _decode(line.removesuffix(b"\r"), "command")
        if command not in self._accepted_commands:
            raise InvalidFrame("unknown command")
        self._command = command
        self._step = self._read_header_line
        return True

    def _read_header_line(self) -> bool:
        line = self._take_line()
        if line is None:
            if not _empty_or_half_eol(self._buffer):  # else it may be the blank line
                # The unfinished line will be one byte longer at least, for its LF.
                self._check_header_bytes(self._header_bytes + len(self._buffer) + 1)
            return False
        if line in (b"", b"\r"):
            self._end_headers()
            return True
        self._header_bytes += len(line) + 1
        self._check_header_bytes(self._header_bytes)
        if len(self._headers) == self._max_header_lines:
            raise FrameTooLarge("header lines over max_header_lines")
        self._headers.append(self._parse_header(line.removesuffix(b"\r")))
        return True

    def _parse_header(self, line: bytes) -> tuple[str, str]:
        # A value may hold ":" (a 1.0 destination, a URL): split at the first colon only.
        name, colon, value = _decode(line, "header").partition(":")
        if not colon:
            raise InvalidFrame("header line without ':'")
        if not name:
            raise InvalidFrame("empty header name")
        if self._command in _UNESCAPED_COMMANDS or self._version == "1.0":
            return name, value
        table = _UNESCAPES[self._version]
        return _unescape(name, table), _unescape(value, table)

    def _end_headers(self) -> None:
        declared = next((value for key, value in self._headers if key == "content-length"), None)
        if declared is None:
            self._step = self._read_body_to_nul
            return
        self._body_length = _content_length(declared, self._max_frame_bytes)
        # Refuse now rather than buffer a body that could never be accepted.
        self._check_frame_bytes(self._frame_bytes + self._body_length + 1)
        self._step = self._read_body_of_length

    def _read_body_of_length(self) -> bool:
        length = self._body_length
        if len(self._buffer) <= length:
            return False
        if self._buffer[length] != 0:
            raise InvalidFrame("frame not terminated by NUL after content-length octets")
        body = bytes(self._buffer[:length])
        del self._buffer[: length + 1]
        self._finish_frame(body)
        return True

    def _read_body_to_nul(self) -> bool:
        end = self._buffer.find(_NUL, self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            self._check_frame_bytes(self._frame_bytes + len(self._buffer) + 1)
            return False
        self._check_frame_bytes(self._frame_bytes + end + 1)
        body = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        self._finish_frame(body)
        return True
