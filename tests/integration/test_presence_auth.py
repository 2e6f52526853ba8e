"""Issue 14 item 2 and 4 against the real presence process on real Redis: who may do what,
idle and half-sent connections, floods of errors, and a burst of logins.

The presence process runs with a ``PRESENCE_TOKEN`` (as `make run` starts it) and a short
``PRESENCE_IDLE_TIMEOUT_S``. Waits are upper bounds scaled by ``CHAT_TESTS_TIMEOUT_FACTOR``;
nothing here asserts speed.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Iterator

import gevent
import pytest

from app.embedded import EmbeddedStack
from app.tcp_presence.handler import MAX_CONSECUTIVE_ERRORS
from tests.conftest import MS
from tests.support.presence import LineClient, fresh_user_ids, http_json, presence_settings
from tests.support.processes import ServiceProcess, presence_server_process

TOKEN = "presence-auth-test-token"
IDLE_S = 1.0
OK = "반환메세지\r\n".encode("utf-8")
CLOSE_BOUND_S = IDLE_S + 10_000 * MS
BURST = 1000


@pytest.fixture(scope="module")
def presence(embedded: EmbeddedStack, log_dir: Any) -> Iterator[ServiceProcess]:
    settings = presence_settings(embedded, presence_token=TOKEN, presence_idle_timeout_s=IDLE_S,
                                 presence_max_connections=BURST + 100)
    process = presence_server_process(settings, log_dir, name="presence-auth").start()
    yield process
    process.stop()


@pytest.fixture
def connect(presence: ServiceProcess) -> Iterator[Any]:
    clients: list[LineClient] = []

    def open_client() -> LineClient:
        clients.append(LineClient(presence.settings.presence_tcp_port, timeout=CLOSE_BOUND_S))
        return clients[-1]

    yield open_client
    for client in clients:
        client.close()


def online(presence: ServiceProcess, *users: int) -> dict[str, Any]:
    status, body = http_json(f"http://127.0.0.1:{presence.settings.presence_http_port}/presence-server/friends-state",
                             list(users))
    assert status == 200
    return body["result"]


def read_until_closed(client: LineClient) -> list[bytes]:
    """Every reply line until the server closes the connection (the socket's timeout bounds it)."""
    lines = []
    while True:
        try:
            lines.append(client.read_line())
        except ConnectionError:
            return lines


def test_a_forged_logout_of_another_connections_session_is_refused(presence, connect):
    (victim,) = fresh_user_ids(1)
    owner, forger = connect(), connect()
    assert owner.request(f"{{type='login', session_id='v{victim}', user_id='{victim}'}}") == OK
    assert forger.request(f"{{type='logout', session_id='v{victim}'}}") == b"ERROR not allowed\r\n"
    assert forger.json(type="logout", session_id=f"v{victim}") == {"ok": False, "error": "not allowed"}
    assert forger.request(f"{{type='login', session_id='v{victim}', user_id='1'}}") == b"ERROR not allowed\r\n"
    assert online(presence, victim) == {str(victim): "home"}
    assert owner.request(f"{{type='logout', session_id='v{victim}'}}") == f"{victim},home\r\n".encode()


def test_sync_and_lease_need_the_presence_token(presence, connect):
    (user,) = fresh_user_ids(1)
    node = f"auth-node-{user}"
    chat_node, stranger = connect(), connect()
    assert chat_node.json(type="auth", token=TOKEN) == {"ok": True}
    assert chat_node.json(type="login", session_id=f"n{user}", user_id=user, node_id=node)["ok"] is True
    for request in ({"type": "sync", "node_id": node, "sessions": []}, {"type": "lease", "node_id": node},
                    {"type": "logout", "session_id": f"n{user}", "node_id": node}):
        assert stranger.json(**request) == {"ok": False, "error": "auth required"}
    assert stranger.json(type="auth", token="wrong") == {"ok": False, "error": "invalid token"}
    assert stranger.json(type="sync", node_id=node, sessions=[]) == {"ok": False, "error": "auth required"}
    assert online(presence, user) == {str(user): "home"}
    assert chat_node.json(type="sync", node_id=node, sessions=[]) == {"ok": True, "added": 0, "removed": 1}
    assert online(presence, user) == {str(user): "offline"}


@pytest.mark.parametrize("sent", [b"", b"{type='login', session_id='half"])
def test_idle_and_half_sent_connections_are_closed(presence, connect, sent):
    client = connect()
    assert client.request("{type='bogus'}") == OK  # a live connection first
    client.send(sent)
    assert read_until_closed(client) == []


def test_a_connection_that_sends_only_errors_is_closed_after_a_bounded_number(presence, connect):
    client = connect()
    client.send(b"\n" * 1000)
    lines = read_until_closed(client)
    assert lines == [b"ERROR malformed request\r\n"] * MAX_CONSECUTIVE_ERRORS + [b"ERROR too many errors\r\n"]


def test_256_kib_of_line_feeds_get_a_bounded_answer(presence, connect):
    """Issue 14: 262,144 error lines came back for 256 KiB of bare line feeds."""
    client = connect()

    def flood() -> None:
        try:
            client.send(b"\n" * 256 * 1024)
        except OSError:
            pass  # the server hung up mid-flood, as it should

    sender = gevent.spawn(flood)
    try:
        lines = read_until_closed(client)
    except ConnectionResetError:
        lines = []  # the reset of a socket closed with unread data may drop the last replies
    sender.join(CLOSE_BOUND_S)
    assert len(lines) <= MAX_CONSECUTIVE_ERRORS + 1
    with pytest.raises((ConnectionError, OSError)):
        client.request("{type='bogus'}")


@pytest.fixture(scope="module")
def roomy_presence(embedded: EmbeddedStack, log_dir: Any) -> Iterator[ServiceProcess]:
    """Presence with the default idle timeout, room for the burst's connections, and a Redis
    pool much smaller than the burst, so that requests must wait for a connection."""
    settings = presence_settings(embedded, presence_token=TOKEN, presence_max_connections=BURST + 100,
                                 redis_pool_size=10)
    process = presence_server_process(settings, log_dir, name="presence-burst").start()
    yield process
    process.stop()


def test_a_thousand_logins_at_once_all_succeed(roomy_presence):
    """Issue 14: 1,000 simultaneous logins got 739-897 `backend unavailable` (redis-py's pool
    refused instead of waiting)."""
    presence = roomy_presence
    users = fresh_user_ids(BURST)
    sockets = [socket.create_connection(("127.0.0.1", presence.settings.presence_tcp_port), timeout=60)
               for _ in users]

    def login(sock: socket.socket, user: int) -> Any:
        sock.sendall(json.dumps({"type": "login", "session_id": f"burst{user}", "user_id": user}).encode() + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return "closed"
            reply += chunk
        return json.loads(reply)

    try:
        greenlets = [gevent.spawn(login, sock, user) for sock, user in zip(sockets, users)]
        gevent.joinall(greenlets, timeout=120, raise_error=True)
        replies = [greenlet.value for greenlet in greenlets]
    finally:
        for sock in sockets:
            sock.close()
    assert "backend unavailable" not in presence.log_tail(200)
    assert sum(reply == {"ok": True, "first_session": True} for reply in replies) == BURST, \
        [reply for reply in replies if reply != {"ok": True, "first_session": True}][:5]
