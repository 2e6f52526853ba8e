"""FanoutDelivery (app/stomp/fanout.py): frames gathered per session, handed over in one batch when
the delivering greenlet yields, in delivery order; a full outbox closes only its session."""

import gevent

from app.stomp.acks import AckLedger
from app.stomp.fanout import FanoutDelivery
from app.stomp.registry import SubscriptionRegistry
from app.stomp.resume import ResumeGate
from app.stomp.outbox import Outbox


class FakeSession:
    """What fan-out touches of a Session: version, the subscription-bytes cache, acks, gates, outbox, close."""

    def __init__(self, name, max_frames=100):
        self.session_id = name
        self.version = "1.2"
        self.user_id = 0
        self.subscription_bytes = {}
        self.acks = AckLedger(lambda sub: self.subscription_bytes.pop(sub, None))
        self.gates = {}
        self.outbox = RecordingOutbox(max_frames)
        self.closed_slow = False
        self.closed_undeliverable = False

    def close_slow_consumer(self):
        self.closed_slow = True

    def close_undeliverable(self):
        self.closed_undeliverable = True


class RecordingOutbox(Outbox):
    def __init__(self, max_frames):
        super().__init__(max_frames)
        self.batches = []

    def offer_many(self, frames):
        self.batches.append(len(frames))
        return super().offer_many(frames)


def messages(outbox):
    """(destination, subscription, body) of each queued MESSAGE frame (no escapes occur here)."""
    parsed = []
    for item in outbox.take(1000):
        head, body = item.split(b"\n\n", 1)
        command, *lines = head.decode().split("\n")
        assert command == "MESSAGE" and body.endswith(b"\x00")
        headers = dict(line.split(":", 1) for line in lines)
        parsed.append((headers["destination"], headers["subscription"], body[:-1]))
    return parsed


def setup():
    registry = SubscriptionRegistry()
    return registry, FanoutDelivery(registry)


def test_frames_are_gathered_until_the_greenlet_yields_then_handed_over_once_per_session():
    alice, bob = FakeSession("a"), FakeSession("b")
    registry, delivery = setup()
    registry.add(alice, "s1", "/topic/direct/1")
    registry.add(bob, "s2", "/topic/direct/1")
    registry.add(alice, "s3", "/topic/community/9")
    assert delivery.deliver("/topic/direct/1", b'{"n":1}') == 2
    assert delivery.deliver("/topic/community/9", b'{"n":2}') == 1
    assert delivery.deliver("/topic/direct/1", b'{"n":3}') == 2
    assert len(alice.outbox) == 0  # nothing handed over while the consumer still runs
    gevent.sleep(0)
    assert alice.outbox.batches == [3] and bob.outbox.batches == [2]
    assert messages(alice.outbox) == [("/topic/direct/1", "s1", b'{"n":1}'), ("/topic/community/9", "s3", b'{"n":2}'),
                                      ("/topic/direct/1", "s1", b'{"n":3}')]
    assert [body for _, _, body in messages(bob.outbox)] == [b'{"n":1}', b'{"n":3}']


def test_a_destination_nobody_holds_costs_nothing():
    registry, delivery = setup()
    assert delivery.deliver("/topic/direct/404", b"{}") == 0
    delivery.flush()


def test_a_full_outbox_closes_that_session_only():
    slow, fine = FakeSession("slow", max_frames=2), FakeSession("fine")
    registry, delivery = setup()
    registry.add(slow, "s", "/topic/direct/1")
    registry.add(fine, "s", "/topic/direct/1")
    for n in range(3):
        delivery.deliver("/topic/direct/1", b"%d" % n)
    gevent.sleep(0)
    gevent.sleep(0)  # the close runs in a greenlet of its own
    assert slow.closed_slow and len(slow.outbox) == 0  # all or nothing: none queued
    assert not fine.closed_slow and len(messages(fine.outbox)) == 3


def test_a_subscription_whose_frame_cannot_be_built_closes_only_its_session():
    """A STOMP 1.0 id with a raw CR cannot be written; the subscribers after it still get theirs."""
    alice, broken, bob = FakeSession("a"), FakeSession("broken"), FakeSession("b")
    broken.version = "1.0"
    registry, delivery = setup()
    registry.add(alice, "s1", "/topic/direct/1")
    registry.add(broken, "bad\rid", "/topic/direct/1")
    registry.add(bob, "s2", "/topic/direct/1")
    delivery.deliver("/topic/direct/1", b'{"n":1}')
    delivery.deliver("/topic/direct/1", b'{"n":2}')
    gevent.sleep(0)
    gevent.sleep(0)
    assert [body for _, _, body in messages(alice.outbox)] == [b'{"n":1}', b'{"n":2}']
    assert [body for _, _, body in messages(bob.outbox)] == [b'{"n":1}', b'{"n":2}']
    assert broken.closed_undeliverable and len(broken.outbox) == 0



