"""Read markers and POST /chat-server/message-count against real MongoDB (W-13, W-14, W-18):
one atomic upsert per location, unread = others' messages after the mark, rooms ordered by
their latest message, 24-hour compact times, and who may ask for whom.

Both ways ``room_activity`` answers are checked against a brute-force count of the same
documents: from the room summaries (kept by the real writer on insert, insert_many, delete,
or rebuilt) and, for rooms without one (messages written around the
writer, as ``insert_message`` does, or a database from before summaries), from the messages
(the zero-unread shortcut, ranged counts, never-read rooms)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any, Iterator

import gevent
import pytest
from bson import ObjectId
from pymongo import MongoClient

from app.backends.mongo_history import MongoReadSide
from app.backends.mongo_messages import MongoConnection, MongoMessageWriter
from app.backends.mongo_schema import IN_CHUNK, SUMMARIES, SUMMARY_MARKER_ID
from app.backends.mongo_summaries import rebuild
from app.chat.model import ChatMessage
from tests.conftest import make_settings
from tests.support.chat_api import BASE_TIME, ChatApi, fresh_id, insert_message
from tests.support.mongo_commands import CommandLog
from tests.support.rooms import set_room_members

SERVICE_TOKEN = "s3rvice-t0ken"
T = BASE_TIME.replace(hour=15)  # afternoon: a 12-hour clock would write 03


@pytest.fixture
def commands() -> CommandLog:
    return CommandLog()


@pytest.fixture
def api(embedded, commands) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded, message_count_max_rooms=5), mongo_listeners=[commands])
    yield chat
    chat.close()


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def write(writer: MongoMessageWriter, room: int, author: int, when: datetime, content: str = "m") -> ChatMessage:
    return writer.insert(dm(room, author, when, content))


def dm(room: int, author: int, when: datetime, content: str = "m") -> ChatMessage:
    return ChatMessage(kind="direct", channel_id=room, user_id=author, content=content, created_at=when)


def brute_force(api: ChatApi, user: int, rooms: list[int]) -> list[tuple[int, int, datetime | None]]:
    """(room, unread, latest) computed here from every stored message and the user's marks."""
    answers = []
    for room in rooms:
        docs = list(api.db.directMessage.find({"channelId": room}))
        marker = api.db.messageTime.find_one({"channelId": f"r-{room}"}) or {}
        mark = (marker.get("read") or {}).get(str(user))
        unread = sum(1 for d in docs if d["userId"] != user and (mark is None or d["localDateTime"] > mark))
        answers.append((room, unread, max((d["localDateTime"] for d in docs), default=None)))
    return answers


def activity_of(api: ChatApi, user: int, rooms: list[int]) -> list[tuple[int, int, datetime | None]]:
    return [(a.room_id, a.count, a.latest) for a in api.read_side.room_activity(user, rooms)]


def rooms_for(api: ChatApi, user: int, count: int, other: int) -> list[int]:
    rooms = [fresh_id() for _ in range(count)]
    for room in rooms:
        set_room_members(api.settings.redis_url, room, [user, other])
    return rooms


def count(api: ChatApi, user: int, body: Any, **headers: str) -> Any:
    return api.client.post("/chat-server/message-count", json=body, headers=api.auth(user, **headers))


def assert_only_latest_finds(commands: CommandLog) -> None:
    """Finds on the messages only ever fetch the latest time, one document, index fields only."""
    for find in commands.on_messages("find"):
        assert find["limit"] == 1 and find["sort"] == {"localDateTime": -1}
        assert find["projection"] == {"localDateTime": 1, "_id": 0}


# -- read markers ------------------------------------------------------------------------


def test_mark_read_keeps_one_document_per_location(api):
    location, a, b = f"r-{fresh_id()}", fresh_id(), fresh_id()
    api.read_side.mark_read(location, a, at(1))
    api.read_side.mark_read(location, b, at(2))
    api.read_side.mark_read(location, a, at(3))
    [doc] = list(api.db.messageTime.find({"channelId": location}))
    assert doc["read"] == {str(a): at(3), str(b): at(2)}


def test_concurrent_first_marks_lose_nothing(api):
    location = f"c-{fresh_id()}"
    users = [fresh_id() for _ in range(12)]
    sides = [MongoReadSide(api.db) for _ in users]
    gevent.joinall([gevent.spawn(side.mark_read, location, user, at(i))
                    for i, (side, user) in enumerate(zip(sides, users))], raise_error=True)
    [doc] = list(api.db.messageTime.find({"channelId": location}))
    assert doc["read"] == {str(user): at(i) for i, user in enumerate(users)}


