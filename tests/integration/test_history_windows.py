"""History pages read in bounded time windows (``mongo_recent``) against the real MongoDB-wire
server: every page and every cursor page equals a slice of the room's full (time, id) newest
first order, on uniform, bursty and skewed rooms, whether the room summary is kept by the
writer, rebuilt, missing or wrong; and with a summary, page 0 reads one bounded slice."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

import pytest
from bson.int64 import Int64
from pymongo import DESCENDING

from app.backends import mongo_recent
from app.backends.mongo_messages import MongoMessageWriter
from app.backends.mongo_schema import SUMMARIES, summary_id
from app.backends.mongo_summaries import rebuild
from app.chat.model import ChatMessage
from tests.conftest import make_settings
from tests.support.chat_api import BASE_TIME, ChatApi, fresh_id, insert_message
from tests.support.mongo_commands import CommandLog

COMMUNITY = 3


def _uniform(rng: random.Random) -> list[float]:
    return [i * 2.0 for i in range(120)]


def _burst_now(rng: random.Random) -> list[float]:
    """A quiet year, then 70 messages within a few milliseconds: the average rate is far too low."""
    return [i * 86_400.0 * 3 for i in range(60)] + [200 * 86_400.0 + rng.randint(0, 4) / 1000 for _ in range(70)]


def _burst_long_ago(rng: random.Random) -> list[float]:
    """90 messages in one second long ago, then sparse ones days apart: the rate is far too high."""
    return [rng.randint(0, 1000) / 1000 for _ in range(90)] + [86_400.0 * (10 + 7 * i) for i in range(30)]


def _shared_milliseconds(rng: random.Random) -> list[float]:
    """Few distinct times, each shared by many messages whose ids disagree with their order."""
    return [rng.choice([0.0, 0.001, 5.0, 5.001, 9.0, 60.0]) for _ in range(100)]


def _clusters(rng: random.Random) -> list[float]:
    """Clusters of random size separated by random gaps from a second to a month."""
    times, now = [], 0.0
    for _ in range(12):
        now += rng.choice([1.0, 60.0, 3600.0, 86_400.0 * 30])
        times += [now + rng.randint(0, 500) / 1000 for _ in range(rng.randint(1, 25))]
    rng.shuffle(times)  # stored out of time order: ids disagree with times
    return times


SHAPES: dict[str, Callable[[random.Random], list[float]]] = {
    "uniform": _uniform, "burst_now": _burst_now, "burst_long_ago": _burst_long_ago,
    "shared_milliseconds": _shared_milliseconds, "clusters": _clusters,
}


@pytest.fixture
def finds() -> CommandLog:
    return CommandLog()


@pytest.fixture
def api(embedded, finds) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded), mongo_listeners=[finds])
    yield chat
    chat.close()


def _message(room: int, i: int, at: datetime) -> ChatMessage:
    return ChatMessage(kind="channel", channel_id=room, community_id=COMMUNITY, user_id=1 + i % 3,
                       content=f"m{i}", created_at=at)


def _store(api: ChatApi, writer: MongoMessageWriter, shape: str, summary: str) -> int:
    """A room holding the shape's messages (and a neighbour interleaved), summarised as asked."""
    rng = random.Random(f"{shape}/{summary}")
    room = fresh_id()
    times = [BASE_TIME + timedelta(seconds=s) for s in SHAPES[shape](rng)]
    messages = [_message(room, i, at) for i, at in enumerate(times)]
    neighbour = [_message(room + 1, i, at) for i, at in enumerate(times[::3])]
    if summary == "kept":
        for start in range(0, len(messages), 17):  # several group-commit batches, two rooms in each
            writer.insert_many(messages[start:start + 17] + neighbour[start // 3:(start + 17) // 3])
        return room
    for message in messages + neighbour:
        insert_message(api.db, "channel", message.channel_id, message.user_id, message.content, message.created_at,
                       community_id=COMMUNITY)
    if summary in ("rebuilt", "wrong"):
        rebuild(api.db)
    if summary == "wrong":
        api.db[SUMMARIES].update_one({"_id": summary_id("channel", room)}, {"$set": _wrong_summary(rng, times)})
    return room


def _wrong_summary(rng: random.Random, times: list[datetime]) -> dict[str, Any]:
    """A summary that lies about everything the windows are sized from."""
    return rng.choice([
        {"n": Int64(2), "first": max(times) - timedelta(milliseconds=1), "latest": max(times)},
        {"n": Int64(100_000), "first": min(times), "latest": max(times)},
        {"n": Int64(len(times)), "first": min(times), "latest": min(times) + timedelta(milliseconds=2)},
        {"n": Int64(len(times)), "first": max(times) + timedelta(days=1), "latest": max(times) + timedelta(days=2)},
    ])


def _newest_first(api: ChatApi, room: int) -> list[str]:
    """The reference order: the room's whole (time, id) order, newest first, sorted here."""
    docs = api.db.channelMessage.find({"channelId": Int64(room)}, {"localDateTime": 1})
    return [str(d["_id"]) for d in sorted(docs, key=lambda d: (d["localDateTime"], d["_id"]), reverse=True)]


def _unbounded(api: ChatApi, room: int, size: int, page: int) -> list[str]:
    """The query pages used before windows: find + sort + skip + limit over the whole room."""
    cursor = api.db.channelMessage.find({"channelId": Int64(room)}, {"_id": 1}).sort(
        [("localDateTime", DESCENDING), ("_id", DESCENDING)]).skip(page * size).limit(size)
    return [str(d["_id"]) for d in cursor]


def _page(api: ChatApi, room: int, size: int, page: int, before: str | None = None) -> list[str]:
    return [m.id for m in api.read_side.page("channel", room, size=size, page=page, before_id=before)]


@pytest.mark.parametrize("summary", ["kept", "rebuilt", "missing", "wrong"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_page_is_the_slice_of_the_full_order(api, writer, shape, summary):
    room = _store(api, writer, shape, summary)
    order = _newest_first(api, room)
    for size in (1, 7, 50):
        pages = range(len(order) // size + 2) if size > 1 else [*range(6), *range(len(order) - 3, len(order) + 2)]
        for page in pages:
            expected = order[page * size:(page + 1) * size]
            assert _page(api, room, size, page) == expected, (size, page)
            assert _unbounded(api, room, size, page) == expected, (size, page)


@pytest.mark.parametrize("summary", ["kept", "wrong"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_cursor_page_is_the_slice_after_the_cursor(api, writer, shape, summary):
    room = _store(api, writer, shape, summary)
    order = _newest_first(api, room)
    for index in range(0, len(order), 5):
        for size, page in ((3, 0), (3, 2), (40, 0), (40, 1)):
            start = index + 1 + page * size
            assert _page(api, room, size, page, before=order[index]) == order[start:start + size], (index, size, page)


@pytest.mark.parametrize("shape", ["clusters", "shared_milliseconds"])
def test_pages_far_back_start_from_the_servers_skip_with_the_same_result(api, writer, monkeypatch, shape):
    """Past MAX_WINDOWED_SKIP (lowered here so a small room gets there) a page's start comes
    from the server's skip instead of the windows: pages and cursor pages stay the same slices."""
    monkeypatch.setattr(mongo_recent, "MAX_WINDOWED_SKIP", 4)
    room = _store(api, writer, shape, "kept")
    order = _newest_first(api, room)
    for size in (3, 7):
        for page in range(len(order) // size + 2):
            assert _page(api, room, size, page) == order[page * size:(page + 1) * size], (size, page)
    for index in range(0, len(order), 9):
        start = index + 1 + 2 * 3
        assert _page(api, room, 3, 2, before=order[index]) == order[start:start + 3], index


def test_page_zero_of_a_summarised_room_reads_one_bounded_slice(api, writer, finds):
    room = _store(api, writer, "uniform", "kept")
    finds.clear()
    assert len(_page(api, room, 10, 0)) == 10
    [find] = finds.on("find", "channelMessage")  # one slice held the page: no widening, no unbounded query
    assert find["filter"]["channelId"] == room and set(find["filter"]["localDateTime"]) == {"$gte"}
    assert "sort" not in find and find["limit"] == mongo_recent.unsorted_cap(10)  # sorted here
    # The slice covers about 10 messages' worth of time (with slack), not the room's 240 s.
    latest = BASE_TIME + timedelta(seconds=238)
    assert latest - find["filter"]["localDateTime"]["$gte"] <= timedelta(seconds=2 * 10 * 1.5)


def test_a_deep_page_reads_only_positions_of_what_it_skips(api, writer, finds):
    room = _store(api, writer, "uniform", "kept")
    finds.clear()
    _page(api, room, 7, 5)
    skipped = [f for f in finds.on("find", "channelMessage") if f.get("projection") == {"localDateTime": 1}]
    page = [f for f in finds.on("find", "channelMessage") if f.get("projection") != {"localDateTime": 1}]
    assert skipped and page
    assert all(f["limit"] <= mongo_recent.unsorted_cap(7) for f in page)  # documents are read for the page only


def test_a_window_holding_a_burst_is_sorted_and_limited_by_the_server(api, writer, finds):
    """The average rate promises ~10 messages in page zero's window; it holds 70."""
    room = _store(api, writer, "burst_now", "kept")
    order = _newest_first(api, room)
    finds.clear()
    assert _page(api, room, 10, 0) == order[:10]
    unsorted, sorted_ = finds.on("find", "channelMessage")
    assert "sort" not in unsorted and unsorted["limit"] == mongo_recent.unsorted_cap(10)
    assert sorted_["filter"] == unsorted["filter"] and sorted_["limit"] == 10
    assert list(sorted_["sort"]) == ["localDateTime", "_id"]


def test_a_room_without_messages_has_empty_pages(api, writer):
    assert _page(api, fresh_id(), 5, 0) == []
    assert _page(api, fresh_id(), 5, 3) == []


def test_new_messages_lead_page_zero_whether_summarised_or_not(api, writer):
    """The first slice is open above: a message the summary does not know (written around the
    writer, or racing it) is still on page 0."""
    room = _store(api, writer, "uniform", "kept")
    newest = writer.insert(_message(room, 999, BASE_TIME + timedelta(days=3)))
    assert _page(api, room, 3, 0)[0] == newest.id
    raw = insert_message(api.db, "channel", room, 1, "raw, not summarised", BASE_TIME + timedelta(days=4),
                         community_id=COMMUNITY)
    assert _page(api, room, 3, 0)[:2] == [raw.id, newest.id]


def test_a_room_read_again_soon_skips_its_summary_and_the_summary_read_skips_by_user(api, writer, finds):
    room = _store(api, writer, "uniform", "kept")
    finds.clear()
    first = _page(api, room, 10, 0)
    [summary] = finds.on("find", SUMMARIES)
    assert summary["projection"] == {"n": 1, "first": 1, "latest": 1}
    second = _newest_first(api, room)[10:20]
    finds.clear()
    assert _page(api, room, 10, 1) == second
    assert _page(api, room, 10, 0) == first
    assert finds.on("find", SUMMARIES) == []
    page_zero = [f for f in finds.on("find", "channelMessage") if f.get("projection") is None][-1]
    assert set(page_zero["filter"]["localDateTime"]) == {"$gte"}  # still one bounded slice


def test_messages_after_a_cached_density_still_lead_page_zero(api, writer, finds):
    """The cache holds the room's density from before 30 new messages (written around the
    writer: its summary does not know them either); page 0 is still the newest 10, and the
    next read starts its window at the newest message the last one saw."""
    room = _store(api, writer, "uniform", "kept")
    _page(api, room, 10, 0)
    latest = BASE_TIME + timedelta(seconds=238)
    for i in range(30):
        insert_message(api.db, "channel", room, 1, f"late {i}", latest + timedelta(seconds=2 * (i + 1)),
                       community_id=COMMUNITY)
    newest = _newest_first(api, room)[:10]
    assert _page(api, room, 10, 0) == newest
    finds.clear()
    assert _page(api, room, 10, 0) == newest
    [window] = finds.on("find", "channelMessage")
    assert window["filter"]["localDateTime"]["$gte"] > latest  # not the old end minus a window


@pytest.mark.parametrize("shape", ["clusters", "uniform", "shared_milliseconds"])
def test_community_scoped_pages_are_the_slices_of_that_communitys_order(api, writer, monkeypatch, shape):
    """A channel that holds messages of two communities (it moved): pages for one community's
    readers are the slices of that community's order (windows, cursors, and the server's skip),
    and each read puts the community in a second $match after the index range (the embedded
    server read the whole room for a filter with the community in it)."""
    monkeypatch.setattr(mongo_recent, "MAX_WINDOWED_SKIP", 10)
    rng = random.Random(f"scoped/{shape}")
    room = fresh_id()
    for i, seconds in enumerate(SHAPES[shape](rng)):
        insert_message(api.db, "channel", room, 1 + i % 3, f"m{i}", BASE_TIME + timedelta(seconds=seconds),
                       community_id=COMMUNITY if i % 4 else COMMUNITY + 1)
    rebuild(api.db)
    docs = api.db.channelMessage.find({"channelId": Int64(room), "communityId": Int64(COMMUNITY)}, {"localDateTime": 1})
    order = [str(d["_id"]) for d in sorted(docs, key=lambda d: (d["localDateTime"], d["_id"]), reverse=True)]

    def page(size: int, number: int, before: str | None = None) -> list[str]:
        return [m.id for m in api.read_side.page("channel", room, size=size, page=number, before_id=before,
                                                 communities={COMMUNITY})]

    for size in (1, 7, 50):
        for number in range(len(order) // size + 2 if size > 1 else 6):
            assert page(size, number) == order[number * size:(number + 1) * size], (size, number)
    for index in range(0, len(order), 7):
        assert page(5, 1, before=order[index]) == order[index + 6:index + 11], index


def test_community_scoped_reads_match_the_community_after_the_index_range(api, writer, finds):
    room = fresh_id()
    for i in range(30):
        insert_message(api.db, "channel", room, 1, f"m{i}", BASE_TIME + timedelta(seconds=i), community_id=COMMUNITY)
    rebuild(api.db)
    finds.clear()
    assert len(api.read_side.page("channel", room, size=10, page=0, communities={COMMUNITY})) == 10
    reads = [doc for doc in finds.on("aggregate", "channelMessage")]
    assert reads and finds.on("find", "channelMessage") == []
    for read in reads:
        first, second = read["pipeline"][0]["$match"], read["pipeline"][1]["$match"]
        assert "communityId" not in first and first["channelId"] == room
        assert second == {"communityId": COMMUNITY}
