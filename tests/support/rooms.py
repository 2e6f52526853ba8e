"""Test helpers that put memberships into the real Redis cache, as the community service would.

End-to-end tests across the suite use these to make users members of DM rooms and
communities before they send, subscribe or read history. They write through
``RedisMembershipCache`` (so the reverse indexes are kept too) with the default TTL.
"""

from __future__ import annotations

from typing import Sequence

from app.backends.redis_cache import RedisMembershipCache
from app.settings import Settings

__all__ = ["set_room_members", "set_community"]


def set_room_members(redis_url: str, room_id: int, ids: Sequence[int]) -> None:
    """Make ``ids`` the members of DM room ``room_id`` (key ``R{room_id}``)."""
    cache = RedisMembershipCache(redis_url, Settings().membership_ttl_s)
    try:
        cache.set_room_members(room_id, ids)
    finally:
        cache.close()


def set_community(redis_url: str, community_id: int, member_ids: Sequence[int],
                  channel_ids: Sequence[int]) -> None:
    """Make ``member_ids`` the members and ``channel_ids`` the text channels of a community."""
    cache = RedisMembershipCache(redis_url, Settings().membership_ttl_s)
    try:
        cache.set_community_members(community_id, member_ids)
        cache.set_community_channels(community_id, channel_ids)
    finally:
        cache.close()
