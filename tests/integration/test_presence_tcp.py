"""The presence server as a real process (``python -m app.tcp_presence``) on real Redis.

Covers issue 4 items 1, 2 and the node-death part: every request type, sent as the
original pseudo-JSON (protocol.md §7.2) and as JSON, with byte-exact replies (§7.3);
sessions of one user (W-11, W-12); notification targets (W-16); voice occupancy and
both ``out`` POSTs (W-20, W-21, W-23); node leases (a node that stops renewing loses its
users within the bound and ``presence-offline`` is POSTed); malformed and oversize lines;
many connections; pipelining; graceful SIGTERM. A small HTTP server in the test stands
in for the chat server (CHAT_SERVER_URL points at it).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import gevent
import pytest
import redis

from app.backends.redis_presence import RedisPresenceStore
from app.embedded import EmbeddedStack
from app.tcp_presence.reaper import LeaseReaper
from tests.conftest import MS
from tests.support.presence import (
    ChatStub,
    LineClient,
    Post,
    RecordingNotifier,
    fresh_user_ids,
    http_json,
    presence_settings,
)
from tests.support.processes import ServiceProcess, presence_server_process

OK = "반환메세지\r\n".encode("utf-8")
LEASE_S = 1.0
MAX_LINE = 1024
SERVICE_TOKEN = "presence-test-token"
# Node death must be noticed within lease + one reaper interval; the rest is slack for a
# loaded 2-core machine (an upper bound on a wait, not a speed assertion).
OFFLINE_BOUND_S = LEASE_S + LEASE_S / 3 + 10_000 * MS


@pytest.fixture(scope="module")
def chat_stub() -> Iterator[ChatStub]:
    stub = ChatStub().start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def presence(embedded: EmbeddedStack, log_dir: Any, chat_stub: ChatStub) -> Iterator[ServiceProcess]:
    settings = presence_settings(embedded, chat_server_url=chat_stub.url, node_lease_s=LEASE_S,
                                 presence_max_line_bytes=MAX_LINE, service_token=SERVICE_TOKEN)
    process = presence_server_process(settings, log_dir, name="presence-tcp").start()
    yield process
    process.stop()


@pytest.fixture
def client(presence: ServiceProcess) -> Iterator[LineClient]:
    line_client = LineClient(presence.settings.presence_tcp_port)
    yield line_client
    line_client.close()


def legacy_line(type: str, **fields: str) -> str:
    """A request exactly as the Java chat server's ``LoginSessionRequest.toString()`` renders it."""
    values = {"session_id": "null", "user_id": "null", "channel_id": "null", "community_id": "null", **fields}
    ids = values.pop("ids", "null")
    return (f"{{type='{type}', session_id='{values['session_id']}', user_id='{values['user_id']}', "
            f"channel_id='{values['channel_id']}', community_id='{values['community_id']}', ids={ids}}}")


def friends_state(presence: ServiceProcess, *user_ids: int) -> dict[str, str]:
    status, body = http_json(f"http://127.0.0.1:{presence.settings.presence_http_port}/presence-server/friends-state",
                             list(user_ids))
    assert status == 200, body
    result = body["result"]
    assert isinstance(result, dict)
    return result


def online(presence: ServiceProcess) -> set[int]:
    status, body = http_json(f"http://127.0.0.1:{presence.settings.presence_http_port}/presence-server/user-state",
                             headers={"X-Service-Token": presence.settings.service_token})
    assert status == 200
    return {int(user) for user in body}


def posts_to(stub: ChatStub, path: str, timeout: float, **match: Any) -> list[Post]:
    def wanted(post: Post) -> bool:
        return post.path == path and isinstance(post.body, dict) and \
            all(post.body.get(key) == value for key, value in match.items())

    return stub.wait_for(wanted, timeout)


# -- Every type, both syntaxes ----------------------------------------------------------------------


