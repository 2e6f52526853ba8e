"""The SockJS 0.3 transport, and the raw WebSocket beside it, under one URL prefix.

Owns the URL space under its prefix (``/my-chat`` for the chat server, protocol.md 2.1):

- ``{prefix}/websocket``: the session's bytes straight over a WebSocket (STOMP for iOS, and
  stompjs without SockJS); the session id is generated here.
- SockJS: ``/info``, ``/iframe.html``, and per session ``/{server}/{session}/`` +
  ``websocket``, ``xhr``, ``xhr_send``, ``xhr_streaming``, ``eventsource``, ``htmlfile``,
  ``jsonp``, ``jsonp_send``. The session id is the client-chosen ``{session}``: any
  segment without a dot (the protocol's rule), of printable characters, at most
  ``SESSION_ID_MAX_CHARS``. Everything else under the prefix is a 404; a method a path
  does not take is a 404 too, except on ``websocket`` (405, as the protocol says).

:class:`SockJSEndpoint` is given a session factory (:class:`~app.stomp.transport.SessionDirectory`),
its prefix and its :class:`SockJSOptions`, so any session handler (STOMP at ``/my-chat``, the
echo and close services of tests/conformance) sits behind the same transport code. The HTTP
transports' writers (:func:`poll_response`, :func:`stream_outbox`) live here; the
WebSocket's is in ws.py.

SockJS framing: the server sends ``o`` (open), ``h`` (heart-beat), ``a[...]`` (a JSON
array of messages) and ``c[code,"reason"]`` (close); the client sends JSON arrays of
strings. Each string is one message for the session, handled like WebSocket input.

A WebSocket session lives as long as its connection; two WebSockets may carry the same
SockJS id at once. An HTTP session outlives its requests (:class:`HttpSession`, kept here by
SockJS id): one receiving request at a time is attached to it (a second gets
``c[2010,...]``); a receiving request whose client went away ends the session with
``c[1002,"Connection interrupted"]``, noticed within ``ABORT_CHECK_S`` or at once by the
next request. ``xhr_send`` and ``jsonp_send`` bodies are handled one at a time, in order,
under the session's lock. A session with no receiving request for the disconnect delay is
over. A closed session is remembered for the disconnect delay after the last request
that asked for it, and each receiving request gets its close frame. HTTP sessions live in
this process, so with several gunicorn workers the HTTP fallbacks need sticky routing
(WebSocket does not).

CORS: a request's ``Origin`` (a concrete one, or ``null``) is echoed with credentials
allowed; without an Origin the answer is ``*`` without credentials. With a list of allowed
origins, a request from any other origin gets 403 (a WebSocket: closed with 1008 at once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import secrets
import select
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gevent
from flask import Blueprint, Response, request
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.monkey import get_original

from app import json_input
from app.errors import FrameTooLarge
from app.logs import add_log_context
from app.stomp.outbox import BATCH_FRAMES, POLICY_VIOLATION, Framing, Outbox, Pong, RawFraming, Wire
from app.stomp.transport import SessionDirectory, TransportSession
from app.stomp.ws import PEER_SOCKET, StompWebSocket, serve_websocket

__all__ = ["SockJSEndpoint", "SockJSOptions", "HttpSession", "SockJSFraming", "PeerGone", "unwrap_sockjs",
           "sockjs_message_limit", "poll_response", "stream_outbox", "client_script_blueprint", "local_client_script",
           "CLIENT_SCRIPT_PATH",
           "SESSION_ID_MAX_CHARS", "CALLBACK_MAX_CHARS", "ABORT_CHECK_S", "ANY_ORIGIN"]

log = logging.getLogger(__name__)

SESSION_ID_MAX_CHARS = 128
CALLBACK_MAX_CHARS = 64
# How often a waiting receiving request looks whether its client went away.
ABORT_CHECK_S = 1.0
# The allowed-origins entry that allows every origin.
ANY_ORIGIN = "*"
# Where the server's own copy of sockjs-client is served (outside any SockJS prefix).
CLIENT_SCRIPT_PATH = "/static/sockjs.min.js"

_SEGMENT = re.compile(rf"[^/.\x00-\x1f\x7f]{{1,{SESSION_ID_MAX_CHARS}}}")
_CALLBACK = re.compile(rf"[A-Za-z0-9_.-]{{1,{CALLBACK_MAX_CHARS}}}")
_IFRAME_PAGE_NAME = re.compile(r"iframe[0-9A-Za-z._-]*\.html")
_GO_AWAY = b'c[3000,"Go away!"]'
_IN_USE = b'c[2010,"Another connection still open"]'
_INTERRUPTED = b'c[1002,"Connection interrupted"]'
_NO_CACHE = "no-store, no-cache, no-transform, must-revalidate, max-age=0"
_YEAR_S = 31536000
_JS = "application/javascript; charset=UTF-8"
_TEXT = "text/plain; charset=UTF-8"
_FORM = "application/x-www-form-urlencoded"
# What a send answers once its messages were taken: xhr_send 204; jsonp_send "ok" (a 204
# confuses some old browsers' script loaders).
_XHR_SENT = (b"", 204)
_JSONP_SENT = (b"ok", 200)
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
# Some browsers and proxies buffer the start of a streamed body: 2 KiB of padding first.
_XHR_STREAMING_PRELUDE = b"h" * 2048 + b"\n"
_EVENTSOURCE_PRELUDE = b"\r\n"
_HTMLFILE_MIN_BYTES = 1024
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
_RAW = RawFraming()
# The real poll(2): a zero-timeout look at one socket, with no fd-number limit and no yield.
_poll = get_original("select", "poll")
_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)


@dataclass(frozen=True)
class SockJSOptions:
    """How one SockJS endpoint behaves (``app/composition.py`` makes them from Settings).

    Args:
        max_frame_bytes: the largest payload one client message may carry.
        heartbeat_s: the ``h`` frame interval.
        disconnect_delay_s: how long an HTTP session outlives its last receiving request,
            and how long a closed one is remembered.
        streaming_bytes: bytes sent on one streaming response before it is recycled.
        close_grace_s: how long a closing session may take to flush before it is aborted.
        client_url: the sockjs-client script ``iframe.html`` loads.
        websocket: whether ``/info`` offers WebSocket (and the WebSocket paths exist).
        cookie_needed: what ``/info`` says, and whether session responses set ``JSESSIONID``
            (for load balancers that route sticky on it).
        jsonp: whether the ``jsonp`` and ``jsonp_send`` transports exist.
        allowed_origins: the origins whose requests are served (``ANY_ORIGIN``: all).
    """

    max_frame_bytes: int
    heartbeat_s: float
    disconnect_delay_s: float
    streaming_bytes: int
    close_grace_s: float
    client_url: str
    websocket: bool = True
    cookie_needed: bool = True
    jsonp: bool = True
    allowed_origins: tuple[str, ...] = (ANY_ORIGIN,)


def sockjs_message_limit(max_frame_bytes: int) -> int:
    """The largest SockJS message: a frame at the limit, every byte JSON-escaped (\\u0000)."""
    return max_frame_bytes * 6 + 64


def unwrap_sockjs(message: bytes) -> list[bytes]:
    """The payloads in one SockJS client message (a JSON array of strings, or one string).

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

    def __init__(self, wrap: Callable[[bytes], bytes]) -> None:
        self._wrap = wrap
        self.opening = wrap(b"o")
        self.idle = wrap(b"h")
        self.closing = wrap(_GO_AWAY)

    def wrap(self, frame: bytes) -> bytes:
        return self._wrap(frame)

    def encode(self, frames: list[bytes]) -> list[bytes]:
        # ensure_ascii: SockJS escapes what some browsers mangle; all non-ASCII is simplest.
        texts = [frame.decode("utf-8", "replace") for frame in frames]
        return [self._wrap(b"a" + json.dumps(texts, separators=(",", ":")).encode("ascii"))]


