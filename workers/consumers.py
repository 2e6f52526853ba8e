"""The Kafka fan-out consumer: every record of every topic reaches this process's sockets.

One consumer (one greenlet, one ``RecordSource``) per process reads all six topics of
protocol.md §3.2. The original ran one consumer group per topic; here one client fetches
every partition of all six in one request, which is what an idle worker mostly does
(six clients polling cost ~24 % of a core on the embedded broker, one ~9 %). Each worker
must see every record (field-notes.md), so the source reads every partition and commits
under a group id unique to the process start (``fanout-group-{node}-{pid}-{token}``).

Loop shape (style-examples.md §7.7): poll → for each record, ``events.decode`` builds the
§2.7 bodies (serialised once per record; the record's topic says which kind) →
``delivery.deliver(destination, body, audience)``, which only queues; a channel event's
audience is its community's members (``audience``, app/chat/channel_scope.py), read once per
event from the process's membership copy. A record that fails is logged
and skipped; a consumer that fails is closed and reopened after a capped, jittered backoff.
Nothing in the loop blocks except the poll. Once a poll's records are delivered, the frames
are written (``LocalDelivery.flush``) and the batch is reported to the metrics in one call
(records, deliveries, each record's time from production to the sockets, healing, lag):
never per delivery.

The outbox relay publishes at least once (app/chat/relay.py), so a stored event may arrive
twice, and a broker that lost records may skip some. A record numbered in its room's
sequence goes through gap healing (``workers/gap_healing.py``): pushed once, after any
events of its room this worker missed. For records without a number (events stored before
sequences existed), :class:`RecentEvents` remembers the identities of the last
``RECENT_EVENTS`` events pushed, and a record whose event was already pushed is dropped.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from typing import Any, Callable, Container, Protocol, Sequence

import gevent

import app.metrics as metrics
from app.chat.model import TOPICS
from app.chat.events import Decoded, decode
from app.chat.room_memory import RoomMemory
from app.contracts import LocalDelivery
from app.errors import ChatServerError
from app.logs import RateLimitedLog
from workers.gap_healing import GapHealer, SequenceReader

__all__ = ["FANOUT_GROUP", "FANOUT_TOPICS", "Audience", "group_id", "consumer_instance", "backoff_delay", "FanoutConsumer",
           "RecentEvents", "RECENT_EVENTS"]

log = logging.getLogger(__name__)
_unscoped = RateLimitedLog(log)

# Who may receive a channel event: (channel id, its community or None) -> user ids.
Audience = Callable[[int, "int | None"], Container[int]]

FANOUT_GROUP = "fanout-group"
FANOUT_TOPICS: tuple[str, ...] = tuple(TOPICS.values())

POLL_TIMEOUT_MS = 200  # also how quickly stop() is noticed
MAX_RECORDS = 500
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
# Identities of pushed events remembered for dropping re-published ones: a sweep re-publishes
# after OUTBOX_STALE_S, so this covers that long at thousands of events per second (~100 B each).
RECENT_EVENTS = 100_000


class RecentEvents:
    """The identities of the last ``capacity`` events pushed, oldest forgotten first."""

    def __init__(self, capacity: int = RECENT_EVENTS) -> None:
        self._capacity = capacity
        self._seen: dict[tuple[str, ...], None] = {}

    def first_time(self, identity: tuple[str, ...]) -> bool:
        """Whether ``identity`` is new (it is remembered from now on)."""
        seen = self._seen
        if identity in seen:
            return False
        seen[identity] = None
        if len(seen) > self._capacity:
            del seen[next(iter(seen))]
        return True


class _Record(Protocol):
    topic: str
    value: bytes
    timestamp: int | None  # when it was produced (ms since the epoch), as Kafka stamped it


class Source(Protocol):
    """``app.backends.kafka_bus.RecordSource``: one consumer, polled by one greenlet."""

    def poll(self, timeout_ms: int, max_records: int = ...) -> Sequence[_Record]: ...

    @property
    def ready(self) -> bool: ...

    @property
    def read_positions(self) -> dict[tuple[str, int], Any]:
        """Per (topic, partition) read so far: where a replacement source goes on."""
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): records not read yet, as far as the last fetches told."""
        ...

    def close(self) -> None: ...


def group_id(group: str, instance: str) -> str:
    """The group id a process commits its fan-out offsets under (see ``consumer_instance``)."""
    return f"{group}-{instance}"


def consumer_instance(node_id: str) -> str:
    """This process start's consumer identity: its node id (which ends with the pid) and a
    random token. Pids repeat across container restarts, and a repeated group id would
    resume from the offsets the previous run committed and push its stale events."""
    return f"{node_id}-{secrets.token_hex(4)}"


def backoff_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with jitter: ~0.5 s, 1 s, 2 s ... up to 30 s."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, failures - 1))
    return ceiling * (0.5 + rand() / 2)


