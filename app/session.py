"""One client connection's life: the bounded outbox, its single writer, timers and the close path.

Owns:

- :class:`Outbox`: the bounded queue of encoded frames waiting for one client.
- :class:`Session`: drives the parser and the :class:`~app.stomp.handler.StompHandler` of
  one connection, keeps its CONNECT and heart-beat deadlines (one event-loop timer at a
  time, no greenlet; none at all once connected with heart-beats off), and owns the close
  path, including the once-only ``ChatApplication.disconnected`` call.
- :class:`SessionHub`: what every session of this process shares (settings, application,
  registry, the live sessions by id).
- The writers: :func:`drain_websocket` (a WebSocket's writer greenlet, which exists only
  while the socket has a backlog) and :func:`poll_response` / :func:`stream_outbox` (a
  SockJS HTTP receiver while attached). With the direct path below, these are the only code
  that writes to a client.

Greenlets of one connection and what each may do, and who else touches it:

- reader (the request greenlet, or the SockJS ``xhr_send`` holding the session's lock):
  the only caller of :meth:`Session.receive_data`, so inbound frames are handled strictly
  in order; handlers may block on I/O there, which delays only this connection.
- writer: takes from the outbox and writes the socket, blocking as long as the client is
  slow. A WebSocket has one only while frames are queued: the outbox starts it when the
  first frame is queued and it ends when the queue is empty again.
- the session's loop timer (a callback in the hub, not a greenlet): CONNECT timeout,
  heart-beats out (only :meth:`Outbox.offer`), silence detection in; a close it decides on
  runs in a short-lived greenlet of its own.
- fan-out (any greenlet): only :meth:`Outbox.offer`, which never blocks; when it reports
  overflow the caller calls :meth:`Session.close_slow_consumer`, which never blocks either.

The direct path (WebSockets): while no writer runs and nothing is queued, ``offer`` writes a
frame itself with a non-blocking send (:class:`WireSender`) if the kernel takes it at once.
That skips the queue, a wake-up and two greenlet switches per frame, which were most of the
per-delivery cost, and an idle connection holds no writer greenlet at all (bench/FINDINGS.md).
It is still one writer at a time: the direct path only runs when no writer exists, and never
waits; whatever it could not write is queued as raw :class:`Wire` bytes, and a writer is
started for them.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import gevent
from gevent import get_hub
from gevent.event import Event
from gevent.exceptions import ConcurrentObjectUseError
from greenlet import getcurrent, greenlet

from app.auth import TokenVerifier
from app.contracts import ChatApplication, ClientConnection
from app.errors import ProtocolError
from app.registry import SubscriptionRegistry
from app.settings import Settings
from app.stomp import frames as f
from app.stomp.frames import Frame
from app.stomp.handler import AWAITING_CONNECT, Outcome, StompHandler
from app.stomp.heartbeat import is_overdue
from app.stomp.parser import FrameParser

__all__ = [
    "Outbox",
    "Pong",
    "Wire",
    "WireSender",
    "Framing",
    "RawFraming",
    "MessageSink",
    "Session",
    "SessionHub",
    "OPEN",
    "CLOSING",
    "CLOSED",
    "CLOSE_GRACE_S",
    "new_session_id",
    "drain_websocket",
    "poll_response",
    "stream_outbox",
]

log = logging.getLogger(__name__)

OPEN = "open"
CLOSING = "closing"
CLOSED = "closed"

# How long a closing connection may take to flush its last frames before its socket is
# shut: a client that stopped reading would otherwise hold the writer forever.
CLOSE_GRACE_S = 5.0
# Frames one writer takes from the outbox per wake-up (one SockJS array, one poll answer).
BATCH_FRAMES = 64
# Timers wake this much after a deadline, since is_overdue() is strict.
_TIMER_SLACK_S = 0.005

# WebSocket close codes (RFC 6455 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
POLICY_VIOLATION = 1008


def new_session_id() -> str:
    """A random session id for a raw WebSocket (the alphabet SockJS ids use too)."""
    return secrets.token_urlsafe(12)


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

    def encode(self, frames: list[bytes]) -> bytes:
        """``frames`` as transport messages, as bytes ready for the socket."""
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

    __slots__ = ("_items", "_max", "_waiter", "_wake_pending", "closed", "close_code", "ended", "last_write",
                 "_wire", "_start_writer", "_writing", "_ended_event")

    def __init__(self, max_frames: int) -> None:
        self._items: list[bytes | Pong | Wire] = []
        self._max = max_frames
        self._waiter: greenlet | None = None  # the reader, while it is blocked in wait()
        self._wake_pending = False
        self.closed = False
        self.close_code = NORMAL
        self.ended = False  # set once the client was told the end, or the connection broke
        self.last_write = time.monotonic()
        self._wire: WireSender | None = None
        self._start_writer: Callable[[], None] | None = None
        self._writing = False  # pushed: a writer was started and has not finished
        self._ended_event: Event | None = None

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
            unsent = self._wire.try_send(self._wire.encode(frames))  # type: ignore[union-attr]
            if unsent is None:
                self.last_write = time.monotonic()
                return True
            items.append(Wire(unsent))
        else:
            items.extend(frames)
        self._notify()
        return True

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
        return self._wire is not None and not self._writing and not self._items

    def close(self, final: bytes | None = None, *, discard_backlog: bool = False, code: int = NORMAL) -> None:
        """Accept nothing more; ``final`` is the last frame the writer sends."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if discard_backlog:
            self._items = []
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
        """Up to ``limit`` queued items, oldest first, without waiting (empty: nothing queued)."""
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


