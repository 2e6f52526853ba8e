"""``mongo_recent.DensityCache``: entries expire, the oldest goes first when full, and a read
can only move a room's ``latest`` forward."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.backends.mongo_recent import Density, DensityCache

T0 = datetime(2025, 1, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _density(latest_s: int = 60) -> Density:
    return Density(messages=10, first=T0, latest=T0 + timedelta(seconds=latest_s))


def test_an_entry_lives_its_ttl_and_no_longer():
    clock = Clock()
    cache = DensityCache(ttl_s=10, clock=clock)
    cache.put("room", _density())
    clock.now += 9.9
    assert cache.get("room") == _density()
    clock.now += 0.1
    assert cache.get("room") is None
    assert cache.get("never put") is None


def test_putting_again_restarts_the_ttl():
    clock = Clock()
    cache = DensityCache(ttl_s=10, clock=clock)
    cache.put("room", _density(1))
    clock.now += 8
    cache.put("room", _density(2))
    clock.now += 8
    assert cache.get("room") == _density(2)


def test_a_full_cache_drops_its_oldest_entry():
    cache = DensityCache(max_rooms=2, clock=Clock())
    cache.put("a", _density(1))
    cache.put("b", _density(2))
    cache.put("a", _density(3))  # put again: now the newest
    cache.put("c", _density(4))
    assert cache.get("b") is None
    assert cache.get("a") == _density(3) and cache.get("c") == _density(4)


def test_a_read_moves_latest_forward_never_back_and_keeps_the_ttl():
    clock = Clock()
    cache = DensityCache(ttl_s=10, clock=clock)
    cache.put("room", _density(60))
    cache.saw("room", T0 + timedelta(seconds=30))
    assert cache.get("room") == _density(60)
    clock.now += 5
    cache.saw("room", T0 + timedelta(seconds=90))
    assert cache.get("room") == Density(messages=10, first=T0, latest=T0 + timedelta(seconds=90))
    clock.now += 5
    assert cache.get("room") is None  # still ten seconds after the summary was read


def test_a_read_of_a_room_not_cached_adds_nothing():
    cache = DensityCache(clock=Clock())
    cache.saw("room", T0)
    assert cache.get("room") is None
