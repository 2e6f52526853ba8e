"""Session deadlines (app/stomp/session.py): CONNECT timeout, heart-beats out, silence in (STOMP 1.2
"Heart-beating") on event-loop timers, with no greenlet per connection and, once connected
without heart-beats, no timer at all.

A Session is driven directly (bytes in, outbox out), without sockets. Every wait is bounded
by WAIT; nothing asserts how fast anything happens.
"""

import gc

import gevent
import greenlet
import pytest

from app.auth import TokenVerifier, mint_token
from app.stomp.registry import SubscriptionRegistry
from app.stomp.outbox import POLICY_VIOLATION
from app.stomp.session import CLOSING, OPEN, SessionHub
from app.settings import Settings
from app.stomp.frames import HEARTBEAT
from tests.conftest import MS
from tests.support.chat import RecordingApplication

WAIT = 5000 * MS


def make_hub(**overrides):
    settings = Settings.from_env({}, **overrides)
    return SessionHub(settings, RecordingApplication(), TokenVerifier(settings.jwt_secret),
                      SubscriptionRegistry(), "node-1")


def connect(session, heart_beat):
    token = mint_token(Settings().jwt_secret, 5)
    session.receive_data(f"CONNECT\naccept-version:1.2\naccess-token:{token}\nheart-beat:{heart_beat}\n\n\x00".encode())


def wait_until(predicate, timeout=WAIT):
    with gevent.Timeout(timeout, AssertionError("condition not reached in time")):
        while not predicate():
            gevent.sleep(0.001)


def greenlets_alive():
    gc.collect()
    return sum(1 for obj in gc.get_objects() if _is_live_greenlet(obj))


def _is_live_greenlet(obj):
    try:
        return isinstance(obj, greenlet.greenlet) and not obj.dead
    except ReferenceError:  # a weak proxy whose referent is gone (another library's)
        return False


@pytest.fixture
def opened():
    """opened(**settings) -> a started Session; every one is finished after the test."""
    sessions = []

    def open_session(**overrides):
        hub = make_hub(**overrides)
        session = hub.open_session(f"s{len(sessions)}", "websocket")
        sessions.append(session)
        session.start()
        return session

    yield open_session
    for session in sessions:
        session.finish()


def test_connect_timeout_sends_error_and_closes(opened):
    session = opened(connect_timeout_s=0.1)
    assert session.timer_armed
    wait_until(lambda: session.state != OPEN)
    assert session.state == CLOSING
    frames = session.outbox.take(10)
    assert frames[-1].startswith(b"ERROR\nmessage:connect timeout\n")
    assert session.outbox.close_code == POLICY_VIOLATION
    assert not session.timer_armed


def test_connected_without_heartbeats_holds_no_timer(opened):
    session = opened(heartbeat_ms=10000)
    assert session.timer_armed  # the CONNECT deadline
    connect(session, "0,0")
    assert session.outbox.take(10)[0].startswith(b"CONNECTED\n")
    assert not session.timer_armed


def test_connected_with_heartbeats_holds_one_timer_until_closed(opened):
    session = opened(heartbeat_ms=10000)
    connect(session, "10000,10000")
    assert session.timer_armed
    session.close()
    assert not session.timer_armed


def test_heartbeats_are_queued_at_the_agreed_interval(opened):
    session = opened(heartbeat_ms=20)
    connect(session, "0,20")
    assert session.outbox.take(10)[0].startswith(b"CONNECTED\n")
    queued = []
    wait_until(lambda: queued.extend(session.outbox.take(10)) or queued.count(HEARTBEAT) >= 3)
    assert set(queued) == {HEARTBEAT}
    assert session.state == OPEN


def test_a_silent_client_is_closed_after_the_tolerance(opened):
    session = opened(heartbeat_ms=20, heartbeat_tolerance=2.0)
    connect(session, "20,0")
    wait_until(lambda: session.state != OPEN)
    assert session.outbox.take(10)[-1].startswith(b"ERROR\nmessage:heart-beat timeout\n")
    assert session.outbox.close_code == POLICY_VIOLATION


def test_no_greenlet_per_session_for_its_deadlines(opened):
    before = greenlets_alive()
    sessions = [opened(heartbeat_ms=20) for _ in range(20)]
    for session in sessions:
        connect(session, "0,20")
    wait_until(lambda: all(HEARTBEAT in session.outbox.take(10) for session in sessions))
    assert greenlets_alive() - before < len(sessions)  # deadlines are loop timers, not greenlets
    assert all(session.state == OPEN for session in sessions)
