"""What each presence request does: request -> store calls -> reply (protocol.md §7.3).

Owns :class:`PresenceHandler` (dispatch by ``type``, field validation, replies in kind,
error replies that never carry exception text), the :class:`PresenceStore` and
:class:`ChatNotifier` interfaces it is written against, and the result types they
exchange. No sockets, no redis, no gevent: the real store is
``app/backends/redis_presence.py``, the unit tests use an in-memory fake.

Request types (fields in brackets are optional):

==============  =========================================  ===============================
type            fields                                     legacy reply / JSON fields
==============  =========================================  ===============================
login           session_id, user_id, [node_id]             반환메세지 / first_session
logout          session_id                                 ``U,L`` / user_id, location,
                                                           last_session
state           user_id, channel_id, [session_id]          ``L,P`` / last, now
direct,         channel_id (room key) or, when absent,     ``[2, 3]`` / targets
community       community_id (W-16); ids
before-enter    community_id, [user_id]                    occupancy JSON / state
enter           user_id, community_id, channel_id ``c-X``  occupancy JSON / state
signaling       user_id, channel_id, [community_id]        반환메세지 / out
lease           node_id                                    반환메세지 / (nothing)
sync            node_id, sessions, [sync_id], [final]      반환메세지 / added, removed
==============  =========================================  ===============================

An unknown ``type`` gets the original's default reply ``반환메세지`` from a legacy sender
(byte-compatible with §7.3) and ``{"ok":false,"error":"unknown type"}`` from a JSON one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Protocol, Sequence

from app.errors import BackendError

from .codec import (
    DEFAULT_REPLY,
    NODE_ID_PATTERN,
    SESSION_ID_PATTERN,
    LineTooLongEvent,
    Reply,
    Request,
    RequestError,
    Syntax,
    format_error,
    format_reply,
    legacy_id_list,
    legacy_pair,
    occupancy_json,
    parse_request,
)

__all__ = [
    "PresenceHandler",
    "PresenceStore",
    "ChatNotifier",
    "VoiceOut",
    "SessionEnd",
    "LocationChange",
    "VoiceEntry",
    "SyncOutcome",
    "ReapBatch",
    "TEXT_LOCATION",
    "ROOM_KEY",
    "voice_location",
]

log = logging.getLogger(__name__)

# §7.5: where a user can be. Voice locations are only ever set by ``enter``.
TEXT_LOCATION: Final = re.compile(r"home|[cr]-[0-9]{1,19}")
ROOM_KEY: Final = re.compile(r"[cr]-[0-9]{1,19}")
_VOICE_CHANNEL: Final = re.compile(r"c-([0-9]{1,19})")
_DM_ROOM: Final = re.compile(r"r-([0-9]{1,19})")


def voice_location(community_id: int, voice_channel_id: int) -> str:
    """``com3,c-12``: the location of a user in a community voice channel (§7.5)."""
    return f"com{community_id},c-{voice_channel_id}"


# -- Results exchanged with the store --------------------------------------------------------


@dataclass(frozen=True)
class VoiceOut:
    """Someone left a voice channel (``community_id`` set) or a DM call (it is None)."""

    community_id: int | None
    channel_id: int
    remaining: tuple[int, ...]

    def event(self) -> dict[str, Any]:
        """The ``out`` body POSTed to the chat server (protocol.md §6.2, §2.7)."""
        ids = [str(user) for user in sorted(self.remaining)]
        if self.community_id is None:
            return {"type": "out", "channelId": str(self.channel_id), "ids": ids}
        return {"type": "out", "communityId": str(self.community_id),
                "channelId": f"c-{self.channel_id}", "ids": ids}


@dataclass(frozen=True)
class SessionEnd:
    """What a logout did. ``user_id`` is None when the session was unknown."""

    user_id: int | None
    location: str | None
    last_session: bool
    voice_left: VoiceOut | None = None


@dataclass(frozen=True)
class LocationChange:
    last: str | None
    now: str


@dataclass(frozen=True)
class VoiceEntry:
    """``enter``: the community's occupancy after the move, and the channel left, if any."""

    occupancy: dict[int, list[int]]
    left: VoiceOut | None = None


@dataclass(frozen=True)
class SyncOutcome:
    added: int
    removed: int
    voice_left: tuple[VoiceOut, ...] = ()


