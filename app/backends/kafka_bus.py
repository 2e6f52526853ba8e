"""Kafka: the acknowledged producer, the fan-out record source and topic creation.

This is the only module that imports ``kafka`` (kafka-python). Everything above it sees
``EventBus.publish`` (returns once the broker acknowledged, raises ``BackendUnavailable``
otherwise), ``EventBus.publish_nowait`` (the same, with the wait left to the caller's
``PublishAck``), ``RecordSource`` (a per-process consumer the fan-out loop polls) and
``create_topics``. Clients are created lazily, so building them in the gunicorn master and
using them in a forked worker never shares a socket.

Tuning comes from field-notes.md: a low ``fetch_max_wait_ms`` for latency and
``auto_offset_reset='latest'`` because the fan-out only needs what happens after the
process started; fan-out consumers assign themselves every partition rather than join a
group (see ``RecordSource``). kafka-python is pure Python and runs in the chat worker's one
process, so per-record work it can skip is switched off: no client metrics (neither side
reads them) and no CRC check of fetched batches (see ``_consumer_options``);
``python -m bench.kafka_micro`` measures what each costs. A source with nothing to read
fetches with a longer wait (``FetchPace``): each empty fetch costs the worker ~2 ms of
CPU, and the embedded broker answers a waiting fetch only some time after a record
arrives, so the short wait, which keeps fan-out quick, is used only while records flow.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, NamedTuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata

import app.metrics as metrics
from app.chat.model import TOPICS
from app.errors import BackendUnavailable
from app.settings import Settings

__all__ = ["KafkaEventBus", "BrokerAck", "RecordSource", "RecordProbe", "StoredRecord", "FetchPace", "Record",
           "ReadPosition", "create_topics", "topic_partitions"]

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_MS = 10000
# How stale a consumer's view of a topic's partitions may get, and how often a source
# looks at that view for partitions it has not assigned yet.
METADATA_MAX_AGE_MS = 30_000
PARTITION_CHECK_S = 1.0
# kafka-python's default reconnect backoff grows to 30 s (and bootstrap waits as long):
# a chat server should notice a returning broker within a couple of seconds.
RECONNECT_BACKOFF_MAX_MS = 2000
# A source that has read no record for this long fetches with the idle wait.
IDLE_AFTER_S = 2.0
# How much later than the last record read a record must be stamped to show that the log it
# sits in started again (producers' clocks may differ by less than this).
RESTART_SKEW_MS = 1000
# How often a source may try to create topics it found missing.
TOPIC_CREATION_RETRY_S = 5.0
# How often a source compares its positions with the ends of the logs (a broker that lost
# its log says nothing: fetches past the new end just come back empty).
LOG_CHECK_S = 2.0
# The longest a source waits for the broker to hand back the last record it read, when it
# checks whether a log that ends before its position still holds that record.
PROBE_TIMEOUT_S = 2.0


def _bootstrap(settings: Settings) -> list[str]:
    servers = [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]
    if not servers:
        raise BackendUnavailable("KAFKA_BOOTSTRAP_SERVERS is empty")
    return servers


class BrokerAck:
    """``PublishAck`` of one sent record: waits on its future until the send's deadline."""

    __slots__ = ("_future", "_topic", "_deadline", "_started")

    def __init__(self, future: FutureRecordMetadata, topic: str, deadline: float, started: float) -> None:
        self._future = future
        self._topic = topic
        self._deadline = deadline
        self._started = started  # monotonic time of the send: the metrics time the ack from it

    def wait(self) -> None:
        try:
            self._future.get(timeout=max(0.0, self._deadline - time.monotonic()))
        except KafkaError as exc:
            metrics.backend_call("kafka", "produce", time.monotonic() - self._started, failed=True)
            log.warning("kafka publish to %s failed: %s", self._topic, exc)
            raise BackendUnavailable() from exc
        metrics.backend_call("kafka", "produce", time.monotonic() - self._started)


