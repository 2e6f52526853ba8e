"""gevent-websocket glue: the WebSocket read loop, sub-protocol echo, and the gunicorn worker.

The only module that imports ``geventwebsocket`` (and gunicorn). Owns:

- :class:`StompWebSocket`: gevent-websocket's ``WebSocket`` with what it lacks for a
  server facing the Internet: a message-size limit checked from each frame header before
  the payload is read, UTF-8 validation in C instead of a per-byte Python loop, and no
  writes from the reader (pings and the close handshake are answered by the writer, because
  two greenlets writing one socket raise ``ConcurrentObjectUseError``).
- :class:`StompWebSocketHandler` / :class:`StompWebSocketWorker`: the handler echoes the
  best STOMP sub-protocol the client offered (browsers abort the socket otherwise),
  installs :class:`StompWebSocket`, answers a malformed upgrade (HTTP/1.0, no or a bad
  version or key) with a JSON 4xx, and enforces the :class:`ConnectionGate` of the
  application; the worker is gevent-websocket's gunicorn worker with that handler, a pool
  sized by the gate, and a stop that closes its listeners at once and drains.
- :class:`ConnectionGate`: the limits before the handshake: a deadline for each request's
  line and headers (slowloris, silent sockets), and a cap on connections per worker past
  which requests get 503, with a reserve of slots in which health paths are still answered.
- :func:`serve_websocket`: one connection from upgrade to close: session, the outbox's
  push writer (:class:`PushWriter`: direct sends, and a writer greenlet
  (:func:`drain_websocket`) only while there is a backlog), SockJS idle ticks, read loop,
  and the finish that always runs. It carries any :class:`~app.stomp.transport.TransportSession`.
- :func:`websocket_bytes`: frames as a framing carries them in WebSocket text frames; a frame
  object fanned out to many sockets is framed once (:class:`_LastFramed`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import socket
import struct
import time
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import gevent
from geventwebsocket.exceptions import ProtocolError as WebSocketProtocolError
from geventwebsocket.exceptions import WebSocketError
from gevent.pool import Pool
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, WebSocket
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import VERSION as GUNICORN_VERSION

from app.errors import FrameTooLarge, InvalidFrame
from app.http_envelope import error_body
from app.stomp.outbox import BATCH_FRAMES, PROTOCOL_ERROR, Framing, Outbox, Pong, Wire
from app.stomp.transport import TransportSession

__all__ = [
    "StompWebSocket",
    "StompWebSocketHandler",
    "StompWebSocketWorker",
    "MessageTooBig",
    "choose_subprotocol",
    "serve_websocket",
    "STOMP_SUBPROTOCOLS",
    "text_frame",
    "PushWriter",
    "UpgradeGate",
    "ConnectionGate",
    "GatedApplication",
    "HEALTH_PATHS",
    "drain_websocket",
    "PEER_SOCKET",
]

log = logging.getLogger(__name__)

# Best first: the sub-protocol names of STOMP 1.2 "WebSocket" usage.
STOMP_SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")

MESSAGE_TOO_BIG = 1009
INVALID_PAYLOAD = 1007

# Paths a worker answers even at its connection cap (from the reserve): a full worker
# must still tell its load balancer or orchestrator that it is alive.
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


# The environ key under which the handler leaves a request's socket, so that a SockJS
# receiving request can notice that its client went away while it waits (app/stomp/sockjs.py).
PEER_SOCKET = "smooth.peer_socket"
# A close frame's payload is at most 125 bytes: the code, then the reason (RFC 6455 5.5).
CLOSE_REASON_MAX_BYTES = 123

READ_BUFFER_BYTES = 256
# How often a worker looks whether it was told to stop, and tells the arbiter it is alive.
STOP_CHECK_S = 0.1
NOTIFY_EVERY_S = 1.0


def text_frame(data: bytes) -> bytes:
    """``data`` as one unmasked, final WebSocket text frame (RFC 6455 5.2), header built in one call."""
    length = len(data)
    if length < 126:
        return _HEADER_7BIT(0x81, length) + data
    if length < 65536:
        return _HEADER_16BIT(0x81, 126, length) + data
    return _HEADER_64BIT(0x81, 127, length) + data


_HEADER_7BIT = struct.Struct("!BB").pack
_HEADER_16BIT = struct.Struct("!BBH").pack
_HEADER_64BIT = struct.Struct("!BBQ").pack


# More than the WebSocket framings there are: a bound, not a tuning knob.
FRAMINGS_REMEMBERED = 8


class _LastFramed:
    """The WebSocket bytes of the frame each framing wrote last, reused for the same frame object.

    Fan-out hands one frame object to every subscriber of a room that shares its subscription
    id (``MessageTemplate.for_subscription_bytes``), one connection after another, so an
    event is framed once per framing in use (raw STOMP, SockJS: module-level instances)
    instead of once per socket; for SockJS that framing is a JSON encoding. Identity, not
    equality: a hit costs one comparison, and the reference kept keeps the object (and so
    its identity) alive.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[Framing, tuple[bytes, bytes]] = {}  # framing -> (its last frame, the bytes)

    def __call__(self, framing: Framing, frame: bytes) -> bytes:
        last = self._last.get(framing)
        if last is not None and last[0] is frame:
            return last[1]
        wire = websocket_bytes(framing, [frame])
        if len(self._last) >= FRAMINGS_REMEMBERED:
            self._last.clear()
        self._last[framing] = (frame, wire)
        return wire


