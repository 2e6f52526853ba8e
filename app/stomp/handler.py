"""The per-connection STOMP state machine: client frames in, server frames and effects out.

Owns the rules of one connection from CONNECT to DISCONNECT (STOMP 1.2 "Client Frames"):
version and heart-beat negotiation, authentication, subscriptions (through the
``SubscriptionRegistry``; their ack modes and ACK/NACK through the ``AckLedger``), SEND dispatch to the ``ChatApplication``, receipts and errors.
It performs no I/O and never waits: the session (``app/stomp/session.py``) feeds it frames
and applies the returned :class:`Outcome`: the frames to send, the ``Pending`` of a SEND
whose reply is owed later (app/contracts.py), whether to close. Keeping replies in frame
order behind SENDs in flight is the session's job.

Two kinds of failure, deliberately different:

- A protocol violation (a frame before CONNECT, a bad token, a missing required header,
  a resource limit, transactions) is fatal: ERROR, then the connection closes.
- A refusal of a well-formed request (destination not allowed, not a member, a handler
  that raised ``ChatServerError``, an unexpected handler failure) is not: ERROR (with
  ``receipt-id`` when a receipt was asked for) and the connection stays open.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, TypeVar

import app.metrics as metrics
from app.auth import TokenVerifier, token_from_headers
from app.contracts import ChatApplication, ClientConnection, Pending
from app.errors import (AuthError, BadRequest, ChatServerError, InvalidFrame, NotConnected, NotFound, ProtocolError,
                        RateLimited)
from app.stomp import frames as f
from app.stomp.acks import ACK_MODES, AUTO, AckLedger
from app.stomp.frames import Frame
from app.stomp.heartbeat import negotiate_heartbeat, parse_heart_beat
from app.stomp.parser import negotiate_version
from app.stomp.ratelimit import TokenBucket
from app.stomp.registry import SubscriptionRegistry
from app.stomp.routing import check_subscribe_destination, resolve_send

__all__ = ["StompHandler", "Outcome", "Resume", "AWAITING_CONNECT", "CONNECTED", "CLOSED", "IDEMPOTENCY_KEY",
           "SINCE_SEQ", "SINCE_SEQ_MAX_DIGITS", "SUBSCRIPTION_ID_MAX_CHARS", "MAX_SUBSCRIPTIONS_PER_DESTINATION",
           "UNKNOWN_ACK"]

log = logging.getLogger(__name__)

# The SEND header by which a client makes a retried SEND store nothing new (the domain decides
# what that means; the transport only hands it over).
IDEMPOTENCY_KEY = "idempotency-key"
# The SUBSCRIBE header that resumes a room from after an event number (app/stomp/resume.py).
SINCE_SEQ = "since-seq"
SINCE_SEQ_MAX_DIGITS = 15  # below 2**53, so JavaScript clients hold it exactly
# What an ACK or NACK of nothing owed is told (the connection stays open).
UNKNOWN_ACK = "unknown ack id"

# The longest subscription id: fan-out writes it into every MESSAGE of the subscription
# (clients use "sub-0"; ids of kilobytes only multiply what each message costs).
SUBSCRIPTION_ID_MAX_CHARS = 128
# The default of STOMP_MAX_SUBSCRIPTIONS_PER_DESTINATION: an app subscribes to a room
# from two views at most, and each subscription gets its own copy of every message.
MAX_SUBSCRIPTIONS_PER_DESTINATION = 4

AWAITING_CONNECT = "awaiting-connect"
CONNECTED = "connected"
CLOSED = "closed"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Resume:
    """A subscription just registered that must get the events after ``since_seq`` first."""

    subscription_id: str
    destination: str
    since_seq: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the session must do after one event: send ``frames``, then maybe close.

    ``pending`` is set for a SEND whose handler left work in flight: the session owes its
    reply, a RECEIPT carrying ``receipt_id`` (if the client asked for one) once
    ``pending.wait()`` returned, or an ERROR if it raised. ``connected`` is True once, for
    the frame that completed CONNECT: the session then calls ``ChatApplication.connected``
    after sending CONNECTED.
    """

    frames: tuple[Frame, ...] = ()
    close: bool = False
    connected: bool = False
    pending: Pending | None = None
    receipt_id: str | None = None
    resume: Resume | None = None


_NOTHING = Outcome()


class _Refusal(ChatServerError):
    """The application refused a request: ERROR, but the connection stays open."""

    def __init__(self, message: str, http_status: int = ChatServerError.http_status) -> None:
        super().__init__(message)
        self.http_status = http_status  # the refusal's kind: the caller's (4xx) or ours (5xx)


