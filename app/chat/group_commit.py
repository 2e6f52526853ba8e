"""Group commit of new messages: one ``insert_many`` per round, published in submission order.

Owns :class:`GroupCommit`, the only path by which new messages (SENT messages, replies and
uploaded files' messages) reach MongoDB and Kafka. A SEND handler submits its message and
returns at once; one committer greenlet per process stores everything submitted since its
last round with one ``insert_many`` and then hands each stored message to its ``publish`` callback (which only queues the record with the
Kafka producer), in the order the messages were submitted.

Why: storing one message at a time made each connection's reader wait a MongoDB round trip
per SEND, which capped a single sender's rate, and made the database's per-request cost
(not its per-document cost) the bottleneck under many senders. Batches form by themselves:
while one round is in the database, new submissions gather for the next, so a quiet server
stores each message at once and a busy one stores many per round trip. There is no timer and
no added delay.

Ordering: a connection's reader submits its SENDs in frame order, and rounds run one after
another, each publishing in submission order, so every connection's messages reach Kafka in
the order it sent them (the per-room order subscribers see). A message that failed to store
is reported to its own sender; it does not hold back or fail the others of its round.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Generic, Sequence, TypeVar

import gevent
from gevent.event import Event

from app.chat.model import ChatMessage
from app.chat.ports import MessageWriter
from app.errors import BackendError

__all__ = ["GroupCommit", "Submitted", "MAX_BATCH"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The most messages stored by one insert_many: bounds the request size and how long the
# first message of a huge round waits for the last one's bytes to be encoded.
MAX_BATCH = 256


class Submitted(Generic[T]):
    """One submitted message: ``wait()`` returns what its ``publish`` returned, or raises why not."""

    __slots__ = ("message", "_publish", "_done", "_result", "_error")

    def __init__(self, message: ChatMessage, publish: Callable[[ChatMessage], T]) -> None:
        self.message = message
        self._publish = publish
        self._done = Event()
        self._result: T | None = None
        self._error: BaseException | None = None

    def wait(self) -> T:
        """Block until the message was stored and handed to ``publish``.

        Raises:
            BackendError: the message was not stored (nothing to undo).
            Exception: whatever ``publish`` raised (it undoes its own store first).
        """
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def _stored(self, stored: ChatMessage) -> None:
        try:
            self._result = self._publish(stored)
        except Exception as exc:  # noqa: BLE001 - delivered to the waiting sender
            self._error = exc
        self._done.set()

    def _failed(self, error: BaseException) -> None:
        self._error = error
        self._done.set()


class GroupCommit:
    """Stores submitted messages in rounds and publishes each in submission order.

    Args:
        store: where messages go (``insert_many`` reports each message's own outcome).
        max_batch: the most messages per ``insert_many``.
        spawn: starts the committer greenlet (one at a time, only while there is work).
    """

    def __init__(self, store: MessageWriter, *, max_batch: int = MAX_BATCH,
                 spawn: Callable[..., Any] = gevent.spawn) -> None:
        self._store = store
        self._max_batch = max_batch
        self._spawn = spawn
        self._queued: list[Submitted[Any]] = []
        self._running = False

    def submit(self, message: ChatMessage, publish: Callable[[ChatMessage], T]) -> Submitted[T]:
        """Queue ``message``; once stored, ``publish(stored)`` runs in the committer. Never blocks."""
        submitted = Submitted(message, publish)
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

    def _commit(self, batch: Sequence[Submitted[Any]]) -> None:
        try:
            results: Sequence[ChatMessage | BaseException] = self._store.insert_many(
                [submitted.message for submitted in batch])
        except Exception as exc:  # noqa: BLE001 - a store bug must still answer every sender
            log.exception("insert_many failed")
            results = [exc if isinstance(exc, BackendError) else BackendError("message not stored")] * len(batch)
        for submitted, result in zip(batch, results):
            if isinstance(result, BaseException):
                submitted._failed(result)
            else:
                submitted._stored(result)
