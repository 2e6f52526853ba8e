"""One connection's SENDs in flight: their RECEIPTs and ERRORs, in frame order, bounded.

Owns :class:`InflightSends`; the session (app/stomp/session.py) owns one per connection and
gives it the session's one route of frames to the client as ``deliver``.

A SEND handler may return a ``Pending`` (app/contracts.py): the store is done and the record
is on its way to Kafka, but the broker's ack is not in yet. The reader then goes on to the
next frame, and the reply owed for that SEND waits here. Entries are kept oldest first;
each one is either

- in flight: a ``Pending``, and the ``receipt-id`` its RECEIPT (on success) or ERROR (on
  failure) will carry; or
- ready: the replies of a later frame (a SUBSCRIBE's RECEIPT, a refusal's ERROR) that must
  not overtake the SENDs before it.

One acknowledger greenlet per connection, started by the first entry and gone once the
queue is empty, waits for the oldest entry, delivers its frames, drops it and moves on: the
replies leave in frame order whatever order the acks come back in. The reader waits while
``limit`` entries are queued (back-pressure: the client's next frames stay unread, nothing
is dropped).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import gevent
from gevent.event import Event

from app.contracts import Pending
from app.errors import ChatServerError
from app.stomp import frames as f
from app.stomp.frames import Frame

__all__ = ["InflightSends", "Deliver"]

log = logging.getLogger(__name__)

Deliver = Callable[[tuple[Frame, ...]], None]
"""Queues frames for the client, in order; never blocks."""


@dataclass(frozen=True, slots=True)
class _Entry:
    frames: tuple[Frame, ...] = ()  # ready frames (no ``pending``)
    pending: Pending | None = None
    receipt_id: str | None = None  # what the RECEIPT (or the ERROR) of ``pending`` carries


class InflightSends:
    """The ordered, bounded replies owed to one connection (see the module docstring).

    Only the connection's reader adds entries; only the acknowledger removes them.

    Args:
        limit: the most entries queued at once; the reader waits for the oldest beyond it.
        deliver: queues a finished entry's frames for the client (the acknowledger calls it).
        spawn: starts the acknowledger greenlet.
    """

    def __init__(self, *, limit: int, deliver: Deliver, spawn: Callable[..., Any] = gevent.spawn) -> None:
        self._limit = limit
        self._deliver = deliver
        self._spawn = spawn
        self._entries: deque[_Entry] = deque()
        self._left = Event()  # set when an entry left the queue
        self._idle = Event()  # set while no acknowledger runs (the queue is empty)
        self._idle.set()

    def __len__(self) -> int:
        return len(self._entries)

    def wait_for_room(self) -> None:
        """Return once fewer than ``limit`` entries are queued (bounded by the Pendings' own waits)."""
        while len(self._entries) >= self._limit:
            self._left.clear()
            self._left.wait()

    def add_pending(self, pending: Pending, receipt_id: str | None) -> None:
        """Owe the reply of a SEND whose handler returned ``pending``: RECEIPT if asked for, or ERROR."""
        self._add(_Entry(pending=pending, receipt_id=receipt_id))

    def add_ready(self, frames: tuple[Frame, ...]) -> None:
        """Queue frames that are ready now behind everything owed before them."""
        self._add(_Entry(frames))

    def drain(self) -> None:
        """Wait until every owed reply was delivered (before a close, after which nothing is sent)."""
        self._idle.wait()

    def _add(self, entry: _Entry) -> None:
        self.wait_for_room()
        self._entries.append(entry)
        if self._idle.is_set():
            self._idle.clear()
            self._spawn(self._acknowledge)

    def _acknowledge(self) -> None:
        """The acknowledger: the oldest entry's replies, then the next, until none is left."""
        while self._entries:
            entry = self._entries[0]
            frames = _replies(entry)
            try:
                self._deliver(frames)
            except Exception:  # noqa: BLE001 - the connection's later replies must still go out
                log.exception("could not queue a reply")
            # Dropped only now: while its frames are being queued, the reader still sees it
            # in flight and holds newer replies back.
            self._entries.popleft()
            self._left.set()
        self._idle.set()


def _replies(entry: _Entry) -> tuple[Frame, ...]:
    """What ``entry`` owes: its frames, or its RECEIPT (with the headers the Pending added) once
    the Pending succeeded, else an ERROR."""
    if entry.pending is None:
        return entry.frames
    try:
        added = entry.pending.wait()
    except ChatServerError as exc:
        return (f.error(exc.message, receipt_id=entry.receipt_id),)
    except Exception:  # noqa: BLE001 - never put an unknown exception's text on the wire
        log.exception("a SEND failed after its handler returned")
        return (f.error(ChatServerError.wire_message, receipt_id=entry.receipt_id),)
    if entry.receipt_id is None:
        return ()
    return (f.receipt(entry.receipt_id, added.items() if added else ()),)
