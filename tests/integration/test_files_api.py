"""File messages over HTTP against real MongoDB (GridFS) and Redis: upload, limits, the
file push (published by the outbox relay, also after the broker was away), rollback when the
message cannot be stored, and the authorised download (W-17, W-3)."""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pytest

from app.chat.model import TOPICS
from tests.conftest import make_settings
from tests.support.chat_api import CannedService, ChatApi, fresh_id
from tests.support.rooms import set_community, set_room_members

LIMIT = 1000
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 100
THUMB = b"\x89PNG\r\n\x1a\n" + b"t" * 20


@pytest.fixture
def api(embedded) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded, upload_max_bytes=LIMIT))
    yield chat
    chat.close()


@pytest.fixture
def room(api) -> tuple[int, int, int]:
    room_id, alice, bob = fresh_id(), fresh_id(), fresh_id()
    set_room_members(api.settings.redis_url, room_id, [alice, bob])
    return room_id, alice, bob


def dm_form(room_id: int, *, image: Any = "default", thumbnail: Any = None, **fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {"channelId": str(room_id), "type": "direct", "fileType": "image",
                            "name": "앨리스", "profileImage": "https://img/a.png", **fields}
    if image == "default":
        image = (io.BytesIO(PNG), "photo.png", "image/png")
    if image is not None:
        form["image"] = image
    if thumbnail is not None:
        form["thumbnail"] = thumbnail
    return form


def upload(api: ChatApi, user: int, form: dict[str, Any], path: str = "/chat-server/file") -> Any:
    """POST the form; once answered, wait for the relay to publish what was stored (broker up)."""
    response = api.client.post(path, data=form, headers=api.auth(user), content_type="multipart/form-data")
    if not api.bus.fail:
        api.delivered()
    return response


def nothing_stored(api: ChatApi) -> bool:
    return (api.db["uploads.files"].count_documents({}) == 0 and api.db["uploads.chunks"].count_documents({}) == 0
            and api.db.directMessage.count_documents({}) == 0 and api.db.channelMessage.count_documents({}) == 0
            and api.bus.published == [])


def test_a_dm_upload_stores_files_message_and_publishes_the_file_push(api, room):
    room_id, alice, bob = room
    form = dm_form(room_id, thumbnail=(io.BytesIO(THUMB), "thumb.png", "image/png"), userId=str(bob))
    response = upload(api, alice, form)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["isSuccess"], body["code"], body["message"]) == (True, 1000, "요청에 성공하였습니다.")
    result = body["result"]
    stored = api.db.directMessage.find_one({})
    assert stored["userId"] == alice  # the token's user, not the form's userId
    assert (stored["channelId"], stored["type"], stored["content"], stored["thumbnail"]) == (
        room_id, "image", result["url"], result["thumbnail"])
    assert str(stored["_id"]) == result["id"]
    [(topic, key, value)] = api.bus.published
    assert (topic, key) == (TOPICS["file"], str(room_id))
    push = json.loads(value)
    assert push == {"id": result["id"], "name": "앨리스", "profileImage": "https://img/a.png",
                    "message": result["url"], "thumbnail": result["thumbnail"], "userId": str(alice),
                    "channelId": room_id, "type": "direct", "fileType": "image", "time": push["time"], "seq": 1}
    assert push["time"].startswith("20") and "T" in push["time"]
    names = sorted(doc["filename"] for doc in api.db["uploads.files"].find({}))
    assert len(names) == 2 and "photo.png" not in names and "thumb.png" not in names


def test_an_uploaded_file_shows_in_history(api, room):
    room_id, alice, bob = room
    url = upload(api, alice, dm_form(room_id)).get_json()["result"]["url"]
    [item] = api.client.get(f"/chat-server/direct?ch_id={room_id}", headers=api.auth(bob)).get_json()["result"]
    assert (item["message"], item["fileType"], item["userId"]) == (url, "image", alice)


def test_members_download_with_safe_headers(api, room):
    room_id, alice, bob = room
    result = upload(api, alice, dm_form(room_id, thumbnail=(io.BytesIO(THUMB), "t.png", "image/png"))).get_json()
    response = api.client.get(result["result"]["url"], headers=api.auth(bob))
    assert response.status_code == 200 and response.data == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith('inline; filename="photo.png"')
    assert api.client.get(result["result"]["thumbnail"], headers=api.auth(bob)).data == THUMB


