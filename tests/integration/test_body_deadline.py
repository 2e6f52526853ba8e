"""A request body that stalls is cut; one that keeps moving is not (the real gunicorn worker).

One chat server with a 1 s body idle timeout (``CHAT_BODY_IDLE_TIMEOUT_S``):

- a POST that sends part of its body and then nothing gets 408 in the JSON envelope and its
  connection closed, and the worker keeps serving others meanwhile;
- a body trickled slower than the whole timeout in total, but never idle that long, is read
  whole and answered as usual;
- an upgraded WebSocket may stay quiet longer than the timeout (heart-beats 0,0) and still work.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import MS, make_settings
from tests.support.chat import ChatClient, raw_connection, read_until_closed, running_chat_server

WAIT = 20_000 * MS
IDLE_S = 1.0
USER = 5


@pytest.fixture(scope="module")
def chat(embedded, log_dir):
    settings = make_settings(embedded, body_idle_timeout_s=IDLE_S, header_timeout_s=5.0)
    with running_chat_server(settings, log_dir, name="chat-body-deadline") as server:
        yield server


def post_head(token: str, length: int) -> bytes:
    return (f"POST /chat-server/message-count HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n").encode()


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_a_stalled_body_gets_408_and_the_worker_keeps_serving(chat, token_for):
    body = json.dumps({"userId": USER, "roomIds": []}).encode()
    with raw_connection(chat, WAIT) as stalled, raw_connection(chat, WAIT) as other:
        stalled.sendall(post_head(token_for(USER), len(body) + 100) + body)  # 100 bytes never come
        other.sendall(post_head(token_for(USER), len(body)) + body + b"")
        other_status, _ = status_and_body(other.recv(65536))
        answer = read_until_closed(stalled, WAIT)
    status, envelope = status_and_body(answer)
    assert other_status == 200
    assert status == 408
    assert b"connection: close" in answer.lower()
    assert json.loads(envelope)["message"] == "request body too slow"


def test_a_body_that_keeps_moving_is_read_whole(chat, token_for):
    body = json.dumps({"userId": USER, "roomIds": []}).encode()
    step = IDLE_S / 4
    with raw_connection(chat, WAIT) as trickle:
        trickle.sendall(post_head(token_for(USER), len(body)))
        started = time.monotonic()
        for byte in body:
            trickle.sendall(bytes([byte]))
            time.sleep(step)
        assert time.monotonic() - started > 2 * IDLE_S  # longer than the timeout in all
        status, answer = status_and_body(trickle.recv(65536))
    assert status == 200 and json.loads(answer) == []


def test_an_upgraded_websocket_may_stay_quiet_longer(chat, token_for):
    with ChatClient(chat.ws_url, timeout=WAIT) as client:
        client.connect(token_for(USER), heart_beat="0,0")
        time.sleep(3 * IDLE_S)
        receipt = client.disconnect()
    assert receipt is not None and receipt.command == "RECEIPT"