def _htmlfile_wrap(frame: bytes) -> bytes:
    return b"<script>\np(" + json.dumps(frame.decode("ascii")).encode("ascii") + b");\n</script>\r\n"


def _jsonp_framing(callback: str) -> SockJSFraming:
    head = b"/**/" + callback.encode("ascii") + b"("  # /**/: no byte of ours can start a Flash file
    return SockJSFraming(lambda frame: head + json.dumps(frame.decode("ascii")).encode("ascii") + b");\r\n")


WEBSOCKET_FRAMING = SockJSFraming(lambda frame: frame)
XHR_FRAMING = SockJSFraming(lambda frame: frame + b"\n")
EVENTSOURCE_FRAMING = SockJSFraming(lambda frame: b"data: " + frame + b"\r\n\r\n")
HTMLFILE_FRAMING = SockJSFraming(_htmlfile_wrap)


class PeerGone(Exception):
    """The client of a receiving request went away while it waited."""


def peer_closed(sock: Any) -> bool:
    """Whether the client closed (or reset) ``sock``: one zero-timeout poll, never a read."""
    poller = _poll()
    try:
        poller.register(sock.fileno(), select.POLLIN | _HANGUP)
        return any(events & _HANGUP for _, events in poller.poll(0))
    except (OSError, ValueError):  # closed on our side already
        return True


