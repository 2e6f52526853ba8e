"""The chat server's web application: ``create_app(settings, services) -> Flask``.

Serves ``/my-chat`` (STOMP over a raw WebSocket and over SockJS), ``/healthz``, ``/readyz``
and the application's own blueprints, with JSON error bodies in the original wrapper
shape (``{"isSuccess": false, "code": <status>, "message": "..."}``).

``app.extensions["smooth"]`` holds the :class:`ChatServer` of the process: gunicorn's
``post_worker_init`` calls its ``start()`` (the Kafka consumers start after fork) and
``worker_exit`` its ``stop()``. Nothing runs at import time and nothing is monkey-patched
here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from flask import Flask

from app.auth import TokenVerifier
from app.contracts import Services
from app.fanout import FanoutDelivery
from app.health import health_blueprint
from app.http_envelope import register_error_handlers
from app.registry import SubscriptionRegistry
from app.session import SessionHub
from app.settings import Settings
from app.stomp.sockjs import PREFIX, SockJSEndpoint, accepts_websocket, sockjs_endpoint

__all__ = ["create_app", "ChatServer", "EXTENSION"]

log = logging.getLogger(__name__)

EXTENSION = "smooth"

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
# Multipart framing around an upload of upload_max_bytes (boundaries, the other fields).
_FORM_OVERHEAD_BYTES = 1 << 20


@dataclass(eq=False)
class ChatServer:
    """One process's STOMP runtime and the application services it delivers for."""

    settings: Settings
    services: Services
    hub: SessionHub
    delivery: FanoutDelivery

    def start(self) -> None:
        """Start the per-process services (after gunicorn forked this worker)."""
        self.services.start(self.delivery)

    def close_sessions(self) -> None:
        """Tell every client the server is going away and close them (graceful shutdown)."""
        self.hub.close_all()

    def stop(self) -> None:
        self.close_sessions()
        self.services.stop()


def create_app(settings: Settings, services: Services) -> Flask:
    """The chat server's Flask app for ``settings``, delivering for ``services``."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.upload_max_bytes + _FORM_OVERHEAD_BYTES
    registry: SubscriptionRegistry = SubscriptionRegistry()
    hub = SessionHub(settings, services.application, TokenVerifier(settings.jwt_secret), registry,
                     settings.effective_node_id)
    app.extensions[EXTENSION] = ChatServer(settings, services, hub, FanoutDelivery(registry))
    endpoint = sockjs_endpoint(hub)
    app.register_blueprint(endpoint.blueprint)
    app.wsgi_app = _upgraded_websockets_first(endpoint, app.wsgi_app)  # type: ignore[method-assign]
    app.register_blueprint(health_blueprint(services.readiness, timeout_s=settings.service_timeout_s))
    for blueprint in services.blueprints:
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    # Read by the WebSocket handler before it upgrades: only our endpoints are upgraded.
    app.accepts_websocket = accepts_websocket  # type: ignore[attr-defined]
    # For gevent-websocket's stock handler (our StompWebSocketHandler negotiates properly).
    app.app_protocol = lambda path: "v12.stomp" if path == PREFIX + "/websocket" else None  # type: ignore[attr-defined]
    return app


def _upgraded_websockets_first(endpoint: SockJSEndpoint, flask_app: WSGIApp) -> WSGIApp:
    """WSGI: upgraded ``/my-chat`` WebSockets go to the endpoint directly, everything else to Flask."""
    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if endpoint.serve_upgraded(environ):
            return []  # the connection is over; gevent-websocket ignores the body
        return flask_app(environ, start_response)
    return wsgi_app
