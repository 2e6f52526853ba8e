"""Who may SEND to and SUBSCRIBE to what (issue 3 item 3, protocol.md W-3).

- ``/topic/direct/{R}`` and DM sends: member of DM room R.
- ``/topic/group/{channelId}`` and channel sends: member of the community that owns the
  text channel (unknown channel → ``NotFound``); a ``communityId`` in a payload must be
  that community.
- ``/topic/community/{C}``, community/voice signaling: member of community C.
- ``join-channel``: the same rule for the location entered (``home`` is always allowed).

Membership answers come from the read side's ``Membership`` service (Redis cache, then
the community service); its ``BackendUnavailable`` propagates, so the client gets an
ERROR instead of a silent allow.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from app.chat.payloads import JoinLocation, RoomRef
from app.destinations import parse_topic
from app.errors import BadRequest, Forbidden, NotFound

__all__ = ["MembershipLookup", "Access"]


class MembershipLookup(Protocol):
    """The part of ``app.chat.membership.Membership`` the chat pipeline uses."""

    def is_room_member(self, room_id: int, user_id: int) -> bool: ...

    def room_members(self, room_id: int) -> list[int]: ...

    def is_community_member(self, community_id: int, user_id: int) -> bool: ...

    def community_members(self, community_id: int) -> list[int]: ...

    def channel_community(self, channel_id: int) -> int | None: ...

    def channel_in_community(self, channel_id: int, community_id: int) -> bool: ...

    def user_rooms(self, user_id: int) -> list[str]: ...


class Access:
    """Membership checks; every method raises to refuse and returns the resolved target."""

    def __init__(self, membership: MembershipLookup) -> None:
        self._membership = membership

    def require_room(self, user_id: int, room: RoomRef) -> RoomRef:
        """The room with its owning community filled in, if ``user_id`` may post there."""
        if room.kind == "direct":
            self._require_room_member(room.channel_id, user_id)
            return room
        community_id = self.require_channel(user_id, room.channel_id, claimed=room.community_id)
        if room.community_id is not None and room.community_id != community_id:
            raise BadRequest("communityId: does not own this channel")
        return replace(room, community_id=community_id)

    def require_channel(self, user_id: int, channel_id: int, *, claimed: int | None = None) -> int:
        """The community owning text channel ``channel_id``, if ``user_id`` belongs to it.

        ``claimed`` (the payload's ``communityId``) is believed only when that community's
        channel list, fetched from the community service on a cache miss, has the channel.
        """
        community_id = self._membership.channel_community(channel_id)
        if community_id is None and claimed is not None \
                and self._membership.channel_in_community(channel_id, claimed):
            community_id = claimed
        if community_id is None:
            raise NotFound("unknown channel")
        self.require_community(user_id, community_id)
        return community_id

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
