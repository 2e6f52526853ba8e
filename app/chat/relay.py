"""The outbox relay: every stored event reaches Kafka, in order, however long the broker is away.

A SEND is acknowledged once its message is stored durably, marked unpublished in the same
write (``Outbox``, app/chat/ports.py). From there the relay owns it:

- ``message_stored`` / ``change_stored`` queue the event's record (never blocking) in the
  order the events were stored; one publisher greenlet hands a batch to the producer,
  waits for the broker's acknowledgements, and goes on; a marker greenlet tells the outbox
  which ones the broker has (``Outbox.published``), so publishing never waits for that
  database call. What the broker did not acknowledge goes back to the
  front of the queue, in order, and is tried again after a capped backoff, for as long as it
  takes: nothing stored is ever undone.
- A sweep (every ``SWEEP_INTERVAL_S``) claims events that stayed unpublished longer than
  ``stale_s`` (their worker crashed, or could not reach the broker), keeps their records in
  their rooms' logs if they are not there yet, and queues them. That is
  how a restarted node delivers what a dead one stored. An edit or a delete is recorded
  before it is made, so the sweep publishes it only once the message shows it happened, and
  drops it otherwise (its SEND was never acknowledged).
- Past ``max_backlog`` queued events, ``check_capacity`` refuses new SENDs with
  ``BacklogFull``: memory stays bounded, and the client is told why.

A record may be published twice (a sweep re-publishes what a worker published just before it
died, or an acknowledgement was lost); the fan-out consumers drop records they already
pushed. When a record is not acknowledged and a later one of the same room is, the later one
reaches subscribers first; the retried one follows.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Protocol

import gevent
from gevent.event import Event

from app.chat import events
from app.chat.model import CHANGE_PLACE, ChatMessage, OutboxRef, PendingChange, stored_time
from app.chat.ports import EventBus, Outbox
from app.chat.room_log import RoomLog
from app.chat.timefmt import utcnow
from app.destinations import RoomKind
from app.errors import BacklogFull

__all__ = ["Relay", "RelayEntry", "SWEEP_INTERVAL_S", "BATCH"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 5.0
NONCE_SWEEP_INTERVAL_S = 3600.0
# The most records handed to the producer before waiting for their acknowledgements.
BATCH = 256
RETRY_BASE_S = 0.2
RETRY_CAP_S = 5.0
# Acknowledged events are marked published in groups of this many, or once the queue has run
# dry for MARK_AFTER_S (at most that long after the first of them was acknowledged): one
# database call per group instead of one per batch, which on a quiet server is one per round.
MARK_EVERY = 32
MARK_AFTER_S = 0.5
# How often a failing relay logs its backlog and asks for the topics to be created.
REPORT_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class RelayEntry:
    """One stored event's record, and where its unpublished mark is."""

    topic: str
    key: str
    value: bytes
    ref: OutboxRef


class MessageLookup(Protocol):
    def get(self, kind: RoomKind, message_id: str) -> ChatMessage | None: ...


