"""The outbox relay (app/chat/relay.py): stored events reach the broker in order, are retried
until acknowledged and never dropped, a sweep takes over what others left, recorded changes are
published only if they happened, and a full backlog refuses new work.

The broker and the outbox are fakes; greenlets run for real, and nothing waits on time: a
step that must be blocked is checked after yielding to every other greenlet.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import gevent
import gevent.event
import pytest

from app.chat import events
from app.chat.model import ChatMessage, Claimed, PendingChange
from app.chat.relay import Relay
from app.errors import BackendUnavailable, BacklogFull
from tests.conftest import MS
from tests.fakes import memory_room_log

WAIT = 5000 * MS
T0 = datetime(2026, 12, 5, 12, 0, 0)


def settle():
    for _ in range(10):
        gevent.sleep(0)


def wait_until(condition):
    with gevent.Timeout(WAIT, AssertionError("condition not reached")):
        while not condition():
            gevent.sleep(0.001)


class Broker:
    """An EventBus whose acknowledgements the test controls: up (ack at once) or down (fail)."""

    def __init__(self):
        self.up = True
        self.records: list[tuple[str, str, bytes]] = []
        self.refused = 0

    def publish(self, topic, key, value):
        self.publish_nowait(topic, key, value).wait()

    def publish_nowait(self, topic, key, value):
        return _Ack(self, (topic, key, value))


class _Ack:
    def __init__(self, broker, record):
        self.broker, self.record = broker, record

    def wait(self):
        if not self.broker.up:
            self.broker.refused += 1
            raise BackendUnavailable()
        self.broker.records.append(self.record)


class FakeOutbox:
    """Unpublished marks by ref, a claimable set for the sweep, and the changes recorded."""

    def __init__(self):
        self.marked_published: list[tuple[str, str]] = []
        self.stale = Claimed(messages=[], changes=[])
        self.dropped: list[str] = []
        self.claims = 0
        self.nonces_forgotten_before: list[datetime] = []

    def add_change(self, change):
        return change

    def drop_change(self, change_id):
        self.dropped.append(change_id)

    def published(self, refs):
        self.marked_published += list(refs)

    def claim_stale(self, older_than, owner, limit):
        self.claims += 1
        claimed, self.stale = self.stale, Claimed(messages=[], changes=[])
        return claimed

    def forget_nonces(self, older_than):
        self.nonces_forgotten_before.append(older_than)
        return 0


class Messages:
    def __init__(self, *messages):
        self.by_id = {m.id: m for m in messages}

    def get(self, kind, message_id):
        return self.by_id.get(message_id)


def message(n, room=7, **fields):
    return ChatMessage(kind="direct", channel_id=room, user_id=5, content=f"m{n}", created_at=T0,
                       id=f"{n:024x}", **fields)


@pytest.fixture
def broker():
    return Broker()


@pytest.fixture
def outbox():
    return FakeOutbox()


def make_relay(broker, outbox, messages=None, **options):
    defaults = dict(max_backlog=100, stale_s=15, retention_s=86400, sweep_interval_s=0.01, now=lambda: T0,
                    room_log=memory_room_log(), mark_after_s=0)  # marks at once unless a test says otherwise
    return Relay(bus=broker, outbox=outbox, messages=messages or Messages(), **{**defaults, **options})


def stored(relay, message):
    relay.message_stored(message, events.new_message_record(message))


def contents(broker):
    return [value for _, _, value in broker.records]


def test_stored_messages_are_published_in_order_and_marked(broker, outbox):
    relay = make_relay(broker, outbox)
    for n in range(3):
        stored(relay, message(n))
    wait_until(lambda: relay.backlog == 0)
    assert contents(broker) == [events.message_record(message(n)) for n in range(3)]
    wait_until(lambda: outbox.marked_published == [("direct", message(n).id) for n in range(3)])


def test_each_kind_of_message_goes_to_its_topic(broker, outbox):
    relay = make_relay(broker, outbox)
    stored(relay, message(1))
    stored(relay, message(2, type="reply", parent_id="p" * 24))
    stored(relay, message(3, type="image"))
    wait_until(lambda: relay.backlog == 0)
    assert [topic for topic, _, _ in broker.records] == ["chat-server-topic", "etc-direct-topic", "file-topic"]
    assert {key for _, key, _ in broker.records} == {"7"}


def test_while_the_broker_is_down_nothing_is_dropped_and_order_is_kept(broker, outbox):
    broker.up = False
    relay = make_relay(broker, outbox)
    for n in range(5):
        stored(relay, message(n))
    wait_until(lambda: broker.refused >= 10)  # retried, more than once
    assert relay.backlog == 5 and outbox.marked_published == []
    broker.up = True
    wait_until(lambda: relay.backlog == 0)
    assert contents(broker) == [events.message_record(message(n)) for n in range(5)]
    wait_until(lambda: len(outbox.marked_published) == 5)


def test_a_full_backlog_refuses_new_work_and_frees_up_when_the_broker_is_back(broker, outbox):
    broker.up = False
    relay = make_relay(broker, outbox, max_backlog=2)
    relay.check_capacity()
    stored(relay, message(1))
    stored(relay, message(2))
    with pytest.raises(BacklogFull) as refused:
        relay.check_capacity()
    assert refused.value.message == "delivery backlog full, try again later"
    broker.up = True
    wait_until(lambda: relay.backlog == 0)
    relay.check_capacity()


def test_an_event_queued_twice_is_published_once(broker, outbox):
    broker.up = False
    relay = make_relay(broker, outbox)
    stored(relay, message(1))
    stored(relay, message(1))
    assert relay.backlog == 1
    broker.up = True
    wait_until(lambda: relay.backlog == 0)
    assert len(broker.records) == 1


def test_the_sweep_publishes_what_another_worker_left_and_skips_what_it_holds(broker, outbox):
    broker.up = False
    relay = make_relay(broker, outbox)
    stored(relay, message(1))
    outbox.stale = Claimed(messages=[message(1), message(2), message(3)], changes=[])
    assert relay.sweep() == 2
    broker.up = True
    wait_until(lambda: relay.backlog == 0)
    assert contents(broker) == [events.message_record(message(n)) for n in (1, 2, 3)]


def test_the_sweep_asks_for_events_older_than_the_stale_time(broker, outbox):
    asked = []
    outbox.claim_stale = lambda older_than, owner, limit: asked.append(older_than) or Claimed([], [])
    make_relay(broker, outbox, stale_s=15).sweep()
    assert asked == [T0 - timedelta(seconds=15)]


def test_a_recorded_delete_is_published_only_if_the_message_is_gone(broker, outbox):
    gone = PendingChange("delete", "direct", 7, message(1).id, id="c1")
    never = PendingChange("delete", "direct", 7, message(2).id, id="c2")
    relay = make_relay(broker, outbox, messages=Messages(message(2)))
    outbox.stale = Claimed(messages=[], changes=[gone, never])
    assert relay.sweep() == 1
    wait_until(lambda: relay.backlog == 0)
    assert contents(broker) == [events.delete_record(7, message(1).id)]
    assert outbox.dropped == ["c2"] and outbox.marked_published == [("change", "c1")]


def test_a_recorded_edit_is_published_only_if_the_message_shows_that_very_edit(broker, outbox):
    edited_at = T0 + timedelta(seconds=3, microseconds=123456)
    made = PendingChange("modify", "direct", 7, message(1).id, content="new", edited_at=edited_at, id="c1")
    failed = PendingChange("modify", "direct", 7, message(2).id, content="x", edited_at=edited_at, id="c2")
    superseded = PendingChange("modify", "direct", 7, message(3).id, content="old", edited_at=T0, id="c3")
    stored = Messages(message(1, edited_at=edited_at.replace(microsecond=123000)), message(2),
                      message(3, edited_at=edited_at))
    relay = make_relay(broker, outbox, messages=stored)
    outbox.stale = Claimed(messages=[], changes=[made, failed, superseded])
    assert relay.sweep() == 1
    wait_until(lambda: relay.backlog == 0)
    (record,) = contents(broker)
    assert b'"type":"modify"' in record and message(1).id.encode() in record
    assert outbox.dropped == ["c2", "c3"]


def test_start_sweeps_at_once_and_stop_flushes_the_queue(broker, outbox):
    relay = make_relay(broker, outbox)
    outbox.stale = Claimed(messages=[message(9)], changes=[])
    relay.start()
    wait_until(lambda: broker.records)
    stored(relay, message(10))
    assert relay.stop(timeout_s=WAIT)
    assert contents(broker) == [events.message_record(message(n)) for n in (9, 10)]
    assert outbox.nonces_forgotten_before == [T0 - timedelta(seconds=86400)]


def test_stop_reports_what_it_could_not_publish(broker, outbox):
    broker.up = False
    relay = make_relay(broker, outbox)
    stored(relay, message(1))
    assert relay.stop(timeout_s=50 * MS) is False
    assert relay.backlog == 1


def test_failing_to_mark_published_keeps_publishing(broker, outbox):
    def refuse(refs):
        raise BackendUnavailable()

    outbox.published = refuse
    relay = make_relay(broker, outbox)
    stored(relay, message(1))
    stored(relay, message(2))
    wait_until(lambda: relay.backlog == 0)
    assert len(broker.records) == 2


def test_while_failing_it_asks_for_the_topics_to_exist(broker, outbox):
    broker.up = False
    asked = []
    relay = make_relay(broker, outbox, ensure_topics=lambda: asked.append(1))
    stored(relay, message(1))
    wait_until(lambda: asked)
    broker.up = True
    wait_until(lambda: relay.backlog == 0)


def test_an_event_queued_while_published_ones_are_being_marked_is_published_too(broker, outbox):
    """Marking yields: the publisher must not leave behind what was queued meanwhile."""
    relay = make_relay(broker, outbox)
    marked = outbox.published

    def slow_mark(refs):
        gevent.sleep(0.01)
        marked(refs)

    outbox.published = slow_mark
    stored(relay, message(1))
    wait_until(lambda: broker.records)
    stored(relay, message(2))  # very likely while message 1 is being marked
    wait_until(lambda: len(broker.records) == 2)
    wait_until(lambda: len(outbox.marked_published) == 2)
    assert relay.backlog == 0


def test_publishing_does_not_wait_for_a_mark_in_progress(broker, outbox):
    """A mark is a database call: an event queued meanwhile goes to the broker at once."""
    relay = make_relay(broker, outbox)
    marked, release = outbox.published, gevent.event.Event()
    started = []

    def stuck_mark(refs):
        started.append(list(refs))
        release.wait()
        marked(refs)

    outbox.published = stuck_mark
    stored(relay, message(1))
    wait_until(lambda: started)
    stored(relay, message(2))
    wait_until(lambda: len(broker.records) == 2)  # while message 1's mark is still under way
    assert outbox.marked_published == []
    release.set()
    assert relay.flush(timeout_s=WAIT)  # a flush also waits for the marks
    assert outbox.marked_published == [("direct", message(n).id) for n in (1, 2)]
    assert len(started) == 2  # one marker at a time: message 2 was marked after message 1


def test_one_bad_entry_costs_the_sweep_only_itself(broker, outbox):
    class Broken:
        kind, id = "direct", "f" * 24

        def __getattr__(self, name):
            raise ValueError("cannot be built")

    relay = make_relay(broker, outbox)
    outbox.stale = Claimed(messages=[Broken(), message(2)], changes=[])
    assert relay.sweep() == 1
    wait_until(lambda: relay.backlog == 0)
    assert contents(broker) == [events.message_record(message(2))]


def test_on_a_quiet_server_rounds_acknowledged_close_together_are_marked_in_one_call(broker, outbox):
    calls = []
    marked = outbox.published
    outbox.published = lambda refs: (calls.append(list(refs)), marked(refs))
    relay = make_relay(broker, outbox, mark_after_s=0.3)
    stored(relay, message(1))
    wait_until(lambda: relay.backlog == 0)
    gevent.sleep(0.05)
    stored(relay, message(2))  # a second round, while the first waits to be marked
    wait_until(lambda: len(outbox.marked_published) == 2)
    assert calls == [[("direct", message(1).id), ("direct", message(2).id)]]


def test_acknowledged_events_are_marked_without_further_traffic(broker, outbox):
    relay = make_relay(broker, outbox, mark_after_s=0.05)
    stored(relay, message(1))
    wait_until(lambda: outbox.marked_published == [("direct", message(1).id)])


def test_a_flush_marks_at_once(broker, outbox):
    relay = make_relay(broker, outbox, mark_after_s=60)
    stored(relay, message(1))
    assert relay.flush(5.0)
    wait_until(lambda: outbox.marked_published == [("direct", message(1).id)])