@pytest.mark.parametrize("location", ["home", "com3,c-7", "com3", "null", "c-x", "r-", "r-0", "x-5", "r-5\n"])
def test_only_text_channels_and_dm_rooms_get_marks(api, location):
    api.read_side.mark_read(location, 5, at(0))
    assert api.db.messageTime.count_documents({}) == 0


# -- message-count -----------------------------------------------------------------------


def test_counts_and_order_follow_the_intended_semantics(api, commands):
    user, other = fresh_id(), fresh_id()
    read_some, never_read, empty_a, all_read, empty_b = rooms_for(api, user, 5, other)
    for i in range(3):
        insert_message(api.db, "direct", read_some, other, f"r{i}", at(10 + i))
    insert_message(api.db, "direct", read_some, user, "mine", at(20))
    api.read_side.mark_read(f"r-{read_some}", user, at(10.5))
    for i in range(4):
        insert_message(api.db, "direct", never_read, other, f"n{i}", at(30 + i))
    insert_message(api.db, "direct", never_read, user, "mine", at(40.123))
    insert_message(api.db, "direct", all_read, other, "old", at(1))
    api.read_side.mark_read(f"r-{all_read}", user, at(2))
    commands.clear()
    response = count(api, user, {"userId": user, "roomIds": [read_some, never_read, empty_a, all_read, empty_b]})
    assert response.status_code == 200
    assert response.get_json() == [
        {"roomId": never_read, "count": 4, "localDateTime": "20240301150040123"},
        {"roomId": read_some, "count": 2, "localDateTime": "20240301150020000"},
        {"roomId": all_read, "count": 0, "localDateTime": "20240301150001000"},
        {"roomId": empty_a, "count": 0, "localDateTime": None},
        {"roomId": empty_b, "count": 0, "localDateTime": None},
    ]
    # Finds only ever fetch one time (the latest); every room's messages are counted by the server.
    assert_only_latest_finds(commands)


def test_rooms_with_the_same_latest_time_are_all_kept(api):
    user, other = fresh_id(), fresh_id()
    rooms = rooms_for(api, user, 3, other)
    for room in rooms:
        insert_message(api.db, "direct", room, other, "same", at(5))
    result = count(api, user, {"roomIds": rooms}).get_json()
    assert [entry["roomId"] for entry in result] == rooms
    assert all(entry["count"] == 1 for entry in result)


def test_a_room_read_up_to_its_latest_message_costs_no_count_query(api, commands):
    user, other = fresh_id(), fresh_id()
    read_after, read_at_latest = rooms_for(api, user, 2, other)
    for room in (read_after, read_at_latest):
        insert_message(api.db, "direct", room, other, "a", at(1))
        insert_message(api.db, "direct", room, user, "b", at(2))
    api.read_side.mark_read(f"r-{read_after}", user, at(60))
    api.read_side.mark_read(f"r-{read_at_latest}", user, at(2))  # a tie: not newer than the mark
    commands.clear()
    activity = api.read_side.room_activity(user, [read_after, read_at_latest])
    assert [(a.room_id, a.count, a.latest) for a in activity] == [(read_after, 0, at(2)), (read_at_latest, 0, at(2))]
    assert commands.on_messages("aggregate") == []  # the latest time alone decided
    assert len(commands.on_messages("find")) == 2
    assert_only_latest_finds(commands)


