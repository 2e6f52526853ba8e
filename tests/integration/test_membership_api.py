"""Membership PUT endpoints (§5, §6.2, W-28) and the community service as the source of
truth on cache misses (§6.4), against the real Redis and a real HTTP stand-in service."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from app.backends.http_services import ServiceHttp
from app.errors import ServiceRefused
from app.errors import BackendUnavailable
from tests.conftest import make_settings
from tests.support.chat_api import BASE_TIME, CannedService, ChatApi, fresh_id, insert_message

SERVICE_TOKEN = "community-to-chat-secret"
SUCCESS = {"isSuccess": True, "code": 1000, "message": "요청에 성공하였습니다."}


@pytest.fixture
def api(embedded) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded))
    yield chat
    chat.close()


@pytest.fixture
def service_api(embedded) -> Iterator[ChatApi]:
    chat = ChatApi(make_settings(embedded, service_token=SERVICE_TOKEN))
    yield chat
    chat.close()


def put(api: ChatApi, path: str, body: object, headers: dict[str, str]) -> object:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return api.client.put(f"/chat-server/{path}", data=data, headers=headers, content_type="application/json")


def can_read_dm(api: ChatApi, room: int, user: int) -> bool:
    status = api.client.get(f"/chat-server/direct?ch_id={room}", headers=api.auth(user)).status_code
    assert status in (200, 403)
    return status == 200


def test_a_room_list_put_creates_and_then_overwrites(api):
    room, a, b, c = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    caller = api.service()
    response = put(api, f"room-user-list/{room}", [a, b], caller)
    assert response.status_code == 200 and response.get_json() == SUCCESS
    assert api.cache.room_members(room) == [a, b]  # W-28: an absent key takes the body too
    assert can_read_dm(api, room, b)
    put(api, f"room-user-list/{room}", [a, str(c)], caller)
    assert api.cache.room_members(room) == [a, c]
    assert not can_read_dm(api, room, b) and can_read_dm(api, room, c)
    assert api.cache.user_rooms(b) == [] and api.cache.user_rooms(c) == [f"direct/{room}"]


def test_an_empty_list_removes_everyone(api):
    room, a = fresh_id(), fresh_id()
    put(api, f"room-user-list/{room}", [a], api.service())
    assert put(api, f"room-user-list/{room}", [], api.service()).status_code == 200
    assert api.cache.room_members(room) == [] and not can_read_dm(api, room, a)


def test_community_members_and_channels_govern_channel_history(api):
    community, channel, member, later = fresh_id(), fresh_id(), fresh_id(), fresh_id()
    caller = api.service()
    assert put(api, f"community-user-list/{community}", [member], caller).status_code == 200
    assert put(api, f"community-channel-list/{community}", [channel], caller).status_code == 200
    insert_message(api.db, "channel", channel, member, "hi", BASE_TIME, community_id=community)
    read = lambda user: api.client.get(f"/chat-server/community?ch_id={channel}",  # noqa: E731
                                       headers=api.auth(user)).status_code
    assert (read(member), read(later)) == (200, 403)
    put(api, f"community-user-list/{community}", [member, later], caller)
    assert read(later) == 200
    put(api, f"community-channel-list/{community}", [], caller)
    assert read(member) == 403  # the channel left the community


@pytest.mark.parametrize("body", [
    b"not json", b'{"members": [1]}', b"[1, -2]", b'[1, "x"]', b"[[1]]", b'[{"$gt": 0}]', b"[0]", b"[1.5]",
    b"[true]", b"null", b"",
])
def test_bad_bodies_are_400_and_change_nothing(api, body):
    room, a = fresh_id(), fresh_id()
    put(api, f"room-user-list/{room}", [a], api.service())
    response = put(api, f"room-user-list/{room}", body, api.service())
    assert response.status_code == 400 and response.get_json()["isSuccess"] is False
    assert api.cache.room_members(room) == [a]


def test_a_list_over_the_bound_is_400(api):
    room, a = fresh_id(), fresh_id()
    response = put(api, f"community-user-list/{room}", list(range(1, 100_002)), api.service())
    assert response.status_code in (400, 413) and response.get_json()["isSuccess"] is False
    assert api.cache.community_members(room) is None


@pytest.mark.parametrize("ident", ["abc", "0", "-1", "1.5", "%24ne"])
def test_a_bad_path_id_is_400(api, ident):
    response = put(api, f"room-user-list/{ident}", [1], api.service())
    assert response.status_code == 400 and response.get_json()["code"] == 400


def test_without_a_service_token_setting_a_loopback_caller_needs_no_credential(api):
    """The original community server PUTs without any credential (protocol.md §6.2)."""
    room = fresh_id()
    assert put(api, f"room-user-list/{room}", [1], {}).status_code == 200
    assert api.cache.room_members(room) == [1]


@pytest.mark.parametrize("path", ["room-user-list", "community-user-list", "community-channel-list"])
def test_a_user_token_never_changes_a_member_list(api, path):
    """Issue 14: any user's token could add itself to someone else's DM room."""
    room, owner, intruder = fresh_id(), fresh_id(), fresh_id()
    put(api, f"room-user-list/{room}", [owner], api.service())
    response = put(api, f"{path}/{room}", [owner, intruder], api.auth(intruder))
    assert response.status_code == 403 and response.get_json()["message"] == \
        "service endpoint: user tokens are not accepted"
    assert api.cache.room_members(room) == [owner] and not can_read_dm(api, room, intruder)


def test_without_a_service_token_setting_a_remote_caller_is_refused(api):
    room = fresh_id()
    response = api.client.put(f"/chat-server/room-user-list/{room}", json=[1],
                              environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 403 and response.get_json()["message"] == "service endpoint: caller not allowed"
    assert api.cache.room_members(room) is None


@pytest.mark.parametrize("headers, status", [({}, 401), ({"X-Service-Token": "wrong"}, 401),
                                             ({"X-Service-Token": ""}, 401), ("user", 403)])
def test_with_a_service_token_setting_only_that_token_is_accepted(service_api, headers, status):
    room = fresh_id()
    if headers == "user":
        headers = service_api.auth(fresh_id())
    response = put(service_api, f"room-user-list/{room}", [1], headers)
    assert response.status_code == status
    assert service_api.cache.room_members(room) is None


def test_the_right_service_token_is_accepted_from_anywhere(service_api):
    room = fresh_id()
    response = service_api.client.put(f"/chat-server/room-user-list/{room}", json=[7, 8],
                                      headers={"X-Service-Token": SERVICE_TOKEN},
                                      environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 200 and service_api.cache.room_members(room) == [7, 8]


def test_a_community_service_answers_cache_misses_and_puts_override_it(embedded):
    room, community, channel, member, outsider = fresh_id(), fresh_id(), fresh_id(), fresh_id(), fresh_id()
    routes = {
        ("GET", f"/community-server/room/feign/{room}/member-id"): (200, {**SUCCESS, "result": {"members": [member]}}),
        ("GET", f"/community-server/community/feign/{community}/member-id"): (
            200, {**SUCCESS, "result": {"members": [member]}}),
        ("GET", f"/community-server/community/feign/{community}/channel-id"): (
            200, {**SUCCESS, "result": {"channels": [channel]}}),
    }
    with CannedService(routes) as community_service:
        chat = ChatApi(make_settings(embedded, community_service_url=community_service.url + "/community-server"))
        try:
            assert can_read_dm(chat, room, member) and not can_read_dm(chat, room, outsider)
            assert [r[1] for r in community_service.requests] == [f"/community-server/room/feign/{room}/member-id"]
            assert chat.cache.room_members(room) == [member]
            put(chat, f"room-user-list/{room}", [outsider], chat.service())
            assert can_read_dm(chat, room, outsider) and not can_read_dm(chat, room, member)
            assert len(community_service.requests) == 1
            # A channel upload names its community: the channel list is fetched to check it.
            assert chat.membership.channel_in_community(channel, community)
            assert chat.membership.channel_community(channel) == community
            assert chat.membership.is_community_member(community, member)
        finally:
            chat.close()


def test_an_unknown_room_at_the_community_service_is_403_and_not_cached(embedded):
    room, user = fresh_id(), fresh_id()
    with CannedService() as community_service:  # every path answers 404
        chat = ChatApi(make_settings(embedded, community_service_url=community_service.url))
        try:
            assert not can_read_dm(chat, room, user)
            assert chat.cache.room_members(room) is None
        finally:
            chat.close()


def test_a_community_service_that_is_down_gives_503(embedded):
    from app.embedded import free_port

    chat = ChatApi(make_settings(embedded, community_service_url=f"http://127.0.0.1:{free_port()}"))
    try:
        response = chat.client.get(f"/chat-server/direct?ch_id={fresh_id()}", headers=chat.auth(fresh_id()))
        assert response.status_code == 503 and response.get_json()["isSuccess"] is False
    finally:
        chat.close()


def test_user_rooms_come_from_the_community_service(embedded):
    user = fresh_id()
    routes = {("GET", f"/community/feign/room-list/{user}"): (200, ["community/3", "direct/17"])}
    with CannedService(routes) as community_service:
        chat = ChatApi(make_settings(embedded, community_service_url=community_service.url))
        try:
            assert chat.membership.user_rooms(user) == ["community/3", "direct/17"]
        finally:
            chat.close()


def test_service_http_maps_failures(embedded):
    routes = {("GET", "/ok"): (200, {"a": 1}), ("GET", "/boom"): (500, {"x": 1}), ("POST", "/echo"): (200, [1])}
    with CannedService(routes, slow_paths=("/slow",), slow_s=3.0) as service:
        http = ServiceHttp(2.0)
        assert http.get_json(service.url + "/ok") == {"a": 1}
        assert http.post_json(service.url + "/echo", [2, 3]) == [1]
        assert service.requests[-1] == ("POST", "/echo", [2, 3])
        with pytest.raises(ServiceRefused) as refused:
            http.get_json(service.url + "/missing")
        assert refused.value.status == 404
        with pytest.raises(BackendUnavailable):
            http.get_json(service.url + "/boom")
        with pytest.raises(BackendUnavailable):
            ServiceHttp(0.2).get_json(service.url + "/slow")
        with pytest.raises(BackendUnavailable):
            http.get_json(service.url.rsplit(":", 1)[0] + ":1/unreachable")


def test_an_uncached_channel_is_resolved_through_its_stored_community(embedded):
    community, channel, member, outsider, liar = fresh_id(), fresh_id(), fresh_id(), fresh_id(), fresh_id()
    routes = {
        ("GET", f"/community/feign/{community}/member-id"): (200, {**SUCCESS, "result": {"members": [member]}}),
        ("GET", f"/community/feign/{community}/channel-id"): (200, {**SUCCESS, "result": {"channels": [channel]}}),
        ("GET", f"/community/feign/{liar}/member-id"): (200, {**SUCCESS, "result": {"members": [outsider]}}),
        ("GET", f"/community/feign/{liar}/channel-id"): (200, {**SUCCESS, "result": {"channels": []}}),
    }
    with CannedService(routes) as community_service:
        chat = ChatApi(make_settings(embedded, community_service_url=community_service.url))
        try:
            read = lambda ch, user: chat.client.get(f"/chat-server/community?ch_id={ch}",  # noqa: E731
                                                    headers=chat.auth(user)).status_code
            insert_message(chat.db, "channel", channel, member, "hi", BASE_TIME, community_id=community)
            assert chat.membership.channel_community(channel) is None
            assert (read(channel, member), read(channel, outsider)) == (200, 403)
            assert chat.membership.channel_community(channel) == community  # cached from the service now
            # A message claiming a community that does not list the channel proves nothing.
            forged = fresh_id()
            insert_message(chat.db, "channel", forged, outsider, "x", BASE_TIME, community_id=liar)
            assert read(forged, outsider) == 403
            assert read(fresh_id(), member) == 403  # no messages, no cached owner
        finally:
            chat.close()
