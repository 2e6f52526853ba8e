"""STOMP over the raw WebSocket endpoint /my-chat/websocket, over real sockets.

The server runs in this process (the real transport around a test application, on a gevent WSGIServer) with a recording
application double, so each test sees exactly what the transport asked of the application.
Every bad-input test ends by checking that the server still serves the next client.
"""

import time

import gevent
import pytest
import websocket

from app.stomp.frames import Frame
from tests.conftest import MS
from tests.support.chat import ChatClient, StompError, message_json

WAIT = 5000 * MS  # upper bound for anything that must happen "soon"


@pytest.fixture
def client(server, token_for):
    with ChatClient(server.ws_url, timeout=WAIT) as chat:
        chat.connect(token_for(5))
        yield chat


def publish(client, destination, body):
    client.send("/kafka/publish", {"destination": destination, "body": body})


def assert_server_serves(server, token_for):
    """The server still accepts, authenticates and answers a new client."""
    with ChatClient(server.ws_url, timeout=WAIT) as other:
        assert other.connect(token_for(77)).command == "CONNECTED"
        assert other.send("/kafka/echo", b"still here").command == "RECEIPT"


def probe_disconnection(server, application, token_for):
    """A later client connects, DISCONNECTs and is gone: its STOMP session id, once the
    application saw its disconnected(). Whatever an earlier, finished connection still had to
    do reached the application before this probe's, so a test can assert "nothing more" by
    order: the probe's disconnection is the next one."""
    with ChatClient(server.ws_url, timeout=WAIT) as probe:
        session_id = probe.connect(token_for(78)).header("session")
        probe.disconnect()
        assert probe.wait_closed(WAIT)
    application.wait_disconnected(session_id, WAIT)
    return session_id


def assert_error_then_closed(chat, message):
    reply = chat.wait_for(lambda fr: fr.command == "ERROR", WAIT)
    assert reply.header("message") == message
    assert chat.wait_closed(WAIT)
    return reply


class TestHandshake:
    def test_best_offered_subprotocol_is_echoed(self, server):
        with ChatClient(server.ws_url) as chat:
            assert chat.subprotocol == "v12.stomp"
        with ChatClient(server.ws_url, subprotocols=("v10.stomp", "v11.stomp")) as chat:
            assert chat.subprotocol == "v11.stomp"
        with ChatClient(server.ws_url, subprotocols=("v10.stomp",)) as chat:
            assert chat.subprotocol == "v10.stomp"

    def test_no_subprotocol_offered_none_echoed(self, server, token_for):
        with ChatClient(server.ws_url, subprotocols=()) as chat:
            assert chat.subprotocol is None
            assert chat.connect(token_for(5)).command == "CONNECTED"


class TestConnect:
    """STOMP 1.2 "CONNECT or STOMP Frame" with our authentication (protocol.md 2.4, W-1, W-2)."""

    def test_connect_then_receipt_for_disconnect_then_close(self, server, application, token_for):
        with ChatClient(server.ws_url) as chat:
            reply = chat.connect(token_for(5), accept_version="1.0,1.1,1.2", heart_beat="0,0")
            assert reply.header("version") == "1.2"
            assert reply.header("heart-beat") == "0,0"
            assert reply.header("server") == "smooth"
            session_id = reply.header("session")
            assert session_id
            receipt = chat.disconnect()
            assert receipt.command == "RECEIPT"
            assert chat.wait_closed(WAIT)
        gone = application.wait_disconnected(session_id, WAIT)
        assert gone.user_id == 5
        assert [c.stomp_session for c in application.connections] == [session_id]
        probe = probe_disconnection(server, application, token_for)
        assert [c.stomp_session for c in application.disconnections] == [session_id, probe]  # exactly once

    def test_each_raw_connection_gets_its_own_session_id(self, server, token_for):
        with ChatClient(server.ws_url) as one, ChatClient(server.ws_url) as two:
            assert one.connect(token_for(5)).header("session") != two.connect(token_for(5)).header("session")

    def test_bearer_authorization_header(self, server, application, token_for):
        with ChatClient(server.ws_url) as chat:
            chat.connect(headers={"Authorization": f"Bearer {token_for(9)}"})
            chat.send("/kafka/echo", b"hi")
        assert application.received == [(9, b"hi")]

    @pytest.mark.parametrize("case", ["missing", "garbage", "expired", "user-id mismatch"])
    def test_bad_identity_gets_error_then_close(self, server, application, token_for, case):
        headers = {
            "missing": {},
            "garbage": {"access-token": "abc.def.ghi"},
            "expired": {"access-token": token_for(5, now=time.time() - 7200, lifetime_s=60)},
            "user-id mismatch": {"access-token": token_for(5), "user-id": "6"},
        }[case]
        expected = {"missing": "missing token", "garbage": "invalid token", "expired": "token expired",
                    "user-id mismatch": "user-id does not match token"}[case]
        with ChatClient(server.ws_url) as chat:
            with pytest.raises(StompError) as refused:
                chat.connect(headers=headers)
            assert refused.value.message == expected
            assert chat.wait_closed(WAIT)
        assert application.connections == []
        assert_server_serves(server, token_for)

    def test_no_frame_is_accepted_before_connect(self, server, application, token_for):
        with ChatClient(server.ws_url) as chat:
            chat.send_frame(Frame("SEND", (("destination", "/kafka/echo"),), b"sneaky"))
            assert_error_then_closed(chat, "not connected")
        assert application.received == []
        assert_server_serves(server, token_for)

    def test_unsupported_version_lists_supported_ones(self, server, token_for):
        with ChatClient(server.ws_url) as chat:
            with pytest.raises(StompError) as refused:
                chat.connect(token_for(5), accept_version="2.0,3.0")
            assert refused.value.frame.header("version") == "1.0,1.1,1.2"
            assert chat.wait_closed(WAIT)
        assert_server_serves(server, token_for)

    def test_silent_connection_is_closed_after_connect_timeout(self, start_server, token_for):
        server = start_server(connect_timeout_s=0.3)
        with ChatClient(server.ws_url) as chat:
            assert_error_then_closed(chat, "connect timeout")
        assert_server_serves(server, token_for)


