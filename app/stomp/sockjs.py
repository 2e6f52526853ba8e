"""The ``/my-chat`` endpoint: STOMP over a raw WebSocket and over SockJS 0.3.

Owns the URL space under ``/my-chat`` (protocol.md 2.1):

- ``/my-chat/websocket``: STOMP straight over a WebSocket (iOS, and stompjs without SockJS);
  the session id is generated here.
- SockJS: ``/info``, ``/iframe.html``, and per session ``/{server}/{session}/`` +
  ``websocket``, ``xhr``, ``xhr_send``, ``xhr_streaming``, ``eventsource``, ``htmlfile``.
  The STOMP session id is the client-chosen ``{session}`` (1-64 of ``[A-Za-z0-9_-]``).

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
import time
from typing import Callable, Iterable, Iterator

import gevent
from flask import Blueprint, Response, abort, request
from gevent.event import Event
from gevent.lock import Semaphore

from app.errors import FrameTooLarge
from app.session import (
    CLOSED,
    RawFraming,
    Session,
    SessionHub,
    new_session_id,
    poll_response,
    stream_outbox,
)
from app.stomp.ws import reject_websocket, serve_websocket

__all__ = ["sockjs_endpoint", "SockJSEndpoint", "accepts_websocket", "HttpSession", "HttpSessions", "SockJSFraming", "unwrap_sockjs",
           "sockjs_message_limit", "PREFIX", "SOCKJS_CLIENT_URL"]

log = logging.getLogger(__name__)

PREFIX = "/my-chat"
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
</html>""".format(url=SOCKJS_CLIENT_URL).encode("utf-8")
_IFRAME_ETAG = '"' + hashlib.md5(_IFRAME_PAGE).hexdigest() + '"'


_WEBSOCKET_PATH = re.compile(rf"{PREFIX}/(websocket|[A-Za-z0-9_-]{{1,64}}/[A-Za-z0-9_-]{{1,64}}/websocket)")
_SOCKJS_WEBSOCKET_PATH = re.compile(rf"{PREFIX}/([A-Za-z0-9_-]{{1,64}})/([A-Za-z0-9_-]{{1,64}})/websocket")
_RAW = RawFraming()


def accepts_websocket(path: str) -> bool:
    """Whether a WebSocket upgrade of ``path`` reaches one of our endpoints (valid ids)."""
    return _WEBSOCKET_PATH.fullmatch(path) is not None


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
    value = json.loads(message)
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
    """A SockJS session carried by HTTP requests: a STOMP session plus its receiver slot."""

    def __init__(self, session: Session) -> None:
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


class HttpSessions:
    """This process's SockJS HTTP sessions by id, each reaped after its disconnect delay."""

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        self._sessions: dict[str, HttpSession] = {}

    def get(self, session_id: str) -> HttpSession | None:
        return self._sessions.get(session_id)

    def open(self, session_id: str, transport: str) -> HttpSession | None:
        """A new HTTP session, or None when the id is in use by a WebSocket session."""
        session = self._hub.open_session(session_id, transport)
        if session is None:
            return None
        http = HttpSession(session)
        session.on_abort(http.kill_receiver)
        self._sessions[session_id] = http
        session.start()
        gevent.spawn(self._reap, session_id, http)
        return http

    def _reap(self, session_id: str, http: HttpSession) -> None:
        delay = self._hub.settings.sockjs_disconnect_delay_s
        try:
            while not http.session.outbox.ended and http.session.state != CLOSED:
                http.changed.clear()
                if http.receiver is None:
                    idle = time.monotonic() - http.detached_at
                    if idle >= delay:
                        return  # nobody came back for it: the client is gone
                    http.changed.wait(delay - idle)
                else:
                    http.changed.wait(delay)
        finally:
            if self._sessions.get(session_id) is http:
                del self._sessions[session_id]
            with http.send_lock:  # disconnected() only after a SEND in progress has returned
                http.session.finish()

    def __len__(self) -> int:
        return len(self._sessions)


def sockjs_endpoint(hub: SessionHub) -> "SockJSEndpoint":
    """``/my-chat``: its Flask blueprint and its WSGI shortcut for upgraded WebSockets."""
    return SockJSEndpoint(hub)