class HttpSession:
    """A session carried by HTTP requests: its receiver slot, its send lock, its close frame."""

    def __init__(self, session: TransportSession) -> None:
        self.session = session
        self.send_lock = Semaphore()  # send bodies one at a time, in arrival order
        self.receiver: gevent.Greenlet | None = None
        self._receiver_socket: Any = None
        self.last_request = time.monotonic()
        self.changed = Event()
        self.close_frame = _GO_AWAY

    @property
    def is_closed(self) -> bool:
        """The client was told the end (or the session is over): requests get ``close_frame``."""
        return self.session.outbox.ended or self.session.is_finished

    def attach(self, peer: Any) -> bytes | None:
        """Make the current request the receiver; else the close frame it gets instead.

        A receiver already attached whose client is gone ends the session (``c[1002]``);
        a live one keeps it (``c[2010]``).
        """
        if self.receiver is not None:
            if self._receiver_socket is None or not peer_closed(self._receiver_socket):
                return _IN_USE
            self.interrupt()
            return _INTERRUPTED
        self.receiver = gevent.getcurrent()
        self._receiver_socket = peer
        self.changed.set()
        return None

    def detach(self) -> None:
        self.receiver = None
        self._receiver_socket = None
        self.touch()

    def touch(self) -> None:
        """A request for this session came and went."""
        self.last_request = time.monotonic()
        self.changed.set()

    def interrupt(self) -> None:
        """The receiving request's client went away: the session ends; later requests get ``c[1002]``."""
        if self.is_closed:
            return
        self.close_frame = _INTERRUPTED
        self.session.close(discard_backlog=True)
        self.session.outbox.mark_ended()
        self.changed.set()

    def kill_receiver(self) -> None:
        """The abort hook: a receiver stuck writing to a stalled client is given up."""
        receiver = self.receiver
        if receiver is not None and receiver is not gevent.getcurrent():
            receiver.kill(block=False)