@dataclass(frozen=True)
class ReapBatch:
    """One step of logging out a dead node's sessions; ``done`` once none are left."""

    ended: list[SessionEnd] = field(default_factory=list)
    done: bool = True


class PresenceStore(Protocol):
    """Presence state. Every mutating call is atomic; implementations raise
    ``app.errors.BackendUnavailable`` when their storage cannot be reached."""

    def login(self, session_id: str, user_id: int, node_id: str | None) -> bool:
        """Start (or refresh) a session; True if it is the user's first live session."""
        ...

    def logout(self, session_id: str) -> SessionEnd:
        """End a session; idempotent (an unknown session gives ``SessionEnd(None, None, False)``)."""
        ...

    def move(self, user_id: int, session_id: str | None, location: str) -> LocationChange:
        """Set a session's text location (no session id: the user's most recent session)."""
        ...

    def absent_members(self, room_key: str, member_ids: Sequence[int]) -> list[int]:
        """The members (in request order) none of whose live sessions is at ``room_key``."""
        ...

    def voice_occupancy(self, community_id: int) -> dict[int, list[int]]: ...

    def enter_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceEntry: ...

    def leave_voice(self, user_id: int, community_id: int, voice_channel_id: int) -> VoiceOut: ...

    def leave_call(self, user_id: int, room_id: int) -> VoiceOut: ...

    def renew_lease(self, node_id: str) -> None: ...

    def sync_node(self, node_id: str, sessions: Sequence[tuple[str, int]], *,
                  sync_id: str | None = None, final: bool = True) -> SyncOutcome:
        """Make the node's session set exactly ``sessions`` (staged over several calls
        when ``sync_id`` is given and ``final`` is False), and renew its lease."""
        ...

    def friends_state(self, user_ids: Sequence[int]) -> dict[int, str | None]:
        """Each user's visible location, None when offline."""
        ...

    def online_users(self) -> list[int]: ...

    def expired_nodes(self) -> list[str]: ...

    def claim_node(self, node_id: str, owner: str, ttl_s: float) -> bool: ...

    def reap_node(self, node_id: str, batch: int) -> ReapBatch: ...

    def forget_expired(self) -> int:
        """Drop users whose retention ran out from the online index; returns how many."""
        ...

    def ping(self) -> bool: ...


class ChatNotifier(Protocol):
    """Calls to the chat server. Implementations return at once (the work is queued)."""

    def voice_out(self, out: VoiceOut) -> None: ...

    def user_offline(self, user_id: int, location: str | None) -> None: ...


# -- The handler -------------------------------------------------------------------------------