def test_a_path_in_the_file_name_does_not_matter(api, room):
    room_id, alice, _ = room
    form = dm_form(room_id, image=(io.BytesIO(b"hello"), "../../x", "text/plain"), fileType="file")
    url = upload(api, alice, form).get_json()["result"]["url"]
    doc = api.db["uploads.files"].find_one({})
    assert doc["filename"] == url.rsplit("/", 1)[1] and doc["metadata"]["originalName"] == "x"
    response = api.client.get(url, headers=api.auth(alice))
    assert response.data == b"hello"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="x"')


def test_a_korean_file_name_is_kept_for_the_download(api, room):
    room_id, alice, _ = room
    form = dm_form(room_id, image=(io.BytesIO(b"%PDF-1"), "보고서.pdf", "application/pdf"), fileType="file")
    url = upload(api, alice, form).get_json()["result"]["url"]
    disposition = api.client.get(url, headers=api.auth(alice)).headers["Content-Disposition"]
    assert "filename*=UTF-8''%EB%B3%B4%EA%B3%A0%EC%84%9C.pdf" in disposition


def test_two_uploads_with_the_same_name_do_not_overwrite_each_other(api, room):
    room_id, alice, bob = room
    first = upload(api, alice, dm_form(room_id, image=(io.BytesIO(b"one"), "same.txt", "text/plain")))
    second = upload(api, bob, dm_form(room_id, image=(io.BytesIO(b"two"), "same.txt", "text/plain")))
    assert api.client.get(first.get_json()["result"]["url"], headers=api.auth(bob)).data == b"one"
    assert api.client.get(second.get_json()["result"]["url"], headers=api.auth(alice)).data == b"two"


def test_downloads_are_for_members_only(api, room):
    room_id, alice, _ = room
    url = upload(api, alice, dm_form(room_id)).get_json()["result"]["url"]
    outsider = api.client.get(url, headers=api.auth(fresh_id()))
    assert outsider.status_code == 403 and outsider.get_json()["isSuccess"] is False
    assert api.client.get(url).status_code == 401
    assert api.client.get("/chat-server/file/" + "0" * 32, headers=api.auth(alice)).status_code == 404
    assert api.client.get("/chat-server/file/..%2F..%2Fetc", headers=api.auth(alice)).status_code == 404


def test_a_missing_file_is_400_and_nothing_is_stored(api, room):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, image=None))
    assert response.status_code == 400 and "image" in response.get_json()["message"]
    assert nothing_stored(api)


def test_an_empty_file_is_400(api, room):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, image=(io.BytesIO(b""), "e.png", "image/png")))
    assert response.status_code == 400
    assert nothing_stored(api)


def test_a_file_over_the_limit_is_413_and_nothing_is_stored(api, room):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, image=(io.BytesIO(b"x" * (LIMIT + 1)), "big.png", "image/png")))
    assert response.status_code == 413
    assert response.get_json() == {"isSuccess": False, "code": 413, "message": "file too large"}
    assert nothing_stored(api)


def test_a_file_at_the_limit_is_accepted(api, room):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, image=(io.BytesIO(b"x" * LIMIT), "ok.png", "image/png")))
    assert response.status_code == 200


def test_a_thumbnail_over_the_limit_is_413(api, room):
    room_id, alice, _ = room
    form = dm_form(room_id, thumbnail=(io.BytesIO(b"t" * (LIMIT + 1)), "t.png", "image/png"))
    assert upload(api, alice, form).status_code == 413
    assert nothing_stored(api)


def test_a_request_far_over_the_limit_is_413_json(api, room):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, image=(io.BytesIO(b"x" * (LIMIT * 400)), "huge.bin",
                                                          "image/png")))
    assert response.status_code == 413 and response.get_json()["isSuccess"] is False
    assert nothing_stored(api)


@pytest.mark.parametrize("content_type", ["text/html", "application/javascript", "application/x-msdownload"])
def test_a_type_outside_the_allowed_prefixes_is_415(api, room, content_type):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, image=(io.BytesIO(b"<script>"), "a.html", content_type)))
    assert response.status_code == 415 and response.get_json()["code"] == 415
    assert nothing_stored(api)


@pytest.mark.parametrize("fields", [{"channelId": "abc"}, {"channelId": "-1"}, {"fileType": ""},
                                    {"fileType": "../x"}, {"channelId": ""}])
def test_bad_fields_are_400(api, room, fields):
    room_id, alice, _ = room
    response = upload(api, alice, dm_form(room_id, **fields))
    assert response.status_code == 400
    assert nothing_stored(api)


def test_a_non_member_cannot_upload(api, room):
    room_id, _, _ = room
    response = upload(api, fresh_id(), dm_form(room_id))
    assert response.status_code == 403
    assert nothing_stored(api)


