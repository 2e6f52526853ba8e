"""Gap healing (workers/gap_healing.py over app/chat/room_cursors.py): each numbered event is
pushed once, after the events of its room the worker missed, which it reads from the room's
log; numbers not in the log yet wait as holes; quiet rooms' lost tails are found. Fakes only:
the log is a MemoryEventLog, the clocks are the test's."""

from datetime import datetime, timedelta

from hypothesis import given, strategies as st

from app.chat import events
from app.chat.model import ChatMessage, RoomEvent
from app.chat.room_cursors import HOLE_PATIENCE_S, RoomCursor, RoomCursors
from app.chat.room_log import VOID_TOPIC
from tests.fakes import MemoryEventLog, memory_room_log
from workers.gap_healing import GapHealer

ROOM = ("direct", 7)
T0 = datetime(2024, 5, 6, 7, 8, 9)


class Clock:
    def __init__(self):
        self.now = T0 + timedelta(hours=1)
        self.mono = 1000.0

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def record(seq, room=ROOM):
    message = ChatMessage(kind=room[0], channel_id=room[1], user_id=5, content=f"m{seq}", created_at=T0,
                          id=f"{seq:024x}", seq=seq)
    return events.new_message_record(message)


def kept(log, *numbers, room=ROOM, at=T0):
    for seq in numbers:
        topic, _, value = record(seq, room)
        log.append([RoomEvent(room, seq, topic, value, at)])


def decoded(seq, room=ROOM):
    topic, _, value = record(seq, room)
    return events.decode(topic, value)


class Harness:
    def __init__(self):
        self.clock = Clock()
        self.log = MemoryEventLog(now=lambda: self.clock.now)
        self.pushed = []
        self.healer = GapHealer(memory_room_log(self.log), self.push, quiet_check_s=5.0,
                                now=lambda: self.clock.now, monotonic=lambda: self.clock.mono)

    def push(self, d):
        self.pushed.append(d.seq)

    def consume(self, *numbers):
        for seq in numbers:
            self.healer.admit(decoded(seq))


def test_records_in_order_are_pushed_as_they_come_without_reading_the_log():
    h = Harness()
    h.consume(1, 2, 3)
    assert h.pushed == [1, 2, 3] and h.log.after_calls == []


def test_every_consumed_number_is_handed_to_the_counters_as_a_hint_pushed_or_not():
    h = Harness()
    h.consume(1, 2)
    assert h.log.expected == {ROOM: 2}
    h.consume(2, 1)  # dropped as seen, still no lower hint
    assert h.log.expected == {ROOM: 2}
    h.healer.admit(decoded(4, room=("channel", 9)))
    assert h.log.expected == {ROOM: 2, ("channel", 9): 4}


def test_a_record_seen_again_is_dropped():
    h = Harness()
    h.consume(1, 2, 2, 1, 3, 3)
    assert h.pushed == [1, 2, 3] and h.healer.dropped == 3


def test_a_skipped_number_is_read_from_the_log_and_pushed_first():
    h = Harness()
    kept(h.log, 1, 2, 3, 4)
    h.consume(1, 4)
    assert h.pushed == [1, 2, 3, 4]
    h.consume(2, 3)  # the lost records, late after all
    assert h.pushed == [1, 2, 3, 4]


def test_voids_are_settled_without_a_push():
    h = Harness()
    kept(h.log, 1, 3)
    h.log.append([RoomEvent(ROOM, 2, VOID_TOPIC, b"", T0)])
    h.consume(1, 3)
    assert h.pushed == [1, 3]
    h.consume(4)
    assert h.pushed == [1, 3, 4] and len(h.log.after_calls) == 1