class PresenceHandler:
    """Turns request lines into reply lines. Safe to share between connections."""

    def __init__(self, store: PresenceStore, notifier: ChatNotifier) -> None:
        self.store = store
        self.notifier = notifier
        self._handlers: dict[str, Callable[[Request], Reply]] = {
            "login": self._login,
            "logout": self._logout,
            "state": self._state,
            "direct": self._notify_targets,
            "community": self._notify_targets,
            "before-enter": self._before_enter,
            "enter": self._enter,
            "signaling": self._signaling,
            "lease": self._lease,
            "sync": self._sync,
        }

    def handle_event(self, event: bytes | LineTooLongEvent) -> bytes:
        """One framed event (a line, or an oversize-line marker) -> exactly one reply line."""
        if isinstance(event, LineTooLongEvent):
            return format_error("line too long", event.syntax)
        return self.handle_line(event)

    def handle_line(self, line: bytes) -> bytes:
        syntax: Syntax = "legacy"
        try:
            request = parse_request(line)
            syntax = request.syntax
            return format_reply(self.handle(request), syntax)
        except RequestError as error:
            return format_error(error.reason, error.syntax)
        except BackendError:
            log.warning("presence store unavailable", exc_info=True)
            return format_error("backend unavailable", syntax)
        except Exception:
            # Never put exception text on the wire: it can be security-sensitive.
            log.exception("presence request failed")
            return format_error("internal error", syntax)

    def handle(self, request: Request) -> Reply:
        """Dispatch one parsed request. Raises RequestError or BackendError."""
        kind = request.type
        if kind is None:
            raise request.error("missing field type")
        handler = self._handlers.get(kind)
        if handler is None:
            if request.syntax == "legacy":
                return Reply(DEFAULT_REPLY)
            raise request.error("unknown type")
        return handler(request)

    # Each handler validates its fields before touching the store.

    def _login(self, request: Request) -> Reply:
        session_id = _session_id(request)
        user_id = _required_id(request, "user_id")
        node_id = request.matching("node_id", NODE_ID_PATTERN, required=False)
        first = self.store.login(session_id, user_id, node_id)
        return Reply(DEFAULT_REPLY, {"first_session": first})

    def _logout(self, request: Request) -> Reply:
        end = self.store.logout(_session_id(request))
        if end.voice_left is not None:
            self.notifier.voice_out(end.voice_left)
        return Reply(legacy_pair(end.user_id, end.location),
                     {"user_id": end.user_id, "location": end.location, "last_session": end.last_session})

    def _state(self, request: Request) -> Reply:
        user_id = _required_id(request, "user_id")
        session_id = request.matching("session_id", SESSION_ID_PATTERN, required=False)
        location = request.matching("channel_id", TEXT_LOCATION)
        assert location is not None
        change = self.store.move(user_id, session_id, location)
        return Reply(legacy_pair(change.last, change.now), {"last": change.last, "now": change.now})

    def _notify_targets(self, request: Request) -> Reply:
        # W-16: the original chat server puts the room key in community_id.
        field_name = "channel_id" if request.has("channel_id") else "community_id"
        room_key = request.matching(field_name, ROOM_KEY)
        assert room_key is not None
        targets = self.store.absent_members(room_key, request.id_list("ids"))
        return Reply(legacy_id_list(targets), {"targets": targets})

    def _before_enter(self, request: Request) -> Reply:
        community_id = _required_id(request, "community_id")
        request.digits("user_id", required=False)  # validated, but nobody is moved (W-21)
        state = occupancy_json(self.store.voice_occupancy(community_id))
        return Reply(state, {"state": state})

    def _enter(self, request: Request) -> Reply:
        user_id = _required_id(request, "user_id")
        community_id = _required_id(request, "community_id")
        voice_channel_id = _channel_number(request, _VOICE_CHANNEL)
        entry = self.store.enter_voice(user_id, community_id, voice_channel_id)
        if entry.left is not None:
            self.notifier.voice_out(entry.left)
        state = occupancy_json(entry.occupancy)
        return Reply(state, {"state": state})

    def _signaling(self, request: Request) -> Reply:
        user_id = _required_id(request, "user_id")
        # The signaling server sends community 0 or 'null' for a DM call (§8).
        community_id = request.digits("community_id", required=False) or None
        if community_id is not None:
            out = self.store.leave_voice(user_id, community_id, _channel_number(request, _VOICE_CHANNEL))
        else:
            out = self.store.leave_call(user_id, _channel_number(request, _DM_ROOM))
        self.notifier.voice_out(out)
        return Reply(DEFAULT_REPLY, {"out": out.event()})

    def _lease(self, request: Request) -> Reply:
        self.store.renew_lease(_node_id(request))
        return Reply(DEFAULT_REPLY)

    def _sync(self, request: Request) -> Reply:
        node_id = _node_id(request)
        sessions = request.session_pairs("sessions")
        sync_id = request.matching("sync_id", SESSION_ID_PATTERN, required=False)
        outcome = self.store.sync_node(node_id, sessions, sync_id=sync_id, final=request.flag("final", True))
        for out in outcome.voice_left:
            self.notifier.voice_out(out)
        return Reply(DEFAULT_REPLY, {"added": outcome.added, "removed": outcome.removed})


def _required_id(request: Request, name: str) -> int:
    value = request.digits(name)
    assert value is not None  # required=True raised otherwise
    return value


def _session_id(request: Request) -> str:
    value = request.matching("session_id", SESSION_ID_PATTERN)
    assert value is not None
    return value


def _node_id(request: Request) -> str:
    value = request.matching("node_id", NODE_ID_PATTERN)
    assert value is not None
    return value


def _channel_number(request: Request, pattern: re.Pattern[str]) -> int:
    channel = request.text("channel_id")
    assert channel is not None
    match = pattern.fullmatch(channel)
    if match is None:
        raise request.error("invalid field channel_id")
    return int(match.group(1))
