"""The chat side of presence (issue 4 items 3-4, protocol.md §2.6, §4.4, §7.4).

- CONNECT → ``login``; the user's first session publishes ``connect`` for each of the
  user's rooms (``Membership.user_rooms``) on ``state-topic``.
- Close/DISCONNECT (``disconnected`` is called exactly once) → ``logout``; the location the
  session left gets a last-read mark; the user's last session publishes ``disconnect``.
- ``/kafka/join-channel`` → ``move`` and last-read marks on the location left and entered.
- ``/kafka/community-signaling`` / ``/kafka/signaling`` → ``before_enter`` / ``enter``; the
  occupancy snapshot goes out on ``state-topic`` and is pushed verbatim to the community.

Presence requests are built from the connection's own identity, never from the payload
(W-5). When presence is down, CONNECT and messaging keep working: this node's own
knowledge (its live sessions, each connection's last joined location) decides the
connect/disconnect events and marks, and ``resync`` re-registers the live sessions when
presence comes back.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from datetime import datetime
from typing import Callable, Mapping, NamedTuple, Protocol

from app.chat import events
from app.chat.access import Access, MembershipLookup
from app.chat.model import TOPICS
from app.chat.payloads import EnterCommunity, EnterVoice, JoinLocation
from app.chat.ports import EventBus, ReadMarkers
from app.chat.timefmt import utcnow
from app.contracts import ClientConnection
from app.destinations import parse_room_key
from app.errors import BackendError, BadRequest, ChatServerError
from app.logs import RateLimitedLog
from app.settings import Settings

__all__ = ["PresenceApi", "PresenceFlow", "worker_node_id", "has_read_marks"]

log = logging.getLogger(__name__)
# Presence being down is logged once per burst, not once per connection.
_outage_log = RateLimitedLog(log)

LOCATION_KEY = "location"  # ClientConnection.attributes: last location this connection joined


class _LogoutResult(Protocol):
    user_id: int | None
    location: str | None
    last_session: bool


class _Move(Protocol):
    last: str | None
    now: str


class PresenceApi(Protocol):
    """The part of ``app.presence_client.PresenceClient`` the chat server uses."""

    def login(self, session_id: str, user_id: int, node_id: str) -> bool: ...

    def logout(self, session_id: str, node_id: str) -> _LogoutResult: ...

    def move(self, user_id: int, session_id: str, location: str) -> _Move: ...

    def notify_targets(self, room_key: str, member_ids: list[int]) -> list[int]: ...

    def before_enter(self, user_id: int, community_id: int) -> str: ...

    def enter(self, user_id: int, community_id: int, voice_channel_id: int) -> str: ...

    def renew_lease(self, node_id: str) -> None: ...

    def sync(self, node_id: str, sessions: Mapping[str, int]) -> None: ...

    def close(self) -> None: ...


class _Left(NamedTuple):
    location: str | None
    last_session: bool


def worker_node_id(settings: Settings) -> str:
    """This worker process's presence node id (one lease per process)."""
    return f"{settings.effective_node_id}-{os.getpid()}"


def has_read_marks(location: str | None) -> bool:
    """``c-{id}``/``r-{id}`` get last-read marks; ``home`` and voice locations do not."""
    return location is not None and parse_room_key(location) is not None


