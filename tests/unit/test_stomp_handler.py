"""StompHandler: the per-connection state machine (STOMP 1.2 "Client Frames"), without I/O."""

import time

import re

import pytest

from app.auth import TokenVerifier, mint_token
from app.errors import BadRequest, Forbidden, FrameTooLarge, NotFound
from app.stomp.registry import SubscriptionRegistry
from app.settings import DEV_JWT_SECRET
from app.stomp.frames import Frame
from app.stomp.handler import Resume, CLOSED, CONNECTED, StompHandler


class Application:
    """A ChatApplication double recording what the handler asked of it."""

    def __init__(self):
        self.sent = []
        self.authorized = []
        self.send_handlers = {
            "/kafka/echo": lambda conn, body, key=None: self.sent.append((conn.user_id, body)),
            "/kafka/refuse": self._refuse,
            "/kafka/crash": self._crash,
        }

    def _refuse(self, conn, body, key=None):
        raise BadRequest("content is required")

    def _crash(self, conn, body, key=None):
        raise RuntimeError("secret internal detail")

    def authorize_subscription(self, conn, destination):
        if destination.endswith("/666"):
            raise Forbidden("not a member")
        if destination.endswith("/404"):
            raise NotFound("no such room")
        self.authorized.append(destination)

    def connected(self, conn):
        pass

    def disconnected(self, conn):
        pass


def token(user_id=5, **kwargs):
    return mint_token(DEV_JWT_SECRET, user_id, **kwargs)


def frame(command, body=b"", **headers):
    return Frame(command, tuple((k.replace("_", "-"), v) for k, v in headers.items()), body)


@pytest.fixture
def registry():
    return SubscriptionRegistry()


@pytest.fixture
def app():
    return Application()


def new_handler(app, registry, *, max_subscriptions=10, heartbeat_ms=10000):
    return StompHandler(application=app, verifier=TokenVerifier(DEV_JWT_SECRET), registry=registry,
                        subscriber="me", session_id="sess-1", node_id="node-a", transport="websocket",
                        heartbeat_ms=heartbeat_ms, max_subscriptions=max_subscriptions)


@pytest.fixture
def handler(app, registry):
    return new_handler(app, registry)


@pytest.fixture
def connected(handler):
    outcome = handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
    assert outcome.connected
    return handler


def only(outcome):
    assert len(outcome.frames) == 1, outcome
    return outcome.frames[0]


