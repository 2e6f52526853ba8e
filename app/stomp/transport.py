"""What a transport (raw WebSocket, SockJS) needs of the sessions it carries, and nothing more.

The transports in ``app/stomp/ws.py`` and ``app/stomp/sockjs.py`` are written against these
interfaces, not against the STOMP session: given a :class:`SessionDirectory` (the session
factory and lookup), a URL prefix and their options, they carry any session handler's
bytes. ``/my-chat`` gives them ``app.stomp.session.SessionHub``; the SockJS conformance
server (tests/conformance/sockjs_server.py) gives them an echo and a session that closes
at once.

A session is fed the payload bytes of each client message, in order, by one reader at a
time; it answers through its :class:`~app.stomp.outbox.Outbox`, which the transport's
writer drains.
"""

from __future__ import annotations

from typing import Callable, Protocol

from app.errors import ProtocolError
from app.stomp.outbox import NORMAL, PROTOCOL_ERROR, Outbox

__all__ = ["TransportSession", "SessionDirectory"]


class TransportSession(Protocol):
    """One client session as its transport drives it."""

    session_id: str
    outbox: Outbox

    @property
    def is_open(self) -> bool:
        """Still taking input (not closing or closed)."""
        ...

    @property
    def is_finished(self) -> bool:
        """``finish`` ran: the session is forgotten."""
        ...

    def start(self) -> None:
        """The transport is ready: arm the session's first deadline."""
        ...

    def on_abort(self, hook: Callable[[], None]) -> None:
        """``hook`` runs if a graceful close does not finish in time."""
        ...

    def receive_data(self, data: bytes) -> None:
        """The payload of one client message; may block this reader only."""
        ...

    def note_activity(self) -> None:
        """The client sent something that carries no payload (a WebSocket ping)."""
        ...

    def fail(self, exc: ProtocolError, code: int = PROTOCOL_ERROR) -> None:
        """A protocol violation found by the transport: tell the client, then close."""
        ...

    def close(self, *, code: int = NORMAL, discard_backlog: bool = False, reason: str = "") -> None:
        """Stop taking input; the writer sends what is queued and closes (``code``, ``reason``). Never blocks."""
        ...

    def abort(self) -> None:
        """Give up on a graceful end now."""
        ...

    def finish(self) -> None:
        """Once, when the connection is over (called by the reader, never by the writer)."""
        ...


class SessionDirectory(Protocol):
    """The session factory of a transport.

    Ids need not be unique: a SockJS WebSocket's id is the client's choice, and two
    connections may carry the same one. Which HTTP session an id names is the SockJS
    endpoint's to know.
    """

    close_grace_s: float

    def open_session(self, session_id: str, transport: str) -> TransportSession:
        """A new session, known to the directory until its ``finish``."""
        ...
