"""A round of new messages is numbered and counted in one write per room, against the real
MongoDB-wire server: the group commit over the real backends, the counts it leaves checked
against a brute-force count, the commands it sends, and the upgrade from a version that kept
the summaries in a collection of their own (``roomSummary``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Iterator

import pytest
from pymongo import MongoClient

import app.metrics as metrics
from app.backends.mongo_event_log import MongoEventLog
from app.backends.mongo_history import MongoReadSide
from app.backends.mongo_messages import MongoMessageWriter
from app.backends.mongo_schema import LEGACY_SUMMARIES, ROOM_SEQUENCES, SUMMARIES, SUMMARY_MARKER_ID, ensure_indexes
from app.backends.mongo_summaries import rebuild
from app.chat.group_commit import GroupCommit
from app.chat.model import ChatMessage
from app.chat.room_log import RoomLog
from tests.support.chat_api import fresh_id, insert_message
from tests.support.mongo_commands import CommandLog, ListenedConnection
from tests.unit.test_metrics import Moved

T = datetime(2026, 12, 6, 15, 0, 0)
ONE_DAY = 86400.0


@pytest.fixture
def commands() -> CommandLog:
    return CommandLog()


@pytest.fixture
def connection(settings, commands) -> Iterator[ListenedConnection]:
    listened = ListenedConnection(replace(settings, mongo_db=f"counted_{fresh_id()}"), commands)
    listened.ensure_indexes()
    yield listened
    listened.client.drop_database(listened.db.name)
    listened.client.close()


@pytest.fixture
def room_log(connection) -> RoomLog:
    return RoomLog(MongoEventLog(connection), replay_max_events=1000, retention_s=ONE_DAY)


@pytest.fixture
def commit(connection, room_log) -> GroupCommit:
    return GroupCommit(MongoMessageWriter(connection), room_log)


def dm(room: int, author: int, seconds: float, **fields) -> ChatMessage:
    return ChatMessage(kind="direct", channel_id=room, user_id=author, content="m",
                       created_at=T + timedelta(seconds=seconds), **fields)


def send_round(commit: GroupCommit, messages: list[ChatMessage]) -> list[object]:
    """Submit one round (the committer starts on the first wait) and collect each outcome."""
    submitted = [commit.submit(message, lambda stored, record: None) for message in messages]
    outcomes: list[object] = []
    for one in submitted:
        try:
            outcomes.append(one.wait())
        except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
            outcomes.append(exc)
    return outcomes


def summary(db, room: int) -> tuple[int, dict[int, int], datetime | None]:
    doc = db[SUMMARIES].find_one({"_id": f"direct:{room}"}) or {}
    by_user = {int(user): int(n) for user, n in (doc.get("byUser") or {}).items() if n}
    return int(doc.get("n", 0)), by_user, doc.get("latest")


def truth(db, room: int) -> tuple[int, dict[int, int], datetime | None]:
    docs = list(db.directMessage.find({"channelId": room}))
    by_user: dict[int, int] = {}
    for doc in docs:
        by_user[int(doc["userId"])] = by_user.get(int(doc["userId"]), 0) + 1
    return len(docs), by_user, max((doc["localDateTime"] for doc in docs), default=None)


def updates_of_room_documents(commands: CommandLog) -> list[dict]:
    return commands.on("update", ROOM_SEQUENCES) + commands.on("findAndModify", ROOM_SEQUENCES)


def counter_reads(commands: CommandLog) -> list[dict]:
    """Reads of rooms' counters (not of the summaries' marker, which the test connection's
    index check reads before every write)."""
    return [doc for doc in commands.on("find", ROOM_SEQUENCES) if doc["filter"].get("_id") != SUMMARY_MARKER_ID]


def test_a_round_of_many_rooms_numbers_and_counts_each_room_in_one_update(connection, commands, commit):
    a, b, c = fresh_id(), fresh_id(), fresh_id()
    commands.clear()
    stored = send_round(commit, [dm(a, 1, 0), dm(a, 2, 1), dm(b, 1, 2), dm(c, 3, 3), dm(a, 1, 4)])
    assert [m.seq for m in stored] == [1, 2, 1, 1, 3]
    [update] = updates_of_room_documents(commands)  # one bulk write numbers and counts all three rooms
    assert len(update["updates"]) == 3
    for room in (a, b, c):
        assert summary(connection.db, room) == truth(connection.db, room)


def test_a_round_of_one_room_numbers_and_counts_it_in_one_update_by_id(connection, commands, commit):
    """An update and a read by _id: no findAndModify, which the embedded server answers by
    scanning every room's document."""
    room = fresh_id()
    send_round(commit, [dm(room, 1, 0)])
    commands.clear()
    [stored] = send_round(commit, [dm(room, 2, 5)])
    assert stored.seq == 2
    [update] = updates_of_room_documents(commands)
    assert update.get("update") == ROOM_SEQUENCES and len(update["updates"]) == 1
    assert commands.named("findAndModify") == []
    assert summary(connection.db, room) == truth(connection.db, room) == (2, {1: 1, 2: 1}, T + timedelta(seconds=5))


