"""The Kafka event bus and the fan-out consumers against the real (embedded) broker."""

import json
import uuid

import gevent
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from app.backends import kafka_bus
from app.backends.kafka_bus import KafkaEventBus, RecordProbe, RecordSource, StoredRecord, create_topics
from app.chat import events
from app.chat.model import TOPICS
from app.embedded import free_port
from app.errors import BackendUnavailable
from tests.fakes import RecordingDelivery
from tests.conftest import MS, make_settings
from workers.consumers import FANOUT_GROUP, FANOUT_TOPICS, FanoutConsumer, consumer_instance, group_id

READY_TIMEOUT_S = 30_000 * MS
DELIVERY_TIMEOUT_S = 10_000 * MS


def wait_until(condition, timeout_s, message):
    with gevent.Timeout(timeout_s, AssertionError(message)):
        while not condition():
            gevent.sleep(0.02)


@pytest.fixture
def topic_settings(embedded):
    settings = make_settings(embedded)
    create_topics(settings)
    return settings


@pytest.fixture
def bus(topic_settings):
    bus = KafkaEventBus(topic_settings)
    yield bus
    bus.close()


def consumer_for(settings, topics, delivery, node):
    group = group_id(FANOUT_GROUP, node)
    return FanoutConsumer(FANOUT_GROUP, lambda resume_from: RecordSource(settings, topics, group, resume_from=resume_from), delivery)


@pytest.fixture
def consumers():
    started = []

    def start(*items):
        for consumer in items:
            consumer.start()
            started.append(consumer)
        for consumer in items:
            wait_until(lambda: consumer.ready, READY_TIMEOUT_S, f"consumer {consumer.name} not ready")
        return items

    yield start
    for consumer in started:
        consumer.request_stop()  # let every loop wind down at once, then join each
    for consumer in started:
        consumer.stop()


def test_create_topics_is_idempotent(topic_settings):
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert create_topics(topic_settings, [name]) == [name]
    assert create_topics(topic_settings, [name]) == []
    assert create_topics(topic_settings) == []  # the six topics exist already


def test_every_process_receives_every_record(topic_settings, bus, consumers):
    """Two nodes (two group ids) both deliver the exact §2.7 body of one record."""
    first, second = RecordingDelivery(), RecordingDelivery()
    consumers(consumer_for(topic_settings, [TOPICS["state"]], first, "node-a-1"),
              consumer_for(topic_settings, [TOPICS["state"]], second, "node-b-2"))
    bus.publish(TOPICS["state"], "5", events.presence_record("connect", 5, ["community/3", "direct/17"]))
    for delivery in (first, second):
        wait_until(lambda: len(delivery.delivered) == 2, DELIVERY_TIMEOUT_S, "record not delivered")
        assert [d for d, _ in delivery.delivered] == ["/topic/community/3", "/topic/direct/17"]
        assert json.loads(delivery.delivered[0][1]) == {"type": "connect", "userId": "5"}


def test_one_consumer_delivers_the_records_of_every_topic(topic_settings, bus, consumers):
    """What each worker runs: one consumer over all six topics; each record keeps its room order."""
    delivery = RecordingDelivery()
    consumers(consumer_for(topic_settings, FANOUT_TOPICS, delivery, "node-e-5"))
    bus.publish(TOPICS["direct_etc"], "17", events.delete_record(17, "a"))
    bus.publish(TOPICS["channel_etc"], "12", events.typing_record(12, "ann"))
    bus.publish(TOPICS["state"], "5", events.presence_record("connect", 5, ["direct/17"]))
    bus.publish(TOPICS["direct_etc"], "17", events.delete_record(17, "b"))
    wait_until(lambda: len(delivery.delivered) == 4, DELIVERY_TIMEOUT_S, "not all delivered")
    assert sorted(d for d, _ in delivery.delivered) == ["/topic/direct/17"] * 3 + ["/topic/group/12"]
    deletes = [json.loads(body)["id"] for _, body in delivery.delivered if b'"delete"' in body]
    assert deletes == ["a", "b"]


def test_a_bad_record_is_skipped_and_the_next_one_delivered(topic_settings, bus, consumers):
    delivery = RecordingDelivery()
    (consumer,) = consumers(consumer_for(topic_settings, [TOPICS["direct_etc"]], delivery, "node-c-3"))
    bus.publish(TOPICS["direct_etc"], "17", b"not json at all")
    bus.publish(TOPICS["direct_etc"], "17", events.delete_record(17, "abc"))
    wait_until(lambda: delivery.delivered, DELIVERY_TIMEOUT_S, "good record not delivered")
    assert delivery.delivered == [("/topic/direct/17", b'{"type":"delete","id":"abc"}')]
    assert consumer.skipped == 1


