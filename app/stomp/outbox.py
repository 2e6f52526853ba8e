"""The bounded outbox between everyone who produces frames for one client and its single writer.

Owns :class:`Outbox`, the items it holds (encoded STOMP frames, :class:`Pong`, :class:`Wire`),
the :class:`Framing` a transport wraps frames in, and the WebSocket close codes an outbox
ends with. Writers are not here: each transport's writer lives with its transport
(``app/stomp/ws.py`` pushes, ``app/stomp/sockjs.py`` pulls).

Who may touch an outbox:

- producers (fan-out, the session's replies, heart-beat timers; any greenlet or a loop
  callback): only :meth:`Outbox.offer`, :meth:`Outbox.offer_many`,
  :meth:`Outbox.offer_wire` and :meth:`Outbox.offer_pong`, which never block. A False
  answer means the client is too slow.
- one writer at a time: it takes what is queued and writes it to the socket.

The direct path (WebSockets): while no writer runs and nothing is queued, ``offer`` writes a
frame itself with a non-blocking send (:class:`WireSender`) if the kernel takes it at once.
That skips the queue, a wake-up and two greenlet switches per frame, which were most of the
per-delivery cost, and an idle connection holds no writer greenlet at all (bench/FINDINGS.md).
It is still one writer at a time: the direct path only runs when no writer exists, and never
waits; whatever it could not write is queued as raw :class:`Wire` bytes, and a writer is
started for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from gevent import get_hub
from gevent.event import Event
from gevent.exceptions import ConcurrentObjectUseError
from greenlet import getcurrent, greenlet

__all__ = [
    "Outbox",
    "Pong",
    "Wire",
    "WireSender",
    "Framing",
    "RawFraming",
    "BATCH_FRAMES",
    "NORMAL",
    "GOING_AWAY",
    "PROTOCOL_ERROR",
    "POLICY_VIOLATION",
]

# Frames one writer takes from the outbox per wake-up (one SockJS array, one poll answer).
BATCH_FRAMES = 64

# WebSocket close codes (RFC 6455 7.4.1) a connection ends with.
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
POLICY_VIOLATION = 1008


@dataclass(frozen=True, slots=True)
class Pong:
    """A WebSocket pong the writer owes the client (the reader must not write)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Wire:
    """Bytes already framed for the wire that the direct path could not finish writing."""

    data: bytes


class WireSender(Protocol):
    """A WebSocket's write side as the direct path uses it: framing, and a send that never waits."""

    def send_frames(self, frames: list[bytes]) -> bytes | None:
        """Frame ``frames`` as transport messages and ``try_send`` them (one call: the fan-out's hot path)."""
        ...

    def try_send(self, wire: bytes) -> bytes | None:
        """Send what the kernel takes now; None when all of it went, else the unsent rest."""
        ...