class TestConnect:
    """STOMP 1.2 "CONNECT or STOMP Frame", "Protocol Negotiation", "Heart-beating"."""

    def test_connected_carries_version_heartbeat_session_server(self, handler):
        outcome = handler.receive_frame(frame("CONNECT", accept_version="1.0,1.1,1.2", heart_beat="10000,10000",
                                              access_token=token(5)))
        reply = only(outcome)
        assert reply.command == "CONNECTED"
        assert reply.header_dict() == {"version": "1.2", "heart-beat": "10000,10000", "session": "sess-1",
                                       "server": "smooth"}
        assert outcome.connected and not outcome.close
        assert handler.state == CONNECTED
        assert handler.connection.user_id == 5
        # The application's id is server-generated: the transport's may be client-chosen (SockJS).
        assert handler.connection.session_id != "sess-1"
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", handler.connection.session_id)
        assert handler.connection.stomp_session == "sess-1"
        assert handler.connection.node_id == "node-a"
        assert handler.connection.transport == "websocket"

    def test_each_connection_gets_its_own_application_id(self, app, registry):
        ids = set()
        for _ in range(3):
            h = new_handler(app, registry)  # same transport session id every time
            h.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
            ids.add(h.connection.session_id)
        assert len(ids) == 3

    def test_stomp_command_works_like_connect(self, handler):
        assert only(handler.receive_frame(frame("STOMP", accept_version="1.2", access_token=token()))).command == "CONNECTED"

    def test_highest_common_version_wins(self, handler):
        reply = only(handler.receive_frame(frame("CONNECT", accept_version="1.0,1.1", access_token=token())))
        assert reply.header("version") == "1.1"
        assert handler.version == "1.1"

    def test_no_accept_version_means_1_0(self, handler):
        assert only(handler.receive_frame(frame("CONNECT", access_token=token()))).header("version") == "1.0"

    def test_unsupported_version_lists_ours_and_closes(self, handler):
        outcome = handler.receive_frame(frame("CONNECT", accept_version="2.0", access_token=token(), receipt="r"))
        reply = only(outcome)
        assert reply.command == "ERROR"
        assert reply.header("version") == "1.0,1.1,1.2"
        assert reply.header("receipt-id") == "r"
        assert outcome.close and handler.state == CLOSED

    def test_heartbeat_is_negotiated_from_both_offers(self, app, registry):
        handler = new_handler(app, registry, heartbeat_ms=10000)
        reply = only(handler.receive_frame(frame("CONNECT", accept_version="1.2", heart_beat="5000,20000",
                                                 access_token=token())))
        assert handler.heartbeat == (20000, 10000)
        assert reply.header("heart-beat") == "20000,10000"

    def test_client_without_heartbeats_gets_none(self, handler):
        handler.receive_frame(frame("CONNECT", accept_version="1.2", heart_beat="0,0", access_token=token()))
        assert handler.heartbeat == (0, 0)

    def test_malformed_heartbeat_is_fatal(self, handler):
        outcome = handler.receive_frame(frame("CONNECT", accept_version="1.2", heart_beat="soon", access_token=token()))
        assert only(outcome).command == "ERROR" and outcome.close

    def test_bearer_authorization_header_is_accepted(self, handler):
        reply = only(handler.receive_frame(frame("CONNECT", accept_version="1.2", Authorization=f"Bearer {token(9)}")))
        assert reply.command == "CONNECTED" and handler.connection.user_id == 9

    @pytest.mark.parametrize("headers, message", [
        ({}, "missing token"),
        ({"access_token": "not-a-jwt"}, "invalid token"),
        ({"access_token": mint_token("b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci1zZWNyZXQ=", 5)}, "invalid token"),
        ({"access_token": token(5, now=time.time() - 3600, lifetime_s=60)}, "token expired"),
        ({"access_token": token(5), "user_id": "6"}, "user-id does not match token"),
    ])
    def test_bad_identity_is_an_error_then_close(self, handler, headers, message):
        outcome = handler.receive_frame(frame("CONNECT", accept_version="1.2", **headers))
        reply = only(outcome)
        assert (reply.command, reply.header("message")) == ("ERROR", message)
        assert outcome.close and not outcome.connected
        assert handler.connection is None

    def test_matching_user_id_header_is_fine(self, handler):
        outcome = handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token(5), user_id="5"))
        assert outcome.connected

    def test_frames_before_connect_are_fatal(self, handler):
        outcome = handler.receive_frame(frame("SUBSCRIBE", destination="/topic/group/1", id="0", receipt="r"))
        reply = only(outcome)
        assert (reply.header("message"), reply.header("receipt-id")) == ("not connected", "r")
        assert outcome.close

    def test_second_connect_is_fatal(self, connected):
        outcome = connected.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
        assert only(outcome).header("message") == "already connected" and outcome.close

    def test_receipt_on_connect_follows_connected(self, handler):
        outcome = handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token(), receipt="c"))
        assert [fr.command for fr in outcome.frames] == ["CONNECTED", "RECEIPT"]