class KafkaEventBus:
    """``EventBus`` on a KafkaProducer; ``publish`` waits for the broker's ack."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = self._open_producer()
        return self._producer

    def _open_producer(self) -> KafkaProducer:
        timeout_ms = int(self._settings.kafka_send_timeout_s * 1000)
        try:
            return KafkaProducer(
                bootstrap_servers=_bootstrap(self._settings),
                client_id=f"smooth-{self._settings.effective_node_id}",
                acks=1,  # the leader's ack; the broker (not the producer) is the fan-out bus
                enable_idempotence=False,
                # SENDs are produced without waiting for the previous ack (publish_nowait):
                # one request in flight per broker is what keeps a retried batch from
                # landing after a newer one, so each room's order stays the SEND order.
                max_in_flight_requests_per_connection=1,
                linger_ms=self._settings.kafka_linger_ms,
                max_block_ms=timeout_ms,
                request_timeout_ms=max(timeout_ms, 1000),
                # delivery_timeout_ms must cover linger + request timeout (client check).
                delivery_timeout_ms=max(timeout_ms, 1000) + self._settings.kafka_linger_ms + 1,
                # A topic touched after a broker lost its log would come back with the broker's
                # default partition count; topics are created by create_topics only.
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=timeout_ms,
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                # Sensors recorded on every append, batch and request, read by nobody
                # (~5 % of the producer's CPU per record in bench.kafka_micro).
                metrics_enabled=False,
            )
        except KafkaError as exc:
            log.warning("kafka producer unavailable: %s", exc)
            raise BackendUnavailable() from exc

    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Send one record keyed by room id and wait for the broker's acknowledgement."""
        self.publish_nowait(topic, key, value).wait()

    def publish_nowait(self, topic: str, key: str, value: bytes) -> BrokerAck:
        """Send one record keyed by room id; its ack allows ``kafka_send_timeout_s`` from now."""
        producer = self._get_producer()
        started = time.monotonic()
        try:
            future = producer.send(topic, key=key.encode(), value=value)
        except KafkaError as exc:
            metrics.backend_call("kafka", "produce", time.monotonic() - started, failed=True)
            log.warning("kafka publish to %s failed: %s", topic, exc)
            raise BackendUnavailable() from exc
        return BrokerAck(future, topic, started + self._settings.kafka_send_timeout_s, started)

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=2)
            except Exception:  # noqa: BLE001 - closing must not fail shutdown
                log.debug("kafka producer close failed", exc_info=True)


class Record(NamedTuple):
    """One consumed record: the room key, the JSON value bytes and when it was produced (ms since
    the epoch, Kafka's timestamp). A tuple: built per record."""

    topic: str
    key: bytes | None
    value: bytes
    timestamp: int | None = None


class ReadPosition(NamedTuple):
    """Where a source stands in one partition: the next offset, and the time of the last record read."""

    offset: int
    timestamp: int | None


class StoredRecord(NamedTuple):
    """What a log holds at one offset, as far as telling two records apart needs."""

    timestamp: int
    key: bytes | None


class FetchPace:
    """The fetch wait a source's next fetches carry: ``active_ms`` while records arrive,
    ``idle_ms`` once none has for ``idle_after_s``.

    Why: an empty fetch costs the consumer ~2 ms of CPU and the broker some more, and a
    worker with no traffic repeats one every ``active_ms`` (bench/FINDINGS.md, fifth
    session). A longer wait costs latency only on a broker that answers a waiting fetch
    some time after a record arrives (the embedded one: a quarter of the wait at the median), and then
    only for the first records after a quiet spell: the first one back switches the pace.
    """

    def __init__(self, active_ms: int, idle_ms: int, *, idle_after_s: float = IDLE_AFTER_S,
                 clock: Callable[[], float] | None = None) -> None:
        self.active_ms = active_ms
        self.idle_ms = max(idle_ms, active_ms)
        self._idle_after_s = idle_after_s
        self._clock = clock if clock is not None else time.monotonic
        self._last_record = self._clock()

    def wait_ms(self) -> int:
        if self._clock() - self._last_record >= self._idle_after_s:
            return self.idle_ms
        return self.active_ms

    def saw_records(self) -> None:
        self._last_record = self._clock()


