"""Membership: cache first, community service on a miss (§6.4), PUT-only mode without one."""

from __future__ import annotations

from typing import Any, Sequence

import pytest

from app.errors import ServiceRefused
from app.chat.membership import Membership
from app.errors import BackendUnavailable
from app.settings import Settings

BASE = "http://community.test/community-server"


class FakeCache:
    """In-memory MembershipCache with the reverse indexes the Redis one keeps."""

    def __init__(self) -> None:
        self.rooms: dict[int, list[int]] = {}
        self.communities: dict[int, list[int]] = {}
        self.channels: dict[int, list[int]] = {}

    def room_members(self, room_id: int) -> list[int] | None:
        return self.rooms.get(room_id)

    def set_room_members(self, room_id: int, user_ids: Sequence[int]) -> None:
        self.rooms[room_id] = list(user_ids)

    def community_members(self, community_id: int) -> list[int] | None:
        return self.communities.get(community_id)

    def set_community_members(self, community_id: int, user_ids: Sequence[int]) -> None:
        self.communities[community_id] = list(user_ids)

    def community_channels(self, community_id: int) -> list[int] | None:
        return self.channels.get(community_id)

    def set_community_channels(self, community_id: int, channel_ids: Sequence[int]) -> None:
        self.channels[community_id] = list(channel_ids)

    def channel_community(self, channel_id: int) -> int | None:
        return next((c for c, chans in self.channels.items() if channel_id in chans), None)

    def user_rooms(self, user_id: int) -> list[str]:
        return ([f"community/{c}" for c, m in sorted(self.communities.items()) if user_id in m]
                + [f"direct/{r}" for r, m in sorted(self.rooms.items()) if user_id in m])