class TestSubscribe:
    """STOMP 1.2 "SUBSCRIBE", "UNSUBSCRIBE" and our destination rules (protocol.md W-3)."""

    def test_subscribe_registers_and_receipts(self, connected, registry, app):
        reply = only(connected.receive_frame(frame("SUBSCRIBE", destination="/topic/group/12", id="sub-0", receipt="r1")))
        assert (reply.command, reply.header("receipt-id")) == ("RECEIPT", "r1")
        assert registry.subscribers("/topic/group/12") == (("me", "sub-0"),)
        assert app.authorized == ["/topic/group/12"]

    def test_since_seq_asks_the_session_to_resume_before_the_receipt(self, connected, registry):
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/3", id="s", receipt="r",
                                                since_seq="41"))
        assert outcome.resume == Resume("s", "/topic/direct/3", 41)
        assert [fr.command for fr in outcome.frames] == ["RECEIPT"] and registry.subscribers("/topic/direct/3")

    @pytest.mark.parametrize("value", ["", "-1", "1.5", "x", "١٢", "1" * 16])
    def test_a_since_seq_that_is_not_a_small_whole_number_is_refused(self, connected, registry, value):
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/3", id="s", since_seq=value))
        assert "since-seq" in only(outcome).header("message") and not outcome.close and outcome.resume is None
        assert registry.subscribers("/topic/direct/3") == ()

    def test_subscribe_without_receipt_answers_nothing(self, connected):
        assert connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/3", id="0")).frames == ()

    @pytest.mark.parametrize("destination", [
        "/topic/**", "/topic/group/*", "/topic/group/#", "/topic/group/>", "/topic/group/01", "/topic/group/0",
        "/topic/user/5", "/queue/x", "/topic/group/12345678901234567890", "/topic/group/1/", "/topic/group/1\n",
    ])
    def test_anything_but_an_exact_room_is_refused_but_not_fatal(self, connected, registry, destination):
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination=destination, id="0", receipt="r"))
        reply = only(outcome)
        assert (reply.command, reply.header("receipt-id")) == ("ERROR", "r")
        assert not outcome.close and connected.state == CONNECTED
        assert len(registry) == 0

    @pytest.mark.parametrize("room, message", [("666", "not a member"), ("404", "no such room")])
    def test_authorizer_refusal_is_not_fatal(self, connected, registry, room, message):
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination=f"/topic/group/{room}", id="0", receipt="r"))
        reply = only(outcome)
        assert (reply.command, reply.header("message"), reply.header("receipt-id")) == ("ERROR", message, "r")
        assert not outcome.close
        assert len(registry) == 0

    def test_missing_id_is_fatal_in_1_2(self, connected):
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/group/1"))
        assert only(outcome).header("message") == "missing id header" and outcome.close

    def test_missing_id_defaults_to_destination_in_1_0(self, handler, registry):
        handler.receive_frame(frame("CONNECT", access_token=token()))
        assert handler.version == "1.0"
        handler.receive_frame(frame("SUBSCRIBE", destination="/topic/group/1"))
        assert registry.subscribers("/topic/group/1") == (("me", "/topic/group/1"),)
        handler.receive_frame(frame("UNSUBSCRIBE", destination="/topic/group/1"))
        assert len(registry) == 0

    def test_missing_destination_is_fatal(self, connected):
        outcome = connected.receive_frame(frame("SUBSCRIBE", id="0"))
        assert only(outcome).header("message") == "missing destination header" and outcome.close

    def test_duplicate_id_is_fatal(self, connected, registry):
        connected.receive_frame(frame("SUBSCRIBE", destination="/topic/group/1", id="0"))
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/group/2", id="0"))
        assert only(outcome).header("message") == "duplicate subscription id" and outcome.close

    def test_subscription_limit_is_fatal(self, app, registry):
        handler = new_handler(app, registry, max_subscriptions=3)
        handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
        for n in range(3):
            assert handler.receive_frame(frame("SUBSCRIBE", destination=f"/topic/group/{n + 1}", id=str(n))).frames == ()
        outcome = handler.receive_frame(frame("SUBSCRIBE", destination="/topic/group/9", id="9", receipt="r"))
        reply = only(outcome)
        assert (reply.header("message"), reply.header("receipt-id")) == ("too many subscriptions", "r")
        assert outcome.close
        assert registry.count("me") == 3

    def test_unsubscribe_by_id(self, connected, registry):
        connected.receive_frame(frame("SUBSCRIBE", destination="/topic/group/1", id="a"))
        reply = only(connected.receive_frame(frame("UNSUBSCRIBE", id="a", receipt="u")))
        assert (reply.command, reply.header("receipt-id")) == ("RECEIPT", "u")
        assert len(registry) == 0

    def test_unsubscribe_unknown_id_is_refused_but_not_fatal(self, connected):
        outcome = connected.receive_frame(frame("UNSUBSCRIBE", id="nope", receipt="u"))
        assert only(outcome).command == "ERROR" and not outcome.close


