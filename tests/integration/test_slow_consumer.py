"""The slow-consumer policy: a subscriber that stops reading is dropped; the others never wait.

A real client that never calls recv() (a tiny receive buffer makes the kernel buffers fill
quickly) subscribes next to a healthy one. Fan-out runs as the Kafka consumer would run
it: deliver() from another greenlet, yielding between events. The stalled subscriber's
outbox (a few frames, from settings) overflows, it is closed as a slow consumer, and the
healthy subscriber receives every event in order.
"""

import contextlib
import socket

import gevent
import pytest

from app.stomp.session import OPEN
from tests.conftest import MS
from tests.support.chat import ChatClient

WAIT = 5000 * MS
ROOM = "/topic/group/1"
BODY = b"x" * 32_768
MAX_EVENTS = 3000  # far more than loopback buffers hold: the stall must show before this


@pytest.fixture
def server_settings():
    """An outbox of a few frames, so a stalled subscriber overflows it quickly; no heart-beats."""
    return {"outbox_max_frames": 8, "heartbeat_ms": 0}


def subscribed_client(server, token, **kwargs):
    client = ChatClient(server.ws_url, timeout=WAIT, **kwargs)
    session_id = client.connect(token).header("session")
    client.subscribe(ROOM)
    return client, session_id


def read_messages(client, count, into):
    for _ in range(count):
        into.append(client.receive_message(WAIT).body)


def publish_until_stalled(server, stalled_session_id):
    """Deliver events until the stalled session is closed; how many were delivered."""
    delivery, hub = server.chat.delivery, server.chat.hub
    for n in range(MAX_EVENTS):
        delivery.deliver(ROOM, b"%06d" % n + BODY)
        gevent.sleep(0)  # the consumer greenlet yields between records
        stalled = hub.get(stalled_session_id)
        if stalled is None or stalled.state != OPEN:
            return n + 1
    raise AssertionError("the stalled subscriber was never dropped")


def test_stalled_subscriber_is_dropped_while_the_other_gets_everything(server, application, token_for):
    tiny_buffer = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
    stalled, stalled_id = subscribed_client(server, token_for(2), sockopt=tiny_buffer)
    healthy, healthy_id = subscribed_client(server, token_for(1))
    with contextlib.closing(stalled), contextlib.closing(healthy):
        received = []
        reader = gevent.spawn(read_messages, healthy, MAX_EVENTS, received)
        delivered = publish_until_stalled(server, stalled_id)
        # After the drop, fan-out reaches only the healthy subscriber.
        assert server.chat.delivery.deliver(ROOM, b"%06d" % delivered + BODY) == 1
        gevent.wait([reader], timeout=WAIT)
        reader.kill()
        assert [body[:6] for body in received] == [b"%06d" % n for n in range(delivered + 1)]
        application.wait_disconnected(stalled_id, server.chat.hub.close_grace_s + WAIT)
        subscribers = server.chat.hub.registry.subscribers(ROOM)
        assert [session.session_id for session, _ in subscribers] == [healthy_id]


def test_a_slow_reader_that_catches_up_sees_slow_consumer_error(server, application, token_for):
    slow, slow_id = subscribed_client(server, token_for(3), sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    with contextlib.closing(slow):
        publish_until_stalled(server, slow_id)
        # It reads again within the grace period: the backlog was dropped, the ERROR was kept.
        frames = []
        with contextlib.suppress(ConnectionError):
            while True:
                frames.append(slow.receive_frame(WAIT))
        assert frames[-1].command == "ERROR"
        assert frames[-1].header("message") == "slow consumer"
        assert len([f for f in frames if f.command == "MESSAGE"]) < MAX_EVENTS
    application.wait_disconnected(slow_id, WAIT)
