"""The pure STOMP 1.0/1.1/1.2 codec: frames, the sans-I/O parser and heart-beat math.

Re-exports the public names of :mod:`app.stomp.frames`, :mod:`app.stomp.parser` and
:mod:`app.stomp.heartbeat`. Nothing here performs I/O.
"""

from __future__ import annotations

from .frames import (
    ABORT,
    ACK,
    ALL_COMMANDS,
    BEGIN,
    CLIENT_COMMANDS,
    COMMIT,
    CONNECT,
    CONNECTED,
    DISCONNECT,
    ERROR,
    ERROR_MESSAGE_MAX_CHARS,
    HEARTBEAT,
    MESSAGE,
    NACK,
    RECEIPT,
    SEND,
    SERVER_COMMANDS,
    STOMP,
    SUBSCRIBE,
    SUPPORTED_VERSIONS,
    UNSUBSCRIBE,
    Frame,
    MessageTemplate,
    connected,
    error,
    escape_header,
    receipt,
)
from .heartbeat import is_overdue, negotiate_heartbeat, parse_heart_beat
from .parser import HEARTBEAT_EVENT, FrameParser, Heartbeat, negotiate_version

__all__ = [
    "ABORT",
    "ACK",
    "ALL_COMMANDS",
    "BEGIN",
    "CLIENT_COMMANDS",
    "COMMIT",
    "CONNECT",
    "CONNECTED",
    "DISCONNECT",
    "ERROR",
    "ERROR_MESSAGE_MAX_CHARS",
    "HEARTBEAT",
    "MESSAGE",
    "NACK",
    "RECEIPT",
    "SEND",
    "SERVER_COMMANDS",
    "STOMP",
    "SUBSCRIBE",
    "SUPPORTED_VERSIONS",
    "UNSUBSCRIBE",
    "Frame",
    "MessageTemplate",
    "connected",
    "error",
    "escape_header",
    "receipt",
    "is_overdue",
    "negotiate_heartbeat",
    "parse_heart_beat",
    "HEARTBEAT_EVENT",
    "FrameParser",
    "Heartbeat",
    "negotiate_version",
]