def test_a_room_this_process_numbered_last_is_numbered_again_without_reading_its_counter(connection, commands,
                                                                                          commit):
    room = fresh_id()
    send_round(commit, [dm(room, 1, 0)])  # unknown here yet: the update and its read-back
    commands.clear()
    stored = [send_round(commit, [dm(room, 2, second)])[0] for second in (1, 2, 3)]
    assert [m.seq for m in stored] == [2, 3, 4]
    updates = updates_of_room_documents(commands)
    assert len(updates) == 3 and counter_reads(commands) == []
    assert all(update["updates"][0]["q"].get("seq") is not None for update in updates)  # compare-and-set
    assert summary(connection.db, room) == truth(connection.db, room)


def other_process(connection) -> GroupCommit:
    """A group commit with a counter memory of its own, over the same database: another worker."""
    return GroupCommit(MongoMessageWriter(connection),
                       RoomLog(MongoEventLog(connection), replay_max_events=1000, retention_s=ONE_DAY))


def test_each_round_is_counted_by_the_path_it_took(connection, commit):
    room, other = fresh_id(), other_process(connection)
    rounds = "smooth_numbering_rounds_total"
    with Moved(rounds, path=metrics.NUMBERING_ONE_CALL) as one_call, \
            Moved(rounds, path=metrics.NUMBERING_MISSED) as missed, \
            Moved(rounds, path=metrics.NUMBERING_READ_BACK) as read_back:
        send_round(commit, [dm(room, 1, 0)])  # unknown: read-back
        send_round(commit, [dm(room, 1, 1)])  # known: one call
        send_round(other, [dm(room, 2, 2)])  # unknown to the other process: read-back
        send_round(commit, [dm(room, 1, 3)])  # the counter moved: missed, then read-back
    assert (one_call.by, missed.by, read_back.by) == (1, 1, 2)


def test_rounds_of_two_processes_in_one_room_take_turns_without_sharing_a_number(connection, commands, commit):
    """Each process's compare-and-set misses after the other numbered the room: that round
    takes the read-back path, and no number is handed out twice or skipped, nor counted twice."""
    room, other = fresh_id(), other_process(connection)
    seqs = [send_round(committer, [dm(room, author, second)])[0].seq
            for second, (committer, author) in enumerate([(commit, 1), (commit, 1), (other, 2), (commit, 1),
                                                           (other, 2), (other, 2), (commit, 1)])]
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert summary(connection.db, room) == truth(connection.db, room) == (7, {1: 4, 2: 3}, T + timedelta(seconds=6))
    before = len(commands.on("update", ROOM_SEQUENCES))
    send_round(other, [dm(room, 2, 7)])  # the compare-and-set misses, then the two-call path
    assert len(commands.on("update", ROOM_SEQUENCES)) - before == 2