class FakeHttp:
    """Canned answers by URL; an exception instance is raised instead of returned."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def get_json(self, url: str) -> Any:
        self.calls.append(url)
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer


def wrapped(**result: Any) -> dict[str, Any]:
    return {"isSuccess": True, "code": 1000, "message": "요청에 성공하였습니다.", "result": result}


def with_service(http: FakeHttp, cache: FakeCache | None = None) -> Membership:
    return Membership(Settings(community_service_url=BASE + "/"), cache or FakeCache(), http)  # type: ignore[arg-type]


def test_without_a_service_unknown_rooms_have_no_members():
    membership = Membership(Settings(), FakeCache(), None)
    assert membership.room_members(17) == []
    assert not membership.is_room_member(17, 5)
    assert not membership.is_community_member(3, 5)
    assert membership.community_channels(3) == []
    assert membership.channel_community(12) is None


def test_without_a_service_the_cache_answers():
    cache = FakeCache()
    cache.set_room_members(17, [5, 9])
    cache.set_community_members(3, [5])
    cache.set_community_channels(3, [12])
    membership = Membership(Settings(), cache, None)
    assert membership.is_room_member(17, 9) and not membership.is_room_member(17, 6)
    assert membership.community_members(3) == [5]
    assert membership.channel_community(12) == 3
    assert membership.channel_in_community(12, 3) and not membership.channel_in_community(13, 3)
    assert membership.user_rooms(5) == ["community/3", "direct/17"]


def test_a_url_without_http_client_means_no_service():
    membership = Membership(Settings(community_service_url=BASE), FakeCache(), None)
    assert not membership.has_community_service
    assert membership.room_members(17) == []


def test_a_miss_is_fetched_once_and_cached():
    http = FakeHttp({f"{BASE}/room/feign/17/member-id": wrapped(members=[5, "9"])})
    cache = FakeCache()
    membership = with_service(http, cache)
    assert membership.room_members(17) == [5, 9]
    assert membership.is_room_member(17, 9)
    assert cache.rooms[17] == [5, 9]
    assert http.calls == [f"{BASE}/room/feign/17/member-id"]


def test_community_members_and_channels_use_their_endpoints():
    http = FakeHttp({
        f"{BASE}/community/feign/3/member-id": wrapped(members=[5]),
        f"{BASE}/community/feign/3/channel-id": wrapped(channels=[12, 14]),
    })
    cache = FakeCache()
    membership = with_service(http, cache)
    assert membership.is_community_member(3, 5)
    assert membership.community_channels(3) == [12, 14]
    assert membership.channel_community(14) == 3
    assert cache.communities[3] == [5] and cache.channels[3] == [12, 14]


def test_a_hit_does_not_call_the_service():
    http = FakeHttp({})
    cache = FakeCache()
    cache.set_room_members(17, [5])
    assert with_service(http, cache).is_room_member(17, 5)
    assert http.calls == []


@pytest.mark.parametrize("answer", [ServiceRefused(404), {"isSuccess": False, "code": 3000, "message": "없음"}])
def test_an_unknown_room_is_empty_and_not_cached(answer):
    http = FakeHttp({f"{BASE}/room/feign/17/member-id": answer})
    cache = FakeCache()
    membership = with_service(http, cache)
    assert membership.room_members(17) == []
    assert 17 not in cache.rooms
    membership.room_members(17)
    assert len(http.calls) == 2


@pytest.mark.parametrize("answer", [
    BackendUnavailable(), [], {"result": {"members": "5"}}, {"result": {"members": [5, -1]}},
    {"result": {"members": [True]}}, {"result": None},
])
def test_a_broken_service_refuses_rather_than_guesses(answer):
    http = FakeHttp({f"{BASE}/room/feign/17/member-id": answer})
    cache = FakeCache()
    with pytest.raises(BackendUnavailable):
        with_service(http, cache).is_room_member(17, 5)
    assert 17 not in cache.rooms


def test_user_rooms_come_from_the_service_and_are_filtered():
    http = FakeHttp({f"{BASE}/community/feign/room-list/5": [
        "community/3", "direct/17", "direct/../x", "community/", "direct/0", "other/4"]})
    assert with_service(http).user_rooms(5) == ["community/3", "direct/17"]


@pytest.mark.parametrize("answer", [BackendUnavailable(), ServiceRefused(500), {"not": "a list"}])
def test_user_rooms_fall_back_to_the_cache_index(answer):
    http = FakeHttp({f"{BASE}/community/feign/room-list/5": answer})
    cache = FakeCache()
    cache.set_room_members(17, [5])
    assert with_service(http, cache).user_rooms(5) == ["direct/17"]


class CountingCache(FakeCache):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def room_members(self, room_id: int) -> list[int] | None:
        self.reads += 1
        return super().room_members(room_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def locally_cached(cache: FakeCache, ttl_s: float = 2.0) -> tuple[Membership, Clock]:
    clock = Clock()
    return Membership(Settings(membership_local_ttl_s=ttl_s), cache, None, monotonic=clock), clock


def test_a_list_read_from_the_shared_cache_is_reused_for_the_local_ttl_only():
    cache = CountingCache()
    cache.set_room_members(17, [5, 9])
    membership, clock = locally_cached(cache)
    assert membership.is_room_member(17, 9) and membership.is_room_member(17, 5)
    assert cache.reads == 1
    cache.rooms[17] = [5]  # changed by another process
    clock.now += 1.9
    assert membership.is_room_member(17, 9)  # still this process's copy
    clock.now += 0.2
    assert not membership.is_room_member(17, 9) and cache.reads == 2


def test_a_put_through_this_process_is_seen_at_once():
    cache = CountingCache()
    cache.set_room_members(17, [5, 9])
    membership, _ = locally_cached(cache)
    assert membership.is_room_member(17, 9)
    membership.set_room_members(17, [5])
    assert not membership.is_room_member(17, 9)


def test_an_unknown_room_is_not_kept_locally_and_ttl_zero_keeps_nothing():
    cache = CountingCache()
    membership, _ = locally_cached(cache)
    assert not membership.is_room_member(17, 5)
    cache.rooms[17] = [5]
    assert membership.is_room_member(17, 5)  # appeared: the empty answer was not kept
    uncached, _ = locally_cached(cache, ttl_s=0)
    before = cache.reads
    uncached.is_room_member(17, 5)
    uncached.is_room_member(17, 5)
    assert cache.reads == before + 2


def test_local_lists_stay_bounded():
    from app.chat.membership import LocalLists
    clock = Clock()
    lists = LocalLists(10.0, max_entries=3, monotonic=clock)
    for n in range(3):
        lists.put(("room", n), [n], epoch=lists.epoch)
    clock.now += 11  # all expired: the next put drops them
    lists.put(("room", 99), [99], epoch=lists.epoch)
    assert lists.get(("room", 0)) is None and lists.get(("room", 99)) == [99]
    for n in range(5):
        lists.put(("room", 200 + n), [n], epoch=lists.epoch)
    assert len(lists._entries) <= 3


def test_a_change_heard_while_reading_is_not_overwritten_by_the_stale_read():
    class RacingCache(CountingCache):
        """The change feed reports an overwrite while this read is on its way back (once)."""
        membership = None
        racing = True

        def room_members(self, room_id):
            stale = super().room_members(room_id)
            if self.racing:
                self.racing = False
                self.rooms[room_id] = [5]
                self.membership.list_changed("room", room_id)
            return stale

    cache = RacingCache()
    cache.set_room_members(17, [5, 9])
    membership, _ = locally_cached(cache)
    cache.membership = membership
    assert membership.is_room_member(17, 9)  # the answer of that read
    assert cache.reads == 1
    assert not membership.is_room_member(17, 9) and cache.reads == 2  # not kept: read again


def test_a_gap_in_the_change_feed_drops_every_copy():
    cache = CountingCache()
    cache.set_room_members(17, [5, 9])
    membership, _ = locally_cached(cache)
    membership.is_room_member(17, 9)
    membership.forget_all()
    membership.is_room_member(17, 9)
    assert cache.reads == 2


class OwnerCountingCache(FakeCache):
    def __init__(self) -> None:
        super().__init__()
        self.owner_reads = 0

    def channel_community(self, channel_id: int) -> int | None:
        self.owner_reads += 1
        return super().channel_community(channel_id)


def test_a_channels_community_is_kept_locally_for_the_ttl():
    cache = OwnerCountingCache()
    cache.set_community_channels(3, [12, 13])
    membership, clock = locally_cached(cache)
    assert membership.channel_community(12) == 3 and membership.channel_community(12) == 3
    assert cache.owner_reads == 1
    clock.now += 2.1
    assert membership.channel_community(12) == 3 and cache.owner_reads == 2


@pytest.mark.parametrize("change", ["feed: channels of another community", "put here", "feed gap"])
def test_any_channel_list_change_drops_every_kept_community(change):
    cache = OwnerCountingCache()
    cache.set_community_channels(3, [12])
    membership, _ = locally_cached(cache)
    assert membership.channel_community(12) == 3
    cache.channels = {4: [12]}  # channel 12 moved to community 4 (another process wrote it)
    if change == "put here":
        membership.set_community_channels(4, [12])
    elif change == "feed gap":
        membership.forget_all()
    else:
        membership.list_changed("channels", 4)
    assert membership.channel_community(12) == 4


def test_members_changes_keep_the_channel_owners_and_unknown_channels_are_not_kept():
    cache = OwnerCountingCache()
    cache.set_community_channels(3, [12])
    membership, _ = locally_cached(cache)
    membership.channel_community(12)
    membership.list_changed("members", 3)
    membership.list_changed("room", 17)
    assert membership.channel_community(12) == 3 and cache.owner_reads == 1
    assert membership.channel_community(99) is None
    cache.set_community_channels(5, [99])
    assert membership.channel_community(99) == 5


def test_a_channel_change_heard_while_reading_its_owner_is_not_overwritten():
    class RacingOwners(OwnerCountingCache):
        membership = None

        def channel_community(self, channel_id):
            stale = super().channel_community(channel_id)
            if self.owner_reads == 1:
                self.channels = {4: [channel_id]}
                self.membership.list_changed("channels", 4)
            return stale

    cache = RacingOwners()
    cache.set_community_channels(3, [12])
    membership, _ = locally_cached(cache)
    cache.membership = membership
    assert membership.channel_community(12) == 3  # the answer of that read
    assert membership.channel_community(12) == 4 and cache.owner_reads == 2