class _MeasuredPending:
    """A SEND's ``Pending`` whose outcome and time to reply go to the metrics when it is known."""

    __slots__ = ("_pending", "_destination", "_started")

    def __init__(self, pending: Pending, destination: str, started: float) -> None:
        self._pending = pending
        self._destination = destination
        self._started = started

    def wait(self) -> Mapping[str, str] | None:
        try:
            added = self._pending.wait()
        except Exception as exc:
            metrics.send_finished(self._destination, _send_outcome(exc), self._started)
            raise
        metrics.send_finished(self._destination, metrics.OK, self._started)
        return added


class StompHandler:
    """One connection's STOMP session state.

    Args:
        application: the chat domain (send handlers, subscription authorizer).
        verifier: checks the token of CONNECT.
        registry: the process's subscriptions; ``subscriber`` is this connection's key.
        session_id, node_id, transport: identify the connection to the application.
        heartbeat_ms: the server's heart-beat offer, both directions (0: none).
        max_subscriptions: the most subscriptions this connection may hold.
        max_per_destination: the most of them to one destination (past it: a non-fatal ERROR).
        send_rate: ``(limit, window_s)``: at most ``limit`` SENDs per ``window_s`` (a token
            bucket, made at the first SEND); past it a SEND gets a non-fatal ERROR. None: no limit.
        acks: this connection's client-ack subscriptions and the ack ids they are owed (the
            fan-out records what it delivers there; app/stomp/acks.py).
    """

    def __init__(self, *, application: ChatApplication, verifier: TokenVerifier,
                 registry: SubscriptionRegistry[Hashable], subscriber: Hashable, session_id: str,
                 node_id: str, transport: str, heartbeat_ms: int, max_subscriptions: int,
                 max_per_destination: int = MAX_SUBSCRIPTIONS_PER_DESTINATION,
                 send_rate: tuple[int, float] | None = None, acks: AckLedger | None = None) -> None:
        self._application = application
        self._verifier = verifier
        self._registry = registry
        self._subscriber = subscriber
        self._session_id = session_id
        self._node_id = node_id
        self._transport = transport
        self._server_heartbeat = (heartbeat_ms, heartbeat_ms)
        self._max_subscriptions = max_subscriptions
        self._max_per_destination = max_per_destination
        self._send_rate = send_rate
        self._send_bucket: TokenBucket | None = None
        self.acks = acks if acks is not None else AckLedger()
        self.state = AWAITING_CONNECT
        self.version = "1.2"  # until negotiated; what ERROR frames before CONNECTED use
        self.heartbeat = (0, 0)  # (server sends every ms, server expects every ms)
        self.connection: ClientConnection | None = None

    # Entry points --------------------------------------------------------------------

    def receive_frame(self, frame: Frame) -> Outcome:
        """Handle one client frame."""
        if self.state == CLOSED:
            return _NOTHING
        return self._handle(frame)

    def protocol_error(self, exc: ProtocolError) -> Outcome:
        """The byte stream broke the protocol (the parser or a transport limit said so)."""
        if self.state == CLOSED:
            return _NOTHING
        return self._fail(exc.message)

    def close(self) -> None:
        """The connection ended for a reason of the I/O layer; ignore anything after.

        SENDs still in flight finish on their own; their replies are dropped by the closed outbox.
        """
        self.state = CLOSED

    # Dispatch --------------------------------------------------------------------------

    def _handle(self, frame: Frame) -> Outcome:
        try:
            return self._dispatch(frame)
        except (ProtocolError, AuthError) as exc:
            return self._fail(exc.message, frame)
        except ChatServerError as exc:
            return Outcome((_error(exc.message, frame),))
        except Exception:
            log.exception("STOMP %s failed on session %s", frame.command, self._session_id)
            return Outcome((_error(ChatServerError.wire_message, frame),))

    def _dispatch(self, frame: Frame) -> Outcome:
        command = frame.command
        if command in (f.CONNECT, f.STOMP):
            if self.state == CONNECTED:
                raise InvalidFrame("already connected")
            return self._connect(frame)
        if self.state != CONNECTED:
            raise NotConnected()
        if command == f.DISCONNECT:
            self.state = CLOSED
            return Outcome(_receipt_for(frame), close=True)
        method = _COMMANDS.get(command)
        if method is None:  # the parser lets only client commands through
            raise InvalidFrame("unexpected command")
        return method(self, frame)

    def _fail(self, message: str, frame: Frame | None = None) -> Outcome:
        self.state = CLOSED
        return Outcome((_error(message, frame),), close=True)

    # CONNECT -----------------------------------------------------------------------------

    def _connect(self, frame: Frame) -> Outcome:
        version = negotiate_version(frame.header("accept-version"))
        if version is None:
            self.state = CLOSED
            return Outcome((_unsupported_version(frame),), close=True)
        client_heartbeat = parse_heart_beat(frame.header("heart-beat"))
        principal = self._verifier.verify(_token(frame))
        claimed = frame.header("user-id")
        if claimed is not None and claimed.strip() != str(principal.user_id):
            raise AuthError("user-id does not match token")
        self.version = version
        self.heartbeat = negotiate_heartbeat(client_heartbeat, self._server_heartbeat)
        # The application (and presence) key on a server-generated id: a SockJS session id is
        # chosen by the client, so two clients on different nodes may pick the same one.
        self.connection = ClientConnection(secrets.token_urlsafe(12), principal, self._node_id, self._transport,
                                           stomp_session=self._session_id)
        self.state = CONNECTED
        reply = f.connected(version, self.heartbeat, self._session_id)
        return Outcome((reply, *_receipt_for(frame)), connected=True)

    # Commands after CONNECT ----------------------------------------------------------

    def _send(self, frame: Frame) -> Outcome:
        """A SEND, measured: its outcome and time to reply, by destination (unknown ones as one)."""
        started = time.perf_counter()
        destination = frame.header("destination")
        label = destination if destination in self._application.send_handlers else metrics.OTHER
        try:
            outcome = self._start_send(frame)
        except Exception as exc:
            metrics.send_finished(label, _send_outcome(exc), started)
            raise
        if outcome.pending is None:
            metrics.send_finished(label, metrics.OK, started)
            return outcome
        return dataclasses.replace(outcome, pending=_MeasuredPending(outcome.pending, label, started))

    def _start_send(self, frame: Frame) -> Outcome:
        self._take_send_token()
        destination = _required(frame, "destination")
        if frame.header("transaction") is not None:
            raise ProtocolError("transactions not supported")
        handler = resolve_send(destination, self._application.send_handlers)
        pending: Pending | None = self._call_application(handler, self.connection, frame.body,
                                                         frame.header(IDEMPOTENCY_KEY))
        if pending is None:
            return Outcome(_receipt_for(frame))
        return Outcome(pending=pending, receipt_id=frame.header("receipt"))

    def _subscribe(self, frame: Frame) -> Outcome:
        destination = _required(frame, "destination")
        subscription_id = frame.header("id")
        if subscription_id is None:
            if self.version != "1.0":
                raise InvalidFrame("missing id header")
            subscription_id = destination  # STOMP 1.0 made the id optional
        _require_echoable(subscription_id, self.version, f.MESSAGE, "id")
        _require_echoable(frame.header("receipt"), self.version, f.RECEIPT, "receipt")
        if self._registry.holds(self._subscriber, subscription_id):
            raise InvalidFrame("duplicate subscription id")
        if len(subscription_id) > SUBSCRIPTION_ID_MAX_CHARS:
            raise BadRequest(f"id: longer than {SUBSCRIPTION_ID_MAX_CHARS} characters")
        if self._registry.count(self._subscriber) >= self._max_subscriptions:
            raise ProtocolError("too many subscriptions")
        if self._registry.count_to(self._subscriber, destination) >= self._max_per_destination:
            raise BadRequest(f"too many subscriptions to this destination (at most {self._max_per_destination})")
        check_subscribe_destination(destination)
        since_seq = _since_seq(frame)
        ack_mode = _ack_mode(frame)
        self._call_application(self._application.authorize_subscription, self.connection, destination)
        self._registry.add(self._subscriber, subscription_id, destination)
        self.acks.subscribe(subscription_id, ack_mode)
        if since_seq is None:
            return Outcome(_receipt_for(frame))
        # The replay goes out before the RECEIPT: the session performs it (it reads the database).
        return Outcome(_receipt_for(frame), resume=Resume(subscription_id, destination, since_seq))

    def _take_send_token(self) -> None:
        """Count one SEND against the connection's rate limit (every SEND, refused or not, typing too)."""
        if self._send_rate is None:
            return
        bucket = self._send_bucket
        if bucket is None:
            bucket = self._send_bucket = TokenBucket(*self._send_rate)
        if not bucket.take():
            limit, window_s = self._send_rate
            raise RateLimited(f"rate limit exceeded: at most {limit} SENDs per {window_s:g} s")

    def _unsubscribe(self, frame: Frame) -> Outcome:
        subscription_id = frame.header("id")
        if subscription_id is None and self.version == "1.0":
            subscription_id = frame.header("destination")
        if subscription_id is None:
            raise InvalidFrame("missing id header")
        if self._registry.remove(self._subscriber, subscription_id) is None:
            raise NotFound("unknown subscription")
        self.acks.unsubscribe(subscription_id)
        return Outcome(_receipt_for(frame))

    def _acknowledge(self, frame: Frame) -> Outcome:
        """ACK or NACK: it must name a MESSAGE delivered on a client-ack subscription and not
        acknowledged yet. Either only settles it (app/stomp/acks.py): nothing is redelivered."""
        if frame.header("transaction") is not None:
            raise ProtocolError("transactions not supported")
        if self.version == "1.2":
            settled = self.acks.settle(_required(frame, "id"))
        else:  # 1.0 and 1.1 name the message (1.1 also its subscription)
            subscription_id = _required(frame, "subscription") if self.version == "1.1" else None
            settled = self.acks.settle_message(_required(frame, "message-id"), subscription_id)
        if not settled:
            raise NotFound(UNKNOWN_ACK)
        return Outcome(_receipt_for(frame))

    def _transaction(self, frame: Frame) -> Outcome:
        raise ProtocolError("transactions not supported")

    def _call_application(self, function: Callable[..., _T], *args: object) -> _T:
        """Call into the chat domain; whatever it raises becomes a non-fatal refusal."""
        try:
            return function(*args)
        except ChatServerError as exc:
            raise _Refusal(exc.message, exc.http_status) from None
        except Exception:
            log.exception("application handler failed on session %s", self._session_id)
            raise _Refusal(ChatServerError.wire_message) from None


