"""message-count after a read mark, by subtraction, against the real MongoDB-wire server.

A mark set about now records the DM room's read position; later counts subtract instead of
reading the messages after the mark. Each answer is checked against a brute-force count of the
stored messages, and the commands sent show whether the messages were read. Cases where the
position cannot be used (too many removals since, a rebuild, a mark moved by a writer that
keeps no positions, a mark in the past) must fall back to counting, still exact."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Iterator

import pytest

from app.backends.mongo_event_log import MongoEventLog
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.backends.mongo_summaries import GONE_KEPT, rebuild
from app.chat.group_commit import GroupCommit
from app.chat.model import ChatMessage
from app.chat.room_log import RoomLog
from tests.conftest import make_settings
from tests.support.chat_api import ChatApi, fresh_id
from tests.support.mongo_commands import CommandLog

USER, OTHER = 5, 9


@pytest.fixture
def commands() -> CommandLog:
    return CommandLog()


@pytest.fixture
def api(embedded, commands) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded), mongo_listeners=[commands])
    yield chat
    chat.close()


@pytest.fixture
def connection(api) -> Iterator[MongoConnection]:
    opened = MongoConnection(api.settings)
    yield opened
    opened.close()


@pytest.fixture
def commit(connection) -> GroupCommit:
    room_log = RoomLog(MongoEventLog(connection), replay_max_events=1000, retention_s=86400.0)
    return GroupCommit(MongoMessageWriter(connection), room_log)


class Clock:
    """Message times after a moment near now, one millisecond apart (MongoDB keeps milliseconds)."""

    def __init__(self) -> None:
        now = datetime.utcnow()
        self.current = now.replace(microsecond=now.microsecond // 1000 * 1000) - timedelta(seconds=2)

    def tick(self) -> datetime:
        self.current += timedelta(milliseconds=1)
        return self.current


def send(commit: GroupCommit, room: int, author: int, when: datetime, **fields) -> ChatMessage:
    message = ChatMessage(kind="direct", channel_id=room, user_id=author, content="m", created_at=when, **fields)
    return commit.submit(message, lambda stored, record: None).wait()


def mark(api: ChatApi, room: int, when: datetime) -> None:
    api.read_side.mark_read(f"r-{room}", USER, when)


def unread(api: ChatApi, room: int) -> int:
    [activity] = api.read_side.room_activity(USER, [room])
    return activity.count


def brute_force(api: ChatApi, room: int) -> int:
    marker = api.db.messageTime.find_one({"channelId": f"r-{room}"}) or {}
    at = (marker.get("read") or {}).get(str(USER))
    return sum(1 for doc in api.db.directMessage.find({"channelId": room})
               if doc["userId"] != USER and (at is None or doc["localDateTime"] > at))


def removal_reads(commands: CommandLog) -> list[dict]:
    """Reads of rooms' last removals (``lastGone``), which the summaries' own read leaves out."""
    return [doc for doc in commands.named("find") if "lastGone" in (doc.get("projection") or {})]


def counted_by_reading(api: ChatApi, commands: CommandLog, room: int) -> tuple[int, bool]:
    """The unread count, and whether answering it read any message."""
    commands.clear()
    count = unread(api, room)
    return count, bool(commands.reads_of_messages())


def test_a_mark_set_now_answers_later_messages_by_subtraction(api, commands, commit, writer):
    room, clock = fresh_id(), Clock()
    for author in (OTHER, USER, OTHER):
        send(commit, room, author, clock.tick())
    mark(api, room, clock.tick())
    for i in range(20):
        send(commit, room, OTHER, clock.tick())
    send(commit, room, USER, clock.tick())
    writer.insert(ChatMessage(kind="direct", channel_id=room, user_id=OTHER, content="unnumbered",
                              created_at=clock.tick()))
    assert counted_by_reading(api, commands, room) == (21, False) and brute_force(api, room) == 21
    assert removal_reads(commands) == []  # nothing went since the mark: the summary alone answers


def test_removals_after_the_mark_are_subtracted_or_returned_by_where_they_were(api, commands, commit, writer):
    room, clock = fresh_id(), Clock()
    old = [send(commit, room, author, clock.tick()) for author in (OTHER, OTHER, USER)]
    mark(api, room, clock.tick())
    new = [send(commit, room, author, clock.tick()) for author in (OTHER, OTHER, USER, OTHER)]
    for message in (old[0], new[1], old[2], new[2]):
        assert writer.delete("direct", message.id, message.user_id) is not None
    assert counted_by_reading(api, commands, room) == (2, False) and brute_force(api, room) == 2
    assert len(removal_reads(commands)) == 1  # the removals, read for this room only


def test_a_repeated_nonce_after_the_mark_is_taken_back_and_not_counted(api, commands, commit):
    room, clock = fresh_id(), Clock()
    first = send(commit, room, OTHER, clock.tick(), nonce="n-1")
    mark(api, room, clock.tick())
    again = send(commit, room, OTHER, clock.tick(), nonce="n-1")
    send(commit, room, OTHER, clock.tick())
    assert again == first
    assert counted_by_reading(api, commands, room) == (1, False) and brute_force(api, room) == 1


def test_more_removals_since_the_mark_than_are_remembered_are_counted_from_the_messages(api, commands, commit, writer):
    room, clock = fresh_id(), Clock()
    send(commit, room, OTHER, clock.tick())
    mark(api, room, clock.tick())
    later = [send(commit, room, OTHER, clock.tick()) for _ in range(GONE_KEPT + 3)]
    for message in later[:GONE_KEPT + 1]:
        writer.delete("direct", message.id, OTHER)
    assert counted_by_reading(api, commands, room) == (2, True) and brute_force(api, room) == 2


def test_a_rebuild_that_rewrote_the_summary_sets_positions_aside(api, commands, commit):
    room, clock = fresh_id(), Clock()
    send(commit, room, OTHER, clock.tick())
    mark(api, room, clock.tick())
    send(commit, room, OTHER, clock.tick())
    api.db.roomSeq.update_one({"_id": f"direct:{room}"}, {"$inc": {"n": 5}})  # drift, as a crash leaves
    assert rebuild(api.db)["direct"]["changed"] >= 1
    assert counted_by_reading(api, commands, room) == (1, True) and brute_force(api, room) == 1


def test_a_mark_moved_by_a_writer_without_positions_is_counted(api, commands, commit):
    room, clock = fresh_id(), Clock()
    send(commit, room, OTHER, clock.tick())
    mark(api, room, clock.tick())
    send(commit, room, OTHER, clock.tick())
    moved = clock.tick()
    api.db.messageTime.update_one({"channelId": f"r-{room}"}, {"$set": {f"read.{USER}": moved}})  # as Java did
    send(commit, room, OTHER, clock.tick())
    assert counted_by_reading(api, commands, room) == (1, True) and brute_force(api, room) == 1


def test_a_mark_in_the_past_gets_no_position(api, commit):
    room = fresh_id()
    long_ago = datetime(2024, 1, 1)
    send(commit, room, OTHER, long_ago)
    mark(api, room, long_ago + timedelta(seconds=1))
    marker = api.db.messageTime.find_one({"channelId": f"r-{room}"})
    assert "seen" not in marker or str(USER) not in marker["seen"]


def test_random_traffic_and_marks_stay_exact(api, commands, commit, writer):
    """Sends (some repeated nonces), deletes by author or by someone else, and marks at now, in a
    random order: every answer equals the brute-force count; most need no read of the messages."""
    rng = random.Random(20261206)
    room, clock = fresh_id(), Clock()
    stored: list[ChatMessage] = []
    subtracted = 0
    for step in range(150):
        action = rng.choice(["send", "send", "send", "delete", "mark", "repeat"])
        if action == "send" or not stored:
            stored.append(send(commit, room, rng.choice([USER, OTHER]), clock.tick(), nonce=f"n{step}"))
        elif action == "repeat":
            original = rng.choice(stored)
            assert send(commit, room, original.user_id, clock.tick(), nonce=original.nonce) == original
        elif action == "delete":
            victim = rng.choice(stored)
            deleter = victim.user_id if rng.random() < 0.8 else USER + OTHER
            if writer.delete("direct", victim.id, deleter) is not None:
                stored.remove(victim)
        else:
            mark(api, room, clock.tick())
        count, read_messages = counted_by_reading(api, commands, room)
        assert count == brute_force(api, room), (step, action)
        subtracted += not read_messages
    assert subtracted > 100


def test_a_room_marked_before_its_first_message_is_answered_by_subtraction(api, commands, commit):
    room, clock = fresh_id(), Clock()
    mark(api, room, clock.tick())
    for author in (OTHER, USER, OTHER):
        send(commit, room, author, clock.tick())
    assert counted_by_reading(api, commands, room) == (2, False) and brute_force(api, room) == 2