class TestSubscriptions:
    """STOMP 1.2 "SUBSCRIBE", "UNSUBSCRIBE", "MESSAGE"; exact destinations only (W-3)."""

    def test_a_resumed_subscription_replays_then_drops_what_the_client_has_until_it_ends(self, client, application):
        application.resumable["/topic/direct/5"] = [(1, b'{"seq":1}'), (2, b'{"seq":2}')]
        client.subscribe("/topic/direct/5", "s", headers={"since-seq": "1"})
        assert client.receive_message(WAIT).body == b'{"seq":2}'  # the replay, before the RECEIPT
        for seq in (1, 2, 3):  # live: 1 the client had, 2 the replay carried
            client.send("/kafka/publish", {"destination": "/topic/direct/5", "body": f'{{"seq":{seq}}}', "seq": seq})
        assert client.receive_message(WAIT).body == b'{"seq":3}'
        client.unsubscribe("s")
        client.subscribe("/topic/direct/5", "s")  # the same id again, not resumed: no gate
        client.send("/kafka/publish", {"destination": "/topic/direct/5", "body": '{"seq":1}', "seq": 1})
        assert client.receive_message(WAIT).body == b'{"seq":1}'

    def test_message_reaches_the_subscriber(self, client):
        sub_id = client.subscribe("/topic/group/12")
        publish(client, "/topic/group/12", '{"type":"message","message":"hi"}')
        message = client.receive_message(WAIT)
        assert message.header("destination") == "/topic/group/12"
        assert message.header("subscription") == sub_id
        assert message.header("content-type") == "text/plain;charset=UTF-8"
        assert message.header("message-id")
        assert message_json(message) == {"type": "message", "message": "hi"}

    def test_subscribers_on_different_versions_get_the_same_event(self, server, client, token_for):
        with ChatClient(server.ws_url) as old:
            old.connect(token_for(6), accept_version="1.0")
            old.subscribe("/topic/direct/3", "legacy")
            client.subscribe("/topic/direct/3", "new")
            publish(client, "/topic/direct/3", "x:y")
            one, two = old.receive_message(WAIT), client.receive_message(WAIT)
        assert (one.header("subscription"), two.header("subscription")) == ("legacy", "new")
        assert one.header("message-id") == two.header("message-id")
        assert one.body == two.body == b"x:y"

    def test_unsubscribe_stops_delivery(self, client):
        client.subscribe("/topic/group/1", "a")
        client.subscribe("/topic/group/2", "b")
        client.unsubscribe("a")
        publish(client, "/topic/group/1", "not for you")
        publish(client, "/topic/group/2", "for you")
        assert client.receive_message(WAIT).body == b"for you"
        with pytest.raises(TimeoutError):
            client.receive_message(200 * MS)

    @pytest.mark.parametrize("destination", ["/topic/**", "/topic/group/*", "/topic/#", "/topic/group/>",
                                             "/topic/user/5", "/topic/group/007", "/queue/a"])
    def test_patterns_and_foreign_destinations_are_refused(self, client, destination):
        with pytest.raises(StompError) as refused:
            client.subscribe(destination)
        assert refused.value.frame.header("receipt-id")
        publish(client, "/topic/group/1", "nobody listens")  # the connection stays usable
        assert client.send("/kafka/echo", b"ok").command == "RECEIPT"

    @pytest.mark.parametrize("room, message", [("666", "not a member"), ("404", "no such room")])
    def test_authorizer_refusal_comes_with_receipt_id(self, client, room, message):
        client.send_frame(Frame("SUBSCRIBE", (("destination", f"/topic/group/{room}"), ("id", "s"),
                                              ("receipt", "want-it"))))
        reply = client.receive_frame(WAIT)
        assert (reply.command, reply.header("message"), reply.header("receipt-id")) == ("ERROR", message, "want-it")
        publish(client, f"/topic/group/{room}", "secret")
        assert client.send("/kafka/echo", b"ok").command == "RECEIPT"
        with pytest.raises(TimeoutError):
            client.receive_message(200 * MS)

    def test_duplicate_subscription_id_is_fatal(self, server, application, client, token_for):
        session_id = application.connections[0].session_id
        client.subscribe("/topic/group/1", "same")
        client.send_frame(Frame("SUBSCRIBE", (("destination", "/topic/group/2"), ("id", "same"))))
        assert_error_then_closed(client, "duplicate subscription id")
        application.wait_disconnected(session_id, WAIT)  # a protocol error ends it like any other end
        assert len(server.chat.hub.registry) == 0
        assert_server_serves(server, token_for)

    def test_ten_thousand_subscribes_hit_the_limit(self, start_server, application, token_for):
        server = start_server(stomp_max_subscriptions=500)
        with ChatClient(server.ws_url, timeout=WAIT) as chat:
            chat.connect(token_for(5))
            frames = [Frame("SUBSCRIBE", (("destination", f"/topic/group/{1000 + n}"), ("id", str(n)))).serialize()
                      for n in range(10_000)]
            for start in range(0, len(frames), 400):  # pipelined, 400 frames per WebSocket message
                if chat.closed:
                    break
                try:
                    chat.send_raw(b"".join(frames[start:start + 400]))
                except (websocket.WebSocketConnectionClosedException, OSError):
                    break
            assert_error_then_closed(chat, "too many subscriptions")
        assert len(server.chat.hub.registry) == 0  # a closed connection holds nothing
        assert_server_serves(server, token_for)