class MessageSink(Protocol):
    """The write side of a WebSocket, as the writer greenlet uses it."""

    def send_message(self, data: bytes) -> None: ...

    def send_messages(self, messages: list[bytes]) -> None:
        """Several messages in one write (one system call for a whole batch)."""
        ...

    def send_pong(self, payload: bytes) -> None: ...

    def send_raw(self, data: bytes) -> None:
        """Bytes that are already WebSocket frames (the rest of a direct write)."""
        ...

    def send_close(self, code: int) -> None: ...


def _frames(items: list[bytes | Pong | Wire]) -> list[bytes]:
    return [item for item in items if item.__class__ is bytes]


def _send_items(sink: MessageSink, framing: Framing, items: list[bytes | Pong | Wire]) -> None:
    """One batch from the outbox, in order: runs of frames in one write each, raw bytes and pongs between."""
    frames: list[bytes] = []
    for item in items:
        if item.__class__ is bytes:
            frames.append(item)  # type: ignore[arg-type]
            continue
        if frames:
            sink.send_messages(framing.encode(frames))
            frames = []
        if item.__class__ is Wire:
            sink.send_raw(item.data)  # type: ignore[union-attr]
        else:
            sink.send_pong(item.payload)  # type: ignore[union-attr]
    if frames:
        sink.send_messages(framing.encode(frames))


def drain_websocket(outbox: Outbox, sink: MessageSink, framing: Framing) -> None:
    """A WebSocket's writer: writes until the outbox is empty, then ends (the outbox starts another).

    Once the outbox is closed and drained it sends ``framing.closing`` and a close frame,
    and the outbox is ended. Blocks only on the socket, for as long as the client is slow.
    """
    try:
        while True:
            items = outbox.take(BATCH_FRAMES)
            if items:
                _send_items(sink, framing, items)
                outbox.note_written()
            elif outbox.closed:
                if framing.closing is not None:
                    sink.send_message(framing.closing)
                outbox.mark_ended()
                sink.send_close(outbox.close_code)
                return
            else:
                return  # nothing yields between this empty take and writer_finished
    except OSError:  # the peer is gone (WebSocketError is an OSError too); nothing to tell it
        outbox.mark_ended()
    finally:
        outbox.writer_finished()


