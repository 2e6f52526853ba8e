"""One STOMP client connection's life: parser, handler, in-flight SENDs, timers and the close path.

Owns:

- :class:`Session`: drives the parser and the :class:`~app.stomp.handler.StompHandler` of
  one connection and applies what the handler returns. It owns the connection's SENDs in
  flight (:class:`~app.stomp.inflight.InflightSends`) and the one route by which frames
  reach the client (:meth:`Session.send_frames`: serialise or send "internal error"; offer
  or close as a slow consumer). It keeps the CONNECT and heart-beat deadlines (one
  event-loop timer at a time, no greenlet; none at all once connected with heart-beats
  off), and the close path, including the once-only ``ChatApplication.disconnected`` call.
- :class:`SessionHub`: what every session of this process shares (settings, application,
  registry), and the live sessions: the session factory the transports are given
  (app/stomp/transport.py).

Greenlets of one connection and what each may do:

- reader (the request greenlet, or a SockJS send request holding the session's lock):
  the only caller of :meth:`Session.receive_data`, so inbound frames are handled strictly
  in order; handlers may block on I/O there, which delays only this connection. While
  ``stomp_max_inflight_sends`` replies are owed, it waits before the next frame.
- the acknowledger (one while SENDs are in flight): waits for each SEND's ``Pending`` in
  order and sends its reply through ``send_frames``.
- the transport's writer: drains the outbox (app/stomp/outbox.py).
- the session's loop timer (a callback in the hub, not a greenlet): CONNECT timeout,
  heart-beats out (only ``Outbox.offer``), silence detection in; a close it decides on
  runs in a short-lived greenlet of its own.
- fan-out (any greenlet): only ``Outbox.offer_many``, which never blocks; when it reports
  overflow the caller calls :meth:`Session.close_slow_consumer`, which never blocks either.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent

import app.metrics as metrics
from app.auth import TokenVerifier
from app.contracts import ChatApplication, ClientConnection
from app.errors import ChatServerError, ProtocolError
from app.logs import add_log_context
from app.settings import Settings
from app.stomp import frames as f
from app.stomp.acks import AckLedger
from app.stomp.frames import Frame
from app.stomp.handler import AWAITING_CONNECT, Outcome, Resume, StompHandler
from app.stomp.heartbeat import is_overdue
from app.stomp.inflight import InflightSends
from app.stomp.outbox import GOING_AWAY, NORMAL, POLICY_VIOLATION, PROTOCOL_ERROR, Outbox
from app.stomp.parser import FrameParser
from app.stomp.registry import SubscriptionRegistry
from app.stomp.resume import ResumeGate

__all__ = ["Session", "SessionHub", "OPEN", "CLOSING", "CLOSED", "CLOSE_GRACE_S", "SHUTDOWN_MESSAGE"]

log = logging.getLogger(__name__)

OPEN = "open"
CLOSING = "closing"
CLOSED = "closed"

# How long a closing connection may take to flush its last frames before its socket is
# shut: a client that stopped reading would otherwise hold the writer forever.
CLOSE_GRACE_S = 5.0
# Timers wake this much after a deadline, since is_overdue() is strict.
_TIMER_SLACK_S = 0.005
# What every client is told when its worker stops (it reconnects, to another worker).
SHUTDOWN_MESSAGE = "server shutting down"
# How long a stopping worker gives its sessions to answer the SENDs they took.
DRAIN_S = 5.0
# How long a SUBSCRIBE on a worker that just started waits for its fan-out.
READY_WAIT_S = 10.0
READY_POLL_S = 0.05
# A replay is written this many frames at a time, each once the outbox is at most half full.
REPLAY_CHUNK = 200
REPLAY_PACE_S = 0.01
_REPLAY_IDS = itertools.count(1)
_REPLAY_PREFIX = "replay-" + uuid.uuid4().hex[:12] + "-"


@dataclass(eq=False)
class SessionHub:
    """What every STOMP session of this process shares, and the live sessions."""

    settings: Settings
    application: ChatApplication
    verifier: TokenVerifier
    registry: SubscriptionRegistry["Session"]
    node_id: str
    close_grace_s: float = CLOSE_GRACE_S
    # Whether this process's fan-out is positioned: until then a SUBSCRIBE waits (up to
    # ready_wait_s), so nothing published after its RECEIPT can be missed.
    delivering: Callable[[], bool] = lambda: True
    ready_wait_s: float = READY_WAIT_S
    _live: set["Session"] = field(default_factory=set)

    def open_session(self, session_id: str, transport: str) -> "Session":
        """A new session (``session_id`` is the transport's; two may share one, app/stomp/transport.py)."""
        session = Session(self, session_id, transport)
        self._live.add(session)
        add_log_context(session=session_id)  # the transport's greenlet serves it from here on
        return session

    def release(self, session: "Session") -> None:
        self._live.discard(session)

    def get(self, session_id: str) -> "Session | None":
        """A live session with this transport id, if any (a scan: for tests and diagnostics)."""
        return next((session for session in self._live if session.session_id == session_id), None)

    def drain(self, message: str = SHUTDOWN_MESSAGE, timeout_s: float = DRAIN_S) -> None:
        """Worker shutdown: every session answers the SENDs it took, then ERROR ``message`` and closes.

        Returns once all have (or after ``timeout_s``); their writers flush meanwhile.
        """
        greenlets = [gevent.spawn(session.drain, message) for session in list(self._live)]
        gevent.joinall(greenlets, timeout=timeout_s)

    def transport_counts(self) -> dict[str, tuple[int, int]]:
        """(open sessions, their subscriptions) per transport: what the metrics sample."""
        counts: dict[str, list[int]] = {}
        count = self.registry.count
        for session in self._live:
            held = counts.setdefault(session.transport, [0, 0])
            held[0] += 1
            held[1] += count(session)
        return {transport: (sessions, subscriptions) for transport, (sessions, subscriptions) in counts.items()}

    def wait_delivering(self) -> bool:
        """Wait (up to ``ready_wait_s``) until the fan-out is positioned; whether it is."""
        deadline = time.monotonic() + self.ready_wait_s
        while not self.delivering():
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(READY_POLL_S)
        return True

    def __len__(self) -> int:
        return len(self._live)

    @functools.cached_property
    def send_rate(self) -> tuple[int, float] | None:
        """Every handler's SEND rate limit (``STOMP_SEND_RATE_LIMIT`` 0: none); one tuple for all."""
        return _send_rate(self.settings)


class Session:
    """One client connection: parser, STOMP handler, in-flight SENDs, outbox, timers, close path.

    States go OPEN -> CLOSING (no more input or fan-out; the writer flushes the last
    frames) -> CLOSED (``finish``: forgotten, the application told).
    """

    def __init__(self, hub: SessionHub, session_id: str, transport: str) -> None:
        settings = hub.settings
        self._hub = hub
        self.session_id = session_id
        self.transport = transport
        self.state = OPEN
        # Fan-out's cache: subscription id -> its escaped bytes in this session's version
        # (auto subscriptions only: a client-ack subscription's frames each get an ack id).
        self.subscription_bytes: dict[str, bytes] = {}
        self.user_id = 0  # the token's user once connected (fan-out checks audiences against it)
        self.acks = AckLedger(lambda subscription_id: self.subscription_bytes.pop(subscription_id, None))
        # Resumed subscriptions whose live frames the fan-out hands to a gate (app/stomp/resume.py).
        self.gates: dict[str, ResumeGate] = {}
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
                                     max_per_destination=settings.stomp_max_subscriptions_per_destination,
                                     send_rate=hub.send_rate, acks=self.acks)
        # The handler's STOMP version, copied again once CONNECT succeeds (the only time it
        # changes): fan-out reads it for every delivery, and an attribute is the cheapest read.
        self.version = self._handler.version
        self._inflight: InflightSends | None = None  # made by the first SEND left in flight
        self._timer: Any = None  # the one loop timer (a libev/libuv watcher, no greenlet) or None
        self._abort_timer: gevent.Greenlet | None = None
        self._abort_hooks: list[Callable[[], None]] = []
        self._draining = False
        self._handling = False  # the reader is inside the handler with a frame

    def __repr__(self) -> str:
        return f"<Session {self.session_id} {self.transport} {self.state}>"

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def is_finished(self) -> bool:
        return self.state == CLOSED

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
        if self.state != OPEN or self._draining:
            return
        self.last_received = time.monotonic()
        self._parser.receive_data(data)
        for event in self._parser.events_received():
            if self.state != OPEN or self._draining:
                return
            if isinstance(event, Frame):
                if event.command == f.UNSUBSCRIBE and self.gates:
                    self._forget_gate(event)
                if event.command == f.SUBSCRIBE and not self._hub.wait_delivering():
                    self._apply(Outcome((f.error("server not ready, try again", receipt_id=event.header("receipt")),)))
                    continue
                if self._inflight is not None:
                    self._inflight.wait_for_room()  # back-pressure: the client's next frames stay unread
                    if self.state != OPEN or self._draining:  # ended meanwhile: start nothing new
                        return
                self._handling = True
                try:
                    self._apply(self._handler.receive_frame(event))
                finally:
                    self._handling = False
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
        """Send or owe the outcome's replies, in frame order; then maybe close."""
        if outcome.resume is not None:
            outcome = self._resume(outcome.resume, outcome.frames)
        inflight = self._inflight
        if outcome.pending is not None:
            self._inflight_sends().add_pending(outcome.pending, outcome.receipt_id)
        elif not inflight:
            self.send_frames(outcome.frames)
        elif outcome.close:
            inflight.drain()  # nothing goes out after the close: the owed replies first
            self.send_frames(outcome.frames)
        elif outcome.frames:
            inflight.add_ready(outcome.frames)  # no reply overtakes a SEND in flight
        if outcome.connected:
            self._on_connected()
        if outcome.close:
            reason = _error_message(outcome.frames)
            self.close(code=code or (PROTOCOL_ERROR if reason is not None else NORMAL), reason=reason or "")

    def _resume(self, resume: Resume, replies: tuple[Frame, ...]) -> Outcome:
        """Send a resumed subscription its replay, then its held live frames; the replies to owe.

        The subscription is registered already, behind a gate, so nothing published meanwhile
        is lost or sent ahead of the replay. If the replay cannot be read, the subscription is
        taken back and the client gets ERROR instead of its RECEIPT.
        """
        gate = self.gates[resume.subscription_id] = ResumeGate(resume.since_seq)
        try:
            resumed = self._hub.application.resume(self._handler.connection, resume.destination, resume.since_seq)
        except Exception as exc:  # noqa: BLE001 - refused or failed: this subscription only
            if not isinstance(exc, ChatServerError):
                log.exception("resume failed on session %s", self.session_id)
            self.gates.pop(resume.subscription_id, None)
            self._hub.registry.remove(self, resume.subscription_id)
            message = exc.message if isinstance(exc, ChatServerError) else ChatServerError.wire_message
            receipt_id = next((reply.header("receipt-id") for reply in replies), None)
            return Outcome((f.error(message, receipt_id=receipt_id),))
        self._send_paced([self._replay_frame(resume, body) for _, body in resumed.bodies])
        if resumed.reset:
            held = gate.open(set(), floor=resumed.bodies[0][0])
        else:
            held = gate.open({seq for seq, _ in resumed.bodies})
        if held and not self.outbox.offer_many(held):
            self.close_slow_consumer()
        return Outcome(replies)

    def _forget_gate(self, unsubscribe: Frame) -> None:
        """A gate lives as long as its subscription: an id used again later starts without one."""
        subscription_id = unsubscribe.header("id")
        if subscription_id is None and self.version == "1.0":
            subscription_id = unsubscribe.header("destination")
        self.gates.pop(subscription_id or "", None)

    def _replay_frame(self, resume: Resume, body: bytes) -> bytes:
        message_id = _REPLAY_PREFIX + str(next(_REPLAY_IDS))
        template = f.MessageTemplate(resume.destination, message_id, body, version=self.version)
        subscription = template.subscription_bytes(resume.subscription_id)
        if resume.subscription_id in self.acks.modes:
            return template.for_acked_subscription(subscription, self.acks.delivered(resume.subscription_id, message_id))
        return template.for_subscription_bytes(subscription)

    def _send_paced(self, frames: list[bytes]) -> None:
        """Queue a replay without overflowing the outbox: a chunk at a time, as the writer drains."""
        half = max(1, self._hub.settings.outbox_max_frames // 2)
        chunk = min(REPLAY_CHUNK, half)
        for start in range(0, len(frames), chunk):
            while len(self.outbox) > half and self.state == OPEN:
                gevent.sleep(REPLAY_PACE_S)
            if self.state != OPEN:
                return
            if not self.outbox.offer_many(frames[start:start + chunk]):
                self.close_slow_consumer()
                return

    def _inflight_sends(self) -> InflightSends:
        if self._inflight is None:
            self._inflight = InflightSends(limit=self._hub.settings.stomp_max_inflight_sends,
                                           deliver=self.send_frames)
        return self._inflight

    def send_frames(self, frames: tuple[Frame, ...]) -> None:
        """The one route of replies to the client: never blocks; an overflow closes the session."""
        for frame in frames:
            if not self.outbox.offer(self._encode(frame)):
                self.close_slow_consumer()
                return

    def _encode(self, frame: Frame) -> bytes:
        try:
            return frame.serialize(self.version)
        except ValueError:  # a header that cannot be written in this version
            log.exception("cannot encode %s for session %s", frame.command, self.session_id)
            return f.error(ChatServerError.wire_message).serialize(self.version)

    def _on_connected(self) -> None:
        self.version = self._parser.version = self._handler.version
        connection = self._handler.connection
        if connection is not None:
            self.user_id = connection.user_id
        self._arm(self._check_timers(time.monotonic()))  # heart-beats off: no timer at all
        try:
            self._hub.application.connected(self._handler.connection)
        except Exception:
            log.exception("connected() failed for session %s", self.session_id)

    # Close path --------------------------------------------------------------------------

    def close(self, final: Frame | None = None, *, code: int = NORMAL, discard_backlog: bool = False,
              reason: str = "") -> None:
        """Stop taking input and fan-out; the writer sends what is queued, ``final``, and closes.

        The WebSocket close frame carries ``code`` and ``reason`` (by default the message of
        a ``final`` ERROR). Never blocks. If the writer has not finished after the hub's
        grace period, the abort hooks run.
        """
        if self.state != OPEN:
            return
        self.state = CLOSING
        self._handler.close()
        self._hub.registry.remove_subscriber(self)
        data = self._encode(final) if final is not None else None
        if not reason and final is not None:
            reason = _error_message((final,)) or ""
        self.outbox.close(data, discard_backlog=discard_backlog, code=code, reason=reason)
        self._arm(None)
        self._abort_timer = gevent.spawn_later(self._hub.close_grace_s, self.abort)

    def close_slow_consumer(self) -> None:
        """The outbox overflowed: drop the backlog, send ERROR "slow consumer", close."""
        if self.state == OPEN:
            log.warning("session %s is a slow consumer (%d frames queued); closing it",
                        self.session_id, len(self.outbox))
            metrics.slow_consumer(self.transport)
            self.close(f.error("slow consumer"), code=POLICY_VIOLATION, discard_backlog=True)

    def drain(self, message: str) -> None:
        """The worker stops: take no new frame, answer every SEND taken, then ERROR ``message``."""
        if self.state != OPEN:
            return
        self._draining = True
        while self._handling or self._inflight:  # the frame in hand first, then every reply owed
            if self._inflight:
                self._inflight.drain()
            else:
                gevent.sleep(READY_POLL_S)
        self.close(f.error(message), code=GOING_AWAY)

    def close_undeliverable(self) -> None:
        """Fan-out could not build a frame for one of this session's subscriptions: ERROR, close."""
        if self.state == OPEN:
            self.close(f.error("subscription cannot be delivered"), code=POLICY_VIOLATION)

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
        if self.state == CLOSED:
            return
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


def _error_message(frames: tuple[Frame, ...]) -> str | None:
    """The message of the first ERROR among ``frames`` ("" if it has none); None without an ERROR."""
    for frame in frames:
        if frame.command == f.ERROR:
            return frame.header("message") or ""
    return None


def _send_rate(settings: Settings) -> tuple[int, float] | None:
    """The handler's SEND rate limit from the settings (``STOMP_SEND_RATE_LIMIT`` 0: none)."""
    if settings.send_rate_limit == 0:
        return None
    return settings.send_rate_limit, settings.send_rate_window_s