class RecordSource:
    """One fan-out consumer over a set of topics: every partition, no group join.

    Each process must read every record of its topics (protocol.md §3.2), so the
    source assigns itself all their partitions instead of joining a group: nothing is
    shared to balance, and a join costs ~3 s and, with kafka-python 3.0.12, restarts
    whenever a JoinGroup answer arrives while no ``poll`` is waiting for it. The group
    id is still used to commit offsets, so a source reopened after a failure resumes
    where the last one committed and broker tools show the process's lag.

    ``poll`` returns decoded ``Record`` objects and maps client failures to
    ``BackendUnavailable``. ``ready`` turns true once every topic's partitions have a
    position: a record produced after that is delivered. Partitions added to a topic
    later are picked up within ``METADATA_MAX_AGE_MS`` and read from their beginning.
    Each ``poll`` sets the fetch wait its ``FetchPace`` gives.

    A log that went backwards (a broker restarted without its data, a topic recreated) is
    read again from its start, so what was produced since is not skipped: every
    ``LOG_CHECK_S`` the source compares its positions with the ends of the logs, and an
    out-of-range position resets to the earliest offset. A position past a log's end is
    rewound only once the log no longer holds the last record read there (``read_record``
    asks the broker for it): the embedded broker reports a log's end as the start of its
    last batch plus one, so after a batch of several records the position stays past that
    end while the log is whole, and rewinding then re-read (and re-pushed) the partition
    every few seconds. A source starts where the source it
    replaces stopped (``resume_from``, its ``read_positions``: the next offset and the time of
    the last record read, so that a log that started again meanwhile is still noticed), else
    at the offset its group committed, else at the end of a partition it never read.
    """

    def __init__(self, settings: Settings, topics: Iterable[str], group_id: str, *,
                 open_consumer: Callable[..., Any] = KafkaConsumer,
                 create_missing: Callable[[Settings, list[str]], list[str]] | None = None,
                 resume_from: dict[tuple[str, int], ReadPosition] | None = None,
                 read_record: Callable[[TopicPartition, int], StoredRecord | None] | None = None) -> None:
        self.group_id = group_id
        # Where a source that replaces a failed one goes on: the failed one's read positions
        # (the broker may have lost the offsets it committed, with its log).
        resume = {TopicPartition(topic, partition): read for (topic, partition), read in (resume_from or {}).items()}
        self._resume = {partition: read.offset for partition, read in resume.items()}
        self._last_timestamps: dict[TopicPartition, int] = {
            partition: read.timestamp for partition, read in resume.items() if read.timestamp is not None}
        self._next_offsets: dict[TopicPartition, int] = dict(self._resume)
        self._start_offsets: dict[TopicPartition, int] = {}  # where each partition's reading started
        self.topics = list(topics)
        self._settings = settings
        self._create_missing = create_missing or create_topics
        self._next_topic_creation = 0.0
        self._assigned: set[TopicPartition] = set()
        self._next_check = 0.0
        self._next_log_check = time.monotonic() + LOG_CHECK_S
        self._past_end: set[TopicPartition] = set()
        self._last_keys: dict[TopicPartition, bytes | None] = {}  # the key of the last record read
        self._held: dict[TopicPartition, int] = {}  # position past the end whose last record the log holds
        self._read_record = read_record or RecordProbe(settings, f"{group_id}-probe")
        self.rewinds = 0
        self._pace = FetchPace(settings.kafka_fetch_max_wait_ms, settings.kafka_idle_fetch_max_wait_ms,
                               idle_after_s=IDLE_AFTER_S)
        self._fetch_wait_ms = settings.kafka_fetch_max_wait_ms
        try:
            self._consumer = open_consumer(
                **_consumer_options(settings),
                group_id=group_id,
                client_id=group_id,
                # Where an out-of-range position goes: the start of the log, which after a
                # broker lost its log holds only what was produced since (a fresh source
                # starts at the end; see _assign_new_partitions).
                auto_offset_reset="earliest",
                enable_auto_commit=True,
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                fetch_min_bytes=settings.kafka_fetch_min_bytes,
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
            )
        except KafkaError as exc:
            raise BackendUnavailable() from exc
        try:
            self._assign_new_partitions()
        except KafkaError as exc:
            self.close()  # its network thread would outlive a source nobody holds
            raise BackendUnavailable() from exc

    def poll(self, timeout_ms: int, max_records: int = 500) -> list[Record]:
        try:
            if time.monotonic() >= self._next_check:
                self._assign_new_partitions()
            if self._assigned and time.monotonic() >= self._next_log_check:
                self._rewind_logs_that_went_backwards()
            if not self._assigned:  # no topic exists yet; kafka-python refuses to poll nothing
                time.sleep(timeout_ms / 1000)
                return []
            self._set_fetch_wait(self._pace.wait_ms())
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            metrics.backend_error("kafka", "fetch")  # a fetch's time is its wait: only failures count
            raise BackendUnavailable() from exc
        if batches:
            self._pace.saw_records()
            for partition, batch in batches.items():
                self._next_offsets[partition] = batch[-1].offset + 1
                self._last_timestamps[partition] = batch[-1].timestamp
                self._last_keys[partition] = batch[-1].key
        return [Record(r.topic, r.key, r.value, r.timestamp) for batch in batches.values() for r in batch]

    def lag(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): records after the read position, by the high-water mark the last
        fetch of that partition brought (no request is made; a partition not fetched yet is left out)."""
        lag = {}
        for partition in self._assigned:
            end = self._consumer.highwater(partition)
            position = self._next_offsets.get(partition, self._start_offsets.get(partition))
            if end is not None and position is not None:
                lag[(partition.topic, partition.partition)] = max(0, end - position)
        return lag

    @property
    def read_positions(self) -> dict[tuple[str, int], ReadPosition]:
        """Per (topic, partition) read so far: the offset after the last record, and its time."""
        return {(tp.topic, tp.partition): ReadPosition(offset, self._last_timestamps.get(tp))
                for tp, offset in self._next_offsets.items()}

    def _set_fetch_wait(self, wait_ms: int) -> None:
        """The ``max_wait_ms`` of the fetch requests sent from now on.

        kafka-python has no public setter: its fetcher reads this key of its own config for
        every request it builds (kafka-python is pinned; tests/integration/test_kafka_bus.py
        checks the requests actually change). A client without it keeps the wait it has.
        """
        if wait_ms == self._fetch_wait_ms:
            return
        config = getattr(getattr(self._consumer, "_fetcher", None), "config", None)
        if not isinstance(config, dict) or "fetch_max_wait_ms" not in config:
            log.warning("kafka client has no fetcher config: the fetch wait stays %d ms", self._fetch_wait_ms)
            self._pace = FetchPace(self._fetch_wait_ms, self._fetch_wait_ms)
            return
        config["fetch_max_wait_ms"] = wait_ms
        self._fetch_wait_ms = wait_ms

    @property
    def fetch_wait_ms(self) -> int:
        """The wait the fetch requests this source sends now carry."""
        return self._fetch_wait_ms

    def _assign_new_partitions(self) -> None:
        self._next_check = time.monotonic() + PARTITION_CHECK_S
        found = {TopicPartition(topic, partition) for topic in self.topics
                 for partition in self._consumer.partitions_for_topic(topic) or ()}
        self._create_missing_topics({partition.topic for partition in found})
        added = found - self._assigned
        if not added:
            return
        late = bool(self._assigned)
        self._consumer.assign(sorted(self._assigned | added))
        if late:  # created after this source started: everything in them is new to it
            self._consumer.seek_to_beginning(*added)
        else:
            for partition in added & self._resume.keys():
                self._consumer.seek(partition, self._resume[partition])
            never_read = [partition for partition in added - self._resume.keys()
                          if self._consumer.committed(partition) is None]
            if never_read:
                self._consumer.seek_to_end(*never_read)
        # position() resolves the committed or 'latest' offset now, so every record
        # produced after ``ready`` turns true is consumed.
        for partition in added:
            position = self._consumer.position(partition)
            if position is not None:  # where reading starts: the lag counts from here
                self._start_offsets[partition] = position
        self._assigned |= added

    def _create_missing_topics(self, present: set[str]) -> None:
        """Topics are never auto-created (see KafkaEventBus): a missing one (a new cluster, a
        broker that lost its log) is created here, with ``KAFKA_PARTITIONS``."""
        missing = [topic for topic in self.topics if topic not in present]
        if not missing or time.monotonic() < self._next_topic_creation:
            return
        self._next_topic_creation = time.monotonic() + TOPIC_CREATION_RETRY_S
        try:
            created = self._create_missing(self._settings, missing)
        except BackendUnavailable:
            return
        if created:
            log.warning("created missing topics %s with %d partitions", ", ".join(created),
                        self._settings.kafka_partitions)

    def _rewind_logs_that_went_backwards(self) -> None:
        """Read again from its start a partition whose log was replaced under this source.

        Two signs, either suffices:

        - the log's first record is newer (by ``RESTART_SKEW_MS``) than the last one read, and
          sits before the position: the log started again and grew past the position (a broker
          that lost its log takes seconds to come back, and records written since carry later
          times). Newer records further into a log are normal (a producer's retried batch keeps
          its earlier time), so only a log newer from its very start counts;
        - the position stays past the log's end twice in a row, ``LOG_CHECK_S`` apart (once can
          be the embedded broker's offsets trailing a fetch by a record).
        """
        self._next_log_check = time.monotonic() + LOG_CHECK_S
        self._rewind_logs_with_newer_records_behind()
        ends = self._consumer.end_offsets(sorted(self._assigned))
        past_end = set()
        for partition, end in ends.items():
            position = self._consumer.position(partition)
            if end is None or position is None or position <= end:
                continue
            past_end.add(partition)
            if partition in self._past_end and not self._holds_last_read(partition, position):
                self._rewind(partition, f"position {position} is past the log's end {end}")
                past_end.discard(partition)
        self._past_end = past_end

    def _holds_last_read(self, partition: TopicPartition, position: int) -> bool:
        """Whether the log still holds, just before ``position``, the record read last there
        (same time, same key): then its end as reported trails the broker's own fetches."""
        if self._held.get(partition) == position:
            return True  # asked already, and nothing was read since
        stamp = self._last_timestamps.get(partition)
        if stamp is None or position < 1:
            return False
        found = self._read_record(partition, position - 1)
        if found is None or found.timestamp != stamp:
            return False
        if partition in self._last_keys and found.key != self._last_keys[partition]:
            return False  # (a source resumed from another's position knows only the time)
        log.debug("%s[%d]: the log's end trails position %d, and it holds the last record read",
                  partition.topic, partition.partition, position)
        self._held[partition] = position
        return True

    def _rewind_logs_with_newer_records_behind(self) -> None:
        targets = {partition: stamp + RESTART_SKEW_MS for partition, stamp in self._last_timestamps.items()
                   if partition in self._assigned}
        if not targets:
            return
        suspects = {}
        for partition, found in self._consumer.offsets_for_times(targets).items():
            # None, or a timestamp of -1 (the embedded broker's way to say none): nothing newer.
            if found is None or found.timestamp < 0:
                continue
            position = self._consumer.position(partition)
            if position is not None and found.offset < position - 1:
                suspects[partition] = (found, position)
        starts = self._consumer.beginning_offsets(list(suspects)) if suspects else {}
        for partition, (found, position) in suspects.items():
            if found.offset <= starts.get(partition, -1):
                self._rewind(partition, f"records newer than the last one read start the log, before position "
                                        f"{position}")

    def _rewind(self, partition: TopicPartition, sign: str) -> None:
        """Read ``partition`` again from its start: its log was replaced (the broker lost it)."""
        log.warning("%s[%d]: %s (the broker lost its log); reading it again from its start",
                    partition.topic, partition.partition, sign)
        self._consumer.seek_to_beginning(partition)
        self._last_timestamps.pop(partition, None)
        self._last_keys.pop(partition, None)
        self._held.pop(partition, None)
        self.rewinds += 1

    @property
    def ready(self) -> bool:
        """Every topic has partitions assigned, each with a position."""
        return {partition.topic for partition in self._assigned} == set(self.topics)

    def close(self) -> None:
        _close_quietly(self._consumer)
        close_probe = getattr(self._read_record, "close", None)
        if close_probe is not None:
            close_probe()


