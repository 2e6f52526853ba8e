"""Who may SEND to and SUBSCRIBE to what (issue 3 item 3, protocol.md W-3).

- ``/topic/direct/{R}`` and DM sends: member of DM room R.
- channel sends: the write's community (``ChannelScope.writer_community``: the channel's
  listed owner, else the payload's ``communityId`` unless that community's channel list
  says otherwise); the author must be a member of it.
- ``/topic/group/{channelId}``: member of the listed owner; a channel no list names may be
  subscribed to by anyone, because each delivery goes only to members of the event's own
  community (app/chat/channel_scope.py).
- ``/topic/community/{C}``, community/voice signaling: member of community C.
- ``join-channel``: the same rule for the location entered (``home`` is always allowed).

Membership answers come from the read side's ``Membership`` service (Redis cache, then
the community service); its ``BackendUnavailable`` propagates, so the client gets an
ERROR instead of a silent allow.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from app.chat.channel_scope import ChannelScope
from app.chat.payloads import JoinLocation, RoomRef
from app.destinations import parse_topic
from app.errors import Forbidden, NotFound

__all__ = ["MembershipLookup", "Access"]


class MembershipLookup(Protocol):
    """The part of ``app.chat.membership.Membership`` the chat pipeline uses."""

    def is_room_member(self, room_id: int, user_id: int) -> bool: ...

    def room_members(self, room_id: int) -> list[int]: ...

    def is_community_member(self, community_id: int, user_id: int) -> bool: ...

    def community_members(self, community_id: int) -> list[int]: ...

    def channel_community(self, channel_id: int) -> int | None: ...

    def channel_in_community(self, channel_id: int, community_id: int) -> bool: ...

    def listed_channels(self, community_id: int) -> list[int] | None: ...

    def community_member_set(self, community_id: int) -> frozenset[int]: ...

    def user_rooms(self, user_id: int) -> list[str]: ...


class Access:
    """Membership checks; every method raises to refuse and returns the resolved target."""

    def __init__(self, membership: MembershipLookup) -> None:
        self._membership = membership
        self.scope = ChannelScope(membership)

    def require_room(self, user_id: int, room: RoomRef) -> RoomRef:
        """The room with its community filled in (a channel's), if ``user_id`` may post there."""
        if room.kind == "direct":
            self._require_room_member(room.channel_id, user_id)
            return room
        community_id = self.scope.writer_community(user_id, room.channel_id, room.community_id)
        return replace(room, community_id=community_id)

    def require_channel(self, user_id: int, channel_id: int) -> None:
        """A channel with a listed owner needs its membership; an unlisted one is open, since
        everything it carries is scoped by community (subscriptions, ``join-channel``)."""
        owner = self.scope.owner(channel_id)
        if owner is not None:
            self.require_community(user_id, owner)

    def require_community(self, user_id: int, community_id: int) -> None:
        if not self._membership.is_community_member(community_id, user_id):
            raise Forbidden()

    def require_location(self, user_id: int, location: JoinLocation) -> None:
        if location.kind == "direct":
            assert location.ident is not None
            self._require_room_member(location.ident, user_id)
        elif location.kind == "channel":
            assert location.ident is not None
            self.require_channel(user_id, location.ident)

    def authorize_subscription(self, user_id: int, destination: str) -> None:
        room = parse_topic(destination)
        if room is None:
            raise NotFound("unknown destination")
        if room.kind == "direct":
            self._require_room_member(room.ident, user_id)
        elif room.kind == "group":
            self.require_channel(user_id, room.ident)
        else:
            self.require_community(user_id, room.ident)

    def _require_room_member(self, room_id: int, user_id: int) -> None:
        if not self._membership.is_room_member(room_id, user_id):
            raise Forbidden()