class PresenceFlow:
    """Connect/disconnect/join/signaling; keeps this process's live sessions."""

    def __init__(self, *, presence: PresenceApi, bus: EventBus, membership: MembershipLookup,
                 read_markers: ReadMarkers, access: Access, node_id: Callable[[], str],
                 now: Callable[[], datetime] = utcnow) -> None:
        self._presence = presence
        self._bus = bus
        self._membership = membership
        self._read_markers = read_markers
        self._access = access
        self._node_id = node_id
        self._now = now
        self._sessions: dict[str, int] = {}
        self._per_user: Counter[int] = Counter()

    # -- connection lifecycle (never raises) ----------------------------------------------

    def connected(self, connection: ClientConnection) -> None:
        user_id = connection.user_id
        self._sessions[connection.session_id] = user_id
        self._per_user[user_id] += 1
        try:
            first = self._presence.login(connection.session_id, user_id, self._node_id())
        except ChatServerError:
            first = self._per_user[user_id] == 1  # degraded: only what this node knows
            _outage_log.warning("presence login failed; continuing without presence")
        if first:
            self._announce("connect", user_id)

    def disconnected(self, connection: ClientConnection) -> None:
        user_id = connection.user_id
        if self._sessions.pop(connection.session_id, None) is not None:
            self._per_user[user_id] -= 1
            if self._per_user[user_id] <= 0:
                del self._per_user[user_id]
        left = self._logout(connection)
        self._mark(left.location, user_id, self._now())
        if left.last_session:
            self._announce("disconnect", user_id)

    def user_went_offline(self, user_id: int, location: str | None) -> None:
        """A dead node's user lost their last session (presence's ``presence-offline``)."""
        self._mark(location, user_id, self._now())
        self._announce("disconnect", user_id, raise_errors=True)

    def resync(self) -> None:
        """Re-register this node's live sessions (presence came back)."""
        try:
            self._presence.sync(self._node_id(), dict(self._sessions))
        except BackendError:
            _outage_log.warning("presence sync failed; will retry on the next recovery")

    def renew_lease(self) -> None:
        self._presence.renew_lease(self._node_id())

    # -- SEND handlers ---------------------------------------------------------------------

    def join(self, connection: ClientConnection, command: JoinLocation) -> None:
        self._access.require_location(connection.user_id, command)
        previous = connection.attributes.get(LOCATION_KEY)
        try:
            move = self._presence.move(connection.user_id, connection.session_id, command.location)
            last, now = move.last, move.now
        except ChatServerError:  # down, or it does not know this session yet (resync pending)
            _outage_log.warning("presence move failed; marking from this connection's own history")
            last, now = previous, command.location
        connection.attributes[LOCATION_KEY] = command.location
        at = self._now()
        for location in {last, now}:
            self._mark(location, connection.user_id, at, raise_errors=True)

    def enter_community(self, connection: ClientConnection, command: EnterCommunity) -> None:
        self._access.require_community(connection.user_id, command.community_id)
        state = self._presence.before_enter(connection.user_id, command.community_id)
        self._publish_state("before-enter", command.community_id, state)

    def enter_voice(self, connection: ClientConnection, command: EnterVoice) -> None:
        self._access.require_community(connection.user_id, command.community_id)
        owner = self._membership.channel_community(command.voice_channel_id)
        if owner is not None and owner != command.community_id:
            raise BadRequest("channel_id: not a channel of this community")
        state = self._presence.enter(connection.user_id, command.community_id, command.voice_channel_id)
        self._publish_state("enter", command.community_id, state)

    # -- helpers ---------------------------------------------------------------------------

    def _logout(self, connection: ClientConnection) -> _Left:
        try:
            result = self._presence.logout(connection.session_id, self._node_id())
            return _Left(result.location, result.last_session)
        except ChatServerError:
            _outage_log.warning("presence logout failed; using this node's own knowledge")
            return _Left(connection.attributes.get(LOCATION_KEY),
                         connection.user_id not in self._per_user)
        except Exception:  # noqa: BLE001 - a disconnect must complete whatever happens
            log.exception("presence logout failed")
            return _Left(connection.attributes.get(LOCATION_KEY), False)

    def _mark(self, location: str | None, user_id: int, at: datetime, *, raise_errors: bool = False) -> None:
        if not has_read_marks(location):
            return
        assert location is not None
        try:
            self._read_markers.mark_read(location, user_id, at)
        except Exception:
            if raise_errors:
                raise
            log.exception("last-read mark failed")

    def _announce(self, event: str, user_id: int, *, raise_errors: bool = False) -> None:
        try:
            rooms = self._membership.user_rooms(user_id)
            if rooms:
                self._bus.publish(TOPICS["state"], events.record_key(user_id),
                                  events.presence_record(event, user_id, rooms))
        except Exception:
            if raise_errors:
                raise
            log.warning("could not publish %s of a user", event, exc_info=True)

    def _publish_state(self, event: str, community_id: int, state: str) -> None:
        if not _is_json_object(state):
            log.warning("presence sent a voice state that is not a JSON object")
            raise BackendError()
        self._bus.publish(TOPICS["state"], events.record_key(community_id),
                          events.voice_state_record(event, community_id, state))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (TypeError, ValueError):
        return False
