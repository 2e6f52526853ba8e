"""The real browser-side clients: @stomp/stompjs over sockjs-client and over a plain WebSocket.

Each case runs tests/js/stomp_roundtrip.js in Node against the in-process server: CONNECT
with a minted token, SUBSCRIBE, SEND with a receipt, receive the MESSAGE, then DISCONNECT
and wait for its RECEIPT. sockjs-client is also forced onto its HTTP fallbacks, as when a
proxy blocks WebSocket.
"""

import pytest

from tests.support.chat import run_js_client


def run_node_client(**options):
    """Run the JS round trip, which must succeed; its JSON result."""
    result = run_js_client(**options)
    assert result["exit_status"] == 0, result
    return result


@pytest.fixture
def server_settings():
    """The default settings: the clients must see the default 10000,10000 heart-beat offer."""
    return {}


def assert_round_trip(result, application, token_user=5):
    assert result["connected"] is True
    assert result["version"] == "1.2"
    assert result["heartBeat"] == "10000,10000"
    assert result["publishReceipt"] == "publish-1"
    assert result["message"] == {"destination": "/topic/group/12", "body": '{"type":"message","message":"héllo"}'}
    assert result["disconnectReceipt"], result  # DISCONNECT answered with its RECEIPT
    assert result["errors"] == []
    assert [c.user_id for c in application.connections] == [token_user]
    application.wait_disconnected(result["session"], 10)


def test_stompjs_over_plain_websocket(server, application, token_for):
    result = run_node_client(url=server.ws_url, mode="websocket", token=token_for(5), userId=5, publish=True)
    assert_round_trip(result, application)


@pytest.mark.parametrize("transports, expected", [
    (None, "websocket"),
    (["xhr-streaming"], "xhr-streaming"),
    (["xhr-polling"], "xhr-polling"),
])
def test_stompjs_over_sockjs(server, application, token_for, transports, expected):
    result = run_node_client(url=server.sockjs_url, mode="sockjs", transports=transports, token=token_for(5),
                             userId=5, publish=True)
    assert result["transport"] == expected
    assert_round_trip(result, application)


def test_stompjs_sees_a_refused_token(server, application):
    result = run_js_client(url=server.ws_url, mode="websocket", token="forged", userId=5)
    assert result["exit_status"] == 1
    assert result["connected"] is False
    assert result["errors"] == ["invalid token"]
    assert application.connections == []


@pytest.mark.parametrize("mode", ["websocket", "sockjs"])
def test_stompjs_acknowledges_a_client_individual_message_and_gets_the_receipt(server, application, token_for, mode):
    """@stomp/stompjs's message.ack({receipt}) sends an ACK only if the MESSAGE has an ack header."""
    url = server.ws_url if mode == "websocket" else server.sockjs_url
    result = run_node_client(url=url, mode=mode, token=token_for(5), userId=5, publish=True, ack="client-individual")
    assert result["ackHeader"], result
    assert result["ackReceipt"] == "ack-1"
    assert_round_trip(result, application)