class SockJSEndpoint:
    """The views of one prefix; one instance per prefix.

    Upgraded WebSocket requests reach :meth:`serve_upgraded` straight from WSGI (the app in
    app/web.py does that, and says which paths to upgrade with :meth:`accepts_websocket`):
    served from inside a Flask view, the request context, the routing state and their
    stack would live as long as the connection, a few KB of every idle socket. The Flask
    blueprint serves the rest.
    """

    def __init__(self, sessions: SessionDirectory, *, prefix: str, options: SockJSOptions) -> None:
        self._sessions = sessions
        self._prefix = prefix
        self._options = options
        self._http: dict[str, HttpSession] = {}
        self._message_limit = sockjs_message_limit(options.max_frame_bytes)
        self._iframe_page = _IFRAME_PAGE.format(url=options.client_url).encode("utf-8")
        self._iframe_etag = '"' + hashlib.md5(self._iframe_page).hexdigest() + '"'
        segment = _SEGMENT.pattern
        self._sockjs_path = re.compile(rf"{re.escape(prefix)}/({segment})/({segment})/websocket")
        self._transports: dict[str, dict[str, Callable[[str], Response]]] = {
            "xhr": {"POST": self.xhr, "OPTIONS": self._preflight_post},
            "xhr_send": {"POST": self.xhr_send, "OPTIONS": self._preflight_post},
            "xhr_streaming": {"POST": self.xhr_streaming, "OPTIONS": self._preflight_post},
            "eventsource": {"GET": self.eventsource},
            "htmlfile": {"GET": self.htmlfile},
        }
        if options.jsonp:
            self._transports.update(jsonp={"GET": self.jsonp}, jsonp_send={"POST": self.jsonp_send})
        self.blueprint = self._blueprint(prefix)

    def _blueprint(self, prefix: str) -> Blueprint:
        blueprint = Blueprint(f"sockjs{prefix.replace('/', '_')}", __name__, url_prefix=prefix)
        blueprint.before_request(self._check_origin)

        def rule(path: str, view: Callable[..., Response], **options: Any) -> None:
            # merge_slashes off: "//" is no SockJS URL (a 404, not a redirect).
            blueprint.add_url_rule(path, view.__name__, view, methods=_ANY_METHOD, merge_slashes=False, **options)

        rule("", self.welcome, strict_slashes=False)
        rule("/info", self.info)
        rule("/websocket", self.raw_websocket_http)
        rule("/<page>", self.iframe)
        rule("/<server>/<session_id>/<transport>", self.session_request)
        return blueprint

    # Static pages ------------------------------------------------------------------------

    def welcome(self) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _not_found()
        return Response(b"Welcome to SockJS!\n", content_type=_TEXT)

    def info(self) -> Response:
        if request.method == "OPTIONS":
            return self._cors(_preflight("OPTIONS, GET"))
        if request.method not in ("GET", "HEAD"):
            return _not_found()
        body = {"websocket": self._options.websocket, "cookie_needed": self._options.cookie_needed,
                "origins": ["*:*"], "entropy": random.SystemRandom().getrandbits(32)}
        response = Response(json.dumps(body), content_type="application/json; charset=UTF-8")
        response.headers["Cache-Control"] = _NO_CACHE
        return self._cors(response)

    def iframe(self, page: str) -> Response:
        if not _IFRAME_PAGE_NAME.fullmatch(page) or request.method not in ("GET", "HEAD"):
            return _not_found()
        if request.headers.get("If-None-Match") == self._iframe_etag:
            response = Response(status=304)
            del response.headers["Content-Type"]
            return response
        response = Response(self._iframe_page, content_type="text/html; charset=UTF-8")
        response.headers["ETag"] = self._iframe_etag
        return _cache_for_a_year(response)

    # WebSocket transports --------------------------------------------------------------

    def accepts_websocket(self, path: str) -> bool:
        """Whether a WebSocket upgrade of ``path`` reaches one of our transports (valid ids)."""
        if not self._options.websocket:
            return False
        return path == self._prefix + "/websocket" or self._sockjs_path.fullmatch(path) is not None

    def serve_upgraded(self, environ: dict) -> bool:  # type: ignore[type-arg]
        """Serve an upgraded WebSocket request for one of our paths until it ends; False if it is not one.

        A request that was not upgraded is plain HTTP from here on: its ``Upgrade`` header
        is dropped, or Werkzeug would answer 400 for it on any route that is not a WebSocket
        route (a POST to a websocket URL must get the protocol's 405).
        """
        websocket = environ.get("wsgi.websocket")
        if websocket is None:
            environ.pop("HTTP_UPGRADE", None)
            return False
        path = environ.get("PATH_INFO", "")
        if not self.accepts_websocket(path):
            return False
        if not self._origin_allowed(environ.get("HTTP_ORIGIN")):
            StompWebSocket.adopt(websocket).send_close(POLICY_VIOLATION, "origin not allowed")
            return True
        if path == self._prefix + "/websocket":
            self._serve_raw(websocket)
            return True
        ids = self._sockjs_path.fullmatch(path)
        assert ids is not None  # accepts_websocket said so
        self._serve_sockjs(websocket, ids.group(2))
        return True

    def raw_websocket_http(self) -> Response:
        """``/websocket`` reached as plain HTTP: it is no WebSocket request."""
        return _not_a_websocket() if self._options.websocket else _not_found()

    def _serve_raw(self, websocket) -> None:  # type: ignore[no-untyped-def]
        session = self._sessions.open_session(new_session_id(), "websocket")
        serve_websocket(websocket, session, framing=_RAW, unwrap=_as_is,
                        max_message_bytes=self._options.max_frame_bytes,
                        close_grace_s=self._options.close_grace_s)

    def _serve_sockjs(self, websocket, session_id: str) -> None:  # type: ignore[no-untyped-def]
        session = self._sessions.open_session(session_id, "sockjs-websocket")
        serve_websocket(websocket, session, framing=WEBSOCKET_FRAMING, unwrap=unwrap_sockjs,
                        max_message_bytes=self._message_limit, close_grace_s=self._options.close_grace_s,
                        idle_s=self._options.heartbeat_s)

    def http_session(self, session_id: str) -> HttpSession | None:
        """The HTTP session with this SockJS id (live, or closed and still remembered)."""
        return self._http.get(session_id)

    # Session URLs ------------------------------------------------------------------------

    def session_request(self, server: str, session_id: str, transport: str) -> Response:
        """``/{server}/{session}/{transport}``: the transport's view for this method, else 404 (405)."""
        if not _SEGMENT.fullmatch(server) or not _SEGMENT.fullmatch(session_id):
            return _not_found()
        add_log_context(session=session_id)
        if transport == "websocket" and self._options.websocket:
            return _not_a_websocket()
        view = self._transports.get(transport, {}).get(request.method)
        if view is None:
            return _not_found()
        response = view(session_id)
        if self._options.cookie_needed:
            response.set_cookie("JSESSIONID", request.cookies.get("JSESSIONID", "dummy"), path="/")
        return self._cors(response)

    def _preflight_post(self, session_id: str) -> Response:
        return _preflight("OPTIONS, POST")

    # HTTP sessions ----------------------------------------------------------------------

    def _open_http(self, session_id: str, transport: str) -> HttpSession:
        session = self._sessions.open_session(session_id, transport)
        http = HttpSession(session)
        self._http[session_id] = http
        session.on_abort(http.kill_receiver)
        session.start()
        gevent.spawn(self._reap, session_id, http)
        return http

    def _reap(self, session_id: str, http: HttpSession) -> None:
        """End a session nobody came back for; forget it once it was over for the disconnect delay."""
        try:
            self._wait_unattended(http, until_closed=True)
        finally:
            with http.send_lock:  # the session ends only after a send in progress has returned
                http.session.finish()
        self._wait_unattended(http, until_closed=False)
        if self._http.get(session_id) is http:
            del self._http[session_id]

    def _wait_unattended(self, http: HttpSession, *, until_closed: bool) -> None:
        """Return once no request came for the disconnect delay (or, ``until_closed``, once it is closed)."""
        delay = self._options.disconnect_delay_s
        while not (until_closed and http.is_closed):
            http.changed.clear()
            if http.receiver is None:
                idle = time.monotonic() - http.last_request
                if idle >= delay:
                    return
                http.changed.wait(delay - idle)
            else:
                http.changed.wait(delay)

    # Receiving transports ----------------------------------------------------------------

    def xhr(self, session_id: str) -> Response:
        return _no_cache(Response(self._poll(session_id, "xhr-polling", XHR_FRAMING), content_type=_JS))

    def jsonp(self, session_id: str) -> Response:
        callback = request.args.get("c", "")
        refusal = _callback_refusal(callback)
        if refusal is not None:
            return refusal
        body = self._poll(session_id, "jsonp-polling", _jsonp_framing(callback))
        return _no_cache(Response(body, content_type=_JS))

    def xhr_streaming(self, session_id: str) -> Response:
        return self._stream(session_id, "xhr-streaming", XHR_FRAMING, _XHR_STREAMING_PRELUDE, _JS)

    def eventsource(self, session_id: str) -> Response:
        return self._stream(session_id, "eventsource", EVENTSOURCE_FRAMING, _EVENTSOURCE_PRELUDE,
                            "text/event-stream")

    def htmlfile(self, session_id: str) -> Response:
        callback = request.args.get("c", "")
        refusal = _callback_refusal(callback)
        if refusal is not None:
            return refusal
        page = _HTMLFILE_PAGE.format(callback=callback)
        prelude = (page + " " * max(0, _HTMLFILE_MIN_BYTES - len(page)) + "\r\n\r\n").encode("utf-8")
        return self._stream(session_id, "htmlfile", HTMLFILE_FRAMING, prelude, "text/html; charset=UTF-8")

    def _poll(self, session_id: str, transport: str, framing: SockJSFraming) -> bytes:
        """One polling answer: the opening of a new session, queued frames, ``h``, or a close frame."""
        http = self._http.get(session_id)
        if http is None:
            self._open_http(session_id, transport)
            return framing.opening
        if http.is_closed:
            http.touch()
            return framing.wrap(http.close_frame)
        refusal = http.attach(request.environ.get(PEER_SOCKET))
        if refusal is not None:
            return framing.wrap(refusal)
        try:
            return poll_response(http.session.outbox, framing, timeout_s=self._options.heartbeat_s,
                                 peer_gone=_peer_watch(request.environ))
        except PeerGone:
            http.interrupt()
            return b""  # nobody reads it
        finally:
            http.detach()

    def _stream(self, session_id: str, transport: str, framing: SockJSFraming, prelude: bytes,
                content_type: str) -> Response:
        http = self._http.get(session_id)
        opened = http is None
        if http is None:
            http = self._open_http(session_id, transport)
        chunks = self._stream_chunks(http, framing, prelude, opened, request.environ)
        response = _no_cache(Response(chunks, content_type=content_type, direct_passthrough=True))
        if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
            # No chunking in HTTP/1.0: the end of the body is the end of the connection.
            response.headers["Connection"] = "close"
        return response

    def _stream_chunks(self, http: HttpSession, framing: SockJSFraming, prelude: bytes, opened: bool,
                       environ: dict[str, Any]) -> Iterator[bytes]:
        yield prelude
        if opened:
            yield framing.opening
        if http.is_closed:
            http.touch()
            yield framing.wrap(http.close_frame)
            return
        refusal = http.attach(environ.get(PEER_SOCKET))
        if refusal is not None:
            yield framing.wrap(refusal)
            return
        try:
            yield from stream_outbox(http.session.outbox, framing, idle_s=self._options.heartbeat_s,
                                     byte_limit=self._options.streaming_bytes, peer_gone=_peer_watch(environ))
        except (PeerGone, GeneratorExit):  # gone while waiting, or a write to it failed
            http.interrupt()
        finally:
            http.detach()

    # Sending transports ------------------------------------------------------------------

    def xhr_send(self, session_id: str) -> Response:
        body = request.stream.read(self._message_limit + 1)
        return self._receive(session_id, body, _XHR_SENT)

    def jsonp_send(self, session_id: str) -> Response:
        if request.mimetype != _FORM:
            return self._receive(session_id, request.stream.read(self._message_limit + 1), _JSONP_SENT)
        form_limit = self._message_limit * 3 + 2  # "d=", then %XX triples each byte at most
        form = request.stream.read(form_limit + 1)
        if len(form) > form_limit:
            return self._receive(session_id, form, _JSONP_SENT)  # over any limit: refused there
        try:
            data = urllib.parse.parse_qs(form.decode("latin-1"), errors="strict").get("d", [""])[0]
        except UnicodeDecodeError:
            return _text_response(b"Broken JSON encoding.", 500)
        return self._receive(session_id, data.encode("utf-8"), _JSONP_SENT)

    def _receive(self, session_id: str, body: bytes, done: tuple[bytes, int]) -> Response:
        """Hand one send body's messages to the session, in order; ``done`` if they were taken."""
        http = self._http.get(session_id)
        if http is None or http.is_closed:
            return _not_found()
        if len(body) > self._message_limit:
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
        return _text_response(*done)

    # CORS ----------------------------------------------------------------------------------

    def _origin_allowed(self, origin: str | None) -> bool:
        allowed = self._options.allowed_origins
        return origin is None or ANY_ORIGIN in allowed or origin in allowed

    def _check_origin(self) -> Response | None:
        """Before every view: a request from an origin that is not allowed gets 403."""
        if self._origin_allowed(request.headers.get("Origin")):
            return None
        return _text_response(b"Origin not allowed.", 403)

    def _cors(self, response: Response) -> Response:
        """Echo a concrete (or ``null``) Origin with credentials; ``*`` without them when there is none."""
        origin = request.headers.get("Origin")
        if origin is None:
            response.headers["Access-Control-Allow-Origin"] = "*"
        else:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            response.headers["Access-Control-Allow-Headers"] = requested
        return response


