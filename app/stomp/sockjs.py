"""The SockJS 0.3 transport, and the raw WebSocket beside it, under one URL prefix.

Owns the URL space under its prefix (``/my-chat`` for the chat server, protocol.md 2.1):

- ``{prefix}/websocket``: the session's bytes straight over a WebSocket (STOMP for iOS, and
  stompjs without SockJS); the session id is generated here.
- SockJS: ``/info``, ``/iframe.html``, and per session ``/{server}/{session}/`` +
  ``websocket``, ``xhr``, ``xhr_send``, ``xhr_streaming``, ``eventsource``, ``htmlfile``.
  The session id is the client-chosen ``{session}`` (1-64 of ``[A-Za-z0-9_-]``).

:class:`SockJSEndpoint` is given a session factory and lookup
(:class:`~app.stomp.transport.SessionDirectory`), its prefix and its :class:`SockJSOptions`,
so any session handler can sit behind the same transport code. The HTTP transports' writers
(:func:`poll_response`, :func:`stream_outbox`) live here; the WebSocket's is in ws.py.

SockJS framing: the server sends ``o`` (open), ``h`` (heart-beat), ``a[...]`` (a JSON
array of messages) and ``c[code,"reason"]`` (close); the client sends JSON arrays of
strings. Each string is STOMP bytes for the session, handled like WebSocket input.

An HTTP session outlives its requests: one receiving request at a time is attached to it
(a second gets ``c[2010,...]``) and is its writer while attached; ``xhr_send`` bodies are
handled one at a time, in order, under the session's lock. A session with no receiving
request for ``sockjs_disconnect_delay_s`` is over. HTTP sessions live in this process, so
with several gunicorn workers the HTTP fallbacks need sticky routing (WebSocket does not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import gevent
from flask import Blueprint, Response, abort, request
from gevent.event import Event
from gevent.lock import Semaphore

from app import json_input
from app.errors import FrameTooLarge
from app.stomp.outbox import BATCH_FRAMES, Framing, Outbox, Pong, RawFraming, Wire
from app.stomp.transport import SessionDirectory, TransportSession
from app.stomp.ws import reject_websocket, serve_websocket

__all__ = ["SockJSEndpoint", "SockJSOptions", "HttpSession", "SockJSFraming", "unwrap_sockjs",
           "sockjs_message_limit", "poll_response", "stream_outbox", "SOCKJS_CLIENT_URL"]

log = logging.getLogger(__name__)

SOCKJS_CLIENT_URL = "https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js"
_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CALLBACK = re.compile(r"[A-Za-z0-9_.]{1,64}")
_GO_AWAY = b'c[3000,"Go away!"]'
_IN_USE = b'c[2010,"Another connection still open"]'
_NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
_YEAR_S = 31536000
_JS = "application/javascript; charset=UTF-8"
# Some browsers and proxies buffer the start of a streamed body: 2 KiB of padding first.
_XHR_STREAMING_PRELUDE = b"h" * 2048 + b"\n"
_EVENTSOURCE_PRELUDE = b"\r\n"
_HTMLFILE_PAGE = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{callback};
    c.start();
    function p(d) {{c.message(d);}};
    window.onload = function() {{c.stop();}};
  </script>
"""
_IFRAME_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{url}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"""
_SEGMENT_PATTERN = "[A-Za-z0-9_-]{1,64}"
_RAW = RawFraming()


@dataclass(frozen=True)
class SockJSOptions:
    """How one SockJS endpoint behaves (``app/composition.py`` makes them from Settings).

    Args:
        max_frame_bytes: the largest payload one client message may carry.
        heartbeat_s: the ``h`` frame interval.
        disconnect_delay_s: how long an HTTP session outlives its last receiving request.
        streaming_bytes: bytes sent on one streaming response before it is recycled.
        close_grace_s: how long a closing session may take to flush before it is aborted.
        websocket: whether ``/info`` offers WebSocket to clients.
        client_url: the sockjs-client script ``iframe.html`` loads.
    """

    max_frame_bytes: int
    heartbeat_s: float
    disconnect_delay_s: float
    streaming_bytes: int
    close_grace_s: float
    websocket: bool = True
    client_url: str = SOCKJS_CLIENT_URL


def sockjs_message_limit(max_frame_bytes: int) -> int:
    """The largest SockJS message: a frame at the limit, every byte JSON-escaped (\\u0000)."""
    return max_frame_bytes * 6 + 64


def unwrap_sockjs(message: bytes) -> list[bytes]:
    """The STOMP bytes in one SockJS client message (a JSON array of strings, or one string).

    Raises:
        ValueError: not JSON, not strings, or a string that is not valid Unicode.
    """
    if not message.strip():
        return []
    value = json_input.loads(message)  # MalformedJSON is a ValueError
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("a SockJS message is a JSON array of strings")
    return [item.encode("utf-8") for item in value]


class SockJSFraming:
    """SockJS frames (``o``, ``h``, ``a[...]``, ``c[...]``), each wrapped for one transport."""

    def __init__(self, wrap: Callable[[bytes], bytes], closing: bytes = _GO_AWAY) -> None:
        self._wrap = wrap
        self.opening = wrap(b"o")
        self.idle = wrap(b"h")
        self.closing = wrap(closing)

    def wrap(self, frame: bytes) -> bytes:
        return self._wrap(frame)

    def encode(self, frames: list[bytes]) -> list[bytes]:
        # ensure_ascii: SockJS escapes what some browsers mangle; all non-ASCII is simplest.
        texts = [frame.decode("utf-8", "replace") for frame in frames]
        return [self._wrap(b"a" + json.dumps(texts, separators=(",", ":")).encode("ascii"))]


def _htmlfile_wrap(frame: bytes) -> bytes:
    return b"<script>\np(" + json.dumps(frame.decode("ascii")).encode("ascii") + b");\n</script>\r\n"


WEBSOCKET_FRAMING = SockJSFraming(lambda frame: frame)
XHR_FRAMING = SockJSFraming(lambda frame: frame + b"\n")
EVENTSOURCE_FRAMING = SockJSFraming(lambda frame: b"data: " + frame + b"\r\n\r\n")
HTMLFILE_FRAMING = SockJSFraming(_htmlfile_wrap)
_REJECT_FRAMING = SockJSFraming(lambda frame: frame, closing=_IN_USE)


class HttpSession:
    """What a session carried by HTTP requests needs beside itself: its receiver slot.

    Kept as the session's ``carrier``, so the session directory is the one place that
    knows the live sessions.
    """

    def __init__(self, session: TransportSession) -> None:
        self.session = session
        self.send_lock = Semaphore()  # xhr_send bodies one at a time, in arrival order
        self.receiver: gevent.Greenlet | None = None
        self.detached_at = time.monotonic()
        self.changed = Event()

    def attach(self) -> bool:
        """Make the current request the receiver; False if another one is attached."""
        if self.receiver is not None:
            return False
        self.receiver = gevent.getcurrent()
        self.changed.set()
        return True

    def detach(self) -> None:
        self.receiver = None
        self.detached_at = time.monotonic()
        self.changed.set()

    def kill_receiver(self) -> None:
        """The abort hook: a receiver stuck writing to a stalled client is given up."""
        receiver = self.receiver
        if receiver is not None and receiver is not gevent.getcurrent():
            receiver.kill(block=False)


class SockJSEndpoint:
    """The views of one prefix; one instance per app.

    Upgraded WebSocket requests reach :meth:`serve_upgraded` straight from WSGI (the app in
    app/web.py does that, and says which paths to upgrade with :meth:`accepts_websocket`):
    served from inside a Flask view, the request context, the routing state and their
    stack would live as long as the connection, a few KB of every idle socket. The Flask
    blueprint serves the HTTP transports.
    """

    def __init__(self, sessions: SessionDirectory, *, prefix: str, options: SockJSOptions) -> None:
        self._sessions = sessions
        self._prefix = prefix
        self._options = options
        self._message_limit = sockjs_message_limit(options.max_frame_bytes)
        self._iframe_page = _IFRAME_PAGE.format(url=options.client_url).encode("utf-8")
        self._iframe_etag = '"' + hashlib.md5(self._iframe_page).hexdigest() + '"'
        self._upgrade_path = re.compile(rf"{re.escape(prefix)}/(websocket|{_SEGMENT_PATTERN}/{_SEGMENT_PATTERN}/websocket)")
        self._sockjs_path = re.compile(rf"{re.escape(prefix)}/({_SEGMENT_PATTERN})/({_SEGMENT_PATTERN})/websocket")
        self.blueprint = Blueprint(f"sockjs{prefix.replace('/', '_')}", __name__, url_prefix=prefix)
        rule = self.blueprint.add_url_rule
        rule("", "welcome", self.welcome, methods=["GET"], strict_slashes=False)
        rule("/info", "info", self.info, methods=["GET", "OPTIONS"])
        rule("/<page>", "iframe", self.iframe, methods=["GET"])
        rule("/<server>/<session_id>/xhr", "xhr", self.xhr, methods=["POST", "OPTIONS"])
        rule("/<server>/<session_id>/xhr_send", "xhr_send", self.xhr_send, methods=["POST", "OPTIONS"])
        rule("/<server>/<session_id>/xhr_streaming", "xhr_streaming", self.xhr_streaming, methods=["POST", "OPTIONS"])
        rule("/<server>/<session_id>/eventsource", "eventsource", self.eventsource, methods=["GET"])
        rule("/<server>/<session_id>/htmlfile", "htmlfile", self.htmlfile, methods=["GET"])

    # Static pages ------------------------------------------------------------------------

    def welcome(self) -> Response:
        return Response(b"Welcome to SockJS!\n", content_type="text/plain; charset=UTF-8")

    def info(self) -> Response:
        if request.method == "OPTIONS":
            return _preflight("OPTIONS, GET")
        body = {"websocket": self._options.websocket, "cookie_needed": True, "origins": ["*:*"],
                "entropy": random.SystemRandom().getrandbits(32)}
        response = Response(json.dumps(body), content_type="application/json; charset=UTF-8")
        response.headers["Cache-Control"] = _NO_CACHE
        return _cors(response)

    def iframe(self, page: str) -> Response:
        if not re.fullmatch(r"iframe[0-9a-z._-]*\.html", page):
            abort(404)
        if request.headers.get("If-None-Match") == self._iframe_etag:
            return Response(status=304)
        response = Response(self._iframe_page, content_type="text/html; charset=UTF-8")
        response.headers["ETag"] = self._iframe_etag
        response.headers["Cache-Control"] = f"public, max-age={_YEAR_S}"
        return response

    # WebSocket transports --------------------------------------------------------------

    def accepts_websocket(self, path: str) -> bool:
        """Whether a WebSocket upgrade of ``path`` reaches one of our transports (valid ids)."""
        return self._upgrade_path.fullmatch(path) is not None

    def serve_upgraded(self, environ: dict) -> bool:  # type: ignore[type-arg]
        """Serve an upgraded WebSocket request for one of our paths until it ends; False if it is not one."""
        websocket = environ.get("wsgi.websocket")
        path = environ.get("PATH_INFO", "")
        if websocket is None:
            return False
        if path == self._prefix + "/websocket":
            self._serve_raw(websocket)
            return True
        ids = self._sockjs_path.fullmatch(path)
        if ids is None:
            return False
        self._serve_sockjs(websocket, ids.group(2))
        return True

    def _serve_raw(self, websocket) -> None:  # type: ignore[no-untyped-def]
        session = self._sessions.open_session(new_session_id(), "websocket")
        assert session is not None  # a fresh random id
        serve_websocket(websocket, session, framing=_RAW, unwrap=_as_is,
                        max_message_bytes=self._options.max_frame_bytes,
                        close_grace_s=self._options.close_grace_s)

    def _serve_sockjs(self, websocket, session_id: str) -> None:  # type: ignore[no-untyped-def]
        session = self._sessions.open_session(session_id, "sockjs-websocket")
        if session is None:
            reject_websocket(websocket, _REJECT_FRAMING)
            return
        serve_websocket(websocket, session, framing=WEBSOCKET_FRAMING, unwrap=unwrap_sockjs,
                        max_message_bytes=self._message_limit, close_grace_s=self._options.close_grace_s,
                        idle_s=self._options.heartbeat_s)

    # HTTP sessions ----------------------------------------------------------------------

    def _http_session(self, session_id: str) -> HttpSession | None:
        """The live HTTP session with this id (None also when a WebSocket session has it)."""
        session = self._sessions.get(session_id)
        carrier = session.carrier if session is not None else None
        return carrier if isinstance(carrier, HttpSession) else None

    def _open_http(self, session_id: str, transport: str) -> HttpSession | None:
        """A new HTTP session, or None when the id is in use by a WebSocket session."""
        session = self._sessions.open_session(session_id, transport)
        if session is None:
            return None
        http = HttpSession(session)
        session.carrier = http
        session.on_abort(http.kill_receiver)
        session.start()
        gevent.spawn(self._reap, http)
        return http

    def _reap(self, http: HttpSession) -> None:
        """End an HTTP session nobody came back for within the disconnect delay."""
        delay = self._options.disconnect_delay_s
        session = http.session
        try:
            while not session.outbox.ended and not session.is_finished:
                http.changed.clear()
                if http.receiver is None:
                    idle = time.monotonic() - http.detached_at
                    if idle >= delay:
                        return  # nobody came back for it: the client is gone
                    http.changed.wait(delay - idle)
                else:
                    http.changed.wait(delay)
        finally:
            with http.send_lock:  # the session ends only after a SEND in progress has returned
                session.finish()

    # HTTP transports -------------------------------------------------------------------

    def xhr(self, server: str, session_id: str) -> Response:
        if request.method == "OPTIONS":
            return _preflight("OPTIONS, POST")
        _check_ids(server, session_id)
        http = self._http_session(session_id)
        if http is None:
            opened = self._open_http(session_id, "xhr-polling")
            return _js_response(XHR_FRAMING.opening if opened else XHR_FRAMING.wrap(_IN_USE))
        if not http.attach():
            return _js_response(XHR_FRAMING.wrap(_IN_USE))
        try:
            body = poll_response(http.session.outbox, XHR_FRAMING, timeout_s=self._options.heartbeat_s)
        finally:
            http.detach()
        return _js_response(body)

    def xhr_send(self, server: str, session_id: str) -> Response:
        if request.method == "OPTIONS":
            return _preflight("OPTIONS, POST")
        _check_ids(server, session_id)
        http = self._http_session(session_id)
        if http is None:
            abort(404)
        limit = self._message_limit
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            http.session.fail(FrameTooLarge("frame too large"))
            return _text_response(b"Payload too large.", 413)
        if not body:
            return _text_response(b"Payload expected.", 500)
        try:
            messages = unwrap_sockjs(body)
        except ValueError:
            return _text_response(b"Broken JSON encoding.", 500)
        with http.send_lock:
            for message in messages:
                http.session.receive_data(message)
        return _text_response(b"", 204)

    def xhr_streaming(self, server: str, session_id: str) -> Response:
        if request.method == "OPTIONS":
            return _preflight("OPTIONS, POST")
        return self._stream(server, session_id, "xhr-streaming", XHR_FRAMING, _XHR_STREAMING_PRELUDE, _JS)

    def eventsource(self, server: str, session_id: str) -> Response:
        return self._stream(server, session_id, "eventsource", EVENTSOURCE_FRAMING, _EVENTSOURCE_PRELUDE,
                            "text/event-stream; charset=UTF-8")

    def htmlfile(self, server: str, session_id: str) -> Response:
        callback = request.args.get("c", "")
        if not _CALLBACK.fullmatch(callback):
            return _text_response(b'"callback" parameter required', 500)
        page = _HTMLFILE_PAGE.format(callback=callback)
        prelude = (page + " " * max(0, 1024 - len(page)) + "\r\n\r\n").encode("utf-8")
        return self._stream(server, session_id, "htmlfile", HTMLFILE_FRAMING, prelude, "text/html; charset=UTF-8")

    def _stream(self, server: str, session_id: str, transport: str, framing: SockJSFraming,
                prelude: bytes, content_type: str) -> Response:
        _check_ids(server, session_id)
        http = self._http_session(session_id)
        opened = http is None
        if opened:
            http = self._open_http(session_id, transport)
        chunks = self._stream_chunks(http, framing, prelude, opened)
        response = Response(chunks, content_type=content_type, direct_passthrough=True)
        response.headers["Cache-Control"] = _NO_CACHE
        return _cors(response)

    def _stream_chunks(self, http: HttpSession | None, framing: SockJSFraming, prelude: bytes,
                       opened: bool) -> Iterator[bytes]:
        yield prelude
        if http is None:  # the id belongs to a WebSocket session
            yield framing.wrap(_IN_USE)
            return
        if opened:
            yield framing.opening
        if not http.attach():
            yield framing.wrap(_IN_USE)
            return
        try:
            yield from stream_outbox(http.session.outbox, framing, idle_s=self._options.heartbeat_s,
                                     byte_limit=self._options.streaming_bytes)
        finally:
            http.detach()


def new_session_id() -> str:
    """A random session id for a raw WebSocket (the alphabet SockJS ids use too)."""
    return secrets.token_urlsafe(12)


def _as_is(message: bytes) -> Iterable[bytes]:
    return (message,)


def _check_ids(server: str, session_id: str) -> None:
    if not _SEGMENT.fullmatch(server) or not _SEGMENT.fullmatch(session_id):
        abort(404)


def _cors(response: Response) -> Response:
    """SockJS CORS: reflect the Origin, with credentials (any origin, protocol.md 2.1)."""
    origin = request.headers.get("Origin")
    response.headers["Access-Control-Allow-Origin"] = origin if origin and origin != "null" else "*"
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Vary"] = "Origin"
    requested = request.headers.get("Access-Control-Request-Headers")
    if requested:
        response.headers["Access-Control-Allow-Headers"] = requested
    cookie = request.cookies.get("JSESSIONID", "dummy")
    response.set_cookie("JSESSIONID", cookie, path="/")
    return response


def _preflight(methods: str) -> Response:
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = methods
    response.headers["Access-Control-Max-Age"] = str(_YEAR_S)
    response.headers["Cache-Control"] = f"public, max-age={_YEAR_S}"
    response.headers["Expires"] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + _YEAR_S))
    return _cors(response)


def _js_response(body: bytes) -> Response:
    response = Response(body, content_type=_JS)
    response.headers["Cache-Control"] = _NO_CACHE
    return _cors(response)


def _text_response(body: bytes, status: int) -> Response:
    response = Response(body, status=status, content_type="text/plain; charset=UTF-8")
    response.headers["Cache-Control"] = _NO_CACHE
    return _cors(response)


# The HTTP transports' writers -----------------------------------------------------------


def _frames(items: list[bytes | Pong | Wire]) -> list[bytes]:
    return [item for item in items if item.__class__ is bytes]



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