def test_a_number_not_kept_yet_waits_as_a_hole_and_is_pushed_when_its_record_comes():
    h = Harness()
    kept(h.log, 1, 3)  # 2 is being written by another worker
    h.consume(1, 3, 4)
    assert h.pushed == [1, 3, 4] and len(h.log.after_calls) == 1  # the hole is looked for once
    h.consume(2)
    assert h.pushed == [1, 3, 4, 2]
    h.consume(2)
    assert h.pushed == [1, 3, 4, 2]


def test_a_hole_given_up_still_takes_its_record_if_it_comes_late():
    h = Harness()
    kept(h.log, 1, 3)
    h.consume(1, 3)
    h.clock.advance(HOLE_PATIENCE_S + 1)
    h.consume(4)  # the hole is given up here
    h.consume(2)
    assert h.pushed == [1, 3, 4, 2]
    h.consume(2)
    assert h.pushed == [1, 3, 4, 2]


def test_a_quiet_room_whose_last_record_was_lost_is_healed_at_the_next_check():
    h = Harness()
    h.log.allocate({ROOM: 3})
    kept(h.log, 1, 2, 3)
    h.consume(1, 2)  # 3 never comes from the broker
    h.healer.check_quiet()
    assert h.pushed == [1, 2]  # too early: the check interval has not passed
    h.clock.advance(6)
    h.healer.check_quiet()
    assert h.pushed == [1, 2, 3]
    h.clock.advance(6)
    h.healer.check_quiet()
    h.consume(3)
    assert h.pushed == [1, 2, 3]


def test_a_room_with_a_hole_is_looked_at_again_by_the_quiet_check():
    h = Harness()
    kept(h.log, 1, 3)
    h.consume(1, 3)
    kept(h.log, 2)  # its writer finished, but its record was lost
    h.clock.advance(6)
    h.healer.check_quiet()
    assert h.pushed == [1, 3, 2]


def test_an_unreadable_log_leaves_holes_and_does_not_stop_delivery():
    h = Harness()
    h.log.after = lambda *args: (_ for _ in ()).throw(RuntimeError("database down"))
    h.consume(1, 3, 4)
    assert h.pushed == [1, 3, 4]


def test_a_room_far_behind_reads_at_most_the_last_heal_max_events():
    h = Harness()
    kept(h.log, *range(1, 1200))
    h.consume(1, 1200)
    assert h.pushed[0] == 1 and h.pushed[-1] == 1200 and len(h.pushed) == 1 + 1000 + 1


def test_records_just_before_the_first_one_seen_of_a_room_are_still_taken_once():
    h = Harness()
    h.consume(40, 39, 41, 39, 10)
    assert h.pushed == [40, 39, 41]


def test_the_least_recently_seen_rooms_are_forgotten_past_the_bound():
    cursors = RoomCursors(max_rooms=2)
    cursors.start(("direct", 1), 0)
    cursors.start(("direct", 2), 0)
    cursors.get(("direct", 1))
    cursors.start(("direct", 3), 0)
    assert cursors.get(("direct", 2)) is None and cursors.get(("direct", 1)) is not None


@given(st.permutations(list(range(1, 13))), st.sets(st.integers(1, 12)))
def test_whatever_order_records_come_in_each_number_is_pushed_once(order, lost):
    """Records of 1..12, some lost by the broker and some repeated: every number kept in the log
    is pushed exactly once, by the time the quiet check ran; except those before the first record
    the worker got, which it cannot know of (it knows a room from that record on)."""
    first = order[0]
    lost = lost - {first}
    h = Harness()
    h.log.allocate({ROOM: 12})
    kept(h.log, *range(1, 13))
    for seq in order:
        if seq not in lost:
            h.consume(seq, seq)
    h.clock.advance(6)
    h.healer.check_quiet()
    assert sorted(h.pushed) == [n for n in range(1, 13) if n >= first or n not in lost]


def test_a_cursor_moves_low_past_every_settled_number():
    cursor = RoomCursor(0)
    for seq in (2, 3, 1, 5):
        cursor.settle(seq)
    assert cursor.low == 3 and cursor.settled == {5} and cursor.highest == 5