def local_client_script(file: Path, path: str = CLIENT_SCRIPT_PATH) -> tuple[str, Blueprint]:
    """The URL of the browser script copy in ``file`` served at ``path``, and the blueprint serving it.

    Used for the sockjs-client copy ``iframe.html`` loads and for the @stomp/stompjs bundle of
    the demo page (both installed from npm, ``static/package.json``). The URL carries the
    copy's hash, so the year-long caching of the pages and of the script never outlives an
    upgrade. A missing file is logged once: only the pages that load it need it.
    """
    try:
        script: bytes | None = file.read_bytes()
    except OSError as exc:
        log.warning("no script copy at %s (%s): pages loading %s will fail; run `make`", file, exc, path)
        script = None
    digest = hashlib.md5(script or b"").hexdigest()
    return f"{path}?v={digest[:12]}", client_script_blueprint(script, path)


def client_script_blueprint(script: bytes | None, path: str) -> Blueprint:
    """Serves one browser script at ``path``, from memory; 404 while there is none."""
    # One blueprint per script, so each needs a name of its own.
    blueprint = Blueprint("script_" + re.sub(r"[^A-Za-z0-9]", "_", path), __name__)
    etag = '"' + hashlib.md5(script or b"").hexdigest() + '"'

    def serve_script() -> Response:
        if script is None:
            return _not_found()
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304)
        response = Response(script, content_type=_JS)
        response.headers["ETag"] = etag
        return _cache_for_a_year(response)

    blueprint.add_url_rule(path, "script", serve_script, methods=["GET"])
    return blueprint


