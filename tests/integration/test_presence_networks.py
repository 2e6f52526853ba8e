"""The allowed networks against the real presence process: a caller outside them is served
nothing without a credential, on the TCP port (``PRESENCE_ALLOWED_NETWORKS``) and for the HTTP
endpoints only services call (``SERVICE_ALLOWED_NETWORKS``: ``/metrics``, ``user-state``).

The test connects from loopback, so each process here lists only a documentation network
(192.0.2.0/24), and loopback is "elsewhere" to it.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from app.embedded import EmbeddedStack
from tests.support.presence import LineClient, fresh_user_ids, http_json, presence_settings
from tests.support.processes import ServiceProcess, presence_server_process

ELSEWHERE = "192.0.2.0/24"
TOKEN = "presence-networks-test-token"
OK = "반환메세지\r\n".encode("utf-8")


def _presence(embedded: EmbeddedStack, log_dir: Any, name: str, token: str) -> Iterator[ServiceProcess]:
    settings = presence_settings(embedded, presence_token=token, service_token="",
                                 presence_allowed_networks=ELSEWHERE, service_allowed_networks=ELSEWHERE)
    process = presence_server_process(settings, log_dir, name=name).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def with_token(embedded: EmbeddedStack, log_dir: Any) -> Iterator[ServiceProcess]:
    yield from _presence(embedded, log_dir, "presence-networks-token", TOKEN)


@pytest.fixture(scope="module")
def without_token(embedded: EmbeddedStack, log_dir: Any) -> Iterator[ServiceProcess]:
    yield from _presence(embedded, log_dir, "presence-networks-open", "")


def test_with_a_token_an_unlisted_caller_is_served_once_it_shows_it(with_token: ServiceProcess) -> None:
    (user,) = fresh_user_ids(1)
    client = LineClient(with_token.settings.presence_tcp_port)
    try:
        login = f"{{type='login', session_id='w{user}', user_id='{user}'}}"
        assert client.request(login) == b"ERROR auth required\r\n"
        assert client.json(type="state", user_id=user, channel_id="c-1") == {"ok": False, "error": "auth required"}
        assert client.json(type="auth", token=TOKEN) == {"ok": True}
        assert client.request(login) == OK
    finally:
        client.close()


def test_without_a_token_an_unlisted_caller_is_refused_everything(without_token: ServiceProcess) -> None:
    (user,) = fresh_user_ids(1)
    client = LineClient(without_token.settings.presence_tcp_port)
    try:
        assert client.request(f"{{type='login', session_id='o{user}', user_id='{user}'}}") == b"ERROR not allowed\r\n"
        assert client.json(type="auth", token="anything") == {"ok": False, "error": "not allowed"}
        assert client.json(type="lease", node_id="n1") == {"ok": False, "error": "not allowed"}
    finally:
        client.close()


def test_service_only_http_endpoints_refuse_an_unlisted_caller(without_token: ServiceProcess) -> None:
    base = f"http://127.0.0.1:{without_token.settings.presence_http_port}"
    assert http_json(f"{base}/metrics")[0] == 403
    assert http_json(f"{base}/presence-server/user-state")[0] == 403
    assert http_json(f"{base}/healthz")[0] == 200
    assert http_json(f"{base}/presence-server/friends-state", [1])[0] == 200  # open, as the original web client