class FanoutConsumer:
    """One consumer's loop: poll, build pushes, deliver locally."""

    def __init__(self, name: str, open_source: Callable[[dict[tuple[str, int], Any]], Source], delivery: LocalDelivery,
                 *, sequences: SequenceReader | None = None, quiet_check_s: float = 5.0,
                 audience: Audience | None = None, memory: RoomMemory | None = None,
                 sleep: Callable[[float], None] = gevent.sleep) -> None:
        """``sequences``: the room logs gap healing reads (None: numbered records are only deduplicated by identity).
        ``memory``: where each numbered event pushed is remembered for resumes (app/chat/room_memory.py).
        ``audience``: who may receive a channel event, given its channel and community
        (``ChannelScope.audience``); None: everyone subscribed (tests of other things)."""
        self.name = name
        self._open_source = open_source
        self._delivery = delivery
        self._audience = audience
        self._memory = memory
        self._sleep = sleep
        self._source: Source | None = None
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None
        self.failures = 0
        self.skipped = 0
        self._recent = RecentEvents()
        self.healer = GapHealer(sequences, self._push, quiet_check_s=quiet_check_s) if sequences is not None else None
        self._resume_from: dict[tuple[str, int], Any] = {}
        # This poll batch's figures for the metrics (reported once per batch, never per delivery).
        self._delivered = 0
        self._produced_ms: list[int] = []
        self._reported_healing = (0, 0)
        self._next_lag_report = 0.0

    @property
    def ready(self) -> bool:
        source = self._source
        return source is not None and source.ready

    def start(self) -> None:
        self._greenlet = gevent.spawn(self.run)
        self._greenlet.name = f"consumer:{self.name}"

    def request_stop(self) -> None:
        """Ask the loop to end after its current poll (returns at once)."""
        self._stopping = True

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True, timeout=1)
        self._close_source()

    def run(self) -> None:
        while not self._stopping:
            try:
                self._poll_once()
                self.failures = 0
            except Exception:  # noqa: BLE001 - the consumer must outlive any failure
                self.failures += 1
                delay = backoff_delay(self.failures)
                log.warning("consumer %s failed; reopening in %.1fs", self.name, delay, exc_info=True)
                self._close_source()
                self._sleep(delay)
        self._close_source()

    def _poll_once(self) -> None:
        if self._source is None:
            self._source = self._open_source(self._resume_from)
        records = self._source.poll(POLL_TIMEOUT_MS, MAX_RECORDS)
        for record in records:
            self._deliver(record)
        if self.healer is not None:
            self.healer.check_quiet()
        if records or self._delivered:
            # Written now rather than when this greenlet next yields (the same moment, a poll
            # later), so the batch's latency is measured up to the sockets.
            self._delivery.flush()
        self._report(len(records))

    def _deliver(self, record: _Record) -> None:
        try:
            decoded = decode(record.topic, record.value)
            before = self._delivered
            if decoded.seq is not None and self.healer is not None:
                self.healer.admit(decoded)
            elif decoded.identity is not None and not self._recent.first_time(decoded.identity):
                return  # a re-published event (see RecentEvents)
            else:
                self._push(decoded)
            if self._delivered != before and record.timestamp is not None:
                self._produced_ms.append(record.timestamp)
        except Exception:  # noqa: BLE001 - one bad record must not stop the others
            self.skipped += 1
            log.exception("consumer %s skipped a record it could not deliver", self.name)

    def _push(self, decoded: Decoded) -> None:
        if self._memory is not None and decoded.seq is not None:
            self._memory.remember(decoded)
        audience = self._audience_of(decoded)
        for destination, body in decoded.pushes:
            self._delivered += self._delivery.deliver(destination, body, decoded.seq, audience)

    def _audience_of(self, decoded: Decoded) -> Container[int] | None:
        """A channel event's audience; nobody when membership cannot be read (it is in history)."""
        if decoded.channel_scope is None or self._audience is None:
            return None
        try:
            return self._audience(*decoded.channel_scope)
        except ChatServerError:
            _unscoped.warning("consumer %s: no member list for a channel event; not delivered live", self.name)
            return frozenset()

    def _report(self, records: int) -> None:
        """The batch's figures to the metrics: one call per poll, whatever the deliveries."""
        try:
            if records or self._delivered:
                metrics.fanout_batch(records, self._delivered, self._produced_ms)
                self._delivered, self._produced_ms = 0, []
            if self.healer is not None:
                healing = (self.healer.healed, self.healer.dropped)
                reported, self._reported_healing = self._reported_healing, healing
                metrics.gap_healing(healing[0] - reported[0], healing[1] - reported[1])
            now = time.monotonic()
            if now >= self._next_lag_report and self._source is not None:
                self._next_lag_report = now + metrics.SAMPLE_S
                metrics.set_consumer_lag(self._source.lag())
        except Exception:  # noqa: BLE001 - metrics must never stop the fan-out
            log.exception("consumer %s could not report its metrics", self.name)

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            self._resume_from = source.read_positions  # the next source goes on from here
            source.close()
