"""RoomMemory (app/chat/room_memory.py): a resume is answered from memory only when it holds
every number after the client's; bounded per room and in all."""

from datetime import datetime

from hypothesis import given, strategies as st

from app.chat import events
from app.chat.model import ChatMessage
from app.chat.room_memory import RoomMemory

ROOM, OTHER = ("direct", 7), ("direct", 8)


def pushed(seq, room=ROOM):
    message = ChatMessage(kind=room[0], channel_id=room[1], user_id=5, content=f"m{seq}",
                          created_at=datetime(2024, 5, 6), id=f"{seq:024x}", seq=seq)
    topic, _, value = events.new_message_record(message)
    return events.decode(topic, value)


def test_a_covered_resume_gets_every_event_after_its_number_in_order():
    memory = RoomMemory()
    for seq in (1, 3, 2, 4):
        memory.remember(pushed(seq))
    assert [d.seq for d in memory.after(ROOM, 1)] == [2, 3, 4]
    assert memory.after(ROOM, 4) == []


def test_a_number_it_never_pushed_sends_the_resume_to_the_log():
    memory = RoomMemory()
    for seq in (5, 6, 8):  # 7: a void, or not consumed yet; 1-4: before this worker started
        memory.remember(pushed(seq))
    assert memory.after(ROOM, 6) is None
    assert memory.after(ROOM, 2) is None
    assert memory.after(ROOM, 9) is None  # ahead of it: the log says whether it is ahead of the room
    assert memory.after(OTHER, 0) is None


def test_it_keeps_at_most_per_room_and_in_all():
    memory = RoomMemory(per_room=3, total=5)
    for seq in range(1, 6):
        memory.remember(pushed(seq))
    assert len(memory) == 3 and memory.after(ROOM, 1) is None and [d.seq for d in memory.after(ROOM, 2)] == [3, 4, 5]
    for seq in range(1, 4):
        memory.remember(pushed(seq, OTHER))
    memory.remember(pushed(6))  # the other room was touched last, then this one: the total forgets the oldest room
    assert len(memory) <= 5


def test_unnumbered_and_repeated_events_are_not_kept_twice():
    memory = RoomMemory()
    memory.remember(events.decode(*events.new_message_record(ChatMessage(
        kind="direct", channel_id=7, user_id=5, content="old", created_at=datetime(2024, 5, 6), id="a" * 24))[::2]))
    memory.remember(pushed(1))
    memory.remember(pushed(1))
    assert len(memory) == 1


@given(st.lists(st.integers(1, 30), max_size=40), st.integers(0, 30))
def test_whatever_it_answers_is_complete(pushes, since):
    memory = RoomMemory(per_room=10)
    for seq in pushes:
        memory.remember(pushed(seq))
    answer = memory.after(ROOM, since)
    if answer is not None:
        numbers = [d.seq for d in answer]
        assert numbers == list(range(since + 1, since + 1 + len(numbers)))
        assert not numbers or numbers[-1] == max(set(pushes) & set(range(since + 1, 31)) or {since})