def new_session_id() -> str:
    """A random session id for a raw WebSocket."""
    return secrets.token_urlsafe(12)


def _as_is(message: bytes) -> Iterable[bytes]:
    return (message,)


def _peer_watch(environ: dict[str, Any]) -> Callable[[], bool]:
    """Whether the request's client went away (never, when the server did not say which socket it is)."""
    sock = environ.get(PEER_SOCKET)
    if sock is None:
        return lambda: False
    return lambda: peer_closed(sock)


def _callback_refusal(callback: str) -> Response | None:
    """The 500 a jsonp or htmlfile request gets for a missing or unsafe callback name; None if it is fine."""
    if not callback:
        return _text_response(b'"callback" parameter required', 500)
    if not _CALLBACK.fullmatch(callback):
        return _text_response(b'invalid "callback" parameter', 500)
    return None


def _not_found() -> Response:
    return Response(b"", status=404, content_type=_TEXT)


def _not_a_websocket() -> Response:
    """A websocket URL reached as plain HTTP: 400 for GET, 405 (no body) for other methods."""
    if request.method == "GET":
        return Response(b'Can "Upgrade" only to "WebSocket".', status=400, content_type=_TEXT)
    response = Response(status=405)
    del response.headers["Content-Type"]
    response.headers["Allow"] = "GET"
    return response


