"""The chat server's client of the presence server (JSON lines over pooled TCP).

Owns :class:`PresenceClient`, its result types (:class:`LogoutResult`, :class:`Move`)
and the :class:`CircuitBreaker` that makes a dead presence server cheap.

Degraded mode (issue 4, item 6): chat must keep working when presence is down. Every
call is bounded (connect and reply within ``settings.presence_timeout_s``) and raises
``app.errors.BackendUnavailable`` on any failure; callers log and carry on. After
``BREAKER_THRESHOLD`` consecutive failures the breaker opens: calls then fail at once,
without touching the network, except one probe per ``PROBE_INTERVAL_S``. When a request
succeeds after failures, ``on_recovered`` runs in its own greenlet so the chat node can
``sync`` the sessions presence missed meanwhile.

Credential: with ``settings.presence_token`` set, every new connection first sends
``{"type":"auth","token":...}`` (presence then lets it ``lease``, ``sync`` and log in and
out this node's sessions); a refused token is logged and the call fails like an outage.

Connections: at most ``settings.presence_pool_size`` persistent connections; a call
borrows one, writes one JSON line, reads one reply line and gives it back. A
connection that failed in any way is closed, never reused (a late reply would
otherwise be read by the next caller, W-6); a new one is opened on demand. A request
that fails on a *reused* connection because the server closed it (presence restarted)
is retried once on a fresh connection.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Final, Mapping, Sequence

import gevent
from gevent.lock import BoundedSemaphore

from app import destinations
from app.errors import BackendUnavailable, BadRequest
from app.logs import RateLimitedLog
from app.settings import Settings

__all__ = ["PresenceClient", "LogoutResult", "Move", "CircuitBreaker", "BREAKER_THRESHOLD", "PROBE_INTERVAL_S"]

log = logging.getLogger(__name__)
_auth_log = RateLimitedLog(log)

# Consecutive failures that open the breaker, and how often an open breaker lets one
# request through to find out whether presence is back.
BREAKER_THRESHOLD: Final = 2
PROBE_INTERVAL_S: Final = 1.0
# Replies can carry a whole community's voice occupancy; anything longer is an error.
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
RECV_BYTES: Final = 65536
# Room left in a sync line for everything but the session pairs.
_SYNC_LINE_OVERHEAD: Final = 256
# Errors the server reports about itself rather than about the request.
_SERVER_SIDE_ERRORS: Final = frozenset({"backend unavailable", "internal error"})


@dataclass(frozen=True)
class LogoutResult:
    """``user_id`` None: the session was unknown (already logged out)."""

    user_id: int | None
    location: str | None
    last_session: bool


@dataclass(frozen=True)
class Move:
    last: str | None
    now: str


class _StaleConnection(OSError):
    """The server closed a pooled connection before answering."""


# How a pooled connection fails when presence restarted since it was last used.
_CLOSED_BY_PEER: Final = (_StaleConnection, ConnectionResetError, BrokenPipeError)


class CircuitBreaker:
    """Counts consecutive failures; when open, admits one probe per interval."""

    def __init__(self, *, threshold: int = BREAKER_THRESHOLD, probe_interval_s: float = PROBE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.probe_interval_s = probe_interval_s
        self.clock = clock
        self.failures = 0
        self._next_probe = 0.0

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold

    def allow(self) -> bool:
        """May a request go out now? (Consumes the probe slot when the breaker is open.)"""
        if not self.is_open:
            return True
        now = self.clock()
        if now >= self._next_probe:
            self._next_probe = now + self.probe_interval_s
            return True
        return False

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures == self.threshold:
            self._next_probe = self.clock() + self.probe_interval_s

    def record_success(self) -> bool:
        """Close the breaker; True if there had been failures (state may have been lost)."""
        had_failures = self.failures > 0
        self.failures = 0
        return had_failures


class _Connection:
    """One TCP connection to presence, used by one caller at a time."""

    def __init__(self, address: tuple[str, int], timeout_s: float) -> None:
        self.sock = socket.create_connection(address, timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.reused = False

    def authenticate(self, token: str, timeout_s: float) -> None:
        """Show presence the shared token; raise OSError if it is refused."""
        line = json.dumps({"type": "auth", "token": token}, separators=(",", ":")).encode("ascii") + b"\r\n"
        reply = json.loads(self.exchange(line, timeout_s))
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            _auth_log.error("presence refused this node's PRESENCE_TOKEN")
            raise OSError("presence refused the presence token")

    def exchange(self, line: bytes, timeout_s: float) -> bytes:
        """Send one line, return the reply line (without CRLF) or raise OSError."""
        deadline = time.monotonic() + timeout_s
        self.sock.settimeout(timeout_s)
        self.sock.sendall(line)
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                reply = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return reply
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise OSError("presence reply too long")
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = self.sock.recv(RECV_BYTES)
            if not data:
                raise _StaleConnection("presence closed the connection")
            self.buffer += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class PresenceClient:
    """Pooled, bounded, circuit-broken access to the presence server for one process."""

    def __init__(self, settings: Settings, *, on_recovered: Callable[[], None] | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self.address = (settings.presence_host, settings.presence_tcp_port)
        self.timeout_s = settings.presence_timeout_s
        self.token = settings.presence_token
        self.max_line_bytes = settings.presence_max_line_bytes
        self.on_recovered = on_recovered
        self.breaker = breaker or CircuitBreaker()
        self._slots = BoundedSemaphore(settings.presence_pool_size)
        self._idle: list[_Connection] = []
        self._closed = False

    # -- The API the chat domain uses ---------------------------------------------------------

    def login(self, session_id: str, user_id: int, node_id: str) -> bool:
        """Record a new session on ``node_id``'s lease; True if it is the user's first."""
        reply = self._call({"type": "login", "session_id": session_id, "user_id": user_id, "node_id": node_id})
        return bool(reply["first_session"])

    def logout(self, session_id: str, node_id: str) -> LogoutResult:
        """End a session ``node_id`` logged in (idempotent); ``last_session`` tells whether the
        user went offline."""
        reply = self._call({"type": "logout", "session_id": session_id, "node_id": node_id})
        return LogoutResult(reply["user_id"], reply["location"], bool(reply["last_session"]))

    def move(self, user_id: int, session_id: str, location: str) -> Move:
        """Set the session's text location (``home``, ``c-8``, ``r-17``)."""
        reply = self._call({"type": "state", "user_id": user_id, "session_id": session_id, "channel_id": location})
        return Move(reply["last"], reply["now"])

    def notify_targets(self, room_key: str, member_ids: Sequence[int]) -> list[int]:
        """The members not currently in ``room_key`` (``r-17`` or ``c-8``): who to push-notify."""
        key = destinations.parse_room_key(room_key)
        if key is None:
            raise BadRequest(f"not a room key: {room_key!r}")
        request_type = "direct" if key.kind == "direct" else "community"
        reply = self._call({"type": request_type, "channel_id": room_key, "ids": list(member_ids)})
        return [int(user) for user in reply["targets"]]

    def before_enter(self, user_id: int, community_id: int) -> str:
        """The community's voice occupancy, e.g. ``{"12":["5","9"],"14":[]}``."""
        reply = self._call({"type": "before-enter", "user_id": user_id, "community_id": community_id})
        return str(reply["state"])

    def enter(self, user_id: int, community_id: int, voice_channel_id: int) -> str:
        """Move the user into a voice channel; returns the occupancy after the move."""
        reply = self._call({"type": "enter", "user_id": user_id, "community_id": community_id,
                            "channel_id": destinations.room_key("channel", voice_channel_id)})
        return str(reply["state"])

    def renew_lease(self, node_id: str) -> None:
        self._call({"type": "lease", "node_id": node_id})

    def sync(self, node_id: str, sessions: Mapping[str, int]) -> None:
        """Make presence's session set for ``node_id`` exactly ``sessions`` (sid -> user id).

        Sent in one request, or staged over several when it would exceed the line limit.
        """
        chunks = self._sync_chunks(sorted(sessions.items()))
        sync_id = uuid.uuid4().hex if len(chunks) > 1 else None
        for index, chunk in enumerate(chunks):
            request: dict[str, Any] = {"type": "sync", "node_id": node_id, "sessions": chunk}
            if sync_id is not None:
                request.update(sync_id=sync_id, final=index == len(chunks) - 1)
            self._call(request)

    def close(self) -> None:
        """Close every idle connection; borrowed ones are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- Plumbing -------------------------------------------------------------------------------

    def _call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise BackendUnavailable("presence client closed")
        if not self.breaker.allow():
            raise BackendUnavailable("presence unavailable (circuit open)")
        line = json.dumps(request, separators=(",", ":")).encode("ascii") + b"\r\n"
        try:
            reply = self._exchange(line)
        except BackendUnavailable:
            self.breaker.record_failure()
            raise
        if reply.get("ok") is not True:
            return self._refused(reply)
        if self.breaker.record_success() and self.on_recovered is not None:
            gevent.spawn(self._recovered)
        return reply

    def _refused(self, reply: dict[str, Any]) -> dict[str, Any]:
        reason = str(reply.get("error", "unknown error"))
        if reason in _SERVER_SIDE_ERRORS:
            self.breaker.record_failure()
            raise BackendUnavailable(f"presence: {reason}")
        raise BadRequest(f"presence refused the request: {reason}")

    def _exchange(self, line: bytes) -> dict[str, Any]:
        if not self._slots.acquire(timeout=self.timeout_s):
            raise BackendUnavailable("presence connection pool exhausted")
        try:
            try:
                return self._exchange_once(line)
            except _StaleConnection:
                return self._exchange_once(line, fresh=True)
        finally:
            self._slots.release()

    def _exchange_once(self, line: bytes, *, fresh: bool = False) -> dict[str, Any]:
        connection = None
        try:
            connection = self._idle.pop() if self._idle and not fresh else self._connect()
            raw = connection.exchange(line, self.timeout_s)
            reply = json.loads(raw)
            if not isinstance(reply, dict):
                raise ValueError("reply is not a JSON object")
        except (OSError, ValueError) as error:
            if connection is not None:
                connection.close()
                if connection.reused and isinstance(error, _CLOSED_BY_PEER):
                    raise _StaleConnection(str(error)) from None
            raise BackendUnavailable(f"presence unreachable: {error}") from None
        self._give_back(connection)
        return reply

    def _connect(self) -> _Connection:
        connection = _Connection(self.address, self.timeout_s)
        if self.token:
            try:
                connection.authenticate(self.token, self.timeout_s)
            except (OSError, ValueError):
                connection.close()
                raise
        return connection

    def _give_back(self, connection: _Connection) -> None:
        if self._closed:
            connection.close()
            return
        connection.reused = True
        self._idle.append(connection)

    def _recovered(self) -> None:
        assert self.on_recovered is not None
        try:
            self.on_recovered()
        except Exception:
            log.exception("presence on_recovered callback failed")

    def _sync_chunks(self, pairs: list[tuple[str, int]]) -> list[list[list[str]]]:
        budget = max(self.max_line_bytes - _SYNC_LINE_OVERHEAD, 64)
        chunks: list[list[list[str]]] = [[]]
        size = 0
        for session_id, user_id in pairs:
            item = [session_id, str(user_id)]
            item_size = len(json.dumps(item, separators=(",", ":"))) + 1
            if chunks[-1] and size + item_size > budget:
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += item_size
        return chunks
