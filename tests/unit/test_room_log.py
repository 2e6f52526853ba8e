"""RoomLog (app/chat/room_log.py): numbering per room in one allocation, keeping records, voids,
and what a resume gets: the events after its number, a reset when they cannot all be given, an
error when the number is ahead. In-memory log; the clock is the test's."""

from datetime import datetime, timedelta

import pytest

from app.chat import events
from app.chat.model import ChatMessage, PendingChange, RoomEvent
from app.chat.room_log import IN_FLIGHT_S, VOID_TOPIC
from app.errors import BadRequest
from tests.fakes import MemoryEventLog, memory_room_log

DM, OTHER = ("direct", 7), ("direct", 8)
T0 = datetime(2024, 5, 6, 7, 8, 9)


class Clock:
    now = T0


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def event_log(clock):
    return MemoryEventLog(now=lambda: clock.now)


@pytest.fixture
def room_log(event_log, clock):
    return memory_room_log(event_log, replay_max_events=10, now=lambda: clock.now)


def message(content, room=DM, n=0):
    return ChatMessage(kind=room[0], channel_id=room[1], user_id=5, content=content, created_at=T0,
                       id=f"{n:024x}")


def store(room_log, *messages):
    numbered = room_log.number(messages)
    stored = [m.with_id(f"{i + 1:024x}") for i, m in enumerate(numbered)]
    return room_log.keep(stored)


def test_a_round_is_numbered_per_room_in_submission_order(room_log, event_log):
    numbered = room_log.number([message("a"), message("x", OTHER), message("b"), message("c")])
    assert [(m.content, m.seq) for m in numbered] == [("a", 1), ("x", 1), ("b", 2), ("c", 3)]
    assert event_log.counters == {DM: 3, OTHER: 1}


def test_kept_records_are_the_published_records(room_log, event_log):
    (kept,) = store(room_log, message("a"))
    assert kept.record == events.new_message_record(kept.message)
    assert event_log.events[DM][1].value == kept.record[2]


def test_a_change_is_numbered_after_the_messages_and_kept_with_its_number(room_log, event_log):
    store(room_log, message("a"))
    change = room_log.number_change(PendingChange("delete", "direct", 7, "1" * 24))
    record = room_log.keep_change(change, None)
    assert change.seq == 2 and b'"seq":2' in record[2] and event_log.events[DM][2].value == record[2]


def test_a_resume_gets_the_events_after_its_number_without_voids(room_log, clock):
    store(room_log, message("a"), message("b"), message("c"))
    room_log.void([(DM, room_log.number([message("failed")])[0].seq)])
    store(room_log, message("d"))
    replay = room_log.replay(DM, 1)
    assert [event.seq for event in replay.events] == [2, 3, 5] and replay.latest == 5 and not replay.reset
    assert room_log.replay(DM, 5).events == []


def test_a_resume_ahead_of_the_room_is_refused(room_log):
    store(room_log, message("a"))
    with pytest.raises(BadRequest, match="ahead"):
        room_log.replay(DM, 2)


def test_a_resume_further_back_than_the_bound_is_a_reset(room_log):
    store(room_log, *[message(str(n)) for n in range(12)])
    assert room_log.replay(DM, 1).reset
    assert not room_log.replay(DM, 2).reset


def test_a_resume_from_before_pruned_events_is_a_reset_once_they_cannot_be_in_flight(room_log, event_log, clock):
    store(room_log, message("a"), message("b"), message("c"))
    del event_log.events[DM][1], event_log.events[DM][2]  # pruned, or written and lost
    assert not room_log.replay(DM, 0).reset  # numbers missing this young may still be written
    clock.now = T0 + timedelta(seconds=IN_FLIGHT_S + 1)
    assert room_log.replay(DM, 0).reset and not room_log.replay(DM, 2).reset


def test_a_page_reads_a_bounded_number_of_events(room_log):
    store(room_log, *[message(str(n)) for n in range(12)])
    page = room_log.page(DM, 1, 4)
    assert [event.seq for event in page.events] == [2, 3, 4, 5] and page.latest == 12


def test_missing_reads_only_the_numbers_between(room_log):
    store(room_log, *[message(str(n)) for n in range(5)])
    assert [event.seq for event in room_log.missing(DM, 1, 4)] == [2, 3]
    assert room_log.missing(DM, 3, 4) == []


def test_voids_are_written_best_effort(room_log, event_log):
    event_log.fail_append = True
    room_log.void([(DM, 1)])  # never raises
    event_log.fail_append = False
    room_log.void([(DM, 1)])
    assert event_log.events[DM][1] == RoomEvent(DM, 1, VOID_TOPIC, b"", T0)
