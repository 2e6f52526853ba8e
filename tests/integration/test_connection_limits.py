"""Limits before the handshake (issue 14 item 3), on the real gunicorn worker.

One chat server with a cap of 4 connections, a reserve of 4 and a 1 s deadline for a
request's line and headers:

- a socket that sends nothing, and 20 that send a WebSocket upgrade one byte at a time
  (slowloris), are closed without an answer;
- past the cap, an upgrade and any other request get 503 in the JSON envelope, while
  ``/healthz`` and ``/readyz`` still answer; a freed slot serves again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import websocket

from tests.conftest import MS, make_settings
from tests.support.chat import ChatClient, raw_connection, read_until_closed, running_chat_server

WAIT = 20_000 * MS
CAP = 4
UPGRADE = (b"GET /my-chat/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n")


@pytest.fixture(scope="module")
def chat(embedded, log_dir):
    settings = make_settings(embedded, worker_connections=CAP, health_reserve=4, header_timeout_s=1.0,
                             connect_timeout_s=60.0)
    with running_chat_server(settings, log_dir, name="chat-limits") as server:
        yield server


def fetch(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_socket_that_sends_nothing_is_closed_without_an_answer(chat):
    with raw_connection(chat, WAIT) as silent:
        assert read_until_closed(silent, WAIT) == b""


def test_slowloris_upgrades_are_closed_before_they_finish(chat):
    sockets = [raw_connection(chat, WAIT) for _ in range(20)]
    open_ = set(range(len(sockets)))
    deadline = time.monotonic() + WAIT
    sent = 0
    try:
        while open_ and time.monotonic() < deadline and sent < len(UPGRADE):
            for n in list(open_):
                try:
                    sockets[n].sendall(UPGRADE[sent:sent + 1])
                    sockets[n].setblocking(False)
                    if sockets[n].recv(1024) == b"":
                        open_.discard(n)
                except BlockingIOError:
                    pass
                except OSError:  # reset: the server closed it
                    open_.discard(n)
                finally:
                    sockets[n].setblocking(True)
            sent += 1
            time.sleep(0.3)
        assert not open_, f"{len(open_)} slow sockets still open after {sent} bytes"
        assert sent < len(UPGRADE)  # closed long before their headers could have been complete
    finally:
        for sock in sockets:
            sock.close()


def test_past_the_cap_requests_get_503_and_health_still_answers(chat, token_for):
    clients = [ChatClient(chat.ws_url, timeout=WAIT) for _ in range(CAP)]  # upgraded: no header deadline
    try:
        for n, client in enumerate(clients):
            client.connect(token_for(700 + n))
        with raw_connection(chat, WAIT) as upgrade:
            upgrade.sendall(UPGRADE)
            answer = read_until_closed(upgrade, WAIT)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        assert json.loads(body) == {"isSuccess": False, "code": 503,
                                    "message": "too many connections, try again later"}
        assert fetch(chat.http_url + "/chat-server/direct?ch_id=1")[0] == 503
        assert fetch(chat.http_url + "/healthz") == (200, {"status": "ok"})
        assert fetch(chat.http_url + "/readyz")[0] in (200, 503)  # answered, whatever the backends say
        with raw_connection(chat, WAIT) as silent_a, raw_connection(chat, WAIT) as silent_b:  # within the reserve
            assert fetch(chat.http_url + "/healthz") == (200, {"status": "ok"})
        # The connected clients were not disturbed, and a freed slot serves again.
        assert clients[0].disconnect().command == "RECEIPT"
        clients[0].close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                with ChatClient(chat.ws_url, timeout=WAIT) as again:
                    if again.subprotocol is not None:
                        break
            except websocket.WebSocketBadStatusException as refused:  # the worker has not seen the close yet
                assert refused.status_code == 503
            time.sleep(0.1)
        else:
            pytest.fail("no upgrade after a slot was freed")
    finally:
        for client in clients:
            client.close()