class TestSend:
    """SEND dispatch (W-4, W-31) and "RECEIPT only after the handler returned"."""

    def test_send_reaches_the_handler_with_the_token_identity(self, client, application):
        assert client.send("/kafka/echo", {"userId": 999}).command == "RECEIPT"
        assert application.received == [(5, b'{"userId": 999}')]

    def test_send_to_topic_is_refused(self, client):
        client.subscribe("/topic/group/1")
        with pytest.raises(StompError) as refused:
            client.send("/topic/group/1", "forged")
        assert refused.value.message == "only the server publishes to /topic"
        with pytest.raises(TimeoutError):
            client.receive_message(200 * MS)

    def test_unknown_destination_error_carries_receipt_id(self, client):
        client.send_frame(Frame("SEND", (("destination", "/kafka/nope"), ("receipt", "r9")), b"x"))
        reply = client.receive_frame(WAIT)
        assert (reply.command, reply.header("message"), reply.header("receipt-id")) == (
            "ERROR", "unknown destination", "r9")
        assert client.send("/kafka/echo", b"still open").command == "RECEIPT"

    def test_application_refusal_keeps_the_connection(self, client, application):
        with pytest.raises(StompError) as refused:
            client.send("/kafka/refuse", b"x")
        assert refused.value.message == "refused by the application"
        assert client.send("/kafka/echo", b"after").command == "RECEIPT"
        assert application.received == [(5, b"after")]

    def test_unexpected_failure_is_internal_error_without_details(self, client, caplog):
        with pytest.raises(StompError) as refused:
            client.send("/kafka/crash", b"x")
        assert refused.value.message == "internal error"
        assert b"leak" not in refused.value.frame.serialize()
        assert "internal detail that must not leak" in caplog.text
        assert client.send("/kafka/echo", b"after").command == "RECEIPT"

    def test_frames_are_handled_in_order_and_receipts_follow_handlers(self, client, application):
        pipelined = b"".join(Frame("SEND", (("destination", dest), ("receipt", rid)), body).serialize()
                             for dest, rid, body in [("/kafka/sleep", "1", b"0.3"), ("/kafka/echo", "2", b"a"),
                                                     ("/kafka/echo", "3", b"b")])
        client.send_raw(pipelined)
        receipts = [client.receive_frame(WAIT) for _ in range(3)]
        assert [r.header("receipt-id") for r in receipts] == ["1", "2", "3"]
        assert [body for _, body in application.received] == [b"slept", b"a", b"b"]

    def test_transactions_are_refused(self, server, client, token_for):
        client.send_frame(Frame("BEGIN", (("transaction", "t1"),)))
        assert_error_then_closed(client, "transactions not supported")
        assert_server_serves(server, token_for)


