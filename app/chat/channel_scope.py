"""Which community a text channel's messages belong to, and who may see them (issue 15 item 6).

A channel's owning community is known from a channel list (the ``community-channel-list`` PUT,
or a community service that answers ``channel-id``). The original community service has no
channel list: it gives member lists only. So every channel event is scoped by a community of
its own, and every reader is checked against that community:

- **Writing.** A message names its ``communityId`` (the original clients send it). When a
  channel list names the channel's owner, the claim must be that owner (lists are the
  stricter source). Otherwise the claim is believed only if that community has no channel
  list (one that does not list the channel refuses it). Either way the author must be a
  member of the community. The stored message and its record carry it; an edit or a delete
  takes the community of the message it changes.
- **Reading.** An event of community C on channel X reaches a reader only if the reader is a
  member of C, and, when a list names X's owner, only if C is that owner (when C has a channel
  list of its own, only if it names X). Live deliveries
  (``audience``: the member set of C, checked once per subscriber), replays after
  ``since-seq`` and history (``shown`` and ``readable``) obey the same rule. Two communities
  that claim one channel id each see only their own messages there.

Events without a community (recorded before this rule) count as the listed owner's, and as
nobody's when nothing lists the channel.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol

from app.errors import BadRequest, Forbidden, NotFound

__all__ = ["ChannelScope", "ScopeLookup", "NOBODY"]

NOBODY: frozenset[int] = frozenset()


class ScopeLookup(Protocol):
    """The part of ``app.chat.membership.Membership`` the scope rules read."""

    def channel_community(self, channel_id: int) -> int | None: ...

    def listed_channels(self, community_id: int) -> list[int] | None: ...

    def is_community_member(self, community_id: int, user_id: int) -> bool: ...

    def community_member_set(self, community_id: int) -> frozenset[int]: ...


class ChannelScope:
    """The community rules of text channels; every method reads membership, none writes."""

    def __init__(self, membership: ScopeLookup) -> None:
        self._membership = membership

    def owner(self, channel_id: int) -> int | None:
        """The community a channel list names as the channel's owner, or None."""
        return self._membership.channel_community(channel_id)

    def writer_community(self, user_id: int, channel_id: int, claimed: int | None) -> int:
        """The community a write to ``channel_id`` belongs to, if ``user_id`` may make it.

        Raises:
            BadRequest: the claim contradicts a channel list.
            NotFound: no list names the owner and the write names no community.
            Forbidden: the author is not a member of that community.
        """
        owner = self.owner(channel_id)
        if owner is not None:
            if claimed is not None and claimed != owner:
                raise BadRequest("communityId: does not own this channel")
            community = owner
        elif claimed is not None:
            if not self._may_claim(channel_id, claimed):
                raise BadRequest("communityId: does not own this channel")
            community = claimed
        else:
            raise NotFound("unknown channel")
        if not self._membership.is_community_member(community, user_id):
            raise Forbidden()
        return community

    def shown(self, channel_id: int, community_id: int | None) -> int | None:
        """The community an event of ``community_id`` on the channel is shown to, or None (nobody)."""
        owner = self.owner(channel_id)
        if community_id is None:
            return owner
        if owner is not None:
            return community_id if community_id == owner else None
        return community_id if self._may_claim(channel_id, community_id) else None

    def _may_claim(self, channel_id: int, community_id: int) -> bool:
        """Whether a community may hold messages in a channel no list names as another's:
        only if it has no channel list of its own (one without the channel says no)."""
        listed = self._membership.listed_channels(community_id)
        return listed is None or channel_id in listed

    def readable(self, user_id: int, channel_id: int, community_id: int | None) -> bool:
        """Whether ``user_id`` may see an event of ``community_id`` on the channel."""
        shown = self.shown(channel_id, community_id)
        return shown is not None and self._membership.is_community_member(shown, user_id)

    def audience(self, channel_id: int, community_id: int | None) -> frozenset[int]:
        """The users who may receive an event of ``community_id`` on the channel."""
        shown = self.shown(channel_id, community_id)
        return NOBODY if shown is None else self._membership.community_member_set(shown)

    def reader_communities(self, user_id: int, channel_id: int,
                           candidates: Callable[[], Iterable[int]]) -> frozenset[int]:
        """The communities whose messages on the channel ``user_id`` may read.

        With a listed owner that is the owner (if a member). Otherwise each candidate (the
        reader's communities as the cache's reverse index knows them, the community of the
        channel's newest message) is checked against its member list.

        Raises:
            Forbidden: none.
        """
        owner = self.owner(channel_id)
        pool = (owner,) if owner is not None else {c for c in candidates() if self._may_claim(channel_id, c)}
        readable = frozenset(c for c in pool if self._membership.is_community_member(c, user_id))
        if not readable:
            raise Forbidden()
        return readable