def test_a_number_consumed_from_the_other_process_lets_the_next_round_take_one_call(connection, commands, commit,
                                                                                     room_log):
    room, other = fresh_id(), other_process(connection)
    send_round(commit, [dm(room, 1, 0)])
    [theirs] = send_round(other, [dm(room, 2, 1)])
    room_log.saw(("direct", room), theirs.seq)  # what the fan-out consumer does per record
    commands.clear()
    [mine] = send_round(commit, [dm(room, 1, 2)])
    assert mine.seq == 3 and len(updates_of_room_documents(commands)) == 1 and counter_reads(commands) == []


def test_a_hint_ahead_of_the_counter_costs_a_miss_and_never_a_wrong_number(connection, commit, room_log):
    room = fresh_id()
    send_round(commit, [dm(room, 1, 0)])
    room_log.saw(("direct", room), 40)  # no such number: a forged or corrupt record
    assert [m.seq for m in send_round(commit, [dm(room, 1, 1)])] == [2]
    assert summary(connection.db, room)[:2] == truth(connection.db, room)[:2] == (2, {1: 2})


def test_a_repeated_nonce_is_numbered_then_taken_back_and_voided(connection, commit):
    room = fresh_id()
    [first] = send_round(commit, [dm(room, 1, 0, nonce="n-1")])
    again, other = send_round(commit, [dm(room, 1, 1, nonce="n-1"), dm(room, 2, 2)])
    assert again == first and other.seq == 3
    assert summary(connection.db, room)[:2] == truth(connection.db, room)[:2] == (2, {1: 1, 2: 1})
    void = connection.db.roomEvent.find_one({"room": f"direct:{room}", "seq": 2})
    assert void is not None and void["topic"] == ""  # number 2 was the repeat's: kept as a void


def test_upgrading_from_summaries_of_their_own_counts_from_the_messages_until_the_rebuild(settings):
    """A database of the previous version: messages, their roomSummary (believed there) and
    roomSeq counters. This version's first start takes the old marker away (older nodes still
    running then count from the messages), believes no summary until the rebuild, and the
    rebuild sets the summaries beside the counters without moving them."""
    name = f"upgrade_{fresh_id()}"
    client = MongoClient(settings.mongo_url)
    db = client[name]
    user, other, room = fresh_id(), fresh_id(), fresh_id()
    try:
        for i in range(3):
            insert_message(db, "direct", room, other, f"old{i}", T + timedelta(seconds=i))
        db[LEGACY_SUMMARIES].insert_many([{"_id": SUMMARY_MARKER_ID, "by": "rebuild"},
                                          {"_id": f"direct:{room}", "n": 3, "byUser": {str(other): 3}}])
        db[ROOM_SEQUENCES].insert_one({"_id": f"direct:{room}", "seq": 3, "at": T, "grants": []})

        ensure_indexes(db)
        assert db[LEGACY_SUMMARIES].find_one({"_id": SUMMARY_MARKER_ID}) is None
        assert db[SUMMARIES].find_one({"_id": SUMMARY_MARKER_ID}) is None  # it holds messages: not claimed

        listened = ListenedConnection(replace(settings, mongo_db=name), CommandLog())
        try:
            commit = GroupCommit(MongoMessageWriter(listened),
                                 RoomLog(MongoEventLog(listened), replay_max_events=1000, retention_s=ONE_DAY))
            [new] = send_round(commit, [dm(room, user, 10)])
            assert new.seq == 4
            read = MongoReadSide(db)
            [before] = read.room_activity(user, [room])
            assert (before.count, before.latest) == (3, T + timedelta(seconds=10))  # counted from the messages

            report = rebuild(db)
            assert report["direct"] == {"rooms": 1, "messages": 4, "changed": 1}
            counter = db[ROOM_SEQUENCES].find_one({"_id": f"direct:{room}"})
            assert counter["seq"] == 4 and len(counter["grants"]) == 1  # the counter untouched
            assert summary(db, room) == truth(db, room)
            [after] = read.room_activity(user, [room])
            assert (after.count, after.latest) == (3, T + timedelta(seconds=10))
            [next_one] = send_round(commit, [dm(room, other, 11)])
            assert next_one.seq == 5 and summary(db, room) == truth(db, room)
        finally:
            listened.client.close()
    finally:
        client.drop_database(name)
        client.close()
