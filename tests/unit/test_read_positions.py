"""Read positions (app/backends/mongo_summaries.py): an unread count after a mark as a subtraction.

A model room is driven through random sends, deletes and take-backs, its summary kept as the
MongoDB updates keep it (n, byUser, gone, the last GONE_KEPT removals, seq); a mark taken at a
random point must then give, by subtraction, exactly the others' messages numbered after it
that are still there, or say it cannot (too many removals since)."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.backends.mongo_summaries import GONE_KEPT, Gone, ReadPosition, RoomSummary

T0 = datetime(2026, 12, 6, 12, 0, 0)
USER, OTHER = 5, 9


class ModelRoom:
    """Messages as (seq, author, time) and the summary fields the database would hold."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, int, datetime]] = []
        self.seq = 0
        self.gone: list[Gone] = []
        self.clock = 0

    def send(self, author: int) -> None:
        self.seq += 1
        self.clock += 1
        self.messages.append((self.seq, author, T0 + timedelta(seconds=self.clock)))

    def remove(self, index: int) -> None:
        if self.messages:
            seq, author, at = self.messages.pop(index % len(self.messages))
            self.gone.append(Gone(seq, at, author))

    def summary(self) -> RoomSummary:
        by_user: dict[int, int] = {}
        for _, author, _ in self.messages:
            by_user[author] = by_user.get(author, 0) + 1
        latest = max((at for _, _, at in self.messages), default=None)
        return RoomSummary(messages=len(self.messages), by_user=by_user, latest=latest, gone=len(self.gone),
                           last_gone=tuple(self.gone[-GONE_KEPT:]), seq=self.seq)

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.clock, milliseconds=500)


steps = st.lists(st.tuples(st.sampled_from(["send-user", "send-other", "remove"]), st.integers(0, 1000)),
                 max_size=80)


def play(room: ModelRoom, actions) -> None:
    for action, index in actions:
        if action == "remove":
            room.remove(index)
        else:
            room.send(USER if action == "send-user" else OTHER)


@settings(max_examples=300, deadline=None)
@given(before=steps, after=steps)
def test_a_position_gives_the_others_messages_numbered_after_the_mark(before, after):
    room = ModelRoom()
    play(room, before)
    at = room.now()
    position = room.summary().position(USER, at)
    assert position is not None  # nothing in the room is newer than a mark set now
    marked_seq = room.seq
    play(room, after)
    unread = room.summary().unread_since(position, USER)
    removed_since = len(room.gone) - position.gone
    if removed_since > GONE_KEPT:
        assert unread is None
    else:
        assert unread == sum(1 for seq, author, _ in room.messages if author != USER and seq > marked_seq)


def test_a_room_holding_a_message_newer_than_the_mark_gives_no_position():
    room = ModelRoom()
    room.send(OTHER)
    assert room.summary().position(USER, T0) is None


def test_a_position_from_another_generation_is_not_used():
    room = ModelRoom()
    room.send(OTHER)
    position = room.summary().position(USER, room.now())
    rebuilt = RoomSummary(messages=1, by_user={OTHER: 1}, latest=room.summary().latest, generation=1, seq=room.seq)
    assert rebuilt.unread_since(position, USER) is None


def test_an_unnumbered_message_that_went_is_placed_by_its_time():
    mark = T0 + timedelta(seconds=10)
    position = ReadPosition(at=mark, messages=2, own=0, gone=0, generation=0, seq=0)
    went_before = RoomSummary(messages=3, by_user={OTHER: 3}, gone=1, last_gone=(Gone(None, mark, OTHER),))
    went_after = RoomSummary(messages=3, by_user={OTHER: 3}, gone=1,
                             last_gone=(Gone(None, mark + timedelta(seconds=1), OTHER),))
    assert went_before.unread_since(position, USER) == 2  # 2 added, the one gone was read already
    assert went_after.unread_since(position, USER) == 1


def test_a_position_round_trips_through_its_document_and_refuses_malformed_ones():
    position = ReadPosition(at=T0, messages=3, own=1, gone=2, generation=4, seq=9)
    assert ReadPosition.from_document(position.document()) == position
    for bad in (None, {}, {"at": T0, "n": "x"}, "seen", {"at": T0, "n": 1, "own": 0, "gone": 0, "gen": 0}):
        assert ReadPosition.from_document(bad) is None