def poll_response(outbox: Outbox, framing: Framing, *, timeout_s: float) -> bytes:
    """One SockJS polling answer: queued frames, else ``idle`` after ``timeout_s``, or the end."""
    frames = _frames(outbox.take(BATCH_FRAMES))
    if not frames and not outbox.closed and outbox.wait(timeout_s):
        frames = _frames(outbox.take(BATCH_FRAMES))
    if frames:
        outbox.note_written()
        return b"".join(framing.encode(frames))
    if outbox.finished:
        outbox.mark_ended()
        return framing.closing or b""
    return framing.idle or b""


def stream_outbox(outbox: Outbox, framing: Framing, *, idle_s: float, byte_limit: int) -> Iterator[bytes]:
    """A SockJS streaming body: frames as they come, ``idle`` when quiet, the end when closed.

    Stops after ``byte_limit`` bytes so the client opens a fresh request (proxies and
    browsers hold the whole streamed body in memory).
    """
    sent = 0
    while sent < byte_limit:
        frames = _frames(outbox.take(BATCH_FRAMES))
        if frames:
            chunk = b"".join(framing.encode(frames))
            yield chunk
            outbox.note_written()
            sent += len(chunk)
        elif outbox.finished:
            outbox.mark_ended()
            if framing.closing is not None:
                yield framing.closing
            return
        elif not outbox.wait(idle_s) and framing.idle is not None:
            yield framing.idle


@dataclass(eq=False)
class SessionHub:
    """What every STOMP session of this process shares, and the live sessions by id."""

    settings: Settings
    application: ChatApplication
    verifier: TokenVerifier
    registry: SubscriptionRegistry["Session"]
    node_id: str
    close_grace_s: float = CLOSE_GRACE_S
    _live: dict[str, "Session"] = field(default_factory=dict)

    def open_session(self, session_id: str, transport: str) -> "Session | None":
        """A new session, or None when ``session_id`` is already in use in this process."""
        if session_id in self._live:
            return None
        session = Session(self, session_id, transport)
        self._live[session_id] = session
        return session

    def release(self, session: "Session") -> None:
        if self._live.get(session.session_id) is session:
            del self._live[session.session_id]

    def get(self, session_id: str) -> "Session | None":
        return self._live.get(session_id)

    def close_all(self, message: str = "server shutting down") -> None:
        """Close every session (worker shutdown): ERROR, then each connection ends."""
        for session in list(self._live.values()):
            session.close(f.error(message), code=GOING_AWAY)

    def __len__(self) -> int:
        return len(self._live)