class RecordProbe:
    """Reads one record at a given offset with a consumer of its own (no group, nothing
    committed), so the fan-out consumer's position and fetches are left alone.

    Opened at the first question and kept: on the embedded broker a source asks after every
    batch of several records. None when the offset is past the log's end, out of its range,
    or not answered within ``PROBE_TIMEOUT_S``.
    """

    def __init__(self, settings: Settings, client_id: str, *,
                 open_consumer: Callable[..., Any] = KafkaConsumer) -> None:
        self._settings = settings
        self._client_id = client_id
        self._open_consumer = open_consumer
        self._consumer: Any = None

    def __call__(self, partition: TopicPartition, offset: int) -> StoredRecord | None:
        try:
            consumer = self._opened()
            consumer.assign([partition])
            try:
                return self._read(consumer, partition, offset)
            finally:
                consumer.unsubscribe()  # an assigned partition would go on being fetched between questions
        except KafkaError as exc:
            log.info("could not read %s[%d] at %d: %r", partition.topic, partition.partition, offset, exc)
        return None

    @staticmethod
    def _read(consumer: Any, partition: TopicPartition, offset: int) -> StoredRecord | None:
        consumer.seek(partition, offset)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=100, max_records=1).get(partition, ()):
                return StoredRecord(record.timestamp, record.key) if record.offset == offset else None
        return None

    def _opened(self) -> Any:
        if self._consumer is None:
            self._consumer = self._open_consumer(**_consumer_options(self._settings), group_id=None,
                                                 client_id=self._client_id, enable_auto_commit=False,
                                                 auto_offset_reset="none")
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            _close_quietly(self._consumer)
            self._consumer = None


