"""SENDs in flight: replies in frame order, bounded, failures as ERROR in place (STOMP 1.2 "RECEIPT").

First ``InflightSends`` on its own, then through a ``Session`` (which owns them) with SEND
handlers that return Pendings the test finishes in whatever order it likes. Nothing here depends on time:
a greenlet that must be blocked is checked after yielding to every other one.
"""

import gevent
import gevent.event
import pytest

from app.auth import TokenVerifier, mint_token
from app.errors import BadRequest, BackendUnavailable
from app.settings import Settings
from app.stomp.frames import SERVER_COMMANDS, Frame
from app.stomp.inflight import InflightSends
from app.stomp.parser import FrameParser
from app.stomp.registry import SubscriptionRegistry
from app.stomp.session import SessionHub
from tests.conftest import MS
from tests.support.pending import Deferred

WAIT = 5000 * MS  # upper bound for a greenlet that must finish; never reached when the code is right


def settle():
    """Let every runnable greenlet run until it blocks."""
    for _ in range(5):
        gevent.sleep(0)


def replies(frames):
    """(command, receipt-id, message) of each frame: what ordering assertions compare."""
    return [(fr.command, fr.header("receipt-id"), fr.header("message")) for fr in frames]


def receipt(receipt_id):
    return ("RECEIPT", receipt_id, None)


@pytest.fixture
def delivered():
    return []


@pytest.fixture
def inflight(delivered):
    return InflightSends(limit=3, deliver=delivered.extend)


class TestInflightSends:
    def test_replies_leave_in_entry_order_whatever_order_the_acks_come_in(self, inflight, delivered):
        sends = [Deferred(timeout=WAIT), Deferred(timeout=WAIT), Deferred(timeout=WAIT)]
        for n, pending in enumerate(sends):
            inflight.add_pending(pending, f"r{n}")
        sends[2].succeed()
        sends[1].succeed()
        settle()
        assert delivered == []  # r0 is still in flight: nothing may overtake it
        sends[0].succeed()
        inflight.drain()
        assert replies(delivered) == [receipt("r0"), receipt("r1"), receipt("r2")]
        assert len(inflight) == 0

    def test_a_failure_is_an_error_with_its_receipt_id_in_its_place(self, inflight, delivered):
        sends = [Deferred(timeout=WAIT), Deferred(timeout=WAIT), Deferred(timeout=WAIT)]
        for n, pending in enumerate(sends):
            inflight.add_pending(pending, f"r{n}")
        sends[2].succeed()
        sends[1].fail(BackendUnavailable())
        sends[0].succeed()
        inflight.drain()
        assert replies(delivered) == [receipt("r0"), ("ERROR", "r1", "service unavailable"), receipt("r2")]

    def test_an_unexpected_failure_puts_no_detail_on_the_wire(self, inflight, delivered):
        pending = Deferred(timeout=WAIT)
        inflight.add_pending(pending, "r0")
        pending.fail(RuntimeError("secret internal detail"))
        inflight.drain()
        (error,) = delivered
        assert replies(delivered) == [("ERROR", "r0", "internal error")]
        assert b"secret" not in error.serialize()

    def test_without_a_receipt_success_sends_nothing_and_failure_an_error(self, inflight, delivered):
        ok, failed = Deferred(timeout=WAIT), Deferred(timeout=WAIT)
        inflight.add_pending(ok, None)
        inflight.add_pending(failed, None)
        ok.succeed()
        failed.fail(BadRequest("content is required"))
        inflight.drain()
        assert replies(delivered) == [("ERROR", None, "content is required")]

    def test_ready_frames_wait_behind_the_sends_before_them(self, inflight, delivered):
        pending = Deferred(timeout=WAIT)
        inflight.add_pending(pending, "send")
        inflight.add_ready((Frame("RECEIPT", (("receipt-id", "subscribe"),)),))
        settle()
        assert delivered == []
        pending.succeed()
        inflight.drain()
        assert replies(delivered) == [receipt("send"), receipt("subscribe")]

    def test_at_the_limit_the_reader_waits_for_the_oldest(self, inflight, delivered):
        sends = [Deferred(f"s{n}", timeout=WAIT) for n in range(4)]
        for n in range(3):
            inflight.add_pending(sends[n], f"r{n}")
        reader = gevent.spawn(inflight.add_pending, sends[3], "r3")
        settle()
        assert not reader.dead and len(inflight) == 3  # back-pressure, nothing dropped
        sends[1].succeed()  # not the oldest: no room yet
        settle()
        assert not reader.dead
        sends[0].succeed()
        reader.join(timeout=WAIT)
        assert reader.dead and len(inflight) == 2
        sends[2].succeed()
        sends[3].succeed()
        inflight.drain()
        assert replies(delivered) == [receipt(f"r{n}") for n in range(4)]

    def test_drain_returns_once_every_reply_was_delivered(self, inflight, delivered):
        pending = Deferred(timeout=WAIT)
        inflight.add_pending(pending, "r0")
        inflight.add_ready((Frame("RECEIPT", (("receipt-id", "later"),)),))
        drainer = gevent.spawn(inflight.drain)
        settle()
        assert not drainer.dead
        pending.succeed()
        drainer.join(timeout=WAIT)
        assert drainer.dead and replies(delivered) == [receipt("r0"), receipt("later")]

    def test_one_acknowledger_per_busy_spell(self, delivered):
        spawned = []

        def spawn(function):
            spawned.append(function)
            return gevent.spawn(function)

        inflight = InflightSends(limit=8, deliver=delivered.extend, spawn=spawn)
        first, second = Deferred(timeout=WAIT), Deferred(timeout=WAIT)
        inflight.add_pending(first, "a")
        inflight.add_pending(second, "b")
        assert len(spawned) == 1
        first.succeed()
        second.succeed()
        inflight.drain()
        inflight.add_ready((Frame("RECEIPT", (("receipt-id", "c"),)),))
        inflight.drain()
        assert len(spawned) == 2 and replies(delivered) == [receipt("a"), receipt("b"), receipt("c")]