def _preflight(methods: str) -> Response:
    response = Response(status=204)
    del response.headers["Content-Type"]
    response.headers["Access-Control-Allow-Methods"] = methods
    response.headers["Access-Control-Max-Age"] = str(_YEAR_S)
    return _cache_for_a_year(response)


def _cache_for_a_year(response: Response) -> Response:
    response.headers["Cache-Control"] = f"public, max-age={_YEAR_S}"
    response.headers["Expires"] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + _YEAR_S))
    return response


def _no_cache(response: Response) -> Response:
    response.headers["Cache-Control"] = _NO_CACHE
    return response


def _text_response(body: bytes, status: int) -> Response:
    return _no_cache(Response(body, status=status, content_type=_TEXT))


# The HTTP transports' writers -----------------------------------------------------------


def _frames(items: list[bytes | Pong | Wire]) -> list[bytes]:
    return [item for item in items if item.__class__ is bytes]


def _never() -> bool:
    return False


def _wait(outbox: Outbox, timeout_s: float, peer_gone: Callable[[], bool]) -> bool:
    """``outbox.wait`` in slices of ``ABORT_CHECK_S``, looking after each whether the client left.

    Raises:
        PeerGone: it did.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if outbox.wait(min(remaining, ABORT_CHECK_S)):
            return True
        if peer_gone():
            raise PeerGone()


def poll_response(outbox: Outbox, framing: Framing, *, timeout_s: float,
                  peer_gone: Callable[[], bool] = _never) -> bytes:
    """One SockJS polling answer: queued frames, else ``idle`` after ``timeout_s``, or the end.

    Raises:
        PeerGone: the client went away while the poll waited.
    """
    frames = _frames(outbox.take(BATCH_FRAMES))
    if not frames and not outbox.closed and _wait(outbox, timeout_s, peer_gone):
        frames = _frames(outbox.take(BATCH_FRAMES))
    if frames:
        outbox.note_written()
        return b"".join(framing.encode(frames))
    if outbox.finished:
        outbox.mark_ended()
        return framing.closing or b""
    return framing.idle or b""


def stream_outbox(outbox: Outbox, framing: Framing, *, idle_s: float, byte_limit: int,
                  peer_gone: Callable[[], bool] = _never) -> Iterator[bytes]:
    """A SockJS streaming body: frames as they come, ``idle`` when quiet, the end when closed.

    Stops after ``byte_limit`` bytes so the client opens a fresh request (proxies and
    browsers hold the whole streamed body in memory).

    Raises:
        PeerGone: the client went away while the stream waited.
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
        elif not _wait(outbox, idle_s, peer_gone) and framing.idle is not None:
            yield framing.idle