class TestLimits:
    """Frame, header and WebSocket message limits (settings), and malformed input."""

    def test_websocket_message_over_the_frame_limit(self, start_server, token_for):
        server = start_server(stomp_max_frame_bytes=1024)
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            chat.send_raw(Frame("SEND", (("destination", "/kafka/echo"),), b"x" * 2000).serialize())
            assert_error_then_closed(chat, "frame too large")
            assert chat.close_code == 1009
        assert_server_serves(server, token_for)

    def test_frame_without_nul_that_never_ends(self, start_server, application, token_for):
        server = start_server(stomp_max_frame_bytes=4096)
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            chat.send_raw(b"SEND\ndestination:/kafka/echo\n\n")
            for _ in range(6):  # each message is under the limit; together they are not
                chat.send_raw(b"y" * 1000)
            assert_error_then_closed(chat, "frame over max_frame_bytes")
        assert application.received == []
        assert_server_serves(server, token_for)

    def test_too_many_header_lines(self, start_server, token_for):
        server = start_server(stomp_max_header_lines=8)
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            headers = (("destination", "/kafka/echo"),) + tuple((f"h{n}", "v") for n in range(20))
            chat.send_frame(Frame("SEND", headers, b"x"))
            assert_error_then_closed(chat, "header lines over max_header_lines")
        assert_server_serves(server, token_for)

    def test_header_block_too_large(self, start_server, token_for):
        server = start_server(stomp_max_header_bytes=256)
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            chat.send_frame(Frame("SEND", (("destination", "/kafka/echo"), ("big", "v" * 400)), b"x"))
            assert_error_then_closed(chat, "header block over max_header_bytes")
        assert_server_serves(server, token_for)

    def test_invalid_utf8_in_headers(self, server, application, token_for):
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            chat.send_raw(b"SEND\ndestination:/kafka/\xff\xfeecho\n\nx\x00", binary=True)
            assert_error_then_closed(chat, "invalid UTF-8 in header")
        assert application.received == []
        assert_server_serves(server, token_for)

    def test_invalid_utf8_in_a_text_message(self, server, token_for):
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            chat.ws.send(b"SEND\ndestination:/kafka/echo\n\n\xc3\x28\x00", opcode=websocket.ABNF.OPCODE_TEXT)
            assert_error_then_closed(chat, "invalid UTF-8")
            assert chat.close_code == 1007
        assert_server_serves(server, token_for)

    def test_garbage_instead_of_a_frame(self, server, token_for):
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5))
            chat.send_raw(b"HELLO THERE\n\n\x00")
            assert_error_then_closed(chat, "unknown command")
        assert_server_serves(server, token_for)