class Relay:
    """The process's outbox relay (see the module docstring).

    Args:
        bus: the Kafka producer side.
        outbox: where unpublished events are marked.
        room_log: keeps the records of what a sweep takes over in their rooms' logs.
        messages: reads a message as it is now (the sweep's check of a recorded change).
        max_backlog: queued events beyond which new SENDs are refused.
        stale_s: how long an event may stay unpublished before a sweep takes it over.
        retention_s: how long nonces are kept (``IDEMPOTENCY_RETENTION_S``).
        ensure_topics: creates missing topics; called while publishing fails.
    """

    def __init__(self, *, bus: EventBus, outbox: Outbox, room_log: RoomLog, messages: MessageLookup, max_backlog: int,
                 stale_s: float, retention_s: float, ensure_topics: Callable[[], Any] | None = None,
                 batch: int = BATCH, sweep_interval_s: float = SWEEP_INTERVAL_S, mark_after_s: float = MARK_AFTER_S,
                 spawn: Callable[..., Any] = gevent.spawn, sleep: Callable[[float], None] = gevent.sleep,
                 now: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._bus = bus
        self._outbox = outbox
        self._room_log = room_log
        self._messages = messages
        self._max_backlog = max_backlog
        self._stale = timedelta(seconds=stale_s)
        self._retention = timedelta(seconds=retention_s)
        self._ensure_topics = ensure_topics
        self._batch = batch
        self._sweep_interval_s = sweep_interval_s
        self._mark_after_s = mark_after_s
        self._spawn = spawn
        self._sleep = sleep
        self._now = now
        self._monotonic = monotonic
        self._owner = secrets.token_hex(8)
        self._queue: list[RelayEntry] = []
        self._queued: set[OutboxRef] = set()
        self._publishing = False
        self._sweeper: Any = None
        self._stopped = False
        self._last_report = float("-inf")
        self._to_mark: list[OutboxRef] = []
        self._first_to_mark_at = 0.0  # when the oldest of _to_mark was acknowledged (monotonic)
        self._more = Event()  # set when an event is queued (or a flush wants the marks now)
        self._flushing = False
        self._marking = False  # a marker greenlet runs (it marks whatever _to_mark holds)

    # -- what the handlers call (never blocks) ----------------------------------------------------

    @property
    def backlog(self) -> int:
        """Stored events of this process not acknowledged by the broker yet."""
        return len(self._queue)

    def check_capacity(self) -> None:
        """Raise ``BacklogFull`` while the backlog is at its bound."""
        if len(self._queue) >= self._max_backlog:
            raise BacklogFull()

    def message_stored(self, message: ChatMessage, record: events.Record) -> None:
        """Publish a new message that was just stored and kept in its room's log as ``record``."""
        topic, key, value = record
        self._enqueue(RelayEntry(topic, key, value, (message.kind, message.id)))

    def change_stored(self, change: PendingChange, message: ChatMessage | None, record: events.Record) -> None:
        """Publish an edit (``message`` as edited) or a delete that was just made and kept as ``record``."""
        topic, key, value = record
        self._enqueue(RelayEntry(topic, key, value, (CHANGE_PLACE, change.id)))

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sweep (its first run picks up what an earlier process left unpublished)."""
        self._stopped = False
        self._sweeper = self._spawn(self._sweep_forever)

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop sweeping and publish what is queued, for up to ``timeout_s``; whether all of it went."""
        self._stopped = True
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
        flushed = self.flush(timeout_s)
        if not flushed:
            log.warning("relay stopped with %d events unpublished; a sweep elsewhere will publish them",
                        len(self._queue))
        return flushed

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the queue to empty and what was acknowledged to be marked
        (marked at once, not after MARK_AFTER_S); whether the queue emptied."""
        deadline = self._monotonic() + timeout_s
        self._flushing = True
        self._more.set()  # a publisher waiting to mark marks now
        try:
            while (self._queue or self._publishing or self._marking) and self._monotonic() < deadline:
                self._sleep(0.02)
        finally:
            self._flushing = False
        return not self._queue

    # -- publishing ----------------------------------------------------------------------------------

    def _enqueue(self, entry: RelayEntry) -> None:
        if entry.ref in self._queued:
            return
        self._queue.append(entry)
        self._queued.add(entry.ref)
        self._more.set()
        if not self._publishing:
            self._publishing = True
            self._spawn(self._publish_forever)

    def _publish_forever(self) -> None:
        """The publisher: batches until the queue is empty (the next event starts another)."""
        failures = 0
        try:
            # Waiting to mark yields: what was queued meanwhile is published by this same
            # loop, since _enqueue starts no second publisher while this one runs.
            while self._queue or (self._to_mark and not self._marking):
                if not self._queue:
                    self._mark_when_quiet()
                    continue
                batch = self._queue[:self._batch]
                published, failed = self._publish(batch)
                del self._queue[:len(batch)]
                self._queue[0:0] = failed
                self._forget(published)
                failures = failures + 1 if failed else 0
                if failed:
                    self._mark_published()
                    self._report_failure(len(failed))
                    self._sleep(min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(failures - 1, 8)))
        finally:
            self._publishing = False

    def _publish(self, batch: list[RelayEntry]) -> tuple[list[RelayEntry], list[RelayEntry]]:
        """Hand ``batch`` to the producer in order; (acknowledged, not acknowledged in order)."""
        acks = []
        not_handed: list[RelayEntry] = []
        for index, entry in enumerate(batch):
            try:
                acks.append((entry, self._bus.publish_nowait(entry.topic, entry.key, entry.value)))
            except Exception:  # noqa: BLE001 - the producer could not take it: keep it and what follows
                not_handed = batch[index:]
                break
        published: list[RelayEntry] = []
        failed: list[RelayEntry] = []
        for entry, ack in acks:
            try:
                ack.wait()
                published.append(entry)
            except Exception:  # noqa: BLE001 - not acknowledged: tried again, never dropped
                failed.append(entry)
        return published, failed + not_handed

    def _mark_when_quiet(self) -> None:
        """The queue ran dry: mark what was acknowledged unless an event comes within what is left
        of MARK_AFTER_S (then it is published first, and marked with these)."""
        self._more.clear()
        left = self._first_to_mark_at + self._mark_after_s - self._monotonic()
        if left > 0 and not self._flushing:
            self._more.wait(left)
        if not self._queue:
            self._mark_published()

    def _forget(self, published: list[RelayEntry]) -> None:
        for entry in published:
            self._queued.discard(entry.ref)
        if published and not self._to_mark:
            self._first_to_mark_at = self._monotonic()
        self._to_mark += [entry.ref for entry in published]
        if len(self._to_mark) >= MARK_EVERY:
            self._mark_published()

    def _mark_published(self) -> None:
        """Have what was acknowledged marked, by the marker greenlet (started unless it runs)."""
        if self._to_mark and not self._marking:
            self._marking = True
            self._spawn(self._mark_forever)

    def _mark_forever(self) -> None:
        """The marker: marks what was acknowledged until nothing is left to mark.

        Why a greenlet of its own: a mark is a database call (milliseconds, and tens of them on
        a loaded database); made by the publisher, every event queued meanwhile waited for it.
        """
        try:
            while self._to_mark:
                refs, self._to_mark = self._to_mark, []
                try:
                    self._outbox.published(refs)
                except Exception:  # noqa: BLE001 - delivered anyway; a later sweep re-publishes, consumers drop it
                    log.warning("could not mark %d published events; they may be published again", len(refs))
        finally:
            self._marking = False

    def _report_failure(self, failed: int) -> None:
        now = self._monotonic()
        if now - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = now
        log.warning("kafka did not take %d events; %d stored events wait for the broker", failed, len(self._queue))
        if self._ensure_topics is not None:
            try:
                self._ensure_topics()
            except Exception:  # noqa: BLE001 - the broker is down: the next report tries again
                log.debug("could not ensure the topics", exc_info=True)

    # -- the sweep -------------------------------------------------------------------------------------

    def _sweep_forever(self) -> None:
        next_nonce_sweep = self._monotonic()
        failing = False
        while not self._stopped:
            try:
                self.sweep()
                if self._monotonic() >= next_nonce_sweep:
                    self._outbox.forget_nonces(self._now() - self._retention)
                    self._room_log.prune()
                    next_nonce_sweep = self._monotonic() + NONCE_SWEEP_INTERVAL_S
                if failing:
                    log.info("outbox sweep works again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - the database is down: the next sweep tries again
                if not failing:  # once per outage, not every sweep
                    log.warning("outbox sweep failed: %s", getattr(exc, "message", type(exc).__name__))
                failing = True
            self._sleep(self._sweep_interval_s)

    def sweep(self) -> int:
        """Take over events that stayed unpublished too long; how many were queued."""
        claimed = self._outbox.claim_stale(self._now() - self._stale, self._owner, self._batch)
        queued = 0
        unqueued = [message for message in claimed.messages if (message.kind, message.id) not in self._queued]
        if unqueued:
            queued += self._recover(lambda: self._recover_messages(unqueued))
        for change in claimed.changes:
            queued += self._recover(lambda: self._recover_change(change))
        if queued:
            log.info("outbox sweep queued %d events stored earlier and not published", queued)
        return queued

    @staticmethod
    def _recover(step: Callable[[], int | None]) -> int:
        """One claimed entry; its failure costs only itself (it is claimable again later)."""
        try:
            queued = step()
            return 1 if queued is None else queued
        except Exception:  # noqa: BLE001 - a poison entry must not hold back the rest of the sweep
            log.warning("outbox sweep skipped an entry it could not queue", exc_info=True)
            return 0

    def _recover_messages(self, messages: list[ChatMessage]) -> int:
        """Keep claimed messages in their rooms' logs and queue them; one by one if the batch fails."""
        try:
            kept = self._room_log.keep(messages)
        except Exception:  # noqa: BLE001 - find the entry that fails, so it costs only itself
            if len(messages) == 1:
                raise
            return sum(self._recover(lambda: self._recover_messages([message])) for message in messages)
        for numbered in kept:
            self.message_stored(numbered.message, numbered.record)
        return len(kept)

    def _recover_change(self, change: PendingChange) -> int:
        """Queue a recorded change if it happened; forget it if it did not (never acknowledged)."""
        if (CHANGE_PLACE, change.id) in self._queued:
            return 0
        message = self._messages.get(change.kind, change.message_id)
        if _happened(change, message):
            self.change_stored(change, message, self._room_log.keep_change(change, message))
            return 1
        self._outbox.drop_change(change.id)
        if change.seq is not None:
            self._room_log.void([(change.room, change.seq)])
        return 0


def _happened(change: PendingChange, message: ChatMessage | None) -> bool:
    """Whether the message shows ``change``: gone for a delete, this very edit for a modify."""
    if change.action == "delete":
        return message is None
    return message is not None and message.edited_at is not None and change.edited_at is not None \
        and stored_time(message.edited_at) == stored_time(change.edited_at)