def _consumer_options(settings: Settings) -> dict[str, Any]:
    """What every consumer of this module is opened with, whatever it reads for."""
    return {
        "bootstrap_servers": _bootstrap(settings),
        "metrics_enabled": False,  # per-fetch sensor bookkeeping we never read
        # kafka-python checks CRC32C in pure Python (~0.1 us per byte: ~30 us for a
        # one-record chat batch) unless the C `crc32c` package is installed. Kafka
        # validates the CRC when a batch is produced and TCP checksums the hop to us;
        # a record corrupted anyway most likely fails JSON decoding and is skipped.
        "check_crcs": False,
        "allow_auto_create_topics": False,  # topics are created with KAFKA_PARTITIONS, never by a read
        "bootstrap_timeout_ms": ADMIN_TIMEOUT_MS,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }


def _close_quietly(consumer: Any) -> None:
    """Close a consumer without committing; a failure is logged, never raised (shutdown goes on)."""
    try:
        consumer.close(autocommit=False)
    except Exception:  # noqa: BLE001 - closing must not fail shutdown
        log.debug("kafka consumer close failed", exc_info=True)


def _admin_client(settings: Settings, client_id: str, timeout_ms: int) -> KafkaAdminClient:
    """An admin client whose every wait (bootstrap, each request) is ``timeout_ms``."""
    return KafkaAdminClient(bootstrap_servers=_bootstrap(settings), client_id=client_id,
                            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
                            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS)


