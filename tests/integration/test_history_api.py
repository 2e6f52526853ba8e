"""GET /chat-server/direct and /chat-server/community against real MongoDB and Redis:
paging by page and by cursor, the §4.4 response shape, parents in one query, current
profiles, strict parameters, authentication and membership (W-3, W-19)."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any, Iterator

import pytest
from bson import ObjectId

from app.auth import mint_token
from app.chat.http.history import DELETED_PARENT
from app.chat.timefmt import iso_local
from tests.conftest import make_settings
from tests.support.chat_api import BASE_TIME, CannedService, ChatApi, fresh_id, insert_message, timeline
from tests.support.mongo_commands import CommandLog
from tests.support.rooms import set_community, set_room_members

ALICE_NAME = "앨리스"


@pytest.fixture
def finds() -> CommandLog:
    return CommandLog()


@pytest.fixture
def api(embedded, finds) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded, history_default_page_size=4, history_max_page_size=10),
                   mongo_listeners=[finds])
    yield chat
    chat.close()


@pytest.fixture
def room(api) -> tuple[int, int, int]:
    """A DM room with members alice and bob: (room, alice, bob)."""
    room_id, alice, bob = fresh_id(), fresh_id(), fresh_id()
    set_room_members(api.settings.redis_url, room_id, [alice, bob])
    return room_id, alice, bob


def fill(api: ChatApi, room_id: int, author: int, count: int, kind: str = "direct") -> list[Any]:
    return [insert_message(api.db, kind, room_id, author, f"m{i}", at, name=ALICE_NAME)
            for i, at in enumerate(timeline(count))]


def contents(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["message"] for item in response.get_json()["result"]]


def test_pages_go_back_in_time_and_each_page_is_oldest_first(api, room):
    room_id, alice, bob = room
    fill(api, room_id, alice, 7)
    get = lambda page: api.client.get(f"/chat-server/direct?ch_id={room_id}&page={page}&size=3",  # noqa: E731
                                      headers=api.auth(bob))
    assert contents(get(0)) == ["m4", "m5", "m6"]
    assert contents(get(1)) == ["m1", "m2", "m3"]
    assert contents(get(2)) == ["m0"]
    assert contents(get(3)) == []


def test_the_default_size_is_the_configured_one(api, room):
    room_id, alice, _ = room
    fill(api, room_id, alice, 6)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(alice))
    assert contents(response) == ["m2", "m3", "m4", "m5"]


def test_the_wrapper_and_message_shape_are_the_originals(api, room):
    room_id, alice, bob = room
    stored = insert_message(api.db, "direct", room_id, alice, "안녕", BASE_TIME.replace(microsecond=123000),
                            name=ALICE_NAME, profile_image="https://img/a.png")
    body = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(bob)).get_json()
    assert list(body) == ["isSuccess", "code", "message", "result"]
    assert body["isSuccess"] is True and body["code"] == 1000 and body["message"] == "요청에 성공하였습니다."
    assert body["result"] == [{
        "id": stored.id, "name": ALICE_NAME, "profileImage": "https://img/a.png", "userId": alice,
        "message": "안녕", "thumbnail": None, "fileType": None, "type": None,
        "time": "2024-03-01T12:00:00.123", "parentId": None, "parentName": None, "parentContent": None,
        "edited": False,
        "seq": None,  # stored before sequences (written straight to the database)
    }]


def test_file_and_edited_messages_show_their_fields(api, room):
    room_id, alice, _ = room
    insert_message(api.db, "direct", room_id, alice, "/chat-server/file/k", BASE_TIME, type="image",
                   thumbnail="/chat-server/file/t", edited_at=BASE_TIME + timedelta(seconds=5))
    [item] = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(alice)).get_json()["result"]
    assert (item["fileType"], item["thumbnail"], item["edited"]) == ("image", "/chat-server/file/t", True)


def test_a_cursor_pages_strictly_older_messages_and_ignores_new_ones(api, room):
    room_id, alice, bob = room
    messages = fill(api, room_id, alice, 7)
    url = f"/chat-server/direct?ch_id={room_id}&size=3&before={messages[4].id}"
    assert contents(api.client.get(url, headers=api.auth(bob))) == ["m1", "m2", "m3"]
    insert_message(api.db, "direct", room_id, bob, "newer", BASE_TIME + timedelta(hours=1))
    assert contents(api.client.get(url, headers=api.auth(bob))) == ["m1", "m2", "m3"]


def test_a_cursor_walks_through_messages_sharing_one_millisecond(api, room):
    room_id, alice, bob = room
    for i in range(7):
        insert_message(api.db, "direct", room_id, alice, f"same{i}", BASE_TIME)
    seen: list[str] = []
    before = ""
    for _ in range(5):
        query = f"&before={before}" if before else ""
        page = api.client.get(f"/chat-server/direct?ch_id={room_id}&size=2{query}", headers=api.auth(bob))
        items = page.get_json()["result"]
        if not items:
            break
        seen = [i["message"] for i in items] + seen
        before = items[0]["id"]
    assert sorted(seen) == [f"same{i}" for i in range(7)]


def test_cursor_pages_are_slices_of_the_full_newest_first_order(api, room):
    """Every message as the cursor, pages 0-2: the same messages as slicing the whole room's
    (time, id) order, across shared milliseconds and with a neighbouring room interleaved."""
    room_id, alice, bob = room
    seconds = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5]
    random.Random(7).shuffle(seconds)  # ids (insertion order) disagree with times
    stored = [insert_message(api.db, "direct", room_id, alice if i % 2 else bob, f"s{i}",
                             BASE_TIME + timedelta(seconds=sec)) for i, sec in enumerate(seconds)]
    insert_message(api.db, "direct", fresh_id(), alice, "elsewhere", BASE_TIME + timedelta(seconds=1))
    newest_first = [m.id for m in sorted(stored, key=lambda m: (m.created_at, ObjectId(m.id)), reverse=True)]
    for index, cursor in enumerate(newest_first):
        for page in range(3):
            got = api.read_side.page("direct", room_id, size=3, page=page, before_id=cursor)
            start = index + 1 + page * 3
            assert [m.id for m in got] == newest_first[start:start + 3], (index, page)


def test_pages_leave_out_the_stale_parent_copies_that_get_many_keeps(api, room):
    room_id, alice, bob = room
    parent = insert_message(api.db, "direct", room_id, alice, "question", BASE_TIME)
    reply = insert_message(api.db, "direct", room_id, bob, "answer", BASE_TIME + timedelta(seconds=1), type="reply",
                           parent_id=parent.id, parent_name="stale name", parent_content="stale content")
    for page in (api.read_side.page("direct", room_id, size=5),
                 api.read_side.page("direct", room_id, size=5, before_id=insert_message(
                     api.db, "direct", room_id, alice, "later", BASE_TIME + timedelta(seconds=2)).id)):
        got = {m.id: m for m in page}
        assert (got[reply.id].parent_id, got[reply.id].type, got[reply.id].content) == (parent.id, "reply", "answer")
        assert (got[reply.id].parent_name, got[reply.id].parent_content) == (None, None)
    assert api.read_side.get_many("direct", [reply.id])[reply.id].parent_content == "stale content"


@pytest.mark.parametrize("before", ["000000000000000000000000", "zz", "1", "0123456789abcdef0123456789abcdef"])
def test_an_unknown_or_malformed_cursor_is_400(api, room, before):
    room_id, alice, _ = room
    fill(api, room_id, alice, 2)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}&before={before}", headers=api.auth(alice))
    assert response.status_code == 400
    assert response.get_json()["isSuccess"] is False and "before" in response.get_json()["message"]


def test_a_cursor_from_another_room_is_400(api, room):
    room_id, alice, _ = room
    other_room = fresh_id()
    foreign = insert_message(api.db, "direct", other_room, alice, "elsewhere", BASE_TIME)
    fill(api, room_id, alice, 2)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}&before={foreign.id}", headers=api.auth(alice))
    assert response.status_code == 400


@pytest.mark.parametrize("query", [
    "ch_id={room}&page=-1", "ch_id={room}&size=100000", "ch_id={room}&size=0", "ch_id={room}&size=11",
    "ch_id[$ne]=1", "ch_id={room}&ch_id=5", "ch_id=abc", "ch_id=0", "ch_id={room}&page=1.5",
    "ch_id={room}&size=-3", "ch_id= {room}", "", "ch_id=99999999999999999999999",
])
def test_bad_query_parameters_are_400_with_a_json_body(api, room, finds, query):
    room_id, alice, _ = room
    fill(api, room_id, alice, 1)
    finds.clear()
    response = api.client.get(f"/chat-server/direct?{query.format(room=room_id)}", headers=api.auth(alice))
    assert response.status_code == 400
    body = response.get_json()
    assert body["isSuccess"] is False and body["code"] == 400 and body["message"]
    assert finds.named("find") == []  # refused before any query


def test_size_at_the_maximum_is_accepted(api, room):
    room_id, alice, _ = room
    fill(api, room_id, alice, 12)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}&size=10", headers=api.auth(alice))
    assert len(contents(response)) == 10


def test_unknown_parameters_are_ignored(api, room):
    room_id, alice, _ = room
    fill(api, room_id, alice, 1)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}&foo[$gt]=1&x=y", headers=api.auth(alice))
    assert contents(response) == ["m0"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer not.a.jwt"},
    {"Authorization": "Bearer " + mint_token("b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci1zZWNyZXQ=", 5)},
])
def test_a_missing_or_bad_token_is_401(api, room, headers):
    room_id, _, _ = room
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"isSuccess": False, "code": 401, "message": response.get_json()["message"]}


def test_an_expired_token_is_401(api, room):
    room_id, alice, _ = room
    token = mint_token(api.settings.jwt_secret, alice, lifetime_s=10, now=time.time() - 3600)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers={"Authorization": token})
    assert response.status_code == 401 and response.get_json()["message"] == "token expired"


def test_the_raw_token_without_scheme_is_accepted(api, room):
    room_id, alice, _ = room
    fill(api, room_id, alice, 1)
    token = mint_token(api.settings.jwt_secret, alice)
    assert contents(api.client.get(f"/chat-server/direct?ch_id={room_id}", headers={"Authorization": token})) == ["m0"]


def test_a_non_member_is_403_and_sees_nothing(api, room):
    room_id, alice, _ = room
    fill(api, room_id, alice, 3)
    response = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(fresh_id()))
    assert response.status_code == 403
    assert response.get_json() == {"isSuccess": False, "code": 403, "message": "forbidden"}


def test_an_unknown_room_is_403(api):
    response = api.client.get(f"/chat-server/direct?ch_id={fresh_id()}", headers=api.auth(fresh_id()))
    assert response.status_code == 403


def test_channel_history_needs_membership_of_the_owning_community(api):
    community, channel, member, outsider = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    set_community(api.settings.redis_url, community, [member], [channel])
    insert_message(api.db, "channel", channel, member, "hello channel", BASE_TIME, community_id=community)
    ok = api.client.get(f"/chat-server/community?ch_id={channel}", headers=api.auth(member))
    assert contents(ok) == ["hello channel"]
    assert api.client.get(f"/chat-server/community?ch_id={channel}", headers=api.auth(outsider)).status_code == 403
    unknown = api.client.get(f"/chat-server/community?ch_id={fresh_id()}", headers=api.auth(member))
    assert unknown.status_code == 403  # its community's list does not name it


def test_channel_and_dm_histories_are_separate(api, room):
    room_id, alice, _ = room
    community = fresh_id()
    set_community(api.settings.redis_url, community, [alice], [room_id])  # same number, other kind
    insert_message(api.db, "channel", room_id, alice, "in channel", BASE_TIME, community_id=community)
    insert_message(api.db, "direct", room_id, alice, "in dm", BASE_TIME)
    assert contents(api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(alice))) == ["in dm"]
    assert contents(api.client.get(f"/chat-server/community?ch_id={room_id}",
                                   headers=api.auth(alice))) == ["in channel"]


def test_parents_come_from_one_query_with_the_parent_authors_name(api, room, finds):
    room_id, alice, bob = room
    parent = insert_message(api.db, "direct", room_id, alice, "question", BASE_TIME, name=ALICE_NAME)
    other_parent = insert_message(api.db, "direct", room_id, bob, "second", BASE_TIME + timedelta(seconds=1),
                                  name="밥")
    for i, at in enumerate(timeline(5, BASE_TIME + timedelta(seconds=2))):
        target = parent if i % 2 == 0 else other_parent
        insert_message(api.db, "direct", room_id, bob, f"reply{i}", at, name="밥", type="reply",
                       parent_id=target.id, parent_name="stale", parent_content="stale")
    finds.clear()
    items = api.client.get(f"/chat-server/direct?ch_id={room_id}&size=10", headers=api.auth(alice)).get_json()["result"]
    replies = [i for i in items if i["message"].startswith("reply")]
    assert len(replies) == 5
    assert replies[0] == {**replies[0], "parentId": parent.id, "parentName": ALICE_NAME, "parentContent": "question"}
    assert replies[1] == {**replies[1], "parentId": other_parent.id, "parentName": "밥", "parentContent": "second"}
    message_finds = finds.on("find", "directMessage")
    assert len(message_finds) == 2  # the page, then every parent at once


def test_a_missing_or_foreign_parent_shows_as_deleted(api, room):
    room_id, alice, bob = room
    foreign = insert_message(api.db, "direct", fresh_id(), alice, "secret elsewhere", BASE_TIME)
    insert_message(api.db, "direct", room_id, bob, "r1", BASE_TIME, type="reply", parent_id=foreign.id)
    insert_message(api.db, "direct", room_id, bob, "r2", BASE_TIME + timedelta(seconds=1), type="reply",
                   parent_id="0123456789abcdef01234567")
    items = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(alice)).get_json()["result"]
    for item in items:
        assert (item["parentId"], item["parentName"], item["parentContent"]) == (None, "", DELETED_PARENT)


def test_current_names_come_from_the_auth_service_and_are_cached(embedded, finds):
    alice, bob, ghost = fresh_id(), fresh_id(), fresh_id()
    answer = {"isSuccess": True, "code": 1000, "message": "ok", "result": {
        str(alice): {"id": alice, "name": "Alice Now", "code": "1", "image": "https://img/now.png", "state": "x"},
        str(bob): {"id": bob, "name": "Bob Now", "code": "2", "image": None, "state": "x"}}}
    with CannedService({("POST", "/auth-server/find-id-list"): (200, answer)}) as auth_service:
        chat = ChatApi(make_settings(embedded, auth_service_url=auth_service.url + "/auth-server"))
        try:
            room_id = fresh_id()
            set_room_members(chat.settings.redis_url, room_id, [alice, bob])
            parent = insert_message(chat.db, "direct", room_id, alice, "q", BASE_TIME, name="old alice")
            insert_message(chat.db, "direct", room_id, bob, "a", BASE_TIME + timedelta(seconds=1), name="old bob",
                           parent_id=parent.id, type="reply")
            insert_message(chat.db, "direct", room_id, ghost, "boo", BASE_TIME + timedelta(seconds=2),
                           name="stored ghost", profile_image="https://img/ghost.png")
            url = f"/chat-server/direct?ch_id={room_id}"
            items = chat.client.get(url, headers=chat.auth(alice)).get_json()["result"]
            assert [(i["name"], i["profileImage"]) for i in items] == [
                ("Alice Now", "https://img/now.png"), ("Bob Now", None), ("stored ghost", "https://img/ghost.png")]
            assert items[1]["parentName"] == "Alice Now"
            assert sorted(auth_service.requests[0][2]) == sorted([alice, bob, ghost])
            chat.client.get(url, headers=chat.auth(alice))
            # Known profiles are cached; only the unknown author is asked for again.
            assert auth_service.requests[1][2] == [ghost]
        finally:
            chat.close()


def test_history_still_works_when_the_auth_service_is_down(embedded):
    from app.embedded import free_port

    chat = ChatApi(make_settings(embedded, auth_service_url=f"http://127.0.0.1:{free_port()}", service_timeout_s=1))
    try:
        room_id, alice = fresh_id(), fresh_id()
        set_room_members(chat.settings.redis_url, room_id, [alice])
        insert_message(chat.db, "direct", room_id, alice, "hi", BASE_TIME, name="stored")
        items = chat.client.get(f"/chat-server/direct?ch_id={room_id}", headers=chat.auth(alice)).get_json()["result"]
        assert [(i["name"], i["time"]) for i in items] == [("stored", iso_local(BASE_TIME))]
    finally:
        chat.close()
