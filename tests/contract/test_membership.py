"""Membership as the chat domain asks it: ``MemoryMembership`` against ``app.chat.membership.
Membership`` on ``RedisMembershipCache`` (the shared Redis, no community service).

Lists are set by the overwrites of the membership PUT endpoints (``set_room_members``,
``set_community_members``, ``set_community_channels``); an unknown room has no members; a
channel belongs to the community whose list holds it; a user's rooms list communities first.
Ids are fresh per test: the Redis is shared by the whole session.
"""

import itertools
import random

import pytest

from app.backends.redis_cache import RedisMembershipCache
from app.chat.membership import Membership
from app.settings import Settings
from tests.fakes import MemoryMembership

_BASES = itertools.count(random.randrange(10**9, 2 * 10**9, 10**4), 10**4)


class Ids:
    """Fresh room, community, channel and user ids for one test."""

    def __init__(self):
        base = next(_BASES)
        self._next = itertools.count(base + 1)

    def take(self, n):
        return [next(self._next) for _ in range(n)]


class MembershipContract:
    """The cases; a subclass provides the ``membership`` fixture."""

    @pytest.fixture
    def membership(self):
        raise NotImplementedError

    @pytest.fixture
    def ids(self):
        return Ids()

    def test_an_unknown_room_or_community_has_no_members(self, membership, ids):
        room, community, user = ids.take(3)
        assert membership.room_members(room) == [] and not membership.is_room_member(room, user)
        assert membership.community_members(community) == [] and not membership.is_community_member(community, user)
        assert membership.community_channels(community) == []

    def test_room_members_are_the_last_list_set_in_order_without_repeats(self, membership, ids):
        room, a, b, c = ids.take(4)
        membership.set_room_members(room, [b, a, b])
        assert membership.room_members(room) == [b, a]
        assert membership.is_room_member(room, a) and not membership.is_room_member(room, c)
        membership.set_room_members(room, [c])
        assert membership.room_members(room) == [c] and not membership.is_room_member(room, a)

    def test_community_members_are_the_last_list_set(self, membership, ids):
        community, a, b = ids.take(3)
        membership.set_community_members(community, [a, b, a])
        assert membership.community_members(community) == [a, b]
        membership.set_community_members(community, [b])
        assert membership.community_members(community) == [b]
        assert membership.is_community_member(community, b) and not membership.is_community_member(community, a)

    def test_a_channel_belongs_to_the_community_that_lists_it(self, membership, ids):
        community, channel, other_channel, unknown = ids.take(4)
        membership.set_community_channels(community, [channel, other_channel])
        assert membership.community_channels(community) == [channel, other_channel]
        assert membership.channel_community(channel) == community
        assert membership.channel_in_community(channel, community)
        assert membership.channel_community(unknown) is None
        assert not membership.channel_in_community(unknown, community)

    def test_a_channel_dropped_from_the_list_belongs_to_nobody(self, membership, ids):
        community, kept, dropped = ids.take(3)
        membership.set_community_channels(community, [kept, dropped])
        membership.set_community_channels(community, [kept])
        assert membership.channel_community(dropped) is None
        assert not membership.channel_in_community(dropped, community)
        assert membership.channel_in_community(kept, community)

    def test_channel_in_community_asks_that_communitys_own_list(self, membership, ids):
        first, second, channel = ids.take(3)
        membership.set_community_channels(first, [channel])
        membership.set_community_channels(second, [channel])  # now the reverse index names the second
        assert membership.channel_community(channel) == second
        assert membership.channel_in_community(channel, first) and membership.channel_in_community(channel, second)

    def test_community_members_and_channels_are_separate_lists(self, membership, ids):
        community, user, channel = ids.take(3)
        membership.set_community_members(community, [user])
        membership.set_community_channels(community, [channel])
        assert membership.community_members(community) == [user]
        assert membership.community_channels(community) == [channel]

    def test_a_users_rooms_are_communities_then_dm_rooms_each_by_number(self, membership, ids):
        room_low, room_high, community_low, community_high, user, other = ids.take(6)
        membership.set_room_members(room_high, [user])
        membership.set_community_members(community_high, [user, other])
        membership.set_room_members(room_low, [other, user])
        membership.set_community_members(community_low, [user])
        assert membership.user_rooms(user) == [f"community/{community_low}", f"community/{community_high}",
                                               f"direct/{room_low}", f"direct/{room_high}"]
        assert membership.user_rooms(other) == [f"community/{community_high}", f"direct/{room_low}"]

    def test_a_user_dropped_from_a_list_loses_that_room(self, membership, ids):
        room, community, user, other = ids.take(4)
        membership.set_room_members(room, [user, other])
        membership.set_community_members(community, [user])
        membership.set_room_members(room, [other])
        membership.set_community_members(community, [other])
        assert membership.user_rooms(user) == []
        assert membership.user_rooms(other) == [f"community/{community}", f"direct/{room}"]


class TestFakeMembership(MembershipContract):
    @pytest.fixture
    def membership(self):
        return MemoryMembership()


class TestRealMembership(MembershipContract):
    @pytest.fixture
    def membership(self, embedded):
        settings = Settings.from_env({})
        cache = RedisMembershipCache(embedded.redis_url, settings.membership_ttl_s)
        yield Membership(settings, cache, None)
        cache.close()