class TestSend:
    """STOMP 1.2 "SEND" and our destination rules (protocol.md W-4)."""

    def test_send_calls_the_handler_then_receipts(self, connected, app):
        reply = only(connected.receive_frame(frame("SEND", b'{"x":1}', destination="/kafka/echo", receipt="s")))
        assert (reply.command, reply.header("receipt-id")) == ("RECEIPT", "s")
        assert app.sent == [(5, b'{"x":1}')]

    def test_send_to_topic_is_refused_but_not_fatal(self, connected, app):
        outcome = connected.receive_frame(frame("SEND", b"x", destination="/topic/group/1", receipt="s"))
        reply = only(outcome)
        assert (reply.header("message"), reply.header("receipt-id")) == ("only the server publishes to /topic", "s")
        assert not outcome.close and app.sent == []

    def test_unknown_destination_is_refused_with_receipt_id(self, connected):
        outcome = connected.receive_frame(frame("SEND", b"x", destination="/kafka/nothing", receipt="s"))
        reply = only(outcome)
        assert (reply.header("message"), reply.header("receipt-id")) == ("unknown destination", "s")
        assert not outcome.close

    def test_handler_refusal_carries_its_message(self, connected):
        outcome = connected.receive_frame(frame("SEND", b"x", destination="/kafka/refuse", receipt="s"))
        reply = only(outcome)
        assert (reply.command, reply.header("message"), reply.header("receipt-id")) == ("ERROR", "content is required", "s")
        assert not outcome.close and connected.state == CONNECTED

    def test_handler_crash_is_internal_error_without_details(self, connected, caplog):
        outcome = connected.receive_frame(frame("SEND", b"x", destination="/kafka/crash"))
        reply = only(outcome)
        assert reply.header("message") == "internal error"
        assert b"secret" not in reply.serialize()
        assert not outcome.close
        assert "secret internal detail" in caplog.text  # logged with its traceback

    @pytest.mark.parametrize("command", ["BEGIN", "COMMIT", "ABORT"])
    def test_transactions_are_not_supported(self, connected, command):
        outcome = connected.receive_frame(frame(command, transaction="t", receipt="x"))
        reply = only(outcome)
        assert (reply.header("message"), reply.header("receipt-id")) == ("transactions not supported", "x")
        assert outcome.close

    def test_send_inside_a_transaction_is_refused(self, connected, app):
        outcome = connected.receive_frame(frame("SEND", b"x", destination="/kafka/echo", transaction="t"))
        assert only(outcome).header("message") == "transactions not supported" and outcome.close
        assert app.sent == []


class TestOthers:

    def test_disconnect_receipts_then_closes(self, connected):
        outcome = connected.receive_frame(frame("DISCONNECT", receipt="bye"))
        reply = only(outcome)
        assert (reply.command, reply.header("receipt-id")) == ("RECEIPT", "bye")
        assert outcome.close and connected.state == CLOSED

    def test_nothing_is_handled_after_close(self, connected, app):
        connected.receive_frame(frame("DISCONNECT"))
        assert connected.receive_frame(frame("SEND", b"x", destination="/kafka/echo")).frames == ()
        assert app.sent == []

    def test_protocol_error_from_the_parser_is_fatal(self, connected):
        outcome = connected.protocol_error(FrameTooLarge("frame over max_frame_bytes"))
        assert only(outcome).header("message") == "frame over max_frame_bytes" and outcome.close
        assert connected.protocol_error(FrameTooLarge()).frames == ()


def test_a_send_left_in_flight_is_returned_as_pending_not_waited_for(app, registry):
    class Later:
        def wait(self):
            raise AssertionError("the handler must not wait")

    later = Later()
    app.send_handlers["/kafka/later"] = lambda conn, body, key=None: later
    handler = new_handler(app, registry)
    handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
    outcome = handler.receive_frame(frame("SEND", b"x", destination="/kafka/later", receipt="r1"))
    assert outcome.pending is not None and outcome.receipt_id == "r1"
    assert outcome.frames == () and not outcome.close
    with pytest.raises(AssertionError, match="must not wait"):  # the handler's Pending, measured
        outcome.pending.wait()


