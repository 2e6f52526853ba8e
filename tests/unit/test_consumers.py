"""The fan-out consumer loop with a fake record source: delivery, skipping, reconnecting."""

import gevent
import pytest

from app.chat import events
from app.chat.model import TOPICS
from app.errors import BackendUnavailable
from tests.fakes import RecordingDelivery
from tests.conftest import MS
from workers.consumers import BACKOFF_CAP_S, FanoutConsumer, backoff_delay
from workers.lifecycle import LeaseRenewer, WorkerRuntime


class Record:
    def __init__(self, topic, value, timestamp=None):
        self.topic, self.value, self.timestamp = topic, value, timestamp


class FakeSource:
    """Hands out queued batches; raises when told to; counts closes."""

    def __init__(self, batches, fail_first=0):
        self.batches = list(batches)
        self.fail_first = fail_first
        self.polls = 0
        self.closed = False
        self.ready = True
        self.read_positions = {("t", 0): (7, 1_000)}

    def poll(self, timeout_ms, max_records=500):
        self.polls += 1
        if self.polls <= self.fail_first:
            raise BackendUnavailable()
        if self.batches:
            return self.batches.pop(0)
        gevent.sleep(0.001)
        return []

    def lag(self):
        return {("t", 0): 3}

    def close(self):
        self.closed = True


def run_until(consumer, condition, timeout_s=5_000 * MS):
    consumer.start()
    try:
        with gevent.Timeout(timeout_s, AssertionError("condition not reached")):
            while not condition():
                gevent.sleep(0.001)
    finally:
        consumer.stop()


def test_backoff_grows_and_is_capped():
    assert backoff_delay(1, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, rand=lambda: 1.0) == 2.0
    assert backoff_delay(50, rand=lambda: 1.0) == BACKOFF_CAP_S
    assert backoff_delay(2, rand=lambda: 0.0) == 0.5  # jitter: between half and all of the ceiling


def test_records_become_deliveries_and_bad_ones_are_skipped():
    delivery = RecordingDelivery()
    source = FakeSource([[Record(TOPICS["direct_etc"], b"garbage"),
                          Record(TOPICS["direct_etc"], events.delete_record(17, "m1"))]])
    consumer = FanoutConsumer("direct-etc-server-group", lambda resume_from: source, delivery)
    run_until(consumer, lambda: delivery.delivered)
    assert delivery.delivered == [("/topic/direct/17", b'{"type":"delete","id":"m1"}')]
    assert consumer.skipped == 1
    assert source.closed


def test_a_failing_source_is_closed_and_reopened():
    delivery = RecordingDelivery()
    opened = []

    resumed = []

    def open_source(resume_from):
        resumed.append(resume_from)
        source = FakeSource([[Record(TOPICS["channel_etc"], events.typing_record(12, "kim"))]],
                            fail_first=1 if not opened else 0)
        opened.append(source)
        return source

    consumer = FanoutConsumer("channel-etc-server-group", open_source, delivery, sleep=lambda s: None)
    run_until(consumer, lambda: delivery.delivered)
    assert len(opened) == 2 and opened[0].closed
    assert resumed == [{}, {("t", 0): (7, 1_000)}]  # the new source goes on where the failed one stopped
    assert delivery.delivered == [("/topic/group/12", b'{"type":"typing","name":"kim"}')]


def test_readiness_follows_the_sources():
    source = FakeSource([])
    source.ready = False
    consumer = FanoutConsumer("state-group", lambda resume_from: source, RecordingDelivery())
    runtime = WorkerRuntime(consumer=consumer, lease=None)
    with pytest.raises(BackendUnavailable):
        runtime.kafka_ready()  # not started
    runtime.start()
    try:
        with gevent.Timeout(5_000 * MS):
            while consumer._source is None:
                gevent.sleep(0.001)
        with pytest.raises(BackendUnavailable, match="state-group"):
            runtime.kafka_ready()
        source.ready = True
        runtime.kafka_ready()
    finally:
        runtime.stop()
    assert source.closed


def test_lease_renewer_keeps_going_after_failures():
    calls = []

    def renew():
        calls.append(1)
        if len(calls) < 3:
            raise BackendUnavailable()

    renewer = LeaseRenewer(renew, interval_s=0.001)
    renewer.start()
    try:
        with gevent.Timeout(5_000 * MS):
            while len(calls) < 4:
                gevent.sleep(0.001)
    finally:
        renewer.stop()
    assert renewer.failures == 2
