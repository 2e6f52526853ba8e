"""A chat server whose MongoDB or Redis is dead answers with clear errors and stays up.

Real gunicorn, real broker; the dead dependency is a URL pointing at a port nothing listens
on. Clients get ERROR frames (STOMP) or 503 JSON (HTTP) within the backends' timeouts, the
connection stays usable, and /readyz names what is down.
"""

import json
import urllib.error
import urllib.request

import pytest

from app.embedded import free_port
from tests.conftest import MS, make_settings
from tests.support.chat import ChatClient, StompError, running_chat_server
from tests.support.rooms import set_room_members

ERROR_TIMEOUT_S = 20_000 * MS  # above the MongoDB server-selection and Redis socket timeouts
ROOM, ALICE = 4242, 42


def http_get(url, token=None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=ERROR_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def mongo_down(embedded, log_dir):
    settings = make_settings(embedded, mongo_url=f"mongodb://127.0.0.1:{free_port()}/")
    set_room_members(settings.redis_url, ROOM, [ALICE, 43])
    with running_chat_server(settings, log_dir, name="chat-mongo-down") as server:
        yield server


@pytest.fixture(scope="module")
def redis_down(embedded, log_dir):
    settings = make_settings(embedded, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with running_chat_server(settings, log_dir, name="chat-redis-down") as server:
        yield server


def test_send_with_mongo_down_gets_an_error_and_the_connection_stays_usable(mongo_down, token_for):
    """A SEND that cannot be stored is refused with ERROR, never a RECEIPT; the client may go on."""
    with ChatClient(mongo_down.ws_url, timeout=ERROR_TIMEOUT_S) as client:
        client.connect(token_for(ALICE))
        for _ in range(2):
            with pytest.raises(StompError) as refused:
                client.send("/kafka/send-direct-message", {"channelId": ROOM, "content": "hi"})
            assert refused.value.message == "database unavailable"
        assert client.subscribe(f"/topic/direct/{ROOM}")  # Redis is fine: membership still works


def test_http_with_mongo_down_is_503_json_and_readyz_names_mongo(mongo_down, token_for):
    """History needs MongoDB: 503 with the wrapper body; /readyz says which dependency is down."""
    status, body = http_get(f"{mongo_down.http_url}/chat-server/direct?ch_id={ROOM}", token_for(ALICE))
    assert status == 503 and body["isSuccess"] is False
    status, body = http_get(f"{mongo_down.http_url}/readyz")
    assert status == 503 and body["checks"]["mongo"] != "ok" and body["checks"]["redis"] == "ok"


def test_subscribe_with_redis_down_gets_an_error_and_the_server_stays_up(redis_down, token_for):
    """Membership cannot be checked without the cache: SUBSCRIBE is refused, not allowed."""
    with ChatClient(redis_down.ws_url, timeout=ERROR_TIMEOUT_S) as client:
        client.connect(token_for(ALICE))
        with pytest.raises(StompError) as refused:
            client.subscribe(f"/topic/direct/{ROOM}")
        assert refused.value.message == "cache unavailable"
        with pytest.raises(StompError):
            client.send("/kafka/send-direct-message", {"channelId": ROOM, "content": "hi"})
    status, body = http_get(f"{redis_down.http_url}/healthz")
    assert status == 200
    status, body = http_get(f"{redis_down.http_url}/readyz")
    assert status == 503 and body["checks"]["redis"] != "ok"
