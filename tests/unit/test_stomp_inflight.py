"""SENDs in flight: replies in frame order, bounded, failures as ERROR in place (STOMP 1.2 "RECEIPT").

First ``InflightSends`` on its own, then through ``StompHandler`` with SEND handlers that
return Pendings the test finishes in whatever order it likes. Nothing here depends on time:
a greenlet that must be blocked is checked after yielding to every other one.
"""

import gevent
import pytest

from app.auth import TokenVerifier, mint_token
from app.errors import BadRequest, BackendUnavailable
from app.registry import SubscriptionRegistry
from app.settings import DEV_JWT_SECRET, Settings
from app.stomp.frames import Frame
from app.stomp.handler import CLOSED, DEFAULT_MAX_INFLIGHT_SENDS, StompHandler
from app.stomp.inflight import FrameTarget, InflightSends, deliver_to
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


class Outbox:
    def __init__(self, room):
        self.room = room
        self.items = []

    def offer(self, item):
        if len(self.items) >= self.room:
            return False
        self.items.append(item)
        return True


class Target:
    """A stand-in for app.session.Session as fan-out sees it."""

    def __init__(self, room=10, version="1.2"):
        self.version = version
        self.outbox = Outbox(room)
        self.slow = 0

    def close_slow_consumer(self):
        self.slow += 1


class TestDeliverTo:
    def test_frames_are_offered_encoded_for_the_targets_version(self):
        target = Target(version="1.1")
        deliver_to(target)((Frame("RECEIPT", (("receipt-id", "a:b"),)),))
        assert target.outbox.items == [b"RECEIPT\nreceipt-id:a\\cb\n\n\x00"]

    def test_a_full_outbox_closes_the_slow_consumer(self):
        target = Target(room=1)
        deliver_to(target)((Frame("RECEIPT", (("receipt-id", "1"),)), Frame("RECEIPT", (("receipt-id", "2"),))))
        assert len(target.outbox.items) == 1 and target.slow == 1

    def test_a_session_is_a_frame_target_and_a_plain_key_is_not(self):
        assert isinstance(Target(), FrameTarget)
        assert not isinstance("me", FrameTarget)


# StompHandler with Pendings ---------------------------------------------------------


class DeferringApplication:
    """SEND /kafka/defer returns a Deferred the test finishes; /kafka/now and /kafka/refuse are synchronous."""

    def __init__(self):
        self.started = []
        self.send_handlers = {"/kafka/defer": self._defer, "/kafka/now": lambda conn, body: None,
                              "/kafka/refuse": self._refuse}

    def _defer(self, conn, body):
        pending = Deferred(body.decode(), timeout=WAIT)
        self.started.append(pending)
        return pending

    def _refuse(self, conn, body):
        raise BadRequest("refused")

    def authorize_subscription(self, conn, destination):
        pass

    def connected(self, conn):
        pass

    def disconnected(self, conn):
        pass


def frame(command, body=b"", **headers):
    return Frame(command, tuple((k.replace("_", "-"), v) for k, v in headers.items()), body)


def send(handler, receipt_id, destination="/kafka/defer"):
    return handler.receive_frame(frame("SEND", receipt_id.encode(), destination=destination, receipt=receipt_id))


@pytest.fixture
def app():
    return DeferringApplication()


def connected_handler(app, *, subscriber="me", **options):
    handler = StompHandler(application=app, verifier=TokenVerifier(DEV_JWT_SECRET), registry=SubscriptionRegistry(),
                           subscriber=subscriber, session_id="sess-1", node_id="node-a", transport="websocket",
                           heartbeat_ms=0, max_subscriptions=10, **options)
    outcome = handler.receive_frame(frame("CONNECT", accept_version="1.2",
                                          access_token=mint_token(DEV_JWT_SECRET, 5)))
    assert outcome.connected
    return handler


@pytest.fixture
def handler(app, delivered):
    return connected_handler(app, replies=delivered.extend)


