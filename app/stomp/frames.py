"""The STOMP frame model and its wire encoding (STOMP 1.0, 1.1 and 1.2).

Owns: the command constants, the immutable :class:`Frame`, header escaping per protocol
version, :meth:`Frame.serialize`, the builders for the frames a server sends (CONNECTED,
RECEIPT, ERROR) and :class:`MessageTemplate`, the fan-out encoder for MESSAGE frames.

Decoding lives in :mod:`app.stomp.parser`. This module imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "CONNECT",
    "STOMP",
    "CONNECTED",
    "SEND",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "ACK",
    "NACK",
    "BEGIN",
    "COMMIT",
    "ABORT",
    "DISCONNECT",
    "MESSAGE",
    "RECEIPT",
    "ERROR",
    "CLIENT_COMMANDS",
    "SERVER_COMMANDS",
    "ALL_COMMANDS",
    "SUPPORTED_VERSIONS",
    "HEARTBEAT",
    "ERROR_MESSAGE_MAX_CHARS",
    "Frame",
    "escape_header",
    "connected",
    "receipt",
    "error",
    "MessageTemplate",
]

CONNECT = "CONNECT"
STOMP = "STOMP"
CONNECTED = "CONNECTED"
SEND = "SEND"
SUBSCRIBE = "SUBSCRIBE"
UNSUBSCRIBE = "UNSUBSCRIBE"
ACK = "ACK"
NACK = "NACK"
BEGIN = "BEGIN"
COMMIT = "COMMIT"
ABORT = "ABORT"
DISCONNECT = "DISCONNECT"
MESSAGE = "MESSAGE"
RECEIPT = "RECEIPT"
ERROR = "ERROR"

CLIENT_COMMANDS = frozenset({CONNECT, STOMP, SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT, DISCONNECT})
SERVER_COMMANDS = frozenset({CONNECTED, MESSAGE, RECEIPT, ERROR})
ALL_COMMANDS = CLIENT_COMMANDS | SERVER_COMMANDS

# Oldest first: negotiation picks the highest one both sides know.
SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")

# A heart-beat is one EOL sent between frames (STOMP 1.2 "Heart-beating").
HEARTBEAT = b"\n"

ERROR_MESSAGE_MAX_CHARS = 256

# "Value Encoding": 1.1 defined \n, \c and \\; 1.2 added \r. The backslash entry must be
# part of the same one-pass translation, or escaping it afterwards would double the others.
_ESCAPES_1_1 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
_ESCAPES_1_2 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})

# CONNECT and CONNECTED are never escaped (so a 1.0 peer can read them before any version
# is agreed); neither is anything in 1.0, which has no escapes at all.
_UNESCAPED_COMMANDS = frozenset({CONNECT, STOMP, CONNECTED})


def _refuse_line_breaks(text: str) -> str:
    """Pass ``text`` through unescaped, refusing what would break the frame apart.

    Without escapes a CR or LF in a header would end the line early and let the rest of
    the value inject headers or a body, so it is refused instead of sent.
    """
    if "\n" in text or "\r" in text:
        raise ValueError(f"a header cannot carry CR or LF without escaping: {text!r}")
    return text


def _escaper_for(command: str, version: str) -> Callable[[str], str]:
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported STOMP version {version!r}")
    if version == "1.0" or command in _UNESCAPED_COMMANDS:
        return _refuse_line_breaks
    table = _ESCAPES_1_1 if version == "1.1" else _ESCAPES_1_2
    return lambda text: text.translate(table)


def escape_header(text: str, version: str = "1.2", command: str = SEND) -> str:
    """Encode a header name or value for ``command`` frames of ``version``.

    Raises:
        ValueError: the version is unknown, or ``text`` holds CR/LF where escaping is off.
    """
    return _escaper_for(command, version)(text)


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame. ``headers`` keeps every entry in wire order, repeats included."""

    command: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of the first ``name`` header ("Repeated Header Entries": first wins)."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_dict(self) -> dict[str, str]:
        """All headers as a dict; for repeated names the first value wins."""
        result: dict[str, str] = {}
        for key, value in self.headers:
            result.setdefault(key, value)
        return result

    def serialize(self, version: str = "1.2") -> bytes:
        """Encode the frame for a peer speaking ``version``.

        ``content-length`` is added when the body is non-empty and none was given, so a
        body holding NUL octets still arrives whole.

        Raises:
            ValueError: see :func:`escape_header`.
        """
        escape = _escaper_for(self.command, version)
        lines = [self.command]
        lines.extend(f"{escape(name)}:{escape(value)}" for name, value in self.headers)
        if self.body and self.header("content-length") is None:
            lines.append(f"content-length:{len(self.body)}")
        lines.append("\n")  # the blank line; join adds the EOL before it
        return "\n".join(lines).encode("utf-8") + self.body + b"\x00"


