"""The SockJS protocol suite's test server, built from the transport `/my-chat` uses.

``python -m tests.conformance.sockjs_server --port PORT`` serves the four services the
official suite (github sockjs/sockjs-protocol, ``sockjs-protocol.py``) expects:

- ``/echo``: every message comes back;
- ``/close``: the session closes as soon as it opens (``c[3000,"Go away!"]``);
- ``/cookie_needed_echo``: ``/echo`` with ``cookie_needed`` (``JSESSIONID`` set);
- ``/disabled_websocket_echo``: ``/echo`` without WebSocket.

Each is a :class:`~app.stomp.sockjs.SockJSEndpoint` given a session factory of its own
(:class:`ServiceDirectory`), a prefix and :class:`~app.stomp.sockjs.SockJSOptions`, behind
:class:`~app.stomp.ws.StompWebSocketHandler`: the transport code is the chat server's, only
the session differs. The suite's own server settings apply: a 4096-byte streaming limit
and a 5 s disconnect delay. tests/integration/test_sockjs_conformance.py serves them in
process; README "Conformance" says how the suite is run by hand against this module.
"""

from __future__ import annotations

from gevent import monkey

if __name__ == "__main__":
    monkey.patch_all()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from typing import Any, Callable, Iterable  # noqa: E402

import gevent  # noqa: E402
from flask import Flask  # noqa: E402
from gevent import pywsgi  # noqa: E402

from app.composition import SOCKJS_CLIENT_FILE  # noqa: E402
from app.errors import ProtocolError  # noqa: E402
from app.stomp.outbox import NORMAL, PROTOCOL_ERROR, Outbox  # noqa: E402
from app.stomp.sockjs import SockJSEndpoint, SockJSOptions, local_client_script  # noqa: E402
from app.stomp.ws import StompWebSocketHandler  # noqa: E402

__all__ = ["EchoSession", "ServiceDirectory", "ConformanceServer", "build_app", "SERVICES", "OPTIONS"]

# The suite: "The test server should have this limit decreased to 4096B."
OPTIONS = dict(max_frame_bytes=1 << 20, heartbeat_s=25.0, disconnect_delay_s=5.0, streaming_bytes=4096,
               close_grace_s=5.0)
OUTBOX_FRAMES = 1000
GO_AWAY = (3000, "Go away!")

OPEN, CLOSING, CLOSED = "open", "closing", "closed"


class EchoSession:
    """A session that sends every message back; with ``close_at_start``, one that closes at once."""

    def __init__(self, directory: "ServiceDirectory", session_id: str, transport: str, *,
                 close_at_start: bool = False) -> None:
        self.session_id = session_id
        self.transport = transport
        self.outbox = Outbox(OUTBOX_FRAMES)
        self.state = OPEN
        self._directory = directory
        self._close_at_start = close_at_start
        self._abort_hooks: list[Callable[[], None]] = []
        self._abort_timer: gevent.Greenlet | None = None

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    @property
    def is_finished(self) -> bool:
        return self.state == CLOSED

    def start(self) -> None:
        if self._close_at_start:
            code, reason = GO_AWAY
            self.close(code=code, reason=reason)

    def on_abort(self, hook: Callable[[], None]) -> None:
        self._abort_hooks.append(hook)

    def receive_data(self, data: bytes) -> None:
        if self.is_open and not self.outbox.offer(data):
            self.close(discard_backlog=True)

    def note_activity(self) -> None:
        pass

    def fail(self, exc: ProtocolError, code: int = PROTOCOL_ERROR) -> None:
        self.close(code=code, reason=str(exc))

    def close(self, *, code: int = NORMAL, discard_backlog: bool = False, reason: str = "") -> None:
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.outbox.close(discard_backlog=discard_backlog, code=code, reason=reason)
        self._abort_timer = gevent.spawn_later(self._directory.close_grace_s, self.abort)

    def abort(self) -> None:
        self.close(discard_backlog=True)
        hooks, self._abort_hooks = self._abort_hooks, []
        for hook in hooks:
            hook()

    def finish(self) -> None:
        if self.state == CLOSED:
            return
        self.close(discard_backlog=True)
        self.state = CLOSED
        if self._abort_timer is not None and self._abort_timer is not gevent.getcurrent():
            self._abort_timer.kill(block=False)
        self._directory.live.discard(self)


@dataclasses.dataclass(eq=False)
class ServiceDirectory:
    """The session factory of one service: echo sessions, or sessions that close at once."""

    close_at_start: bool = False
    close_grace_s: float = OPTIONS["close_grace_s"]
    live: set[EchoSession] = dataclasses.field(default_factory=set)

    def open_session(self, session_id: str, transport: str) -> EchoSession:
        session = EchoSession(self, session_id, transport, close_at_start=self.close_at_start)
        self.live.add(session)
        return session


# prefix -> (close at start, what differs from OPTIONS)
SERVICES: dict[str, tuple[bool, dict[str, Any]]] = {
    "/echo": (False, {"cookie_needed": False}),
    "/close": (True, {"cookie_needed": False}),
    "/cookie_needed_echo": (False, {"cookie_needed": True}),
    "/disabled_websocket_echo": (False, {"cookie_needed": False, "websocket": False}),
}


class ConformanceServer:
    """The WSGI application of the four services (and the sockjs-client copy their iframe.html loads)."""

    def __init__(self, endpoints: list[SockJSEndpoint], flask_app: Flask) -> None:
        self.endpoints = endpoints
        self.flask_app = flask_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if any(endpoint.serve_upgraded(environ) for endpoint in self.endpoints):
            return []
        return self.flask_app(environ, start_response)

    def accepts_websocket(self, path: str) -> bool:
        return any(endpoint.accepts_websocket(path) for endpoint in self.endpoints)


def build_app() -> ConformanceServer:
    client_url, client_blueprint = local_client_script(SOCKJS_CLIENT_FILE)
    flask_app = Flask(__name__)
    flask_app.register_blueprint(client_blueprint)
    endpoints = []
    for prefix, (close_at_start, differences) in SERVICES.items():
        options = SockJSOptions(**OPTIONS, client_url=client_url, **differences)
        endpoint = SockJSEndpoint(ServiceDirectory(close_at_start=close_at_start), prefix=prefix, options=options)
        flask_app.register_blueprint(endpoint.blueprint)
        endpoints.append(endpoint)
    return ConformanceServer(endpoints, flask_app)


def serve(host: str, port: int) -> pywsgi.WSGIServer:
    """The services on ``host:port`` (0: any free port), started."""
    server = pywsgi.WSGIServer((host, port), build_app(), handler_class=StompWebSocketHandler, log=None)
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    server = serve(args.host, args.port)
    print(f"SockJS test services on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