def test_every_type_as_original_pseudo_json(client: LineClient, chat_stub: ChatStub) -> None:
    user, other, community, room = (str(i) for i in fresh_user_ids(4))
    assert client.request(legacy_line("login", session_id=f"s{user}", user_id=user)) == OK
    assert client.request(legacy_line("login", session_id=f"s{other}", user_id=other)) == OK
    assert client.request(legacy_line("state", user_id=user, channel_id="c-12")) == b"home,c-12\r\n"
    assert client.request(legacy_line("state", user_id=other, channel_id=f"r-{room}")) == b"home,r-" + \
        room.encode() + b"\r\n"
    assert client.request(legacy_line("direct", community_id=f"r-{room}", ids=f"[{other}, {user}]")) == \
        f"[{user}]\r\n".encode()
    assert client.request(legacy_line("community", community_id="c-12", ids=f"[{other}, {user}]")) == \
        f"[{other}]\r\n".encode()
    assert client.request(legacy_line("before-enter", user_id=user, community_id=community)) == b"{}\r\n"
    assert client.request(legacy_line("enter", user_id=user, channel_id="c-7", community_id=community)) == \
        f'{{"7":["{user}"]}}\r\n'.encode()
    assert client.request(legacy_line("enter", user_id=other, channel_id="c-9", community_id=community)) == \
        f'{{"7":["{user}"],"9":["{other}"]}}\r\n'.encode()
    assert client.request(legacy_line("before-enter", user_id=other, community_id=community)) == \
        f'{{"7":["{user}"],"9":["{other}"]}}\r\n'.encode()
    assert client.request(legacy_line("state", user_id=user, channel_id="c-12")) == \
        f"com{community},c-7,c-12\r\n".encode()
    signaling = f"{{type='signaling', user_id='{other}', community_id='{community}', channel_id='c-9'}}"
    assert client.request(signaling) == OK
    assert client.request(legacy_line("logout", session_id=f"s{user}")) == f"{user},c-12\r\n".encode()
    assert client.request(legacy_line("logout", session_id=f"s{user}")) == b"null,null\r\n"
    assert client.request(legacy_line("bogus", user_id=user)) == OK
    assert posts_to(chat_stub, "/chat-server/signaling-list-community", 5000 * MS, communityId=community)


def test_every_type_as_json(client: LineClient, chat_stub: ChatStub) -> None:
    user, other, community, room = fresh_user_ids(4)
    node = f"json-{uuid.uuid4().hex[:8]}"
    assert client.json(type="login", session_id=f"j{user}", user_id=user) == {"ok": True, "first_session": True}
    assert client.json(type="login", session_id=f"j{other}", user_id=str(other)) == \
        {"ok": True, "first_session": True}
    assert client.json(type="state", user_id=user, session_id=f"j{user}", channel_id=f"r-{room}") == \
        {"ok": True, "last": "home", "now": f"r-{room}"}
    assert client.json(type="direct", channel_id=f"r-{room}", ids=[user, other]) == {"ok": True, "targets": [other]}
    assert client.json(type="community", channel_id="c-1", ids=[user, other]) == \
        {"ok": True, "targets": [user, other]}
    assert client.json(type="before-enter", user_id=user, community_id=community) == {"ok": True, "state": "{}"}
    assert client.json(type="enter", user_id=other, community_id=community, channel_id="c-4") == \
        {"ok": True, "state": f'{{"4":["{other}"]}}'}
    assert client.json(type="signaling", user_id=other, community_id=community, channel_id="c-4") == \
        {"ok": True, "out": {"type": "out", "communityId": str(community), "channelId": "c-4", "ids": []}}
    assert client.json(type="lease", node_id=node) == {"ok": True}
    assert client.json(type="sync", node_id=node, sessions=[[f"n{user}", str(user)]]) == \
        {"ok": True, "added": 1, "removed": 0}
    assert client.json(type="logout", session_id=f"n{user}") == {"ok": False, "error": "not allowed"}
    assert client.json(type="logout", session_id=f"n{user}", node_id=node) == \
        {"ok": True, "user_id": user, "location": "home", "last_session": False}
    assert client.json(type="logout", session_id=f"j{user}") == \
        {"ok": True, "user_id": user, "location": f"r-{room}", "last_session": True}
    assert client.json(type="logout", session_id=f"j{user}") == \
        {"ok": True, "user_id": None, "location": None, "last_session": False}
    assert client.json(type="bogus") == {"ok": False, "error": "unknown type"}
    client.json(type="logout", session_id=f"j{other}")
    assert posts_to(chat_stub, "/chat-server/signaling-list-community", 5000 * MS, communityId=str(community))


# -- Sessions ----------------------------------------------------------------------------------------