def connected(version: str, heart_beat: tuple[int, int], session: str, server: str = "smooth") -> Frame:
    """The CONNECTED frame answering a successful CONNECT."""
    send_ms, expect_ms = heart_beat
    return Frame(
        CONNECTED,
        (
            ("version", version),
            ("heart-beat", f"{send_ms},{expect_ms}"),
            ("session", session),
            ("server", server),
        ),
    )


def receipt(receipt_id: str, extra: Iterable[tuple[str, str]] = ()) -> Frame:
    """The RECEIPT frame acknowledging a client frame that carried ``receipt``; ``extra`` headers follow."""
    return Frame(RECEIPT, (("receipt-id", receipt_id), *extra))


def _one_line(message: str) -> str:
    # The message header is for humans and logs: one line, bounded, whatever the caller had.
    flat = message.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return flat[:ERROR_MESSAGE_MAX_CHARS]


def error(message: str, *, receipt_id: str | None = None, body: str = "") -> Frame:
    """An ERROR frame; ``message`` is flattened to one line of at most 256 characters."""
    headers = [("message", _one_line(message))]
    if receipt_id is not None:
        headers.append(("receipt-id", receipt_id))
    if body:
        headers.append(("content-type", "text/plain"))
    return Frame(ERROR, tuple(headers), body.encode("utf-8"))


class MessageTemplate:
    """The bytes of one MESSAGE frame, minus the subscription id, for fan-out.

    One event reaches many subscribers and only the ``subscription`` header differs
    between their copies, so everything else is encoded once here; per subscriber the
    work is escaping the id and one ``bytes.join``. Fan-out may keep :meth:`subscription_bytes`
    of each subscription (it depends only on the id and the version) and call
    :meth:`for_subscription_bytes`, which joins once per distinct id and hands every later
    subscriber with that id the same frame: clients number their subscriptions per connection
    (stomp.js: ``sub-0``, ``sub-1``, ...), so most of a room's subscribers share a few ids, and
    the transport can then encode a shared frame once for all of them.

    Headers come in this order: destination, content-type, subscription, [ack,] message-id,
    content-length (always present, even for an empty body); ``ack`` only in frames of a
    client-ack subscription (:meth:`for_acked_subscription`). The output equals
    ``Frame(MESSAGE, those headers, body).serialize(version)``: each template uses the
    escaping rules of its own version (1.0: none, and CR/LF refused), so a server whose
    subscribers speak several versions builds one template per version in use.
    """

    __slots__ = ("_prefix", "_suffix", "_escape", "_frames")

    def __init__(
        self,
        destination: str,
        message_id: str,
        body: bytes,
        content_type: str = "text/plain;charset=UTF-8",
        version: str = "1.2",
    ) -> None:
        escape = _escaper_for(MESSAGE, version)
        self._escape = escape
        self._prefix = (
            f"{MESSAGE}\ndestination:{escape(destination)}\ncontent-type:{escape(content_type)}\nsubscription:"
        ).encode()
        self._suffix = f"\nmessage-id:{escape(message_id)}\ncontent-length:{len(body)}\n\n".encode() + body + b"\x00"
        self._frames: dict[bytes, bytes] = {}  # subscription bytes -> frame: one per distinct id

    def for_subscription(self, subscription_id: str) -> bytes:
        """The complete frame for the subscriber whose SUBSCRIBE carried ``subscription_id``."""
        return b"".join((self._prefix, self._escape(subscription_id).encode("utf-8"), self._suffix))

    def subscription_bytes(self, subscription_id: str) -> bytes:
        """``subscription_id`` as this template's version writes it: escaped, UTF-8.

        The same for every template of one version, so it can be kept per subscription.

        Raises:
            ValueError: STOMP 1.0 and the id holds CR or LF.
        """
        return self._escape(subscription_id).encode("utf-8")

    def for_subscription_bytes(self, subscription: bytes) -> bytes:
        """``for_subscription``, given the id already as :meth:`subscription_bytes` of this version;
        the same object for every subscriber whose id is ``subscription``."""
        frame = self._frames.get(subscription)
        if frame is None:
            frame = self._frames[subscription] = b"".join((self._prefix, subscription, self._suffix))
        return frame

    def for_acked_subscription(self, subscription: bytes, ack_id: str) -> bytes:
        """The frame for a client-ack subscription: an ``ack`` header follows ``subscription``.

        Equals ``Frame(MESSAGE, (destination, content-type, subscription, ("ack", ack_id),
        message-id, content-length), body).serialize(version)``.
        """
        return b"".join((self._prefix, subscription, b"\nack:", self._escape(ack_id).encode("utf-8"), self._suffix))