class TestHandlerOrdering:
    def test_a_pending_send_is_answered_later_and_the_reader_goes_on(self, handler, app, delivered):
        assert send(handler, "s0").frames == ()
        assert send(handler, "s1").frames == ()
        assert [p.name for p in app.started] == ["s0", "s1"]  # both handlers ran, in SEND order
        app.started[1].succeed()
        app.started[0].succeed()
        handler.receive_frame(frame("DISCONNECT"))  # waits for the owed replies
        assert replies(delivered) == [receipt("s0"), receipt("s1")]

    def test_every_later_reply_waits_behind_a_send_in_flight(self, handler, app, delivered):
        send(handler, "s0")
        assert handler.receive_frame(frame("SUBSCRIBE", destination="/topic/direct/1", id="1",
                                           receipt="sub")).frames == ()
        assert send(handler, "now", destination="/kafka/now").frames == ()
        assert send(handler, "refused", destination="/kafka/refuse").frames == ()
        settle()
        assert delivered == []
        app.started[0].fail(BackendUnavailable())
        handler.receive_frame(frame("DISCONNECT"))
        assert replies(delivered) == [("ERROR", "s0", "service unavailable"), receipt("sub"), receipt("now"),
                                      ("ERROR", "refused", "refused")]
        assert handler.state == CLOSED

    def test_once_nothing_is_owed_replies_go_straight_out_again(self, handler, app, delivered):
        send(handler, "s0")
        app.started[0].succeed()
        settle()
        assert replies(delivered) == [receipt("s0")]
        assert replies(send(handler, "now", destination="/kafka/now").frames) == [receipt("now")]

    def test_disconnect_receipt_comes_after_every_earlier_send(self, handler, app, delivered):
        send(handler, "s0")
        send(handler, "s1")
        reader = gevent.spawn(handler.receive_frame, frame("DISCONNECT", receipt="bye"))
        settle()
        assert not reader.dead
        app.started[0].succeed()
        app.started[1].succeed()
        outcome = reader.get(timeout=WAIT)
        assert replies(delivered) == [receipt("s0"), receipt("s1")]
        assert replies(outcome.frames) == [receipt("bye")] and outcome.close

    def test_a_fatal_error_comes_after_the_sends_before_it(self, handler, app, delivered):
        send(handler, "s0")
        reader = gevent.spawn(handler.receive_frame, frame("BEGIN", transaction="t"))
        settle()
        assert not reader.dead
        app.started[0].succeed()
        outcome = reader.get(timeout=WAIT)
        assert replies(delivered) == [receipt("s0")]
        assert [fr.command for fr in outcome.frames] == ["ERROR"] and outcome.close

    def test_at_the_limit_the_next_send_is_not_started_until_the_oldest_is_done(self, app, delivered):
        handler = connected_handler(app, replies=delivered.extend, max_inflight_sends=2)
        send(handler, "s0")
        send(handler, "s1")
        reader = gevent.spawn(send, handler, "s2")
        settle()
        assert not reader.dead and len(app.started) == 2  # the third handler has not even run
        app.started[0].succeed()
        reader.join(timeout=WAIT)
        assert len(app.started) == 3
        app.started[1].succeed()
        app.started[2].succeed()
        handler.receive_frame(frame("DISCONNECT"))
        assert replies(delivered) == [receipt("s0"), receipt("s1"), receipt("s2")]

    def test_a_send_waiting_for_room_starts_nothing_once_the_connection_closed(self, app, delivered):
        handler = connected_handler(app, replies=delivered.extend, max_inflight_sends=1)
        send(handler, "s0")
        reader = gevent.spawn(send, handler, "s1")
        settle()
        handler.close()
        app.started[0].succeed()
        reader.join(timeout=WAIT)
        assert [p.name for p in app.started] == ["s0"]

    def test_without_a_way_to_reply_later_the_pending_is_waited_for_in_place(self, app):
        handler = connected_handler(app)  # subscriber "me": not a FrameTarget, no replies
        reader = gevent.spawn(send, handler, "s0")
        settle()
        assert not reader.dead
        app.started[0].fail(BadRequest("content is required"))
        outcome = reader.get(timeout=WAIT)
        assert replies(outcome.frames) == [("ERROR", "s0", "content is required")] and not outcome.close

    def test_a_session_subscriber_gets_the_late_replies_in_its_outbox(self, app):
        target = Target()
        handler = connected_handler(app, subscriber=target)
        send(handler, "s0")
        app.started[0].succeed()
        handler.receive_frame(frame("DISCONNECT"))
        assert target.outbox.items == [b"RECEIPT\nreceipt-id:s0\n\n\x00"]

    def test_the_default_limit_is_the_settings_default(self):
        assert Settings().stomp_max_inflight_sends == DEFAULT_MAX_INFLIGHT_SENDS