class Session:
    """One client connection: parser, STOMP handler, outbox, timers and the close path.

    States go OPEN -> CLOSING (no more input or fan-out; the writer flushes the last
    frames) -> CLOSED (``finish``: forgotten, the application told).
    """

    def __init__(self, hub: SessionHub, session_id: str, transport: str) -> None:
        settings = hub.settings
        self._hub = hub
        self.session_id = session_id
        self.transport = transport
        self.state = OPEN
        self.version = "1.2"  # the negotiated STOMP version; fan-out picks its template by it
        # Fan-out's cache: subscription id -> its escaped bytes in this session's version.
        self.subscription_bytes: dict[str, bytes] = {}
        self.outbox = Outbox(settings.outbox_max_frames)
        self.last_received = self._opened_at = time.monotonic()
        self._parser = FrameParser(max_frame_bytes=settings.stomp_max_frame_bytes,
                                   max_header_lines=settings.stomp_max_header_lines,
                                   max_header_bytes=settings.stomp_max_header_bytes)
        self._handler = StompHandler(application=hub.application, verifier=hub.verifier,
                                     registry=hub.registry, subscriber=self, session_id=session_id,
                                     node_id=hub.node_id, transport=transport,
                                     heartbeat_ms=settings.heartbeat_ms,
                                     max_subscriptions=settings.stomp_max_subscriptions,
                                     max_inflight_sends=settings.stomp_max_inflight_sends)
        self._timer: Any = None  # the one loop timer (a libev/libuv watcher, no greenlet) or None
        self._abort_timer: gevent.Greenlet | None = None
        self._abort_hooks: list[Callable[[], None]] = []
        self._finished = False

    def __repr__(self) -> str:
        return f"<Session {self.session_id} {self.transport} {self.state}>"

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def connection(self) -> ClientConnection | None:
        """The authenticated connection, once CONNECT succeeded."""
        return self._handler.connection

    @property
    def timer_armed(self) -> bool:
        """Whether a deadline of this session is pending (none once connected without heart-beats)."""
        return self._timer is not None

    def start(self) -> None:
        """Arm the CONNECT timeout (a loop timer: no greenlet)."""
        self._arm(self._opened_at + self._hub.settings.connect_timeout_s)

    def on_abort(self, hook: Callable[[], None]) -> None:
        """``hook`` runs if a graceful close does not finish in time (kill the writer, shut the socket)."""
        self._abort_hooks.append(hook)

    # Reader side ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client, in order; handles every complete frame they finish."""
        if self.state != OPEN:
            return
        self.last_received = time.monotonic()
        self._parser.receive_data(data)
        for event in self._parser.events_received():
            if self.state != OPEN:
                return
            if isinstance(event, Frame):
                self._apply(self._handler.receive_frame(event))
        if self._parser.parser_exc is not None:
            self.fail(self._parser.parser_exc)

    def note_activity(self) -> None:
        """The client sent something that carries no STOMP bytes (a WebSocket ping)."""
        self.last_received = time.monotonic()

    def fail(self, exc: ProtocolError, code: int = PROTOCOL_ERROR) -> None:
        """A protocol violation found below STOMP (message too big, bad UTF-8): ERROR, close."""
        if self.state == OPEN:
            self._apply(self._handler.protocol_error(exc), code=code)

    def _apply(self, outcome: Outcome, code: int | None = None) -> None:
        for frame in outcome.frames:
            self._queue_frame(frame)
        if outcome.connected:
            self._on_connected()
        if outcome.close:
            failed = any(frame.command == f.ERROR for frame in outcome.frames)
            self.close(code=code or (PROTOCOL_ERROR if failed else NORMAL))

    def _queue_frame(self, frame: Frame) -> None:
        try:
            data = frame.serialize(self.version)
        except ValueError:  # a header that cannot be written in this version
            log.exception("cannot encode %s for session %s", frame.command, self.session_id)
            data = f.error("internal error").serialize(self.version)
        if not self.outbox.offer(data):
            self.close_slow_consumer()

    def _on_connected(self) -> None:
        self.version = self._handler.version
        self._parser.version = self.version
        self._arm(self._check_timers(time.monotonic()))  # heart-beats off: no timer at all
        try:
            self._hub.application.connected(self._handler.connection)
        except Exception:
            log.exception("connected() failed for session %s", self.session_id)

    # Close path --------------------------------------------------------------------------

    def close(self, final: Frame | None = None, *, code: int = NORMAL, discard_backlog: bool = False) -> None:
        """Stop taking input and fan-out; the writer sends what is queued, ``final``, and closes.

        Never blocks. If the writer has not finished after the hub's grace period, the
        abort hooks run.
        """
        if self.state != OPEN:
            return
        self.state = CLOSING
        self._handler.close()
        self._hub.registry.remove_subscriber(self)
        data = final.serialize(self.version) if final is not None else None
        self.outbox.close(data, discard_backlog=discard_backlog, code=code)
        self._arm(None)
        self._abort_timer = gevent.spawn_later(self._hub.close_grace_s, self.abort)

    def close_slow_consumer(self) -> None:
        """The outbox overflowed: drop the backlog, send ERROR "slow consumer", close."""
        if self.state == OPEN:
            log.warning("session %s is a slow consumer (%d frames queued); closing it",
                        self.session_id, len(self.outbox))
            self.close(f.error("slow consumer"), code=POLICY_VIOLATION, discard_backlog=True)

    def abort(self) -> None:
        """Give up on a graceful end: run the abort hooks now."""
        if self.state == OPEN:
            self.close(discard_backlog=True, code=GOING_AWAY)
        hooks, self._abort_hooks = self._abort_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("abort hook failed for session %s", self.session_id)

    def finish(self) -> None:
        """Once, when the connection is over: forget it, stop its timers, tell the application.

        Called by the reader when it stops (or by the SockJS reaper); never by the writer.
        """
        if self._finished:
            return
        self._finished = True
        if self.state == OPEN:
            self.close(discard_backlog=True)
        self.state = CLOSED
        self._arm(None)
        if self._abort_timer is not None and self._abort_timer is not gevent.getcurrent():
            self._abort_timer.kill(block=False)
        self._hub.release(self)
        connection = self._handler.connection
        if connection is not None:
            try:
                self._hub.application.disconnected(connection)
            except Exception:
                log.exception("disconnected() failed for session %s", self.session_id)

    # Timers ------------------------------------------------------------------------------
    #
    # No greenlet per connection: each session holds at most one one-shot timer of the
    # event loop (a few hundred bytes), armed for its next deadline and re-armed when it
    # fires. Its callback runs in the hub, so it only looks at clocks and queues a
    # heart-beat (``offer`` never blocks); closing is handed to a fresh greenlet.

    def _arm(self, deadline: float | None) -> None:
        """Make ``deadline`` (monotonic seconds) the one pending timer; None: no timer."""
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.close()
        if deadline is not None and self.state == OPEN:
            self._timer = timer = gevent.get_hub().loop.timer(max(0.0, deadline - time.monotonic()))
            timer.start(self._on_timer, update=True)

    def _on_timer(self) -> None:
        """The loop timer fired (in the hub): act on the deadlines, re-arm for the next one."""
        self._timer = None
        if self.state != OPEN:
            return
        try:
            self._arm(self._check_timers(time.monotonic()))
        except Exception:  # never into the hub's error handler
            log.exception("timer failed for session %s", self.session_id)

    def _expire(self, message: str) -> None:
        """A deadline passed: ERROR ``message`` and close, from a greenlet of its own."""
        gevent.spawn(self._close_expired, message)

    def _close_expired(self, message: str) -> None:
        self.close(f.error(message), code=POLICY_VIOLATION)

    def _check_timers(self, now: float) -> float | None:
        """Act on whatever deadline passed; return when to look again (None: on wake only)."""
        settings = self._hub.settings
        if self._handler.state == AWAITING_CONNECT:
            deadline = self._opened_at + settings.connect_timeout_s
            if now >= deadline:
                self._expire("connect timeout")
                return None
            return deadline
        send_ms, expect_ms = self._handler.heartbeat
        wake_at: list[float] = []
        if expect_ms:
            if is_overdue(self.last_received, now, expect_ms, settings.heartbeat_tolerance):
                self._expire("heart-beat timeout")
                return None
            wake_at.append(self.last_received + expect_ms * settings.heartbeat_tolerance / 1000 + _TIMER_SLACK_S)
        if send_ms:
            wake_at.append(self._send_heartbeat_if_due(now, send_ms / 1000))
        return min(wake_at) if wake_at else None

    def _send_heartbeat_if_due(self, now: float, interval_s: float) -> float:
        due = self.outbox.last_write + interval_s
        if now < due:
            return due
        if not self.outbox.offer(f.HEARTBEAT):
            gevent.spawn(self.close_slow_consumer)
        self.outbox.last_write = now  # queued counts as written: do not queue another meanwhile
        return now + interval_s
