"""The presence line protocol as bytes: framing, request parsing and reply formatting.

Owns:

- :class:`LineReader`: CRLF line framing with a length limit (protocol.md §7.1). Feed it
  bytes; it returns complete lines and :class:`LineTooLongEvent` markers.
- :func:`parse_request`: one line -> :class:`Request`, for both syntaxes the server
  accepts: the original pseudo-JSON of the Java chat and signaling servers (§7.2:
  ``{type='login', session_id='3kf9a2xq', ..., ids=null}``) and real JSON. The request
  remembers its ``syntax`` because replies are given in kind.
- The untyped field accessors (text, pattern match, flag), the session and node id
  patterns, and :class:`RequestError`, whose ``reason`` is what an error reply says.
  Ids, room keys and locations are read by :mod:`app.tcp_presence.fields`, against
  :mod:`app.destinations`.
- :class:`Reply`, :func:`format_reply` and :func:`format_error`, plus the helpers that
  spell the §7.3 legacy reply texts byte-exactly (``반환메세지``, ``5,c-12``, ``[2, 3]``,
  ``{"12":["5","9"],"14":[]}``).

Sans-I/O: only the standard library and :mod:`app.errors`.

Null semantics: the Java servers render a missing value as the quoted text ``'null'``
(and a missing list as bare ``null``). Both, in either syntax, mean "absent" here; the
original stored the string "null", but its replies are reproduced byte-exactly anyway.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Mapping, Sequence

from app.errors import BadRequest

__all__ = [
    "Syntax",
    "LineReader",
    "LineTooLongEvent",
    "Request",
    "RequestError",
    "Reply",
    "parse_request",
    "format_reply",
    "format_error",
    "DEFAULT_REPLY",
    "CRLF",
    "legacy_pair",
    "legacy_id_list",
    "occupancy_json",
    "SESSION_ID_PATTERN",
    "NODE_ID_PATTERN",
]

Syntax = Literal["legacy", "json"]

CRLF: Final = b"\r\n"
# §7.3: the original's literal default reply ("return message").
DEFAULT_REPLY: Final = "반환메세지"

SESSION_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Node ids default to "<hostname>-<port>", so dots and colons are allowed as well.
NODE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# How much of an oversize line is kept to tell which syntax its sender speaks.
_HEAD_BYTES: Final = 16
_LOOKS_LIKE_JSON: Final = re.compile(rb'\s*\{\s*["}]')


# -- Framing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineTooLongEvent:
    """A line exceeded the limit. It gets one error reply; the rest of it is discarded."""

    head: bytes

    @property
    def syntax(self) -> Syntax:
        return "json" if _LOOKS_LIKE_JSON.match(self.head) else "legacy"


class LineReader:
    """Splits a byte stream into lines at CRLF, with a maximum line length.

    A bare LF also ends a line (a CR right before it is dropped), which keeps the
    server usable from ``nc``; a lone CR inside a line is data. A line longer than
    ``max_line_bytes`` (terminator excluded) produces one :class:`LineTooLongEvent` as
    soon as the overflow is seen, then everything up to the next LF is discarded, so the
    connection stays usable and each request line still gets exactly one reply.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | LineTooLongEvent]:
        """Add received bytes; return the events they complete, in order."""
        self._buffer += data
        events: list[bytes | LineTooLongEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                self._check_partial(events)
                return events
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._discarding:
                self._discarding = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line_bytes:
                events.append(LineTooLongEvent(line[:_HEAD_BYTES]))
            else:
                events.append(line)

    def _check_partial(self, events: list[bytes | LineTooLongEvent]) -> None:
        if self._discarding:
            self._buffer.clear()
        # +1: a trailing CR may still turn out to be half of the terminator.
        elif len(self._buffer) > self.max_line_bytes + 1:
            events.append(LineTooLongEvent(bytes(self._buffer[:_HEAD_BYTES])))
            self._buffer.clear()
            self._discarding = True


# -- Requests ------------------------------------------------------------------------------


class RequestError(BadRequest):
    """A request the server cannot act on; ``reason`` is the short text of the error reply."""

    def __init__(self, reason: str, syntax: Syntax = "legacy") -> None:
        super().__init__(reason)
        self.reason = reason
        self.syntax = syntax


@dataclass(frozen=True)
class Request:
    """One parsed request line. ``fields`` holds every present field ('null' removed)."""

    syntax: Syntax
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        value = self.fields.get("type")
        return value if isinstance(value, str) else None

    def error(self, reason: str) -> RequestError:
        return RequestError(reason, self.syntax)

    def has(self, name: str) -> bool:
        return name in self.fields

    def text(self, name: str, *, required: bool = True) -> str | None:
        """A field as text; numbers are accepted and rendered in decimal."""
        value = self.fields.get(name)
        if value is None:
            if required:
                raise self.error(f"missing field {name}")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(f"invalid field {name}")
        return str(value)

    def matching(self, name: str, pattern: re.Pattern[str], *, required: bool = True) -> str | None:
        value = self.text(name, required=required)
        if value is not None and not pattern.fullmatch(value):
            raise self.error(f"invalid field {name}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.fields.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(f"invalid field {name}")
        return value


def parse_request(line: bytes) -> Request:
    """Parse one request line (terminator removed) in whichever syntax it is written.

    Raises:
        RequestError: ``malformed request`` (with the syntax the line seemed to use).
    """
    syntax: Syntax = "json" if _LOOKS_LIKE_JSON.match(line) else "legacy"
    try:
        text = line.decode("utf-8")
        raw = json.loads(text) if syntax == "json" else _parse_pseudo_json(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("malformed request", syntax) from None
    if not isinstance(raw, dict):
        raise RequestError("malformed request", syntax)
    return Request(syntax, _without_nulls(raw))


def _without_nulls(raw: dict[str, Any]) -> dict[str, Any]:
    return {str(key): value for key, value in raw.items() if value is not None and value != "null"}


# -- The pseudo-JSON of §7.2 ------------------------------------------------------------------
#
# What lenient Gson accepted from the Java servers: single- or double-quoted strings,
# unquoted names and words, ``=``/``=>``/``:`` between a name and its value, ``,`` or ``;``
# between pairs, bare ``null``/``true``/``false``/numbers, lists. Single-quoted values are
# taken verbatim (the Java side never escaped them); double-quoted ones use JSON escapes.

_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<punct>=>|[{}\[\],;:=])
      | '(?P<single>[^']*)'
      | (?P<double>"(?:[^"\\]|\\.)*")
      | (?P<word>[^\s{}\[\],;:='"]+)
    )""",
    re.VERBOSE | re.DOTALL,
)
_INTEGER: Final = re.compile(r"-?[0-9]+")
_WORDS: Final[dict[str, Any]] = {"null": None, "true": True, "false": False}
# A bound on nesting keeps a hostile line from exhausting the stack.
_MAX_DEPTH: Final = 8


@dataclass(frozen=True)
class _Token:
    kind: str  # "punct" or "value"
    value: Any


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    stripped_end = len(text.rstrip())
    while position < stripped_end:
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"unexpected character at {position}")
        position = match.end()
        tokens.append(_token_of(match))
    return tokens


def _token_of(match: re.Match[str]) -> _Token:
    if match.group("punct") is not None:
        return _Token("punct", match.group("punct"))
    if match.group("single") is not None:
        return _Token("value", match.group("single"))
    if match.group("double") is not None:
        return _Token("value", json.loads(match.group("double")))
    word = match.group("word")
    if word in _WORDS:
        return _Token("value", _WORDS[word])
    return _Token("value", int(word) if _INTEGER.fullmatch(word) else word)


class _PseudoJsonParser:
    """Recursive descent over the tokens: object, list, scalar."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0

    def parse(self) -> dict[str, Any]:
        result = self.object(0)
        if self.position != len(self.tokens):
            raise ValueError("trailing data")
        return result

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ValueError("unexpected end")
        self.position += 1
        return token

    def expect(self, *puncts: str) -> str:
        token = self.take()
        if token.kind != "punct" or token.value not in puncts:
            raise ValueError(f"expected one of {puncts}")
        return str(token.value)

    def object(self, depth: int) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}
        if self._closes("}"):
            return result
        while True:
            name = self.take()
            if name.kind != "value" or not isinstance(name.value, (str, int)):
                raise ValueError("expected a name")
            self.expect("=", "=>", ":")
            result[str(name.value)] = self.value(depth + 1)
            if self.expect(",", ";", "}") == "}":
                return result

    def list(self, depth: int) -> list[Any]:
        self.expect("[")
        items: list[Any] = []
        if self._closes("]"):
            return items
        while True:
            items.append(self.value(depth + 1))
            if self.expect(",", ";", "]") == "]":
                return items

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("nested too deeply")
        token = self.peek()
        if token is not None and token.kind == "punct" and token.value == "{":
            return self.object(depth)
        if token is not None and token.kind == "punct" and token.value == "[":
            return self.list(depth)
        token = self.take()
        if token.kind != "value":
            raise ValueError("expected a value")
        return token.value

    def _closes(self, punct: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.value == punct:
            self.position += 1
            return True
        return False


def _parse_pseudo_json(text: str) -> dict[str, Any]:
    return _PseudoJsonParser(_tokenize(text)).parse()


# -- Replies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A successful answer in both forms: the §7.3 legacy text and the JSON fields."""

    text: str = DEFAULT_REPLY
    fields: Mapping[str, Any] = field(default_factory=dict)


def format_reply(reply: Reply, syntax: Syntax) -> bytes:
    """The reply line for a request of ``syntax``: legacy text, or ``{"ok":true,...}``."""
    if syntax == "legacy":
        return reply.text.encode("utf-8") + CRLF
    return _json_line({"ok": True, **reply.fields})


def format_error(reason: str, syntax: Syntax) -> bytes:
    """``ERROR <reason>`` for legacy senders, ``{"ok":false,"error":"<reason>"}`` for JSON."""
    if syntax == "legacy":
        return f"ERROR {reason}".encode("utf-8") + CRLF
    return _json_line({"ok": False, "error": reason})


def _json_line(payload: Mapping[str, Any]) -> bytes:
    # ensure_ascii keeps the line pure ASCII, so no value can carry a raw CR or LF (W-6).
    return json.dumps(payload, separators=(",", ":")).encode("ascii") + CRLF


def legacy_pair(first: object | None, second: object | None) -> str:
    """``5,c-12``: the logout and state replies; a missing part is the text ``null``."""
    return f"{_or_null(first)},{_or_null(second)}"


def _or_null(value: object | None) -> str:
    return "null" if value is None else str(value)


def legacy_id_list(ids: Sequence[int]) -> str:
    """``[2, 3]``: a Java list's ``toString()``, as the notification server parses it."""
    return "[" + ", ".join(str(i) for i in ids) + "]"


def occupancy_json(occupancy: Mapping[int, Sequence[int]]) -> str:
    """``{"12":["5","9"],"14":[]}``: voice channel id -> user ids as strings, no spaces."""
    ordered = {str(channel): [str(user) for user in sorted(occupancy[channel])] for channel in sorted(occupancy)}
    return json.dumps(ordered, separators=(",", ":"))