# StompHandler with Pendings ---------------------------------------------------------


class DeferringApplication:
    """SEND /kafka/defer returns a Deferred the test finishes; /kafka/now and /kafka/refuse are synchronous."""

    def __init__(self):
        self.started = []
        self.send_handlers = {"/kafka/defer": self._defer, "/kafka/now": lambda conn, body, key=None: None,
                              "/kafka/refuse": self._refuse}

    def _defer(self, conn, body, key=None):
        pending = Deferred(body.decode(), timeout=WAIT)
        self.started.append(pending)
        return pending

    def _refuse(self, conn, body, key=None):
        raise BadRequest("refused")

    def authorize_subscription(self, conn, destination):
        pass

    def connected(self, conn):
        pass

    def disconnected(self, conn):
        pass


def frame(command, body=b"", **headers):
    return Frame(command, tuple((k.replace("_", "-"), v) for k, v in headers.items()), body)


def wire(frame_):
    return frame_.serialize("1.2")


@pytest.fixture
def app():
    return DeferringApplication()


def open_session(app, **overrides):
    """A CONNECTed Session of a hub around ``app``, driven directly: bytes in, outbox out."""
    settings = Settings.from_env({}, heartbeat_ms=0, **overrides)
    hub = SessionHub(settings, app, TokenVerifier(settings.jwt_secret), SubscriptionRegistry(), "node-a")
    session = hub.open_session("sess-1", "websocket")
    session.receive_data(wire(frame("CONNECT", accept_version="1.2", access_token=mint_token(settings.jwt_secret, 5))))
    assert session.outbox.take(10)[0].startswith(b"CONNECTED\n")
    return session


def send(session, receipt_id, destination="/kafka/defer"):
    session.receive_data(wire(frame("SEND", receipt_id.encode(), destination=destination, receipt=receipt_id)))


def sent(session):
    """The replies the session queued for its client so far, parsed back."""
    parser = FrameParser(max_frame_bytes=1 << 20, max_header_lines=100, max_header_bytes=1 << 16,
                         accepted_commands=SERVER_COMMANDS)
    for data in session.outbox.take(1000):
        parser.receive_data(data)
    return replies(event for event in parser.events_received() if isinstance(event, Frame))