def test_two_sessions_of_one_user(client: LineClient, presence: ServiceProcess) -> None:
    """W-11: the second tab keeps the location; closing one tab keeps the user online."""
    (user,) = fresh_user_ids(1)
    client.json(type="login", session_id=f"a{user}", user_id=user)
    client.json(type="state", user_id=user, session_id=f"a{user}", channel_id="c-12")
    assert client.json(type="login", session_id=f"b{user}", user_id=user)["first_session"] is False
    assert friends_state(presence, user) == {str(user): "c-12"}
    assert client.json(type="logout", session_id=f"a{user}")["last_session"] is False
    assert user in online(presence)
    assert friends_state(presence, user) == {str(user): "home"}
    assert client.json(type="logout", session_id=f"b{user}")["last_session"] is True
    assert user not in online(presence)
    assert friends_state(presence, user) == {str(user): "offline"}


def test_many_connections_keep_session_counts_exact(presence: ServiceProcess) -> None:
    """Concurrent logins/logouts of one user over 20 connections: atomic counting (W-14)."""
    (user,) = fresh_user_ids(1)
    port = presence.settings.presence_tcp_port
    room = f"c-{user}"

    def tab(index: int) -> None:
        line_client = LineClient(port)
        try:
            line_client.json(type="login", session_id=f"t{index}-{user}", user_id=user)
            line_client.json(type="state", user_id=user, session_id=f"t{index}-{user}", channel_id=room)
            if index % 2 == 0:
                line_client.json(type="logout", session_id=f"t{index}-{user}")
        finally:
            line_client.close()

    gevent.joinall([gevent.spawn(tab, index) for index in range(20)], raise_error=True, timeout=30)
    checker = LineClient(port)
    try:
        assert checker.json(type="direct", channel_id=room, ids=[user])["targets"] == []
        endings = [checker.json(type="logout", session_id=f"t{index}-{user}")["last_session"]
                   for index in range(1, 20, 2)]
        assert endings == [False] * 9 + [True]
        assert checker.json(type="direct", channel_id=room, ids=[user])["targets"] == [user]
    finally:
        checker.close()


def test_retention_ttl_is_set_and_refreshed(client: LineClient, presence: ServiceProcess) -> None:
    """W-22: user keys and room sets carry the retention TTL after every update."""
    (user,) = fresh_user_ids(1)
    client.json(type="login", session_id=f"r{user}", user_id=user)
    client.json(type="state", user_id=user, session_id=f"r{user}", channel_id="c-3")
    client.json(type="state", user_id=user, session_id=f"r{user}", channel_id="c-4")
    client.json(type="state", user_id=user, session_id=f"r{user}", channel_id="c-3")
    db = redis.Redis.from_url(presence.settings.effective_presence_redis_url)
    retention = presence.settings.presence_retention_s
    for key in (f"presence:user:{user}", f"presence:user:{user}:sessions", f"presence:session:r{user}",
                "presence:room:c-3"):
        assert 0 < db.ttl(key) <= retention, key
    client.json(type="logout", session_id=f"r{user}")


# -- Voice --------------------------------------------------------------------------------------------


def test_voice_index_never_mixes_community_1_and_12(client: LineClient) -> None:
    """W-21/W-23: communities are matched exactly, not by key prefix."""
    user, base = fresh_user_ids(2)
    short, long = base, int(f"{base}2")
    client.json(type="login", session_id=f"v{user}", user_id=user)
    client.json(type="enter", user_id=user, community_id=long, channel_id="c-5")
    assert client.json(type="before-enter", user_id=user, community_id=short)["state"] == "{}"
    assert client.json(type="before-enter", user_id=user, community_id=long)["state"] == f'{{"5":["{user}"]}}'
    client.json(type="logout", session_id=f"v{user}")


def test_community_out_post_reaches_the_chat_server(client: LineClient, chat_stub: ChatStub) -> None:
    user, other, community = fresh_user_ids(3)
    for member in (user, other):
        client.json(type="login", session_id=f"c{member}", user_id=member)
        client.json(type="enter", user_id=member, community_id=community, channel_id="c-12")
    line = f"{{type='signaling', user_id='{user}', community_id='{community}', channel_id='c-12'}}"
    assert client.request(line) == OK
    (post,) = posts_to(chat_stub, "/chat-server/signaling-list-community", 5000 * MS, communityId=str(community))
    assert post.body == {"type": "out", "communityId": str(community), "channelId": "c-12", "ids": [str(other)]}
    assert post.headers.get("x-service-token") == SERVICE_TOKEN
    for member in (user, other):
        client.json(type="logout", session_id=f"c{member}")