class TestHeartbeats:
    """STOMP 1.2 "Heart-beating" with the server's offer from settings.heartbeat_ms."""

    def test_server_sends_heartbeats_at_the_agreed_interval(self, start_server, token_for):
        server = start_server(heartbeat_ms=100)
        with ChatClient(server.ws_url) as chat:
            reply = chat.connect(token_for(5), heart_beat="0,100")
            assert reply.header("heart-beat") == "100,0"
            chat.wait_heartbeats(3, WAIT)
            # Nothing but heart-beats arrived meanwhile: a probe's RECEIPT is the next frame.
            chat.send_frame(Frame("SEND", (("destination", "/kafka/echo"), ("receipt", "probe")), b"probe"))
            reply = chat.receive_frame(WAIT)
            assert (reply.command, reply.header("receipt-id")) == ("RECEIPT", "probe")

    def test_silent_client_is_closed_after_tolerance(self, start_server, application, token_for):
        server = start_server(heartbeat_ms=100, heartbeat_tolerance=2.0)
        with ChatClient(server.ws_url) as chat:
            session_id = chat.connect(token_for(5), heart_beat="100,0").header("session")
            assert_error_then_closed(chat, "heart-beat timeout")
        application.wait_disconnected(session_id, WAIT)

    def test_client_heartbeats_keep_the_connection(self, start_server, token_for):
        server = start_server(heartbeat_ms=100, heartbeat_tolerance=2.0)
        with ChatClient(server.ws_url) as chat:
            chat.connect(token_for(5), heart_beat="100,0")
            for _ in range(10):  # 1 s: five times the tolerated silence
                chat.send_raw(b"\n")
                gevent.sleep(0.08)
            assert chat.send("/kafka/echo", b"alive").command == "RECEIPT"

    def test_websocket_ping_is_answered(self, client):
        client.ws.ping(b"are you there")
        client.ws.settimeout(WAIT)
        opcode, frame = client.ws.recv_data_frame(True)
        assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"are you there")


class TestEndings:
    def test_client_vanishing_is_a_disconnect(self, server, application, token_for):
        chat = ChatClient(server.ws_url)
        session_id = chat.connect(token_for(5)).header("session")
        chat.subscribe("/topic/group/5")
        chat.ws.sock.close()  # no close frame, no DISCONNECT
        application.wait_disconnected(session_id, WAIT)
        assert len(server.chat.hub.registry) == 0
        assert len(server.chat.hub) == 0

    def test_failed_connect_is_never_disconnected(self, server, application, token_for):
        with ChatClient(server.ws_url) as chat:
            with pytest.raises(StompError):
                chat.connect("bad")
            chat.wait_closed(WAIT)
        probe = probe_disconnection(server, application, token_for)
        assert [c.stomp_session for c in application.disconnections] == [probe]  # none for the failed one
        assert len(server.chat.hub) == 0


class TestAck:
    """STOMP 1.2 "SUBSCRIBE ack Header", "ACK", "NACK" over a real socket."""

    def test_a_client_individual_subscription_gets_ack_headers_and_its_acks_receipts(self, client):
        client.subscribe("/topic/direct/3", "acked", headers={"ack": "client-individual"})
        client.subscribe("/topic/direct/3", "auto")
        publish(client, "/topic/direct/3", "one")
        frames = {frame.header("subscription"): frame for frame in (client.receive_message(WAIT) for _ in range(2))}
        assert frames["auto"].header("ack") is None
        ack_id = frames["acked"].header("ack")
        assert ack_id
        client.send_frame(Frame("ACK", (("id", ack_id), ("receipt", "ack-1"))))
        assert client.expect_receipt("ack-1", WAIT).command == "RECEIPT"

    @pytest.mark.parametrize("command", ["ACK", "NACK"])
    def test_a_bogus_or_repeated_ack_id_gets_an_error_and_the_connection_stays(self, client, command):
        client.subscribe("/topic/direct/3", "acked", headers={"ack": "client"})
        client.send_frame(Frame(command, (("id", "bogus"), ("receipt", "bad"))))
        error = client.wait_for(lambda fr: fr.command == "ERROR", WAIT)
        assert (error.header("message"), error.header("receipt-id")) == ("unknown ack id", "bad")
        publish(client, "/topic/direct/3", "two")  # still connected and served
        ack_id = client.receive_message(WAIT).header("ack")
        client.send_frame(Frame(command, (("id", ack_id), ("receipt", "once"))))
        client.expect_receipt("once", WAIT)
        client.send_frame(Frame(command, (("id", ack_id), ("receipt", "twice"))))
        error = client.wait_for(lambda fr: fr.command == "ERROR", WAIT)
        assert (error.header("message"), error.header("receipt-id")) == ("unknown ack id", "twice")

    def test_a_resumed_client_ack_subscription_replays_with_ack_headers(self, client, application):
        application.resumable["/topic/direct/4"] = [(1, b'{"seq":1}'), (2, b'{"seq":2}')]
        client.subscribe("/topic/direct/4", "acked", headers={"ack": "client-individual", "since-seq": "0"})
        replayed = [client.receive_message(WAIT) for _ in range(2)]
        assert [frame.body for frame in replayed] == [b'{"seq":1}', b'{"seq":2}']
        for n, frame in enumerate(replayed):
            client.send_frame(Frame("ACK", (("id", frame.header("ack")), ("receipt", f"replay-{n}"))))
            client.expect_receipt(f"replay-{n}", WAIT)