# The handlers of the commands a CONNECTED client may send (besides DISCONNECT), shared by
# every connection rather than a dict of bound methods each.
_COMMANDS: dict[str, Callable[[StompHandler, Frame], Outcome]] = {
    f.SEND: StompHandler._send,
    f.SUBSCRIBE: StompHandler._subscribe,
    f.UNSUBSCRIBE: StompHandler._unsubscribe,
    f.ACK: StompHandler._acknowledge,
    f.NACK: StompHandler._acknowledge,
    f.BEGIN: StompHandler._transaction,
    f.COMMIT: StompHandler._transaction,
    f.ABORT: StompHandler._transaction,
}


def _send_outcome(exc: BaseException) -> str:
    """A failed SEND's outcome label, by the status its error maps to (refused: 4xx, failed: 5xx)."""
    return metrics.http_outcome(exc.http_status if isinstance(exc, ChatServerError) else ChatServerError.http_status)


def _token(frame: Frame) -> str | None:
    authorization = frame.header("Authorization")
    if authorization is None:
        authorization = frame.header("authorization")
    return token_from_headers(authorization, frame.header("access-token"))


def _required(frame: Frame, name: str) -> str:
    value = frame.header(name)
    if value is None or value == "":
        raise InvalidFrame(f"missing {name} header")
    return value