@pytest.mark.parametrize("header", ["id", "receipt"])
def test_subscribe_refuses_what_it_could_not_echo_in_a_stomp_1_0_header(app, registry, header):
    handler = new_handler(app, registry)
    handler.receive_frame(frame("CONNECT", accept_version="1.0", access_token=token()))
    headers = {"destination": "/topic/direct/1", "id": "sub-1", "receipt": "r-1", header: "a\rb"}
    outcome = handler.receive_frame(frame("SUBSCRIBE", **headers))
    (error,) = outcome.frames
    assert error.command == "ERROR" and error.header("message") == f"{header}: cannot be sent back in a STOMP 1.0 header"
    assert not outcome.close and registry.count("me") == 0


def test_a_send_hands_its_idempotency_key_to_the_application(app, registry):
    keys = []
    app.send_handlers["/kafka/keyed"] = lambda conn, body, key=None: keys.append(key)
    handler = new_handler(app, registry)
    handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
    handler.receive_frame(frame("SEND", b"x", destination="/kafka/keyed", idempotency_key="k-1"))
    handler.receive_frame(frame("SEND", b"x", destination="/kafka/keyed"))
    assert keys == ["k-1", None]



class TestHostileSubscriptionsAndSends:
    """Issue 14 items 5 and 8: few subscriptions per destination, short ids, a SEND rate limit."""

    def test_a_fifth_subscription_to_one_destination_is_refused_and_the_connection_stays(self, connected, registry):
        for n in range(4):
            assert connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id=f"s{n}")).frames == ()
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id="s4", receipt="r"))
        reply = only(outcome)
        assert reply.command == "ERROR" and reply.header("receipt-id") == "r"
        assert reply.header("message") == "too many subscriptions to this destination (at most 4)"
        assert not outcome.close and connected.state == CONNECTED
        assert registry.count_to("me", "/topic/direct/7") == 4
        # Other destinations are still open to it, and an UNSUBSCRIBE frees a place.
        assert connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/8", id="t")).frames == ()
        connected.receive_frame(frame("UNSUBSCRIBE", id="s0"))
        assert connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id="s5")).frames == ()

    def test_the_per_destination_cap_is_a_setting(self, app, registry):
        handler = StompHandler(application=app, verifier=TokenVerifier(DEV_JWT_SECRET), registry=registry,
                               subscriber="me", session_id="s", node_id="n", transport="websocket",
                               heartbeat_ms=0, max_subscriptions=10, max_per_destination=1)
        handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
        assert handler.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id="a")).frames == ()
        assert only(handler.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id="b"))).command == "ERROR"

    def test_a_long_subscription_id_is_refused_but_not_fatal(self, connected, registry):
        from app.stomp.handler import SUBSCRIPTION_ID_MAX_CHARS

        ok = "i" * SUBSCRIPTION_ID_MAX_CHARS
        assert connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id=ok)).frames == ()
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/8", id=ok + "i"))
        assert only(outcome).header("message") == f"id: longer than {SUBSCRIPTION_ID_MAX_CHARS} characters"
        assert not outcome.close and registry.count("me") == 1

    def test_sends_past_the_rate_limit_get_an_error_and_the_connection_stays(self, app, registry):
        handler = StompHandler(application=app, verifier=TokenVerifier(DEV_JWT_SECRET), registry=registry,
                               subscriber="me", session_id="s", node_id="n", transport="websocket",
                               heartbeat_ms=0, max_subscriptions=10, send_rate=(3, 3600.0))
        handler.receive_frame(frame("CONNECT", accept_version="1.2", access_token=token()))
        for n in range(3):
            assert only(handler.receive_frame(frame("SEND", b"x", destination="/kafka/echo", receipt=f"r{n}"))) \
                .command == "RECEIPT"
        outcome = handler.receive_frame(frame("SEND", b"x", destination="/kafka/echo", receipt="r3"))
        reply = only(outcome)
        assert (reply.command, reply.header("receipt-id")) == ("ERROR", "r3")
        assert reply.header("message") == "rate limit exceeded: at most 3 SENDs per 3600 s"
        assert not outcome.close and handler.state == CONNECTED
        assert len(app.sent) == 3  # the refused SEND reached no handler
        # Refused SENDs count too (an unknown destination is no way around the limit).
        assert only(handler.receive_frame(frame("SEND", destination="/kafka/nope"))).header("message") \
            .startswith("rate limit exceeded")

    def test_without_a_rate_limit_sends_are_not_counted(self, connected, app):
        for _ in range(500):
            connected.receive_frame(frame("SEND", b"x", destination="/kafka/echo"))
        assert len(app.sent) == 500