def test_an_upload_without_token_is_401(api, room):
    room_id, _, _ = room
    response = api.client.post("/chat-server/file", data=dm_form(room_id), content_type="multipart/form-data")
    assert response.status_code == 401
    assert nothing_stored(api)


def test_while_the_broker_is_down_an_upload_is_stored_answered_and_published_later(api, room):
    room_id, alice, _ = room
    api.bus.fail = True
    response = upload(api, alice, dm_form(room_id, thumbnail=(io.BytesIO(THUMB), "t.png", "image/png")))
    assert response.status_code == 200, response.get_json()
    message_id = response.get_json()["result"]["id"]
    assert api.db.directMessage.count_documents({}) == 1 and api.bus.published == []
    api.bus.fail = False
    api.delivered()
    [(topic, _, value)] = api.bus.published
    assert topic == TOPICS["file"] and json.loads(value)["id"] == message_id


def test_a_failed_message_insert_removes_the_files_and_is_503(api, room):
    room_id, alice, _ = room
    api.writer.fail_insert = True
    assert upload(api, alice, dm_form(room_id)).status_code == 503
    assert nothing_stored(api)


def test_a_channel_upload_needs_the_channel_of_a_community_the_user_is_in(api):
    community, channel, member = fresh_id(), fresh_id(), fresh_id()
    set_community(api.settings.redis_url, community, [member], [channel])
    form = dm_form(channel, communityId=str(community), type="community")
    response = upload(api, member, form, "/chat-server/channel/file")
    assert response.status_code == 200, response.get_json()
    [(_, key, value)] = api.bus.published
    push = json.loads(value)
    assert (key, push["type"], push["channelId"]) == (str(channel), "community", channel)
    assert api.db.channelMessage.find_one({})["communityId"] == community
    url = response.get_json()["result"]["url"]
    assert api.client.get(url, headers=api.auth(member)).status_code == 200
    assert api.client.get(url, headers=api.auth(fresh_id())).status_code == 403


@pytest.mark.parametrize("case", ["outsider", "wrong_community", "no_community"])
def test_channel_uploads_are_refused_outside_the_community(api, case):
    community, channel, member, other_community = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    set_community(api.settings.redis_url, community, [member], [channel])
    set_community(api.settings.redis_url, other_community, [member], [])
    user, form = member, dm_form(channel, communityId=str(community))
    if case == "outsider":
        user = fresh_id()
    elif case == "wrong_community":
        form["communityId"] = str(other_community)
    else:
        del form["communityId"]
    response = upload(api, user, form, "/chat-server/channel/file")
    assert response.status_code == (403 if case == "outsider" else 400)  # a wrong community: as a SEND
    assert nothing_stored(api)


def test_names_come_from_the_auth_service_when_it_knows_the_user(embedded):
    alice = fresh_id()
    answer = {"isSuccess": True, "result": {str(alice): {"name": "Real Alice", "image": "https://img/real.png"}}}
    with CannedService({("POST", "/find-id-list"): (200, answer)}) as auth_service:
        chat = ChatApi(make_settings(embedded, auth_service_url=auth_service.url))
        try:
            room_id = fresh_id()
            set_room_members(chat.settings.redis_url, room_id, [alice])
            form = dm_form(room_id, name="Fake Name", profileImage="https://evil/x.png")
            assert upload(chat, alice, form).status_code == 200
            push = json.loads(chat.bus.published[0][2])
            assert (push["name"], push["profileImage"]) == ("Real Alice", "https://img/real.png")
        finally:
            chat.close()


def test_the_real_message_writer_stores_file_messages_and_never_undoes_them(embedded):
    from app.backends.mongo_messages import MongoConnection, MongoMessageWriter

    settings = make_settings(embedded, upload_max_bytes=LIMIT)
    connection = MongoConnection(settings)
    chat = ChatApi(settings, writer=MongoMessageWriter(connection), connection=connection)
    try:
        room_id, alice = fresh_id(), fresh_id()
        set_room_members(settings.redis_url, room_id, [alice])
        result = upload(chat, alice, dm_form(room_id)).get_json()["result"]
        assert chat.db.directMessage.find_one({})["content"] == result["url"]
        chat.bus.fail = True
        assert upload(chat, alice, dm_form(room_id)).status_code == 200
        assert chat.db.directMessage.count_documents({}) == 2
        assert chat.db.unpublished.count_documents({}) == 1  # the second waits
        assert chat.db["uploads.files"].count_documents({}) == 2
        chat.bus.fail = False
        chat.delivered()
        assert chat.db.unpublished.count_documents({}) == 0
    finally:
        chat.close()
        connection.close()