@pytest.fixture
def session(app):
    opened = open_session(app)
    yield opened
    opened.finish()


class TestSessionOrdering:
    """The session owns the SENDs in flight: replies leave in frame order, by one route."""

    def test_a_pending_send_is_answered_later_and_the_reader_goes_on(self, session, app):
        send(session, "s0")
        send(session, "s1")
        assert [p.name for p in app.started] == ["s0", "s1"]  # both handlers ran, in SEND order
        assert sent(session) == []
        app.started[1].succeed()
        app.started[0].succeed()
        session.receive_data(wire(frame("DISCONNECT")))  # waits for the owed replies
        assert sent(session) == [receipt("s0"), receipt("s1")]

    def test_every_later_reply_waits_behind_a_send_in_flight(self, session, app):
        send(session, "s0")
        session.receive_data(wire(frame("SUBSCRIBE", destination="/topic/direct/1", id="1", receipt="sub")))
        send(session, "now", destination="/kafka/now")
        send(session, "refused", destination="/kafka/refuse")
        settle()
        assert sent(session) == []
        app.started[0].fail(BackendUnavailable())
        session.receive_data(wire(frame("DISCONNECT")))
        assert sent(session) == [("ERROR", "s0", "service unavailable"), receipt("sub"), receipt("now"),
                                 ("ERROR", "refused", "refused")]
        assert not session.is_open

    def test_once_nothing_is_owed_replies_go_straight_out_again(self, session, app):
        send(session, "s0")
        app.started[0].succeed()
        settle()
        assert sent(session) == [receipt("s0")]
        send(session, "now", destination="/kafka/now")
        assert sent(session) == [receipt("now")]

    def test_disconnect_receipt_comes_after_every_earlier_send(self, session, app):
        send(session, "s0")
        send(session, "s1")
        reader = gevent.spawn(session.receive_data, wire(frame("DISCONNECT", receipt="bye")))
        settle()
        assert not reader.dead
        app.started[0].succeed()
        app.started[1].succeed()
        reader.join(timeout=WAIT)
        assert sent(session) == [receipt("s0"), receipt("s1"), receipt("bye")]
        assert not session.is_open

    def test_a_fatal_error_comes_after_the_sends_before_it(self, session, app):
        send(session, "s0")
        reader = gevent.spawn(session.receive_data, wire(frame("BEGIN", transaction="t")))
        settle()
        assert not reader.dead
        app.started[0].succeed()
        reader.join(timeout=WAIT)
        assert [command for command, _, _ in sent(session)] == ["RECEIPT", "ERROR"]
        assert not session.is_open

    def test_at_the_limit_the_next_send_is_not_started_until_the_oldest_is_done(self, app):
        session = open_session(app, stomp_max_inflight_sends=2)
        send(session, "s0")
        send(session, "s1")
        reader = gevent.spawn(send, session, "s2")
        settle()
        assert not reader.dead and len(app.started) == 2  # the third handler has not even run
        app.started[0].succeed()
        reader.join(timeout=WAIT)
        assert len(app.started) == 3
        app.started[1].succeed()
        app.started[2].succeed()
        session.receive_data(wire(frame("DISCONNECT")))
        assert sent(session) == [receipt("s0"), receipt("s1"), receipt("s2")]
        session.finish()

    def test_a_send_waiting_for_room_starts_nothing_once_the_connection_closed(self, app):
        session = open_session(app, stomp_max_inflight_sends=1)
        send(session, "s0")
        reader = gevent.spawn(send, session, "s1")
        settle()
        session.close()
        app.started[0].succeed()
        reader.join(timeout=WAIT)
        assert [p.name for p in app.started] == ["s0"]
        session.finish()

    def test_replies_are_encoded_in_the_negotiated_version(self, app):
        settings = Settings.from_env({}, heartbeat_ms=0)
        hub = SessionHub(settings, app, TokenVerifier(settings.jwt_secret), SubscriptionRegistry(), "node-a")
        session = hub.open_session("sess-11", "websocket")
        session.receive_data(wire(frame("CONNECT", accept_version="1.1",
                                        access_token=mint_token(settings.jwt_secret, 5))))
        session.outbox.take(10)
        send(session, "a:b", destination="/kafka/now")
        assert session.outbox.take(10) == [b"RECEIPT\nreceipt-id:a\\cb\n\n\x00"]
        session.finish()

    def test_a_receipt_carries_the_headers_its_pending_added(self, session, app):
        send(session, "s0")
        app.started[0].succeed({"message-id": "65a1b2c3d4e5f60718293a4b"})
        session.receive_data(wire(frame("DISCONNECT")))
        parser = FrameParser(max_frame_bytes=1 << 20, max_header_lines=100, max_header_bytes=1 << 16,
                             accepted_commands=SERVER_COMMANDS)
        for data in session.outbox.take(10):
            parser.receive_data(data)
        (receipt_frame,) = [event for event in parser.events_received() if isinstance(event, Frame)]
        assert receipt_frame.headers == (("receipt-id", "s0"), ("message-id", "65a1b2c3d4e5f60718293a4b"))

    def test_drain_answers_every_send_taken_then_says_shutting_down(self, session, app):
        send(session, "s0")
        send(session, "s1")
        drainer = gevent.spawn(session.drain, "server shutting down")
        settle()
        send(session, "after")  # taken no more: the worker is stopping
        assert not drainer.dead and [p.name for p in app.started] == ["s0", "s1"]
        app.started[0].succeed()
        app.started[1].succeed()
        drainer.join(timeout=WAIT)
        assert sent(session) == [receipt("s0"), receipt("s1"), ("ERROR", None, "server shutting down")]
        assert session.outbox.close_code == 1001

    def test_a_subscribe_waits_until_the_fan_out_is_positioned(self, app):
        positioned = []
        session = open_session(app)
        session._hub.delivering = lambda: bool(positioned)
        reader = gevent.spawn(session.receive_data,
                              wire(frame("SUBSCRIBE", destination="/topic/direct/1", id="1", receipt="sub")))
        settle()
        assert not reader.dead and sent(session) == []
        positioned.append(True)
        reader.join(timeout=WAIT)
        assert sent(session) == [receipt("sub")]
        session.finish()

    def test_a_subscribe_on_a_fan_out_that_never_comes_is_refused_not_left_waiting(self, app):
        session = open_session(app)
        session._hub.delivering = lambda: False
        session._hub.ready_wait_s = 0.05
        session.receive_data(wire(frame("SUBSCRIBE", destination="/topic/direct/1", id="1", receipt="sub")))
        assert sent(session) == [("ERROR", "sub", "server not ready, try again")]
        assert session.is_open
        session.finish()

    def test_a_full_outbox_closes_the_slow_consumer(self, app):
        session = open_session(app, outbox_max_frames=1)
        session.receive_data(wire(frame("SUBSCRIBE", destination="/topic/direct/1", id="1", receipt="x")))
        session.receive_data(wire(frame("SUBSCRIBE", destination="/topic/direct/2", id="2", receipt="y")))
        assert not session.is_open
        assert session.outbox.take(10)[-1].startswith(b"ERROR\nmessage:slow consumer\n")
        session.finish()


def test_drain_waits_for_the_frame_the_reader_is_handling(app):
    """A SEND whose handler is still running when the worker stops gets its RECEIPT first."""
    gate = gevent.event.Event()
    app.send_handlers["/kafka/slow"] = lambda conn, body, key=None: gate.wait() and None
    session = open_session(app)
    reader = gevent.spawn(send, session, "slow", "/kafka/slow")
    settle()
    drainer = gevent.spawn(session.drain, "server shutting down")
    settle()
    assert not drainer.dead
    gate.set()
    reader.join(timeout=WAIT)
    drainer.join(timeout=WAIT)
    assert sent(session) == [receipt("slow"), ("ERROR", None, "server shutting down")]
    session.finish()
