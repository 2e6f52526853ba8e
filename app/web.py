"""The chat server of one process as gunicorn serves it: :class:`ChatServer`, a WSGI application.

Upgraded WebSocket requests for the transport's paths go straight to the SockJS endpoint
(app/stomp/sockjs.py); everything else goes to the Flask app :func:`create_flask_app` makes:
the endpoint's HTTP transports, ``/healthz`` and ``/readyz``, the application's
blueprints and the OpenAPI description of them all (app/openapi.py), every error in the
JSON envelope (app/http_envelope.py).

``app/composition.py`` builds the ChatServer; gunicorn's ``post_worker_init`` calls its
``start()`` (the Kafka consumer starts after fork) and ``worker_exit`` its ``stop()``. While
it runs, it samples the gauges of its live state for the metrics (sessions and subscriptions
per transport, the outbox backlog) every ``metrics.SAMPLE_S``: counted where they live, they
cannot drift, and nothing is written per connection.
Nothing runs at import time and nothing is monkey-patched here.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import gevent
from flask import Blueprint, Flask

import app.metrics as metrics
from app.contracts import ChatDomain
from app.errors import RequestTimeout
from app.health import health_blueprint
from app.http_envelope import error_response, json_response, register_error_handlers, register_request_ids
from app.logs import log_context
from app.openapi import CHAT_PATH, chat_document
from app.service_auth import ServiceCallers
from app.settings import Settings
from app.stomp.fanout import FanoutDelivery
from app.stomp.session import SessionHub
from app.stomp.sockjs import SockJSEndpoint
from app.stomp.ws import ConnectionGate

__all__ = ["ChatServer", "create_flask_app"]

T = TypeVar("T")

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
# How long a stopping worker waits for the relay to publish what its sessions stored.
FLUSH_S = 3.0
# Multipart framing around an upload of upload_max_bytes (boundaries, the other fields).
_FORM_OVERHEAD_BYTES = 1 << 20
# What a request gets from a worker past its connection cap (CHAT_WORKER_CONNECTIONS).
OVER_CAPACITY_MESSAGE = "too many connections, try again later"


class ChatServer:
    """One process's chat server: its WSGI entry, its sessions, and the domain it serves.

    Args:
        domain: the chat application and what runs beside it.
        hub: the live STOMP sessions of this process.
        delivery: the local fan-out the domain's consumers push into.
        endpoint: the transports under ``/my-chat``.
        flask_app: everything that is not an upgraded WebSocket.
        connection_gate: the worker's limits before the handshake (app/stomp/ws.py
            ``GatedApplication``): past its cap every request but a health check gets 503.
    """

    def __init__(self, *, domain: ChatDomain, hub: SessionHub, delivery: FanoutDelivery,
                 endpoint: SockJSEndpoint, flask_app: Flask, connection_gate: ConnectionGate) -> None:
        self.domain = domain
        self.hub = hub
        self.delivery = delivery
        self.endpoint = endpoint
        self.flask_app = flask_app
        self.connection_gate = connection_gate
        self._sampler: gevent.Greenlet | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        log_context()  # a keep-alive connection's greenlet serves many requests: start each afresh
        if self.connection_gate.refuses(environ.get("PATH_INFO", "")):
            response = error_response(503, OVER_CAPACITY_MESSAGE)
            response.headers["Connection"] = "close"  # the slot goes back at once
            return response(environ, start_response)  # type: ignore[no-any-return]
        if self.endpoint.serve_upgraded(environ):
            return []  # the connection is over; gevent-websocket ignores the body
        environ["wsgi.input"] = StallGuardedBody(environ["wsgi.input"])
        return self.flask_app(environ, start_response)

    def accepts_websocket(self, path: str) -> bool:
        """Which upgrade requests the WebSocket handler may upgrade (app/stomp/ws.py ``UpgradeGate``)."""
        return not self.connection_gate.refuses(path) and self.endpoint.accepts_websocket(path)

    def start(self) -> None:
        """Start the per-process services (after gunicorn forked this worker)."""
        self.domain.start()
        self._sampler = gevent.spawn(self._sample_forever)

    def sample_metrics(self) -> None:
        """Set the gauges of this process's live state: sessions and subscriptions, the backlog."""
        metrics.set_stomp_gauges(self.hub.transport_counts())
        metrics.set_outbox_backlog(self.domain.backlog())

    def _sample_forever(self) -> None:
        while True:
            try:
                self.sample_metrics()
            except Exception:  # noqa: BLE001 - metrics must never stop a worker
                log.exception("could not sample the metrics")
            gevent.sleep(metrics.SAMPLE_S)

    def drain(self) -> None:
        """The worker stops taking connections: every session answers the SENDs it took, tells
        its client to reconnect elsewhere, and closes; then what they stored is published
        (within gunicorn's graceful timeout, before the worker exits)."""
        self.hub.drain()
        self.domain.flush(FLUSH_S)

    def stop(self) -> None:
        """Drain, then stop the domain (the relay publishes what it still holds)."""
        if self._sampler is not None:
            self._sampler.kill(block=False)
        self.drain()
        self.domain.stop()


def create_flask_app(settings: Settings, *, endpoint: SockJSEndpoint, blueprints: Sequence[Blueprint],
                     readiness: Mapping[str, Callable[[], None]],
                     info: Mapping[str, Callable[[], object]] | None = None) -> Flask:
    """The Flask app of everything the chat server answers over plain HTTP."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.upload_max_bytes + _FORM_OVERHEAD_BYTES
    app.register_blueprint(endpoint.blueprint)
    app.register_blueprint(health_blueprint(readiness, info or {}, timeout_s=settings.service_timeout_s,
                                            metrics_callers=ServiceCallers.from_settings(settings)))
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    document = chat_document()
    app.add_url_rule(CHAT_PATH, "openapi", lambda: json_response(document), methods=["GET"])
    register_error_handlers(app)
    register_request_ids(app)
    return app


class StallGuardedBody:
    """``wsgi.input`` whose stalls are the client's fault: a read that the socket's idle
    timeout (``CHAT_BODY_IDLE_TIMEOUT_S``, set by the connection handler) cuts short raises
    ``RequestTimeout`` (HTTP 408) instead of a socket error the application would take for
    its own failure (a 500)."""

    __slots__ = ("_body",)

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, *args: Any) -> bytes:
        return _unstalled(self._body.read, *args)

    def readline(self, *args: Any) -> bytes:
        return _unstalled(self._body.readline, *args)

    def readlines(self, *args: Any) -> list[bytes]:
        return _unstalled(self._body.readlines, *args)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def _unstalled(read: Callable[..., T], *args: Any) -> T:
    try:
        return read(*args)
    except TimeoutError as exc:
        raise RequestTimeout() from exc