def test_a_resumed_subscription_gets_live_frames_after_its_replay_and_never_one_it_has():
    alice, bob = FakeSession("a"), FakeSession("b")
    registry, delivery = setup()
    registry.add(alice, "s1", "/topic/direct/1")
    registry.add(bob, "s2", "/topic/direct/1")
    gate = alice.gates["s1"] = ResumeGate(3)  # alice has everything up to 3
    for n in (5, 6):  # published while alice's replay is being read
        delivery.deliver("/topic/direct/1", b'{"n":%d}' % n, n)
    gevent.sleep(0)
    assert len(alice.outbox) == 0 and len(messages(bob.outbox)) == 2
    held = gate.open({4, 5})  # the replay carried 4 and 5
    assert [frame.split(b"\n\n", 1)[1] for frame in held] == [b'{"n":6}\x00']
    delivery.deliver("/topic/direct/1", b'{"n":4}', 4)  # its record, late: a repeat
    delivery.deliver("/topic/direct/1", b'{"n":2}', 2)  # published again after a restart
    delivery.deliver("/topic/direct/1", b'{"n":7}', 7)
    gevent.sleep(0)
    assert [body for _, _, body in messages(alice.outbox)] == [b'{"n":7}']
    assert [body for _, _, body in messages(bob.outbox)] == [b'{"n":4}', b'{"n":2}', b'{"n":7}']


def headers_of(frame):
    head = frame.split(b"\n\n", 1)[0].decode().split("\n")
    return [tuple(line.split(":", 1)) for line in head[1:]]


def test_only_a_client_ack_subscription_gets_ack_headers_each_one_owed():
    """STOMP 1.2 "MESSAGE": an ack header on client and client-individual subscriptions only."""
    alice = FakeSession("a")
    registry, delivery = setup()
    registry.add(alice, "auto-sub", "/topic/direct/7")
    registry.add(alice, "acked", "/topic/direct/7")
    alice.acks.subscribe("acked", "client-individual")
    for n in range(2):
        delivery.deliver("/topic/direct/7", b"m%d" % n)
    delivery.flush()
    frames = alice.outbox.take(10)
    by_subscription = {}
    for frame in frames:
        headers = dict(headers_of(frame))
        by_subscription.setdefault(headers["subscription"], []).append(headers)
    assert all("ack" not in headers for headers in by_subscription["auto-sub"])
    acks = [headers["ack"] for headers in by_subscription["acked"]]
    assert len(set(acks)) == 2 and len(alice.acks) == 2
    assert [name for name, _ in headers_of(frames[1])][:4] == ["destination", "content-type", "subscription", "ack"]
    assert all(alice.acks.settle(ack) for ack in acks) and len(alice.acks) == 0
    assert set(alice.subscription_bytes) == {"auto-sub"}  # client-ack bytes are never kept


def test_a_subscription_id_reused_for_client_ack_after_auto_gets_its_ack_header():
    alice = FakeSession("a")
    registry, delivery = setup()
    registry.add(alice, "s", "/topic/direct/7")
    delivery.deliver("/topic/direct/7", b"first")
    registry.remove(alice, "s")
    registry.add(alice, "s", "/topic/direct/7")
    alice.acks.subscribe("s", "client")
    delivery.deliver("/topic/direct/7", b"second")
    delivery.flush()
    first, second = alice.outbox.take(10)
    assert "ack" not in dict(headers_of(first)) and "ack" in dict(headers_of(second))


def test_an_audience_limits_an_event_to_its_users_and_none_means_everyone():
    alice, bob = FakeSession("a"), FakeSession("b")
    alice.user_id, bob.user_id = 5, 9
    registry, delivery = setup()
    registry.add(alice, "s", "/topic/group/12")
    registry.add(bob, "s", "/topic/group/12")
    assert delivery.deliver("/topic/group/12", b"for 5 only", audience=frozenset({5})) == 1
    assert delivery.deliver("/topic/group/12", b"nobody", audience=frozenset()) == 0
    assert delivery.deliver("/topic/group/12", b"everyone") == 2
    delivery.flush()
    assert [body for _, _, body in messages(alice.outbox)] == [b"for 5 only", b"everyone"]
    assert [body for _, _, body in messages(bob.outbox)] == [b"everyone"]


def test_real_sessions_get_frames_in_the_version_each_negotiated():
    """Session.version is the handler's, copied when CONNECT succeeds: "1.2" before, then the
    negotiated one, which decides how fan-out escapes each session's headers (1.0: not at all)."""
    from app.auth import TokenVerifier, mint_token
    from app.settings import Settings
    from app.stomp.session import SessionHub
    from tests.support.chat import RecordingApplication

    settings = Settings.from_env({})
    registry = SubscriptionRegistry()
    hub = SessionHub(settings, RecordingApplication(), TokenVerifier(settings.jwt_secret), registry, "node-1")
    sessions = {version: hub.open_session(f"s-{version}", "websocket") for version in ("1.0", "1.2")}
    token = mint_token(settings.jwt_secret, 5)
    try:
        for version, session in sessions.items():
            session.start()
            assert session.version == "1.2"
            session.receive_data(f"CONNECT\naccept-version:{version}\naccess-token:{token}\n\n\x00".encode())
            assert session.version == version
            assert session.outbox.take(10)[0].startswith(b"CONNECTED\n")
            registry.add(session, "s:1", "/topic/room.1")
        delivery = FanoutDelivery(registry)
        delivery.deliver("/topic/room.1", b"hi")
        delivery.flush()
        [old] = sessions["1.0"].outbox.take(10)
        [new] = sessions["1.2"].outbox.take(10)
        assert b"\nsubscription:s:1\n" in old and b"\nsubscription:s\\c1\n" in new
    finally:
        for session in sessions.values():
            session.finish()