def test_dm_call_out_post_reaches_the_chat_server(client: LineClient, chat_stub: ChatStub) -> None:
    """W-20: a DM call (community 'null' or 0, channel r-R) posts to signaling-list-direct."""
    user, room = fresh_user_ids(2)
    line = f"{{type='signaling', user_id='{user}', community_id='null', channel_id='r-{room}'}}"
    assert client.request(line) == OK
    (post,) = posts_to(chat_stub, "/chat-server/signaling-list-direct", 5000 * MS, channelId=str(room))
    assert post.body == {"type": "out", "channelId": str(room), "ids": []}
    assert client.json(type="signaling", user_id=user, community_id=0, channel_id=f"r-{room}")["ok"] is True
    assert len(posts_to(chat_stub, "/chat-server/signaling-list-direct", 5000 * MS, channelId=str(room))) >= 1


# -- Node leases -------------------------------------------------------------------------------------


def test_dead_node_users_go_offline_and_the_chat_server_is_told(client: LineClient, presence: ServiceProcess,
                                                                chat_stub: ChatStub) -> None:
    gone, survivor = fresh_user_ids(2)
    node = f"dead-{uuid.uuid4().hex[:8]}"
    client.json(type="login", session_id=f"d{gone}", user_id=gone, node_id=node)
    client.json(type="state", user_id=gone, session_id=f"d{gone}", channel_id="c-5")
    client.json(type="login", session_id=f"d{survivor}", user_id=survivor, node_id=node)
    client.json(type="login", session_id=f"l{survivor}", user_id=survivor)  # a second, node-less session
    # The node never renews its lease.
    (post,) = posts_to(chat_stub, "/chat-server/presence-offline", OFFLINE_BOUND_S, userId=gone)
    assert post.body == {"userId": gone, "location": "c-5"}
    assert post.headers.get("x-service-token") == SERVICE_TOKEN
    assert gone not in online(presence)
    assert survivor in online(presence)
    assert posts_to(chat_stub, "/chat-server/presence-offline", 1000 * MS, userId=survivor) == []
    assert client.json(type="logout", session_id=f"d{gone}")["user_id"] is None
    client.json(type="logout", session_id=f"l{survivor}")


def test_renewing_node_keeps_its_users_then_loses_them_when_it_stops(client: LineClient,
                                                                     presence: ServiceProcess,
                                                                     chat_stub: ChatStub) -> None:
    (user,) = fresh_user_ids(1)
    node = f"alive-{uuid.uuid4().hex[:8]}"
    client.json(type="login", session_id=f"k{user}", user_id=user, node_id=node)
    for _ in range(10):  # three lease periods, renewing three times per period
        gevent.sleep(LEASE_S / 3)
        assert client.json(type="lease", node_id=node) == {"ok": True}
    assert user in online(presence)
    assert posts_to(chat_stub, "/chat-server/presence-offline", 0, userId=user) == []
    assert posts_to(chat_stub, "/chat-server/presence-offline", OFFLINE_BOUND_S, userId=user)
    assert user not in online(presence)


def test_offline_post_is_retried_when_the_chat_server_fails(client: LineClient, chat_stub: ChatStub) -> None:
    (user,) = fresh_user_ids(1)
    chat_stub.fail_next(2)
    failed_before = chat_stub.failed
    client.json(type="login", session_id=f"f{user}", user_id=user, node_id=f"flaky-{uuid.uuid4().hex[:8]}")
    assert posts_to(chat_stub, "/chat-server/presence-offline", OFFLINE_BOUND_S + 5, userId=user)
    assert chat_stub.failed - failed_before == 2


def test_sync_replaces_a_nodes_sessions(client: LineClient, presence: ServiceProcess) -> None:
    a, b, c = fresh_user_ids(3)
    node = f"sync-{uuid.uuid4().hex[:8]}"
    client.json(type="login", session_id=f"s{a}", user_id=a, node_id=node)
    client.json(type="login", session_id=f"s{b}", user_id=b, node_id=node)
    assert client.json(type="sync", node_id=node, sessions=[[f"s{b}", b], [f"s{c}", c]]) == \
        {"ok": True, "added": 1, "removed": 1}
    assert {a, b, c} & online(presence) == {b, c}
    assert client.json(type="sync", node_id=node, sessions=[]) == {"ok": True, "added": 0, "removed": 2}
    assert {a, b, c} & online(presence) == set()