class Outbox:
    """The bounded queue between everyone who produces frames for a client and its writer.

    A plain list. Two ways to be drained:

    - pulled (SockJS HTTP receivers): one reader takes everything queued at once (``take``)
      and waits (``wait``) only after finding the list empty; ``offer`` schedules one
      direct wake-up of a waiting reader (a loop callback), so a burst costs one wake-up.
      Nothing yields between the reader's check and its wait, so no wake-up is lost; a
      late one is only spurious (the reader looks again). This is what a
      ``gevent.queue.Queue`` does per item, minus its per-item bookkeeping
      (``bench/outbox_micro.py``).
    - pushed (WebSockets, after :meth:`push_to`): the direct path of the module docstring
      while no writer runs; otherwise items are queued and ``start_writer`` is called once
      to start a writer, which drains the queue and then calls :meth:`writer_finished`.

    Any number of producers (greenlets or loop callbacks), none of which ever blocks. After
    ``close`` nothing more is accepted; the writer drains what is queued, then ``finished``
    is true and it tells the client and closes.
    """

    __slots__ = ("_items", "_max", "_waiter", "_wake_pending", "closed", "close_code", "close_reason", "ended",
                 "last_write", "_wire", "_start_writer", "_writing", "_ended_event", "_pong")

    def __init__(self, max_frames: int) -> None:
        self._items: list[bytes | Pong | Wire] = []
        self._max = max_frames
        self._waiter: greenlet | None = None  # the reader, while it is blocked in wait()
        self._wake_pending = False
        self.closed = False
        self.close_code = NORMAL
        self.close_reason = ""
        self.ended = False  # set once the client was told the end, or the connection broke
        self.last_write = time.monotonic()
        self._wire: WireSender | None = None
        self._start_writer: Callable[[], None] | None = None
        self._writing = False  # pushed: a writer was started and has not finished
        self._ended_event: Event | None = None
        self._pong: bytes | None = None  # the one pong owed (outside the bound)

    def push_to(self, wire: WireSender, start_writer: Callable[[], None]) -> None:
        """Be drained by writes of our own: direct ones, and a writer started when needed."""
        self._wire = wire
        self._start_writer = start_writer

    def offer(self, item: bytes | Pong) -> bool:
        """Queue ``item`` (or write it now: the direct path); False only when the queue is full."""
        if item.__class__ is bytes:
            return self.offer_many([item])  # type: ignore[list-item]
        if self.closed or self.ended:
            return True  # dropped on purpose: nobody is owed anything after close
        if len(self._items) >= self._max:
            return False
        self._items.append(item)  # a pong: only the writer sends control frames
        self._notify()
        return True

    def offer_many(self, frames: list[bytes]) -> bool:
        """``offer`` for several frames at once: written together or queued together, in order.

        False (nothing queued) when they do not all fit: the client is too slow.
        """
        if self.closed or self.ended:
            return True  # dropped on purpose: nobody is owed anything after close
        items = self._items
        if len(items) + len(frames) > self._max:
            return False
        if self._may_write_now():
            unsent = self._wire.send_frames(frames)  # type: ignore[union-attr]
            if unsent is None:
                self.last_write = time.monotonic()
                return True
            items.append(Wire(unsent))
        else:
            items.extend(frames)
        self._notify()
        return True

    def offer_pong(self, payload: bytes) -> None:
        """Owe the client a pong; only the latest one is kept (RFC 6455 5.5.3), outside the bound.

        So pings cost at most one queued item, whatever their number, and never make the
        client a slow consumer.
        """
        if self.closed or self.ended:
            return
        self._pong = payload
        self._notify()

    def offer_wire(self, wire: bytes) -> None:
        """Transport bytes that are not STOMP traffic (a SockJS ``h``): written in turn, never counted."""
        if self.closed or self.ended:
            return
        if self._may_write_now():
            unsent = self._wire.try_send(wire)  # type: ignore[union-attr]
            if unsent is None:
                return
            wire = unsent
        self._items.append(Wire(wire))
        self._notify()

    def _may_write_now(self) -> bool:
        """The direct path is open: pushed, nothing queued, and no writer that could be mid-write."""
        return self._wire is not None and not self._writing and not self._items and self._pong is None

    def close(self, final: bytes | None = None, *, discard_backlog: bool = False, code: int = NORMAL,
              reason: str = "") -> None:
        """Accept nothing more; ``final`` is the last frame the writer sends, ``code`` and ``reason`` its close frame's."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        if discard_backlog:
            self._items = []
            self._pong = None
        if final is not None:
            if len(self._items) >= self._max:  # too far behind to get both: keep the last word
                self._items = []
            self._items.append(final)
        self._notify()

    def _notify(self) -> None:
        """Something to write: start the writer (pushed) or wake the reader (pulled)."""
        if self._start_writer is not None:
            if not self._writing and not self.ended:
                self._writing = True
                self._start_writer()
        elif self._waiter is not None and not self._wake_pending:
            self._schedule_wake()

    def writer_finished(self) -> None:
        """The pushed writer found nothing more to write (or the connection broke) and ends."""
        self._writing = False

    def mark_ended(self) -> None:
        """The client was told the end (or cannot be told anything any more)."""
        self.ended = True
        if self._ended_event is not None:
            self._ended_event.set()

    def wait_ended(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``mark_ended``; whether it came."""
        if self.ended:
            return True
        if self._ended_event is None:
            self._ended_event = Event()
        return self._ended_event.wait(timeout)

    def take(self, limit: int) -> list[bytes | Pong | Wire]:
        """Up to ``limit`` queued items, oldest first, without waiting (empty: nothing queued).

        A pong owed goes first (a control frame may come between any two messages).
        """
        if self._pong is not None:
            pong, self._pong = Pong(self._pong), None
            return [pong, *self.take(limit - 1)] if limit > 1 else [pong]
        items = self._items
        if len(items) <= limit:
            self._items = []
            return items
        batch = items[:limit]
        del items[:limit]
        return batch

    def wait(self, timeout: float | None) -> bool:
        """Wait until something is queued or the outbox is closed; False after ``timeout`` seconds.

        ``timeout`` None waits as long as it takes. May return True with nothing queued (a
        late wake-up): callers look again. Only the outbox's one reader calls it.

        Raises:
            ConcurrentObjectUseError: another greenlet is already waiting on this outbox.
        """
        if self._items or self.closed:
            return True
        if self._waiter is not None:
            raise ConcurrentObjectUseError("this outbox already has a waiting reader")
        hub = get_hub()
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(max(0.0, timeout))
            timer.start(self._timed_out, update=True)
        self._waiter = getcurrent()
        try:
            return bool(hub.switch())
        finally:
            self._waiter = None
            if timer is not None:
                timer.close()

    def _schedule_wake(self) -> None:
        self._wake_pending = True
        get_hub().loop.run_callback(self._wake)

    def _wake(self) -> None:
        """Loop callback (in the hub): resume the reader if it is still waiting."""
        self._wake_pending = False
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.switch(True)

    def _timed_out(self) -> None:
        """Timer callback (in the hub): the reader's wait is over, empty-handed."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.switch(False)

    @property
    def finished(self) -> bool:
        """Closed and fully drained: only the closing words are left to send."""
        return self.closed and not self._items

    def note_written(self) -> None:
        self.last_write = time.monotonic()

    def __len__(self) -> int:
        return len(self._items)


class Framing(Protocol):
    """How a transport wraps frames: raw STOMP over WebSocket, or one of SockJS's encodings."""

    opening: bytes | None  # sent first on a new connection (SockJS "o")
    idle: bytes | None  # sent when the writer had nothing for its idle interval (SockJS "h")
    closing: bytes | None  # sent last (SockJS 'c[3000,"Go away!"]')

    def encode(self, frames: list[bytes]) -> list[bytes]:
        """The transport messages carrying ``frames``, in order."""
        ...


class RawFraming:
    """STOMP straight over a WebSocket: one frame per message, nothing around it."""

    opening = None
    idle = None
    closing = None

    def encode(self, frames: list[bytes]) -> list[bytes]:
        return frames


