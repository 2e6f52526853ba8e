"""The in-memory ``ReadMarkers`` counts like ``MongoReadSide``: others' DM messages strictly
after the user's mark, the room's latest time, rooms in input order without repeats."""

from __future__ import annotations

from datetime import datetime, timedelta

from app.chat.model import ChatMessage, RoomActivity
from tests.fakes import MemoryMessageStore, MemoryReadMarkers

T0 = datetime(2025, 3, 1, 12, 0)
ME, PEER = 1, 2


def _dm(store: MemoryMessageStore, room: int, author: int, seconds: int) -> None:
    store.insert(ChatMessage(kind="direct", channel_id=room, user_id=author, content="x",
                             created_at=T0 + timedelta(seconds=seconds)))


def test_counts_others_messages_after_the_mark_and_reports_the_latest_time():
    store = MemoryMessageStore()
    for author, seconds in ((PEER, 1), (ME, 2), (PEER, 3), (PEER, 5), (ME, 9)):
        _dm(store, 10, author, seconds)
    _dm(store, 11, PEER, 4)
    store.insert(ChatMessage(kind="channel", channel_id=10, user_id=PEER, content="not a DM", created_at=T0))
    markers = MemoryReadMarkers(store)
    markers.mark_read("r-10", ME, T0 + timedelta(seconds=3))
    assert markers.room_activity(ME, [11, 10, 12, 11]) == [
        RoomActivity(11, 1, T0 + timedelta(seconds=4)),   # never read: every message of PEER
        RoomActivity(10, 1, T0 + timedelta(seconds=9)),   # only PEER's at 5 s is after the mark
        RoomActivity(12, 0, None),                        # empty room
    ]


def test_without_a_store_every_room_is_empty():
    assert MemoryReadMarkers().room_activity(ME, [3]) == [RoomActivity(3, 0, None)]
