"""Group commit of new messages: one ``insert_many`` per round, handed on in submission order.

Owns :class:`GroupCommit`, the only path by which new messages (SENT messages, replies and
uploaded files' messages) are stored. A SEND handler submits its message and returns at
once; one committer greenlet per process, per round: numbers everything submitted since its
last round in its room's sequence (one allocation for every room of the round,
``room_log.RoomLog``), stores it with one ``insert_many`` (durably, each message marked
unpublished), keeps the stored messages' records in their rooms' logs (one write), and then
hands each newly stored message and its record to its ``after_store`` callback (which only
queues it with the outbox relay), in the order the messages were submitted.

A number whose message was surely not stored is kept as a void, and the message's count (taken
with its number) is taken back. When the log cannot be written
after the messages were stored, their senders still get their RECEIPT (the messages are
stored durably) and nothing is handed on: the relay's sweep keeps and publishes them later.

Why: storing one message at a time made each connection's reader wait a MongoDB round trip
per SEND, which capped a single sender's rate, and made the database's per-request cost
(not its per-document cost) the bottleneck under many senders. Batches form by themselves:
while one round is in the database, new submissions gather for the next, so a quiet server
stores each message at once and a busy one stores many per round trip. There is no timer and
no added delay.

Ordering: a connection's reader submits its SENDs in frame order, and rounds run one after
another, each handing on in submission order, so every connection's messages reach the relay
(and Kafka) in the order it sent them (the per-room order subscribers see). A message that
failed to store is reported to its own sender; it does not hold back or fail the others of
its round. A message whose nonce its author already used is not stored again: its sender is
answered with the original (``Repeated``), which is not handed on a second time.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import gevent
from gevent.event import Event

from app.chat.events import Record
from app.chat.model import ChatMessage, Repeated
from app.chat.ports import MessageWriter
from app.chat.room_log import Numbered, RoomLog
from app.errors import BackendError, BackendUnavailable

# What a new message's callback gets once it is stored and kept: the message and its record.
AfterStore = Callable[[ChatMessage, Record], None]

__all__ = ["GroupCommit", "Submitted", "MAX_BATCH"]

log = logging.getLogger(__name__)

# The most messages stored by one insert_many: bounds the request size and how long the
# first message of a huge round waits for the last one's bytes to be encoded.
MAX_BATCH = 256


class Submitted:
    """One submitted message: ``wait()`` returns it as stored (or as stored the first time)."""

    __slots__ = ("message", "_after_store", "_done", "_result", "_error")

    def __init__(self, message: ChatMessage, after_store: AfterStore) -> None:
        self.message = message
        self._after_store = after_store
        self._done = Event()
        self._result: ChatMessage | None = None
        self._error: BaseException | None = None

    def wait(self) -> ChatMessage:
        """Block until the message was stored; the stored message (the original, for a repeated nonce).

        Raises:
            BackendError: the message was not stored.
        """
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _stored(self, stored: ChatMessage | Repeated, kept: Numbered | None) -> None:
        """Stored (or a repeat); ``kept`` is its kept record, None when the log was not written."""
        if isinstance(stored, Repeated):
            self._result = stored.original
        else:
            self._result = stored
            try:
                if kept is not None:
                    self._after_store(kept.message, kept.record)
            except Exception:  # noqa: BLE001 - stored is stored: the relay's sweep publishes it
                log.exception("after-store step failed for message %s", stored.id)
        self._done.set()

    def _failed(self, error: BaseException) -> None:
        self._error = error
        self._done.set()


class GroupCommit:
    """Stores submitted messages in rounds and hands each on in submission order.

    Args:
        store: where messages go (``insert_many`` reports each message's own outcome).
        room_log: numbers the messages and keeps their records.
        max_batch: the most messages per ``insert_many``.
        spawn: starts the committer greenlet (one at a time, only while there is work).
    """

    def __init__(self, store: MessageWriter, room_log: RoomLog, *, max_batch: int = MAX_BATCH,
                 spawn: Callable[..., Any] = gevent.spawn) -> None:
        self._store = store
        self._room_log = room_log
        self._max_batch = max_batch
        self._spawn = spawn
        self._queued: list[Submitted] = []
        self._running = False

    def submit(self, message: ChatMessage, after_store: AfterStore) -> Submitted:
        """Queue ``message``; once stored, ``after_store(stored, record)`` runs in the committer. Never blocks."""
        submitted = Submitted(message, after_store)
        self._queued.append(submitted)
        if not self._running:
            self._running = True
            self._spawn(self._run)
        return submitted

    def __len__(self) -> int:
        """Messages submitted and not stored yet."""
        return len(self._queued)

    def _run(self) -> None:
        """The committer: rounds until nothing is queued (new work starts a new committer)."""
        try:
            while self._queued:
                batch = self._queued[:self._max_batch]
                del self._queued[:self._max_batch]
                self._commit(batch)
        finally:
            self._running = False

    def _commit(self, batch: Sequence[Submitted]) -> None:
        try:
            numbered = self._room_log.number([submitted.message for submitted in batch])
            results: Sequence[ChatMessage | Repeated | BaseException] = self._store.insert_many(numbered)
        except Exception as exc:  # noqa: BLE001 - a store bug must still answer every sender
            log.log(logging.WARNING if isinstance(exc, BackendError) else logging.ERROR, "round not stored: %r", exc)
            results = [exc if isinstance(exc, BackendError) else BackendError("message not stored")] * len(batch)
            numbered = []
        self._room_log.withdraw([message for message, result in zip(numbered, results) if _surely_not_stored(result)])
        kept = self._keep([result for result in results if isinstance(result, ChatMessage)])
        for submitted, result in zip(batch, results):
            if isinstance(result, BaseException):
                submitted._failed(result)
            else:
                submitted._stored(result, kept.get(result.id) if isinstance(result, ChatMessage) else None)

    def _keep(self, stored: list[ChatMessage]) -> dict[str, Numbered]:
        try:
            return {numbered.message.id: numbered for numbered in self._room_log.keep(stored)}
        except Exception:  # noqa: BLE001 - stored durably: answered, and the sweep publishes them
            log.warning("could not keep the records of %d stored messages; the outbox sweep will", len(stored))
            return {}


def _surely_not_stored(result: object) -> bool:
    """Whether the round's outcome for one message says it is not stored: not for an outage,
    where the write may have reached the database after all (the outbox sweep then finds it)."""
    return isinstance(result, Repeated) or (isinstance(result, BaseException)
                                             and not isinstance(result, BackendUnavailable))
