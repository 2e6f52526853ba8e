"""The presence server's HTTP API (protocol.md §6.3, issue 4 item 5), over real HTTP to the
real process on real Redis: friends-state, user-state, health and readiness, and the
absence of the original's debug endpoints (W-10).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from app.embedded import EmbeddedStack, free_port
from tests.support.presence import LineClient, fresh_user_ids, http_json, presence_settings
from tests.support.processes import ServiceProcess, presence_server_process

WRAPPER = {"isSuccess": True, "code": 1000, "message": "요청에 성공하였습니다."}


@pytest.fixture(scope="module")
def presence(embedded: EmbeddedStack, log_dir: Any) -> Iterator[ServiceProcess]:
    process = presence_server_process(presence_settings(embedded), log_dir, name="presence-http").start()
    yield process
    process.stop()


@pytest.fixture
def base(presence: ServiceProcess) -> str:
    return f"http://127.0.0.1:{presence.settings.presence_http_port}"


@pytest.fixture
def tcp(presence: ServiceProcess) -> Iterator[LineClient]:
    client = LineClient(presence.settings.presence_tcp_port)
    yield client
    client.close()


def test_friends_state_reports_locations_and_offline(base: str, tcp: LineClient) -> None:
    home, viewer, voice, away = fresh_user_ids(4)
    for user in (home, viewer, voice):
        tcp.json(type="login", session_id=f"h{user}", user_id=user)
    tcp.json(type="state", user_id=viewer, session_id=f"h{viewer}", channel_id="r-17")
    tcp.json(type="enter", user_id=voice, community_id=3, channel_id="c-7")
    status, body = http_json(f"{base}/presence-server/friends-state", [str(home), viewer, voice, away])
    assert status == 200
    assert body == {**WRAPPER, "result": {str(home): "home", str(viewer): "r-17", str(voice): "com3,c-7",
                                          str(away): "offline"}}
    assert list(body) == ["isSuccess", "code", "message", "result"]
    for user in (home, viewer, voice):
        tcp.json(type="logout", session_id=f"h{user}")
    status, body = http_json(f"{base}/presence-server/friends-state", [home])
    assert body["result"] == {str(home): "offline"}


@pytest.mark.parametrize("payload", [{"ids": [1]}, ["5x"], [True], [[1]], "5"])
def test_friends_state_rejects_bodies_that_are_not_id_lists(base: str, payload: Any) -> None:
    status, body = http_json(f"{base}/presence-server/friends-state", payload)
    assert status == 400
    assert body["isSuccess"] is False


def test_user_state_is_a_bare_map_of_online_users(base: str, tcp: LineClient) -> None:
    user, gone = fresh_user_ids(2)
    tcp.json(type="login", session_id=f"u{user}", user_id=user)
    tcp.json(type="login", session_id=f"u{gone}", user_id=gone)
    tcp.json(type="logout", session_id=f"u{gone}")
    status, body = http_json(f"{base}/presence-server/user-state")
    assert status == 200
    assert body[str(user)] == "online"
    assert str(gone) not in body
    assert set(body.values()) == {"online"}
    tcp.json(type="logout", session_id=f"u{user}")


def test_health_and_readiness(base: str) -> None:
    assert http_json(f"{base}/healthz") == (200, {"status": "ok"})
    assert http_json(f"{base}/readyz") == (200, {"status": "ready"})


@pytest.mark.parametrize("path", ["/presence-server/all-redis-info", "/presence-server/delete",
                                  "/presence-server/for-me"])
def test_the_originals_debug_endpoints_do_not_exist(base: str, path: str) -> None:
    """W-10: no unauthenticated dump or wipe of presence state."""
    assert http_json(f"{base}{path}")[0] == 404
    assert http_json(f"{base}{path}", {}, method="POST")[0] in (404, 405)


def test_without_redis_readyz_fails_and_requests_get_errors(embedded: EmbeddedStack, log_dir: Any) -> None:
    """Presence starts without its Redis, reports not-ready, and answers errors instead of hanging."""
    settings = presence_settings(embedded, presence_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    process = presence_server_process(settings, log_dir, name="presence-no-redis").start()
    client = LineClient(settings.presence_tcp_port, timeout=30)
    try:
        base = f"http://127.0.0.1:{settings.presence_http_port}"
        assert http_json(f"{base}/healthz")[0] == 200
        assert http_json(f"{base}/readyz") == (503, {"status": "redis unreachable"})
        status, body = http_json(f"{base}/presence-server/friends-state", [1])
        assert status == 503 and body["isSuccess"] is False
        assert client.request("{type='login', session_id='s1', user_id='5'}") == b"ERROR backend unavailable\r\n"
        assert client.json(type="logout", session_id="s1") == {"ok": False, "error": "backend unavailable"}
    finally:
        client.close()
        process.stop()
