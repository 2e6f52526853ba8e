"""RecordSource's partition assignment, over a fake kafka-python consumer.

The embedded broker cannot add partitions to a topic (no CreatePartitions), so how a
source picks up partitions that appear later is checked here; reading real records is in
tests/integration/test_kafka_bus.py.
"""

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError

from app.backends import kafka_bus
from app.backends.kafka_bus import RecordSource
from app.errors import BackendUnavailable
from app.settings import Settings


class FakeConsumer:
    """Partitions per topic that a test can change; records every call that matters."""

    def __init__(self, partitions, **config):
        self.config = config
        self.partitions = partitions
        self.assigned: list[TopicPartition] = []
        self.from_beginning: set[TopicPartition] = set()
        self.positioned: list[TopicPartition] = []
        self.polls = 0
        self.fail_poll = False

    def partitions_for_topic(self, topic):
        return set(self.partitions.get(topic, ()))

    def assign(self, partitions):
        self.assigned = list(partitions)

    def seek_to_beginning(self, *partitions):
        self.from_beginning.update(partitions)

    def position(self, partition):
        self.positioned.append(partition)
        return 0

    def poll(self, timeout_ms, max_records):
        self.polls += 1
        if self.fail_poll:
            raise KafkaConnectionError("broker went away")
        return {}

    def close(self, autocommit):
        pass


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(kafka_bus.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(kafka_bus.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return now


def open_source(partitions, topics=("t1", "t2")):
    consumers = []

    def open_consumer(**config):
        consumers.append(FakeConsumer(partitions, **config))
        return consumers[0]

    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092")
    source = RecordSource(settings, list(topics), "g-node-1-abcd", open_consumer=open_consumer)
    return source, consumers[0]


def tp(topic, partition):
    return TopicPartition(topic, partition)


def test_every_partition_is_assigned_and_positioned_at_once(clock):
    source, consumer = open_source({"t1": {0, 1}, "t2": {0}})
    assert source.ready
    assert set(consumer.assigned) == {tp("t1", 0), tp("t1", 1), tp("t2", 0)}
    assert set(consumer.positioned) == set(consumer.assigned)
    assert consumer.from_beginning == set()  # committed or latest offsets, not the whole log
    assert consumer.config["group_id"] == "g-node-1-abcd"
    assert consumer.config["auto_offset_reset"] == "latest"


def test_a_partition_added_later_is_read_from_its_beginning(clock):
    partitions = {"t1": {0, 1}, "t2": {0}}
    source, consumer = open_source(partitions)
    partitions["t1"] = {0, 1, 2}
    source.poll(10)
    assert tp("t1", 2) not in consumer.assigned  # not looked for again before PARTITION_CHECK_S
    clock[0] += kafka_bus.PARTITION_CHECK_S
    source.poll(10)
    assert set(consumer.assigned) == {tp("t1", 0), tp("t1", 1), tp("t1", 2), tp("t2", 0)}
    assert consumer.from_beginning == {tp("t1", 2)}
    assert consumer.positioned.count(tp("t1", 0)) == 1  # the others keep their positions


def test_a_missing_topic_keeps_the_source_unready_until_it_exists(clock):
    partitions = {"t1": {0}}
    source, consumer = open_source(partitions)
    assert not source.ready
    partitions["t2"] = {0, 1}
    clock[0] += kafka_bus.PARTITION_CHECK_S
    source.poll(10)
    assert source.ready
    assert consumer.from_beginning == {tp("t2", 0), tp("t2", 1)}  # created after the source started


def test_with_no_topic_at_all_poll_waits_out_its_timeout_without_polling_kafka(clock):
    source, consumer = open_source({})
    started = clock[0]
    assert source.poll(250) == []
    assert clock[0] == started + 0.25
    assert consumer.polls == 0
    assert not source.ready


def test_a_client_failure_becomes_backend_unavailable(clock):
    source, consumer = open_source({"t1": {0}, "t2": {0}})
    consumer.fail_poll = True
    with pytest.raises(BackendUnavailable):
        source.poll(10)


def test_a_failed_first_assignment_closes_the_client(clock):
    closed = []

    class Broken(FakeConsumer):
        def partitions_for_topic(self, topic):
            raise KafkaConnectionError("no broker")

        def close(self, autocommit):
            closed.append(autocommit)

    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092")
    with pytest.raises(BackendUnavailable):
        RecordSource(settings, ["t1"], "g", open_consumer=lambda **config: Broken({}, **config))
    assert closed == [False]
