"""Read markers and POST /chat-server/message-count against real MongoDB (W-13, W-14, W-18):
one atomic upsert per location, unread = others' messages after the mark, rooms ordered by
their latest message, 24-hour compact times, and who may ask for whom. The query paths of
``room_activity`` (the zero-unread shortcut, ranged counts, never-read rooms) are checked
against a brute-force count of the same documents."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any, Iterator

import gevent
import pytest
from pymongo import monitoring

from app.backends.mongo_history import MongoReadSide
from tests.conftest import make_settings
from tests.support.chat_api import BASE_TIME, ChatApi, fresh_id, insert_message
from tests.support.rooms import set_room_members

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "s3rvice-t0ken"
T = BASE_TIME.replace(hour=15)  # afternoon: a 12-hour clock would write 03


class CommandLog(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[tuple[str, Any]] = []
        self.documents: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append((event.command_name, event.command.get(event.command_name)))
        self.documents.append(dict(event.command))

    def clear(self) -> None:
        self.commands.clear()
        self.documents.clear()

    def on_messages(self, name: str) -> list[dict[str, Any]]:
        """The ``name`` commands (find, aggregate) sent to the DM message collection."""
        return [doc for doc in self.documents if doc.get(name) == "directMessage"]

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


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


def test_counts_match_a_brute_force_count_of_the_same_messages(api):
    """Random rooms, authors, times (with many shared milliseconds) and marks, including marks
    equal to a message time, before the first and after the last message."""
    rng = random.Random(20261124)
    user, others = fresh_id(), [fresh_id(), fresh_id()]
    rooms = [fresh_id() for _ in range(12)]
    stored: dict[int, list[tuple[int, datetime]]] = {room: [] for room in rooms}
    for room in rooms[:-1]:  # the last room stays empty
        for _ in range(rng.randint(1, 25)):
            author, when = rng.choice([user, *others]), at(rng.randint(0, 40) / 4)
            insert_message(api.db, "direct", room, author, "m", when)
            stored[room].append((author, when))
    marks: dict[int, datetime] = {}
    for i, room in enumerate(rooms):
        choice = ["none", "time", "between", "early", "late"][i % 5]
        times = [when for _, when in stored[room]] or [at(0)]
        mark = {"none": None, "time": rng.choice(times), "between": at(rng.randint(0, 40) / 4 + 0.1),
                "early": at(-1), "late": at(60)}[choice]
        if mark is not None:
            api.read_side.mark_read(f"r-{room}", user, mark)
            marks[room] = mark
    api.read_side.mark_read(f"r-{rooms[0]}", others[0], at(100))

    def expected(room: int) -> tuple[int, int, datetime | None]:
        mark = marks.get(room)
        count = sum(1 for author, when in stored[room] if author != user and (mark is None or when > mark))
        return room, count, max((when for _, when in stored[room]), default=None)

    activity = api.read_side.room_activity(user, list(reversed(rooms)) + rooms[:2])
    assert [(a.room_id, a.count, a.latest) for a in activity] == [expected(room) for room in reversed(rooms)]


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


def test_without_a_token_it_is_401(api):
    response = api.client.post("/chat-server/message-count", json={"userId": 5, "roomIds": [1]})
    assert response.status_code == 401 and response.get_json()["code"] == 401


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
