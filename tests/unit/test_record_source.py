"""RecordSource's partition assignment, over a fake kafka-python consumer.

The embedded broker cannot add partitions to a topic (no CreatePartitions), so how a
source picks up partitions that appear later is checked here; reading real records is in
tests/integration/test_kafka_bus.py.
"""

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndTimestamp
from kafka.errors import KafkaConnectionError

from app.backends import kafka_bus
from app.backends.kafka_bus import RecordSource, StoredRecord
from app.errors import BackendUnavailable
from app.settings import Settings


class FakeFetcher:
    """kafka-python's fetcher as far as the source uses it: its own copy of the config."""

    def __init__(self, config):
        self.config = {"fetch_max_wait_ms": config["fetch_max_wait_ms"]}


class FakeConsumer:
    """Partitions per topic that a test can change; records every call that matters."""

    def __init__(self, partitions, **config):
        self.config = config
        self._fetcher = FakeFetcher(config)
        self.partitions = partitions
        self.assigned: list[TopicPartition] = []
        self.from_beginning: set[TopicPartition] = set()
        self.to_end: set[TopicPartition] = set()
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}
        self.stamps: dict[TopicPartition, dict[int, int]] = {}
        self.positioned: list[TopicPartition] = []
        self.polls = 0
        self.fail_poll = False
        self.batches: list[dict] = []  # what the next polls return, then nothing
        self.waits: list[int] = []  # the fetch wait in force at each poll

    def partitions_for_topic(self, topic):
        return set(self.partitions.get(topic, ()))

    def assign(self, partitions):
        self.assigned = list(partitions)

    def seek_to_beginning(self, *partitions):
        self.from_beginning.update(partitions)
        for partition in partitions:
            self.positions[partition] = 0

    def seek_to_end(self, *partitions):
        self.to_end.update(partitions)

    def seek(self, partition, offset):
        self.positions[partition] = offset

    def committed(self, partition):
        return self.committed_offsets.get(partition)

    def end_offsets(self, partitions):
        return {partition: self.ends.get(partition, 0) for partition in partitions}

    def beginning_offsets(self, partitions):
        return {partition: min(self.stamps.get(partition, {0: 0})) for partition in partitions}

    def offsets_for_times(self, targets):
        """The first offset stamped at or after each target, as ``self.stamps`` (offset -> ms) say."""
        found = {}
        for partition, target in targets.items():
            hits = sorted(offset for offset, stamp in self.stamps.get(partition, {}).items() if stamp >= target)
            found[partition] = OffsetAndTimestamp(hits[0], self.stamps[partition][hits[0]], 0) if hits else None
        return found

    def position(self, partition):
        self.positioned.append(partition)
        return self.positions.get(partition, 0)

    def poll(self, timeout_ms, max_records):
        self.polls += 1
        self.waits.append(self._fetcher.config["fetch_max_wait_ms"])
        if self.fail_poll:
            raise KafkaConnectionError("broker went away")
        return self.batches.pop(0) if self.batches else {}

    def close(self, autocommit):
        pass


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(kafka_bus.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(kafka_bus.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return now


def open_source(partitions, topics=("t1", "t2"), consumer_class=None, resume_from=None, read_record=None):
    consumers = []

    def open_consumer(**config):
        consumers.append((consumer_class or FakeConsumer)(partitions, **config))
        return consumers[0]

    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9092", kafka_fetch_max_wait_ms=20,
                        kafka_idle_fetch_max_wait_ms=100)
    source = RecordSource(settings, list(topics), "g-node-1-abcd", open_consumer=open_consumer,
                          create_missing=lambda settings, names: CREATED.extend(names) or [],
                          resume_from=resume_from, read_record=read_record or Log({}))
    return source, consumers[0]


class Log:
    """``read_record`` over what a test says each log holds: {(partition, offset): StoredRecord}."""

    def __init__(self, records):
        self.records = records
        self.asked: list[tuple[TopicPartition, int]] = []

    def __call__(self, partition, offset):
        self.asked.append((partition, offset))
        return self.records.get((partition, offset))


CREATED: list[str] = []  # topics the sources asked to create


def tp(topic, partition):
    return TopicPartition(topic, partition)


def test_every_partition_is_assigned_and_positioned_at_once(clock):
    source, consumer = open_source({"t1": {0, 1}, "t2": {0}})
    assert source.ready
    assert set(consumer.assigned) == {tp("t1", 0), tp("t1", 1), tp("t2", 0)}
    assert set(consumer.positioned) == set(consumer.assigned)
    assert consumer.from_beginning == set()  # committed or latest offsets, not the whole log
    assert consumer.config["group_id"] == "g-node-1-abcd"
    assert consumer.to_end == set(consumer.assigned)  # a fresh source starts at the end of every partition


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


class ConsumerRecord:
    def __init__(self, topic, value, offset=0, timestamp=0):
        self.topic, self.key, self.value, self.offset, self.timestamp = topic, b"7", value, offset, timestamp


def test_fetches_wait_longer_after_a_quiet_spell_and_short_again_once_a_record_comes(clock):
    source, consumer = open_source({"t1": {0}, "t2": {0}})
    assert consumer.config["fetch_max_wait_ms"] == 20
    source.poll(10)
    clock[0] += kafka_bus.IDLE_AFTER_S - 0.1
    source.poll(10)
    assert consumer.waits == [20, 20]
    clock[0] += 0.1
    source.poll(10)
    source.poll(10)
    assert consumer.waits[2:] == [100, 100]
    assert source.fetch_wait_ms == 100
    consumer.batches.append({tp("t1", 0): [ConsumerRecord("t1", b"{}")]})
    assert [r.value for r in source.poll(10)] == [b"{}"]  # fetched while the wait was long
    source.poll(10)
    assert consumer.waits[4:] == [100, 20]
    assert source.fetch_wait_ms == 20


def test_records_arriving_steadily_keep_the_short_wait(clock):
    source, consumer = open_source({"t1": {0}, "t2": {0}})
    for _ in range(10):
        clock[0] += kafka_bus.IDLE_AFTER_S / 2
        consumer.batches.append({tp("t1", 0): [ConsumerRecord("t1", b"{}")]})
        source.poll(10)
    assert set(consumer.waits) == {20}


def test_a_client_without_a_fetcher_config_keeps_its_wait_and_still_polls(clock, caplog):
    class Bare(FakeConsumer):
        def __init__(self, partitions, **config):
            super().__init__(partitions, **config)
            del self._fetcher

        def poll(self, timeout_ms, max_records):
            self.polls += 1
            return {}

    source, consumer = open_source({"t1": {0}, "t2": {0}}, consumer_class=Bare)
    clock[0] += kafka_bus.IDLE_AFTER_S
    for _ in range(3):
        assert source.poll(10) == []
    assert consumer.polls == 3
    assert source.fetch_wait_ms == 20
    assert sum("fetch wait stays 20 ms" in r.getMessage() for r in caplog.records) == 1


def test_fetch_pace_switches_on_the_idle_time_and_never_waits_less_than_active():
    now = [0.0]
    pace = kafka_bus.FetchPace(20, 100, idle_after_s=2.0, clock=lambda: now[0])
    assert pace.wait_ms() == 20
    now[0] = 1.99
    assert pace.wait_ms() == 20
    now[0] = 2.0
    assert pace.wait_ms() == 100
    pace.saw_records()
    assert pace.wait_ms() == 20
    assert kafka_bus.FetchPace(50, 10).idle_ms == 50  # a shorter idle wait would poll more, not less


def test_a_fresh_source_starts_at_the_end_and_a_reopened_one_where_its_group_committed(clock):
    source, consumer = open_source({"t1": {0, 1}, "t2": set()}, topics=("t1",))
    assert consumer.to_end == {tp("t1", 0), tp("t1", 1)}

    class Resuming(FakeConsumer):
        def committed(self, partition):
            return 42 if partition == tp("t1", 0) else None

    source, consumer = open_source({"t1": {0, 1}}, topics=("t1",), consumer_class=Resuming)
    assert consumer.to_end == {tp("t1", 1)}


def test_a_log_that_went_backwards_is_read_again_from_its_start(clock):
    """A broker that lost its log: positions past the new end would read nothing, silently."""
    source, consumer = open_source({"t1": {0, 1}}, topics=("t1",))
    consumer.positions = {tp("t1", 0): 500, tp("t1", 1): 7}
    consumer.ends = {tp("t1", 0): 3, tp("t1", 1): 9}
    source.poll(10)
    assert consumer.from_beginning == set()  # not yet: the check runs every LOG_CHECK_S
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == set()  # past the end once: maybe the broker's offsets trail
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == {tp("t1", 0)} and source.rewinds == 1
    assert consumer.positions[tp("t1", 1)] == 7


def test_a_position_past_the_end_only_for_a_moment_is_not_rewound(clock):
    source, consumer = open_source({"t1": {0}}, topics=("t1",))
    consumer.positions, consumer.ends = {tp("t1", 0): 390}, {tp("t1", 0): 389}
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    consumer.ends = {tp("t1", 0): 391}
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    consumer.ends = {tp("t1", 0): 389}
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == set() and source.rewinds == 0


def test_the_source_never_asks_the_broker_to_create_topics(clock):
    source, consumer = open_source({"t1": {0}}, topics=("t1",))
    assert consumer.config["allow_auto_create_topics"] is False
    assert consumer.config["auto_offset_reset"] == "earliest"


def test_a_missing_topic_is_created_and_not_asked_for_again_at_once(clock):
    CREATED.clear()
    source, consumer = open_source({"t1": {0}}, topics=("t1", "t2"))
    assert CREATED == ["t2"]
    source.poll(10)
    assert CREATED == ["t2"]  # not again before TOPIC_CREATION_RETRY_S
    clock[0] += kafka_bus.TOPIC_CREATION_RETRY_S
    source.poll(10)
    assert CREATED == ["t2", "t2"]


def test_a_replacement_source_goes_on_where_the_failed_one_stopped(clock):
    """Not at the end and not at the group's commit: a broker that lost its log lost those too."""
    source, consumer = open_source({"t1": {0, 1}}, topics=("t1",),
                                   resume_from={("t1", 0): kafka_bus.ReadPosition(120, 10_000)})
    assert consumer.positions[tp("t1", 0)] == 120 and consumer.to_end == {tp("t1", 1)}
    assert source.read_positions == {("t1", 0): (120, 10_000)}


def test_a_replacement_source_notices_a_log_that_started_again_while_it_was_away(clock):
    """The failed source's last record time comes along: a log regrown past the offset is caught."""
    source, consumer = open_source({"t1": {0}}, topics=("t1",),
                                   resume_from={("t1", 0): kafka_bus.ReadPosition(60, 10_000)})
    consumer.ends = {tp("t1", 0): 90}
    consumer.stamps = {tp("t1", 0): {n: 20_000 + n for n in range(90)}}
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == {tp("t1", 0)} and source.rewinds == 1


def test_a_log_that_started_again_and_grew_past_the_position_is_read_again_from_its_start(clock):
    """The broker lost its log and took records again: by now the new end is past the old position."""
    source, consumer = open_source({"t1": {0}}, topics=("t1",))
    consumer.batches.append({tp("t1", 0): [ConsumerRecord("t1", b"{}", offset=59, timestamp=10_000)]})
    consumer.positions = {tp("t1", 0): 60}
    source.poll(10)
    consumer.ends = {tp("t1", 0): 80}
    consumer.stamps = {tp("t1", 0): {n: 14_000 + n for n in range(80)}}  # all written after a 4 s gap
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == {tp("t1", 0)} and source.rewinds == 1


def test_records_later_than_the_position_are_not_a_restart(clock):
    source, consumer = open_source({"t1": {0}}, topics=("t1",))
    consumer.batches.append({tp("t1", 0): [ConsumerRecord("t1", b"{}", offset=59, timestamp=10_000)]})
    consumer.positions = {tp("t1", 0): 60}
    source.poll(10)
    consumer.ends = {tp("t1", 0): 80}
    consumer.stamps = {tp("t1", 0): {n: 10_000 - 59 + n + (5_000 if n >= 60 else 0) for n in range(80)}}
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == set() and source.rewinds == 0


def test_a_retried_batch_stamped_earlier_than_its_neighbours_is_not_a_restart(clock):
    """Two producers: B's batch (later stamp) lands before A's retried one (earlier stamp)."""
    source, consumer = open_source({"t1": {0}}, topics=("t1",))
    consumer.batches.append({tp("t1", 0): [ConsumerRecord("t1", b"{}", offset=103, timestamp=10_000)]})
    consumer.positions = {tp("t1", 0): 104}
    source.poll(10)
    consumer.ends = {tp("t1", 0): 104}
    stamps = {n: 5_000 + n for n in range(100)}
    stamps.update({100: 11_500, 101: 10_000, 102: 10_000, 103: 10_000})
    consumer.stamps = {tp("t1", 0): stamps}
    clock[0] += kafka_bus.LOG_CHECK_S
    source.poll(10)
    assert consumer.from_beginning == set() and source.rewinds == 0


def past_the_end_after_a_read(clock, holds):
    """A source read offset 103 (time 10,000, key b"7"); the broker then says the log ends at 102."""
    log = Log(holds)
    source, consumer = open_source({"t1": {0}}, topics=("t1",), read_record=log)
    consumer.batches.append({tp("t1", 0): [ConsumerRecord("t1", b"{}", offset=103, timestamp=10_000)]})
    consumer.positions = {tp("t1", 0): 104}
    source.poll(10)
    consumer.ends = {tp("t1", 0): 102}
    for _ in range(3):
        clock[0] += kafka_bus.LOG_CHECK_S
        source.poll(10)
    return source, consumer, log


def test_a_log_that_ends_before_the_position_but_holds_the_last_record_read_is_not_rewound(clock):
    """The embedded broker's end trails a batch of several records: the log is whole."""
    source, consumer, log = past_the_end_after_a_read(clock, {(tp("t1", 0), 103): StoredRecord(10_000, b"7")})
    assert consumer.from_beginning == set() and source.rewinds == 0
    assert log.asked == [(tp("t1", 0), 103)]  # asked once while the position stays


def test_a_log_holding_another_record_where_the_last_one_read_was_is_read_again(clock):
    source, consumer, log = past_the_end_after_a_read(clock, {(tp("t1", 0), 103): StoredRecord(14_000, b"7")})
    assert consumer.from_beginning == {tp("t1", 0)} and source.rewinds == 1


def test_a_log_holding_another_key_where_the_last_one_read_was_is_read_again(clock):
    source, consumer, log = past_the_end_after_a_read(clock, {(tp("t1", 0), 103): StoredRecord(10_000, b"8")})
    assert consumer.from_beginning == {tp("t1", 0)} and source.rewinds == 1


def test_a_log_without_the_last_record_read_is_read_again(clock):
    source, consumer, log = past_the_end_after_a_read(clock, {})
    assert consumer.from_beginning == {tp("t1", 0)} and source.rewinds == 1