class TestAcknowledge:
    """STOMP 1.2 "SUBSCRIBE ack Header", "ACK", "NACK": ids are checked against what was delivered."""

    def subscribe(self, handler, ack, sub_id="s1"):
        reply = only(handler.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id=sub_id, ack=ack,
                                                 receipt="sub")))
        assert reply.command == "RECEIPT", reply

    @pytest.mark.parametrize("command", ["ACK", "NACK"])
    def test_an_ack_of_a_delivered_message_gets_its_receipt_once(self, connected, command):
        self.subscribe(connected, "client-individual")
        ack_id = connected.acks.delivered("s1", "m1")  # what the fan-out does per MESSAGE
        reply = only(connected.receive_frame(frame(command, id=ack_id, receipt="r1")))
        assert (reply.command, reply.header("receipt-id")) == ("RECEIPT", "r1")
        again = connected.receive_frame(frame(command, id=ack_id, receipt="r2"))
        error = only(again)
        assert (error.command, error.header("message"), error.header("receipt-id")) == ("ERROR", "unknown ack id", "r2")
        assert not again.close and connected.state == CONNECTED

    @pytest.mark.parametrize("command", ["ACK", "NACK"])
    def test_an_ack_of_something_never_delivered_is_an_error_and_the_connection_stays(self, connected, command):
        self.subscribe(connected, "client")
        outcome = connected.receive_frame(frame(command, id="bogus", receipt="r"))
        assert only(outcome).header("message") == "unknown ack id" and not outcome.close

    def test_an_auto_subscription_owes_no_ack(self, connected):
        self.subscribe(connected, "auto")
        assert connected.acks.modes == {}
        assert only(connected.receive_frame(frame("ACK", id="1"))).header("message") == "unknown ack id"

    def test_the_subscription_records_its_mode_and_unsubscribe_forgets_it(self, connected):
        self.subscribe(connected, "client")
        assert connected.acks.modes == {"s1": "client"}
        ack_id = connected.acks.delivered("s1", "m1")
        connected.receive_frame(frame("UNSUBSCRIBE", id="s1"))
        assert connected.acks.modes == {}
        assert only(connected.receive_frame(frame("ACK", id=ack_id))).command == "ERROR"

    def test_an_unknown_ack_mode_is_refused(self, connected, registry):
        outcome = connected.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/7", id="s1", ack="sometimes"))
        assert only(outcome).header("message") == "ack: must be auto, client or client-individual"
        assert not outcome.close and registry.count("me") == 0

    def test_an_ack_without_an_id_is_a_protocol_error(self, connected):
        outcome = connected.receive_frame(frame("ACK", receipt="r"))
        assert only(outcome).header("message") == "missing id header" and outcome.close

    def test_an_ack_inside_a_transaction_is_refused(self, connected):
        outcome = connected.receive_frame(frame("ACK", id="1", transaction="t"))
        assert only(outcome).header("message") == "transactions not supported" and outcome.close

    def test_stomp_1_1_acks_by_message_id_and_subscription(self, app, registry):
        handler = new_handler(app, registry)
        handler.receive_frame(frame("CONNECT", accept_version="1.1", access_token=token()))
        self.subscribe(handler, "client-individual")
        handler.acks.delivered("s1", "m1")
        assert only(handler.receive_frame(frame("ACK", message_id="m1", subscription="other"))).command == "ERROR"
        assert only(handler.receive_frame(frame("ACK", message_id="m1", subscription="s1", receipt="r"))).command \
            == "RECEIPT"
