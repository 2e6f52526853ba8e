"""The presence store's interface: what the presence server needs from its state.

Owns the :class:`PresenceStore` and :class:`ChatNotifier` Protocols and the result
types they exchange (:class:`VoiceOut`, :class:`SessionEnd`, :class:`LocationChange`,
:class:`VoiceEntry`, :class:`SyncOutcome`, :class:`ReapBatch`), and session ownership:
the owner strings (:func:`node_owner`, :func:`connection_owner`, :func:`host_owner`) and
:class:`NotOwner`, raised when a caller touches a session another owner logged in.

This is the module a store implementation imports (``app/backends/redis_presence.py``;
``tests/support/presence.py`` has an in-memory one), so it depends on nothing but the
standard library and :mod:`app.destinations`: no server, handler, transport or client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from app.destinations import room_key
from app.errors import Forbidden

__all__ = [
    "PresenceStore",
    "ChatNotifier",
    "VoiceOut",
    "SessionEnd",
    "LocationChange",
    "VoiceEntry",
    "SyncOutcome",
    "ReapBatch",
    "NotOwner",
    "node_owner",
    "connection_owner",
    "host_owner",
]


class NotOwner(Forbidden):
    """The session was logged in by another connection, host or chat node: nothing was done."""

    wire_message = "not allowed"


# Owner strings, recorded with each session at login. They never contain a comma.
def node_owner(node_id: str) -> str:
    """A session logged in for a chat node's lease: that node may end it."""
    return f"node={node_id}"


def connection_owner(connection_id: str) -> str:
    """A session logged in without a node on one connection: only that connection may end it."""
    return f"conn={connection_id}"


def host_owner(address: str) -> str:
    """Without a presence token: sessions of legacy senders belong to the host that logged them
    in (the original chat server logs in and out on different connections of its pool)."""
    return f"host={address}"


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
                "channelId": room_key("channel", self.channel_id), "ids": ids}


@dataclass(frozen=True)
class SessionEnd:
    """What a logout did. ``user_id`` is None when the session was unknown."""

    user_id: int | None
    location: str | None
    last_session: bool
    voice_left: VoiceOut | None = None


@dataclass(frozen=True)
class LocationChange:
    """A ``state`` move: the session's previous location (None without a session) and the new one."""

    last: str | None
    now: str


@dataclass(frozen=True)
class VoiceEntry:
    """``enter``: the community's occupancy after the move, and the channel left, if any."""

    occupancy: dict[int, list[int]]
    left: VoiceOut | None = None


@dataclass(frozen=True)
class SyncOutcome:
    """A node sync: sessions started and ended, and the voice channels the ended ones left."""

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
    ``app.errors.BackendUnavailable`` when their storage cannot be reached.

    Arguments are already validated against app/destinations.py (ids, room keys, text
    locations); a store does not check them again.
    """

    def login(self, session_id: str, user_id: int, node_id: str | None, owner: str = "") -> bool:
        """Start (or refresh) a session owned by ``owner``; True if it is the user's first live
        session. Raises :class:`NotOwner` if the session exists under another owner."""
        ...

    def logout(self, session_id: str, owners: Sequence[str] | None = None) -> SessionEnd:
        """End a session; idempotent (an unknown session gives ``SessionEnd(None, None, False)``).
        With ``owners``, raises :class:`NotOwner` (and ends nothing) unless the session's
        recorded owner is one of them."""
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
        when ``sync_id`` is given and ``final`` is False), owned by the node, and renew its lease."""
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
