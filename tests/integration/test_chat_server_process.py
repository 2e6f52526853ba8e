"""The real chat server process: gunicorn with gunicorn.conf.py and the real wiring.

Runs exactly what `make run` runs for the chat server (on the embedded backends), connects
the raw client and @stomp/stompjs (plain WebSocket and sockjs-client) with minted tokens,
and checks the graceful shutdown: SIGTERM closes every STOMP session with an ERROR first,
so long-lived WebSockets do not hold the worker until its graceful timeout.
"""

import os
import signal

import pytest

from tests.conftest import MS, make_settings
from tests.support.chat import ChatClient, run_js_client, running_chat_server

WAIT = 10_000 * MS


@pytest.fixture(scope="module")
def chat(embedded, log_dir):
    settings = make_settings(embedded, connect_timeout_s=5.0)
    with running_chat_server(settings, log_dir, name="chat-process") as server:
        yield server


def test_raw_websocket_client(chat, token_for):
    with ChatClient(chat.ws_url, timeout=WAIT) as client:
        assert client.subprotocol == "v12.stomp"
        connected = client.connect(token_for(41), heart_beat="10000,10000")
        assert connected.header("heart-beat") == "10000,10000"
        assert client.disconnect().command == "RECEIPT"
        assert client.wait_closed(WAIT)


@pytest.mark.parametrize("mode, transports", [("websocket", None), ("sockjs", None), ("sockjs", ["xhr-streaming"]),
                                              ("sockjs", ["xhr-polling"])])
def test_stompjs_connects_and_gets_the_disconnect_receipt(chat, token_for, mode, transports):
    url = chat.ws_url if mode == "websocket" else chat.sockjs_url
    result = run_js_client(url=url, mode=mode, transports=transports, token=token_for(42), userId=42)
    assert result["exit_status"] == 0, result
    assert result["connected"] and result["version"] == "1.2"
    assert result["disconnectReceipt"]
    assert result["errors"] == []


def test_sigterm_closes_sessions_then_exits(embedded, log_dir, token_for):
    settings = make_settings(embedded)
    with running_chat_server(settings, log_dir, name="chat-sigterm") as server:
        client = ChatClient(server.ws_url, timeout=WAIT)
        client.connect(token_for(43))
        os.killpg(server.process.process.pid, signal.SIGTERM)
        error = client.wait_for(lambda frame: frame.command == "ERROR", WAIT)
        assert error.header("message") == "server shutting down"
        assert client.wait_closed(WAIT)
        assert server.process.process.wait(timeout=15) == 0
        client.close()
