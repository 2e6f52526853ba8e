"""``ReadMarkers``: ``MemoryReadMarkers`` (reading the DMs of a ``MemoryMessageStore``) against
``MongoReadSide`` (reading what ``MongoMessageWriter`` wrote) on the MongoDB-wire server.

Unread counts are others' DM messages strictly after the user's mark, with the room's latest
time, rooms in input order without repeats; only room keys (``r-``/``c-``) carry marks.
"""

from datetime import datetime, timedelta

import pytest

from app.chat.model import ChatMessage, RoomActivity
from tests.fakes import MemoryMessageStore, MemoryReadMarkers

T0 = datetime(2025, 3, 1, 12, 0)
ME, PEER, THIRD = 1, 2, 3


def at(seconds):
    return T0 + timedelta(seconds=seconds)


class ReadMarkersContract:
    """The cases; a subclass provides ``backend``: ``(message writer, read markers)`` on one store."""

    @pytest.fixture
    def backend(self):
        raise NotImplementedError

    @pytest.fixture
    def store(self, backend):
        return backend[0]

    @pytest.fixture
    def markers(self, backend):
        return backend[1]

    @staticmethod
    def dm(store, room, author, seconds):
        store.insert(ChatMessage(kind="direct", channel_id=room, user_id=author, content="x", created_at=at(seconds)))

    def test_counts_others_messages_after_the_mark_with_the_latest_time_in_input_order(self, store, markers):
        for author, seconds in ((PEER, 1), (ME, 2), (PEER, 3), (PEER, 5), (ME, 9)):
            self.dm(store, 10, author, seconds)
        self.dm(store, 11, PEER, 4)
        store.insert(ChatMessage(kind="channel", channel_id=10, user_id=PEER, content="not a DM", created_at=at(20)))
        markers.mark_read("r-10", ME, at(3))
        assert markers.room_activity(ME, [11, 10, 12, 11]) == [
            RoomActivity(11, 1, at(4)),   # never read: every message of PEER
            RoomActivity(10, 1, at(9)),   # only PEER's at 5 s is after the mark
            RoomActivity(12, 0, None),    # empty room
        ]

    def test_no_rooms_no_activity(self, markers):
        assert markers.room_activity(ME, []) == []

    def test_a_message_at_the_mark_is_read(self, store, markers):
        self.dm(store, 10, PEER, 3)
        markers.mark_read("r-10", ME, at(3))
        assert markers.room_activity(ME, [10]) == [RoomActivity(10, 0, at(3))]

    def test_a_later_mark_replaces_the_earlier_one(self, store, markers):
        for seconds in (1, 5, 9):
            self.dm(store, 10, PEER, seconds)
        markers.mark_read("r-10", ME, at(2))
        markers.mark_read("r-10", ME, at(6))
        assert markers.room_activity(ME, [10]) == [RoomActivity(10, 1, at(9))]

    def test_marks_are_per_user(self, store, markers):
        for seconds in (1, 5):
            self.dm(store, 10, PEER, seconds)
        markers.mark_read("r-10", THIRD, at(9))
        assert markers.room_activity(ME, [10]) == [RoomActivity(10, 2, at(5))]
        assert markers.room_activity(THIRD, [10]) == [RoomActivity(10, 0, at(5))]

    def test_a_channel_mark_is_not_the_dm_rooms_mark(self, store, markers):
        self.dm(store, 10, PEER, 1)
        markers.mark_read("c-10", ME, at(9))
        assert markers.room_activity(ME, [10]) == [RoomActivity(10, 1, at(1))]

    @pytest.mark.parametrize("location", ["home", "com3,c-10", "null", "r-x"])
    def test_locations_that_are_not_room_keys_are_ignored(self, store, markers, location):
        self.dm(store, 10, PEER, 1)
        markers.mark_read(location, ME, at(9))
        assert markers.room_activity(ME, [10]) == [RoomActivity(10, 1, at(1))]


class TestFakeReadMarkers(ReadMarkersContract):
    @pytest.fixture
    def backend(self):
        store = MemoryMessageStore()
        return store, MemoryReadMarkers(store)


class TestRealReadMarkers(ReadMarkersContract):
    @pytest.fixture
    def backend(self, mongo_writer, mongo_read_side):
        return mongo_writer, mongo_read_side