def topic_partitions(settings: Settings, names: Iterable[str] | None = None, *,
                     timeout_ms: int = ADMIN_TIMEOUT_MS) -> dict[str, int | None]:
    """How many partitions each of Smooth's topics has (None: it does not exist); raises
    ``BackendUnavailable`` when the broker cannot be reached. Creates nothing."""
    wanted = list(names) if names is not None else list(TOPICS.values())
    try:
        admin = _admin_client(settings, "smooth-check", timeout_ms)
    except KafkaError as exc:
        raise BackendUnavailable(type(exc).__name__) from exc
    try:
        existing = set(admin.list_topics())
        present = [name for name in wanted if name in existing]
        described = {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(present)} \
            if present else {}
        return {name: described.get(name) for name in wanted}
    except KafkaError as exc:
        raise BackendUnavailable(type(exc).__name__) from exc
    finally:
        admin.close()


def create_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create Smooth's topics with ``settings.kafka_partitions``; idempotent.

    Returns the names that were newly created (existing topics are left as they are).
    """
    wanted = list(names) if names is not None else list(TOPICS.values())
    try:
        admin = _admin_client(settings, "smooth-admin", ADMIN_TIMEOUT_MS)
    except KafkaError as exc:
        metrics.backend_error("kafka", "admin")
        raise BackendUnavailable() from exc
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, settings.kafka_partitions, 1)],
                                    timeout_ms=ADMIN_TIMEOUT_MS)
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process won the race; that is fine
        return created
    except KafkaError as exc:
        raise BackendUnavailable() from exc
    finally:
        admin.close()