class SockJSEndpoint:
    """The views of ``/my-chat``; one instance per app.

    Upgraded WebSocket requests should reach :meth:`serve_upgraded` straight from WSGI
    (app/web.py does that): served from inside a Flask view, the request context, the
    routing state and their stack would live as long as the connection, a few KB of every
    idle socket. The Flask routes serve the same paths for requests that were not upgraded.
    """

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        self._settings = hub.settings
        self._http = HttpSessions(hub)
        self.blueprint = Blueprint("stomp_endpoint", __name__, url_prefix=PREFIX)
        rule = self.blueprint.add_url_rule
        rule("", "welcome", self.welcome, methods=["GET"], strict_slashes=False)
        rule("/info", "info", self.info, methods=["GET", "OPTIONS"])
        rule("/<page>", "iframe", self.iframe, methods=["GET"])
        rule("/websocket", "raw_websocket", self.raw_websocket, websocket=True)
        rule("/<server>/<session_id>/websocket", "sockjs_websocket", self.sockjs_websocket, websocket=True)
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
        body = {"websocket": True, "cookie_needed": True, "origins": ["*:*"],
                "entropy": random.SystemRandom().getrandbits(32)}
        response = Response(json.dumps(body), content_type="application/json; charset=UTF-8")
        response.headers["Cache-Control"] = _NO_CACHE
        return _cors(response)

    def iframe(self, page: str) -> Response:
        if not re.fullmatch(r"iframe[0-9a-z._-]*\.html", page):
            abort(404)
        if request.headers.get("If-None-Match") == _IFRAME_ETAG:
            return Response(status=304)
        response = Response(_IFRAME_PAGE, content_type="text/html; charset=UTF-8")
        response.headers["ETag"] = _IFRAME_ETAG
        response.headers["Cache-Control"] = f"public, max-age={_YEAR_S}"
        return response

    # WebSocket transports --------------------------------------------------------------

    def serve_upgraded(self, environ: dict) -> bool:  # type: ignore[type-arg]
        """Serve an upgraded WebSocket request for one of our paths until it ends; False if it is not one."""
        websocket = environ.get("wsgi.websocket")
        path = environ.get("PATH_INFO", "")
        if websocket is None:
            return False
        if path == PREFIX + "/websocket":
            self._serve_raw(websocket)
            return True
        ids = _SOCKJS_WEBSOCKET_PATH.fullmatch(path)
        if ids is None:
            return False
        self._serve_sockjs(websocket, ids.group(2))
        return True

    def raw_websocket(self) -> Response:
        self._serve_raw(_websocket())
        return Response(status=200)

    def sockjs_websocket(self, server: str, session_id: str) -> Response:
        _check_ids(server, session_id)
        self._serve_sockjs(_websocket(), session_id)
        return Response(status=200)

    def _serve_raw(self, websocket) -> None:  # type: ignore[no-untyped-def]
        session = self._hub.open_session(new_session_id(), "websocket")
        assert session is not None  # a fresh random id
        serve_websocket(websocket, self._hub, session=session, framing=_RAW, unwrap=_as_is,
                        max_message_bytes=self._settings.stomp_max_frame_bytes)

    def _serve_sockjs(self, websocket, session_id: str) -> None:  # type: ignore[no-untyped-def]
        session = self._hub.open_session(session_id, "sockjs-websocket")
        if session is None:
            reject_websocket(websocket, _REJECT_FRAMING)
            return
        serve_websocket(websocket, self._hub, session=session, framing=WEBSOCKET_FRAMING, unwrap=unwrap_sockjs,
                        max_message_bytes=sockjs_message_limit(self._settings.stomp_max_frame_bytes),
                        idle_s=self._settings.sockjs_heartbeat_s)

    # HTTP transports -------------------------------------------------------------------

    def xhr(self, server: str, session_id: str) -> Response:
        if request.method == "OPTIONS":
            return _preflight("OPTIONS, POST")
        _check_ids(server, session_id)
        http = self._http.get(session_id)
        if http is None:
            opened = self._http.open(session_id, "xhr-polling")
            return _js_response(XHR_FRAMING.opening if opened else XHR_FRAMING.wrap(_IN_USE))
        if not http.attach():
            return _js_response(XHR_FRAMING.wrap(_IN_USE))
        try:
            body = poll_response(http.session.outbox, XHR_FRAMING, timeout_s=self._settings.sockjs_heartbeat_s)
        finally:
            http.detach()
        return _js_response(body)

    def xhr_send(self, server: str, session_id: str) -> Response:
        if request.method == "OPTIONS":
            return _preflight("OPTIONS, POST")
        _check_ids(server, session_id)
        http = self._http.get(session_id)
        if http is None:
            abort(404)
        limit = sockjs_message_limit(self._settings.stomp_max_frame_bytes)
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
        http = self._http.get(session_id)
        opened = http is None
        if opened:
            http = self._http.open(session_id, transport)
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
            yield from stream_outbox(http.session.outbox, framing, idle_s=self._settings.sockjs_heartbeat_s,
                                     byte_limit=self._settings.sockjs_streaming_bytes)
        finally:
            http.detach()


def _websocket():  # -> geventwebsocket WebSocket
    websocket = request.environ.get("wsgi.websocket")
    if websocket is None:
        abort(400)
    return websocket


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