def test_two_reapers_report_each_user_once(presence: ServiceProcess) -> None:
    """Two presence processes may run: a node is claimed (SET NX) before it is reaped."""
    client = redis.Redis.from_url(presence.settings.effective_presence_redis_url, decode_responses=True)
    # A prefix of its own, so the running process's reaper does not take part.
    store = RedisPresenceStore(client, retention_s=3600, lease_s=60, prefix=f"reap-test-{uuid.uuid4().hex[:6]}:")
    users = fresh_user_ids(30)
    for user in users:
        store.login(f"x{user}", user, "doomed")
    client.delete(store.keys.key("node_lease", "doomed"))
    notifiers = [RecordingNotifier(), RecordingNotifier()]
    reapers = [LeaseReaper(store, notifier, lease_s=60) for notifier in notifiers]
    gevent.joinall([gevent.spawn(reaper.reap_once) for reaper in reapers], raise_error=True, timeout=30)
    reported = [user for notifier in notifiers for user, _ in notifier.offline]
    assert sorted(reported) == sorted(users)
    assert store.online_users() == []


# -- Framing and errors --------------------------------------------------------------------------------


def test_malformed_and_oversize_lines_keep_the_connection_usable(client: LineClient) -> None:
    (user,) = fresh_user_ids(1)
    assert client.request("garbage") == b"ERROR malformed request\r\n"
    assert client.request("") == b"ERROR malformed request\r\n"
    assert client.request("{type='login', session_id='x'}") == b"ERROR missing field user_id\r\n"
    assert client.request("{type='login', session_id='x', user_id='1; DROP'}") == b"ERROR invalid field user_id\r\n"
    assert client.request('{"type":"login"') == b'{"ok":false,"error":"malformed request"}\r\n'
    assert client.request("{type='direct', ids=[" + "1, " * 1000 + "1]}") == b"ERROR line too long\r\n"
    assert client.request('{"type":"sync","sessions":"' + "x" * 5000 + '"}') == \
        b'{"ok":false,"error":"line too long"}\r\n'
    # An oversize line arriving in pieces is answered once, as soon as it is too long.
    client.send(b"{type='login', session_id='" + b"y" * MAX_LINE)
    assert client.read_line() == b"ERROR line too long\r\n"
    client.send(b"y" * 3000 + b"'}\r\n")
    assert client.request(legacy_line("login", session_id=f"ok{user}", user_id=str(user))) == OK
    assert client.request(legacy_line("logout", session_id=f"ok{user}")) == f"{user},home\r\n".encode()


def test_pipelined_requests_are_answered_in_order(client: LineClient) -> None:
    users = fresh_user_ids(20)
    lines = []
    expected = []
    for user in users:
        lines.append(legacy_line("login", session_id=f"p{user}", user_id=str(user)))
        expected.append(OK)
        lines.append("nonsense")
        expected.append(b"ERROR malformed request\r\n")
        lines.append(json.dumps({"type": "logout", "session_id": f"p{user}"}))
        expected.append(json.dumps({"ok": True, "user_id": user, "location": "home", "last_session": True},
                                   separators=(",", ":")).encode() + b"\r\n")
    client.send("".join(line + "\r\n" for line in lines).encode())
    assert [client.read_line() for _ in expected] == expected


# -- Process lifecycle -------------------------------------------------------------------------------


def test_sigterm_stops_the_process_cleanly(embedded: EmbeddedStack, log_dir: Any) -> None:
    settings = presence_settings(embedded)
    process = presence_server_process(settings, log_dir, name="presence-sigterm").start()
    idle = LineClient(settings.presence_tcp_port)  # an idle pooled connection must not block the stop
    try:
        (user,) = fresh_user_ids(1)
        assert idle.request(legacy_line("login", session_id=f"t{user}", user_id=str(user))) == OK
        assert process.stop() == 0, process.log_tail()
        assert "presence stopped" in process.log_tail()
        with pytest.raises(ConnectionError):  # closed by the server, not left hanging
            idle.read_line()
    finally:
        idle.close()
        process.kill()