def websocket_bytes(framing: Framing, frames: list[bytes]) -> bytes:
    """``frames`` as ``framing`` carries them, each of its messages in a WebSocket text frame."""
    return text_frames(framing.encode(frames))


def text_frames(messages: list[bytes]) -> bytes:
    """Each of ``messages`` as a WebSocket text frame, in order: what one write sends (the
    direct path's and the writer's)."""
    return b"".join(map(text_frame, messages))


_framed_once = _LastFramed()


class MessageTooBig(Exception):
    """A WebSocket message over the limit; raised before its payload is read."""


class BadCloseFrame(WebSocketProtocolError):
    """The client's close frame breaks RFC 6455 5.5.1 / 7.4 (a 1-byte payload, a code it may not send)."""


def choose_subprotocol(offered: str | None) -> str | None:
    """The best STOMP sub-protocol in a ``Sec-WebSocket-Protocol`` request header, or None."""
    names = {name.strip() for name in (offered or "").split(",")}
    return next((name for name in STOMP_SUBPROTOCOLS if name in names), None)


class StompWebSocket(WebSocket):
    """A server-side WebSocket with a size limit, fast UTF-8 checks and a writer-only write side."""

    __slots__ = ("max_message_bytes", "on_ping")

    def __init__(self, environ, stream, handler) -> None:  # type: ignore[no-untyped-def]
        super().__init__(environ, stream, handler)
        self.max_message_bytes: int | None = None
        self.on_ping: Callable[[bytes], None] = lambda payload: None

    @classmethod
    def adopt(cls, websocket: WebSocket) -> "StompWebSocket":
        """Take over a plain gevent-websocket connection (before anything was read from it)."""
        if isinstance(websocket, cls):
            return websocket
        adopted = cls(websocket.environ, websocket.stream, websocket.handler)
        websocket.closed = True  # so the original never writes a close frame of its own
        return adopted

    def __del__(self) -> None:
        # The base class closes (writes!) on garbage collection, from whatever greenlet runs
        # then. Our writer always closes explicitly; never write from a finaliser.
        pass

    # Reading (the reader greenlet) ------------------------------------------------------

    def receive_message(self) -> bytes | None:
        """The next text or binary message as bytes; None once the client sent a close frame.

        Raises:
            MessageTooBig: the message would exceed ``max_message_bytes``.
            UnicodeDecodeError: a text message that is not UTF-8.
            OSError: the connection broke or the client broke the WebSocket protocol.
        """
        opcode: int | None = None
        message = bytearray()
        while True:
            header = Header.decode_header(self.stream)
            if header.flags:
                raise WebSocketProtocolError("reserved bits set")
            if header.opcode in (self.OPCODE_PING, self.OPCODE_PONG, self.OPCODE_CLOSE):
                if self._control(header):
                    return None
                continue
            opcode = self._data_opcode(opcode, header.opcode)
            self._check_size(len(message) + header.length)
            message += self._payload(header)
            if header.fin:
                break
        if opcode == self.OPCODE_TEXT:
            message.decode("utf-8")  # validates; the STOMP parser decodes what it needs itself
        return bytes(message)

    def _data_opcode(self, current: int | None, opcode: int) -> int:
        if opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY) and current is None:
            return opcode
        if opcode == self.OPCODE_CONTINUATION and current is not None:
            return current
        raise WebSocketProtocolError(f"unexpected opcode {opcode}")

    def _check_size(self, size: int) -> None:
        if self.max_message_bytes is not None and size > self.max_message_bytes:
            raise MessageTooBig(size)

    def _payload(self, header: Header) -> bytes:
        payload = self.raw_read(header.length) if header.length else b""
        if len(payload) != header.length:
            raise WebSocketError("unexpected EOF reading frame payload")
        return _unmask(payload, header.mask) if header.mask else payload

    def _control(self, header: Header) -> bool:
        """Handle a control frame; True when it was a (valid) close frame.

        Raises:
            BadCloseFrame: a close frame with a 1-byte payload, a code no client may send,
                or a reason that is not UTF-8.
        """
        payload = self._payload(header)
        if header.opcode == self.OPCODE_PING:
            self.on_ping(payload)
        if header.opcode != self.OPCODE_CLOSE:
            return False
        if payload and not _valid_close_payload(payload):
            raise BadCloseFrame("invalid close frame")
        return True

    # Writing (the writer greenlet, or the outbox's direct path while the writer is parked;
    # see app/stomp/outbox.py) ------------------------------------------------------------------

    def send_message(self, data: bytes) -> None:
        """Send ``data`` (UTF-8 already) as one text message."""
        self.raw_write(text_frame(data))

    def send_messages(self, messages: list[bytes]) -> None:
        """Send several text messages with one write."""
        self.raw_write(text_frames(messages))

    def send_pong(self, payload: bytes) -> None:
        self.raw_write(Header.encode_header(True, self.OPCODE_PONG, b"", len(payload), 0) + payload)

    def send_raw(self, data: bytes) -> None:
        self.raw_write(data)

    def try_send(self, wire: bytes) -> bytes | None:
        """Write ``wire`` only as far as the kernel takes it without waiting; returns the rest.

        None when everything went out. A broken connection returns all of it: the writer
        then meets the error itself and ends the connection the usual way.
        """
        try:
            sent = self.handler.socket.send(wire, 0, 0.0)  # gevent: timeout 0 raises instead of waiting
        except BlockingIOError:
            return wire
        except OSError:
            return wire
        return None if sent == len(wire) else wire[sent:]

    def send_close(self, code: int, reason: str = "") -> None:
        """Send a close frame; the handler closes the TCP connection when the request ends."""
        if not self.closed:
            payload = struct.pack("!H", code) + close_reason_bytes(reason)
            with contextlib.suppress(OSError):
                self.raw_write(Header.encode_header(True, self.OPCODE_CLOSE, b"", len(payload), 0) + payload)
            self.closed = True

    def abort(self) -> None:
        """Shut the TCP connection now, waking a reader blocked on it."""
        self.closed = True
        sock = getattr(self.handler, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def close_reason_bytes(reason: str) -> bytes:
    """``reason`` as a close frame carries it: UTF-8, cut to what fits, never mid-character."""
    return reason.encode("utf-8")[:CLOSE_REASON_MAX_BYTES].decode("utf-8", "ignore").encode("utf-8")


def _valid_close_payload(payload: bytes) -> bool:
    """RFC 6455 7.4: a 2-byte code a peer may send (1000-1003, 1007-1011, 3000-4999), then UTF-8."""
    if len(payload) < 2:
        return False
    code = struct.unpack("!H", payload[:2])[0]
    if not (1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999):
        return False
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class ConnectionGate:
    """One worker's limits before the handshake.

    - Every request's line and headers must arrive within ``header_timeout_s`` of the
      handler starting to read them (a slowloris, or a socket that sends nothing, is then
      closed without an answer). Keep-alive connections get the same deadline for their
      next request, so an idle one is closed too.
    - Once the headers are in, the rest of the request (its body, and the response) may not
      stall: ``body_idle_timeout_s`` without a byte moving either way times the socket out (a
      body read then fails as ``RequestTimeout``, app/web.py). A slow upload that keeps
      moving is never cut; a WebSocket, once upgraded, has no such timeout (heart-beats
      and the outbox bound watch it).
    - ``open`` counts the TCP connections of the worker from accept to close. Past
      ``max_connections`` a request is answered 503 (and its connection closed), except a
      health path. The worker accepts up to ``max_connections + reserve``
      (:attr:`pool_size`), so a full worker still has slots to answer health checks and
      to say 503, instead of leaving new connections unanswered in the listen backlog.
    """

    __slots__ = ("header_timeout_s", "body_idle_timeout_s", "max_connections", "reserve", "open")

    def __init__(self, *, header_timeout_s: float, max_connections: int, reserve: int,
                 body_idle_timeout_s: float | None = None) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_idle_timeout_s = body_idle_timeout_s
        self.max_connections = max_connections
        self.reserve = reserve
        self.open = 0

    @property
    def pool_size(self) -> int:
        return self.max_connections + self.reserve

    def refuses(self, path: str) -> bool:
        """Whether a request for ``path`` gets 503: the worker is past its cap and it is no health path."""
        return self.open > self.max_connections and path not in HEALTH_PATHS


@runtime_checkable
class GatedApplication(Protocol):
    """A WSGI application that has limits before the handshake."""

    connection_gate: ConnectionGate


@runtime_checkable
class UpgradeGate(Protocol):
    """A WSGI application that says which paths it serves as WebSockets."""

    def accepts_websocket(self, path: str) -> bool: ...


class StompWebSocketHandler(WebSocketHandler):
    """gevent-websocket's handler, echoing a STOMP sub-protocol and using StompWebSocket.

    If the WSGI application is an :class:`UpgradeGate`, only the paths it accepts are
    upgraded; any other upgrade request is answered by the application as plain HTTP (a
    404), instead of a 101 followed by an immediate close. If it is a
    :class:`GatedApplication`, the handler counts its connection and keeps the deadline for
    each request's headers (:class:`ConnectionGate`).
    """

    # Class defaults, so that a connection without a gate (or once its headers arrived)
    # holds no per-instance state for them.
    _gate: ConnectionGate | None = None
    _header_timer: Any = None
    _headers_late = False

    def __init__(self, sock, address, server, rfile=None):  # type: ignore[no-untyped-def]
        # pywsgi's default 8 KiB read buffer lives as long as the connection. Client frames
        # are small (a SEND is a few hundred bytes) and a larger read bypasses the buffer,
        # so a small one costs at most one more read for a big frame and saves ~8 KB per socket.
        if rfile is None:
            rfile = sock.makefile("rb", READ_BUFFER_BYTES)
        super().__init__(sock, address, server, rfile)

    def get_environ(self):  # type: ignore[no-untyped-def]
        environ = super().get_environ()
        environ[PEER_SOCKET] = self.socket
        return environ

    def handle(self):  # type: ignore[no-untyped-def]
        gate = self.server.application
        if not isinstance(gate, GatedApplication):
            return super().handle()
        self._gate = gate = gate.connection_gate
        gate.open += 1
        try:
            return super().handle()
        finally:
            self._disarm_header_deadline()
            gate.open -= 1

    def read_requestline(self):  # type: ignore[no-untyped-def]
        if self._gate is not None:
            self._io_timeout(None)  # the headers' deadline governs until they are in
            timer = self._header_timer = gevent.get_hub().loop.timer(self._gate.header_timeout_s)
            timer.start(self._headers_too_slow)
        return super().read_requestline()

    def read_request(self, raw_requestline):  # type: ignore[no-untyped-def]
        # A deadline that passed mid-line leaves a truncated line: never act on it.
        if self._headers_late:
            raise ValueError("request headers too slow")
        parsed = super().read_request(raw_requestline)
        if self._headers_late:
            raise ValueError("request headers too slow")
        self._disarm_header_deadline()
        if self._gate is not None:
            self._io_timeout(self._gate.body_idle_timeout_s)
        return parsed

    def _io_timeout(self, seconds: float | None) -> None:
        """How long one read or write of this socket may wait for a byte (None: for ever)."""
        sock = getattr(self, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(seconds)

    def _handle_client_error(self, ex):  # type: ignore[no-untyped-def]
        if self._headers_late:
            return None  # closed without an answer or a log line: there are many of these in an attack
        return super()._handle_client_error(ex)

    def _headers_too_slow(self) -> None:
        """Loop callback: the request's headers did not come in time; shut the socket (wakes the reader)."""
        self._header_timer = None
        self._headers_late = True
        sock = getattr(self, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _disarm_header_deadline(self) -> None:
        timer = self._header_timer
        if timer is not None:
            self._header_timer = None
            timer.close()

    def run_websocket(self):  # type: ignore[no-untyped-def]
        # The parsed request headers and the 101's header list are not read again once
        # upgraded (the environ keeps what the application needs), yet they would live as
        # long as the connection: ~1 KB of every idle socket.
        self.headers = None
        self.response_headers = None
        self._io_timeout(None)  # an open WebSocket is quiet at times: heart-beats watch it
        return super().run_websocket()

    def upgrade_websocket(self):  # type: ignore[no-untyped-def]
        gate = self.application
        if isinstance(gate, UpgradeGate) and not gate.accepts_websocket(self.environ.get("PATH_INFO", "")):
            return None
        refusal = _upgrade_refusal(self.environ, self.request_version)
        if refusal is not None:
            status, message, headers = refusal
            # One line, where gevent-websocket's own path logged a TypeError traceback.
            log.info("websocket upgrade refused (%s %s): %s", status[:3], self.client_address[0]
                     if isinstance(self.client_address, tuple) else self.client_address, message)
            body = error_body(int(status[:3]), message)
            self.start_response(status, [("Content-Type", "application/json"), ("Connection", "close"), *headers])
            return [body]
        return super().upgrade_websocket()

    def start_response(self, status, headers, exc_info=None):  # type: ignore[no-untyped-def]
        if str(status).startswith("101"):
            chosen = choose_subprotocol(self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"))
            headers = [(name, value) for name, value in headers if name.lower() != "sec-websocket-protocol"]
            if chosen is not None:
                headers.append(("Sec-WebSocket-Protocol", chosen))
            self.websocket = StompWebSocket.adopt(self.websocket)
            self.environ["wsgi.websocket"] = self.websocket
        return super().start_response(status, headers, exc_info)


def _upgrade_refusal(environ: dict[str, Any], version: str | None) -> tuple[str, str, list[tuple[str, str]]] | None:
    """Why a WebSocket upgrade request cannot be accepted (RFC 6455 4.2.1), or None.

    gevent-websocket answers these in plain text (an HTTP/1.0 upgrade with "402 Bad
    Request"); the answers here are JSON envelopes like every other HTTP error.
    """
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        return None  # not an upgrade: the application answers
    if "upgrade" not in environ.get("HTTP_CONNECTION", "").lower():
        return None
    versions = [("Sec-WebSocket-Version", ", ".join(WebSocketHandler.SUPPORTED_VERSIONS))]
    if version != "HTTP/1.1":
        return "400 Bad Request", "websocket upgrade needs HTTP/1.1", []
    offered = environ.get("HTTP_SEC_WEBSOCKET_VERSION")
    if not offered:
        return "426 Upgrade Required", "missing Sec-WebSocket-Version", versions
    if offered not in WebSocketHandler.SUPPORTED_VERSIONS:
        return "400 Bad Request", "unsupported Sec-WebSocket-Version", versions
    if not _valid_key(environ.get("HTTP_SEC_WEBSOCKET_KEY", "")):
        return "400 Bad Request", "invalid Sec-WebSocket-Key", []
    return None


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (ValueError, binascii.Error):
        return False


class StompWebSocketWorker(GeventWebSocketWorker):
    """gevent-websocket's gunicorn worker, with :class:`StompWebSocketHandler` and a prompt stop.

    gunicorn's gevent worker notices SIGTERM at its next 1 s tick and accepts connections
    until then, so clients that reconnect at once land on the stopping worker again. This one
    looks every ``STOP_CHECK_S``, closes its listeners as soon as it is told to stop, starts
    ``on_stop`` (the chat server's drain, set by gunicorn.conf.py) in a greenlet of its own,
    and waits up to ``graceful_timeout`` for its connections to end.
    """

    wsgi_handler = StompWebSocketHandler
    on_stop: Callable[[], None] | None = None

    def run(self) -> None:
        servers = [self._serve(listener) for listener in self.sockets]
        notified = 0.0
        while self.alive:
            if time.monotonic() - notified >= NOTIFY_EVERY_S:
                self.notify()
                notified = time.monotonic()
            gevent.sleep(STOP_CHECK_S)
        for server in servers:
            server.close()  # no new connection from now on
        if self.on_stop is not None:
            gevent.spawn(self.on_stop)
        self._wait_for_connections(servers)

    def _serve(self, listener: Any) -> Any:
        listener.setblocking(1)
        environ = base_environ(self.cfg)
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": GUNICORN_VERSION})
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        # The gate's pool: connections past its cap still get a slot to be answered (503, health).
        gate = self.wsgi.connection_gate if isinstance(self.wsgi, GatedApplication) else None
        pool_size = gate.pool_size if gate is not None else self.worker_connections
        server = self.server_class(listener, application=self.wsgi, spawn=Pool(pool_size),
                                   log=self.log, handler_class=self.wsgi_handler, environ=environ, **ssl_args)
        server.start()
        return server

    def _wait_for_connections(self, servers: list[Any]) -> None:
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            if all(server.pool.free_count() == server.pool.size for server in servers):
                return
            self.notify()
            gevent.sleep(STOP_CHECK_S)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        for server in servers:
            server.stop(timeout=1)


class PushWriter:
    """How one WebSocket's outbox reaches the socket (``WireSender`` plus the writer it starts).

    Frames go out by non-blocking sends while the socket keeps up; a writer greenlet
    (``drain_websocket``) exists only while there is a backlog, so an idle connection holds
    none.
    """

    __slots__ = ("_outbox", "_ws", "_framing", "_writer")

    def __init__(self, outbox: Outbox, ws: StompWebSocket, framing: Framing) -> None:
        self._outbox = outbox
        self._ws = ws
        self._framing = framing
        self._writer: gevent.Greenlet | None = None

    def send_frames(self, frames: list[bytes]) -> bytes | None:
        if len(frames) == 1:
            wire = _framed_once(self._framing, frames[0])
        else:
            wire = websocket_bytes(self._framing, frames)
        return self._ws.try_send(wire)

    def try_send(self, wire: bytes) -> bytes | None:
        return self._ws.try_send(wire)

    def start(self) -> None:
        """Called by the outbox (any greenlet, or the hub) when frames were queued and no writer runs."""
        self._writer = gevent.spawn(drain_websocket, self._outbox, self._ws, self._framing)

    def kill(self) -> None:
        writer = self._writer
        if writer is not None and not writer.dead:
            writer.kill(block=False)


def serve_websocket(websocket: WebSocket, session: TransportSession, *, framing: Framing,
                    unwrap: Callable[[bytes], Iterable[bytes]], max_message_bytes: int,
                    close_grace_s: float, idle_s: float | None = None) -> None:
    """Run one WebSocket connection until it ends; always finishes the session.

    Args:
        websocket: the upgraded connection (from ``environ["wsgi.websocket"]``).
        session: a new session from the transport's session factory.
        framing: raw STOMP, or SockJS's.
        unwrap: turns one WebSocket message into the STOMP bytes it carries; raises
            ValueError for a malformed message.
        max_message_bytes: the largest WebSocket message accepted.
        close_grace_s: how long a closing session may take to flush before it is aborted.
        idle_s: how often ``framing.idle`` goes out when nothing else did (SockJS heart-beats).
    """
    ws = StompWebSocket.adopt(websocket)
    ws.max_message_bytes = max_message_bytes
    ws.on_ping = lambda payload: _queue_pong(session, payload)
    outbox = session.outbox
    writer = PushWriter(outbox, ws, framing)
    ticker = None
    try:
        if framing.opening is not None:
            ws.send_message(framing.opening)  # first, before anything else can write
        outbox.push_to(writer, writer.start)
        ticker = _start_idle_ticks(outbox, framing, idle_s)
        session.on_abort(lambda: _abort(writer, ws))
        session.start()
        _read_until_closed(ws, session, unwrap)
        outbox.wait_ended(close_grace_s + 1.0)
    except OSError:  # the opening could not be written: the client is gone
        session.close(discard_backlog=True)
    finally:
        if ticker is not None:
            ticker.close()
        if not outbox.ended:
            session.abort()
            writer.kill()
        session.finish()


def _start_idle_ticks(outbox: Outbox, framing: Framing, idle_s: float | None) -> Any:
    """A repeating loop timer (no greenlet) that sends ``framing.idle`` when the line was quiet."""
    if idle_s is None or framing.idle is None:
        return None
    idle_wire = text_frame(framing.idle)
    last_tick = [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        if now - max(outbox.last_write, last_tick[0]) >= idle_s / 2:
            outbox.offer_wire(idle_wire)
            last_tick[0] = now

    timer = gevent.get_hub().loop.timer(idle_s, idle_s)
    timer.start(tick)
    return timer


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # One XOR of two big integers: the library's byte-by-byte Python loop costs ~100 ns a byte.
    length = len(payload)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")


def _queue_pong(session: TransportSession, payload: bytes) -> None:
    session.note_activity()
    session.outbox.offer_pong(payload)  # outside the bound: a ping flood never makes a slow consumer


def _abort(writer: PushWriter, ws: StompWebSocket) -> None:
    writer.kill()
    ws.abort()


def _read_until_closed(ws: StompWebSocket, session: TransportSession, unwrap: Callable[[bytes], Iterable[bytes]]) -> None:
    """The reader: messages in, to the session, strictly in order, until either side closes."""
    while session.is_open:
        try:
            message = ws.receive_message()
        except MessageTooBig:
            session.fail(FrameTooLarge("frame too large"), code=MESSAGE_TOO_BIG)
            return
        except UnicodeDecodeError:
            session.fail(InvalidFrame("invalid UTF-8"), code=INVALID_PAYLOAD)
            return
        except BadCloseFrame:  # the client is closing: no ERROR, only the close code that says why
            session.close(discard_backlog=True, code=PROTOCOL_ERROR)
            return
        except WebSocketProtocolError:  # RSV bits, reserved opcodes, bad fragments or control frames
            session.fail(InvalidFrame("websocket protocol error"), code=PROTOCOL_ERROR)
            return
        except OSError:  # the connection broke
            session.close(discard_backlog=True)
            return
        if message is None:  # the client's close frame
            session.close(discard_backlog=True)
            return
        try:
            chunks = unwrap(message)
        except ValueError:  # broken SockJS framing: cut the connection, as SockJS servers do
            log.info("session %s sent a malformed message; connection cut", session.session_id)
            session.abort()
            session.outbox.mark_ended()  # nothing can be told any more: no wait for a writer
            return
        for chunk in chunks:
            session.receive_data(chunk)


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

    def send_close(self, code: int, reason: str = "") -> None: ...


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
                sink.send_close(outbox.close_code, outbox.close_reason)
                return
            else:
                return  # nothing yields between this empty take and writer_finished
    except OSError:  # the peer is gone (WebSocketError is an OSError too); nothing to tell it
        outbox.mark_ended()
    finally:
        outbox.writer_finished()