def _ack_mode(frame: Frame) -> str:
    mode = frame.header("ack", AUTO)
    if mode not in ACK_MODES:
        raise BadRequest("ack: must be auto, client or client-individual")
    return mode  # type: ignore[return-value]


def _since_seq(frame: Frame) -> int | None:
    raw = frame.header(SINCE_SEQ)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > SINCE_SEQ_MAX_DIGITS:
        raise BadRequest(f"{SINCE_SEQ}: must be a whole number of at most {SINCE_SEQ_MAX_DIGITS} digits")
    return int(raw)


def _require_echoable(value: str | None, version: str, command: str, name: str) -> None:
    """Refuse a header value the server would have to send back but cannot write in ``version``."""
    if value is None:
        return
    try:
        f.escape_header(value, version, command)
    except ValueError:
        raise BadRequest(f"{name}: cannot be sent back in a STOMP {version} header") from None


def _receipt_for(frame: Frame) -> tuple[Frame, ...]:
    receipt_id = frame.header("receipt")
    return (f.receipt(receipt_id),) if receipt_id is not None else ()


def _error(message: str, frame: Frame | None) -> Frame:
    receipt_id = frame.header("receipt") if frame is not None else None
    return f.error(message, receipt_id=receipt_id)


def _unsupported_version(frame: Frame) -> Frame:
    # STOMP 1.2 "Protocol Negotiation": the ERROR lists the versions the server speaks.
    base = _error("unsupported protocol version", frame)
    return Frame(f.ERROR, (*base.headers, ("version", ",".join(f.SUPPORTED_VERSIONS))))