def test_only_messages_strictly_newer_than_the_mark_count(api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    insert_message(api.db, "direct", room, other, "before", at(1))
    insert_message(api.db, "direct", room, other, "at the mark", at(2))
    insert_message(api.db, "direct", room, other, "a millisecond later", at(2.001))
    insert_message(api.db, "direct", room, other, "same millisecond", at(2.001))
    api.read_side.mark_read(f"r-{room}", user, at(2))
    [activity] = api.read_side.room_activity(user, [room])
    assert (activity.count, activity.latest) == (2, at(2.001))


def test_own_messages_after_the_mark_move_the_latest_time_but_not_the_count(api, commands):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    insert_message(api.db, "direct", room, other, "read", at(1))
    api.read_side.mark_read(f"r-{room}", user, at(5))
    for i in range(3):
        insert_message(api.db, "direct", room, user, f"mine{i}", at(10 + i))
    commands.clear()
    [activity] = api.read_side.room_activity(user, [room])
    assert (activity.count, activity.latest) == (0, at(12))
    [counted] = commands.on_messages("aggregate")  # the mark is older than the latest: counted
    assert counted["pipeline"][0] == {"$match": {"channelId": room, "localDateTime": {"$gt": at(5)}}}


def test_a_never_read_room_counts_every_other_authors_message_in_one_pass(api, commands):
    user, other, third = fresh_id(), fresh_id(), fresh_id()
    only_mine, mixed = rooms_for(api, user, 2, other)
    insert_message(api.db, "direct", only_mine, user, "hello?", at(3))
    insert_message(api.db, "direct", mixed, other, "x", at(1))
    insert_message(api.db, "direct", mixed, third, "y", at(2))
    insert_message(api.db, "direct", mixed, user, "mine, newest", at(9))
    api.read_side.mark_read(f"r-{mixed}", other, at(100))  # someone else's mark changes nothing for user
    commands.clear()
    activity = api.read_side.room_activity(user, [only_mine, mixed])
    assert [(a.room_id, a.count, a.latest) for a in activity] == [(only_mine, 0, at(3)), (mixed, 2, at(9))]
    assert commands.on_messages("find") == []
    assert len(commands.on_messages("aggregate")) == 2


def test_rooms_without_messages_have_no_count_and_no_latest_time(api):
    user, other = fresh_id(), fresh_id()
    marked, unmarked = rooms_for(api, user, 2, other)
    api.read_side.mark_read(f"r-{marked}", user, at(1))
    insert_message(api.db, "direct", fresh_id(), other, "another room", at(5))
    activity = api.read_side.room_activity(user, [marked, unmarked])
    assert [(a.room_id, a.count, a.latest) for a in activity] == [(marked, 0, None), (unmarked, 0, None)]


@pytest.mark.parametrize("summaries", ["none: counted", "kept by the writer", "rebuilt"])
def test_counts_match_a_brute_force_count_of_the_same_messages(api, writer, commands, summaries):
    """Random rooms, authors, times (with many shared milliseconds) and marks, including marks
    equal to a message time, before the first and after the last message."""
    rng = random.Random(20261124)
    user, others = fresh_id(), [fresh_id(), fresh_id()]
    rooms = [fresh_id() for _ in range(12)]
    for room in rooms[:-1]:  # the last room stays empty
        for _ in range(rng.randint(1, 25)):
            author, when = rng.choice([user, *others]), at(rng.randint(0, 40) / 4)
            if summaries == "kept by the writer":
                write(writer, room, author, when)
            else:
                insert_message(api.db, "direct", room, author, "m", when)
    if summaries == "rebuilt":
        rebuild(api.db)
    for i, room in enumerate(rooms):
        choice = ["none", "time", "between", "early", "late"][i % 5]
        times = [d["localDateTime"] for d in api.db.directMessage.find({"channelId": room})] or [at(0)]
        mark = {"none": None, "time": rng.choice(times), "between": at(rng.randint(0, 40) / 4 + 0.1),
                "early": at(-1), "late": at(60)}[choice]
        if mark is not None:
            api.read_side.mark_read(f"r-{room}", user, mark)
    api.read_side.mark_read(f"r-{rooms[0]}", others[0], at(100))
    expected = brute_force(api, user, list(reversed(rooms)))
    commands.clear()
    assert activity_of(api, user, list(reversed(rooms)) + rooms[:2]) == expected
    ranged = [doc for doc in commands.on_messages("aggregate") if "$gt" in str(doc["pipeline"][0])]
    if summaries != "none: counted":
        # Only rooms whose mark lies inside their time range read messages, each one range,
        # plus one check that the room without a summary (the empty one) holds nothing.
        [checked] = commands.on("distinct", "directMessage")
        assert checked["query"] == {"channelId": {"$in": [rooms[-1]]}}
        assert len(commands.reads_of_messages()) == len(ranged) + 1
        assert len(commands.on("find", SUMMARIES)) == 1 and len(commands.on("find", "messageTime")) == 1


def test_summaries_answer_without_reading_the_messages(api, writer, commands):
    user, other = fresh_id(), fresh_id()
    never_read, read_all, read_before_first, own_only = rooms_for(api, user, 4, other)
    for room in (never_read, read_all, read_before_first):
        for i in range(3):
            write(writer, room, other, at(10 + i))
        write(writer, room, user, at(20))
    write(writer, own_only, user, at(5))
    api.read_side.mark_read(f"r-{read_all}", user, at(20))
    api.read_side.mark_read(f"r-{read_before_first}", user, at(9))
    commands.clear()
    rooms = [never_read, read_all, read_before_first, own_only]
    assert activity_of(api, user, rooms) == [(never_read, 3, at(20)), (read_all, 0, at(20)),
                                            (read_before_first, 3, at(20)), (own_only, 0, at(5))]
    assert commands.reads_of_messages() == []
    [summaries] = commands.on("find", SUMMARIES)
    [marks] = commands.on("find", "messageTime")
    assert len(summaries["filter"]["_id"]["$in"]) == 5  # the four rooms and the marker: one query
    assert len(marks["filter"]["channelId"]["$in"]) == 4


def test_many_rooms_are_looked_up_in_chunks_with_the_same_answers(api, writer, commands):
    """Summaries and marks of 70 rooms: lookups of at most IN_CHUNK keys each, none missed."""
    user, other = fresh_id(), fresh_id()
    rooms = rooms_for(api, user, 70, other)
    writer.insert_many([dm(room, other if i % 4 else user, at(i % 7 + n)) for i, room in enumerate(rooms)
                        for n in range(i % 3)])
    for room in rooms[::5]:
        api.read_side.mark_read(f"r-{room}", user, at(1.5))
    expected = brute_force(api, user, rooms)
    commands.clear()
    assert activity_of(api, user, rooms) == expected
    summaries, marks = commands.on("find", SUMMARIES), commands.on("find", "messageTime")
    assert [len(f["filter"]["_id"]["$in"]) for f in summaries] == [IN_CHUNK, IN_CHUNK, 71 - 2 * IN_CHUNK]
    assert [len(f["filter"]["channelId"]["$in"]) for f in marks] == [IN_CHUNK, IN_CHUNK, 70 - 2 * IN_CHUNK]
    assert all(f["limit"] == len(f["filter"]["_id"]["$in"]) for f in summaries)


def test_a_mark_inside_the_rooms_time_range_counts_only_after_it(api, writer, commands):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    for i in range(6):
        write(writer, room, other if i % 3 else user, at(i))
    api.read_side.mark_read(f"r-{room}", user, at(2.5))
    commands.clear()
    assert activity_of(api, user, [room]) == [(room, 2, at(5))]
    [counted] = commands.reads_of_messages()
    assert counted["pipeline"][0] == {"$match": {"channelId": room, "localDateTime": {"$gt": at(2.5)}}}


def test_rooms_without_a_summary_are_checked_in_one_query_and_counted_if_they_hold_messages(api, writer, commands):
    user, other = fresh_id(), fresh_id()
    summarised, written_around, empty_a, empty_b = rooms_for(api, user, 4, other)
    write(writer, summarised, other, at(1))
    insert_message(api.db, "direct", written_around, other, "no summary", at(2))
    commands.clear()
    rooms = [summarised, written_around, empty_a, empty_b]
    assert activity_of(api, user, rooms) == [(summarised, 1, at(1)), (written_around, 1, at(2)),
                                            (empty_a, 0, None), (empty_b, 0, None)]
    [checked] = commands.on("distinct", "directMessage")
    assert sorted(checked["query"]["channelId"]["$in"]) == sorted([written_around, empty_a, empty_b])
    assert len(commands.reads_of_messages()) == 2  # the check, then the one room holding messages


def test_a_database_from_before_summaries_is_counted_until_it_is_rebuilt(embedded, commands):
    settings = make_settings(embedded)
    user, other = fresh_id(), fresh_id()
    room = fresh_id()
    legacy = MongoClient(settings.mongo_url)
    for i in range(3):  # written before this version: no summary
        insert_message(legacy[settings.mongo_db], "direct", room, other, f"old{i}", at(i))
    legacy.close()
    chat = ChatApi(settings, mongo_listeners=[commands])
    connection = MongoConnection(settings)
    try:
        assert chat.db[SUMMARIES].find_one({"_id": SUMMARY_MARKER_ID}) is None  # not claimed: it held messages
        write(MongoMessageWriter(connection), room, other, at(10))  # a summary of one message: not the truth
        assert activity_of(chat, user, [room]) == [(room, 4, at(10))]
        report = rebuild(chat.db)
        assert report["direct"] == {"rooms": 1, "messages": 4, "changed": 1}
        commands.clear()
        assert activity_of(chat, user, [room]) == [(room, 4, at(10))]
        assert commands.reads_of_messages() == []  # believed now
    finally:
        connection.close()
        chat.close()


def test_every_write_path_keeps_counts_exact(api, writer):
    """Random inserts, batches, deletes (also by the wrong author) and edits, with moving
    marks: after each step the answer is the brute-force count, and a rebuild finds nothing
    to change in n, byUser and latest."""
    rng = random.Random(77)
    user, others = fresh_id(), [fresh_id(), fresh_id()]
    rooms = rooms_for(api, user, 4, others[0])
    stored: list[ChatMessage] = []
    clock = iter(range(10_000))
    for step in range(160):
        action = rng.choice(["insert", "insert", "batch", "delete", "edit", "mark"])
        if action == "insert" or not stored:
            stored.append(write(writer, rng.choice(rooms), rng.choice([user, *others]), at(next(clock) / 2)))
        elif action == "batch":
            batch = [dm(rng.choice(rooms), rng.choice([user, *others]), at(rng.choice([next(clock), 3]) / 2))
                     for _ in range(rng.randint(1, 6))]
            stored += [m for m in writer.insert_many(batch) if isinstance(m, ChatMessage)]
        elif action == "delete":
            victim = rng.choice(stored)
            wrong = rng.random() < 0.2
            removed = writer.delete("direct", victim.id, others[0] if wrong and victim.user_id != others[0]
                                    else victim.user_id)
            if removed is not None:
                stored.remove(victim)
                pass
        elif action == "edit":
            victim = rng.choice(stored)
            writer.edit("direct", victim.id, victim.user_id, "edited", at(9999))
        else:
            api.read_side.mark_read(f"r-{rng.choice(rooms)}", user, at(rng.randint(0, step + 1) / 2))
        assert activity_of(api, user, rooms) == brute_force(api, user, rooms), (step, action)
    recount = rebuild(api.db)
    assert recount["direct"]["messages"] == len(stored)
    for room in rooms:
        doc = api.db[SUMMARIES].find_one({"_id": f"direct:{room}"})
        docs = list(api.db.directMessage.find({"channelId": room}))
        assert doc["n"] == len(docs) and doc.get("latest") == max((d["localDateTime"] for d in docs), default=None)


def test_concurrent_writers_lose_no_count(api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    writers = [MongoConnection(api.settings) for _ in range(6)]
    try:
        def burst(index: int, connection: MongoConnection) -> None:
            writer = MongoMessageWriter(connection)
            for i in range(8):
                stored = writer.insert(dm(room, other if i % 2 else user, at(index * 10 + i)))
                if i % 4 == 3:
                    writer.delete("direct", stored.id, stored.user_id)  # often the room's newest
            writer.insert_many([dm(room, other, at(index)), dm(room, user, at(index + 0.5))])
        gevent.joinall([gevent.spawn(burst, i, c) for i, c in enumerate(writers)], raise_error=True)
    finally:
        for connection in writers:
            connection.close()
    assert activity_of(api, user, [room]) == brute_force(api, user, [room])
    doc = api.db[SUMMARIES].find_one({"_id": f"direct:{room}"})
    newest = max(d["localDateTime"] for d in api.db.directMessage.find({"channelId": room}))
    assert doc["n"] == api.db.directMessage.count_documents({"channelId": room})
    assert doc["latest"] >= newest  # never older than the truth, whatever the interleaving


def test_a_message_the_summary_missed_stays_missed_until_the_rebuild(api, writer):
    """What a crash between the message write and its summary update leaves: the room's
    summary is one short (here: the newest message, so a mark before it reads as all read),
    and the rebuild repairs it."""
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    write(writer, room, other, at(1))
    api.read_side.mark_read(f"r-{room}", user, at(2))
    insert_message(api.db, "direct", room, other, "stored, then the process died", at(3))
    assert activity_of(api, user, [room]) == [(room, 0, at(1))]  # the documented hazard
    assert rebuild(api.db)["direct"]["changed"] == 1
    assert activity_of(api, user, [room]) == [(room, 1, at(3))] == brute_force(api, user, [room])


def test_rebuild_empties_summaries_of_rooms_whose_messages_are_gone(api, writer):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    stored = write(writer, room, other, at(1))
    api.db.directMessage.delete_one({"_id": ObjectId(stored.id)})  # deleted around the writer
    assert rebuild(api.db)["direct"] == {"rooms": 0, "messages": 0, "changed": 1}
    assert activity_of(api, user, [room]) == [(room, 0, None)]


def test_the_rebuild_command_recounts_the_configured_database(api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    insert_message(api.db, "direct", room, other, "written around the writer", at(1))
    env = {**os.environ, "MONGO_URL": api.settings.mongo_url, "MONGO_DB": api.settings.mongo_db}
    done = subprocess.run([sys.executable, "-m", "app.backends.rebuild_summaries"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["direct"] == {"rooms": 1, "messages": 1, "changed": 1}
    assert api.db[SUMMARIES].find_one({"_id": f"direct:{room}"})["n"] == 1


def test_the_response_is_a_bare_array_and_user_id_defaults_to_the_token(api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    assert count(api, user, {"roomIds": [room], "extra": {"ignored": True}}).get_json() == [
        {"roomId": room, "count": 0, "localDateTime": None}]


def test_asking_for_someone_else_with_a_user_token_is_403(api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    response = count(api, user, {"userId": other, "roomIds": [room]})
    assert response.status_code == 403 and response.get_json()["isSuccess"] is False


def test_a_room_the_user_is_not_in_refuses_the_whole_request(api, commands):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    foreign = fresh_id()
    set_room_members(api.settings.redis_url, foreign, [other])
    commands.clear()
    response = count(api, user, {"roomIds": [room, foreign]})
    assert response.status_code == 403
    assert commands.commands == []  # nothing was counted


def test_without_a_token_a_remote_caller_is_401(api):
    response = api.client.post("/chat-server/message-count", json={"userId": 5, "roomIds": [1]},
                               environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 401 and response.get_json()["code"] == 401


def test_without_a_service_token_setting_an_anonymous_loopback_caller_is_the_community_service(api):
    """protocol.md §6.2: the community server POSTs message-count without any credential."""
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    insert_message(api.db, "direct", room, other, "x", at(1))
    response = api.client.post("/chat-server/message-count", json={"userId": user, "roomIds": [room]})
    assert response.get_json() == [{"roomId": room, "count": 1, "localDateTime": "20240301150001000"}]
    # With a user token it is that user's call, and a user may only ask for themself.
    response = api.client.post("/chat-server/message-count", json={"userId": user, "roomIds": [room]},
                               headers=api.auth(other))
    assert response.status_code == 403


@pytest.mark.parametrize("body", [
    b"not json", b'["a list"]', b'{"roomIds": "1,2"}', b'{"roomIds": [1, "abc"]}', b'{"roomIds": [{"$gt": 1}]}',
    b'{"roomIds": [0]}', b'{"roomIds": [1,2,3,4,5,6]}', b'{"roomIds": [true]}', b'{}', b'{"roomIds": [1], "userId": "x"}',
])
def test_bad_bodies_are_400(api, body):
    user = fresh_id()
    response = api.client.post("/chat-server/message-count", data=body, headers=api.auth(user),
                               content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["isSuccess"] is False and response.get_json()["code"] == 400


def test_digit_strings_and_duplicates_are_accepted(api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(api, user, 1, other)
    insert_message(api.db, "direct", room, other, "x", at(1))
    assert count(api, user, {"userId": str(user), "roomIds": [str(room), room]}).get_json() == [
        {"roomId": room, "count": 1, "localDateTime": "20240301150001000"}]


@pytest.fixture
def service_api(embedded) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded, service_token=SERVICE_TOKEN))
    yield chat
    chat.close()


def test_a_service_may_ask_for_any_user(service_api):
    user, other = fresh_id(), fresh_id()
    [room] = rooms_for(service_api, user, 1, other)
    insert_message(service_api.db, "direct", room, other, "x", at(1))
    response = service_api.client.post("/chat-server/message-count", json={"userId": user, "roomIds": [room]},
                                       headers={"X-Service-Token": SERVICE_TOKEN})
    assert response.get_json() == [{"roomId": room, "count": 1, "localDateTime": "20240301150001000"}]


def test_a_service_must_name_the_user(service_api):
    response = service_api.client.post("/chat-server/message-count", json={"roomIds": [1]},
                                       headers={"X-Service-Token": SERVICE_TOKEN})
    assert response.status_code == 400


def test_a_wrong_service_token_is_401_even_with_a_user_token(service_api):
    user = fresh_id()
    response = service_api.client.post("/chat-server/message-count", json={"roomIds": [1]},
                                       headers=service_api.auth(user, **{"X-Service-Token": "wrong"}))
    assert response.status_code == 401
