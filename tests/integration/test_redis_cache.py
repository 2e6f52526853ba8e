"""RedisMembershipCache against the real Redis: key formats, overwrite semantics, reverse
indexes kept in step with the forward lists, TTLs, and the small JSON cache."""

from __future__ import annotations

import itertools
import json
import random
from typing import Iterator

import gevent
import pytest
import redis

from app.backends.redis_cache import RedisMembershipCache
from app.errors import BackendUnavailable
from app.settings import Settings
from tests.support.rooms import set_community, set_room_members

TTL = Settings().membership_ttl_s
# Ids far from the small ones other tests use, so the shared Redis never mixes them.
_ids = itertools.count(random.randint(10**9, 2 * 10**9) // 1000 * 1000)


def fresh_id() -> int:
    return next(_ids)


@pytest.fixture
def cache(embedded) -> Iterator[RedisMembershipCache]:
    cache = RedisMembershipCache(embedded.redis_url, TTL)
    yield cache
    cache.close()


@pytest.fixture
def raw(embedded) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(embedded.redis_url, decode_responses=True)
    yield client
    client.close()


def test_room_members_use_the_original_key_and_value(cache, raw):
    room, a, b = fresh_id(), fresh_id(), fresh_id()
    cache.set_room_members(room, [a, b])
    assert raw.get(f"R{room}") == json.dumps({"members": [a, b]}, separators=(",", ":"))
    assert 0 < raw.ttl(f"R{room}") <= TTL
    assert cache.room_members(room) == [a, b]


def test_community_members_and_channels_use_their_keys(cache, raw):
    community, a, ch1, ch2 = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    cache.set_community_members(community, [a])
    cache.set_community_channels(community, [ch1, ch2])
    assert json.loads(raw.get(f"CH{community}")) == {"members": [a]}
    assert json.loads(raw.get(f"CHN{community}")) == {"channels": [ch1, ch2]}
    assert cache.community_members(community) == [a]
    assert cache.community_channels(community) == [ch1, ch2]


def test_a_missing_key_is_a_miss_not_an_empty_list(cache):
    room = fresh_id()
    assert cache.room_members(room) is None
    cache.set_room_members(room, [])
    assert cache.room_members(room) == []


def test_a_value_written_by_the_original_server_is_read(cache, raw):
    room = fresh_id()
    raw.set(f"R{room}", '{"members":[5,9]}')
    assert cache.room_members(room) == [5, 9]


def test_a_corrupt_value_reads_as_a_miss(cache, raw):
    room = fresh_id()
    raw.set(f"R{room}", "not json")
    assert cache.room_members(room) is None
    raw.set(f"R{room}", '{"members":["x"]}')
    assert cache.room_members(room) is None


def test_overwrite_updates_the_user_room_index_by_difference(cache, raw):
    room, stays, leaves, joins = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    cache.set_room_members(room, [stays, leaves])
    assert cache.user_rooms(leaves) == [f"direct/{room}"]
    cache.set_room_members(room, [stays, joins])
    assert cache.user_rooms(stays) == [f"direct/{room}"]
    assert cache.user_rooms(leaves) == []
    assert cache.user_rooms(joins) == [f"direct/{room}"]
    assert 0 < raw.ttl(f"UR{joins}") <= TTL


def test_user_rooms_lists_communities_then_rooms(cache):
    user, room, community = fresh_id(), fresh_id(), fresh_id()
    cache.set_room_members(room, [user])
    cache.set_community_members(community, [user])
    assert cache.user_rooms(user) == [f"community/{community}", f"direct/{room}"]


def test_channel_index_follows_the_channel_list(cache, raw):
    community, kept, dropped, added = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    cache.set_community_channels(community, [kept, dropped])
    assert cache.channel_community(dropped) == community
    cache.set_community_channels(community, [kept, added])
    assert cache.channel_community(kept) == community
    assert cache.channel_community(added) == community
    assert cache.channel_community(dropped) is None
    assert 0 < raw.ttl(f"CHC{added}") <= TTL


def test_duplicate_ids_are_stored_once(cache):
    room, a = fresh_id(), fresh_id()
    cache.set_room_members(room, [a, a, a])
    assert cache.room_members(room) == [a]


def test_concurrent_overwrites_leave_indexes_matching_the_final_list(embedded, cache):
    room = fresh_id()
    lists = [[fresh_id() for _ in range(20)] for _ in range(6)]
    writers = [RedisMembershipCache(embedded.redis_url, TTL) for _ in lists]
    jobs = [gevent.spawn(writer.set_room_members, room, ids) for writer, ids in zip(writers, lists)]
    gevent.joinall(jobs, raise_error=True)
    final = cache.room_members(room)
    assert final in lists
    for ids in lists:
        for user in ids:
            expected = [f"direct/{room}"] if user in final else []
            assert cache.user_rooms(user) == expected
    for writer in writers:
        writer.close()


def test_json_values_round_trip_with_ttl(cache, raw):
    key_a, key_b = f"test-json-{fresh_id()}", f"test-json-{fresh_id()}"
    cache.set_many_json({key_a: {"name": "김", "image": None}}, 60)
    assert cache.get_json(key_a) == {"name": "김", "image": None}
    assert cache.get_many_json([key_b, key_a]) == [None, {"name": "김", "image": None}]
    assert 0 < raw.ttl(key_a) <= 60


def test_helpers_make_members_visible_to_the_cache(embedded, cache):
    room, community, channel, user = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    set_room_members(embedded.redis_url, room, [user])
    set_community(embedded.redis_url, community, [user], [channel])
    assert cache.room_members(room) == [user]
    assert cache.community_members(community) == [user]
    assert cache.channel_community(channel) == community
    assert cache.user_rooms(user) == [f"community/{community}", f"direct/{room}"]


def test_an_unreachable_redis_is_backend_unavailable():
    from app.embedded import free_port

    cache = RedisMembershipCache(f"redis://127.0.0.1:{free_port()}/0", TTL)
    with pytest.raises(BackendUnavailable):
        cache.room_members(1)
    with pytest.raises(BackendUnavailable):
        cache.set_room_members(1, [2])


class ChangeLog:
    """What a MembershipChanges feed reported, in order."""

    def __init__(self):
        self.changes = []
        self.gaps = 0

    def changed(self, kind, entity_id):
        self.changes.append((kind, entity_id))

    def gap(self):
        self.gaps += 1


def wait_for(predicate, timeout=5.0):
    with gevent.Timeout(timeout, AssertionError("condition not reached in time")):
        while not predicate():
            gevent.sleep(0.01)


@pytest.fixture
def feed(embedded):
    from app.backends.redis_cache import MembershipChanges
    log = ChangeLog()
    changes = MembershipChanges(embedded.redis_url, log.changed, log.gap)
    changes.start()
    wait_for(lambda: changes.subscribed)
    yield log
    changes.stop()


def test_every_overwrite_is_announced_to_every_subscribed_process(cache, feed):
    room, community = fresh_id(), fresh_id()
    assert feed.gaps == 1  # told once, on subscribing, that earlier changes are unknown
    cache.set_room_members(room, [5, 9])
    cache.set_community_members(community, [5])
    cache.set_community_channels(community, [fresh_id()])
    wait_for(lambda: len([c for c in feed.changes if c[1] in (room, community)]) == 3)
    assert [c for c in feed.changes if c[1] in (room, community)] == [
        ("room", room), ("members", community), ("channels", community)]


def test_a_lost_feed_reports_a_gap_and_comes_back(embedded, cache, raw, feed):
    gaps = feed.gaps
    for client in raw.client_list(_type="pubsub"):
        raw.client_kill_filter(_id=client["id"])
    wait_for(lambda: feed.gaps >= gaps + 2)  # once for the loss, once on resubscribing
    room = fresh_id()
    cache.set_room_members(room, [1])
    wait_for(lambda: ("room", room) in feed.changes)


def test_two_processes_see_each_others_changes_at_once(embedded, cache):
    """Membership copies kept in memory (30 s TTL) are dropped when another process overwrites."""
    from app.backends.redis_cache import MembershipChanges
    from app.chat.membership import Membership
    settings = Settings(membership_local_ttl_s=30.0)
    room = fresh_id()
    writer_cache, reader_cache = (RedisMembershipCache(embedded.redis_url, TTL) for _ in range(2))
    writer, reader = Membership(settings, writer_cache, None), Membership(settings, reader_cache, None)
    changes = MembershipChanges(embedded.redis_url, reader.list_changed, reader.forget_all)
    changes.start()
    try:
        wait_for(lambda: changes.subscribed)
        writer.set_room_members(room, [5, 9])
        assert reader.is_room_member(room, 9)  # read once, now kept for 30 s
        writer.set_room_members(room, [5])  # 9 is removed through the other process
        wait_for(lambda: not reader.is_room_member(room, 9))
    finally:
        changes.stop()
        writer_cache.close()
        reader_cache.close()