def poll_until(source, count):
    polled = []
    wait_until(lambda: polled.extend(source.poll(50)) or len(polled) >= count, DELIVERY_TIMEOUT_S,
               "records not polled")
    return polled


def test_a_record_source_is_ready_at_once_and_returns_topic_room_key_and_value(topic_settings, bus):
    """What the fan-out loop reads off a polled record, straight from the broker."""
    source = RecordSource(topic_settings, [TOPICS["file"]], f"file-server-group-test-{uuid.uuid4().hex[:6]}")
    try:
        assert source.ready  # every partition is positioned before the constructor returns
        value = events.delete_record(31, "m9")
        bus.publish(TOPICS["file"], "31", value)
        polled = poll_until(source, 1)
        assert [(r.topic, r.key, r.value) for r in polled] == [(TOPICS["file"], b"31", value)]
    finally:
        source.close()


def end_offsets(settings, topic):
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        return consumer.end_offsets([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
    finally:
        consumer.close()


def committed_offsets(settings, group):
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        return {tp: meta.offset for tp, meta in admin.list_group_offsets({group: None})[group].items()}
    finally:
        admin.close()


def test_a_log_whose_end_trails_a_batch_is_read_once_not_again_from_its_start(topic_settings, monkeypatch):
    """The embedded broker reports a log's end as its last batch's first offset plus one, so
    after a batch of several records a source's position stays past that end: the log is
    whole (it still holds the last record read), and is not read again from its start."""
    monkeypatch.setattr(kafka_bus, "LOG_CHECK_S", 0.1)
    topic = f"trailing-end-{uuid.uuid4().hex[:6]}"  # its own: a later source would start inside the batch
    create_topics(topic_settings, [topic])
    source = RecordSource(topic_settings, [topic], f"{topic}-group")
    producer = KafkaProducer(bootstrap_servers=topic_settings.kafka_bootstrap_servers, linger_ms=200)
    try:
        values = [f"batched-{n}".encode() for n in range(5)]
        for value in values:  # one key: one partition; the linger makes them one batch
            producer.send(topic, key=b"42", value=value)
        producer.flush()
        polled = poll_until(source, len(values))
        [((_, number), read)] = source.read_positions.items()  # the one partition read
        assert read.offset > end_offsets(topic_settings, topic)[TopicPartition(topic, number)], \
            "the embedded broker no longer reports a batch's end early: this test no longer covers it"
        for _ in range(10):  # LOG_CHECK_S passes several times
            polled += source.poll(50)
            gevent.sleep(0.05)
        assert [r.value for r in polled] == values and source.rewinds == 0
    finally:
        producer.close()
        source.close()


def test_the_record_probe_reads_one_record_at_an_offset_and_nothing_past_the_end(topic_settings, monkeypatch):
    monkeypatch.setattr(kafka_bus, "PROBE_TIMEOUT_S", 0.5)
    topic = f"probed-{uuid.uuid4().hex[:6]}"
    create_topics(topic_settings, [topic])
    source = RecordSource(topic_settings, [topic], f"{topic}-group")
    producer = KafkaProducer(bootstrap_servers=topic_settings.kafka_bootstrap_servers)
    probe = RecordProbe(topic_settings, f"{topic}-probe")
    try:
        for n in range(3):
            producer.send(topic, key=b"42", value=f"v{n}".encode()).get(timeout=10)
        polled = poll_until(source, 3)
        [((_, number), read)] = source.read_positions.items()
        partition = TopicPartition(topic, number)
        assert probe(partition, read.offset - 2) == StoredRecord(polled[1].timestamp, b"42")
        assert probe(partition, read.offset - 1) == StoredRecord(polled[2].timestamp, b"42")
        assert probe(partition, read.offset + 5) is None
    finally:
        probe.close()
        producer.close()
        source.close()


def test_a_reopened_source_resumes_from_what_its_group_committed(topic_settings, bus):
    """How a consumer reopened after a failure catches up instead of skipping to the end."""
    group = f"state-group-test-{uuid.uuid4().hex[:6]}"
    first = RecordSource(topic_settings, [TOPICS["state"]], group)
    try:
        bus.publish(TOPICS["state"], "1", b"one")
        assert [r.value for r in poll_until(first, 1)] == [b"one"]
        consumed_to = end_offsets(topic_settings, TOPICS["state"])

        def committed_all():  # the auto-commit runs inside poll, every 5 s
            first.poll(200)
            return committed_offsets(topic_settings, group) == consumed_to

        wait_until(committed_all, READY_TIMEOUT_S, "offsets not committed")
    finally:
        first.close()
    bus.publish(TOPICS["state"], "1", b"two")  # while no source of the group is open
    second = RecordSource(topic_settings, [TOPICS["state"]], group)
    try:
        assert [r.value for r in poll_until(second, 1)] == [b"two"]
    finally:
        second.close()


def sent_fetch_waits(source, monkeypatch):
    """The ``max_wait_ms`` of every fetch request the source's client sends from now on."""
    manager = source._consumer._fetcher._manager  # kafka-python 3.0.12 internals, on purpose
    original = manager.send
    waits = []

    def send(request, *args, **kwargs):
        if type(request).__name__.startswith("FetchRequest"):
            waits.append(request.max_wait_ms)
        return original(request, *args, **kwargs)

    monkeypatch.setattr(manager, "send", send)
    return waits


def test_an_idle_source_fetches_with_the_idle_wait_and_a_record_brings_the_short_one_back(
        embedded, topic_settings, bus, monkeypatch):
    """FetchPace reaches the wire: kafka-python has no public setter for the fetch wait."""
    monkeypatch.setattr(kafka_bus, "IDLE_AFTER_S", 0.3)
    settings = make_settings(embedded, kafka_fetch_max_wait_ms=20, kafka_idle_fetch_max_wait_ms=150)
    source = RecordSource(settings, [TOPICS["state"]], f"state-group-test-{uuid.uuid4().hex[:6]}")
    try:
        waits = sent_fetch_waits(source, monkeypatch)
        wait_until(lambda: source.poll(50) == [] and 150 in waits, READY_TIMEOUT_S, "no fetch with the idle wait")
        assert waits[0] == 20
        assert set(waits[waits.index(150):]) == {150}  # idle stays idle while nothing comes
        bus.publish(TOPICS["state"], "3", b"after a quiet spell")
        assert [r.value for r in poll_until(source, 1)] == [b"after a quiet spell"]
        received_at = len(waits)
        # the fetch already sent with the idle wait completes first; the ones after it are short
        wait_until(lambda: source.poll(50) == [] and 20 in waits[received_at:], DELIVERY_TIMEOUT_S,
                   "no short fetch after the record")
    finally:
        source.close()


def test_a_new_group_starts_after_what_was_already_produced(topic_settings, bus):
    """Only this test's key is looked at: the topic is shared with the other tests' servers,
    whose late records (a presence event of a server shutting down) may arrive meanwhile."""
    key = f"new-group-{uuid.uuid4().hex[:8]}"
    bus.publish(TOPICS["state"], key, b"before")
    source = RecordSource(topic_settings, [TOPICS["state"]], f"state-group-test-{uuid.uuid4().hex[:6]}")
    try:
        bus.publish(TOPICS["state"], key, b"after")
        polled: list = []
        wait_until(lambda: polled.extend(r for r in source.poll(50) if r.key == key.encode()) or polled,
                   DELIVERY_TIMEOUT_S, "records not polled")
        assert [r.value for r in polled] == [b"after"]
        assert [r for r in source.poll(200) if r.key == key.encode()] == []
    finally:
        source.close()


def test_each_process_start_gets_its_own_consumer_instance():
    """A pid that repeats after a restart must not resume the previous run's offsets."""
    first, second = consumer_instance("host-8080-7"), consumer_instance("host-8080-7")
    assert first != second
    assert first.startswith("host-8080-7-") and second.startswith("host-8080-7-")


def test_records_keep_their_order_within_a_room(topic_settings, bus, consumers):
    delivery = RecordingDelivery()
    consumers(consumer_for(topic_settings, [TOPICS["channel_etc"]], delivery, "node-d-4"))
    for n in range(20):
        bus.publish(TOPICS["channel_etc"], "12", events.typing_record(12, f"user{n}"))
    wait_until(lambda: len(delivery.delivered) == 20, DELIVERY_TIMEOUT_S, "not all delivered")
    assert [json.loads(body)["name"] for _, body in delivery.delivered] == [f"user{n}" for n in range(20)]


def test_publish_to_a_dead_broker_raises_backend_unavailable(embedded):
    settings = make_settings(embedded, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                             kafka_send_timeout_s=1.0)
    bus = KafkaEventBus(settings)
    try:
        with gevent.Timeout(30_000 * MS, AssertionError("publish did not give up")):
            with pytest.raises(BackendUnavailable):
                bus.publish(TOPICS["direct"], "1", b"{}")
    finally:
        bus.close()


def test_group_ids_are_unique_per_process():
    assert group_id("direct-server-group", "host-8080-101") != group_id("direct-server-group", "host-8080-102")
    assert group_id("state-group", "host-8080-101") == "state-group-host-8080-101"
